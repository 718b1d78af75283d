//! The subject's recent changes: versions, aliases, configuration and its stack's events.

use super::*;

use crate::model::RecentChange;

/// Versions published, aliases moved to them, the configuration updated, and the owning
/// stack's events, since `since`; newest first.
pub(super) async fn recent_changes(
    lambda: &aws_sdk_lambda::Client,
    cloudformation: Option<&aws_sdk_cloudformation::Client>,
    function: &str,
    last_modified: Option<&str>,
    since: DateTime<Utc>,
) -> Result<Vec<RecentChange>, AwsError> {
    let resource = format!("function {function}");
    let versions = published_versions(lambda, function);
    let aliases = async {
        lambda
            .list_aliases()
            .function_name(function)
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("lambda:ListAliases", &resource, &err))
    };
    let stack = async {
        let Some(cloudformation) = cloudformation else {
            return Ok(Vec::new());
        };
        stack_events(cloudformation, function, since).await
    };
    let (versions, aliases, stack) = tokio::join!(versions, aliases, stack);
    let (versions, aliases, stack) = (versions?, aliases?, stack?);
    let mut changes = stack;
    let versions: Vec<(String, DateTime<Utc>)> = versions
        .into_iter()
        .filter_map(|(number, at)| Some((number.to_string(), at?)))
        .collect();
    for (version, at) in versions.iter().filter(|(_, at)| *at >= since) {
        changes.push(RecentChange {
            at: crate::model::timestamp(*at),
            kind: "version_published",
            what: format!("version {version} of {function} published"),
        });
    }
    for alias in aliases.aliases() {
        let (Some(name), Some(version)) = (alias.name(), alias.function_version()) else {
            continue;
        };
        if let Some((_, at)) = versions.iter().find(|(v, at)| v == version && *at >= since) {
            let weights = alias
                .routing_config()
                .and_then(|routing| routing.additional_version_weights())
                .map(|weights| {
                    let mut shares: Vec<String> = weights
                        .iter()
                        .map(|(version, weight)| {
                            format!("{:.0}% to version {version}", weight * 100.0)
                        })
                        .collect();
                    shares.sort();
                    format!(" ({})", shares.join(", "))
                })
                .unwrap_or_default();
            changes.push(RecentChange {
                at: crate::model::timestamp(*at),
                kind: "alias_moved",
                what: format!(
                    "alias {name} routes to version {version}, published in the window{weights}"
                ),
            });
        }
    }
    if let Some(at) = last_modified
        .and_then(lambda_time)
        .filter(|at| *at >= since)
    {
        changes.push(RecentChange {
            at: crate::model::timestamp(at),
            kind: "configuration_updated",
            what: format!("{function}'s code or configuration ($LATEST) updated"),
        });
    }
    changes.sort_by(|a, b| b.at.cmp(&a.at));
    Ok(changes)
}

/// The function's published versions (not `$LATEST`), each with when it was published when
/// Lambda says; oldest first.
pub async fn published_versions(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
) -> Result<Vec<(u64, Option<DateTime<Utc>>)>, AwsError> {
    let mut versions = Vec::new();
    let mut pages = lambda
        .list_versions_by_function()
        .function_name(function)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|err| {
            AwsError::from_sdk(
                "lambda:ListVersionsByFunction",
                &format!("function {function}"),
                &err,
            )
        })?;
        versions.extend(page.versions().iter().filter_map(|v| {
            Some((
                v.version()?.parse().ok()?,
                v.last_modified().and_then(lambda_time),
            ))
        }));
    }
    versions.sort_by_key(|(number, _)| *number);
    Ok(versions)
}

/// The events of the stack that owns `function` since `since` (at most 20).
async fn stack_events(
    cloudformation: &aws_sdk_cloudformation::Client,
    function: &str,
    since: DateTime<Utc>,
) -> Result<Vec<RecentChange>, AwsError> {
    let Some(owner) = crate::guards::owner_of(cloudformation, function).await? else {
        return Ok(Vec::new());
    };
    let events = cloudformation
        .describe_stack_events()
        .stack_name(&owner.stack)
        .send()
        .await
        .map_err(|err| {
            AwsError::from_sdk("cloudformation:DescribeStackEvents", &owner.stack, &err)
        })?;
    Ok(events
        .stack_events()
        .iter()
        .filter_map(|event| {
            let at = DateTime::from_timestamp(event.timestamp()?.secs(), 0)?;
            (at >= since).then(|| RecentChange {
                at: crate::model::timestamp(at),
                kind: "stack_event",
                what: format!(
                    "stack {}: {} {}{}",
                    owner.stack,
                    event.logical_resource_id().unwrap_or_default(),
                    event.resource_status().map_or("", |s| s.as_str()),
                    event
                        .resource_status_reason()
                        .map(|reason| format!(" ({})", normalise(reason)))
                        .unwrap_or_default()
                ),
            })
        })
        .take(20)
        .collect())
}

/// Lambda's timestamps (`2026-11-23T08:00:00.000+0000`), or RFC 3339.
pub fn lambda_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lambda_timestamps() {
        assert!(lambda_time("2026-11-23T08:00:00.000+0000").is_some());
        assert!(lambda_time("2026-11-23T08:00:00Z").is_some());
        assert!(lambda_time("yesterday").is_none());
    }
}
