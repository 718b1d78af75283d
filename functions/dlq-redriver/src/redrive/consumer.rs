//! Before an automatic redrive: is each source queue's consumer well again? Messages redriven
//! into a consumer that still fails come straight back, and each trip spends one of their
//! redrives. A source's consumer is its Lambda event source mappings (ListEventSourceMappings by
//! the queue's ARN): each must be `Enabled`, and its function's `Errors` and `Throttles` over the
//! last `CONSUMER_HEALTHY_MINUTES` must be zero (a function stopped with a reserved concurrency
//! of 0 logs no errors, but throttles every batch).

use chrono::Utc;
use runbook_shared::aws::AwsError;
use serde::Serialize;

use crate::Redriver;
use crate::queues::Queue;

/// One event source mapping from a source queue to a function, as the check saw it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Consumer {
    pub queue: String,
    pub function: String,
    pub mapping: String,
    pub state: String,
    /// `Errors` and `Throttles` (Sum) of the function over the window; none without datapoints.
    pub errors: Option<f64>,
    pub throttles: Option<f64>,
}

/// What the check found: the consumers, why any is still failing, and the sources with no
/// Lambda consumer to check.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ConsumerCheck {
    pub minutes: i64,
    pub consumers: Vec<Consumer>,
    pub failing: Vec<String>,
    pub unchecked: Vec<String>,
}

impl Redriver {
    /// Checks the consumers of `sources`.
    pub(super) async fn check_consumers(
        &self,
        sources: &[Queue],
        minutes: i64,
    ) -> Result<ConsumerCheck, AwsError> {
        let mut check = ConsumerCheck {
            minutes,
            ..ConsumerCheck::default()
        };
        for source in sources {
            let mut pages = self
                .clients
                .lambda
                .list_event_source_mappings()
                .event_source_arn(&source.arn)
                .into_paginator()
                .send();
            let mut found = false;
            while let Some(page) = pages.next().await {
                let page = page.map_err(|err| {
                    AwsError::from_sdk(
                        "lambda:ListEventSourceMappings",
                        &format!("queue {}", source.name),
                        &err,
                    )
                })?;
                for mapping in page.event_source_mappings() {
                    found = true;
                    let function = mapping
                        .function_arn()
                        .and_then(|arn| arn.split(":function:").nth(1))
                        .unwrap_or_default();
                    check.consumers.push(Consumer {
                        queue: source.name.clone(),
                        // The mapping may name a qualified function; its errors are the function's.
                        function: function.split(':').next().unwrap_or_default().to_string(),
                        mapping: mapping.uuid().unwrap_or_default().to_string(),
                        state: mapping.state().unwrap_or("Unknown").to_string(),
                        errors: None,
                        throttles: None,
                    });
                }
            }
            if !found {
                check.unchecked.push(source.name.clone());
            }
        }
        self.consumer_errors(&mut check.consumers, minutes).await?;
        for consumer in &check.consumers {
            if consumer.state != "Enabled" {
                check.failing.push(format!(
                    "the event source mapping {} from {} to {} is {}",
                    consumer.mapping, consumer.queue, consumer.function, consumer.state
                ));
            }
            if let Some(errors) = consumer.errors.filter(|errors| *errors > 0.0) {
                check.failing.push(format!(
                    "{} had {errors} errors in the last {minutes} minutes",
                    consumer.function
                ));
            }
            if let Some(throttles) = consumer.throttles.filter(|throttles| *throttles > 0.0) {
                check.failing.push(format!(
                    "{} was throttled {throttles} times in the last {minutes} minutes (its reserved concurrency, or the account's)",
                    consumer.function
                ));
            }
        }
        Ok(check)
    }

    /// Each consumer's `Errors` and `Throttles` over the last `minutes`, in one GetMetricData
    /// call.
    async fn consumer_errors(
        &self,
        consumers: &mut [Consumer],
        minutes: i64,
    ) -> Result<(), AwsError> {
        if consumers.is_empty() {
            return Ok(());
        }
        let end = Utc::now();
        let period = i32::try_from(minutes * 60).unwrap_or(i32::MAX);
        let mut request = self
            .clients
            .cloudwatch
            .get_metric_data()
            .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                end.timestamp() - i64::from(period),
            ))
            .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                end.timestamp(),
            ));
        for (index, (consumer, metric)) in consumers
            .iter()
            .flat_map(|consumer| [(consumer, "Errors"), (consumer, "Throttles")])
            .enumerate()
        {
            request = request.metric_data_queries(runbook_shared::aws::metric_query(
                format!("m{index}"),
                "AWS/Lambda",
                metric,
                [("FunctionName", consumer.function.as_str())],
                period,
                "Sum",
            ));
        }
        let output = request.send().await.map_err(|err| {
            AwsError::from_sdk("cloudwatch:GetMetricData", "the consumers' Errors", &err)
        })?;
        let sum = |index: usize| {
            let id = format!("m{index}");
            output
                .metric_data_results()
                .iter()
                .find(|result| result.id() == Some(id.as_str()))
                .and_then(|result| result.values().iter().copied().reduce(|a, b| a + b))
        };
        for (index, consumer) in consumers.iter_mut().enumerate() {
            consumer.errors = sum(2 * index);
            consumer.throttles = sum(2 * index + 1);
        }
        Ok(())
    }
}
