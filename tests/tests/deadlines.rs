//! The Lambda deadline as a local Runtime API may send it: `cargo lambda watch` sends a duration
//! (600000) where AWS sends an epoch time, others a time already past or far ahead, or no header
//! at all. The function
//! treats such a deadline as unknown and is bounded by its own timeout, with a warning; a real
//! deadline still stops a stalled call in time. Through the compiled limit-scaler.

use std::time::{Duration, Instant};

use runbook_tests::fixtures::{TableSpec, capacity, create_audit_table};
use runbook_tests::moto::moto;
use runbook_tests::runtime::{DeadlineHeader, Invoked, LambdaProcess, binary};
use serde_json::json;

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

async fn scaler(endpoint: Option<&str>, audit: &str, extra: &[(&str, &str)]) -> LambdaProcess {
    let mut env = moto().function_env();
    if let Some(endpoint) = endpoint {
        env.retain(|(name, _)| name != "AWS_ENDPOINT_URL");
        env.push(("AWS_ENDPOINT_URL".into(), endpoint.into()));
    }
    env.push(("AUDIT_TABLE".into(), audit.into()));
    env.push(("MANAGED_RESOURCES".into(), "managed-*".into()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    LambdaProcess::start(&binary("limit-scaler"), &env).await
}

#[tokio::test]
async fn a_deadline_aws_never_sends_is_replaced_by_the_functions_timeout() {
    let dynamodb = moto().dynamodb();
    let audit = create_audit_table(&dynamodb).await;
    let cases = [
        (
            "cargo lambda watch's duration",
            DeadlineHeader::Sent(600_000),
        ),
        ("zero", DeadlineHeader::Sent(0)),
        (
            "a day ahead",
            DeadlineHeader::Sent(now_ms() + 24 * 3600 * 1000),
        ),
        ("no header at all", DeadlineHeader::Missing),
    ];
    for (case, deadline) in cases {
        let spec = TableSpec::provisioned("managed-orders", 5, 5);
        let table = spec.name.clone();
        spec.create(&dynamodb).await;
        let mut function = scaler(None, &audit, &[("FUNCTION_TIMEOUT_SECONDS", "60")]).await;
        function.deadline_header = deadline;
        let report = function
            .report(&json!({"table": table, "read": 10, "write": 5}))
            .await;
        assert_eq!(report["outcome"], "remediated", "{case}: {report}");
        assert_eq!(capacity(&dynamodb, &table, None).await, (10, 5), "{case}");
        let logs = function.logs.lock().expect("logs").join("\n");
        let named = match deadline {
            DeadlineHeader::Sent(ms) => format!("lambda-runtime-deadline-ms is {ms} ("),
            _ => "lambda-runtime-deadline-ms is missing".into(),
        };
        assert!(
            logs.contains(&named)
                && logs.contains("bounded by the function's timeout instead, 60s"),
            "{case}: one warning naming the header and its value: {logs}"
        );
        function.stop().await;
    }
}

/// An endpoint that takes the connection and never answers: an AWS call that stalls.
async fn stalling_endpoint() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{address}")
}

#[tokio::test]
async fn a_stalled_call_is_stopped_in_time_by_a_real_deadline_or_by_the_timeout() {
    let endpoint = stalling_endpoint().await;
    let request = json!({"table": "managed-orders", "read": 10, "write": 5});

    // AWS's deadline, 6 s ahead: stopped a second before it. (No report events: their
    // endpoint would stall too, and take the last second.)
    let mut function = scaler(Some(&endpoint), "audit", &[("REPORT_EVENT_BUS", "off")]).await;
    function.timeout = Duration::from_secs(6);
    let started = Instant::now();
    let answer = function.invoke(&request).await;
    let took = started.elapsed();
    assert!(
        matches!(&answer, Invoked::Error(error) if error.to_string().contains("before the Lambda deadline")),
        "{answer:?}"
    );
    assert!(took < Duration::from_secs(6), "{took:?}");
    function.stop().await;

    // cargo lambda's deadline with a 6 s timeout: bounded by the timeout, neither stopped at
    // once nor left to hang.
    let mut function = scaler(
        Some(&endpoint),
        "audit",
        &[
            ("FUNCTION_TIMEOUT_SECONDS", "6"),
            ("REPORT_EVENT_BUS", "off"),
        ],
    )
    .await;
    function.timeout = Duration::from_secs(20);
    function.deadline_header = DeadlineHeader::Sent(600_000);
    let started = Instant::now();
    let answer = function.invoke(&request).await;
    let took = started.elapsed();
    assert!(
        matches!(&answer, Invoked::Error(error) if error.to_string().contains("before the Lambda deadline")),
        "{answer:?}"
    );
    // The timeout runs from when the function took the invocation, after its cold start.
    assert!(
        took >= Duration::from_secs(4) && took < Duration::from_secs(9),
        "{took:?}"
    );
    function.stop().await;
}

/// A free loopback port.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// The Rust Lambda developer's own loop: `cargo lambda watch` (here with --only-lambda-apis, the
/// binary already built) and `cargo lambda invoke --data-file events/…`. Its Runtime API sends a
/// duration as the deadline; the throttle alarm is still remediated.
#[tokio::test]
async fn a_throttle_alarm_is_remediated_under_cargo_lambda_watch_and_invoke() {
    let dynamodb = moto().dynamodb();
    let audit = create_audit_table(&dynamodb).await;
    let spec = TableSpec::provisioned("managed-orders", 5, 5);
    let table = spec.name.clone();
    spec.create(&dynamodb).await;
    let event =
        runbook_tests::fixtures::event_file("dynamodb-throttle-alarm.json", &[("orders", &table)]);
    let event_path = std::env::temp_dir().join(format!("{table}.json"));
    std::fs::write(&event_path, event.to_string()).expect("event file");

    let cargo_lambda = runbook_tests::moto::python().with_file_name("cargo-lambda");
    let port = free_port().to_string();
    let mut watch = tokio::process::Command::new(&cargo_lambda)
        .args(["lambda", "watch", "--only-lambda-apis", "-P", &port])
        .current_dir(runbook_tests::workspace_root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("cargo lambda watch (scripts/setup.sh installs it)");
    let started = Instant::now();
    while tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "cargo lambda watch did not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The variables `cargo lambda watch --only-lambda-apis` says the function must be given.
    let mut function = tokio::process::Command::new(binary("limit-scaler"))
        .envs(moto().function_env())
        .envs([
            ("AUDIT_TABLE", audit.as_str()),
            ("MANAGED_RESOURCES", "managed-*"),
            (
                "AWS_LAMBDA_RUNTIME_API",
                &format!("http://127.0.0.1:{port}/.rt"),
            ),
            ("AWS_LAMBDA_FUNCTION_NAME", "_"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "1"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "4096"),
        ])
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("limit-scaler");
    let invoked = tokio::process::Command::new(&cargo_lambda)
        .args(["lambda", "invoke", "-P", &port, "--output-format", "json"])
        .arg("--data-file")
        .arg(&event_path)
        .arg("_")
        .output();
    let invoked = tokio::time::timeout(Duration::from_secs(60), invoked)
        .await
        .expect("cargo lambda invoke answers")
        .expect("cargo lambda invoke runs");
    let _ = std::fs::remove_file(&event_path);
    let printed = String::from_utf8_lossy(&invoked.stdout);
    assert!(
        invoked.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&invoked.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&printed).expect("a JSON report");
    assert_eq!(report["outcome"], "remediated", "{report}");
    assert_eq!(capacity(&dynamodb, &table, None).await, (10, 5));
    let _ = function.kill().await;
    let _ = watch.kill().await;
}

#[tokio::test]
async fn a_bad_function_timeout_stops_the_cold_start_naming_the_variable() {
    for bad in ["0", "901", "two minutes"] {
        let mut function = scaler(None, "audit", &[("FUNCTION_TIMEOUT_SECONDS", bad)]).await;
        let answer = function.invoke(&json!({"table": "managed-x"})).await;
        assert!(
            matches!(answer, Invoked::InitFailed(_)),
            "{bad}: {answer:?}"
        );
        let logs = function.logs.lock().expect("logs").join("\n");
        assert!(
            logs.contains(&format!(
                "FUNCTION_TIMEOUT_SECONDS=\\\"{bad}\\\" is invalid"
            )),
            "{bad}: {logs}"
        );
        function.stop().await;
    }
}
