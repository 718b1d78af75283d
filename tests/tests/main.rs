//! The integration and end-to-end tests: one binary, one module per subject. The tests share
//! one emulator (`runbook_tests::moto::moto`), each on resources of its own (random names, an
//! audit table of its own); a test that reads what the whole emulator holds (the account's
//! unreserved concurrency, every event on the default bus) takes a private one
//! (`moto::isolated`), as does a test that must finish within a bound of seconds (the shared
//! emulator answers all the others at once) or loads an emulator for minutes.

mod account_floor;
mod alarm_sources;
mod api_errors;
mod approvals;
mod brakes;
mod deadlines;
mod dlq_prober_promises;
mod docs;
mod dynamodb_backup;
mod evidence;
mod fault_injection;
mod fleet;
mod iam_coverage;
mod invariants;
mod kill_switch;
mod layers;
mod managed_kinds;
mod moto_front;
mod never_worse;
mod plan_properties;
mod prober;
mod prober_e2e;
mod redriver;
mod redriver_e2e;
mod report_events;
mod responder;
mod responder_e2e;
mod scaler;
mod scaler_e2e;
mod scorecard;
mod template;
mod unmanaged_e2e;
