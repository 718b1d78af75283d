//! The evidence every report about a Lambda function (or a table or queue behind one) carries in
//! `diagnosis.evidence`, so that the person reading it need not open three consoles: the errors
//! in the function's logs, the figures the seed runbooks look at (this window and the one before),
//! and what changed recently (versions, aliases, configuration, the owning stack's events).
//!
//! Best effort and bounded: the reads run at once, each within `READ_TIMEOUT`; one that fails or
//! runs out of time is named in `errors` and never fails the run. Log text is normalised and
//! truncated, never copied whole: payloads may hold personal data.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::aws::AwsError;
use crate::config::{ConfigError, Env};
use crate::trigger::AlarmTrigger;

/// How long the reads may take, together (they run at once, and a read that follows another
/// shares its time): evidence adds about this much to a run, at most.
pub const READ_TIMEOUT: Duration = Duration::from_millis(1_000);
/// The longest log message text kept.
pub const MESSAGE_CHARS: usize = 200;
/// How many distinct error messages are listed.
const TOP_ERRORS: usize = 5;
/// The log lines worth reading: errors, timeouts, out-of-memory, denials, throttling. AWS
/// matches any of the terms; the lines are classified here again, whatever the filter let by.
const LOG_PATTERN: &str = "?ERROR ?FATAL ?error ?timeout ?\"Task timed out\" ?\"signal: killed\" ?OutOfMemory ?AccessDenied ?AccessDeniedException ?ThrottlingException ?TooManyRequestsException ?ProvisionedThroughputExceededException ?\"Rate exceeded\"";

/// EVIDENCE_LOOKBACK_MINUTES, EVIDENCE_MAX_EVENTS and ROLLBACK_WINDOW_MINUTES.
#[derive(Clone, Debug, PartialEq)]
pub struct EvidenceConfig {
    /// The longest window logs and metrics are read over (a manual run reads the last this many).
    pub lookback_minutes: i64,
    /// The most log events read per run.
    pub max_events: usize,
    /// How far back recent changes are listed (and a deploy counts as fresh for a rollback).
    pub recent_changes_minutes: i64,
}

impl EvidenceConfig {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            lookback_minutes: env.number("EVIDENCE_LOOKBACK_MINUTES", 15i64, 1, 1_440)?,
            max_events: env.number("EVIDENCE_MAX_EVENTS", 1_000usize, 1, 10_000)?,
            recent_changes_minutes: env.number("ROLLBACK_WINDOW_MINUTES", 60i64, 1, 10_080)?,
        })
    }
}

/// What the evidence is about.
#[derive(Clone, Debug, PartialEq)]
pub enum Subject {
    /// A function, or one alias or version of it (`qualifier`).
    Function {
        name: String,
        qualifier: Option<String>,
    },
    Table {
        table: String,
        index: Option<String>,
    },
    Queue {
        name: String,
    },
}

/// The clients evidence is read with; a function without one gets no evidence of that kind.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub cloudwatch: &'a aws_sdk_cloudwatch::Client,
    pub logs: Option<&'a aws_sdk_cloudwatchlogs::Client>,
    pub lambda: Option<&'a aws_sdk_lambda::Client>,
    pub cloudformation: Option<&'a aws_sdk_cloudformation::Client>,
}

/// `diagnosis.evidence`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Evidence {
    /// The window logs and metrics were read over; `previous` in the figures is the one before.
    pub from: String,
    pub to: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logs: Option<Logs>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, Figures>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_changes: Option<Vec<RecentChange>>,
    /// The reads that failed or ran out of time, each with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

/// What the function's logs show over the window.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Logs {
    pub log_group: String,
    pub events_read: usize,
    /// Whether every matching event of the window was read (not cut at EVIDENCE_MAX_EVENTS).
    pub complete: bool,
    pub top_errors: Vec<ErrorCount>,
    pub timeouts: usize,
    pub out_of_memory: usize,
    pub access_denied: usize,
    pub throttling: usize,
}

/// One normalised error message and how often it was logged.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorCount {
    pub message: String,
    pub count: usize,
}

/// One figure over the window and over the window before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    pub window: Option<f64>,
    pub previous: Option<f64>,
}

