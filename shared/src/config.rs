//! Configuration from environment variables, parsed and validated once at cold start.
//!
//! Every parser takes a lookup function instead of reading `std::env` directly, so tests build
//! configurations from plain maps and the binaries read the real environment.

use std::fmt::Display;
use std::str::FromStr;

/// A bad or missing setting; the message names the variable and what it accepts.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("environment variable {var} is required: {hint}")]
    Missing {
        var: &'static str,
        hint: &'static str,
    },
    #[error("environment variable {var}={value:?} is invalid: expected {expected}")]
    Invalid {
        var: &'static str,
        value: String,
        expected: String,
    },
}

type Lookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

/// Reads variables through `lookup` (`std::env::var` in the binaries, a map in tests).
pub struct Env<'a> {
    lookup: Lookup<'a>,
}

impl<'a> Env<'a> {
    pub fn new(lookup: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Self {
            lookup: Box::new(lookup),
        }
    }

    /// The process environment.
    pub fn process() -> Env<'static> {
        Env::new(|name| std::env::var(name).ok())
    }

    /// Pairs of (name, value), for tests and tools.
    pub fn from_pairs<'p>(pairs: &'p [(&'p str, &'p str)]) -> Env<'p> {
        Env::new(move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_string())
        })
    }

    /// The raw value, with surrounding whitespace removed; empty counts as unset.
    pub fn get(&self, var: &str) -> Option<String> {
        (self.lookup)(var)
            .map(|value| value.trim().to_string())
            .filter(|value| !value.is_empty())
    }

    pub fn required(&self, var: &'static str, hint: &'static str) -> Result<String, ConfigError> {
        self.get(var).ok_or(ConfigError::Missing { var, hint })
    }

    pub fn bool(&self, var: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(var) {
            None => Ok(default),
            Some(value) => match value.to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Ok(true),
                "false" | "0" | "no" => Ok(false),
                _ => Err(ConfigError::Invalid {
                    var,
                    value,
                    expected: "true or false".into(),
                }),
            },
        }
    }

    /// A number within `min..=max`.
    pub fn number<T>(&self, var: &'static str, default: T, min: T, max: T) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display + Copy,
    {
        let Some(value) = self.get(var) else {
            return Ok(default);
        };
        match value.parse::<T>() {
            Ok(parsed) if parsed >= min && parsed <= max => Ok(parsed),
            _ => Err(ConfigError::Invalid {
                var,
                value,
                expected: format!("a number from {min} to {max}"),
            }),
        }
    }

    /// A comma-separated list; blanks between commas are dropped.
    pub fn list(&self, var: &'static str) -> Vec<String> {
        self.get(var)
            .map(|value| {
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|item| !item.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_range_checked_and_name_the_variable() {
        let env = Env::from_pairs(&[("COOLDOWN_SECONDS", "-5"), ("FACTOR", "abc")]);
        let err = env
            .number("COOLDOWN_SECONDS", 900u64, 0, 86_400)
            .unwrap_err();
        assert!(err.to_string().contains("COOLDOWN_SECONDS=\"-5\""), "{err}");
        assert!(err.to_string().contains("from 0 to 86400"), "{err}");
        assert!(env.number("FACTOR", 2.0f64, 1.0, 10.0).is_err());
        assert_eq!(env.number("UNSET", 7u32, 0, 10), Ok(7));
    }

    #[test]
    fn bools_lists_and_required() {
        let env = Env::from_pairs(&[("DRY_RUN", "TRUE"), ("BAD", "maybe"), ("L", " a, ,b ,")]);
        assert_eq!(env.bool("DRY_RUN", false), Ok(true));
        assert!(
            env.bool("BAD", false)
                .unwrap_err()
                .to_string()
                .contains("BAD")
        );
        assert_eq!(env.list("L"), vec!["a", "b"]);
        let missing = env
            .required("AUDIT_TABLE", "the audit table's name")
            .unwrap_err();
        assert!(missing.to_string().contains("AUDIT_TABLE"));
    }
}
