//! limit-scaler's settings, read once at cold start.

use runbook_shared::config::{ConfigError, Env};
use runbook_shared::model::SafetyConfig;

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
    /// How long a raised reservation lasts before the schedule puts the original back.
    pub concurrency_raise_minutes: i64,
    /// The DynamoDB table holding the application's stored limits, if any.
    pub limits_table: Option<String>,
    /// The partition key attribute (a string) of the limits table.
    pub limits_key_attribute: String,
    /// The numeric attributes of a limits item that are limits.
    pub limits_value_attributes: Vec<String>,
    /// A stored limit is never raised above this multiple of its original.
    pub max_limit_factor: f64,
    /// How long a stored limit stays raised when the request names no duration.
    pub stored_limit_minutes: i64,
    /// Raised capacity used less than this fraction of itself is stepped back down.
    pub scale_down_utilization: f64,
    /// How long the low use must last (and the least time between two steps down).
    pub scale_down_after_hours: f64,
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
            concurrency_raise_minutes: env.number("CONCURRENCY_RAISE_MINUTES", 60i64, 1, 10_080)?,
            limits_table: env.get("LIMITS_TABLE"),
            limits_key_attribute: env.get("LIMITS_KEY_ATTR").unwrap_or_else(|| "pk".into()),
            limits_value_attributes: {
                let attributes = env.list("LIMITS_VALUE_ATTRS");
                if env.get("LIMITS_TABLE").is_some() && attributes.is_empty() {
                    return Err(ConfigError::Missing {
                        var: "LIMITS_VALUE_ATTRS",
                        hint: "the numeric attributes of LIMITS_TABLE's items that are limits, comma-separated",
                    });
                }
                attributes
            },
            max_limit_factor: env.number("MAX_LIMIT_FACTOR", 10.0f64, 1.0, 1_000.0)?,
            stored_limit_minutes: env.number("STORED_LIMIT_MINUTES", 60i64, 1, 10_080)?,
            scale_down_utilization: env.number("SCALE_DOWN_UTILIZATION", 0.3f64, 0.01, 1.0)?,
            scale_down_after_hours: env.number("SCALE_DOWN_AFTER_HOURS", 2.0f64, 0.0, 168.0)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let config = ScalerConfig::from_env(&Env::from_pairs(&[
            ("AUDIT_TABLE", "audit"),
            ("AWS_REGION", "us-east-1"),
            ("ACCOUNT_ID", "123456789012"),
        ]))
        .unwrap();
        assert_eq!(config.max_read_capacity, 1_000);
        assert_eq!(config.scale_factor, 2.0);
        assert!(!config.allow_on_demand);
        let err = ScalerConfig::from_env(&Env::from_pairs(&[
            ("AUDIT_TABLE", "a"),
            ("AWS_REGION", "us-east-1"),
            ("ACCOUNT_ID", "123456789012"),
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
