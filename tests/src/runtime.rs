//! A Lambda Runtime API emulator (the `2018-06-01` interface the real service offers to a
//! function's bootstrap), so the tests run the compiled function binaries as Lambda would.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::routing::{get, post};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{Notify, oneshot};

/// What an invocation ended with.
#[derive(Debug)]
pub enum Invoked {
    /// The function's response body, parsed as JSON.
    Response(Value),
    /// The function reported an invocation error (`/error`), with its body.
    Error(Value),
    /// The process reported an init error or exited before answering.
    InitFailed(String),
}

struct Pending {
    id: String,
    payload: Vec<u8>,
    deadline_ms: Option<u64>,
}

/// The `lambda-runtime-deadline-ms` the emulator sends.
#[derive(Clone, Copy, Debug)]
pub enum DeadlineHeader {
    /// AWS's: now + the invocation's `timeout`, as epoch milliseconds.
    Aws,
    /// This value, as another Runtime API emulator sends it.
    Sent(u64),
    /// No header at all, as some emulators have sent it.
    Missing,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<VecDeque<Pending>>,
    waiting: Mutex<HashMap<String, oneshot::Sender<Invoked>>>,
    init_error: Mutex<Option<String>>,
    arrived: Notify,
    init_failed: Notify,
}

/// The emulator plus one running function process.
pub struct LambdaProcess {
    shared: Arc<Shared>,
    child: tokio::process::Child,
    server: tokio::task::JoinHandle<()>,
    /// Every line the function wrote on stdout (its JSON logs).
    pub logs: Arc<Mutex<Vec<String>>>,
    log_reader: Option<tokio::task::JoinHandle<()>>,
    pub timeout: Duration,
    pub deadline_header: DeadlineHeader,
}

/// The path of a workspace binary, built by `cargo build --workspace --bins` (scripts/test.sh
/// does it before the tests run).
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    // Tests run from target/<profile>/deps/, the demo from target/<profile>/.
    let profile = match exe.parent() {
        Some(dir) if dir.ends_with("deps") => dir.parent(),
        other => other,
    };
    let path = profile.map(|dir| dir.join(name)).expect("target directory");
    assert!(
        path.exists(),
        "{} is missing: build the functions first (`cargo build --workspace --bins`, as scripts/test.sh does)",
        path.display()
    );
    path
}

