//! Test harness: moto behind the project's front (started once per test binary), SDK clients
//! pointed at it, the functions built against it, the audit table as template.yaml defines it,
//! replay-client pieces for faults moto cannot produce, and a Lambda Runtime API emulator that
//! runs the real function binaries.

pub mod deploy;
pub mod endpoints;
pub mod fixtures;
pub mod moto;
pub mod replay;
pub mod runtime;

use std::path::PathBuf;

/// The workspace root (tests/ is one of its members).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// A name no other test uses: `<prefix>-<8 random hex digits>`.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}
