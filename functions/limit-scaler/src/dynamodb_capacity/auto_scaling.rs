//! Application Auto Scaling on a table or index. A side (read or write) registered as a
//! scalable target is raised through the target's MinCapacity (and its MaxCapacity when the new
//! minimum exceeds it), never with UpdateTable alone, which Auto Scaling would undo within
//! minutes. RegisterScalableTarget moves the capacity into the new range by itself; scale-down
//! puts the original range back and leaves the capacity to Auto Scaling's own policy.

use aws_sdk_applicationautoscaling::types::{ScalableDimension, ServiceNamespace};
use runbook_shared::aws::AwsError;
use runbook_shared::deadline::Deadline;
use runbook_shared::model::Check;

use super::state::{Capacity, Change, Observed, Range, Ranges};
use super::target::CapacityTarget;
use crate::Scaler;

pub const REGISTER: &str = "application-autoscaling:RegisterScalableTarget";
const DESCRIBE: &str = "application-autoscaling:DescribeScalableTargets";

/// The scalable target's resource id: `table/orders`, or `table/orders/index/by-customer`.
pub fn resource_id(target: &CapacityTarget) -> String {
    match &target.index {
        Some(index) => format!("table/{}/index/{index}", target.table),
        None => format!("table/{}", target.table),
    }
}

fn dimension(target: &CapacityTarget, side: Capacity) -> ScalableDimension {
    match (&target.index, side) {
        (None, Capacity::Read) => ScalableDimension::DynamoDbTableReadCapacityUnits,
        (None, Capacity::Write) => ScalableDimension::DynamoDbTableWriteCapacityUnits,
        (Some(_), Capacity::Read) => ScalableDimension::DynamoDbIndexReadCapacityUnits,
        (Some(_), Capacity::Write) => ScalableDimension::DynamoDbIndexWriteCapacityUnits,
    }
}

impl Scaler {
    /// The ranges Application Auto Scaling holds for the table or index.
    pub(super) async fn scalable_ranges(
        &self,
        target: &CapacityTarget,
    ) -> Result<Ranges, AwsError> {
        let id = resource_id(target);
        let output = self
            .clients
            .auto_scaling
            .describe_scalable_targets()
            .service_namespace(ServiceNamespace::Dynamodb)
            .resource_ids(&id)
            .send()
            .await
            .map_err(|err| AwsError::from_sdk(DESCRIBE, &id, &err))?;
        let mut ranges = Ranges::default();
        for side in Capacity::BOTH {
            let wanted = dimension(target, side);
            ranges.set(
                side,
                output
                    .scalable_targets()
                    .iter()
                    .find(|t| t.resource_id() == id && *t.scalable_dimension() == wanted)
                    .map(|t| Range {
                        min: t.min_capacity().into(),
                        max: t.max_capacity().into(),
                    }),
            );
        }
        Ok(ranges)
    }

    /// Registers each side whose range differs from `from`; when one fails, the sides already
    /// registered are put back, so that a failure changes nothing. The error comes with what it
    /// left changed, when a side could not be put back.
    pub(super) async fn register_ranges(
        &self,
        target: &CapacityTarget,
        from: &Ranges,
        to: &Ranges,
    ) -> Result<(), (AwsError, Option<String>)> {
        let changed: Vec<(Capacity, Range)> = Capacity::BOTH
            .into_iter()
            .filter(|side| to.get(*side) != from.get(*side))
            .filter_map(|side| Some((side, to.get(side)?)))
            .collect();
        for (done, (side, range)) in changed.iter().enumerate() {
            let Err(err) = self.register(target, *side, *range).await else {
                continue;
            };
            for (side, _) in &changed[..done] {
                let Some(original) = from.get(*side) else {
                    continue;
                };
                if let Err(undo) = self.register(target, *side, original).await {
                    let left = format!(
                        "the {} range of {} was set and could not be put back to min {}, max {} ({undo}): put it back by hand",
                        side.label(),
                        target.name(),
                        original.min,
                        original.max
                    );
                    return Err((err, Some(left)));
                }
            }
            return Err((err, None));
        }
        Ok(())
    }