/// Something that changed recently, with when.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RecentChange {
    pub at: String,
    pub kind: &'static str,
    pub what: String,
}

/// The window evidence is read over: the span the alarm evaluated, at most the lookback, or the
/// last `lookback_minutes` for a run without one.
pub fn window(
    alarm: Option<&AlarmTrigger>,
    config: &EvidenceConfig,
    now: DateTime<Utc>,
) -> (DateTime<Utc>, DateTime<Utc>) {
    let lookback = chrono::Duration::minutes(config.lookback_minutes);
    match alarm.and_then(|alarm| alarm.window) {
        Some((from, to)) if to > from => (from.max(to - lookback), to),
        _ => (now - lookback, now),
    }
}

/// Reads the evidence about `subject` over `from..to`; never fails (see `errors`).
pub async fn gather(
    sources: Sources<'_>,
    subject: &Subject,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    config: &EvidenceConfig,
) -> Evidence {
    let mut evidence = Evidence {
        from: crate::audit::timestamp(from),
        to: crate::audit::timestamp(to),
        ..Evidence::default()
    };
    let deadline = tokio::time::Instant::now() + READ_TIMEOUT;
    let metrics = bounded(
        "metrics",
        deadline,
        metrics(sources.cloudwatch, subject, from, to),
    );
    let Subject::Function { name, .. } = subject else {
        match metrics.await {
            Ok(figures) => evidence.metrics = figures,
            Err(err) => evidence.errors.push(err),
        }
        return evidence;
    };
    let since = to - chrono::Duration::minutes(config.recent_changes_minutes);
    let function = async {
        let Some(lambda) = sources.lambda else {
            return (None, None);
        };
        let configuration = bounded("configuration", deadline, async {
            lambda
                .get_function_configuration()
                .function_name(name)
                .send()
                .await
                .map_err(|err| {
                    AwsError::from_sdk(
                        "lambda:GetFunctionConfiguration",
                        &format!("function {name}"),
                        &err,
                    )
                })
        })
        .await;
        let configuration = match configuration {
            Ok(configuration) => configuration,
            Err(err) => return (Some(Err(err.clone())), Some(Err(err))),
        };
        let log_group = configuration
            .logging_config()
            .and_then(|logging| logging.log_group())
            .map_or_else(|| format!("/aws/lambda/{name}"), str::to_string);
        let logs = async {
            let logs_client = sources.logs?;
            Some(
                read_logs(
                    logs_client,
                    &log_group,
                    (from, to),
                    config.max_events,
                    deadline,
                )
                .await,
            )
        };
        let changes = Box::pin(bounded(
            "recent changes",
            deadline,
            recent_changes(
                lambda,
                sources.cloudformation,
                name,
                configuration.last_modified(),
                since,
            ),
        ));
        let (logs, changes) = tokio::join!(Box::pin(logs), changes);
        (logs, Some(changes))
    };
    let (metrics, (logs, changes)) = tokio::join!(Box::pin(metrics), Box::pin(function));
    match metrics {
        Ok(figures) => evidence.metrics = figures,
        Err(err) => evidence.errors.push(err),
    }
    match logs {
        Some(Ok(logs)) => evidence.logs = Some(logs),
        Some(Err(err)) => evidence.errors.push(err),
        None => {}
    }
    match changes {
        Some(Ok(changes)) => evidence.recent_changes = Some(changes),
        Some(Err(err)) if !evidence.errors.contains(&err) => evidence.errors.push(err),
        _ => {}
    }
    evidence
}

/// `read` by `deadline`, its failure or its running out of time as one line.
async fn bounded<T>(
    what: &str,
    deadline: tokio::time::Instant,
    read: impl Future<Output = Result<T, AwsError>>,
) -> Result<T, String> {
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(format!("{what}: {err}")),
        Err(_) => Err(format!(
            "{what}: not read within {} ms",
            READ_TIMEOUT.as_millis()
        )),
    }
}

