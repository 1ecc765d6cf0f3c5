//! The webhook digest: one POST per user to the app's backend,
//! `{"app_id", "user_id", "notifications": [...]}` where each notification
//! is the `notification` message a client gets, signed as RPC calls are
//! (`X-Chouquette-Signature` with the app's first secret, docs/rpc.md). A
//! 2xx answer means the backend took them; anything else is retried later.

use std::time::Duration;

use bytes::Bytes;
use chouquette_core::clock::unix_now;
use chouquette_core::notifications::{Entry, frame};
use chouquette_core::rpc::signature::{SIGNATURE_HEADER, sign};
use http_body_util::Full;
use hyper::Request;
use hyper::header::CONTENT_TYPE;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::value::RawValue;

use super::email::SendError;
use crate::config::FallbackWebhookConfig as WebhookConfig;
use crate::config::fallback::DEFAULT_TIMEOUT;

/// One app's webhook.
pub struct Webhook {
    url: String,
    timeout: Duration,
    secret: Vec<u8>,
    client: Client<HttpConnector, Full<Bytes>>,
}

#[derive(serde::Serialize)]
struct Body<'a> {
    app_id: &'a str,
    user_id: &'a str,
    notifications: Vec<Box<RawValue>>,
}

impl Webhook {
    /// From the config, signing with `secret` (the app's first).
    pub fn new(config: &WebhookConfig, secret: Vec<u8>) -> Webhook {
        Webhook {
            url: config.url.clone(),
            timeout: config.timeout.unwrap_or(DEFAULT_TIMEOUT),
            secret,
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }

    /// The signed body for `entries` of `user` of `app`.
    pub fn body(app: &str, user: &str, entries: &[Entry]) -> Vec<u8> {
        let notifications = entries
            .iter()
            .filter_map(|e| String::from_utf8(frame(e).to_vec()).ok())
            .filter_map(|text| RawValue::from_string(text).ok())
            .collect();
        serde_json::to_vec(&Body {
            app_id: app,
            user_id: user,
            notifications,
        })
        .unwrap_or_default()
    }

    /// POSTs the digest of `entries` to `user`'s backend.
    pub async fn send(&self, app: &str, user: &str, entries: &[Entry]) -> Result<(), SendError> {
        let body = Webhook::body(app, user, entries);
        let request = Request::post(&self.url)
            .header(CONTENT_TYPE, "application/json")
            .header(SIGNATURE_HEADER, sign(&self.secret, unix_now(), &body))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError::Retry(e.to_string()))?;
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Ok(Ok(answer)) if answer.status().is_success() => Ok(()),
            Ok(Ok(answer)) => Err(SendError::Retry(format!(
                "the backend answered {}",
                answer.status()
            ))),
            Ok(Err(e)) => Err(SendError::Retry(e.to_string())),
            Err(_) => Err(SendError::Retry(
                "the backend did not answer in time".into(),
            )),
        }
    }
}
