//! The likely causes of an API's 5xx, ranked from the evidence of the functions behind it; pure,
//! so the ranking is tested without AWS.

use runbook_shared::model::Evidence;
use serde::Serialize;

/// Of the integration timeout, how close a function's longest duration must come for the
/// timeout to count as a cause (API Gateway answers 504 at the timeout, whatever the function
/// does afterwards).
pub const NEAR_TIMEOUT: f64 = 0.9;

/// The changes that count as a fresh deploy.
const DEPLOYS: [&str; 3] = ["version_published", "alias_moved", "configuration_updated"];

/// A function behind the stage, and what was read about it.
#[derive(Clone, Debug)]
pub struct Suspect {
    pub function: String,
    /// The alias or version the integration invokes.
    pub qualifier: Option<String>,
    /// The routes that reach it (`GET /orders`).
    pub routes: Vec<String>,
    /// The shortest integration timeout in front of it.
    pub integration_timeout_ms: i64,
    pub evidence: Evidence,
    /// The tables its configuration names (`*TABLE*` environment variables), with theirs.
    pub tables: Vec<(String, Evidence)>,
}

impl Suspect {
    /// `checkout:live`, or `checkout`.
    pub fn name(&self) -> String {
        match &self.qualifier {
            Some(qualifier) => format!("{}:{qualifier}", self.function),
            None => self.function.clone(),
        }
    }

    /// Behind an alias, which lambda-rollback can move (not a version number or `$LATEST`).
    pub fn alias(&self) -> Option<&str> {
        self.qualifier
            .as_deref()
            .filter(|q| *q != "$LATEST" && !q.chars().all(|c| c.is_ascii_digit()))
    }
}

/// What a cause calls for.
#[derive(Clone, Debug, PartialEq)]
pub enum Remedy {
    /// lambda-rollback on this alias, in-process.
    Rollback { function: String, alias: String },
    /// limit-scaler's lambda-concurrency, by a handoff.
    Concurrency { function: String },
    /// limit-scaler's dynamodb-capacity, by a handoff.
    Capacity {
        table: String,
        read: bool,
        write: bool,
    },
    /// Nothing this project automates; `advice` says what a person does.
    Person { advice: String },
}

/// One likely cause, with its figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Cause {
    pub rank: usize,
    /// `fresh_deploy`, `function_throttled`, `table_throttled`, `integration_timeout`,
    /// `function_errors`.
    pub cause: &'static str,
    /// The function or table it is about.
    pub target: String,
    pub figures: String,
    /// What it calls for: `lambda-rollback`, `limit-scaler/dynamodb-capacity`, or what a person
    /// does.
    pub remedy: String,
    #[serde(skip)]
    pub then: Remedy,
}

/// The window's figure of a metric in the evidence (0 when absent).
fn figure(evidence: &Evidence, name: &str) -> f64 {
    evidence
        .metrics
        .get(name)
        .and_then(|figures| figures.window)
        .unwrap_or(0.0)
}

