//! Which resources the automation may touch: those whose name matches a pattern of
//! `MANAGED_RESOURCES`, or that carry the tag `runbook:managed=true`. A forged or misrouted alarm
//! cannot make it touch anything else.

use super::refusal::{Ending, Step};
use crate::config::ConfigError;

/// The tag that marks a resource as managed by the automation.
pub const MANAGED_TAG_KEY: &str = "runbook:managed";

/// The kinds of resource a pattern of `MANAGED_RESOURCES` can name (`table:orders-*`): a
/// pattern without a kind matches a name of every kind.
pub const KINDS: [&str; 4] = ["table", "queue", "function", "stack"];

/// One pattern of `MANAGED_RESOURCES`: a glob, for one kind of resource or (untyped) for all.
#[derive(Clone, Debug, PartialEq)]
struct Pattern {
    kind: Option<&'static str>,
    glob: String,
}

impl Pattern {
    fn matches(&self, kind: &str, name: &str) -> bool {
        self.kind.is_none_or(|own| own == kind) && glob_match(&self.glob, name)
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            Some(kind) => write!(f, "{kind}:{}", self.glob),
            None => f.write_str(&self.glob),
        }
    }
}

/// Which resources may be touched: name patterns (`*` and `?` globs) from `MANAGED_RESOURCES`,
/// each for one kind (`table:`, `queue:`, `function:`, `stack:`) or untyped, or the tag
/// `runbook:managed=true` on the resource itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ManagedPolicy {
    patterns: Vec<Pattern>,
}

impl ManagedPolicy {
    /// The patterns of `MANAGED_RESOURCES`. A pattern that matches every name (`*`, `table:*`)
    /// is refused: it would let a forged or misrouted alarm change anything of its kind, which
    /// is what the tag is for, resource by resource.
    pub fn from_patterns(patterns: Vec<String>) -> Result<Self, ConfigError> {
        let invalid = |value: &str, expected: String| ConfigError::Invalid {
            var: "MANAGED_RESOURCES",
            value: value.to_string(),
            expected,
        };
        let mut parsed = Vec::with_capacity(patterns.len());
        for text in &patterns {
            let (kind, glob) = match text.split_once(':') {
                Some((kind, glob)) => {
                    let kind = KINDS
                        .iter()
                        .copied()
                        .find(|known| *known == kind)
                        .ok_or_else(|| {
                            invalid(
                                text,
                                format!(
                                    "a kind of {} before the colon, not {kind:?}",
                                    KINDS.join(", ")
                                ),
                            )
                        })?;
                    (Some(kind), glob)
                }
                None => (None, text.as_str()),
            };
            if glob.chars().all(|c| c == '*' || c == '?') {
                return Err(invalid(
                    text,
                    "patterns that name some resources, not every one (`orders-*`, `table:orders-*`): tag what else the automation may change with runbook:managed=true".into(),
                ));
            }
            parsed.push(Pattern {
                kind,
                glob: glob.to_string(),
            });
        }
        Ok(Self { patterns: parsed })
    }

    /// Whether a pattern matches the `kind` (one of `KINDS`) of resource named `name`.
    pub fn matches(&self, kind: &str, name: &str) -> bool {
        self.patterns
            .iter()
            .any(|pattern| pattern.matches(kind, name))
    }

    /// The note a report carries when the resource is managed only through untyped patterns:
    /// they let the automation change every kind of resource of such a name.
    pub fn untyped_match(&self, kind: &str, name: &str) -> Option<String> {
        let (typed, untyped): (Vec<&Pattern>, Vec<&Pattern>) = self
            .patterns
            .iter()
            .filter(|pattern| pattern.matches(kind, name))
            .partition(|pattern| pattern.kind.is_some());
        let pattern = untyped.first().filter(|_| typed.is_empty())?;
        Some(format!(
            "{kind} {name} is managed through the untyped pattern {pattern} of MANAGED_RESOURCES, which also lets the automation change queues, tables, functions and stacks of such names: write it {kind}:{}",
            pattern.glob
        ))
    }

