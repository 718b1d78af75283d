//! "Never make it worse": each defect found in limit-scaler, alarm-responder and the shared
//! safety core, as a test of the promise it broke, against moto (and replay clients where AWS's
//! answers cannot be staged in moto).

mod dry_runs;
mod responder;
mod scaler;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use alarm_responder::Responder;
use aws_sdk_dynamodb::operation::describe_table::DescribeTableOutput;
use aws_sdk_dynamodb::operation::update_table::UpdateTableOutput;
use aws_sdk_lambda::operation::update_function_configuration::{
    UpdateFunctionConfigurationError, UpdateFunctionConfigurationOutput,
};
use aws_sdk_lambda::types::LastUpdateStatus;
use aws_smithy_mocks::{RuleMode, mock, mock_client};
use limit_scaler::Scaler;
use runbook_shared::model::Invocation;
use runbook_shared::model::{Outcome, Output, Report};
use runbook_shared::store::AuditStore;
use runbook_tests::fixtures::{
    TableSpec, capacity, create_audit_table, create_deployed_function, create_function,
    expire_raise, function_key, function_settings, invocation, invocation_within,
    lambda_alarm_event, put_durations, reserve, reserved, responder, responder_clients, scaler,
    scaler_clients, table_key, throttle_alarm_event,
};
use runbook_tests::moto::{ACCOUNT, moto};
use runbook_tests::replay::{function_configuration, on_demand_table};
use runbook_tests::unique;
use serde_json::{Value, json};

struct Setup {
    audit: String,
}

impl Setup {
    async fn new() -> Self {
        Self {
            audit: create_audit_table(&moto().dynamodb()).await,
        }
    }

    fn scaler_with(
        &self,
        extra: &[(&str, &str)],
        dynamodb: aws_sdk_dynamodb::Client,
        lambda: aws_sdk_lambda::Client,
    ) -> Scaler {
        let clients = limit_scaler::Clients {
            dynamodb,
            lambda,
            ..scaler_clients()
        };
        scaler(&self.audit, extra, clients)
    }

    fn scaler(&self, extra: &[(&str, &str)]) -> Scaler {
        scaler(&self.audit, extra, scaler_clients())
    }

    fn responder_with(&self, extra: &[(&str, &str)], lambda: aws_sdk_lambda::Client) -> Responder {
        let clients = alarm_responder::Clients {
            lambda,
            ..responder_clients()
        };
        responder(&self.audit, extra, clients)
    }

    fn responder(&self, extra: &[(&str, &str)]) -> Responder {
        responder(&self.audit, extra, responder_clients())
    }

    fn audit_store(&self) -> AuditStore {
        AuditStore::new(moto().dynamodb(), self.audit.clone(), 1)
    }

    /// Moves the raise of the resource named `name` into the past, as if its time were up.
    async fn expire(&self, runbook: &str, name: &str) {
        expire_raise(&self.audit, runbook, name).await;
    }

    async fn raise_in_force(&self, runbook: &str, key: &str) -> bool {
        self.audit_store()
            .raises(runbook)
            .await
            .unwrap()
            .iter()
            .any(|r| r.resource == key)
    }
}

async fn run_scaler(scaler: &Scaler, event: Value) -> Report {
    match scaler.handle(event, &invocation()).await {
        Output::One(report) => *report,
        Output::Sweep { reports } => panic!("expected one report, got a sweep: {reports:?}"),
    }
}

async fn sweep(scaler: &Scaler, invocation: &Invocation) -> Vec<Report> {
    match scaler
        .handle(runbook_tests::fixtures::scheduled_event(), invocation)
        .await
    {
        Output::Sweep { reports } => reports,
        Output::One(report) => panic!("expected a sweep, got {report:?}"),
    }
}

fn report_for<'a>(reports: &'a [Report], target: &str) -> &'a Report {
    reports
        .iter()
        .find(|r| r.target.as_deref() == Some(target))
        .unwrap_or_else(|| panic!("no report for {target} in {reports:?}"))
}

fn read_alarm(table: &str) -> Value {
    throttle_alarm_event(
        &format!("{table}-read"),
        "ALARM",
        "ReadThrottleEvents",
        json!({"TableName": table}),
    )
}

/// What UpdateTable was asked for on an on-demand table whose maxima are (`max_read`,
/// `max_write`), and the report, for `event`.
async fn on_demand_update(
    setup: &Setup,
    max: (i64, i64),
    event: impl Fn(&str) -> Value,
) -> (Report, Vec<(Option<i64>, Option<i64>)>) {
    let name = unique("managed-ondemand");
    let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
    let updated = Arc::new(std::sync::Mutex::new(None::<(Option<i64>, Option<i64>)>));
    let describe = mock!(aws_sdk_dynamodb::Client::describe_table).then_output({
        let (name, updated) = (name.clone(), updated.clone());
        move || {
            let (read, write) = updated
                .lock()
                .unwrap()
                .map_or(max, |(r, w)| (r.unwrap_or(max.0), w.unwrap_or(max.1)));
            DescribeTableOutput::builder()
                .table(on_demand_table(&name, Some(read), Some(write)))
                .build()
        }
    });
    let update = mock!(aws_sdk_dynamodb::Client::update_table)
        .match_requests({
            let (sent, updated) = (sent.clone(), updated.clone());
            move |request| {
                let asked = request.on_demand_throughput().map_or((None, None), |o| {
                    (o.max_read_request_units(), o.max_write_request_units())
                });
                sent.lock().unwrap().push(asked);
                *updated.lock().unwrap() = Some(asked);
                true
            }
        })
        .then_output(|| UpdateTableOutput::builder().build());
    let dynamodb = mock_client!(aws_sdk_dynamodb, RuleMode::MatchAny, [&describe, &update]);
    let report = run_scaler(
        &setup.scaler_with(&[], dynamodb, moto().lambda()),
        event(&name),
    )
    .await;
    let sent = sent.lock().unwrap().clone();
    (report, sent)
}
