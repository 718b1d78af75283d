//! moto's server behind tests/moto_front/front.py, one process per test binary.

use std::cell::Cell;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::config::Credentials;

pub const REGION: &str = "us-east-1";
pub const ACCOUNT: &str = "123456789012";

pub struct Moto {
    pub endpoint: String,
    // Kept open: the front exits when its stdin closes, i.e. when this test process ends.
    _stdin: Mutex<ChildStdin>,
    _child: Mutex<Child>,
}

/// The Python interpreter of the repo-local venv (override with RUNBOOK_PYTHON).
pub fn python() -> std::path::PathBuf {
    std::env::var_os("RUNBOOK_PYTHON")
        .map(Into::into)
        .unwrap_or_else(|| crate::workspace_root().join(".venv/bin/python"))
}

/// The emulator of the running test: the one every test shares, started on first use on a
/// free loopback port, or the private one the test took with `isolated`.
pub fn moto() -> &'static Moto {
    if let Some(private) = ISOLATED.with(Cell::get) {
        return private;
    }
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| start(&[]).unwrap_or_else(|err| panic!("{err}")))
}

thread_local! {
    /// The private emulator of the test running on this thread (each test has its own thread,
    /// and a `#[tokio::test]` runs its tasks on it).
    static ISOLATED: Cell<Option<&'static Moto>> = const { Cell::new(None) };
}

