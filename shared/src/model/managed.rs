//! Which resources the automation may touch: those whose name matches a pattern of
//! `MANAGED_RESOURCES`, or that carry the tag `runbook:managed=true`. A forged or misrouted alarm
//! cannot make it touch anything else.

use super::refusal::{Ending, Step};

/// The tag that marks a resource as managed by the automation.
pub const MANAGED_TAG_KEY: &str = "runbook:managed";

/// Which resources may be touched: name patterns (`*` and `?` globs) from `MANAGED_RESOURCES`,
/// or the tag `runbook:managed=true` on the resource itself.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ManagedPolicy {
    patterns: Vec<String>,
}

impl ManagedPolicy {
    pub fn new(patterns: Vec<String>) -> Self {
        Self { patterns }
    }

    pub fn matches_name(&self, name: &str) -> bool {
        self.patterns
            .iter()
            .any(|pattern| glob_match(pattern, name))
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
        if self.matches_name(name) || self.tags_allow(tags) {
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
                self.patterns.join(", ")
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
        let policy = ManagedPolicy::new(vec!["orders-*".into()]);
        assert!(policy.matches_name("orders-eu"));
        assert!(!policy.matches_name("payments"));
        assert!(policy.tags_allow([("runbook:managed", "TRUE")].into_iter()));
        assert!(!policy.tags_allow([("runbook:managed", "false"), ("team", "x")].into_iter()));
        assert!(policy.refusal("table", "payments").contains("orders-*"));
    }
}
