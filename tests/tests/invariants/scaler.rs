//! limit-scaler's world: managed tables and one that is not, a function's reservation, and the
//! events that reach limit-scaler (throttle alarms, OKs on time and stale, a person's raises,
//! pauses and resumes, raises coming due, the schedule, deliveries repeated, the brake's window
//! made unreadable and mended), run through the library against moto.

use aws_sdk_cloudwatch::types::StateValue;
use aws_sdk_dynamodb::types::AttributeValue;
use limit_scaler::Scaler;
use runbook_shared::model::{Outcome, Output, Report, VerificationStatus};
use runbook_shared::store::AuditStore;
use runbook_tests::fixtures::{
    TableSpec, alarm_in_state, capacity, create_audit_table, create_function, expire_raise,
    invocation, lambda_alarm_event, managed_table, metric_alarm_in_state, reserve, reserved,
    scaler, scaler_clients, scheduled_event, throttle_alarm_event,
};
use runbook_tests::moto::moto;
use runbook_tests::unique;
use serde_json::{Value, json};

use super::{Rng, World, try_at_random};

/// Managed tables in a world; one more table is not managed.
const TABLES: usize = 3;

#[derive(Clone, Copy, Debug)]
enum Step {
    /// Table i's read-throttle alarm fires (ALARM in CloudWatch, and its event).
    Throttled(usize),
    /// Table i's alarm recovers: OK in CloudWatch, and its OK event, on time.
    Recovered(usize),
    /// An OK event of table i stamped ten minutes ago (late, replayed or forged), CloudWatch
    /// unchanged.
    StaleOk(usize),
    /// A person asks for read `n` on table i (the last one is the unmanaged table).
    Manual(usize, i64),
    Pause,
    Resume,
    /// The function's Throttles alarm fires.
    FunctionThrottled,
    /// The function's alarm is OK again (no event: the schedule finds it so).
    FunctionRecovered,
    /// The reservation's raise comes due.
    RaiseDue,
    Schedule,
    /// The previous event delivered again.
    Again,
    /// The change brake's window item made unreadable.
    CorruptBrake,
    /// The window item deleted (a person mends it).
    MendBrake,
}

fn step(rng: &mut Rng) -> Step {
    match rng.below(13) {
        0 | 1 => Step::Throttled(rng.below(TABLES)),
        2 => Step::Recovered(rng.below(TABLES)),
        3 => Step::StaleOk(rng.below(TABLES)),
        4 => Step::Manual(rng.below(TABLES + 1), [1, 8, 20][rng.below(3)]),
        5 => Step::Pause,
        6 => Step::Resume,
        7 => Step::FunctionThrottled,
        8 => Step::FunctionRecovered,
        9 => Step::RaiseDue,
        10 => Step::Schedule,
        11 => Step::Again,
        _ => [Step::CorruptBrake, Step::MendBrake][rng.below(2)],
    }
}

/// One world: its tables, its function, its audit table and limit-scaler, and what the checker
/// knows of them.
struct Tables {
    audit: String,
    scaler: Scaler,
    tables: Vec<String>,
    function: String,
    paused: bool,
    corrupted: bool,
    /// Whether each table's alarm, and the function's (last), is in ALARM in CloudWatch.
    firing: Vec<bool>,
    /// The last event delivered, for `Again`.
    last: Option<Value>,
}

/// What the invariants compare: every table's capacity and the function's reservation.
#[derive(Clone, Debug, PartialEq)]
struct Seen {
    tables: Vec<(i64, i64)>,
    reserved: Option<i32>,
}

impl Tables {
    async fn create() -> Self {
        let audit = create_audit_table(&moto().dynamodb()).await;
        let mut tables = Vec::new();
        for _ in 0..TABLES {
            tables.push(managed_table("managed-inv").await);
        }
        tables.push(
            TableSpec::provisioned("other-inv", 5, 5)
                .create(&moto().dynamodb())
                .await,
        );
        let function = unique("managed-inv-fn");
        create_function(moto(), &function).await;
        reserve(&function, 5).await;
        let scaler = scaler(
            &audit,
            &[("COOLDOWN_SECONDS", "0"), ("MAX_ACTIONS_PER_HOUR", "1000")],
            scaler_clients(),
        );
        Self {
            audit,
            scaler,
            tables,
            function,
            paused: false,
            corrupted: false,
            firing: vec![false; TABLES + 1],
            last: None,
        }
    }

    async fn seen(&self) -> Seen {
        let mut tables = Vec::new();
        for table in &self.tables {
            tables.push(capacity(&moto().dynamodb(), table, None).await);
        }
        Seen {
            tables,
            reserved: reserved(&self.function).await,
        }
    }

