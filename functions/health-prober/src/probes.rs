//! Probe definitions (the `PROBES` contract), validated once with errors that name the probe
//! and the field.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;
use serde_json::Value;

/// One probe as configured. Field names are the contract; unknown fields are errors.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Probe {
    Http(HttpProbe),
    DynamodbTable(TableProbe),
    SqsQueue(QueueProbe),
    Stack(StackProbe),
    Alarms(AlarmsProbe),
    Lambda(LambdaProbe),
    Metric(MetricProbe),
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HttpProbe {
    pub name: String,
    pub url: String,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default)]
    pub expect_status: Option<ExpectStatus>,
    /// Conditions on the JSON body: `$.status == "healthy"`, `$.queue_depth < 100`.
    #[serde(default)]
    pub body: Vec<String>,
    #[serde(default)]
    pub max_latency_ms: Option<u64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ExpectStatus {
    One(u16),
    Any(Vec<u16>),
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableProbe {
    pub name: String,
    pub table: String,
    #[serde(default)]
    pub require_pitr: bool,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct QueueProbe {
    pub name: String,
    pub queue: String,
    #[serde(default)]
    pub max_visible: i64,
    #[serde(default)]
    pub max_age_seconds: Option<i64>,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StackProbe {
    pub name: String,
    pub stack: String,
    #[serde(default = "default_in_progress_minutes")]
    pub max_in_progress_minutes: i64,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

fn default_in_progress_minutes() -> i64 {
    60
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AlarmsProbe {
    pub name: String,
    pub prefix: String,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LambdaProbe {
    pub name: String,
    pub function: String,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

/// A CloudWatch statistic that must stay within bounds: healthy while every `period_seconds`
/// datapoint of the last `minutes` is at most `max` and at least `min`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MetricProbe {
    pub name: String,
    pub namespace: String,
    pub metric: String,
    #[serde(default)]
    pub dimensions: BTreeMap<String, String>,
    /// `Sum`, `Average`, `Maximum`, `Minimum`, `SampleCount`, or a percentile (`p99`, `p99.9`).
    pub stat: String,
    #[serde(default = "default_period_seconds")]
    pub period_seconds: i32,
    #[serde(default = "default_metric_minutes")]
    pub minutes: i64,
    #[serde(default)]
    pub max: Option<f64>,
    #[serde(default)]
    pub min: Option<f64>,
    /// What no datapoint in the window means.
    #[serde(default)]
    pub missing_data: MissingData,
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

fn default_period_seconds() -> i32 {
    60
}

fn default_metric_minutes() -> i64 {
    5
}

/// What a metric probe without data in its window is.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MissingData {
    Healthy,
    #[default]
    Unhealthy,
}

const STATISTICS: [&str; 5] = ["Sum", "Average", "Maximum", "Minimum", "SampleCount"];

/// Whether `stat` is a CloudWatch percentile, `p0` to `p100` (`p99.9`).
fn is_percentile(stat: &str) -> bool {
    stat.strip_prefix('p')
        .and_then(|number| number.parse::<f64>().ok())
        .is_some_and(|number| (0.0..=100.0).contains(&number))
}

/// A comparison in a body condition.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Operator {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// `$.path op literal`, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Condition {
    pub text: String,
    pub path: Vec<PathStep>,
    pub operator: Operator,
    pub expected: Value,
}

#[derive(Clone, Debug, PartialEq)]
pub enum PathStep {
    Key(String),
    Index(usize),
}

impl Condition {
    pub fn parse(text: &str) -> Result<Self, String> {
        const OPERATORS: [(&str, Operator); 6] = [
            ("==", Operator::Eq),
            ("!=", Operator::Ne),
            ("<=", Operator::Le),
            (">=", Operator::Ge),
            ("<", Operator::Lt),
            (">", Operator::Gt),
        ];
        let (position, symbol, operator) = OPERATORS
            .iter()
            .filter_map(|(symbol, operator)| {
                text.find(symbol)
                    .map(|position| (position, *symbol, *operator))
            })
            .min_by_key(|(position, symbol, _)| (*position, usize::MAX - symbol.len()))
            .ok_or_else(|| format!("{text:?} has no comparison (==, !=, <, <=, >, >=)"))?;
        let left = text[..position].trim();
        let right = text[position + symbol.len()..].trim();
        let path = parse_path(left).ok_or_else(|| {
            format!("{text:?}: the left side must be a JSON path like $.status or $.items[0].id")
        })?;
        // A 'string' in single quotes too: a condition written that way needs no escaped
        // double quote inside the probe's JSON, which `sam deploy`'s parser would unescape.
        let expected = match right.strip_prefix('\'').and_then(|rest| rest.strip_suffix('\'')) {
            Some(string) if !string.contains('\'') => Value::String(string.to_string()),
            _ => serde_json::from_str(right)
                .map_err(|_| format!("{text:?}: the right side must be a JSON value (a \"string\" in double quotes or a 'string' in single quotes, a number, true, false or null)"))?,
        };
        if matches!(
            operator,
            Operator::Lt | Operator::Le | Operator::Gt | Operator::Ge
        ) && !expected.is_number()
        {
            return Err(format!("{text:?}: {symbol} compares numbers"));
        }
        Ok(Self {
            text: text.to_string(),
            path,
            operator,
            expected,
        })
    }

    /// Whether the body satisfies the condition, and the value found at the path.
    pub fn check<'a>(&self, body: &'a Value) -> (bool, Option<&'a Value>) {
        let found = self.path.iter().try_fold(body, |value, step| match step {
            PathStep::Key(key) => value.get(key),
            PathStep::Index(index) => value.get(index),
        });
        let ok = match (found, self.operator) {
            (None, _) => false,
            (Some(value), Operator::Eq) => same(value, &self.expected),
            (Some(value), Operator::Ne) => !same(value, &self.expected),
            (Some(value), operator) => match (value.as_f64(), self.expected.as_f64()) {
                (Some(left), Some(right)) => match operator {
                    Operator::Lt => left < right,
                    Operator::Le => left <= right,
                    Operator::Gt => left > right,
                    _ => left >= right,
                },
                _ => false,
            },
        };
        (ok, found)
    }
}

/// Equality where 1 and 1.0 are the same number.
fn same(left: &Value, right: &Value) -> bool {
    match (left.as_f64(), right.as_f64()) {
        (Some(l), Some(r)) => l == r,
        _ => left == right,
    }
}

fn parse_path(text: &str) -> Option<Vec<PathStep>> {
    let rest = text.strip_prefix('$')?;
    let mut steps = Vec::new();
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                let mut key = String::new();
                while let Some(&next) = chars.peek() {
                    if next == '.' || next == '[' {
                        break;
                    }
                    key.push(next);
                    chars.next();
                }
                if key.is_empty() {
                    return None;
                }
                steps.push(PathStep::Key(key));
            }
            '[' => {
                let digits: String = chars.by_ref().take_while(|c| *c != ']').collect();
                steps.push(PathStep::Index(digits.parse().ok()?));
            }
            _ => return None,
        }
    }
    Some(steps)
}

const METHODS: [&str; 4] = ["GET", "HEAD", "POST", "OPTIONS"];

impl Probe {
    pub fn name(&self) -> &str {
        match self {
            Probe::Http(p) => &p.name,
            Probe::DynamodbTable(p) => &p.name,
            Probe::SqsQueue(p) => &p.name,
            Probe::Stack(p) => &p.name,
            Probe::Alarms(p) => &p.name,
            Probe::Lambda(p) => &p.name,
            Probe::Metric(p) => &p.name,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Probe::Http(_) => "http",
            Probe::DynamodbTable(_) => "dynamodb_table",
            Probe::SqsQueue(_) => "sqs_queue",
            Probe::Stack(_) => "stack",
            Probe::Alarms(_) => "alarms",
            Probe::Lambda(_) => "lambda",
            Probe::Metric(_) => "metric",
        }
    }

    /// What the probe looks at: the URL, table, queue, stack, alarm prefix, function or metric.
    pub fn target(&self) -> &str {
        match self {
            Probe::Http(p) => &p.url,
            Probe::DynamodbTable(p) => &p.table,
            Probe::SqsQueue(p) => &p.queue,
            Probe::Stack(p) => &p.stack,
            Probe::Alarms(p) => &p.prefix,
            Probe::Lambda(p) => &p.function,
            Probe::Metric(p) => &p.metric,
        }
    }

    pub fn timeout_ms(&self) -> Option<u64> {
        match self {
            Probe::Http(p) => p.timeout_ms,
            Probe::DynamodbTable(p) => p.timeout_ms,
            Probe::SqsQueue(p) => p.timeout_ms,
            Probe::Stack(p) => p.timeout_ms,
            Probe::Alarms(p) => p.timeout_ms,
            Probe::Lambda(p) => p.timeout_ms,
            Probe::Metric(p) => p.timeout_ms,
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.name().trim().is_empty() {
            return Err("\"name\" must not be empty".into());
        }
        if self.target().trim().is_empty() {
            return Err(format!("the {} target must not be empty", self.kind()));
        }
        if self.timeout_ms() == Some(0) {
            return Err("\"timeout_ms\" must be above 0".into());
        }
        match self {
            Probe::Http(http) => {
                if !(http.url.starts_with("http://") || http.url.starts_with("https://")) {
                    return Err(format!(
                        "\"url\" must start with http:// or https://, got {:?}",
                        http.url
                    ));
                }
                if let Some(method) = &http.method
                    && !METHODS.contains(&method.to_ascii_uppercase().as_str())
                {
                    return Err(format!(
                        "\"method\" must be one of {}, got {method:?}",
                        METHODS.join(", ")
                    ));
                }
                for status in http.expected_statuses() {
                    if !(100..=599).contains(&status) {
                        return Err(format!("\"expect_status\" {status} is not an HTTP status"));
                    }
                }
                for condition in &http.body {
                    Condition::parse(condition).map_err(|err| format!("\"body\": {err}"))?;
                }
            }
            Probe::SqsQueue(queue)
                if queue.max_visible < 0 || queue.max_age_seconds.is_some_and(|age| age < 0) =>
            {
                return Err("\"max_visible\" and \"max_age_seconds\" must not be negative".into());
            }
            Probe::Stack(stack) if stack.max_in_progress_minutes < 1 => {
                return Err("\"max_in_progress_minutes\" must be at least 1".into());
            }
            Probe::Metric(metric) => metric.validate()?,
            _ => {}
        }
        Ok(())
    }
}

impl MetricProbe {
    fn validate(&self) -> Result<(), String> {
        if self.namespace.trim().is_empty() {
            return Err("\"namespace\" must not be empty".into());
        }
        if !STATISTICS.contains(&self.stat.as_str()) && !is_percentile(&self.stat) {
            return Err(format!(
                "\"stat\" must be one of {} or a percentile like p99, got {:?}",
                STATISTICS.join(", "),
                self.stat
            ));
        }
        // CloudWatch's periods: 1, 5, 10, 30 or a multiple of 60 seconds.
        if !(matches!(self.period_seconds, 1 | 5 | 10 | 30)
            || (self.period_seconds >= 60 && self.period_seconds % 60 == 0))
        {
            return Err(format!(
                "\"period_seconds\" must be 1, 5, 10, 30 or a multiple of 60, got {}",
                self.period_seconds
            ));
        }
        if !(1..=1440).contains(&self.minutes) || self.minutes * 60 < i64::from(self.period_seconds)
        {
            return Err(format!(
                "\"minutes\" must be from 1 to 1440 and cover at least one period, got {}",
                self.minutes
            ));
        }
        match (self.min, self.max) {
            (None, None) => Err("give \"max\", \"min\" or both".into()),
            (Some(min), Some(max)) if min > max => {
                Err(format!("\"min\" {min} is above \"max\" {max}"))
            }
            _ => Ok(()),
        }
    }
}

impl HttpProbe {
    pub fn expected_statuses(&self) -> Vec<u16> {
        match &self.expect_status {
            None => vec![200],
            Some(ExpectStatus::One(status)) => vec![*status],
            Some(ExpectStatus::Any(statuses)) => statuses.clone(),
        }
    }

    pub fn conditions(&self) -> Vec<Condition> {
        self.body
            .iter()
            .filter_map(|text| Condition::parse(text).ok())
            .collect()
    }
}

/// Parses and validates a probe list (`PROBES`, or a manual payload's `probes`); `source`
/// names where it came from in the errors.
pub fn parse_probes(value: &Value, source: &str) -> Result<Vec<Probe>, String> {
    let Some(items) = value.as_array() else {
        return Err(format!("{source} must be a JSON array of probes"));
    };
    let mut probes = Vec::with_capacity(items.len());
    let mut names = HashSet::new();
    for (index, item) in items.iter().enumerate() {
        let label = match item.get("name").and_then(Value::as_str) {
            Some(name) => format!("{source}[{index}] (probe {name:?})"),
            None => format!("{source}[{index}]"),
        };
        let probe: Probe = serde_json::from_value(item.clone()).map_err(|err| {
            let text = err.to_string();
            if text.starts_with("unknown variant") {
                format!("{label}: unknown kind: {text}")
            } else {
                format!("{label}: {text}")
            }
        })?;
        probe.validate().map_err(|err| format!("{label}: {err}"))?;
        if !names.insert(probe.name().to_string()) {
            return Err(format!(
                "{label}: the name {:?} is used by an earlier probe; names must be unique",
                probe.name()
            ));
        }
        probes.push(probe);
    }
    Ok(probes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn conditions_parse_and_check() {
        let body =
            json!({"status": "healthy", "queue_depth": 12, "items": [{"id": 7}], "ok": true});
        for (text, ok) in [
            (r#"$.status == "healthy""#, true),
            ("$.status == 'healthy'", true),
            ("$.status != 'healthy'", false),
            ("$.status == ''", false),
            (r#"$.status != "healthy""#, false),
            ("$.queue_depth < 100", true),
            ("$.queue_depth >= 12.0", true),
            ("$.queue_depth > 12", false),
            ("$.items[0].id == 7", true),
            ("$.ok == true", true),
            ("$.missing == 1", false),
        ] {
            let condition = Condition::parse(text).unwrap();
            assert_eq!(condition.check(&body).0, ok, "{text}");
        }
        assert!(
            Condition::parse("status == 1")
                .unwrap_err()
                .contains("JSON path")
        );
        assert!(
            Condition::parse("$.status == healthy")
                .unwrap_err()
                .contains("JSON value")
        );
        assert!(
            Condition::parse("$.status == 'it's'")
                .unwrap_err()
                .contains("JSON value")
        );
        assert!(
            Condition::parse(r#"$.status < "a""#)
                .unwrap_err()
                .contains("compares numbers")
        );
        assert!(
            Condition::parse("$.status")
                .unwrap_err()
                .contains("no comparison")
        );
    }

    #[test]
    fn errors_name_the_probe_and_the_field() {
        let parse = |value: Value| parse_probes(&value, "PROBES").unwrap_err();
        assert!(parse(json!({})).contains("must be a JSON array"));
        let unknown_field =
            parse(json!([{"name": "api", "kind": "http", "url": "http://x", "urll": 1}]));
        assert!(
            unknown_field.starts_with("PROBES[0] (probe \"api\"): unknown field `urll`"),
            "{unknown_field}"
        );
        let unknown_kind = parse(json!([{"name": "q", "kind": "redis"}]));
        assert!(
            unknown_kind.contains("unknown kind") && unknown_kind.contains("`http`"),
            "{unknown_kind}"
        );
        assert!(
            parse(json!([{"name": "t", "kind": "dynamodb_table"}]))
                .contains("missing field `table`")
        );
        let duplicate = parse(json!([
            {"name": "t", "kind": "dynamodb_table", "table": "a"},
            {"name": "t", "kind": "alarms", "prefix": "p"}
        ]));
        assert!(
            duplicate.starts_with("PROBES[1] (probe \"t\")") && duplicate.contains("unique"),
            "{duplicate}"
        );
        assert!(
            parse(json!([{"name": "h", "kind": "http", "url": "ftp://x"}])).contains("\"url\"")
        );
        assert!(
            parse(json!([{"name": "h", "kind": "http", "url": "http://x", "body": ["$.a ~ 1"]}]))
                .contains("\"body\"")
        );
        assert!(
            parse(json!([{"name": "h", "kind": "http", "url": "http://x", "expect_status": 999}]))
                .contains("expect_status")
        );
        let ok = parse_probes(
            &json!([{"name": "h", "kind": "http", "url": "http://x", "expect_status": [200, 204]}]),
            "PROBES",
        )
        .unwrap();
        let Probe::Http(http) = &ok[0] else { panic!() };
        assert_eq!(http.expected_statuses(), vec![200, 204]);
    }
}