    /// Whether the resource's tags mark it managed.
    pub fn tags_allow<'a>(&self, mut tags: impl Iterator<Item = (&'a str, &'a str)>) -> bool {
        tags.any(|(key, value)| key == MANAGED_TAG_KEY && value.eq_ignore_ascii_case("true"))
    }

    /// A resource that did not match by name: managed if its tags say so, else skipped.
    pub fn require_tagged<'a>(
        &self,
        kind: &str,
        name: &str,
        tags: impl Iterator<Item = (&'a str, &'a str)>,
    ) -> Step<()> {
        if self.matches(kind, name) || self.tags_allow(tags) {
            Ok(())
        } else {
            Err(Ending::skipped(self.refusal(kind, name)))
        }
    }

    /// The reason given when a resource is neither matched nor tagged.
    pub fn refusal(&self, kind: &str, name: &str) -> String {
        let patterns = if self.patterns.is_empty() {
            "MANAGED_RESOURCES is empty".to_string()
        } else {
            format!(
                "it matches none of MANAGED_RESOURCES ({})",
                self.patterns
                    .iter()
                    .map(Pattern::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        format!(
            "not managed: {kind} {name} is left alone because {patterns} and it has no tag {MANAGED_TAG_KEY}=true"
        )
    }
}

/// `*` matches any run of characters, `?` any one character; everything else literally.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '?' || pattern[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pattern.len() && pattern[p] == '*' {
            backtrack = Some((p, t));
            p += 1;
        } else if let Some((star, matched)) = backtrack {
            p = star + 1;
            t = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("orders", "orders"));
        assert!(glob_match("orders-*", "orders-prod"));
        assert!(glob_match("*-prod", "orders-prod"));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(glob_match("t?ble", "table"));
        assert!(!glob_match("orders-*", "orders"));
        assert!(!glob_match("orders", "orders-prod"));
        assert!(glob_match("*", ""));
    }

    #[test]
    fn managed_by_name_or_tag() {
        let policy = ManagedPolicy::from_patterns(vec!["orders-*".into()]).unwrap();
        assert!(policy.matches("table", "orders-eu"));
        assert!(!policy.matches("table", "payments"));
        assert!(policy.tags_allow([("runbook:managed", "TRUE")].into_iter()));
        assert!(!policy.tags_allow([("runbook:managed", "false"), ("team", "x")].into_iter()));
        assert!(policy.refusal("table", "payments").contains("orders-*"));
    }

    #[test]
    fn a_typed_pattern_names_one_kind_and_an_untyped_one_is_told() {
        let policy = ManagedPolicy::from_patterns(vec![
            "table:orders-*".into(),
            "queue:orders-*-dlq".into(),
            "stack:shop-*".into(),
            "checkout".into(),
        ])
        .unwrap();
        assert!(policy.matches("table", "orders-eu"));
        // The table pattern lets no queue or stack of that name be purged or cancelled.
        assert!(!policy.matches("queue", "orders-eu"));
        assert!(!policy.matches("stack", "orders-prod"));
        assert!(policy.matches("queue", "orders-eu-dlq"));
        assert!(policy.matches("stack", "shop-prod"));
        assert_eq!(policy.untyped_match("table", "orders-eu"), None);
        // Untyped: still matches every kind, and the report says so.
        assert!(policy.matches("function", "checkout") && policy.matches("stack", "checkout"));
        let note = policy.untyped_match("function", "checkout").unwrap();
        assert!(
            note.contains("untyped pattern checkout")
                && note.ends_with("write it function:checkout"),
            "{note}"
        );
        assert!(
            policy
                .refusal("queue", "x")
                .contains("table:orders-*, queue:orders-*-dlq")
        );
    }

    #[test]
    fn a_pattern_that_matches_everything_or_names_no_kind_stops_the_start() {
        for bad in ["*", "**", "?*", "table:*", "queue:", "bucket:orders-*"] {
            let err =
                ManagedPolicy::from_patterns(vec!["orders-*".into(), bad.into()]).unwrap_err();
            let message = err.to_string();
            assert!(
                message.contains(&format!("MANAGED_RESOURCES={bad:?}")),
                "{message}"
            );
        }
        assert!(ManagedPolicy::from_patterns(vec![]).is_ok());
    }
}
