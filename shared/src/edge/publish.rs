//! Every report worth telling someone about is also an EventBridge event (`source`
//! `runbook.automation`, `detail-type` `Runbook Report`, `detail` the report), so teams route
//! it to chat, paging or tickets with ordinary rules. A schedule that found nothing to do is
//! not worth an event; everything else is.

use aws_config::SdkConfig;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use serde_json::{Value, json};

use crate::aws::AwsError;
use crate::config::{ConfigError, Env};
use crate::model::{HANDOFF, Handoff, TriggerKind};

pub const SOURCE: &str = "runbook.automation";
pub const DETAIL_TYPE: &str = "Runbook Report";
/// The detail-types of a pause and a resume of the kill switch, so that teams can page on them.
pub const PAUSED: &str = "Runbook Automation Paused";
pub const RESUMED: &str = "Runbook Automation Resumed";
/// The detail-type of a call for a person (a brake stopped the fleet, a resource flaps).
pub const ESCALATION: &str = "Runbook Escalation";
/// The detail-type of a plan that awaits a person's approval.
pub const APPROVAL_REQUESTED: &str = "Runbook Approval Requested";
/// PutEvents takes at most 10 entries per call...
const ENTRIES_PER_CALL: usize = 10;
/// ...and 256 KiB per request (entries are packed under this, leaving room for the envelope).
const BYTES_PER_CALL: usize = 240 * 1024;
/// An entry may be 256 KiB; a bigger report (a large DLQ sample) is sent as its summary.
const MAX_DETAIL_BYTES: usize = 200 * 1024;

/// The bus reports and handoffs go to: `REPORT_EVENT_BUS` (a bus name or ARN; `default` unless
/// set; `off`: none).
pub fn bus_from_env(env: &Env) -> Result<Option<String>, ConfigError> {
    let bus = env
        .get("REPORT_EVENT_BUS")
        .unwrap_or_else(|| "default".into());
    if bus == "off" {
        return Ok(None);
    }
    let valid_name = bus.len() <= 256
        && bus
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:".contains(c));
    if !valid_name {
        return Err(ConfigError::Invalid {
            var: "REPORT_EVENT_BUS",
            value: bus,
            expected: "an event bus name or ARN, `default`, or `off`".into(),
        });
    }
    Ok(Some(bus))
}

/// Where reports go: `REPORT_EVENT_BUS` (a bus name or ARN; `default` unless set; `off` sends none).
pub struct ReportEvents {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl ReportEvents {
    pub fn from_env(env: &Env, sdk: &SdkConfig) -> Result<Option<Self>, ConfigError> {
        Ok(bus_from_env(env)?.map(|bus| Self::new(aws_sdk_eventbridge::Client::new(sdk), bus)))
    }

    pub fn new(client: aws_sdk_eventbridge::Client, bus: String) -> Self {
        Self { client, bus }
    }

    /// Publishes the reports in `output` that are worth an event; returns how many were sent.
    /// The error of a publication given up on so that the invocation answers before its deadline.
    pub fn out_of_time(&self) -> AwsError {
        AwsError {
            api: "events:PutEvents".into(),
            resource: self.bus.clone(),
            code: None,
            message: "not published before the Lambda deadline (the report is still in the logs and the audit table)".into(),
            kind: crate::aws::FaultKind::Other,
        }
    }

