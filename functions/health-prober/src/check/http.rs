//! The `http` probe: status, body conditions and latency, each failure told apart.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::probes::HttpProbe;

pub(super) async fn check_http(http: &reqwest::Client, probe: &HttpProbe) -> (bool, String) {
    let method = probe
        .method
        .as_deref()
        .unwrap_or("GET")
        .to_ascii_uppercase();
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut request = http.request(method, &probe.url);
    for (name, value) in &probe.headers {
        request = request.header(name, value);
    }
    if let Some(timeout) = probe.timeout_ms {
        request = request.timeout(Duration::from_millis(timeout));
    }
    let started = Instant::now();
    let response = match request.send().await {
        Ok(response) => response,
        Err(err) if err.is_timeout() => return (false, format!("timeout: {err}")),
        Err(err) => return (false, format!("unreachable: {}", error_chain(&err))),
    };
    let status = response.status().as_u16();
    let expected = probe.expected_statuses();
    if !expected.contains(&status) {
        return (
            false,
            format!("wrong status {status} (expected {})", join(&expected)),
        );
    }
    let conditions = probe.conditions();
    if !conditions.is_empty() {
        let bytes = match response.bytes().await {
            Ok(bytes) => bytes,
            Err(err) if err.is_timeout() => {
                return (false, format!("timeout while reading the body: {err}"));
            }
            Err(err) => {
                return (
                    false,
                    format!(
                        "unreachable: the body could not be read: {}",
                        error_chain(&err)
                    ),
                );
            }
        };
        let body: Value = match serde_json::from_slice(&bytes) {
            Ok(body) => body,
            Err(err) => return (false, format!("invalid JSON body: {err}")),
        };
        for condition in &conditions {
            let (ok, found) = condition.check(&body);
            if !ok {
                let found =
                    found.map_or_else(|| "nothing at that path".to_string(), Value::to_string);
                return (
                    false,
                    format!("failed condition {} (got {found})", condition.text),
                );
            }
        }
    }
    let latency = started.elapsed().as_millis();
    if let Some(max) = probe.max_latency_ms
        && latency > u128::from(max)
    {
        return (false, format!("slow: {latency} ms (max {max} ms)"));
    }
    (true, format!("status {status} in {latency} ms"))
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn join(statuses: &[u16]) -> String {
    statuses
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(" or ")
}