    fn alarm(&self, i: usize) -> String {
        format!("{}-throttled", self.tables[i])
    }

    fn function_alarm(&self) -> String {
        format!("{}-throttles", self.function)
    }

    async fn deliver(&mut self, event: Value) -> Vec<Report> {
        let reports = match self.scaler.handle(event.clone(), &invocation()).await {
            Output::One(report) => vec![*report],
            Output::Sweep { reports } => reports,
        };
        self.last = Some(event);
        reports
    }

    /// Runs one step; returns its reports.
    async fn act(&mut self, step: Step) -> Vec<Report> {
        match step {
            Step::Throttled(i) => {
                alarm_in_state(&self.alarm(i), StateValue::Alarm).await;
                self.firing[i] = true;
                let event = throttle_alarm_event(
                    &self.alarm(i),
                    "ALARM",
                    "ReadThrottleEvents",
                    json!({"TableName": self.tables[i]}),
                );
                self.deliver(event).await
            }
            Step::Recovered(i) => {
                alarm_in_state(&self.alarm(i), StateValue::Ok).await;
                self.firing[i] = false;
                let event = throttle_alarm_event(
                    &self.alarm(i),
                    "OK",
                    "ReadThrottleEvents",
                    json!({"TableName": self.tables[i]}),
                );
                self.deliver(event).await
            }
            Step::StaleOk(i) => {
                let mut event = throttle_alarm_event(
                    &self.alarm(i),
                    "OK",
                    "ReadThrottleEvents",
                    json!({"TableName": self.tables[i]}),
                );
                event["detail"]["state"]["timestamp"] = json!(
                    (chrono::Utc::now() - chrono::Duration::minutes(10))
                        .format("%Y-%m-%dT%H:%M:%S%.3f%z")
                        .to_string()
                );
                self.deliver(event).await
            }
            Step::Manual(i, read) => {
                let event = json!({"table": self.tables[i], "read": read});
                self.deliver(event).await
            }
            Step::Pause => {
                let event = json!({"control": "pause", "reason": "invariants", "minutes": 60, "by": "generator"});
                let reports = self.deliver(event).await;
                self.paused = true;
                reports
            }
            Step::Resume => {
                let event = json!({"control": "resume", "reason": "invariants", "by": "generator"});
                let reports = self.deliver(event).await;
                self.paused = false;
                reports
            }
            Step::FunctionThrottled => {
                self.function_alarm_in(StateValue::Alarm).await;
                self.firing[TABLES] = true;
                let event = lambda_alarm_event(
                    &self.function_alarm(),
                    "ALARM",
                    "Throttles",
                    &self.function,
                    None,
                );
                self.deliver(event).await
            }
            Step::FunctionRecovered => {
                self.function_alarm_in(StateValue::Ok).await;
                self.firing[TABLES] = false;
                Vec::new()
            }
            Step::RaiseDue => {
                let raised = AuditStore::new(moto().dynamodb(), self.audit.clone(), 1)
                    .raises("lambda-concurrency")
                    .await
                    .expect("raises");
                if !raised.is_empty() {
                    expire_raise(&self.audit, "lambda-concurrency", &self.function).await;
                }
                Vec::new()
            }
            Step::Schedule => self.deliver(scheduled_event()).await,
            Step::Again => match self.last.clone() {
                Some(event) => self.deliver(event).await,
                None => Vec::new(),
            },
            Step::CorruptBrake => {
                if let Some(pk) = self.brake_item().await {
                    set_window(&self.audit, &pk, Some("{not json")).await;
                    self.corrupted = true;
                }
                Vec::new()
            }
            Step::MendBrake => {
                if let Some(pk) = self.brake_item().await {
                    set_window(&self.audit, &pk, None).await;
                }
                self.corrupted = false;
                Vec::new()
            }
        }
    }

    async fn function_alarm_in(&self, state: StateValue) {
        metric_alarm_in_state(
            moto(),
            &self.function_alarm(),
            state,
            ("AWS/Lambda", "Throttles"),
            &[("FunctionName", self.function.as_str())],
        )
        .await;
    }

    async fn brake_item(&self) -> Option<String> {
        let items = moto()
            .dynamodb()
            .scan()
            .table_name(&self.audit)
            .send()
            .await
            .expect("scan the audit table");
        items
            .items()
            .iter()
            .filter_map(|item| item.get("pk")?.as_s().ok())
            .find(|pk| pk.starts_with("brake#changes"))
            .cloned()
    }
}