    pub async fn publish(&self, output: &Value) -> Result<usize, AwsError> {
        let details: Vec<(&str, String)> = worth_publishing(output)
            .into_iter()
            .flat_map(|report| {
                let escalation = escalation(report).map(|detail| (ESCALATION, detail.to_string()));
                let approval = approval_requested(report)
                    .map(|detail| (APPROVAL_REQUESTED, detail.to_string()));
                std::iter::once((detail_type(report), detail_text(report)))
                    .chain(escalation)
                    .chain(approval)
            })
            .collect();
        for chunk in requests(&details) {
            let entries = chunk
                .iter()
                .map(|(detail_type, detail)| {
                    PutEventsRequestEntry::builder()
                        .event_bus_name(&self.bus)
                        .source(SOURCE)
                        .detail_type(*detail_type)
                        .detail(detail.as_str())
                        .build()
                })
                .collect();
            put_events(&self.client, &self.bus, entries, "report events").await?;
        }
        Ok(details.len())
    }
}

/// The details packed into PutEvents requests: at most 10 each, and under the request size limit
/// (a detail is at most MAX_DETAIL_BYTES, so one always fits).
fn requests<T>(details: &[(T, String)]) -> Vec<Vec<&(T, String)>> {
    let mut requests: Vec<Vec<&(T, String)>> = Vec::new();
    let mut bytes = 0;
    for detail in details {
        let size = detail.1.len();
        let full = requests.last().is_none_or(|request| {
            request.len() == ENTRIES_PER_CALL || bytes + size > BYTES_PER_CALL
        });
        if full {
            requests.push(Vec::new());
            bytes = 0;
        }
        bytes += size;
        if let Some(request) = requests.last_mut() {
            request.push(detail);
        }
    }
    requests
}

/// The reports in a function's output that deserve an event: each report of a sweep, or the one
/// report, unless it is a schedule's `no_action` (or a scheduled health check that found all
/// healthy and settled nothing).
pub fn worth_publishing(output: &Value) -> Vec<&Value> {
    let mut worth: Vec<&Value> = match output.get("reports").and_then(Value::as_array) {
        Some(reports) => reports.iter().filter(|report| worth_one(report)).collect(),
        None if worth_one(output) => vec![output],
        None => Vec::new(),
    };
    // The pause a health check's sweep engaged is an event of its own.
    worth.extend(output.get("paused").filter(|paused| paused.is_object()));
    worth
}

fn worth_one(report: &Value) -> bool {
    let scheduled = report["trigger"]["kind"] == json!(TriggerKind::Schedule);
    if !scheduled {
        return true;
    }
    if report.get("healthy").is_some() {
        // Verifications still pending are not news; settled ones are.
        let settled_any = report["settled"]
            .as_array()
            .is_some_and(|settled| settled.iter().any(|s| s["status"] != "pending"));
        // Nothing checked is not healthy, but not news every five minutes either: the
        // UnhealthyProbes alarm (no figure is published) says it once.
        let nothing_checked = report["probes"].as_array().is_some_and(Vec::is_empty);
        let quiet = (report["healthy"] == true || nothing_checked)
            && !settled_any
            && report["errors"].as_array().is_none_or(Vec::is_empty);
        return !quiet;
    }
    report["outcome"] != "no_action"
}

/// A pause or a resume of the kill switch has its own detail-type; every other report is a
/// `Runbook Report`.
pub fn detail_type(report: &Value) -> &'static str {
    match crate::guards::switched_to(report) {
        Some(true) => PAUSED,
        Some(false) => RESUMED,
        None => DETAIL_TYPE,
    }
}

/// The `Runbook Approval Requested` event's detail of a report whose plan newly awaits approval:
/// the plan (its id, state hash, expiry and exact actions), the evidence it was made from, and
/// the commands that approve or deny it.
pub fn approval_requested(report: &Value) -> Option<Value> {
    let requested = |approval: &&Value| {
        approval["status"] == "requested" && approval["already_requested"] != true
    };
    // A run that carries out an approval of its own keeps it; a plan of the run it handed
    // over (api-errors' rollback) is then in its details.
    let approval = report.get("approval").filter(requested).or_else(|| {
        report
            .pointer("/details/handoff/approval")
            .filter(requested)
    })?;
    let mut detail = json!({
        "plan_id": approval["plan_id"],
        "state_hash": approval["state_hash"],
        "expires_at": approval["expires_at"],
        "commands": approval["commands"],
        "actions": report["actions"],
        "evidence": report.get("diagnosis").cloned().unwrap_or(Value::Null),
    });
    for field in [
        "function", "runbook", "trigger", "target", "resource", "reason",
    ] {
        if let Some(value) = report.get(field) {
            detail[field] = value.clone();
        }
    }
    // The plan and the commands must arrive; evidence too large for an event is in the logs.
    if detail.to_string().len() > MAX_DETAIL_BYTES {
        detail["evidence"] = json!({"truncated": true, "see": "the report in the function's logs"});
    }
    Some(detail)
}