/// What one GetMetricData call reads about a subject: its namespace and dimensions, and each
/// figure as (name in the report, metric, statistic).
struct Queries {
    namespace: &'static str,
    dimensions: Vec<(String, String)>,
    figures: Vec<(&'static str, &'static str, &'static str)>,
}

fn queries(subject: &Subject) -> Queries {
    let (namespace, dimensions, figures) = match subject {
        Subject::Function { name, qualifier } => {
            let mut dimensions = vec![("FunctionName".to_string(), name.clone())];
            if let Some(qualifier) = qualifier {
                dimensions.push(("Resource".into(), format!("{name}:{qualifier}")));
            }
            (
                "AWS/Lambda",
                dimensions,
                vec![
                    ("errors", "Errors", "Sum"),
                    ("invocations", "Invocations", "Sum"),
                    ("throttles", "Throttles", "Sum"),
                    ("duration_p99_ms", "Duration", "p99"),
                    ("duration_max_ms", "Duration", "Maximum"),
                ],
            )
        }
        Subject::Table { table, index } => {
            let mut dimensions = vec![("TableName".to_string(), table.clone())];
            if let Some(index) = index {
                dimensions.push(("GlobalSecondaryIndexName".into(), index.clone()));
            }
            (
                "AWS/DynamoDB",
                dimensions,
                vec![
                    ("consumed_read_units", "ConsumedReadCapacityUnits", "Sum"),
                    ("consumed_write_units", "ConsumedWriteCapacityUnits", "Sum"),
                    ("read_throttle_events", "ReadThrottleEvents", "Sum"),
                    ("write_throttle_events", "WriteThrottleEvents", "Sum"),
                ],
            )
        }
        Subject::Queue { name } => (
            "AWS/SQS",
            vec![("QueueName".to_string(), name.clone())],
            vec![
                (
                    "visible_max",
                    "ApproximateNumberOfMessagesVisible",
                    "Maximum",
                ),
                (
                    "oldest_age_seconds_max",
                    "ApproximateAgeOfOldestMessage",
                    "Maximum",
                ),
            ],
        ),
    };
    Queries {
        namespace,
        dimensions,
        figures,
    }
}

/// The subject's figures over the window and the one before: one GetMetricData call whose
/// period is the window, so each figure has (at most) one datapoint per window.
async fn metrics(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    subject: &Subject,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<BTreeMap<String, Figures>, AwsError> {
    let Queries {
        namespace,
        dimensions,
        figures,
    } = queries(subject);
    // CloudWatch's periods beyond a minute are multiples of 60 s, and it rounds the start of a
    // query down to the minute: the windows end on the next whole minute, so that each
    // datapoint falls in the window it is counted in.
    let period = ((to - from).num_seconds().max(60) + 59) / 60 * 60;
    let end = (to.timestamp() + 59) / 60 * 60;
    let mut request = cloudwatch
        .get_metric_data()
        .start_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(
            end - 2 * period,
        ))
        .end_time(aws_sdk_cloudwatch::primitives::DateTime::from_secs(end));
    for (index, (_, metric, stat)) in figures.iter().enumerate() {
        request = request.metric_data_queries(crate::aws::metric_query(
            format!("m{index}"),
            namespace,
            metric,
            dimensions.iter().cloned(),
            i32::try_from(period).unwrap_or(i32::MAX),
            stat,
        ));
    }
    let output = request.send().await.map_err(|err| {
        AwsError::from_sdk(
            "cloudwatch:GetMetricData",
            &format!("{namespace} {dimensions:?}"),
            &err,
        )
    })?;
    let window_starts = end - period;
    let mut found = BTreeMap::new();
    for (index, (figure, _, _)) in figures.iter().enumerate() {
        let id = format!("m{index}");
        let mut figures = Figures::default();
        if let Some(result) = output
            .metric_data_results()
            .iter()
            .find(|r| r.id() == Some(id.as_str()))
        {
            for (value, time) in result.values().iter().zip(result.timestamps()) {
                if time.secs() >= window_starts {
                    figures.window = Some(*value);
                } else {
                    figures.previous = Some(*value);
                }
            }
        }
        found.insert((*figure).to_string(), figures);
    }
    if let (Some(errors), Some(invocations)) = (
        found.get("errors").copied(),
        found.get("invocations").copied(),
    ) {
        let rate = |errors: Option<f64>, invocations: Option<f64>| match (errors, invocations) {
            (Some(errors), Some(invocations)) if invocations > 0.0 => Some(errors / invocations),
            _ => None,
        };
        found.insert(
            "error_rate".into(),
            Figures {
                window: rate(errors.window, invocations.window),
                previous: rate(errors.previous, invocations.previous),
            },
        );
    }
    Ok(found)
}

/// The function's log lines of interest over the window, at most `max_events`, read until
/// `deadline`: what was read by then counts (`complete` false), nothing read is an error.
async fn read_logs(
    logs: &aws_sdk_cloudwatchlogs::Client,
    log_group: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    max_events: usize,
    deadline: tokio::time::Instant,
) -> Result<Logs, String> {
    let mut tally = Tally::default();
    let mut token: Option<String> = None;
    let mut read = 0;
    let mut pages = 0;
    let complete = loop {
        let page = logs
            .filter_log_events()
            .log_group_name(log_group)
            .start_time(from.timestamp_millis())
            .end_time(to.timestamp_millis())
            .filter_pattern(LOG_PATTERN)
            .limit(i32::try_from((max_events - read).min(10_000)).unwrap_or(10_000))
            .set_next_token(token.take())
            .send();
        let page = match tokio::time::timeout_at(deadline, page).await {
            Ok(Ok(page)) => page,
            Ok(Err(err)) => {
                let err = AwsError::from_sdk(
                    "logs:FilterLogEvents",
                    &format!("log group {log_group}"),
                    &err,
                );
                // A function that never logged has no log group yet: nothing logged, no fault.
                if err.is(crate::aws::FaultKind::NotFound) {
                    break true;
                }
                return Err(format!("logs: {err}"));
            }
            Err(_) if pages == 0 => {
                return Err(format!(
                    "logs: not read within {} ms",
                    READ_TIMEOUT.as_millis()
                ));
            }
            Err(_) => break false,
        };
        pages += 1;
        for event in page.events() {
            if read == max_events {
                break;
            }
            read += 1;
            tally.add(event.message().unwrap_or_default());
        }
        match page.next_token() {
            Some(next) if read < max_events && !next.is_empty() => token = Some(next.to_string()),
            Some(next) if !next.is_empty() => break false,
            _ => break true,
        }
    };
    Ok(tally.into_logs(log_group, read, complete))
}

/// Log lines, counted by what they say.
#[derive(Default)]
struct Tally {
    errors: HashMap<String, usize>,
    timeouts: usize,
    out_of_memory: usize,
    access_denied: usize,
    throttling: usize,
}

impl Tally {
    /// Timeouts and out-of-memory count only in the Lambda platform's own lines, so that text a
    /// function logs (an error it got from another function, a user's input) cannot make the
    /// automation raise its settings. Only ERROR-level lines are listed.
    fn add(&mut self, line: &str) {
        let text = message_text(line);
        let platform = PlatformLine::of(line, &text);
        if platform.timed_out {
            self.timeouts += 1;
        }
        if platform.out_of_memory {
            self.out_of_memory += 1;
        }
        if line.contains("AccessDenied") {
            self.access_denied += 1;
        }
        if [
            "ThrottlingException",
            "TooManyRequests",
            "ProvisionedThroughputExceeded",
            "Rate exceeded",
        ]
        .iter()
        .any(|term| line.contains(term))
        {
            self.throttling += 1;
        }
        let error_level = text.starts_with("ERROR") || text.starts_with("FATAL");
        if error_level && !platform.is_platform {
            *self.errors.entry(normalise(&text)).or_default() += 1;
        }
    }

