//! A minimal HTTP/1 client for the internal API (the `publish` command, the
//! bench and tests): plain HTTP on the internal listener, JSON bodies.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::header::{AUTHORIZATION, CONTENT_TYPE};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Why a request failed before an answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL or request could not be built.
    #[error("bad request: {0}")]
    Request(String),
    /// The connection or exchange failed.
    #[error("request failed: {0}")]
    Transport(String),
}

/// A reusable client (keeps connections alive).
#[derive(Debug, Clone)]
pub struct HttpClient {
    inner: Client<HttpConnector, Full<Bytes>>,
}

impl Default for HttpClient {
    fn default() -> Self {
        HttpClient {
            inner: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl HttpClient {
    /// POSTs `body` as JSON with a bearer key; returns the status and body.
    pub async fn post_json(
        &self,
        url: &str,
        bearer: &str,
        body: Vec<u8>,
    ) -> Result<(u16, String), HttpError> {
        let request = Request::post(url)
            .header(CONTENT_TYPE, "application/json")
            .header(AUTHORIZATION, format!("Bearer {bearer}"))
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| HttpError::Request(e.to_string()))?;
        self.send(request).await
    }

    /// Sends `body` as JSON with `method` (`DELETE` with a body, say) and
    /// an optional bearer key; returns the status and body.
    pub async fn send_json(
        &self,
        method: &str,
        url: &str,
        bearer: Option<&str>,
        body: Vec<u8>,
    ) -> Result<(u16, String), HttpError> {
        let mut request = Request::builder()
            .method(method)
            .uri(url)
            .header(CONTENT_TYPE, "application/json");
        if let Some(b) = bearer {
            request = request.header(AUTHORIZATION, format!("Bearer {b}"));
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| HttpError::Request(e.to_string()))?;
        self.send(request).await
    }

    /// GETs `url` (optionally with a bearer key); returns the status and body.
    pub async fn get(&self, url: &str, bearer: Option<&str>) -> Result<(u16, String), HttpError> {
        let mut request = Request::get(url);
        if let Some(b) = bearer {
            request = request.header(AUTHORIZATION, format!("Bearer {b}"));
        }
        let request = request
            .body(Full::new(Bytes::new()))
            .map_err(|e| HttpError::Request(e.to_string()))?;
        self.send(request).await
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<(u16, String), HttpError> {
        let response = self
            .inner
            .request(request)
            .await
            .map_err(|e| HttpError::Transport(e.to_string()))?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| HttpError::Transport(e.to_string()))?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}
