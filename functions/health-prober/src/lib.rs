//! health-prober: the "system health check" runbook — HTTP /health endpoints, tables, queues,
//! stacks, alarms and functions checked concurrently, published as CloudWatch metrics — and the
//! sweep that settles the other functions' pending verifications.

pub mod check;
pub mod config;
pub mod metrics;
pub mod probes;
pub mod scorecard;
pub mod sweep;

use std::time::Duration;

use chrono::Utc;
use runbook_shared::edge::fleet::Fleet;
use runbook_shared::edge::recognise::recognise;
use runbook_shared::guards::Switch;
use runbook_shared::model::Invocation;
use runbook_shared::model::Trigger;
use runbook_shared::model::{Report, TriggerInfo, TriggerKind, VerificationStatus};
use runbook_shared::store::AuditStore;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::check::{Clients, ProbeResult};
use crate::config::ProberConfig;
use crate::metrics::Published;
use crate::probes::{Probe, parse_probes};
use crate::sweep::Settled;

/// Kept back from the probes for the verification sweep, the metrics and the report.
const AFTER_THE_PROBES: Duration = Duration::from_secs(5);
/// Kept back from the sweep for the metrics and the report.
const AFTER_THE_SWEEP: Duration = Duration::from_secs(2);

pub const FUNCTION: &str = "health-prober";
pub const RUNBOOK: &str = "health-check";

/// The manual payload: `{"probes": [...]}` runs those probes instead of `PROBES`; `{}` runs
/// `PROBES`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeRequest {
    #[serde(default)]
    pub probes: Option<Value>,
}

/// What the prober returns.
#[derive(Clone, Debug, Serialize)]
pub struct HealthReport {
    pub function: String,
    pub runbook: String,
    pub trigger: TriggerInfo,
    pub healthy: bool,
    pub reason: String,
    pub probes: Vec<ProbeResult>,
    /// Pending verifications the sweep looked at.
    pub settled: Vec<Settled>,
    pub metrics: Option<Published>,
    /// Faults that kept part of the run from completing (metrics, sweep).
    pub errors: Vec<String>,
    /// The pause the sweep engaged (PAUSE_AFTER_FAILED_VERIFICATIONS), published as its own
    /// `Runbook Automation Paused` event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<Report>,
    pub duration_ms: u64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub enum ProberOutput {
    Health(Box<HealthReport>),
    /// A rejected input, or a kill-switch payload's report.
    Report(Box<Report>),
    /// `{"report": "scorecard"}`, or the daily scorecard schedule.
    Scorecard(Box<scorecard::Scorecard>),
}

pub struct Prober {
    pub config: ProberConfig,
    pub clients: Clients,
    pub audit: AuditStore,
    /// The kill switch: served here too, and tripped by the sweep.
    pub switch: Switch,
    /// The accounts and regions of a hub's remediations, which the sweep checks them in.
    pub places: Option<Fleet<sweep::PlaceClients>>,
}

impl Prober {
    pub fn new(config: ProberConfig, sdk: &aws_config::SdkConfig) -> Self {
        let clients = Clients {
            http: reqwest::Client::builder()
                .user_agent("runbook-automation-health-prober")
                .build()
                .unwrap_or_default(),
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
            cloudwatch: aws_sdk_cloudwatch::Client::new(sdk),
            cloudformation: aws_sdk_cloudformation::Client::new(sdk),
            lambda: aws_sdk_lambda::Client::new(sdk),
        };
        let places = config.places.clone().map(|(hub, places)| {
            Fleet::new(places, hub, sdk, |sdk, _| sweep::PlaceClients::new(sdk))
        });
        Self {
            places,
            ..Self::with_clients(config, clients)
        }
    }

    pub fn with_clients(config: ProberConfig, clients: Clients) -> Self {
        let audit = AuditStore::new(
            clients.dynamodb.clone(),
            config.audit_table.clone(),
            config.audit_retention_days,
        );
        let mut switch = Switch::new(audit.clone(), config.paused_at_deploy);
        if let Some((hub, places)) = &config.places {
            let accounts = std::iter::once(&hub.account).chain(&places.spokes);
            switch = switch.in_fleet(None, accounts.cloned().collect());
        }
        Self {
            config,
            clients,
            audit,
            switch,
            places: None,
        }
    }