    fn into_logs(self, log_group: &str, read: usize, complete: bool) -> Logs {
        let mut errors: Vec<ErrorCount> = self
            .errors
            .into_iter()
            .map(|(message, count)| ErrorCount { message, count })
            .collect();
        errors.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.message.cmp(&b.message))
        });
        errors.truncate(TOP_ERRORS);
        Logs {
            log_group: log_group.to_string(),
            events_read: read,
            complete,
            top_errors: errors,
            timeouts: self.timeouts,
            out_of_memory: self.out_of_memory,
            access_denied: self.access_denied,
            throttling: self.throttling,
        }
    }
}

/// What a line says when the Lambda platform wrote it.
#[derive(Default)]
struct PlatformLine {
    is_platform: bool,
    timed_out: bool,
    out_of_memory: bool,
}

impl PlatformLine {
    fn of(line: &str, text: &str) -> Self {
        // JSON log format: the platform's records have a `type` of `platform.*`.
        if let Ok(serde_json::Value::Object(record)) = serde_json::from_str(line) {
            let is_platform = record
                .get("type")
                .and_then(|t| t.as_str())
                .is_some_and(|t| t.starts_with("platform."));
            // Indexing a Value (not the Map) reads a missing key as null instead of panicking.
            let detail = record.get("record").unwrap_or(&serde_json::Value::Null);
            return Self {
                is_platform,
                timed_out: is_platform && detail["status"] == "timeout",
                out_of_memory: is_platform
                    && (detail["errorType"] == "Runtime.OutOfMemory" || memory_at_limit(line)),
            };
        }
        let report = text.starts_with("REPORT RequestId:");
        let killed = text.starts_with("RequestId:")
            && text.contains("Runtime exited with error: signal: killed");
        Self {
            is_platform: report
                || killed
                || [
                    "START RequestId:",
                    "END RequestId:",
                    "INIT_",
                    "Task timed out after",
                ]
                .iter()
                .any(|prefix| text.starts_with(prefix)),
            timed_out: text.starts_with("Task timed out after")
                || (report && text.contains("Status: timeout")),
            out_of_memory: killed
                || (report && (text.contains("Runtime.OutOfMemory") || memory_at_limit(text))),
        }
    }
}

