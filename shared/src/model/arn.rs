//! ARNs and resource names as they arrive in events and payloads: parsed here and nowhere
//! else.

use super::refusal::Rejection;

/// `arn:<partition>:<service>:<region>:<account>:<resource>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arn {
    pub partition: String,
    pub service: String,
    pub region: String,
    pub account: String,
    pub resource: String,
}

impl Arn {
    pub fn parse(text: &str) -> Result<Self, Rejection> {
        let mut parts = text.splitn(6, ':');
        match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (
                Some("arn"),
                Some(partition),
                Some(service),
                Some(region),
                Some(account),
                Some(resource),
            ) if !partition.is_empty() && !service.is_empty() && !resource.is_empty() => Ok(Self {
                partition: partition.into(),
                service: service.into(),
                region: region.into(),
                account: account.into(),
                resource: resource.into(),
            }),
            _ => Err(Rejection(format!(
                "{text:?} is not an ARN (arn:<partition>:<service>:<region>:<account>:<resource>)"
            ))),
        }
    }
}

/// `name:qualifier` → (name, qualifier).
pub(super) fn split_qualifier(text: &str) -> (String, Option<String>) {
    match text.split_once(':') {
        Some((name, qualifier)) => (name.to_string(), Some(qualifier.to_string())),
        None => (text.to_string(), None),
    }
}

pub(super) fn valid_name(text: &str, what: &str) -> Result<String, Rejection> {
    let name = text.trim();
    if name.is_empty() || name.contains(char::is_whitespace) || name.contains(['/', ':']) {
        return Err(Rejection(format!("{text:?} is not the name of {what}")));
    }
    Ok(name.to_string())
}

pub(super) fn wrong_kind(text: &str, expected: &str) -> Rejection {
    Rejection(format!("{text:?} is not {expected}"))
}