    /// Runs the probes (scheduled, or manual with optional probes of its own), publishes the
    /// metrics and sweeps pending verifications. Never fails.
    // Over 80 lines: the event's three forms (schedule, manual with probes, a request for the
    // sweep) and what each publishes.
    pub async fn handle(&self, event: Value, invocation: &Invocation) -> ProberOutput {
        let rejected = |info: TriggerInfo, reason: String| {
            let mut report = Report::rejected(FUNCTION, info, reason);
            report.runbook = Some(RUNBOOK.into());
            ProberOutput::Report(Box::new(invocation.timed(report)))
        };
        let trigger = match recognise(&event) {
            Ok(trigger) => trigger,
            Err(rejection) => {
                return rejected(
                    TriggerInfo {
                        kind: TriggerKind::Unknown,
                        name: None,
                        event_id: None,
                    },
                    rejection.0,
                );
            }
        };
        let info = trigger.info(&invocation.request_id);
        let probes = match &trigger {
            Trigger::Control(payload) => {
                let report = runbook_shared::edge::controls::control(
                    &self.switch,
                    FUNCTION,
                    payload,
                    info,
                    invocation,
                )
                .await;
                return ProberOutput::Report(Box::new(report));
            }
            Trigger::Approval(_) => {
                return rejected(
                    info,
                    "health-prober makes no plans: approve or deny a plan on the function that made it (the function of its awaiting_approval report)".into(),
                );
            }
            Trigger::Schedule(schedule)
                if self.config.is_scorecard_rule(schedule.rule.as_deref()) =>
            {
                return self
                    .scorecard(scorecard::DEFAULT_DAYS, true, info, invocation)
                    .await;
            }
            Trigger::Schedule(_) => self.config.probes.clone(),
            Trigger::Manual(payload) if payload.contains_key("report") => {
                let request = runbook_shared::model::parse_manual::<scorecard::Request>(payload);
                let days = match request {
                    Err(rejection) => return rejected(info, rejection.0),
                    Ok(request) if request.report != "scorecard" => {
                        return rejected(
                            info,
                            format!("\"report\" must be \"scorecard\", got {:?}", request.report),
                        );
                    }
                    Ok(request) => request.days.unwrap_or(scorecard::DEFAULT_DAYS),
                };
                let retention = self.config.audit_retention_days;
                if !(1..=retention).contains(&days) {
                    return rejected(
                        info,
                        format!(
                            "\"days\" must be from 1 to {retention} (AUDIT_RETENTION_DAYS: older runs are gone), got {days}"
                        ),
                    );
                }
                return self.scorecard(days, false, info, invocation).await;
            }
            Trigger::Manual(payload) => {
                let request = runbook_shared::model::parse_manual::<ProbeRequest>(payload);
                match request.map(|request| request.probes) {
                    Err(rejection) => return rejected(info, rejection.0),
                    Ok(None) => self.config.probes.clone(),
                    Ok(Some(probes)) => match parse_probes(&probes, "probes") {
                        Ok(probes) => probes,
                        Err(err) => {
                            return rejected(info, format!("invalid manual payload: {err}"));
                        }
                    },
                }
            }
            _ => {
                return rejected(
                    info,
                    "health-prober runs on its schedule or by hand, not on this event".into(),
                );
            }
        };
        self.probe(probes, info, invocation).await
    }

    /// The scorecard of the last `days` days; `publish` also puts its metrics (the daily
    /// schedule).
    async fn scorecard(
        &self,
        days: i64,
        publish: bool,
        trigger: TriggerInfo,
        invocation: &Invocation,
    ) -> ProberOutput {
        let now = Utc::now();
        let mut card = scorecard::Scorecard {
            function: FUNCTION.into(),
            report: "scorecard".into(),
            trigger,
            days,
            since: runbook_shared::model::timestamp(now - chrono::Duration::days(days)),
            runbooks: Vec::new(),
            truncated: false,
            metrics: None,
            errors: Vec::new(),
            duration_ms: 0,
        };
        match scorecard::read(&self.audit, days, now).await {
            Ok((runbooks, truncated)) => {
                card.runbooks = runbooks;
                card.truncated = truncated;
            }
            Err(err) => card.errors.push(format!("scorecard: {err}")),
        }
        if publish && card.truncated {
            // A part of the table is no day's figure: better none than a wrong one.
            card.errors.push(format!(
                "scorecard metrics not published: the audit table was read only in part ({} pages)",
                runbook_shared::store::SCAN_PAGES
            ));
        }
        if publish && card.errors.is_empty() {
            match metrics::publish(
                &self.clients.cloudwatch,
                &self.config.metrics_namespace,
                scorecard::datums(&card.runbooks),
            )
            .await
            {
                Ok(published) => card.metrics = Some(published),
                Err(err) => card.errors.push(format!("scorecard metrics: {err}")),
            }
        }
        card.duration_ms = invocation.elapsed_ms();
        ProberOutput::Scorecard(Box::new(card))
    }