impl LambdaProcess {
    /// Starts the emulator on a free loopback port and the binary against it.
    pub async fn start(binary: &std::path::Path, env: &[(String, String)]) -> Self {
        let shared = Arc::new(Shared::default());
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let name = binary
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("function")
            .to_string();
        let mut child = tokio::process::Command::new(binary)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
            .env("AWS_LAMBDA_FUNCTION_NAME", &name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the function binary");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let log_reader = child.stdout.take().map(|stdout| {
            let logs = logs.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    logs.lock().expect("logs").push(line);
                }
            })
        });
        Self {
            shared,
            child,
            server,
            logs,
            log_reader,
            timeout: Duration::from_secs(60),
            deadline_header: DeadlineHeader::Aws,
        }
    }

    /// Invokes the function with raw payload bytes, as the Invoke API would hand them over.
    pub async fn invoke_bytes(&mut self, payload: &[u8]) -> Invoked {
        self.invoke_bytes_as(payload, &uuid::Uuid::new_v4().to_string())
            .await
    }

    /// Invokes with a given request id, as Lambda does when it retries an asynchronous
    /// invocation whose earlier attempt crashed.
    pub async fn invoke_as(&mut self, payload: &Value, request_id: &str) -> Invoked {
        self.invoke_bytes_as(payload.to_string().as_bytes(), request_id)
            .await
    }

    async fn invoke_bytes_as(&mut self, payload: &[u8], id: &str) -> Invoked {
        let id = id.to_string();
        let (sender, receiver) = oneshot::channel();
        let deadline_ms = match self.deadline_header {
            DeadlineHeader::Aws => Some(
                u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
                    + u64::try_from(self.timeout.as_millis()).unwrap_or(60_000),
            ),
            DeadlineHeader::Sent(ms) => Some(ms),
            DeadlineHeader::Missing => None,
        };
        self.shared
            .waiting
            .lock()
            .expect("waiting")
            .insert(id.clone(), sender);
        self.shared.queue.lock().expect("queue").push_back(Pending {
            id: id.clone(),
            payload: payload.to_vec(),
            deadline_ms,
        });
        self.shared.arrived.notify_one();
        let init_failed = self.shared.init_failed.notified();
        tokio::select! {
            answer = receiver => answer.unwrap_or(Invoked::InitFailed("the emulator dropped the invocation".into())),
            status = self.child.wait() => {
                // Everything it logged before exiting is read before the caller looks at it.
                if let Some(reader) = self.log_reader.take() {
                    let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
                }
                Invoked::InitFailed(format!(
                    "the function exited before answering ({status:?}); init error: {:?}",
                    self.shared.init_error.lock().expect("init").clone()
                ))
            }
            () = init_failed => Invoked::InitFailed(self.shared.init_error.lock().expect("init").clone().unwrap_or_default()),
            () = tokio::time::sleep(self.timeout) => Invoked::InitFailed(format!("no answer within {:?}", self.timeout)),
        }
    }

    pub async fn invoke(&mut self, payload: &Value) -> Invoked {
        self.invoke_bytes(payload.to_string().as_bytes()).await
    }

    /// Invokes and expects a report back.
    pub async fn report(&mut self, payload: &Value) -> Value {
        match self.invoke(payload).await {
            Invoked::Response(report) => {
                // Every test run also proves the report events were published.
                assert!(report.get("event_error").is_none(), "{report}");
                report
            }
            other => panic!("expected a response, got {other:?}"),
        }
    }

    pub fn process_id(&self) -> Option<u32> {
        self.child.id()
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
        self.server.abort();
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> (HeaderMap, Vec<u8>) {
    loop {
        let notified = shared.arrived.notified();
        if let Some(pending) = shared.queue.lock().expect("queue").pop_front() {
            let mut headers = HeaderMap::new();
            let header = |value: String| HeaderValue::from_str(&value).expect("header value");
            headers.insert("Lambda-Runtime-Aws-Request-Id", header(pending.id));
            if let Some(deadline_ms) = pending.deadline_ms {
                headers.insert(
                    "Lambda-Runtime-Deadline-Ms",
                    header(deadline_ms.to_string()),
                );
            }
            headers.insert(
                "Lambda-Runtime-Invoked-Function-Arn",
                header(format!(
                    "arn:aws:lambda:{}:{}:function:test",
                    crate::moto::REGION,
                    crate::moto::ACCOUNT
                )),
            );
            headers.insert(
                "Lambda-Runtime-Trace-Id",
                header("Root=1-00000000-000000000000000000000000".into()),
            );
            headers.insert("Content-Type", HeaderValue::from_static("application/json"));
            return (headers, pending.payload);
        }
        notified.await;
    }
}

fn parse(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn finish(shared: &Shared, id: &str, result: Invoked) -> StatusCode {
    match shared.waiting.lock().expect("waiting").remove(id) {
        Some(sender) => {
            let _ = sender.send(result);
            StatusCode::ACCEPTED
        }
        None => StatusCode::BAD_REQUEST,
    }
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    finish(&shared, &id, Invoked::Response(parse(&body)))
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    finish(&shared, &id, Invoked::Error(parse(&body)))
}

async fn init_error(State(shared): State<Arc<Shared>>, body: Bytes) -> StatusCode {
    *shared.init_error.lock().expect("init") = Some(String::from_utf8_lossy(&body).into_owned());
    shared.init_failed.notify_waiters();
    StatusCode::ACCEPTED
}
