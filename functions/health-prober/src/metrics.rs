//! Probe results as CloudWatch metrics, in as few PutMetricData calls as the API allows.

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum, StandardUnit};
use runbook_shared::aws::AwsError;
use serde::Serialize;

use crate::check::ProbeResult;

/// PutMetricData accepts up to 1,000 metrics per call.
pub const MAX_DATUMS_PER_CALL: usize = 1_000;

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Published {
    pub namespace: String,
    pub datapoints: usize,
    pub calls: usize,
}

/// Per probe `Healthy` (1/0) and `LatencyMs` (dimension `Probe`), the aggregate
/// `UnhealthyProbes`, and `FailedVerifications` when the sweep ran.
pub fn datums(results: &[ProbeResult], failed_verifications: Option<usize>) -> Vec<MetricDatum> {
    let now = aws_sdk_cloudwatch::primitives::DateTime::from_secs(chrono::Utc::now().timestamp());
    let datum = |name: &str, value: f64, unit: StandardUnit, probe: Option<&str>| {
        MetricDatum::builder()
            .metric_name(name)
            .value(value)
            .unit(unit)
            .timestamp(now)
            .set_dimensions(
                probe.map(|probe| vec![Dimension::builder().name("Probe").value(probe).build()]),
            )
            .build()
    };
    let mut all = Vec::with_capacity(results.len() * 2 + 2);
    for result in results {
        all.push(datum(
            "Healthy",
            if result.healthy { 1.0 } else { 0.0 },
            StandardUnit::None,
            Some(&result.name),
        ));
        all.push(datum(
            "LatencyMs",
            result.latency_ms as f64,
            StandardUnit::Milliseconds,
            Some(&result.name),
        ));
    }
    // No "0 unhealthy" when nothing was probed: the UnhealthyProbes alarm treats missing data
    // as breaching, so an empty PROBES pages instead of showing a healthy system.
    if !results.is_empty() {
        let unhealthy = results.iter().filter(|result| !result.healthy).count();
        all.push(datum(
            "UnhealthyProbes",
            unhealthy as f64,
            StandardUnit::Count,
            None,
        ));
    }
    if let Some(failed) = failed_verifications {
        all.push(datum(
            "FailedVerifications",
            failed as f64,
            StandardUnit::Count,
            None,
        ));
    }
    all
}

pub async fn publish(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    namespace: &str,
    datums: Vec<MetricDatum>,
) -> Result<Published, AwsError> {
    let mut published = Published {
        namespace: namespace.to_string(),
        ..Published::default()
    };
    for chunk in datums.chunks(MAX_DATUMS_PER_CALL) {
        cloudwatch
            .put_metric_data()
            .namespace(namespace)
            .set_metric_data(Some(chunk.to_vec()))
            .send()
            .await
            .map_err(|err| {
                AwsError::from_sdk(
                    "cloudwatch:PutMetricData",
                    &format!("namespace {namespace}"),
                    &err,
                )
            })?;
        published.calls += 1;
        published.datapoints += chunk.len();
    }
    Ok(published)
}
