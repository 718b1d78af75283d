//! What every runbook function shares: configuration, AWS clients and errors, trigger
//! recognition, resource identities, the report, the safety core (dry run, managed check, lease, idempotency,
//! cooldown, budget), the audit table, deadline-bounded verification and JSON logs.

pub mod alarms;
pub mod approval;
pub mod audit;
pub mod aws;
pub mod brakes;
pub mod config;
pub mod control;
pub mod deadline;
pub mod entry;
pub mod evidence;
pub mod fleet;
pub mod handoff;
pub mod logging;
pub mod managed;
pub mod modes;
pub mod ownership;
pub mod recheck;
pub mod report;
pub mod report_events;
pub mod resource;
pub mod runbook;
pub mod safety;
pub mod trigger;
