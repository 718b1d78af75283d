//! What every runbook function shares, in layers that only look down (docs/architecture.md):
//!
//! - foundation: `config` (environment), `aws` (errors and clients), `deadline`, `logging`;
//! - `model`: ids, places, resources, triggers, plans, the report, refusals and skips;
//! - `store`: the audit table (records, claims, leases, windows, plans, the kill switch);
//! - `guards`: each guard one function returning its decision;
//! - `path`: `path::run`, the one path of every runbook;
//! - `edge`: the Lambda event parsed once, the fleet, approvals, alarms, controls, report events.
//!
//! A module imports only its own layer's and the layers below; `scripts/check-layers.py` fails
//! on an import that looks up or on an import circle.

pub mod aws;
pub mod config;
pub mod deadline;
pub mod edge;
pub mod guards;
pub mod logging;
pub mod model;
pub mod path;
pub mod store;
