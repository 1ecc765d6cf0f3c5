//! A real HTTP backend on loopback for the gateway to call: the tests'
//! stand-in for a Django app behind the edge proxy (and, later, RPC routes
//! and connect auth). It is an ordinary axum server: the gateway talks to
//! it over a real socket, exactly as to a production backend.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use futures_util::stream;
use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;

/// A backend serving `router` on 127.0.0.1, stopped when dropped.
#[derive(Debug)]
pub struct Backend {
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Backend {
    /// Serves `router` on a free loopback port.
    pub async fn start(router: Router) -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a backend port");
        let addr = listener.local_addr().expect("backend address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Backend { addr, task }
    }

    /// Serves `router` on `addr`: a backend started again where the gateway
    /// already sends its calls, as after an upgrade.
    pub async fn start_on(addr: SocketAddr, router: Router) -> Backend {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind the backend's port");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        Backend { addr, task }
    }

    /// The echo backend of [`echo_router`].
    pub async fn echo() -> Backend {
        Backend::start(echo_router()).await
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Every path answers what it received as JSON (`method`, `uri`, `headers`
/// with lower-case names, `body_len`), except:
/// - a path ending in `/slow`: the same, three seconds late;
/// - a path ending in `/stream`: `first\n`, then two seconds later
///   `second\n` (to see that answers are streamed, not buffered).
pub fn echo_router() -> Router {
    Router::new()
        .route("/", any(echo))
        .route("/{*path}", any(echo))
}

async fn echo(request: Request) -> Response {
    let path = request.uri().path().to_string();
    if path.ends_with("/stream") {
        return streamed().into_response();
    }
    if path.ends_with("/slow") {
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let headers: Map<String, Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v.to_str().unwrap_or("?"))))
        .collect();
    axum::Json(json!({
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "headers": headers,
        "body_len": body.len(),
    }))
    .into_response()
}

fn streamed() -> Body {
    let chunks = stream::unfold(0u8, |n| async move {
        match n {
            0 => Some((Ok::<_, std::io::Error>(Bytes::from_static(b"first\n")), 1)),
            1 => {
                tokio::time::sleep(Duration::from_secs(2)).await;
                Some((Ok(Bytes::from_static(b"second\n")), 2))
            }
            _ => None,
        }
    });
    Body::from_stream(chunks)
}
