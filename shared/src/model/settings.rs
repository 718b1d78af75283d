//! The settings every function shares: where it acts, what it may touch, its guards' limits and
//! each runbook's mode, read once at start-up.

use chrono::Duration;

use super::place::Home;
use crate::config::{ConfigError, Env};

/// Settings shared by every function.
#[derive(Clone, Debug, PartialEq)]
pub struct SafetyConfig {
    /// The partition, region and account the function acts in.
    pub home: Home,
    /// The deployment's own account and region: `home` too, except for the function acting
    /// in another account or region of a hub (`fleet`).
    pub hub: Home,
    /// The accounts a hub acts in, its own first (ACCOUNT_ID and ACCOUNTS); empty for a
    /// deployment that acts in its own account and region only.
    pub accounts: Vec<String>,
    /// ALARM_TOPIC_ARNS: the SNS topics whose alarm notifications the function takes.
    pub alarm_topics: Vec<String>,
    pub dry_run: bool,
    pub managed: crate::model::ManagedPolicy,
    pub cooldown: Duration,
    pub max_actions_per_hour: u32,
    pub audit_table: String,
    pub audit_retention_days: i64,
    /// AUTOMATION_PAUSED (the template's AutomationPaused): paused from the deployment itself.
    pub paused_at_deploy: bool,
    /// The change brake: at most this many distinct resources changed...
    pub max_changes_per_window: usize,
    /// ...within this window, account-wide, across every function and runbook.
    pub change_window: Duration,
    /// What the evidence in a report covers.
    pub evidence: crate::model::EvidenceConfig,
    /// Each runbook's mode (observe, approve, auto).
    pub modes: crate::model::Modes,
    /// How long a plan awaits approval (APPROVAL_MINUTES).
    pub approval_window: Duration,
    /// The function's deployed name (AWS_LAMBDA_FUNCTION_NAME), for the approval commands.
    pub function_name: Option<String>,
}

impl SafetyConfig {
    /// The same settings for acting in `place`, one of the places of `places`.
    pub fn at(&self, place: Home, places: &crate::model::FleetConfig) -> Self {
        let accounts = if places.is_fleet() {
            std::iter::once(&self.hub.account)
                .chain(&places.spokes)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        Self {
            home: place,
            accounts,
            ..self.clone()
        }
    }

    /// Whether it acts in the deployment's own account and region.
    pub fn is_hub(&self) -> bool {
        self.home == self.hub
    }

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let home = Home::from_env(env)?;
        Ok(Self {
            hub: home.clone(),
            accounts: Vec::new(),
            alarm_topics: alarm_topics(env)?,
            home,
            dry_run: env.bool("DRY_RUN", false)?,
            managed: crate::model::ManagedPolicy::from_patterns(env.list("MANAGED_RESOURCES"))?,
            cooldown: Duration::seconds(env.number("COOLDOWN_SECONDS", 900i64, 0, 7 * 86_400)?),
            max_actions_per_hour: env.number("MAX_ACTIONS_PER_HOUR", 10u32, 1, 1_000)?,
            audit_table: env.required("AUDIT_TABLE", "the name of the audit DynamoDB table")?,
            audit_retention_days: env.number("AUDIT_RETENTION_DAYS", 90i64, 1, 3_650)?,
            paused_at_deploy: env.bool("AUTOMATION_PAUSED", false)?,
            max_changes_per_window: env.number("MAX_CHANGES_PER_WINDOW", 5usize, 1, 1_000)?,
            change_window: Duration::minutes(env.number(
                "CHANGE_WINDOW_MINUTES",
                10i64,
                1,
                1_440,
            )?),
            evidence: crate::model::EvidenceConfig::from_env(env)?,
            modes: crate::model::Modes::from_env(env)?,
            approval_window: Duration::minutes(env.number(
                "APPROVAL_MINUTES",
                30i64,
                1,
                7 * 24 * 60,
            )?),
            function_name: env.get("AWS_LAMBDA_FUNCTION_NAME"),
        })
    }
}

/// ALARM_TOPIC_ARNS, each an SNS topic's ARN.
fn alarm_topics(env: &Env) -> Result<Vec<String>, ConfigError> {
    let topics = env.list("ALARM_TOPIC_ARNS");
    for topic in &topics {
        let arn = crate::model::Arn::parse(topic).ok();
        if arn.is_none_or(|arn| arn.service != "sns" || arn.resource.contains(':')) {
            return Err(ConfigError::Invalid {
                var: "ALARM_TOPIC_ARNS",
                value: topic.clone(),
                expected: "comma-separated SNS topic ARNs (arn:aws:sns:<region>:<account>:<topic>)"
                    .into(),
            });
        }
    }
    Ok(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_from_env_with_defaults_and_errors() {
        let config = SafetyConfig::from_env(&Env::from_pairs(&[
            ("AUDIT_TABLE", "audit"),
            ("AWS_REGION", "us-east-1"),
            ("ACCOUNT_ID", "123456789012"),
        ]))
        .unwrap();
        assert_eq!(config.cooldown, Duration::seconds(900));
        assert_eq!(config.max_actions_per_hour, 10);
        assert!(!config.dry_run);
        let err = SafetyConfig::from_env(&Env::from_pairs(&[
            ("AUDIT_TABLE", "a"),
            ("AWS_REGION", "us-east-1"),
            ("ACCOUNT_ID", "123456789012"),
            ("MAX_ACTIONS_PER_HOUR", "0"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("MAX_ACTIONS_PER_HOUR"));
        assert!(
            SafetyConfig::from_env(&Env::from_pairs(&[
                ("AWS_REGION", "us-east-1"),
                ("ACCOUNT_ID", "123456789012"),
            ]))
            .unwrap_err()
            .to_string()
            .contains("AUDIT_TABLE")
        );
    }
}
