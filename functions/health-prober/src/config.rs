//! health-prober's settings, read once at cold start; `PROBES` is validated then.

use runbook_shared::config::{ConfigError, Env};
use runbook_shared::model::FleetConfig;
use runbook_shared::model::Home;

use crate::probes::{Probe, parse_probes};

#[derive(Clone, Debug, PartialEq)]
pub struct ProberConfig {
    pub probes: Vec<Probe>,
    /// Probes running at once.
    pub concurrency: usize,
    /// A probe's timeout when it sets none.
    pub default_timeout_ms: u64,
    pub metrics_namespace: String,
    /// The audit table whose pending verifications the sweep settles.
    pub audit_table: String,
    pub audit_retention_days: i64,
    /// How long after a remediation its metric-level check is settled by the sweep.
    pub verification_window_minutes: i64,
    /// A verification still undecided this long after its remediation is settled as failed.
    pub verification_give_up_hours: i64,
    /// AUTOMATION_PAUSED (the template's AutomationPaused): the whole deployment is paused.
    pub paused_at_deploy: bool,
    /// The sweep pauses the automation after this many verifications settle as failed within
    /// 60 minutes (0: never).
    pub pause_after_failed_verifications: usize,
    /// The name of the daily schedule rule whose events publish the scorecard (SCORECARD_RULE).
    pub scorecard_rule: Option<String>,
    /// For a hub that remediates other accounts or regions (ACCOUNTS, REGIONS): its own place
    /// and the others, where the sweep checks their remediations.
    pub places: Option<(Home, FleetConfig)>,
}

impl ProberConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let probes = match env.get("PROBES") {
            None => Vec::new(),
            Some(text) => {
                let value = serde_json::from_str(&text).map_err(|err| ConfigError::Invalid {
                    var: "PROBES",
                    value: text.chars().take(80).collect(),
                    expected: format!("a JSON array of probes ({err})"),
                })?;
                parse_probes(&value, "PROBES").map_err(|err| ConfigError::Invalid {
                    var: "PROBES",
                    value: text.chars().take(80).collect(),
                    expected: format!("valid probes: {err}"),
                })?
            }
        };
        Ok(Self {
            probes,
            concurrency: env.number("PROBE_CONCURRENCY", 32usize, 1, 1_000)?,
            default_timeout_ms: env.number("PROBE_TIMEOUT_MS", 5_000u64, 1, 900_000)?,
            metrics_namespace: env
                .get("METRICS_NAMESPACE")
                .unwrap_or_else(|| "RunbookAutomation".into()),
            audit_table: env.required("AUDIT_TABLE", "the name of the audit DynamoDB table")?,
            audit_retention_days: env.number("AUDIT_RETENTION_DAYS", 90i64, 1, 3_650)?,
            verification_window_minutes: env.number(
                "VERIFICATION_WINDOW_MINUTES",
                15i64,
                1,
                1_440,
            )?,
            verification_give_up_hours: env.number("VERIFICATION_GIVE_UP_HOURS", 24i64, 1, 720)?,
            paused_at_deploy: env.bool("AUTOMATION_PAUSED", false)?,
            pause_after_failed_verifications: env.number(
                "PAUSE_AFTER_FAILED_VERIFICATIONS",
                3usize,
                0,
                100,
            )?,
            scorecard_rule: env.get("SCORECARD_RULE"),
            places: match env.get("ACCOUNTS").or(env.get("REGIONS")) {
                None => None,
                Some(_) => {
                    let hub = Home::from_env(env)?;
                    let places = FleetConfig::from_env(env, &hub)?;
                    Some((hub, places))
                }
            },
        })
    }

    /// Whether a schedule's rule (its ARN, `…:rule/<name>`) is the scorecard's.
    pub fn is_scorecard_rule(&self, rule: Option<&str>) -> bool {
        match (&self.scorecard_rule, rule) {
            (Some(name), Some(arn)) => arn.rsplit('/').next() == Some(name.as_str()),
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probes_are_validated_at_start_with_the_probe_named() {
        let err = ProberConfig::from_env(&Env::from_pairs(&[
            ("AUDIT_TABLE", "a"),
            (
                "PROBES",
                r#"[{"name": "api", "kind": "http", "url": "http://x", "timeout": 5}]"#,
            ),
        ]))
        .unwrap_err()
        .to_string();
        assert!(err.starts_with("environment variable PROBES="), "{err}");
        assert!(
            err.contains("PROBES[0] (probe \"api\"): unknown field `timeout`"),
            "{err}"
        );
        let err =
            ProberConfig::from_env(&Env::from_pairs(&[("AUDIT_TABLE", "a"), ("PROBES", "[{")]))
                .unwrap_err();
        assert!(err.to_string().contains("a JSON array of probes"), "{err}");
        let config = ProberConfig::from_env(&Env::from_pairs(&[("AUDIT_TABLE", "a")])).unwrap();
        assert!(config.probes.is_empty());
        assert_eq!(config.metrics_namespace, "RunbookAutomation");
    }
}
