//! Local HTTP endpoints for the health probes: healthy, failing, slow, wrong body, invalid JSON,
//! hanging, and a closed port.

use std::time::Duration;

use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::json;

pub struct Endpoints {
    /// `http://127.0.0.1:<port>`
    pub base: String,
    /// A URL on a port nothing listens on.
    pub closed: String,
    server: tokio::task::JoinHandle<()>,
}

impl Endpoints {
    pub async fn start() -> Self {
        let healthy =
            || json!({"status": "healthy", "database": "connected", "queue_depth": 5}).to_string();
        let app = Router::new()
            .route("/health", get(move || async move { healthy() }))
            .route(
                "/error",
                get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
            )
            .route(
                "/slow/{ms}",
                get(|Path(ms): Path<u64>| async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    json!({"status": "healthy", "database": "connected", "queue_depth": 5})
                        .to_string()
                }),
            )
            .route(
                "/degraded",
                get(|| async {
                    json!({"status": "degraded", "database": "connected", "queue_depth": 500})
                        .to_string()
                }),
            )
            .route("/invalid-json", get(|| async { "<html>not json</html>" }))
            .route(
                "/hang",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(120)).await;
                    "late"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let closed = {
            let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            format!("http://{}/health", unused.local_addr().expect("address"))
        };
        Self {
            base,
            closed,
            server,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Endpoints {
    fn drop(&mut self) {
        self.server.abort();
    }
}
