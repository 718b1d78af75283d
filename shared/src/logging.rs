//! JSON logs: one line per event, the report as one JSON line of its own.

use std::io::Write;

use tracing_subscriber::EnvFilter;

use serde::Serialize;

/// JSON logs on stdout (what Lambda's JSON log format expects), level from `RUST_LOG` or
/// `AWS_LAMBDA_LOG_LEVEL`, `info` by default.
pub fn init() {
    let level = std::env::var("RUST_LOG")
        .or_else(|_| std::env::var("AWS_LAMBDA_LOG_LEVEL"))
        .unwrap_or_else(|_| "info".into())
        .to_lowercase();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info")))
        .with_current_span(true)
        .with_span_list(false)
        .with_target(false)
        .without_time()
        .init();
}

/// Writes the output (a report, or a sweep of reports) as one JSON log line:
/// `{"level":"INFO","message":"report","report":{...}}`.
pub fn log_output<O: Serialize>(report: &O) {
    let line = serde_json::json!({"level": "INFO", "message": "report", "report": report});
    // A log line that cannot be written must not fail the invocation.
    let _ = writeln!(std::io::stdout().lock(), "{line}");
}
