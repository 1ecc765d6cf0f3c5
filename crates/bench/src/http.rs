//! A keep-alive HTTP/1 client for the internal API with `TCP_NODELAY` on:
//! without it, a request written in two segments can wait for the peer's
//! delayed ACK (40 ms), which would show up as publish-to-receive latency.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The client; cheap to clone.
#[derive(Debug, Clone)]
pub struct Http {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Http {
            inner: Client::builder(TokioExecutor::new()).build(connector),
        }
    }
}

impl Http {
    /// POSTs a JSON body with a bearer key; returns the status and body.
    pub async fn post_json(
        &self,
        url: &str,
        bearer: &str,
        body: Vec<u8>,
    ) -> anyhow::Result<(u16, String)> {
        let request = Request::post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, format!("Bearer {bearer}"))
            .body(Full::new(Bytes::from(body)))?;
        self.send(request).await
    }

    /// GETs `url`; returns the status and body.
    pub async fn get(&self, url: &str) -> anyhow::Result<(u16, String)> {
        let request = Request::get(url).body(Full::new(Bytes::new()))?;
        self.send(request).await
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> anyhow::Result<(u16, String)> {
        let response = self.inner.request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}