/// The `Runbook Escalation` event's detail of a report that escalates: the escalation, and
/// which run, on what, says so.
pub fn escalation(report: &Value) -> Option<Value> {
    let escalation = report.get("escalation").filter(|e| e.is_object())?;
    let mut detail = json!({"escalation": escalation});
    for field in [
        "function", "runbook", "trigger", "target", "resource", "outcome", "reason", "audit_id",
    ] {
        if let Some(value) = report.get(field) {
            detail[field] = value.clone();
        }
    }
    Some(detail)
}

fn detail_text(report: &Value) -> String {
    let text = report.to_string();
    if text.len() <= MAX_DETAIL_BYTES {
        return text;
    }
    let mut summary = json!({"truncated": true});
    for field in [
        "function",
        "runbook",
        "trigger",
        "target",
        "dry_run",
        "outcome",
        "reason",
        "healthy",
        "verification",
        "audit_id",
        "duration_ms",
    ] {
        if let Some(value) = report.get(field) {
            summary[field] = value.clone();
        }
    }
    summary.to_string()
}

/// Puts `entries` on `bus`; an entry EventBridge refuses is an error naming why (`what`: what
/// the entries are, for the message).
pub(crate) async fn put_events(
    client: &aws_sdk_eventbridge::Client,
    bus: &str,
    entries: Vec<PutEventsRequestEntry>,
    what: &str,
) -> Result<(), AwsError> {
    let sent = entries.len();
    let answer = client
        .put_events()
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|err| AwsError::from_sdk("events:PutEvents", bus, &err))?;
    if answer.failed_entry_count() == 0 {
        return Ok(());
    }
    let why: Vec<String> = answer
        .entries()
        .iter()
        .filter_map(|entry| {
            entry
                .error_code()
                .map(|code| format!("{code}: {}", entry.error_message().unwrap_or_default()))
        })
        .collect();
    Err(AwsError::invalid(
        "events:PutEvents",
        bus,
        &format!(
            "{} of {sent} {what} were refused ({})",
            answer.failed_entry_count(),
            why.join("; ")
        ),
    ))
}

