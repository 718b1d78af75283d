//! Other AWS services' events, told apart by their keys so that none is read as a person's
//! payload.

use serde_json::{Map, Value};

/// What an AWS service's event that has no `source` is, told from its keys (the shapes of the
/// aws_lambda_events crate's examples); a shape it does not know is read as a person's payload.
// Over 80 lines: a table of event shapes; a row per AWS service reads better than a function per
// row.
pub(super) fn other_service(object: &Map<String, Value>) -> Option<String> {
    let has = |key: &str| object.contains_key(key);
    // Event source mappings (Kafka, MQ, DocumentDB, DynamoDB streams) and CloudTrail records
    // name their service.
    if let Some(source) = object.get("eventSource").and_then(Value::as_str) {
        return Some(format!("an {source} event (eventSource)"));
    }
    const SHAPES: &[(&[&str], &str)] = &[
        (
            &["requestContext"],
            "an API Gateway or function URL request",
        ),
        (&["httpMethod"], "an API Gateway request"),
        (&["routeKey"], "an API Gateway HTTP API request"),
        (&["awslogs"], "a CloudWatch Logs subscription delivery"),
        (
            &["triggerSource", "userPoolId"],
            "a Cognito user pool trigger",
        ),
        (
            &["RequestType", "ResponseURL"],
            "a CloudFormation custom resource request",
        ),
        (
            &["RequestType", "LogicalResourceId"],
            "a CloudFormation custom resource request",
        ),
        (&["claims", "issuer"], "an AppSync identity"),
        (
            &["TopicArn", "Type"],
            "an SNS message in its HTTP form (a function subscribed to a topic receives it in Records[].Sns)",
        ),
        (
            &["deliveryStreamArn"],
            "a Data Firehose transformation request",
        ),
        (&["methodArn"], "an API Gateway authorizer request"),
        (&["raw_path", "method"], "a VPC Lattice request"),
        (
            &["userRequest", "configuration"],
            "an S3 Object Lambda request",
        ),
        (&["CodePipeline.job"], "a CodePipeline job"),
        (
            &["LifecycleEventHookExecutionId"],
            "a CodeDeploy lifecycle hook",
        ),
        (
            &["SecretId", "ClientRequestToken", "Step"],
            "a Secrets Manager rotation step",
        ),
        (&["invocationSource", "bot"], "a Lex bot request"),
        (
            &["Details", "Name"],
            "an Amazon Connect contact flow request",
        ),
        (&["operation", "payload"], "an AppSync resolver request"),
        (&["arguments", "info"], "an AppSync resolver request"),
        (&["protocolData"], "an IoT custom authorizer request"),
        (&["deviceEvent"], "an IoT 1-Click event"),
        (&["clickType", "serialNumber"], "an IoT button event"),
        (&["datasetRecords"], "a Cognito Sync event"),
        (
            &["connection-id", "endpoint-id"],
            "a Client VPN connection request",
        ),
    ];
    if let Some((_, what)) = SHAPES
        .iter()
        .find(|(keys, _)| keys.iter().all(|key| has(key)))
    {
        return Some((*what).to_string());
    }
    // What a function answers AWS with, sent back as an input.
    let response = [
        "statusCode",
        "batchItemFailures",
        "dialogAction",
        "policyDocument",
        "isAuthorized",
        "isAuthenticated",
        "PhysicalResourceId",
        "records",
        "Messages",
    ]
    .iter()
    .any(|key| has(key));
    response.then(|| "an answer to or from an AWS service, not an event".to_string())
}

#[cfg(test)]
mod tests {
    use super::super::recognise;
    use crate::model::Trigger;
    use serde_json::json;

    #[test]
    fn other_services_events_are_named_not_read_as_payloads() {
        let s3 = json!({"Records": [{"eventSource": "aws:s3", "eventName": "ObjectCreated:Put"}]});
        assert!(recognise(&s3).unwrap_err().0.starts_with("an aws:s3 event"));
        let api = json!({"resource": "/", "httpMethod": "GET", "requestContext": {}});
        assert!(recognise(&api).unwrap_err().0.contains("API Gateway"));
        let kafka = json!({"eventSource": "aws:kafka", "records": {}});
        assert!(
            recognise(&kafka)
                .unwrap_err()
                .0
                .starts_with("an aws:kafka event")
        );
        // A person's payload is still one.
        assert!(matches!(
            recognise(&json!({"table": "t"})),
            Ok(Trigger::Manual(_))
        ));
    }
}
