//! How `lambda-rollback` plans: drop a canary, or repoint a freshly deployed alias at the
//! newest earlier version it is known to have served, never flip-flopping without a new
//! deploy; pure.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use runbook_shared::model::Decision;

/// A published version, when it was published, and whether the alias is known to have served
/// it (Lambda's `Invocations` by `ExecutedVersion` through the alias, or an earlier rollback of
/// it by this automation).
#[derive(Clone, Debug, PartialEq)]
pub struct Version {
    pub number: u64,
    pub published_at: Option<DateTime<Utc>>,
    pub served: bool,
}

/// The alias as GetAlias shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct AliasState {
    pub arn: String,
    pub version: String,
    pub weights: HashMap<String, f64>,
    /// The alias's RevisionId as read: the update is made only on this revision.
    pub revision: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Send all traffic back to the alias's primary version.
    DropCanary {
        version: String,
        weights: HashMap<String, f64>,
    },
    Repoint {
        from: String,
        to: String,
    },
}

/// How far back the alias's `Invocations` by `ExecutedVersion` are read to know which versions
/// it served.
pub const SERVED_LOOKBACK_DAYS: i64 = 30;

/// The previous rollback of this alias: (from, to, when).
pub type LastRollback = Option<(String, String, DateTime<Utc>)>;

/// Plans the rollback from what was observed; pure, so dry runs and tests see the same plan.
pub fn plan(
    alias: &AliasState,
    versions: &[Version],
    last: &LastRollback,
    window: Duration,
    now: DateTime<Utc>,
) -> Decision<Change> {
    if !alias.weights.is_empty() {
        return Decision::Act(Change::DropCanary {
            version: alias.version.clone(),
            weights: alias.weights.clone(),
        });
    }
    let Ok(current) = alias.version.parse::<u64>() else {
        return Decision::NoAction(format!(
            "the alias points at {}: $LATEST cannot be rolled back; publish versions behind an alias",
            alias.version
        ));
    };
    let published = versions
        .iter()
        .find(|v| v.number == current)
        .and_then(|v| v.published_at);
    match published {
        Some(at) if now - at > window => {
            return Decision::NoAction(format!(
                "version {current} was published at {} ({} min ago), outside ROLLBACK_WINDOW_MINUTES={}: not a fresh deploy, so a rollback is not the fix; investigate the errors",
                runbook_shared::model::timestamp(at),
                (now - at).num_minutes(),
                window.num_minutes()
            ));
        }
        None => {
            return Decision::NoAction(format!(
                "version {current}'s publish time is unknown, so it cannot be told to be a fresh deploy"
            ));
        }
        Some(_) => {}
    }
    let mut earlier: Vec<&Version> = versions.iter().filter(|v| v.number < current).collect();
    if earlier.is_empty() {
        return Decision::NoAction(format!(
            "version {current} is the first published version: there is nothing earlier to roll back to"
        ));
    }
    earlier.sort_by_key(|v| std::cmp::Reverse(v.number));
    // A version published but never routed is code that never took traffic: going back to it
    // could make things worse.
    let Some(previous) = earlier.iter().find(|v| v.served).map(|v| v.number) else {
        let candidates: Vec<String> = earlier
            .iter()
            .take(5)
            .map(|v| v.number.to_string())
            .collect();
        return Decision::NoAction(format!(
            "no version before {current} is known to have served through this alias (candidates {}: none has Invocations by ExecutedVersion through it in the last {SERVED_LOOKBACK_DAYS} days, nor an earlier rollback by this automation), so none is rolled back to: check which version it served before (CloudTrail UpdateAlias events, the deploy pipeline's record) and repoint it by hand with aws lambda update-alias",
            candidates.join(", ")
        ));
    };
    let (from, to) = (current.to_string(), previous.to_string());
    if let Some((last_from, last_to, at)) = last {
        let deployed_since = versions
            .iter()
            .any(|v| v.published_at.is_some_and(|published| published > *at));
        if *last_from == from && *last_to == to && !deployed_since {
            return Decision::Skip(format!(
                "flip-flop refused: this alias was already rolled back from version {from} to {to} at {} and no version was published since; a human decides now",
                runbook_shared::model::timestamp(*at)
            ));
        }
    }
    Decision::Act(Change::Repoint { from, to })
}

impl Change {
    /// The version the alias is on once the change is in force.
    pub(super) fn version(&self) -> &str {
        match self {
            Change::DropCanary { version, .. } => version,
            Change::Repoint { to, .. } => to,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alias(version: &str) -> AliasState {
        AliasState {
            arn: String::new(),
            version: version.into(),
            weights: HashMap::new(),
            revision: None,
        }
    }

    fn versions(now: DateTime<Utc>, ages_minutes: &[i64]) -> Vec<Version> {
        ages_minutes
            .iter()
            .enumerate()
            .map(|(i, age)| Version {
                number: i as u64 + 1,
                published_at: Some(now - Duration::minutes(*age)),
                served: true,
            })
            .collect()
    }

    #[test]
    fn plans() {
        let now = Utc::now();
        let window = Duration::minutes(60);
        let fresh = versions(now, &[600, 300, 5]);
        assert_eq!(
            plan(&alias("3"), &fresh, &None, window, now),
            Decision::Act(Change::Repoint {
                from: "3".into(),
                to: "2".into()
            })
        );
        let old = versions(now, &[600, 300, 120]);
        assert!(
            matches!(plan(&alias("3"), &old, &None, window, now), Decision::NoAction(r) if r.contains("outside ROLLBACK_WINDOW_MINUTES=60"))
        );
        assert!(
            matches!(plan(&alias("1"), &versions(now, &[5]), &None, window, now), Decision::NoAction(r) if r.contains("first published version"))
        );
        assert!(
            matches!(plan(&alias("$LATEST"), &fresh, &None, window, now), Decision::NoAction(r) if r.contains("$LATEST"))
        );
        let mut canary = alias("2");
        canary.weights.insert("3".into(), 0.1);
        assert!(matches!(
            plan(&canary, &fresh, &None, window, now),
            Decision::Act(Change::DropCanary { .. })
        ));
        let last = Some(("3".to_string(), "2".to_string(), now - Duration::minutes(2)));
        assert!(
            matches!(plan(&alias("3"), &fresh, &last, window, now), Decision::Skip(r) if r.starts_with("flip-flop refused"))
        );
        let redeployed = versions(now, &[600, 300, 5, 1]);
        assert_eq!(
            plan(&alias("4"), &redeployed, &last, window, now),
            Decision::Act(Change::Repoint {
                from: "4".into(),
                to: "3".into()
            })
        );
    }

    #[test]
    fn rolls_back_only_to_a_version_the_alias_served() {
        let now = Utc::now();
        let window = Duration::minutes(60);
        // live went from 1 to 3; 2 was published but never routed.
        let mut skipped = versions(now, &[600, 300, 5]);
        skipped[1].served = false;
        assert_eq!(
            plan(&alias("3"), &skipped, &None, window, now),
            Decision::Act(Change::Repoint {
                from: "3".into(),
                to: "1".into()
            })
        );
        // Nothing earlier known to have served: no action, naming the candidates.
        skipped[0].served = false;
        assert!(
            matches!(plan(&alias("3"), &skipped, &None, window, now), Decision::NoAction(r) if r.contains("candidates 2, 1") && r.contains("update-alias"))
        );
    }
}
