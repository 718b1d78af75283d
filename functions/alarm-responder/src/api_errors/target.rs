//! What `api-errors` triages: the API and stage a manual payload or a 5xx alarm names.

use std::collections::BTreeMap;

use runbook_shared::model::AwaitedMetric;
use runbook_shared::model::{AlarmTrigger, MetricRef, Rejection};
use serde::Deserialize;

use super::Api;

use super::{HTTP_METRIC, NAMESPACE, REST_METRIC};

/// The manual payload: `{"runbook": "api-errors", "api": "orders-api", "stage": "prod",
/// "dry_run": true}`; `api` is the API's name or id.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub api: String,
    #[serde(default)]
    pub stage: Option<String>,
    #[serde(default)]
    pub dry_run: Option<bool>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiKind {
    Rest,
    Http,
}

impl ApiKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ApiKind::Rest => "REST",
            ApiKind::Http => "HTTP",
        }
    }
}

/// The API (and stage) whose 5xx to triage.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiErrors {
    /// Its name or id.
    pub api: String,
    /// None: every stage (an alarm on the whole API).
    pub stage: Option<String>,
    /// What the alarm's metric says it is (a manual payload does not say).
    pub kind: Option<ApiKind>,
}

impl ApiErrors {
    pub fn from_request(request: &Request) -> Result<Self, Rejection> {
        let api = request.api.trim();
        if api.is_empty() {
            return Err(Rejection(
                "\"api\" must name an API Gateway API by its name or id".into(),
            ));
        }
        let stage = request.stage.as_deref().map(str::trim);
        if stage.is_some_and(str::is_empty) {
            return Err(Rejection(
                "\"stage\" must name a stage of the API, or be left out for all of them".into(),
            ));
        }
        Ok(Self {
            api: api.to_string(),
            stage: stage.map(str::to_string),
            kind: None,
        })
    }

    /// Whether the alarm watches an API's 5xx.
    pub fn watched_by(alarm: &AlarmTrigger) -> bool {
        alarm.metrics.iter().any(is_5xx)
    }

    /// The API an `AWS/ApiGateway` `5XXError` (`ApiName`) or `5xx` (`ApiId`) alarm watches, with
    /// its `Stage` when it has one; `Err` says why none.
    pub fn from_alarm(alarm: &AlarmTrigger) -> Result<Self, String> {
        let mut apis: Vec<Self> = alarm
            .metrics
            .iter()
            .filter(|metric| is_5xx(metric))
            .filter_map(|metric| {
                let (api, kind) = match metric.dimension("ApiName") {
                    Some(name) => (name, ApiKind::Rest),
                    None => (metric.dimension("ApiId")?, ApiKind::Http),
                };
                Some(Self {
                    api: api.to_string(),
                    stage: metric.dimension("Stage").map(str::to_string),
                    kind: Some(kind),
                })
            })
            .collect();
        apis.dedup();
        match apis.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(format!(
                "alarm {} watches no API: an {NAMESPACE} {REST_METRIC} alarm needs the dimension ApiName, a {HTTP_METRIC} alarm ApiId",
                alarm.alarm_name
            )),
            many => Err(format!(
                "alarm {} watches the 5xx of several APIs or stages ({}): nothing was triaged; alarm on each, or run api-errors by hand on one",
                alarm.alarm_name,
                many.iter()
                    .map(|api| api.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    pub(super) fn name(&self) -> String {
        match &self.stage {
            Some(stage) => format!("{} stage {stage}", self.api),
            None => self.api.clone(),
        }
    }

    /// The 5xx metric the verification waits on, for a run without an alarm.
    pub(super) fn awaited(&self, api: &Api) -> AwaitedMetric {
        let (metric, dimension, value) = match api.kind {
            ApiKind::Rest => (REST_METRIC, "ApiName", api.name.clone()),
            ApiKind::Http => (HTTP_METRIC, "ApiId", api.id.clone()),
        };
        let mut dimensions: BTreeMap<String, String> = [(dimension.to_string(), value)].into();
        if let Some(stage) = &self.stage {
            dimensions.insert("Stage".into(), stage.clone());
        }
        AwaitedMetric {
            check: "api_5xx_stopped",
            expected: format!("no 5xx from {}", self.name()),
            namespace: NAMESPACE.into(),
            metrics: vec![metric.into()],
            dimensions,
        }
    }
}

fn is_5xx(metric: &MetricRef) -> bool {
    metric.namespace == NAMESPACE && (metric.name == REST_METRIC || metric.name == HTTP_METRIC)
}
