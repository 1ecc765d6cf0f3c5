//! `[apps.devices.webhook]`: each liveness event an app's devices cause,
//! POSTed to its backend, signed as RPC calls are (docs/rpc.md, "Verifying
//! the caller": `X-Chouquette-Signature: t=<unix seconds>,v1=<hex>`,
//! HMAC-SHA256 with the app's first secret of `<t>.` and the body).
//!
//! The body is the published event: `{app_id, channel, event_kind,
//! keywords, key, data, epoch, offset}`. Each app has one sender task and
//! a queue of [`QUEUE`] events; an event finding it full is dropped
//! (counted `dropped`, logged): the event is still on the channel, in
//! history and state, where the backend can read it. A POST answered
//! other than 2xx, or not in `timeout`, is tried again twice (pauses of
//! 0.2 s then 0.4 s), then counted `failed` and logged.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chouquette_core::clock::unix_now;
use chouquette_core::node::Node;
use chouquette_core::publication::{NewEvent, Position};
use chouquette_core::rpc::signature::{SIGNATURE_HEADER, sign};
use http_body_util::Full;
use hyper::Request;
use hyper::header::CONTENT_TYPE;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::Config;

/// Events waiting for an app's webhook.
pub const QUEUE: usize = 1024;
/// Tries of one POST.
const TRIES: u32 = 3;

/// One app's webhook endpoint.
#[derive(Debug, Clone)]
struct Endpoint {
    url: String,
    timeout: Duration,
    secret: Vec<u8>,
}

/// The senders of every app's webhook.
#[derive(Debug, Clone, Default)]
pub struct Webhooks {
    queues: HashMap<Arc<str>, mpsc::Sender<Vec<u8>>>,
}

#[derive(Serialize)]
struct Body<'a> {
    app_id: &'a str,
    channel: &'a str,
    event_kind: &'a str,
    keywords: &'a [String],
    key: Option<&'a str>,
    data: &'a serde_json::value::RawValue,
    epoch: Option<&'a str>,
    offset: Option<u64>,
}

impl Webhooks {
    /// The webhooks of `config`'s apps, each with its sender task (their
    /// abort handles are returned, to end them with the node).
    pub fn start(config: &Config, node: &Arc<Node>) -> (Webhooks, Vec<tokio::task::AbortHandle>) {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let mut webhooks = Webhooks::default();
        let mut tasks = Vec::new();
        for app in &config.apps {
            let Some(webhook) = app.devices.as_ref().and_then(|d| d.webhook.as_ref()) else {
                continue;
            };
            let endpoint = Endpoint {
                url: webhook.url.clone(),
                timeout: webhook.timeout,
                secret: app
                    .secrets
                    .first()
                    .map(|s| s.as_bytes().to_vec())
                    .unwrap_or_default(),
            };
            let id: Arc<str> = app.id.as_str().into();
            let (tx, rx) = mpsc::channel(QUEUE);
            webhooks.queues.insert(id.clone(), tx);
            let task = deliver(node.clone(), id, endpoint, client.clone(), rx);
            tasks.push(tokio::spawn(task).abort_handle());
        }
        (webhooks, tasks)
    }

    /// Queues `event` (published at `position`) for `app`'s webhook, if
    /// it has one.
    pub fn send(&self, node: &Node, app: &Arc<str>, event: NewEvent, position: Option<Position>) {
        let Some(queue) = self.queues.get(app) else {
            return;
        };
        let body = Body {
            app_id: &event.app_id,
            channel: &event.channel,
            event_kind: &event.event_kind,
            keywords: &event.keywords,
            key: event.key.as_deref(),
            data: &event.data,
            epoch: position.as_ref().map(|p| &*p.epoch),
            offset: position.as_ref().map(|p| p.offset),
        };
        let Ok(body) = serde_json::to_vec(&body) else {
            return;
        };
        if queue.try_send(body).is_err() {
            node.devices().webhook(app, "dropped");
            tracing::warn!(app = %app, "devices: webhook queue full; event not POSTed");
        }
    }
}

/// Sends `app`'s queued events one after the other.
async fn deliver(
    node: Arc<Node>,
    app: Arc<str>,
    endpoint: Endpoint,
    client: Client<HttpConnector, Full<Bytes>>,
    mut queue: mpsc::Receiver<Vec<u8>>,
) {
    while let Some(body) = queue.recv().await {
        let mut pause = Duration::from_millis(200);
        let mut outcome = "failed";
        for attempt in 1..=TRIES {
            match post(&client, &endpoint, &body).await {
                Ok(()) => {
                    outcome = "delivered";
                    break;
                }
                Err(e) => {
                    tracing::warn!(app = %app, url = %endpoint.url, attempt, error = %e,
                        "devices: webhook POST failed");
                }
            }
            if attempt < TRIES {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
        node.devices().webhook(&app, outcome);
    }
}

/// One signed POST, answered 2xx within the timeout.
async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    endpoint: &Endpoint,
    body: &[u8],
) -> Result<(), String> {
    let request = Request::post(&endpoint.url)
        .header(CONTENT_TYPE, "application/json")
        .header(SIGNATURE_HEADER, sign(&endpoint.secret, unix_now(), body))
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        // Read the answer to its end so the connection can be reused.
        let _ = http_body_util::BodyExt::collect(response.into_body()).await;
        if status.is_success() {
            Ok(())
        } else {
            Err(format!("answered {status}"))
        }
    };
    tokio::time::timeout(endpoint.timeout, exchange)
        .await
        .map_err(|_| "no answer in time".to_string())?
}
