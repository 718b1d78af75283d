//! The subject's errors in its logs: the lines read, classified and normalised.

use super::*;
use std::collections::HashMap;

use crate::model::{ErrorCount, Logs};

/// The function's log lines of interest over the window, at most `max_events`, read until
/// `deadline`: what was read by then counts (`complete` false), nothing read is an error.
pub(super) async fn read_logs(
    logs: &aws_sdk_cloudwatchlogs::Client,
    log_group: &str,
    (from, to): (DateTime<Utc>, DateTime<Utc>),
    max_events: usize,
    deadline: Within,
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
        let page = match tokio::time::timeout_at(deadline.until, page).await {
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
                return Err(format!("logs: not read within {} ms", deadline.ms));
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
}
