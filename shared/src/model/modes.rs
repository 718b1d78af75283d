//! How far each runbook may go on its own: `observe` (it plans and reports, as a dry run),
//! `approve` (it stores its plan and a person approves or denies it) or `auto` (it acts).
//! Runbooks graduate from one to the next as their scorecard earns it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, Env};

/// Every runbook id a mode can be given (the template passes one `RUNBOOK_MODES` to every
/// function, so each function knows them all).
pub const RUNBOOKS: &[&str] = &[
    "dynamodb-capacity",
    "lambda-concurrency",
    "stored-limit",
    "dlq-redrive",
    "lambda-rollback",
    "lambda-resources",
    "stack-recovery",
    "dynamodb-backup",
    "api-errors",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Observe,
    Approve,
    Auto,
}

impl Mode {
    fn parse(text: &str) -> Option<Self> {
        match text {
            "observe" => Some(Mode::Observe),
            "approve" => Some(Mode::Approve),
            "auto" => Some(Mode::Auto),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::Observe => "observe",
            Mode::Approve => "approve",
            Mode::Auto => "auto",
        }
    }
}

const MODES: &str = "observe, approve or auto";

/// The mode of each runbook: `RUNBOOK_MODES` (a JSON object from runbook id to mode), then
/// `DEFAULT_MODE` for the runbooks it does not list. `DRY_RUN=true` is `observe` for all.
#[derive(Clone, Debug, PartialEq)]
pub struct Modes {
    default: Mode,
    by_runbook: BTreeMap<String, Mode>,
}

impl Modes {
    /// Every runbook in `mode`.
    pub fn all(mode: Mode) -> Self {
        Self {
            default: mode,
            by_runbook: BTreeMap::new(),
        }
    }

    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let dry_run = env.bool("DRY_RUN", false)?;
        let default = match env.get("DEFAULT_MODE") {
            None => None,
            Some(text) => Some(Mode::parse(&text).ok_or_else(|| ConfigError::Invalid {
                var: "DEFAULT_MODE",
                value: text.clone(),
                expected: MODES.into(),
            })?),
        };
        let by_runbook = match env.get("RUNBOOK_MODES") {
            None => BTreeMap::new(),
            Some(text) => parse_modes(&text)?,
        };
        if dry_run {
            // DRY_RUN=true is observe for every runbook; a setting that asks for more would
            // be silently overruled, so it stops the start instead.
            let conflicting = default
                .filter(|mode| *mode != Mode::Observe)
                .map(|mode| format!("DEFAULT_MODE={}", mode.name()))
                .into_iter()
                .chain(
                    by_runbook
                        .iter()
                        .filter(|(_, mode)| **mode != Mode::Observe)
                        .map(|(runbook, mode)| format!("{runbook}: {}", mode.name())),
                )
                .collect::<Vec<_>>();
            if !conflicting.is_empty() {
                return Err(ConfigError::Invalid {
                    var: "DRY_RUN",
                    value: "true".into(),
                    expected: format!(
                        "DRY_RUN=true (observe for every runbook) without modes that act ({}): unset DRY_RUN and use DEFAULT_MODE and RUNBOOK_MODES",
                        conflicting.join(", ")
                    ),
                });
            }
            return Ok(Self::all(Mode::Observe));
        }
        Ok(Self {
            // Deployed without the template (CDK, Terraform, the console), the functions plan
            // and report until someone chooses to let them act.
            default: default.unwrap_or(Mode::Observe),
            by_runbook,
        })
    }

    /// The mode of `runbook`.
    pub fn of(&self, runbook: &str) -> Mode {
        self.by_runbook
            .get(runbook)
            .copied()
            .unwrap_or(self.default)
    }
}

fn parse_modes(text: &str) -> Result<BTreeMap<String, Mode>, ConfigError> {
    let invalid = |expected: String| ConfigError::Invalid {
        var: "RUNBOOK_MODES",
        value: text.to_string(),
        expected,
    };
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|_| {
            invalid(format!(
                "a JSON object from runbook id to mode, such as {{\"dynamodb-capacity\": \"auto\"}} (modes: {MODES})"
            ))
        })?;
    object
        .into_iter()
        .map(|(runbook, mode)| {
            if !RUNBOOKS.contains(&runbook.as_str()) {
                return Err(invalid(format!(
                    "known runbook ids, got unknown runbook {runbook:?} (known: {})",
                    RUNBOOKS.join(", ")
                )));
            }
            let parsed = mode.as_str().and_then(Mode::parse).ok_or_else(|| {
                invalid(format!("{MODES} for {runbook}, got {mode} (unknown mode)"))
            })?;
            Ok((runbook, parsed))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modes(pairs: &[(&str, &str)]) -> Result<Modes, ConfigError> {
        Modes::from_env(&Env::from_pairs(pairs))
    }

    #[test]
    fn runbooks_take_their_listed_mode_or_the_default() {
        let modes = modes(&[
            ("DEFAULT_MODE", "observe"),
            (
                "RUNBOOK_MODES",
                r#"{"dynamodb-capacity": "auto", "lambda-rollback": "approve"}"#,
            ),
        ])
        .unwrap();
        assert_eq!(modes.of("dynamodb-capacity"), Mode::Auto);
        assert_eq!(modes.of("lambda-rollback"), Mode::Approve);
        assert_eq!(modes.of("dlq-redrive"), Mode::Observe);
        // Without settings, no runbook acts: the code's default is the template's, observe.
        for runbook in RUNBOOKS {
            assert_eq!(self::modes(&[]).unwrap().of(runbook), Mode::Observe);
        }
    }

    #[test]
    fn an_unknown_runbook_or_mode_stops_the_start_naming_it() {
        let err = modes(&[("RUNBOOK_MODES", r#"{"dynamo-capacity": "auto"}"#)]).unwrap_err();
        assert!(err.to_string().contains("RUNBOOK_MODES"), "{err}");
        assert!(err.to_string().contains("\\\"dynamo-capacity\\\""), "{err}");
        let err = modes(&[("RUNBOOK_MODES", r#"{"dlq-redrive": "yolo"}"#)]).unwrap_err();
        assert!(err.to_string().contains("yolo"), "{err}");
        let err = modes(&[("DEFAULT_MODE", "on")]).unwrap_err();
        assert!(err.to_string().contains("DEFAULT_MODE=\"on\""), "{err}");
        assert!(modes(&[("RUNBOOK_MODES", "auto")]).is_err());
    }

    #[test]
    fn dry_run_is_observe_and_refuses_modes_that_act() {
        let modes = modes(&[("DRY_RUN", "true")]).unwrap();
        assert_eq!(modes.of("dynamodb-capacity"), Mode::Observe);
        let err = self::modes(&[
            ("DRY_RUN", "true"),
            ("RUNBOOK_MODES", r#"{"dlq-redrive": "auto"}"#),
        ])
        .unwrap_err();
        assert!(err.to_string().contains("dlq-redrive: auto"), "{err}");
    }
}