/// Writes the window item's `resources` as `text`, or deletes the item.
async fn set_window(audit: &str, pk: &str, text: Option<&str>) {
    let dynamodb = moto().dynamodb();
    let key =
        |item: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder| {
            item.table_name(audit)
                .key("pk", AttributeValue::S(pk.into()))
                .key("sk", AttributeValue::S("window".into()))
        };
    match text {
        Some(text) => {
            key(dynamodb.update_item())
                .update_expression("SET resources = :garbage")
                .expression_attribute_values(":garbage", AttributeValue::S(text.into()))
                .send()
                .await
                .expect("corrupt the window");
        }
        None => {
            dynamodb
                .delete_item()
                .table_name(audit)
                .key("pk", AttributeValue::S(pk.into()))
                .key("sk", AttributeValue::S("window".into()))
                .send()
                .await
                .expect("mend the window");
        }
    }
}

/// What the checker knew when a step began.
struct Known {
    paused: bool,
    corrupted: bool,
    function_firing: bool,
}

/// The invariants over one step: what held before, the step, its reports, what holds after.
fn violations(
    known: &Known,
    step: Step,
    before: &Seen,
    reports: &[Report],
    after: &Seen,
) -> Vec<String> {
    let mut broken = Vec::new();
    let unmanaged = TABLES;
    // 1. Nothing is changed while paused.
    if known.paused && !matches!(step, Step::Resume) && after != before {
        broken.push(format!("paused, yet {before:?} became {after:?}"));
    }
    // 2. Nothing unmanaged is changed.
    if after.tables[unmanaged] != before.tables[unmanaged] {
        broken.push(format!(
            "the unmanaged table went from {:?} to {:?}",
            before.tables[unmanaged], after.tables[unmanaged]
        ));
    }
    // 3. A raise never lowers: only the schedule lowers anything.
    if !matches!(step, Step::Schedule) {
        for (i, (was, now)) in before.tables.iter().zip(&after.tables).enumerate() {
            if now.0 < was.0 || now.1 < was.1 {
                broken.push(format!(
                    "table {i} lowered from {was:?} to {now:?} by {step:?}"
                ));
            }
        }
        if after.reserved < before.reserved {
            broken.push(format!(
                "the reservation lowered from {:?} to {:?} by {step:?}",
                before.reserved, after.reserved
            ));
        }
    }
    // 4. Nothing is lowered while its alarm fires.
    if known.function_firing && after.reserved < before.reserved {
        broken.push(format!(
            "the reservation put back from {:?} to {:?} while its alarm was in ALARM",
            before.reserved, after.reserved
        ));
    }
    // 5. No verified without an observation after the change: an OK stamped before the
    // change verifies nothing.
    let verified = reports
        .iter()
        .any(|report| report.verification.status == VerificationStatus::Verified);
    if let Step::StaleOk(i) = step
        && verified
    {
        broken.push(format!(
            "a stale OK of table {i} verified a change: {reports:?}"
        ));
    }
    // 10. An unreadable guard fails closed: with the brake's window unreadable, no automatic
    // run changes anything.
    if known.corrupted
        && matches!(step, Step::Throttled(_) | Step::FunctionThrottled)
        && after != before
    {
        broken.push(format!(
            "the brake's window was unreadable, yet {step:?} changed {before:?} to {after:?}"
        ));
    }
    // No run fails but for the faults this generator makes (an event delivered again answers
    // with its first report, which may be such a failure).
    for report in reports {
        if report.outcome == Outcome::Failed && !known.corrupted && !matches!(step, Step::Again) {
            broken.push(format!("{step:?} failed: {}", report.reason));
        }
    }
    broken
}

impl World for Tables {
    type Step = Step;
    type Setting = ();

    fn setting(_: &mut Rng) {}

    fn step(rng: &mut Rng) -> Step {
        step(rng)
    }

    async fn new(_: ()) -> Self {
        Self::create().await
    }

    async fn run(&mut self, step: Step) -> Vec<String> {
        // A pause holds from the step after it; a corrupted window from its own step on.
        let known = Known {
            paused: self.paused,
            corrupted: self.corrupted,
            function_firing: self.firing[TABLES],
        };
        let before = self.seen().await;
        let reports = self.act(step).await;
        let after = self.seen().await;
        let known = Known {
            corrupted: known.corrupted || self.corrupted,
            function_firing: known.function_firing || self.firing[TABLES],
            ..known
        };
        violations(&known, step, &before, &reports, &after)
    }
}

#[tokio::test]
async fn the_invariants_hold_over_random_sequences_of_limit_scaler() {
    try_at_random::<Tables>("limit-scaler").await;
}