/// Sends `handoff` to `bus`.
pub async fn send_handoff(
    events: &aws_sdk_eventbridge::Client,
    bus: &str,
    handoff: &Handoff,
) -> Result<(), AwsError> {
    let detail = serde_json::to_string(handoff)
        .map_err(|err| AwsError::invalid("events:PutEvents", bus, &err.to_string()))?;
    let entry = PutEventsRequestEntry::builder()
        .event_bus_name(bus)
        .source(SOURCE)
        .detail_type(HANDOFF)
        .detail(detail)
        .build();
    put_events(events, bus, vec![entry], "handoff events").await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_stay_under_the_count_and_the_size_limits() {
        let big = "x".repeat(90 * 1024);
        let details: Vec<((), String)> = (0..5).map(|_| ((), big.clone())).collect();
        let packed = requests(&details);
        assert_eq!(
            packed.iter().map(Vec::len).collect::<Vec<_>>(),
            vec![2, 2, 1]
        );
        let small: Vec<((), String)> = (0..23).map(|i| ((), i.to_string())).collect();
        assert_eq!(
            requests(&small).iter().map(Vec::len).collect::<Vec<_>>(),
            vec![10, 10, 3]
        );
    }

    #[test]
    fn schedules_that_did_nothing_are_not_published() {
        let quiet = json!({"outcome": "no_action", "trigger": {"kind": "schedule"}});
        let manual = json!({"outcome": "no_action", "trigger": {"kind": "manual"}});
        let acted = json!({"outcome": "remediated", "trigger": {"kind": "schedule"}});
        assert!(worth_publishing(&quiet).is_empty());
        assert_eq!(worth_publishing(&manual).len(), 1);
        let sweep = json!({"reports": [quiet, acted.clone(), manual]});
        assert_eq!(worth_publishing(&sweep), vec![&acted, &sweep["reports"][2]]);
        assert!(worth_publishing(&json!({"reports": []})).is_empty());
    }

    #[test]
    fn scheduled_health_checks_are_published_when_something_is_wrong_or_settled() {
        let healthy =
            json!({"healthy": true, "trigger": {"kind": "schedule"}, "settled": [], "errors": []});
        assert!(worth_publishing(&healthy).is_empty());
        let mut unhealthy = healthy.clone();
        unhealthy["healthy"] = json!(false);
        assert_eq!(worth_publishing(&unhealthy).len(), 1);
        let mut settled = healthy.clone();
        settled["settled"] = json!([{"status": "failed"}]);
        assert_eq!(worth_publishing(&settled).len(), 1);
    }

    #[test]
    fn an_oversized_report_is_sent_as_its_summary() {
        let big = json!({"function": "dlq-redriver", "outcome": "no_action", "details": "x".repeat(300 * 1024)});
        let sent: Value = serde_json::from_str(&detail_text(&big)).expect("JSON");
        assert_eq!(sent["truncated"], true);
        assert_eq!(sent["function"], "dlq-redriver");
        assert!(sent.get("details").is_none());
    }

    #[test]
    fn the_bus_setting_is_validated() {
        let sdk = SdkConfig::builder().build();
        let env = Env::from_pairs(&[("REPORT_EVENT_BUS", "my bus!")]);
        let err = ReportEvents::from_env(&env, &sdk).err().expect("invalid");
        assert!(err.to_string().contains("REPORT_EVENT_BUS"), "{err}");
        let off = Env::from_pairs(&[("REPORT_EVENT_BUS", "off")]);
        assert!(ReportEvents::from_env(&off, &sdk).expect("valid").is_none());
    }

    #[test]
    fn pauses_and_resumes_have_their_own_detail_types() {
        let switch = |outcome: &str, paused: bool| {
            json!({"runbook": "automation-control", "outcome": outcome,
                   "actions": [{"after": {"paused": paused}}]})
        };
        assert_eq!(detail_type(&switch("remediated", true)), PAUSED);
        assert_eq!(detail_type(&switch("remediated", false)), RESUMED);
        // A switch that was not written, or a status, is an ordinary report.
        assert_eq!(detail_type(&switch("failed", true)), DETAIL_TYPE);
        assert_eq!(
            detail_type(
                &json!({"runbook": "automation-control", "outcome": "no_action", "actions": []})
            ),
            DETAIL_TYPE
        );
        assert_eq!(
            detail_type(&json!({"runbook": "dynamodb-capacity", "outcome": "remediated"})),
            DETAIL_TYPE
        );
    }

    #[test]
    fn a_new_plan_awaiting_approval_is_also_an_approval_event() {
        let report = json!({"function": "limit-scaler", "runbook": "dynamodb-capacity",
            "outcome": "awaiting_approval", "target": "orders",
            "diagnosis": {"evidence": {"metrics": "x".repeat(MAX_DETAIL_BYTES)}},
            "actions": [{"api": "dynamodb:UpdateTable"}],
            "approval": {"plan_id": "p-1", "status": "requested", "state_hash": "ab",
                "expires_at": "t", "commands": {"approve": "aws lambda invoke …", "deny": "…"}}});
        let detail = approval_requested(&report).expect("an approval event");
        assert_eq!(detail["plan_id"], "p-1");
        assert_eq!(detail["commands"]["approve"], "aws lambda invoke …");
        assert_eq!(detail["actions"][0]["api"], "dynamodb:UpdateTable");
        assert_eq!(detail["evidence"]["truncated"], true);
        assert!(detail.to_string().len() <= MAX_DETAIL_BYTES);
        // Asked before, or decided: no new request.
        let mut again = report.clone();
        again["approval"]["already_requested"] = json!(true);
        assert!(approval_requested(&again).is_none());
        again["approval"] = json!({"plan_id": "p-1", "status": "approved"});
        assert!(approval_requested(&again).is_none());
    }

    #[test]
    fn an_escalating_report_is_also_an_escalation_event() {
        let report = json!({"function": "limit-scaler", "runbook": "dynamodb-capacity", "target": "orders",
                            "outcome": "skipped", "reason": "brake: …",
                            "escalation": {"kind": "brake", "reason": "brake: …", "evidence": ["a", "b"]}});
        let detail = escalation(&report).expect("escalation");
        assert_eq!(detail["escalation"]["kind"], "brake");
        assert_eq!(detail["target"], "orders");
        assert!(escalation(&json!({"outcome": "skipped"})).is_none());
    }
}
