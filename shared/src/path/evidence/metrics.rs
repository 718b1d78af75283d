//! The subject's figures over the window and the one before (one GetMetricData call).

use super::*;
use std::collections::BTreeMap;

use crate::model::Figures;

/// The subject's figures over the window and the one before: one GetMetricData call whose
/// period is the window, so each figure has (at most) one datapoint per window.
pub(super) async fn metrics(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    subject: &Subject,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<BTreeMap<String, Figures>, AwsError> {
    let Queries {
        namespace,
        dimensions,
        figures,
    } = queries(subject);
    // CloudWatch's periods beyond a minute are multiples of 60 s, and it rounds the start of a
    // query down to the minute: the windows end on the next whole minute, so that each
    // datapoint falls in the window it is counted in.
    let period = ((to - from).num_seconds().max(60) + 59) / 60 * 60;
    let end = (to.timestamp() + 59) / 60 * 60;
    let mut request = cloudwatch
        .get_metric_data()
        .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
            end - 2 * period,
        ))
        .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(end));
    for (index, (_, metric, stat)) in figures.iter().enumerate() {
        request = request.metric_data_queries(crate::aws::metric_query(
            format!("m{index}"),
            namespace,
            metric,
            dimensions.iter().cloned(),
            i32::try_from(period).unwrap_or(i32::MAX),
            stat,
        ));
    }
    let output = request.send().await.map_err(|err| {
        AwsError::from_sdk(
            "cloudwatch:GetMetricData",
            &format!("{namespace} {dimensions:?}"),
            &err,
        )
    })?;
    let window_starts = end - period;
    let mut found = BTreeMap::new();
    for (index, (figure, _, _)) in figures.iter().enumerate() {
        let id = format!("m{index}");
        let mut figures = Figures::default();
        if let Some(result) = output
            .metric_data_results()
            .iter()
            .find(|r| r.id() == Some(id.as_str()))
        {
            for (value, time) in result.values().iter().zip(result.timestamps()) {
                if time.secs() >= window_starts {
                    figures.window = Some(*value);
                } else {
                    figures.previous = Some(*value);
                }
            }
        }
        found.insert((*figure).to_string(), figures);
    }
    if let (Some(errors), Some(invocations)) = (
        found.get("errors").copied(),
        found.get("invocations").copied(),
    ) {
        let rate = |errors: Option<f64>, invocations: Option<f64>| match (errors, invocations) {
            (Some(errors), Some(invocations)) if invocations > 0.0 => Some(errors / invocations),
            _ => None,
        };
        found.insert(
            "error_rate".into(),
            Figures {
                window: rate(errors.window, invocations.window),
                previous: rate(errors.previous, invocations.previous),
            },
        );
    }
    Ok(found)
}