/// A REPORT line whose `Max Memory Used` reached its `Memory Size` (text or JSON format).
fn memory_at_limit(message: &str) -> bool {
    let number_after = |label: &str| -> Option<f64> {
        let rest = &message[message.find(label)? + label.len()..];
        let digits: String = rest
            .trim_start_matches([' ', ':', '"'])
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        digits.parse().ok()
    };
    let pairs = [
        ("Max Memory Used", "Memory Size"),
        ("maxMemoryUsedMB", "memorySizeMB"),
    ];
    pairs.iter().any(|(used, size)| {
        matches!((number_after(used), number_after(size)), (Some(used), Some(size)) if size > 0.0 && used >= size)
    })
}

/// The message of a log line: a JSON line's level and message, or a text line without the
/// runtime's timestamp and request id.
fn message_text(line: &str) -> String {
    if let Ok(serde_json::Value::Object(record)) = serde_json::from_str(line) {
        let field = |key: &str| {
            record
                .get(key)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let message = [field("errorMessage"), field("message"), field("type")]
            .into_iter()
            .find(|text| !text.is_empty())
            .unwrap_or_default();
        return format!("{} {message}", field("level")).trim().to_string();
    }
    // Text format: `<time>\t<request id>\t<level>\t<message>`, or the platform's
    // `<time> <request id> Task timed out …`.
    let fields: Vec<&str> = line.trim().split('\t').collect();
    if let [time, _request, rest @ ..] = fields.as_slice()
        && !rest.is_empty()
        && is_timestamp(time)
    {
        return rest.join(" ");
    }
    let mut words = line.trim().splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some(time), Some(_request), Some(rest)) if is_timestamp(time) => rest.to_string(),
        _ => line.trim().to_string(),
    }
}

fn is_timestamp(word: &str) -> bool {
    word.len() >= 20 && word.contains('T') && word.ends_with('Z')
}

/// A message with what would split one error into many, or leak a payload, masked: quoted
/// text, e-mail addresses, ids, numbers; at most `MESSAGE_CHARS` characters.
pub fn normalise(message: &str) -> String {
    let mut masked = String::new();
    let mut chars = message.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                // Quoted text, up to its closing quote (or the end).
                for next in chars.by_ref() {
                    if next == c {
                        break;
                    }
                }
                masked.push(c);
                masked.push('…');
                masked.push(c);
            }
            _ => masked.push(c),
        }
    }
    let words: Vec<String> = masked.split_whitespace().map(mask_word).collect();
    let mut text = words.join(" ");
    if text.chars().count() > MESSAGE_CHARS {
        text = text.chars().take(MESSAGE_CHARS - 1).collect::<String>() + "…";
    }
    text
}

