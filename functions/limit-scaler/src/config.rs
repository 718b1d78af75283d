//! limit-scaler's settings, read once at cold start.

use runbook_shared::config::{ConfigError, Env};
use runbook_shared::safety::SafetyConfig;

#[derive(Clone, Debug, PartialEq)]
pub struct ScalerConfig {
    pub safety: SafetyConfig,
    /// Highest read capacity (units, or on-demand maximum read request units) it will set.
    pub max_read_capacity: i64,
    /// Highest write capacity it will set.
    pub max_write_capacity: i64,
    /// Multiplier applied to the current limit when raising it.
    pub scale_factor: f64,
    /// Multiplier applied to the observed consumed peak, so the new capacity leaves room above it.
    pub headroom: f64,
    /// Whether a provisioned table already at its cap may be switched to on-demand.
    pub allow_on_demand: bool,
    /// How far back consumed capacity is read when diagnosing.
    pub metric_lookback_minutes: i64,
    /// Highest reserved concurrency it will set on a function.
    pub max_reserved_concurrency: i32,
    /// The account's unreserved concurrency never goes below this.
    pub unreserved_concurrency_floor: i32,
}

impl ScalerConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            safety: SafetyConfig::from_env(env)?,
            max_read_capacity: env.number("MAX_READ_CAPACITY", 1_000i64, 1, 1_000_000)?,
            max_write_capacity: env.number("MAX_WRITE_CAPACITY", 1_000i64, 1, 1_000_000)?,
            scale_factor: env.number("SCALE_FACTOR", 2.0f64, 1.1, 10.0)?,
            headroom: env.number("HEADROOM", 1.2f64, 1.0, 5.0)?,
            allow_on_demand: env.bool("ALLOW_ON_DEMAND", false)?,
            metric_lookback_minutes: env.number("METRIC_LOOKBACK_MINUTES", 10i64, 1, 180)?,
            max_reserved_concurrency: env.number("MAX_RESERVED_CONCURRENCY", 500i32, 1, 100_000)?,
            unreserved_concurrency_floor: env.number(
                "UNRESERVED_CONCURRENCY_FLOOR",
                100i32,
                100,
                100_000,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let config = ScalerConfig::from_env(&Env::from_pairs(&[("AUDIT_TABLE", "audit")])).unwrap();
        assert_eq!(config.max_read_capacity, 1_000);
        assert_eq!(config.scale_factor, 2.0);
        assert!(!config.allow_on_demand);
        let err = ScalerConfig::from_env(&Env::from_pairs(&[
            ("AUDIT_TABLE", "a"),
            ("SCALE_FACTOR", "1"),
        ]))
        .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("environment variable SCALE_FACTOR=\"1\" is invalid"),
            "{err}"
        );
    }
}
