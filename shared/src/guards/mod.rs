//! The guards of the shared runbook path (`path::run`), each one function that reads what it
//! needs (the audit table, a tag, an alarm, a stack) and returns its decision. One rule per
//! concept, here and nowhere else: which resources may be touched (`managed`), each event
//! acted on once (`once`), one actor per resource (`lease`), the cooldown, the brakes, the
//! hourly budget, the kill switch, the alarm re-checked before a write (`recheck`), the stack
//! being deployed (`owner`), and when an OK counts as recovery (`recovery`).
//!
//! A manual run is a person's decision: it overrides the cooldown (and says so) and is not
//! counted against the budget or the brakes, but never the lease, the managed check or the caps.

mod brakes;
mod budget;
mod cooldown;
mod lease;
mod managed;
mod once;
mod owner;
mod recheck;
mod recovery;
mod switch;

pub use brakes::{change_brake, repeat_brake};
pub use budget::spend_budget;
pub use cooldown::cooldown;
pub use lease::{acquire_waiting, record_intent, release};
pub use managed::{require_function, require_table};
pub use once::once;
pub use owner::owner_of;
pub use recheck::{AlarmNow, alarm_now};
pub use recovery::close_on_ok;
pub use switch::{MAX_PAUSE_MINUTES, Switch, TRIP_WINDOW_MINUTES, switched_to};

use chrono::Duration;

use crate::model::SafetyConfig;
use crate::store::AuditStore;

/// The guards' state: the settings, the audit table and the kill switch.
#[derive(Clone)]
pub struct Safety {
    pub config: SafetyConfig,
    pub audit: AuditStore,
    /// The kill switch, read right before a run's first write.
    pub switch: Switch,
}

/// How long past the deadline a lease or claim outlives a crashed invocation: enough to cover
/// the difference between Lambda's clock and this function's, short enough that the next run
/// after a crash is not held up long.
const LEASE_GRACE: Duration = Duration::seconds(5);

impl Safety {
    pub fn new(config: SafetyConfig, dynamodb: aws_sdk_dynamodb::Client) -> Self {
        let audit = AuditStore::new(
            dynamodb,
            config.audit_table.clone(),
            config.audit_retention_days,
        );
        // The hub's own place keeps the keys it always had; every other place's carry it.
        let audit = if config.is_hub() {
            audit
        } else {
            audit.scoped(&config.home)
        };
        let mut switch = crate::guards::Switch::new(audit.clone(), config.paused_at_deploy);
        if !config.accounts.is_empty() {
            switch = switch.in_fleet(Some(config.home.account.clone()), config.accounts.clone());
        }
        Self {
            config,
            audit,
            switch,
        }
    }
}