/// One word with its e-mail address, tokens, ids, values and numbers masked.
fn mask_word(word: &str) -> String {
    if word.contains('@') || word.to_ascii_lowercase().contains("%40") {
        return "<email>".into();
    }
    // A URL keeps its address, not its query.
    if let Some((address, _)) = word.split_once('?')
        && word.contains("://")
    {
        return format!("{address}?…");
    }
    // `key=value`: the key says what it is, the value may be anything.
    if let Some((key, _)) = word.split_once('=')
        && !key.is_empty()
    {
        return format!("{key}=…");
    }
    let core = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let hex_id = core.len() >= 8
        && core.chars().any(|c| c.is_ascii_digit())
        && core.chars().all(|c| c.is_ascii_hexdigit() || c == '-');
    if hex_id {
        return word.replace(core, "<id>");
    }
    // Keys, tokens and secrets: long runs of letters and digits together.
    let token = core.len() >= 16
        && core.chars().any(|c| c.is_ascii_digit())
        && core.chars().any(|c| c.is_ascii_alphabetic());
    if token {
        return word.replace(core, "<token>");
    }
    let mut out = String::new();
    let mut in_number = false;
    for c in word.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push_str("<n>");
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

/// Versions published, aliases moved to them, the configuration updated, and the owning
/// stack's events, since `since`; newest first.
async fn recent_changes(
    lambda: &aws_sdk_lambda::Client,
    cloudformation: Option<&aws_sdk_cloudformation::Client>,
    function: &str,
    last_modified: Option<&str>,
    since: DateTime<Utc>,
) -> Result<Vec<RecentChange>, AwsError> {
    let resource = format!("function {function}");
    let versions = published_versions(lambda, function);
    let aliases = async {
        lambda
            .list_aliases()
            .function_name(function)
            .send()
            .await
            .map_err(|err| AwsError::from_sdk("lambda:ListAliases", &resource, &err))
    };
    let stack = async {
        let Some(cloudformation) = cloudformation else {
            return Ok(Vec::new());
        };
        stack_events(cloudformation, function, since).await
    };
    let (versions, aliases, stack) = tokio::join!(versions, aliases, stack);
    let (versions, aliases, stack) = (versions?, aliases?, stack?);
    let mut changes = stack;
    let versions: Vec<(String, DateTime<Utc>)> = versions
        .into_iter()
        .filter_map(|(number, at)| Some((number.to_string(), at?)))
        .collect();
    for (version, at) in versions.iter().filter(|(_, at)| *at >= since) {
        changes.push(RecentChange {
            at: crate::audit::timestamp(*at),
            kind: "version_published",
            what: format!("version {version} of {function} published"),
        });
    }
    for alias in aliases.aliases() {
        let (Some(name), Some(version)) = (alias.name(), alias.function_version()) else {
            continue;
        };
        if let Some((_, at)) = versions.iter().find(|(v, at)| v == version && *at >= since) {
            let weights = alias
                .routing_config()
                .and_then(|routing| routing.additional_version_weights())
                .map(|weights| {
                    let mut shares: Vec<String> = weights
                        .iter()
                        .map(|(version, weight)| {
                            format!("{:.0}% to version {version}", weight * 100.0)
                        })
                        .collect();
                    shares.sort();
                    format!(" ({})", shares.join(", "))
                })
                .unwrap_or_default();
            changes.push(RecentChange {
                at: crate::audit::timestamp(*at),
                kind: "alias_moved",
                what: format!(
                    "alias {name} routes to version {version}, published in the window{weights}"
                ),
            });
        }
    }
    if let Some(at) = last_modified
        .and_then(lambda_time)
        .filter(|at| *at >= since)
    {
        changes.push(RecentChange {
            at: crate::audit::timestamp(at),
            kind: "configuration_updated",
            what: format!("{function}'s code or configuration ($LATEST) updated"),
        });
    }
    changes.sort_by(|a, b| b.at.cmp(&a.at));
    Ok(changes)
}

/// The function's published versions (not `$LATEST`), each with when it was published when
/// Lambda says; oldest first.
pub async fn published_versions(
    lambda: &aws_sdk_lambda::Client,
    function: &str,
) -> Result<Vec<(u64, Option<DateTime<Utc>>)>, AwsError> {
    let mut versions = Vec::new();
    let mut pages = lambda
        .list_versions_by_function()
        .function_name(function)
        .into_paginator()
        .send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|err| {
            AwsError::from_sdk(
                "lambda:ListVersionsByFunction",
                &format!("function {function}"),
                &err,
            )
        })?;
        versions.extend(page.versions().iter().filter_map(|v| {
            Some((
                v.version()?.parse().ok()?,
                v.last_modified().and_then(lambda_time),
            ))
        }));
    }
    versions.sort_by_key(|(number, _)| *number);
    Ok(versions)
}

