//! Whether a resource may be touched, when its name does not say so: its `runbook:managed` tag.

use crate::aws::AwsError;
use crate::model::{Ending, Home, ManagedPolicy, Step};

/// Whether the Lambda function may be changed: its name matches, or its tags (read with
/// `lambda:ListTags` on `arn`) mark it managed; else the run ends, skipped, or failed when
/// the tags could not be read.
pub async fn require_function(
    policy: &ManagedPolicy,
    lambda: &aws_sdk_lambda::Client,
    function: &str,
    arn: &str,
) -> Step<()> {
    if policy.matches("function", function) {
        return Ok(());
    }
    let tags = lambda
        .list_tags()
        .resource(arn)
        .send()
        .await
        .map_err(|err| {
            let err = AwsError::from_sdk("lambda:ListTags", &format!("function {function}"), &err);
            Ending::failed(format!(
                "could not check that {function} is managed, nothing was changed: {err}"
            ))
        })?;
    let tags = tags.tags().into_iter().flatten();
    policy.require_tagged(
        "function",
        function,
        tags.map(|(k, v)| (k.as_str(), v.as_str())),
    )
}

/// Whether the DynamoDB table may be changed: its name matches, or its tags (read with
/// `dynamodb:ListTagsOfResource`) mark it managed; else the run ends, skipped, or failed
/// when the tags could not be read.
pub async fn require_table(
    policy: &ManagedPolicy,
    dynamodb: &aws_sdk_dynamodb::Client,
    home: &Home,
    table: &str,
) -> Step<()> {
    if policy.matches("table", table) {
        return Ok(());
    }
    let arn = home.table(table).key();
    let tags = dynamodb
        .list_tags_of_resource()
        .resource_arn(&arn)
        .send()
        .await
        .map_err(|err| {
            let err = AwsError::from_sdk("dynamodb:ListTagsOfResource", &arn, &err);
            Ending::failed(format!(
                "could not check that table {table} is managed, nothing was changed: {err}"
            ))
        })?;
    policy.require_tagged(
        "table",
        table,
        tags.tags().iter().map(|tag| (tag.key(), tag.value())),
    )
}
