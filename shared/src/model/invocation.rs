//! One invocation: its request id (the lease owner), its deadline, when it started, and what it
//! carries out (the event it handles, an approved plan, an earlier attempt's intents).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::approval::Approving;
use super::plan::Action;
use super::report::Report;
use super::resource::ResourceId;
use crate::deadline::Deadline;

/// One invocation: its request id (the lease owner), its deadline and when it started.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub request_id: String,
    pub deadline: Deadline,
    pub started: std::time::Instant,
    pub started_at: DateTime<Utc>,
    /// The actions an earlier attempt of this request recorded on the leases it now took over,
    /// by lease key.
    resumed: std::sync::Arc<std::sync::Mutex<HashMap<String, Action>>>,
    /// The event being handled: a plan made for approval stores it, to handle it again.
    pub event: Option<std::sync::Arc<Value>>,
    /// The approved plan this invocation carries out, when it handles a plan's event again.
    pub approving: Option<std::sync::Arc<Approving>>,
}

impl Invocation {
    pub fn new(request_id: impl Into<String>, deadline: Deadline) -> Self {
        Self {
            request_id: request_id.into(),
            deadline,
            started: std::time::Instant::now(),
            started_at: Utc::now(),
            resumed: Default::default(),
            event: None,
            approving: None,
        }
    }

    /// The invocation handling `event` (what a plan made in it stores).
    pub fn handling(&self, event: &Value) -> Self {
        Self {
            event: Some(std::sync::Arc::new(event.clone())),
            ..self.clone()
        }
    }

    /// The invocation of a run another run holds (api-errors hands a rollback over in-process):
    /// `event` runs it again on its own, and an approval the outer run carries out is not its.
    pub fn nested(&self, event: &Value) -> Self {
        Self {
            approving: None,
            ..self.handling(event)
        }
    }

    /// The invocation carrying out an approved plan: it handles the plan's event again.
    pub fn approving(&self, approving: Approving) -> Self {
        Self {
            event: Some(std::sync::Arc::new(approving.plan.event.clone())),
            approving: Some(std::sync::Arc::new(approving)),
            ..self.clone()
        }
    }

    /// The action an earlier attempt of this request (Lambda's retry after a crash) was about
    /// to write on the resource, when the resource shows it applied: every field of its `after`
    /// has that value in `observed`. The retry adopts it instead of planning again, which would
    /// raise a second time and lose the baseline.
    pub fn landed(&self, resource: &ResourceId, observed: &Value) -> Option<Action> {
        let resumed = self.resumed.lock().ok()?;
        let action = resumed.get(&resource.lease_key())?;
        let after = action.after.as_object()?;
        (!after.is_empty()
            && after
                .iter()
                .all(|(key, value)| observed.get(key) == Some(value)))
        .then(|| action.clone())
    }

    pub(crate) fn resume(&self, lease_key: &str, intent: Value) {
        if let (Ok(action), Ok(mut resumed)) = (
            serde_json::from_value::<Action>(intent),
            self.resumed.lock(),
        ) {
            resumed.insert(lease_key.to_string(), action);
        }
    }

    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Sets the report's duration (for reports decided without the guards).
    pub fn timed(&self, mut report: Report) -> Report {
        report.duration_ms = self.elapsed_ms();
        report
    }

    /// The deadline for a wait that writes follow (raise record, audit record, the event's
    /// report, the lease's release): the invocation's, less the time those writes need.
    pub fn wait_deadline(&self) -> Deadline {
        self.deadline.less(crate::deadline::WRITE_RESERVE)
    }
}

/// The note of a retried invocation (same request id) that finds its first attempt's write in
/// place (`Invocation::landed`) and finishes it instead of planning again.
pub const RESUMED: &str = "resumed: an earlier attempt of this request made this change before it stopped; it was verified and recorded now";
