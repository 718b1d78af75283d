//! The promises of docs/invariants.md tried at random: a seeded generator of event sequences
//! (throttle alarms, OKs on time and stale, a person's raises, pauses and resumes, raises coming
//! due, the schedule, deliveries repeated, the brake's window made unreadable and mended),
//! run through limit-scaler against moto, with the invariants checked after every step. A
//! violation prints its seed and the shortest sequence found that still violates.
//!
//! Bounded here (`INVARIANT_STEPS`, default 300 steps, under a minute); longer
//! with `scripts/soak.sh --steps N --seed S`.

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

/// Managed tables in a world; one more table is not managed.
const TABLES: usize = 3;

/// A small, seeded, reproducible generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }

    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

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

fn generate(rng: &mut Rng, steps: usize) -> Vec<Step> {
    (0..steps)
        .map(|_| match rng.below(13) {
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
        })
        .collect()
}

/// One world: its tables, its function, its audit table and limit-scaler, and what the checker
/// knows of them.
struct World {
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

impl World {
    async fn new() -> Self {
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
    async fn run(&mut self, step: Step) -> Vec<Report> {
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

/// Runs `steps` on a fresh world; the first step that breaks an invariant, and how.
async fn first_violation(steps: &[Step]) -> Option<(usize, Vec<String>)> {
    let mut world = World::new().await;
    for (index, step) in steps.iter().enumerate() {
        // A pause holds from the step after it; a corrupted window from its own step on.
        let known = Known {
            paused: world.paused,
            corrupted: world.corrupted,
            function_firing: world.firing[TABLES],
        };
        let before = world.seen().await;
        let reports = world.run(*step).await;
        let after = world.seen().await;
        let known = Known {
            corrupted: known.corrupted || world.corrupted,
            function_firing: known.function_firing || world.firing[TABLES],
            ..known
        };
        let broken = violations(&known, *step, &before, &reports, &after);
        if !broken.is_empty() {
            return Some((index, broken));
        }
    }
    None
}

/// The shortest prefix-and-removal of `steps` that still violates (greedy: drop one step at a
/// time while the sequence still breaks an invariant).
async fn shrink(mut steps: Vec<Step>) -> Vec<Step> {
    let mut i = 0;
    while i < steps.len() {
        let mut fewer = steps.clone();
        fewer.remove(i);
        if Box::pin(first_violation(&fewer)).await.is_some() {
            steps = fewer;
        } else {
            i += 1;
        }
    }
    steps
}

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

#[tokio::test]
async fn the_invariants_hold_over_random_sequences() {
    let total = setting("INVARIANT_STEPS", 300) as usize;
    let seed = setting(
        "INVARIANT_SEED",
        u64::try_from(chrono::Utc::now().timestamp_micros()).unwrap_or(1),
    );
    let per_sequence = 30;
    let mut rng = Rng::new(seed);
    let mut done = 0;
    while done < total {
        let steps = generate(&mut rng, per_sequence.min(total - done));
        if let Some((at, broken)) = Box::pin(first_violation(&steps)).await {
            let failing = steps[..=at].to_vec();
            let shortest = shrink(failing).await;
            panic!(
                "seed {seed}: {broken:?}\nshortest sequence that still violates ({} steps): {shortest:?}",
                shortest.len()
            );
        }
        done += steps.len();
    }
    println!(
        "invariants: {done} steps from seed {seed}, every invariant checked after each, 0 violations"
    );
}