/// The events of the stack that owns `function` since `since` (at most 20).
async fn stack_events(
    cloudformation: &aws_sdk_cloudformation::Client,
    function: &str,
    since: DateTime<Utc>,
) -> Result<Vec<RecentChange>, AwsError> {
    let Some(owner) = crate::ownership::owner_of(cloudformation, function).await? else {
        return Ok(Vec::new());
    };
    let events = cloudformation
        .describe_stack_events()
        .stack_name(&owner.stack)
        .send()
        .await
        .map_err(|err| {
            AwsError::from_sdk("cloudformation:DescribeStackEvents", &owner.stack, &err)
        })?;
    Ok(events
        .stack_events()
        .iter()
        .filter_map(|event| {
            let at = DateTime::from_timestamp(event.timestamp()?.secs(), 0)?;
            (at >= since).then(|| RecentChange {
                at: crate::audit::timestamp(at),
                kind: "stack_event",
                what: format!(
                    "stack {}: {} {}{}",
                    owner.stack,
                    event.logical_resource_id().unwrap_or_default(),
                    event.resource_status().map_or("", |s| s.as_str()),
                    event
                        .resource_status_reason()
                        .map(|reason| format!(" ({})", normalise(reason)))
                        .unwrap_or_default()
                ),
            })
        })
        .take(20)
        .collect())
}