/// A private emulator, held by one test at a time: while the guard lives, `moto()` (and every
/// fixture that uses it) on this thread is that emulator.
pub struct Isolated {
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

/// Takes the private emulator `name` (started on first use) for the rest of the test, after the
/// tests that hold it finish: for a test that reads what the whole emulator holds (the
/// account's unreserved concurrency, every event on the default bus), which the tests sharing
/// an emulator keep changing.
pub async fn isolated(name: &'static str) -> Isolated {
    type Private = (&'static Moto, &'static tokio::sync::Mutex<()>);
    static PRIVATE: Mutex<Vec<(&'static str, Private)>> = Mutex::new(Vec::new());
    let (emulator, turns) = {
        let mut private = PRIVATE.lock().unwrap_or_else(|err| err.into_inner());
        match private.iter().find(|(named, _)| *named == name) {
            Some((_, found)) => *found,
            None => {
                let emulator: &'static Moto =
                    Box::leak(Box::new(start(&[]).unwrap_or_else(|err| panic!("{err}"))));
                let turns: &'static tokio::sync::Mutex<()> =
                    Box::leak(Box::new(tokio::sync::Mutex::new(())));
                private.push((name, (emulator, turns)));
                (emulator, turns)
            }
        }
    };
    let turn = turns.lock().await;
    ISOLATED.with(|isolated| isolated.set(Some(emulator)));
    Isolated { _turn: turn }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        ISOLATED.with(|isolated| isolated.set(None));
    }
}

/// Starts a new front with extra environment for moto (e.g. IAM enforcement).
pub fn start(env: &[(&str, &str)]) -> Result<Moto, String> {
    let python = python();
    if !python.exists() {
        return Err(format!(
            "{} not found: run scripts/test.sh once, it creates .venv with the pinned moto",
            python.display()
        ));
    }
    let front = crate::workspace_root().join("tests/moto_front/front.py");
    let mut child = Command::new(&python)
        .arg(front)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|err| format!("could not start {}: {err}", python.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout from the moto front")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|err| format!("moto front: {err}"))?;
    let port = line
        .strip_prefix("READY ")
        .and_then(|port| port.trim().parse::<u16>().ok())
        .ok_or_else(|| format!("moto front did not start (said {line:?})"))?;
    let stdin = child.stdin.take().ok_or("no stdin for the moto front")?;
    Ok(Moto {
        endpoint: format!("http://127.0.0.1:{port}"),
        _stdin: Mutex::new(stdin),
        _child: Mutex::new(child),
    })
}

impl Moto {
    /// SDK configuration for this emulator: fixed region, dummy credentials, its endpoint.
    pub fn sdk_config(&self) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .credentials_provider(aws_sdk_dynamodb::config::SharedCredentialsProvider::new(
                Credentials::for_tests(),
            ))
            .build()
    }

    /// The environment a function binary needs to reach this emulator.
    pub fn function_env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint.clone()),
            ("AWS_REGION".into(), REGION.into()),
            ("ACCOUNT_ID".into(), ACCOUNT.into()),
            ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
            ("AWS_SECRET_ACCESS_KEY".into(), "testing".into()),
            // The tests and the demo show the runbooks acting; the code's default is observe.
            ("DEFAULT_MODE".into(), "auto".into()),
        ]
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::new(&self.sdk_config())
    }

    pub fn sqs(&self) -> aws_sdk_sqs::Client {
        aws_sdk_sqs::Client::new(&self.sdk_config())
    }

    pub fn cloudformation(&self) -> aws_sdk_cloudformation::Client {
        aws_sdk_cloudformation::Client::new(&self.sdk_config())
    }

    pub fn auto_scaling(&self) -> aws_sdk_applicationautoscaling::Client {
        aws_sdk_applicationautoscaling::Client::new(&self.sdk_config())
    }

    pub fn logs(&self) -> aws_sdk_cloudwatchlogs::Client {
        aws_sdk_cloudwatchlogs::Client::new(&self.sdk_config())
    }

    pub fn lambda(&self) -> aws_sdk_lambda::Client {
        aws_sdk_lambda::Client::new(&self.sdk_config())
    }

    /// One AWS call through boto3 against this emulator, answered as JSON: for the services the
    /// tests have no Rust SDK for, and for answers the Rust SDK rejects (moto's quirks).
    pub fn boto3(
        &self,
        service: &str,
        method: &str,
        arguments: serde_json::Value,
    ) -> serde_json::Value {
        self.boto3_as(("x", "x"), service, method, arguments)
            .unwrap_or_else(|err| panic!("{service}.{method}: {err}"))
    }

    /// The same call signed with these (access key, secret key): `Err` is what boto3 raised.
    /// The front makes it (`/_front/boto3`), where boto3 is loaded already.
    pub fn boto3_as(
        &self,
        (access_key, secret_key): (&str, &str),
        service: &str,
        method: &str,
        arguments: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        use std::io::{Read, Write};
        let body = serde_json::json!({
            "service": service, "method": method, "arguments": arguments,
            "access_key": access_key, "secret_key": secret_key,
        })
        .to_string();
        let address = self.endpoint.trim_start_matches("http://");
        let mut stream = std::net::TcpStream::connect(address).map_err(|err| err.to_string())?;
        write!(
            stream,
            "POST /_front/boto3 HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .map_err(|err| err.to_string())?;
        let mut answer = String::new();
        stream
            .read_to_string(&mut answer)
            .map_err(|err| err.to_string())?;
        let mut answer: serde_json::Value = answer
            .split_once("\r\n\r\n")
            .and_then(|(_, body)| serde_json::from_str(body).ok())
            .ok_or_else(|| format!("the front did not answer {service}.{method}: {answer}"))?;
        match answer["error"].as_str() {
            Some(error) => Err(error.to_string()),
            None => Ok(answer["answer"].take()),
        }
    }

    pub fn cloudwatch(&self) -> aws_sdk_cloudwatch::Client {
        aws_sdk_cloudwatch::Client::new(&self.sdk_config())
    }

    /// POSTs to one of the front's test controls (not AWS APIs; see tests/moto_front/README.md)
    /// and returns its JSON answer.
    pub async fn control(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let body = body.to_string();
        let address = self.endpoint.trim_start_matches("http://").to_string();
        let mut stream = tokio::net::TcpStream::connect(&address)
            .await
            .expect("connect to the front");
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .expect("send");
        let mut answer = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut answer)
            .await
            .expect("answer");
        assert!(
            answer.starts_with("HTTP/1.1 200") || answer.starts_with("HTTP/1.0 200"),
            "{path}: {answer}"
        );
        answer
            .split_once("\r\n\r\n")
            .and_then(|(_, body)| serde_json::from_str(body).ok())
            .unwrap_or_default()
    }

    /// The faults the front's fault mode answered so far: access key -> kind -> count.
    pub async fn faults(&self) -> serde_json::Value {
        let mut answer = self.control("/_front/faults", serde_json::json!({})).await;
        answer["counts"].take()
    }

    /// Holds the next request for `action` (an operation name) that names `resource` (in its
    /// path or body) for `ms`, so that tests running at the same time are not slowed.
    pub async fn delay(&self, action: &str, resource: &str, ms: u64) {
        self.control(
            "/_front/delay",
            serde_json::json!({"action": action, "resource": resource, "ms": ms}),
        )
        .await;
    }

    /// Serves the next request for `action` that names `resource` at once and holds its answer
    /// back for `ms`: the call has taken effect while its caller still waits.
    pub async fn delay_answer(&self, action: &str, resource: &str, ms: u64) {
        self.control(
            "/_front/delay",
            serde_json::json!({"action": action, "resource": resource, "ms": ms, "answer": true}),
        )
        .await;
    }

    /// Waits until the request a `delay` or `delay_answer` slowed (the oldest asked for `action`
    /// on `resource`) has arrived: what a test does next then happens while it is held, however
    /// loaded the machine. Panics after 30 s.
    pub async fn held(&self, action: &str, resource: &str) {
        let answer = self
            .control(
                "/_front/delay/held",
                serde_json::json!({"action": action, "resource": resource, "timeout_ms": 30_000}),
            )
            .await;
        assert_eq!(
            answer["held"], true,
            "no {action} request on {resource} arrived within 30 s"
        );
    }

    /// Makes DescribeTable show `status` for the table (`ACTIVE` restores moto's own).
    pub async fn set_table_status(&self, table: &str, status: &str) {
        self.control(
            "/_front/dynamodb/table-status",
            serde_json::json!({"table": table, "status": status}),
        )
        .await;
    }
}