    /// The ranges from `ranges.0` to `ranges.1`, then UpdateTable to `change` when given (waiting
    /// for an update already running), all or nothing: a failed UpdateTable puts the ranges
    /// back. The error comes with what it left changed, when the ranges could not be put back.
    pub(super) async fn apply_in_order(
        &self,
        target: &CapacityTarget,
        observed: &Observed,
        (from, to): (&Ranges, &Ranges),
        change: Option<&Change>,
        deadline: Deadline,
    ) -> Result<(), (AwsError, Option<String>)> {
        self.register_ranges(target, from, to).await?;
        let Some(change) = change else {
            return Ok(());
        };
        // Boxed: the wait inside outgrows a test thread's stack on the schedule's path.
        let Err(err) =
            Box::pin(self.apply_waiting_if_busy(target, observed, to, change, deadline)).await
        else {
            return Ok(());
        };
        if from == to {
            return Err((err, None));
        }
        // Auto Scaling may have started moving the capacity into the raised range already: a
        // capacity above the original range's is its policy's to scale back in.
        match self.register_ranges(target, to, from).await {
            Ok(()) => Err((err, None)),
            Err((undo, _)) => Err((
                err,
                Some(format!(
                    "the Auto Scaling range of {}, already set to {}, could not be put back to {} ({undo}): put it back by hand",
                    target.name(),
                    to.text(),
                    from.text()
                )),
            )),
        }
    }

    /// The check that the ranges are as `expected`.
    pub(super) async fn range_check(&self, target: &CapacityTarget, expected: &Ranges) -> Check {
        let (ok, seen) = match self.scalable_ranges(target).await {
            Ok(now) => (now == *expected, now.text()),
            Err(err) => (false, format!("DescribeScalableTargets failed: {err}")),
        };
        Check::new("auto_scaling_range", ok, expected.text(), seen)
    }

    async fn register(
        &self,
        target: &CapacityTarget,
        side: Capacity,
        range: Range,
    ) -> Result<(), AwsError> {
        let id = resource_id(target);
        let capacity = |value: i64| {
            i32::try_from(value).map_err(|_| {
                AwsError::invalid(REGISTER, &id, &format!("capacity {value} is out of range"))
            })
        };
        self.clients
            .auto_scaling
            .register_scalable_target()
            .service_namespace(ServiceNamespace::Dynamodb)
            .resource_id(&id)
            .scalable_dimension(dimension(target, side))
            .min_capacity(capacity(range.min)?)
            .max_capacity(capacity(range.max)?)
            .send()
            .await
            .map(|_| ())
            .map_err(|err| AwsError::from_sdk(REGISTER, &format!("{id} ({})", side.label()), &err))
    }
}

/// A raise through Application Auto Scaling: the ranges before and after, and whether
/// UpdateTable also raises a side that is not registered.
#[derive(Clone, Debug, PartialEq)]
pub struct Scaling {
    pub before: Ranges,
    pub after: Ranges,
    pub table_too: bool,
}

impl Scaling {
    /// The scaling part of a raise of the capacity from `from` to `to` (read, write): none when
    /// no registered side rises, which leaves the raise to UpdateTable alone. Pure.
    pub fn of(ranges: &Ranges, from: (i64, i64), to: (i64, i64)) -> Option<Self> {
        let after = ranges.raised(from, to);
        (after != *ranges).then(|| Self {
            before: *ranges,
            after,
            table_too: (ranges.read.is_none() && to.0 > from.0)
                || (ranges.write.is_none() && to.1 > from.1),
        })
    }

    /// Whether the table shows `seen` on `side` as the raise leaves it (`planned` for a side
    /// that UpdateTable sets): a registered side at least at its new minimum (Auto Scaling may
    /// go higher), an unregistered one at exactly `planned` when the table was written too.
    pub fn in_force(&self, side: Capacity, seen: i64, planned: i64) -> bool {
        match self.after.get(side) {
            Some(range) => seen >= range.min,
            None => !self.table_too || seen == planned,
        }
    }
}