/// The causes, most likely first: a fresh deploy with errors, then throttling (of a function
/// or of a table behind it), then the integration timeout, then plain errors; within one kind,
/// the larger figure first.
// Over 80 lines: one ranking table: each cause's rule beside its priority, so the order of causes
// reads in one place.
pub fn rank(suspects: &[Suspect]) -> Vec<Cause> {
    // (priority, magnitude, cause)
    let mut found: Vec<(u8, f64, Cause)> = Vec::new();
    let mut add = |priority, magnitude, cause: &'static str, target: String, figures, then| {
        found.push((
            priority,
            magnitude,
            Cause {
                rank: 0,
                cause,
                target,
                figures,
                remedy: String::new(),
                then,
            },
        ));
    };
    for suspect in suspects {
        let evidence = &suspect.evidence;
        let name = suspect.name();
        let errors = figure(evidence, "errors");
        let invocations = figure(evidence, "invocations");
        let throttles = figure(evidence, "throttles");
        let longest = figure(evidence, "duration_max_ms");
        let logs = evidence.logs.as_ref();
        let deploys: Vec<&str> = evidence
            .recent_changes
            .iter()
            .flatten()
            .filter(|change| DEPLOYS.contains(&change.kind))
            .map(|change| change.what.as_str())
            .collect();
        if errors > 0.0 && !deploys.is_empty() {
            let then = match suspect.alias() {
                Some(alias) => Remedy::Rollback {
                    function: suspect.function.clone(),
                    alias: alias.to_string(),
                },
                None => Remedy::Person {
                    advice: format!(
                        "the API invokes {name} without an alias, so there is no earlier version to route back to: redeploy the previous code by hand (left to people on purpose)"
                    ),
                },
            };
            add(
                0,
                errors,
                "fresh_deploy",
                name.clone(),
                format!(
                    "{errors} errors in {invocations} invocations since: {}",
                    deploys.join("; ")
                ),
                then,
            );
        }
        if throttles > 0.0 {
            add(
                1,
                throttles,
                "function_throttled",
                suspect.function.clone(),
                format!("{throttles} throttles in {invocations} invocations"),
                Remedy::Concurrency {
                    function: suspect.function.clone(),
                },
            );
        }
        for (table, table_evidence) in &suspect.tables {
            let read = figure(table_evidence, "read_throttle_events");
            let write = figure(table_evidence, "write_throttle_events");
            if read + write > 0.0 {
                add(
                    1,
                    read + write,
                    "table_throttled",
                    table.clone(),
                    format!(
                        "{read} read and {write} write throttle events on {table}, which {name} uses"
                    ),
                    Remedy::Capacity {
                        table: table.clone(),
                        read: read > 0.0,
                        write: write > 0.0,
                    },
                );
            }
        }
        let limit = suspect.integration_timeout_ms as f64;
        let timeouts = logs.map_or(0, |logs| logs.timeouts);
        if longest >= NEAR_TIMEOUT * limit || timeouts > 0 {
            add(
                2,
                longest,
                "integration_timeout",
                name.clone(),
                format!(
                    "longest duration {longest} ms against the integration's {limit} ms; {timeouts} timeouts in the logs"
                ),
                Remedy::Person {
                    advice: format!(
                        "API Gateway answers 504 at {limit} ms whatever the function's own timeout, so a longer timeout does not help: make {name} faster, or move the slow work behind a queue"
                    ),
                },
            );
        }
        if errors > 0.0 {
            let top = logs.and_then(|logs| logs.top_errors.first()).map_or_else(
                || "no ERROR lines read".to_string(),
                |top| format!("top error ({}×): {}", top.count, top.message),
            );
            add(
                3,
                errors,
                "function_errors",
                name.clone(),
                format!("{errors} errors in {invocations} invocations; {top}"),
                Remedy::Person {
                    // Deploys that could not be read are not known to be absent.
                    advice: if evidence.recent_changes.is_some() {
                        format!(
                            "{name} fails without a deploy, throttling or a timeout to blame: read its top errors, and check what it calls"
                        )
                    } else {
                        format!(
                            "{name} fails, and its recent deploys could not be read (the diagnosis names the read): check whether it was just deployed, where a rollback may be the fix, then read its top errors"
                        )
                    },
                },
            );
        }
    }
    found.sort_by(|(p1, m1, c1), (p2, m2, c2)| {
        p1.cmp(p2)
            .then(m2.total_cmp(m1))
            .then_with(|| c1.target.cmp(&c2.target))
    });
    found
        .into_iter()
        .enumerate()
        .map(|(index, (_, _, mut cause))| {
            cause.rank = index + 1;
            cause.remedy = match &cause.then {
                Remedy::Rollback { .. } => "lambda-rollback".into(),
                Remedy::Concurrency { .. } => "limit-scaler/lambda-concurrency".into(),
                Remedy::Capacity { .. } => "limit-scaler/dynamodb-capacity".into(),
                Remedy::Person { advice } => advice.clone(),
            };
            cause
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use runbook_shared::model::{Figures, Logs, RecentChange};

    fn evidence(figures: &[(&str, f64)], deployed: bool) -> Evidence {
        Evidence {
            metrics: figures
                .iter()
                .map(|(name, value)| {
                    (
                        name.to_string(),
                        Figures {
                            window: Some(*value),
                            previous: None,
                        },
                    )
                })
                .collect(),
            recent_changes: Some(if deployed {
                vec![RecentChange {
                    at: "2026-11-30T08:00:00Z".into(),
                    kind: "version_published",
                    what: "version 2 of f published".into(),
                }]
            } else {
                Vec::new()
            }),
            ..Evidence::default()
        }
    }

    fn suspect(function: &str, qualifier: Option<&str>, evidence: Evidence) -> Suspect {
        Suspect {
            function: function.into(),
            qualifier: qualifier.map(str::to_string),
            routes: vec!["GET /".into()],
            integration_timeout_ms: 29_000,
            evidence,
            tables: Vec::new(),
        }
    }

    #[test]
    fn a_fresh_deploy_with_errors_ranks_first_and_rolls_back_only_behind_an_alias() {
        let deployed = evidence(&[("errors", 3.0), ("throttles", 50.0)], true);
        let causes = rank(&[suspect("f", Some("live"), deployed.clone())]);
        let kinds: Vec<&str> = causes.iter().map(|c| c.cause).collect();
        assert_eq!(
            kinds,
            ["fresh_deploy", "function_throttled", "function_errors"]
        );
        assert_eq!(
            causes[0].then,
            Remedy::Rollback {
                function: "f".into(),
                alias: "live".into()
            }
        );
        assert_eq!(causes[0].rank, 1);
        for qualifier in [None, Some("7"), Some("$LATEST")] {
            let causes = rank(&[suspect("f", qualifier, deployed.clone())]);
            assert!(
                matches!(causes[0].then, Remedy::Person { .. }),
                "{qualifier:?}: {causes:?}"
            );
        }
        // Errors without a deploy are not a deploy's fault.
        let causes = rank(&[suspect(
            "f",
            Some("live"),
            evidence(&[("errors", 3.0)], false),
        )]);
        assert_eq!(causes[0].cause, "function_errors");
        let Remedy::Person { advice } = &causes[0].then else {
            panic!("{causes:?}")
        };
        assert!(advice.contains("fails without a deploy"), "{advice}");
        // Deploys that could not be read: no claim that there were none.
        let mut unread = evidence(&[("errors", 3.0)], false);
        unread.recent_changes = None;
        let causes = rank(&[suspect("f", Some("live"), unread)]);
        assert_eq!(causes[0].cause, "function_errors");
        let Remedy::Person { advice } = &causes[0].then else {
            panic!("{causes:?}")
        };
        assert!(
            advice.contains("its recent deploys could not be read")
                && !advice.contains("without a deploy"),
            "{advice}"
        );
    }

    #[test]
    fn throttling_of_a_table_behind_a_function_hands_off_the_throttled_sides() {
        let mut behind = suspect("f", None, evidence(&[("invocations", 10.0)], false));
        behind.tables = vec![
            ("quiet".into(), evidence(&[], false)),
            (
                "orders".into(),
                evidence(&[("write_throttle_events", 4.0)], false),
            ),
        ];
        let causes = rank(&[behind]);
        assert_eq!(causes.len(), 1, "{causes:?}");
        assert_eq!(
            causes[0].then,
            Remedy::Capacity {
                table: "orders".into(),
                read: false,
                write: true
            }
        );
        assert_eq!(causes[0].remedy, "limit-scaler/dynamodb-capacity");
    }

    #[test]
    fn a_duration_near_the_integration_timeout_or_logged_timeouts_is_a_timeout() {
        let near = rank(&[suspect(
            "f",
            None,
            evidence(&[("duration_max_ms", 26_500.0)], false),
        )]);
        assert_eq!(near[0].cause, "integration_timeout");
        let far = rank(&[suspect(
            "f",
            None,
            evidence(&[("duration_max_ms", 20_000.0)], false),
        )]);
        assert!(far.is_empty(), "{far:?}");
        let mut logged = evidence(&[], false);
        logged.logs = Some(Logs {
            timeouts: 2,
            ..Logs::default()
        });
        assert_eq!(
            rank(&[suspect("f", None, logged)])[0].cause,
            "integration_timeout"
        );
    }

    #[test]
    fn within_one_kind_the_larger_figure_ranks_first() {
        let causes = rank(&[
            suspect("a", None, evidence(&[("throttles", 2.0)], false)),
            suspect("b", None, evidence(&[("throttles", 9.0)], false)),
        ]);
        let targets: Vec<&str> = causes.iter().map(|c| c.target.as_str()).collect();
        assert_eq!(targets, ["b", "a"]);
    }
}
