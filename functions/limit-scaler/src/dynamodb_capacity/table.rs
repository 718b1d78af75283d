//! The table as `dynamodb-capacity` reads and writes it: DescribeTable, consumed capacity from
//! CloudWatch, UpdateTable, and the wait until the table shows a change.

use aws_sdk_dynamodb::types::{
    BillingMode, GlobalSecondaryIndexUpdate, OnDemandThroughput, ProvisionedThroughput,
    TableDescription, UpdateGlobalSecondaryIndexAction,
};
use chrono::Utc;
use runbook_shared::aws::{AwsError, FaultKind};
use runbook_shared::deadline::{Deadline, poll_until};
use runbook_shared::model::{Ending, Step};

use super::NAMESPACE;
use super::state::{Change, ConsumedPeaks, Observed, Ranges, observed_text};
use super::target::CapacityTarget;
use crate::Scaler;

impl Scaler {
    pub(super) async fn describe(&self, table: &str) -> Result<TableDescription, AwsError> {
        let output = self
            .clients
            .dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|err| {
                AwsError::from_sdk("dynamodb:DescribeTable", &format!("table {table}"), &err)
            })?;
        output.table.ok_or_else(|| AwsError {
            api: "dynamodb:DescribeTable".into(),
            resource: format!("table {table}"),
            code: None,
            message: "the response has no table description".into(),
            kind: FaultKind::Other,
        })
    }

    /// The peak consumed capacity per second over the lookback window.
    pub(super) async fn consumed_peaks(
        &self,
        target: &CapacityTarget,
        lookback_minutes: i64,
    ) -> Result<ConsumedPeaks, AwsError> {
        let mut dimensions = vec![("TableName", target.table.as_str())];
        if let Some(index) = &target.index {
            dimensions.push(("GlobalSecondaryIndexName", index.as_str()));
        }
        // return_data defaults to true.
        let query = |id: &str, metric: &str| {
            runbook_shared::aws::metric_query(id, NAMESPACE, metric, dimensions.clone(), 60, "Sum")
        };
        let end = Utc::now();
        let start = end - chrono::Duration::minutes(lookback_minutes);
        let output = self
            .clients
            .cloudwatch
            .get_metric_data()
            .metric_data_queries(query("read", "ConsumedReadCapacityUnits"))
            .metric_data_queries(query("write", "ConsumedWriteCapacityUnits"))
            .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                start.timestamp(),
            ))
            .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
                end.timestamp(),
            ))
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("cloudwatch:GetMetricData", &target.name(), &err))?;
        let peak = |id: &str| {
            output
                .metric_data_results()
                .iter()
                .find(|result| result.id() == Some(id))
                .and_then(|result| result.values().iter().copied().reduce(f64::max))
                .map(|sum_per_minute| sum_per_minute / 60.0)
        };
        Ok(ConsumedPeaks {
            read_per_second: peak("read"),
            write_per_second: peak("write"),
        })
    }

    pub(super) async fn apply(
        &self,
        target: &CapacityTarget,
        change: &Change,
    ) -> Result<(), AwsError> {
        let throughput = |read: i64, write: i64| {
            ProvisionedThroughput::builder()
                .read_capacity_units(read)
                .write_capacity_units(write)
                .build()
                .map_err(|err| invalid_plan(target, &err.to_string()))
        };
        let on_demand = |read: Option<i64>, write: Option<i64>| {
            OnDemandThroughput::builder()
                .set_max_read_request_units(read)
                .set_max_write_request_units(write)
                .build()
        };
        let mut update = self
            .clients
            .dynamodb
            .update_table()
            .table_name(&target.table);
        update = match (change, &target.index) {
            (Change::SwitchToOnDemand, _) => update.billing_mode(BillingMode::PayPerRequest),
            (Change::Provisioned { read, write }, None) => {
                update.provisioned_throughput(throughput(*read, *write)?)
            }
            (Change::OnDemandMaximum { read, write }, None) => {
                update.on_demand_throughput(on_demand(*read, *write))
            }
            (change, Some(index)) => {
                let gsi = UpdateGlobalSecondaryIndexAction::builder().index_name(index);
                let gsi = match change {
                    Change::Provisioned { read, write } => {
                        gsi.provisioned_throughput(throughput(*read, *write)?)
                    }
                    Change::OnDemandMaximum { read, write } => {
                        gsi.on_demand_throughput(on_demand(*read, *write))
                    }
                    Change::SwitchToOnDemand => gsi,
                };
                let gsi = gsi
                    .build()
                    .map_err(|err| invalid_plan(target, &err.to_string()))?;
                update.global_secondary_index_updates(
                    GlobalSecondaryIndexUpdate::builder().update(gsi).build(),
                )
            }
        };
        update.send().await.map(|_| ()).map_err(|err| {
            AwsError::from_sdk(
                "dynamodb:UpdateTable",
                &format!("table {}", target.table),
                &err,
            )
        })
    }

    /// Describes the table until `accept` says the observed state is final, or the deadline.
    pub(super) async fn watch(
        &self,
        target: &CapacityTarget,
        deadline: Deadline,
        accept: impl Fn(&Observed) -> bool,
    ) -> Result<Option<Observed>, AwsError> {
        let last = std::cell::RefCell::new(None);
        let outcome = poll_until(deadline, self.poll_interval, || {
            let (last, accept) = (&last, &accept);
            async move {
                match self.describe(&target.table).await {
                    Err(err) => Some(Err(err)),
                    Ok(table) => match Observed::from_table(&table, target.index.as_deref()) {
                        Err(message) => Some(Err(invalid_plan(target, &message))),
                        Ok(observed) if accept(&observed) => Some(Ok(observed)),
                        Ok(observed) => {
                            last.replace(Some(observed));
                            None
                        }
                    },
                }
            }
        })
        .await;
        match outcome {
            Some(result) => result.map(Some),
            None => Ok(last.into_inner()),
        }
    }

    /// The table or index as it is now; a table that does not exist ends the run.
    pub(super) async fn observe(&self, target: &CapacityTarget) -> Step<Observed> {
        let table = match self.describe(&target.table).await {
            Ok(table) => table,
            Err(err) if err.is(FaultKind::NotFound) => {
                return Err(Ending::failed(format!(
                    "table {} does not exist (or is not visible to this function) in this region; nothing was changed; check the alarm's TableName dimension or the payload",
                    target.table
                )));
            }
            Err(err) => {
                return Err(Ending::failed(format!(
                    "could not diagnose {}, nothing was changed: {err}",
                    target.name()
                )));
            }
        };
        Observed::from_table(&table, target.index.as_deref())
            .map_err(|message| Ending::failed(format!("{message}; nothing was changed")))
    }

    /// UpdateTable; when another update runs (Auto Scaling's, or a person's), once it is done
    /// and left the table as diagnosed, again. A side registered with Auto Scaling (`registered`)
    /// may move meanwhile: Auto Scaling sets it.
    pub(super) async fn apply_waiting_if_busy(
        &self,
        target: &CapacityTarget,
        observed: &Observed,
        registered: &Ranges,
        change: &Change,
        deadline: Deadline,
    ) -> Result<(), AwsError> {
        // UpdateTable sends both sides: a registered side goes out as what the table shows now
        // (Auto Scaling may have raised it since the diagnosis), never lower.
        let change = if registered.is_empty() {
            change.clone()
        } else {
            let now = self.describe(&target.table).await?;
            let now = Observed::from_table(&now, target.index.as_deref())
                .map_err(|message| invalid_plan(target, &message))?;
            lifted(change, registered, &now)
        };
        match self.apply(target, &change).await {
            Err(err) if err.is(FaultKind::InUse) => {
                let settled = self.watch(target, deadline, Observed::active).await?;
                match settled {
                    Some(now)
                        if now.active()
                            && now.billing_mode == observed.billing_mode
                            && (registered.read.is_some() || now.read == observed.read)
                            && (registered.write.is_some() || now.write == observed.write)
                            && now.max_read_request_units == observed.max_read_request_units
                            && now.max_write_request_units == observed.max_write_request_units =>
                    {
                        self.apply(target, &lifted(&change, registered, &now)).await
                    }
                    Some(now) if now.active() => Err(AwsError {
                        kind: FaultKind::InUse,
                        message: format!(
                            "the table changed while another update ran (diagnosed {}, now {}); run again to plan from the new state",
                            observed_text(observed),
                            observed_text(&now)
                        ),
                        ..err
                    }),
                    _ => Err(AwsError {
                        message: format!(
                            "{} and it was still updating at the deadline",
                            err.message
                        ),
                        ..err
                    }),
                }
            }
            other => other,
        }
    }
}

/// `change` with each side registered with Auto Scaling at least at what the table shows now.
fn lifted(change: &Change, registered: &Ranges, now: &Observed) -> Change {
    match change {
        Change::Provisioned { read, write } => Change::Provisioned {
            read: if registered.read.is_some() {
                (*read).max(now.read)
            } else {
                *read
            },
            write: if registered.write.is_some() {
                (*write).max(now.write)
            } else {
                *write
            },
        },
        other => other.clone(),
    }
}

fn invalid_plan(target: &CapacityTarget, message: &str) -> AwsError {
    AwsError::invalid(
        "dynamodb:UpdateTable",
        &format!("table {}", target.table),
        message,
    )
}
