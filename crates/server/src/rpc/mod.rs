//! RPC to HTTP backends: the core's [`Backends`] over the hyper-util client
//! (docs/rpc.md). Each call is one `POST` of
//! `{"method","args","kwargs","user"}` to its route's URL, signed with the
//! app's first secret (see [`chouquette_core::rpc::signature`]); the answer
//! is read in full, within the route's timeout and up to a bound, and
//! turned into the client's `result` or `error`. What the backend said
//! beyond a 4xx's code and message, and where it is, stays in the logs.

mod answer;

use std::sync::Arc;
use std::time::{Duration, Instant};

use answer::Trouble;
use bytes::Bytes;
use chouquette_core::clock::unix_now;
use chouquette_core::node::Node;
use chouquette_core::rpc::signature::{SIGNATURE_HEADER, sign};
use chouquette_core::rpc::{Answer, AnswerFuture, BackendCall, Backends, Failure, Rpc};
use http_body_util::Full;
use hyper::Request;
use hyper::header::CONTENT_TYPE;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;

use crate::config::Config;

/// The node with the config's RPC routes through HTTP backends.
pub fn with_routes(node: Node, config: &Config) -> Node {
    let backends = HttpBackends::new(config.limits.max_publish_bytes);
    node.with_rpc(Rpc::new(config.rpc_routes(), Arc::new(backends)))
}

/// Backends reached over plain HTTP/1 with kept-alive connections.
#[derive(Debug, Clone)]
pub struct HttpBackends {
    client: Client<HttpConnector, Full<Bytes>>,
    /// Largest answer body read; a larger one is `backend_answer_too_large`
    /// (the config's `max_publish_bytes`, which every connection can write).
    max_answer_bytes: usize,
}

impl HttpBackends {
    /// A client whose answers may be up to `max_answer_bytes`.
    pub fn new(max_answer_bytes: usize) -> HttpBackends {
        // Without TCP_NODELAY a request written in two segments can wait
        // for the backend's delayed ACK (40 ms) on every call.
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        HttpBackends {
            client: Client::builder(TokioExecutor::new()).build(connector),
            max_answer_bytes,
        }
    }
}

impl Backends for HttpBackends {
    fn call(&self, call: BackendCall) -> AnswerFuture {
        let this = self.clone();
        Box::pin(async move { this.send(call).await })
    }
}

/// The request body, with these keys exactly (OPERATING.md "RPC routes").
#[derive(Serialize)]
struct Body<'a> {
    method: &'a str,
    args: &'a [serde_json::Value],
    kwargs: &'a serde_json::Map<String, serde_json::Value>,
    user: User<'a>,
}

/// The caller's identity, from its `connect`.
#[derive(Serialize)]
struct User<'a> {
    app_id: &'a str,
    user_id: &'a str,
    groups: &'a [String],
}

/// The signed request for `call`, or why none could be built.
fn request(call: &BackendCall, now: u64) -> Result<Request<Full<Bytes>>, String> {
    let body = serde_json::to_vec(&Body {
        method: &call.method,
        args: &call.args,
        kwargs: &call.kwargs,
        user: User {
            app_id: &call.identity.app,
            user_id: &call.identity.user,
            groups: &call.identity.groups,
        },
    })
    .map_err(|e| e.to_string())?;
    let secret = call.app.secrets.first().map_or(&[][..], Vec::as_slice);
    Request::post(&*call.route.url)
        .header(CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, sign(secret, now, &body))
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())
}

/// First pause before a call is sent again; it doubles up to
/// [`MAX_RETRY_PAUSE`], always within the route's timeout.
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(50);
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

impl HttpBackends {
    /// Sends `call`, again after a failure that another try may cure (a
    /// backend restarting: see [`answer::Retry`]), until the route's
    /// timeout: a backend upgrade costs clients a pause, not an error.
    async fn send(&self, call: BackendCall) -> Answer {
        let route = &call.route;
        let deadline = Instant::now() + route.timeout;
        let mut pause = FIRST_RETRY_PAUSE;
        loop {
            let trouble = match self.try_once(&call, deadline).await {
                Ok(answer) => return answer,
                Err(trouble) => trouble,
            };
            let again = trouble.retryable(route.idempotent) && Instant::now() + pause < deadline;
            tracing::warn!(
                app = %call.app.id,
                prefix = %route.prefix,
                url = %route.url,
                detail = %trouble.detail,
                again,
                "rpc: call failed"
            );
            if !again {
                return Answer::Failed(trouble.failure);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
        }
    }

    /// One signed request (signed anew: its timestamp is when it is sent),
    /// answered before `deadline`.
    async fn try_once(&self, call: &BackendCall, deadline: Instant) -> Result<Answer, Trouble> {
        let request = request(call, unix_now()).map_err(|e| {
            Trouble::new(
                Failure::BackendError,
                format!("cannot build the request: {e}"),
            )
        })?;
        let exchange = answer::exchange(&self.client, request, self.max_answer_bytes);
        match tokio::time::timeout_at(deadline.into(), exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(Trouble::new(Failure::Timeout, "no full answer in time")),
        }
    }
}
