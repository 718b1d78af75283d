//! The function's side of the Lambda Runtime API (version 2018-06-01): take the next invocation,
//! hand its event to the function, post the answer or the error. Written here rather than taken
//! from `lambda_runtime`, whose loop panics on an invocation without a
//! `lambda-runtime-deadline-ms` header (as some local emulators send it) before any handler
//! could treat the deadline as unknown; the HTTP client is AWS's own
//! (`lambda_runtime_api_client`).

use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;

use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use lambda_runtime_api_client::body::Body;
use lambda_runtime_api_client::{PooledClient, build_request};
use serde_json::{Value, json};

use super::Error;

const NEXT: &str = "/2018-06-01/runtime/invocation/next";

/// One invocation as the Runtime API hands it over.
pub struct Invocation {
    pub request_id: String,
    /// `lambda-runtime-deadline-ms`, if the header was there and a number.
    pub deadline_ms: Option<u64>,
    pub event: Value,
}

/// What the function answers: its output, or an error (`errorType`, `errorMessage`) that Lambda
/// treats as a failed invocation (and retries, for an asynchronous one).
pub type Answer = Result<Value, (&'static str, String)>;

/// Serves invocations one after another until the Runtime API fails.
pub async fn run<F, Fut>(handle: F) -> Result<(), Error>
where
    F: Fn(Invocation) -> Fut,
    Fut: Future<Output = Answer>,
{
    let endpoint = std::env::var("AWS_LAMBDA_RUNTIME_API").map_err(|_| {
        "AWS_LAMBDA_RUNTIME_API is not set: run the function on Lambda or under a Runtime API \
         emulator (`cargo lambda watch`)"
    })?;
    let endpoint = http::Uri::try_from(endpoint.as_str())
        .map_err(|err| format!("AWS_LAMBDA_RUNTIME_API={endpoint:?} is not an address: {err}"))?;
    let api = PooledClient::builder().with_endpoint(endpoint).build();
    loop {
        let next = api.call(request(Method::GET, NEXT, Body::empty())?).await?;
        let (parts, body) = next.into_parts();
        // A local emulator's way of saying "nothing yet" (cargo lambda's, in its debug mode):
        // asked again shortly, not in a busy loop.
        if parts.status == StatusCode::NO_CONTENT {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        }
        if parts.status != StatusCode::OK {
            return Err(format!("the Runtime API answered {} to {NEXT}", parts.status).into());
        }
        let body = body.collect().await?.to_bytes();
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|value| value.to_str().ok())
        };
        // Without its id an invocation cannot be answered; Lambda always sends it.
        let request_id = header("lambda-runtime-aws-request-id")
            .ok_or("the Runtime API sent an invocation without lambda-runtime-aws-request-id")?
            .to_string();
        let deadline_ms = header("lambda-runtime-deadline-ms").and_then(|ms| ms.parse().ok());
        let answer = match serde_json::from_slice::<Value>(&body) {
            // A panic answers its invocation as an error, and the next is served, as
            // lambda_runtime did: a crash would cost a cold start and lose the log line.
            Ok(event) => AssertUnwindSafe(handle(Invocation {
                request_id: request_id.clone(),
                deadline_ms,
                event,
            }))
            .catch_unwind()
            .await
            .unwrap_or_else(|panic| {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(request_id = %request_id, "the function panicked: {message}");
                Err(("Runtime.Panic", format!("the function panicked: {message}")))
            }),
            Err(err) => Err((
                "Runtime.InvalidEvent",
                format!("the event is not JSON: {err}"),
            )),
        };
        post(&api, &request_id, answer).await?;
    }
}

/// Posts the answer; one the Runtime API refuses (too large, say) is posted as an error instead,
/// so that the invocation ends now rather than at its timeout. A refused error is logged and the
/// next invocation served (Lambda has ended this one); only a Runtime API that cannot be reached
/// stops the function.
async fn post(api: &PooledClient, request_id: &str, answer: Answer) -> Result<(), Error> {
    let (path, body) = match &answer {
        Ok(output) => ("response", output.clone()),
        Err((kind, message)) => ("error", json!({"errorType": kind, "errorMessage": message})),
    };
    let path = format!("/2018-06-01/runtime/invocation/{request_id}/{path}");
    let posted = api
        .call(request(Method::POST, &path, Body::from(body.to_string()))?)
        .await?;
    let status = posted.status();
    if status.is_success() {
        return Ok(());
    }
    if answer.is_err() {
        tracing::error!(request_id, %status, "the Runtime API refused the invocation's error");
        return Ok(());
    }
    tracing::error!(request_id, %status, "the Runtime API refused the answer; posting an error instead");
    let refused = format!(
        "the Runtime API refused the function's answer ({status}): its log line holds the report"
    );
    Box::pin(post(
        api,
        request_id,
        Err(("Runtime.AnswerRefused", refused)),
    ))
    .await
}

fn request(method: Method, path: &str, body: Body) -> Result<Request<Body>, Error> {
    Ok(build_request()
        .method(method)
        .uri(path)
        .header("content-type", "application/json")
        .body(body)?)
}
