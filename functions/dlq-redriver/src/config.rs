//! dlq-redriver's settings, read once at cold start.

use runbook_shared::config::{ConfigError, Env};
use runbook_shared::model::SafetyConfig;

#[derive(Clone, Debug, PartialEq)]
pub struct RedriverConfig {
    pub safety: SafetyConfig,
    /// Whether an alarm or a schedule redrives (true) or only inspects (false).
    pub redrive_on_alarm: bool,
    /// The DLQs a scheduled run sweeps (names, URLs or ARNs).
    pub dlq_queues: Vec<String>,
    /// A message redriven this many times already is poison: left in the DLQ and reported.
    pub max_redrives: u32,
    /// Batches of 10 in flight at once.
    pub concurrency: usize,
    /// Messages per second when the request names no rate.
    pub rate_per_second: u32,
    /// The highest rate a request may ask for.
    pub max_rate_per_second: u32,
    /// The most messages one run moves (and the highest `max_messages` a request may ask for).
    pub max_messages_per_run: u32,
    /// Messages sampled by an inspection when the request names no number.
    pub inspect_sample_size: u32,
    /// A consumer is well again when its function had no errors for this long.
    pub consumer_healthy_minutes: i64,
}

impl RedriverConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let max_rate_per_second =
            env.number("MAX_REDRIVE_RATE_PER_SECOND", 1_000u32, 1, 100_000)?;
        let rate_per_second = env.number("REDRIVE_RATE_PER_SECOND", 100u32, 1, 100_000)?;
        if rate_per_second > max_rate_per_second {
            return Err(ConfigError::Invalid {
                var: "REDRIVE_RATE_PER_SECOND",
                value: rate_per_second.to_string(),
                expected: format!("at most MAX_REDRIVE_RATE_PER_SECOND ({max_rate_per_second})"),
            });
        }
        Ok(Self {
            safety: SafetyConfig::from_env(env)?,
            redrive_on_alarm: env.bool("REDRIVE_ON_ALARM", false)?,
            dlq_queues: env.list("DLQ_QUEUES"),
            max_redrives: env.number("MAX_REDRIVES", 3u32, 1, 100)?,
            concurrency: env.number("REDRIVE_CONCURRENCY", 4usize, 1, 32)?,
            rate_per_second,
            max_rate_per_second,
            max_messages_per_run: env.number("MAX_MESSAGES_PER_RUN", 10_000u32, 1, 1_000_000)?,
            inspect_sample_size: env.number("INSPECT_SAMPLE_SIZE", 10u32, 1, 100)?,
            consumer_healthy_minutes: env.number("CONSUMER_HEALTHY_MINUTES", 10i64, 1, 1_440)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_the_rate_cap() {
        let config = RedriverConfig::from_env(&Env::from_pairs(&[
            ("AUDIT_TABLE", "a"),
            ("AWS_REGION", "us-east-1"),
            ("ACCOUNT_ID", "123456789012"),
            ("DLQ_QUEUES", "a-dlq, b-dlq"),
        ]))
        .unwrap();
        assert_eq!(config.max_redrives, 3);
        assert_eq!(config.dlq_queues, vec!["a-dlq", "b-dlq"]);
        assert!(!config.redrive_on_alarm);
        let err = RedriverConfig::from_env(&Env::from_pairs(&[
            ("AUDIT_TABLE", "a"),
            ("AWS_REGION", "us-east-1"),
            ("ACCOUNT_ID", "123456789012"),
            ("REDRIVE_RATE_PER_SECOND", "500"),
            ("MAX_REDRIVE_RATE_PER_SECOND", "100"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("REDRIVE_RATE_PER_SECOND"), "{err}");
    }
}