/// Lambda's timestamps (`2026-11-23T08:00:00.000+0000`), or RFC 3339.
pub fn lambda_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%z")
        .or_else(|_| DateTime::parse_from_rfc3339(text))
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_normalised_and_never_copied_whole() {
        assert_eq!(
            normalise(
                "ERROR Invoke Error: order 4711 for \"alice@example.com\" failed (request 3f2a9c1e-77d4-4b0e-9d2a-1c2b3d4e5f60)"
            ),
            "ERROR Invoke Error: order <n> for \"…\" failed (request <id>)"
        );
        assert_eq!(
            normalise("user bob@example.com not found"),
            "user <email> not found"
        );
        assert_eq!(normalise("timeout after 3000ms"), "timeout after <n>ms");
        assert_eq!(
            normalise(
                "ERROR auth failed: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9 key AKIAIOSFODNN7EXAMPLE user=alice"
            ),
            "ERROR auth failed: Bearer <token> key <token> user=…"
        );
        assert_eq!(
            normalise("ERROR GET https://api.example.com/orders?id=42 for alice%40example.com"),
            "ERROR GET https://api.example.com/orders?… for <email>"
        );
        let long = "x".repeat(500);
        assert_eq!(normalise(&long).chars().count(), MESSAGE_CHARS);
    }

    #[test]
    fn lines_are_told_apart() {
        let mut tally = Tally::default();
        for line in [
            "2026-11-30T10:00:00.000Z\t3f2a9c1e-77d4-4b0e-9d2a-1c2b3d4e5f60\tERROR\tInvoke Error: order 1 failed",
            "2026-11-30T10:00:01.000Z\t4f2a9c1e-77d4-4b0e-9d2a-1c2b3d4e5f61\tERROR\tInvoke Error: order 2 failed",
            "2026-11-30T10:00:02.000Z 5f2a9c1e-77d4-4b0e-9d2a-1c2b3d4e5f62 Task timed out after 3.00 seconds",
            "REPORT RequestId: 6f2a Duration: 3000.00 ms Billed Duration: 3000 ms Memory Size: 128 MB Max Memory Used: 128 MB Status: error Error Type: Runtime.OutOfMemory",
            "RequestId: 7f2a Error: Runtime exited with error: signal: killed",
            r#"{"level":"ERROR","message":"AccessDeniedException: not authorized to perform dynamodb:PutItem"}"#,
            r#"{"level":"ERROR","errorMessage":"ProvisionedThroughputExceededException: rate of requests exceeds"}"#,
            "REPORT RequestId: 8f2a Duration: 10.00 ms Billed Duration: 10 ms Memory Size: 128 MB Max Memory Used: 64 MB",
        ] {
            tally.add(line);
        }
        let logs = tally.into_logs("/aws/lambda/f", 8, true);
        assert_eq!(logs.timeouts, 1);
        assert_eq!(
            logs.out_of_memory, 2,
            "the REPORT at the limit and the killed runtime"
        );
        assert_eq!(logs.access_denied, 1);
        assert_eq!(logs.throttling, 1);
        assert_eq!(
            logs.top_errors[0],
            ErrorCount {
                message: "ERROR Invoke Error: order <n> failed".into(),
                count: 2
            }
        );
        assert!(
            logs.top_errors
                .iter()
                .all(|e| !e.message.starts_with("REPORT"))
        );
    }

    #[test]
    fn only_the_platform_s_lines_count_as_timeouts_and_out_of_memory() {
        let mut tally = Tally::default();
        for line in [
            // What a function logs about another function's failure, or a user's input.
            "2026-11-30T10:00:00.000Z\t3f2a9c1e-77d4-4b0e-9d2a-1c2b3d4e5f60\tERROR\tdownstream said: Task timed out after 3.00 seconds",
            "2026-11-30T10:00:00.000Z\t3f2a9c1e-77d4-4b0e-9d2a-1c2b3d4e5f60\tINFO\tcomment: Runtime.OutOfMemory signal: killed",
            r#"{"level":"INFO","message":"error_count=0"}"#,
        ] {
            tally.add(line);
        }
        let logs = tally.into_logs("/aws/lambda/f", 3, true);
        assert_eq!((logs.timeouts, logs.out_of_memory), (0, 0));
        assert_eq!(
            logs.top_errors.len(),
            1,
            "only the ERROR line: {:?}",
            logs.top_errors
        );

        let mut tally = Tally::default();
        for line in [
            r#"{"time":"2026-11-30T10:00:00.000Z","type":"platform.report","record":{"requestId":"1","metrics":{"durationMs":3000,"memorySizeMB":128,"maxMemoryUsedMB":64},"status":"timeout"}}"#,
            r#"{"time":"2026-11-30T10:00:01.000Z","type":"platform.report","record":{"requestId":"2","metrics":{"memorySizeMB":128,"maxMemoryUsedMB":128},"status":"error","errorType":"Runtime.OutOfMemory"}}"#,
        ] {
            tally.add(line);
        }
        let logs = tally.into_logs("/aws/lambda/f", 2, true);
        assert_eq!((logs.timeouts, logs.out_of_memory), (1, 1));
        assert!(logs.top_errors.is_empty());
    }

    #[test]
    fn parses_lambda_timestamps() {
        assert!(lambda_time("2026-11-23T08:00:00.000+0000").is_some());
        assert!(lambda_time("2026-11-23T08:00:00Z").is_some());
        assert!(lambda_time("yesterday").is_none());
    }

    #[test]
    fn the_window_is_the_alarm_s_bounded_by_the_lookback() {
        let config = EvidenceConfig {
            lookback_minutes: 15,
            max_events: 100,
            recent_changes_minutes: 60,
        };
        let now = Utc::now();
        assert_eq!(
            window(None, &config, now),
            (now - chrono::Duration::minutes(15), now)
        );
    }
}
