//! AWS configuration and error reporting shared by every function.

use std::time::Duration;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// How long one attempt of an AWS call may take before it is abandoned and retried (the SDK
/// sets no limit, so a connection that stalls would hold the invocation until Lambda kills it).
/// Every call the functions make answers in well under a second; SQS long polls wait 1 s.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads the SDK configuration the standard way (region, credentials, and the endpoint from
/// `AWS_ENDPOINT_URL` when it is set); there is no other switch between AWS and an emulator.
pub async fn load_sdk_config() -> aws_config::SdkConfig {
    let timeouts = aws_config::timeout::TimeoutConfig::builder()
        .connect_timeout(Duration::from_millis(3_100))
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .build();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .timeout_config(timeouts)
        .load()
        .await
}

/// What kind of fault an AWS call hit, which decides how a runbook reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    Throttled,
    AccessDenied,
    NotFound,
    InUse,
    LimitExceeded,
    Invalid,
    ConditionFailed,
    /// Network errors, timeouts, 5xx and anything unrecognised.
    Other,
}

/// A failed AWS call: which API, on which resource, what AWS said, and what to do about it.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{api} on {resource} failed: {message}{}", hint(*.kind, api, resource))]
pub struct AwsError {
    pub api: String,
    pub resource: String,
    pub code: Option<String>,
    pub message: String,
    pub kind: FaultKind,
}

fn hint(kind: FaultKind, api: &str, resource: &str) -> String {
    match kind {
        FaultKind::Throttled => {
            " (throttled by AWS after retries; nothing was changed by this call, run again later)"
                .into()
        }
        FaultKind::AccessDenied => {
            format!(
                " (grant {} on {resource} to the function's role in template.yaml)",
                iam_action(api)
            )
        }
        FaultKind::NotFound => " (check the name and the region)".into(),
        _ => String::new(),
    }
}

/// The IAM action that allows an API call: SQS's batch calls are allowed by their single form.
pub fn iam_action(api: &str) -> &str {
    match api.strip_prefix("sqs:") {
        Some(operation) if operation.ends_with("Batch") => &api[..api.len() - "Batch".len()],
        _ => api,
    }
}

impl AwsError {
    pub fn from_sdk<E, R>(api: &str, resource: &str, err: &SdkError<E, R>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let code = err.code().map(str::to_string);
        let message = match (err.code(), err.message()) {
            (Some(code), Some(message)) => format!("{code}: {message}"),
            (Some(code), None) => code.to_string(),
            _ => DisplayErrorContext(err).to_string(),
        };
        Self {
            api: api.to_string(),
            resource: resource.to_string(),
            kind: classify(code.as_deref(), err.message().unwrap_or_default()),
            code,
            message,
        }
    }

    /// A request the SDK refused to build: reported as invalid instead of panicking.
    pub fn invalid(api: &str, resource: &str, message: &str) -> Self {
        Self {
            api: api.to_string(),
            resource: resource.to_string(),
            code: None,
            message: message.to_string(),
            kind: FaultKind::Invalid,
        }
    }

    pub fn is(&self, kind: FaultKind) -> bool {
        self.kind == kind
    }
}

/// The result of a conditional write: `Ok(true)` when it was applied, `Ok(false)` when its
/// condition did not hold (ConditionalCheckFailedException), the fault otherwise.
pub fn condition_held<O, E, R>(
    result: Result<O, SdkError<E, R>>,
    api: &str,
    resource: &str,
) -> Result<bool, AwsError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    match result {
        Ok(_) => Ok(true),
        Err(err) => {
            let err = AwsError::from_sdk(api, resource, &err);
            if err.is(FaultKind::ConditionFailed) {
                Ok(false)
            } else {
                Err(err)
            }
        }
    }
}

fn classify(code: Option<&str>, message: &str) -> FaultKind {
    match code.unwrap_or_default() {
        "ThrottlingException"
        | "Throttling"
        | "ThrottledException"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        | "ProvisionedThroughputExceededException"
        | "RequestThrottled" => FaultKind::Throttled,
        "AccessDeniedException"
        | "AccessDenied"
        | "UnauthorizedOperation"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId" => FaultKind::AccessDenied,
        "ResourceNotFoundException"
        | "ResourceNotFound"
        | "NotFound"
        | "TableNotFoundException"
        | "BackupNotFoundException"
        | "QueueDoesNotExist"
        | "AWS.SimpleQueueService.NonExistentQueue" => FaultKind::NotFound,
        "ValidationError" if message.contains("does not exist") => FaultKind::NotFound,
        "ResourceInUseException" | "ResourceConflictException" => FaultKind::InUse,
        "LimitExceededException" => FaultKind::LimitExceeded,
        "ValidationException"
        | "ValidationError"
        | "InvalidParameterValue"
        | "InvalidParameterValueException"
        | "InvalidParameterCombination" => FaultKind::Invalid,
        "ConditionalCheckFailedException" => FaultKind::ConditionFailed,
        _ => FaultKind::Other,
    }
}

/// One statistic of one metric as a GetMetricData query named `id`: the shape every reader of
/// CloudWatch here asks in (consumed capacity, evidence, probes, settling, consumers).
pub fn metric_query<K: Into<String>, V: Into<String>>(
    id: impl Into<String>,
    namespace: &str,
    metric: &str,
    dimensions: impl IntoIterator<Item = (K, V)>,
    period_seconds: i32,
    stat: &str,
) -> aws_sdk_cloudwatch::types::MetricDataQuery {
    use aws_sdk_cloudwatch::types::{Dimension, Metric, MetricDataQuery, MetricStat};
    let dimensions = dimensions
        .into_iter()
        .map(|(name, value)| Dimension::builder().name(name).value(value).build())
        .collect();
    MetricDataQuery::builder()
        .id(id)
        .metric_stat(
            MetricStat::builder()
                .metric(
                    Metric::builder()
                        .namespace(namespace)
                        .metric_name(metric)
                        .set_dimensions(Some(dimensions))
                        .build(),
                )
                .period(period_seconds)
                .stat(stat)
                .build(),
        )
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_common_codes() {
        assert_eq!(
            classify(Some("ThrottlingException"), ""),
            FaultKind::Throttled
        );
        assert_eq!(
            classify(Some("AccessDeniedException"), ""),
            FaultKind::AccessDenied
        );
        assert_eq!(
            classify(Some("ValidationError"), "Stack with id x does not exist"),
            FaultKind::NotFound
        );
        assert_eq!(classify(None, ""), FaultKind::Other);
    }

    #[test]
    fn batch_calls_map_to_their_iam_action() {
        assert_eq!(iam_action("sqs:SendMessageBatch"), "sqs:SendMessage");
        assert_eq!(iam_action("sqs:ReceiveMessage"), "sqs:ReceiveMessage");
        assert_eq!(
            iam_action("dynamodb:BatchWriteItem"),
            "dynamodb:BatchWriteItem"
        );
    }

    #[test]
    fn access_denied_says_what_to_grant() {
        let err = AwsError {
            api: "dynamodb:UpdateTable".into(),
            resource: "orders".into(),
            code: Some("AccessDeniedException".into()),
            message: "AccessDeniedException: not authorized".into(),
            kind: FaultKind::AccessDenied,
        };
        assert_eq!(
            err.to_string(),
            "dynamodb:UpdateTable on orders failed: AccessDeniedException: not authorized (grant dynamodb:UpdateTable on orders to the function's role in template.yaml)"
        );
    }
}
