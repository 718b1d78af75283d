//! alarm-responder's settings, read once at cold start.

use runbook_shared::config::{ConfigError, Env};
use runbook_shared::model::SafetyConfig;

#[derive(Clone, Debug, PartialEq)]
pub struct ResponderConfig {
    pub safety: SafetyConfig,
    pub timeout_factor: f64,
    pub max_timeout_seconds: i32,
    pub memory_factor: f64,
    pub max_memory_mb: i32,
    /// An update in progress longer than this is cancelled.
    pub stack_stuck_minutes: i64,
    /// How many of its own on-demand backups dynamodb-backup keeps per table.
    pub max_runbook_backups: usize,
    /// Where api-errors sends its handoffs (`REPORT_EVENT_BUS`, which the template's handoff
    /// rule listens on); none when it is `off`.
    pub handoff_bus: Option<String>,
}

impl ResponderConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            safety: SafetyConfig::from_env(env)?,
            timeout_factor: env.number("TIMEOUT_FACTOR", 1.5f64, 1.1, 10.0)?,
            max_timeout_seconds: env.number("MAX_TIMEOUT_SECONDS", 300i32, 1, 900)?,
            memory_factor: env.number("MEMORY_FACTOR", 1.5f64, 1.1, 10.0)?,
            max_memory_mb: env.number("MAX_MEMORY_MB", 3_008i32, 128, 10_240)?,
            stack_stuck_minutes: env.number("STACK_STUCK_MINUTES", 60i64, 5, 1_440)?,
            max_runbook_backups: env.number("MAX_RUNBOOK_BACKUPS", 5usize, 1, 50)?,
            handoff_bus: runbook_shared::edge::publish::bus_from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_limits() {
        let home = [("AWS_REGION", "us-east-1"), ("ACCOUNT_ID", "123456789012")];
        let config =
            ResponderConfig::from_env(&Env::from_pairs(&[home[0], home[1], ("AUDIT_TABLE", "a")]))
                .unwrap();
        assert_eq!(
            (
                config.safety.evidence.recent_changes_minutes,
                config.max_timeout_seconds
            ),
            (60, 300)
        );
        let err = ResponderConfig::from_env(&Env::from_pairs(&[
            home[0],
            home[1],
            ("AUDIT_TABLE", "a"),
            ("MAX_TIMEOUT_SECONDS", "1000"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("MAX_TIMEOUT_SECONDS"), "{err}");
    }
}
