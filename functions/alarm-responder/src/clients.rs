//! What alarm-responder acts with: its AWS clients, in its own place and in each place a hub
//! remediates.

use runbook_shared::edge::fleet::Fleet;
use runbook_shared::model::FleetConfig;

use crate::Responder;
use crate::config::ResponderConfig;

/// The clients of the resources it reads and changes, and of the audit table (tests replace
/// one of them with a replay client).
#[derive(Clone, Debug)]
pub struct Clients {
    pub lambda: aws_sdk_lambda::Client,
    pub cloudformation: aws_sdk_cloudformation::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
    pub dynamodb: aws_sdk_dynamodb::Client,
    /// The functions' logs, for the evidence in the reports.
    pub logs: aws_sdk_cloudwatchlogs::Client,
    /// REST and HTTP APIs, read by api-errors.
    pub apigateway: aws_sdk_apigateway::Client,
    pub apigatewayv2: aws_sdk_apigatewayv2::Client,
    /// The bus api-errors sends its handoffs to.
    pub events: aws_sdk_eventbridge::Client,
    /// The queues a function consumes, whose visibility timeout caps its timeout.
    pub sqs: aws_sdk_sqs::Client,
    pub audit: aws_sdk_dynamodb::Client,
}

impl Clients {
    pub fn new(sdk: &aws_config::SdkConfig) -> Self {
        let dynamodb = aws_sdk_dynamodb::Client::new(sdk);
        Self {
            lambda: aws_sdk_lambda::Client::new(sdk),
            cloudformation: aws_sdk_cloudformation::Client::new(sdk),
            cloudwatch: aws_sdk_cloudwatch::Client::new(sdk),
            logs: aws_sdk_cloudwatchlogs::Client::new(sdk),
            apigateway: aws_sdk_apigateway::Client::new(sdk),
            apigatewayv2: aws_sdk_apigatewayv2::Client::new(sdk),
            events: aws_sdk_eventbridge::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
            audit: dynamodb.clone(),
            dynamodb,
        }
    }

    /// The clients of one account and region a hub acts in, with the hub's audit table and
    /// bus (a handoff goes to the hub's limit-scaler).
    pub fn at(place: &aws_config::SdkConfig, hub: &aws_config::SdkConfig) -> Self {
        Self {
            audit: aws_sdk_dynamodb::Client::new(hub),
            events: aws_sdk_eventbridge::Client::new(hub),
            ..Self::new(place)
        }
    }
}

/// alarm-responder in every account and region the deployment remediates.
pub fn fleet(
    config: ResponderConfig,
    places: FleetConfig,
    sdk: &aws_config::SdkConfig,
) -> Fleet<Responder> {
    Fleet::of(
        places,
        config.safety.clone(),
        sdk,
        move |safety, place_sdk, hub| {
            let config = ResponderConfig {
                safety,
                ..config.clone()
            };
            Responder::with_clients(config, Clients::at(place_sdk, hub))
        },
    )
}