    // Over 80 lines: the probe, the sweep and the publication share one deadline budget, split here
    // in one place.
    async fn probe(
        &self,
        probes: Vec<Probe>,
        trigger: TriggerInfo,
        invocation: &Invocation,
    ) -> ProberOutput {
        // Every probe stops at its own timeout, and none runs into the time the sweep, the
        // metrics and the report need.
        let results = check::run_all(
            &self.clients,
            &probes,
            self.config.concurrency,
            Duration::from_millis(self.config.default_timeout_ms),
            invocation.deadline.less(AFTER_THE_PROBES),
        )
        .await;
        let mut errors = Vec::new();
        let window = sweep::Window {
            after: chrono::Duration::minutes(self.config.verification_window_minutes),
            give_up: chrono::Duration::hours(self.config.verification_give_up_hours),
        };
        let sessions = self.places.as_ref().map(|places| {
            places.sessions(
                FUNCTION,
                trigger
                    .event_id
                    .as_deref()
                    .unwrap_or(&invocation.request_id),
            )
        });
        let places = match &sessions {
            Some(sessions) => sweep::Places::Fleet(sessions),
            None => sweep::Places::One(sweep::SweepClients {
                cloudwatch: &self.clients.cloudwatch,
                cloudformation: &self.clients.cloudformation,
                sqs: &self.clients.sqs,
                dynamodb: &self.clients.dynamodb,
            }),
        };
        // The sweep stops in time for the metrics and the report.
        let sweep_deadline = invocation.deadline.less(AFTER_THE_SWEEP);
        let settled =
            match sweep::settle_pending(&self.audit, &places, &window, sweep_deadline).await {
                Ok(settled) => Some(settled),
                Err(err) => {
                    errors.push(format!("verification sweep: {err}"));
                    None
                }
            };
        // Too many remediations that did not work: stop the automation until a person looks.
        let paused = match self
            .switch
            .trip_on_failed_verifications(
                FUNCTION,
                trigger.clone(),
                self.config.pause_after_failed_verifications,
                invocation,
            )
            .await
        {
            Ok(paused) => paused,
            Err(err) => {
                errors.push(format!(
                    "kill switch auto-trip (PAUSE_AFTER_FAILED_VERIFICATIONS): {err}"
                ));
                None
            }
        };
        let failed_verifications = settled.as_ref().map(|settled| {
            settled
                .iter()
                .filter(|s| s.status == VerificationStatus::Failed)
                .count()
        });
        let datums = metrics::datums(&results, failed_verifications);
        let metrics = match metrics::publish(
            &self.clients.cloudwatch,
            &self.config.metrics_namespace,
            datums,
        )
        .await
        {
            Ok(published) => Some(published),
            Err(err) => {
                errors.push(format!("metrics: {err}"));
                None
            }
        };
        let unhealthy: Vec<&str> = results
            .iter()
            .filter(|r| !r.healthy)
            .map(|r| r.name.as_str())
            .collect();
        let settled = settled.unwrap_or_default();
        // Nothing checked is not healthy: a PROBES left empty by mistake must not read as a
        // healthy system.
        let mut reason = if results.is_empty() {
            "not healthy: nothing was checked, no probes are configured (set PROBES, or pass {\"probes\": [...]})".to_string()
        } else if unhealthy.is_empty() {
            format!("all {} probes healthy", results.len())
        } else {
            format!(
                "{} of {} probes unhealthy: {}",
                unhealthy.len(),
                results.len(),
                unhealthy.join(", ")
            )
        };
        if !settled.is_empty() {
            let count = |status| settled.iter().filter(|s| s.status == status).count();
            reason.push_str(&format!(
                "; verifications settled: {} verified, {} failed, {} still pending",
                count(VerificationStatus::Verified),
                count(VerificationStatus::Failed),
                count(VerificationStatus::Pending)
            ));
        }
        if let Some(paused) = &paused {
            reason.push_str(&format!("; {}", paused.reason));
        }
        let elapsed = invocation.elapsed_ms();
        tracing::info!(unhealthy = unhealthy.len(), probes = results.len(), at = %Utc::now(), "probes done");
        ProberOutput::Health(Box::new(HealthReport {
            function: FUNCTION.into(),
            runbook: RUNBOOK.into(),
            trigger,
            healthy: !results.is_empty() && unhealthy.is_empty(),
            reason,
            probes: results,
            settled,
            metrics,
            errors,
            paused,
            duration_ms: elapsed,
        }))
    }
}
