//! One exchange with a backend, and what its answer means for the client:
//! 2xx JSON is the `result` (an empty body is `null`), 4xx a refusal with
//! the backend's own `code` and `message` when its JSON body has usable
//! ones, anything else a failure with a code of its own.

use bytes::Bytes;
use chouquette_core::rpc::{Answer, Failure, backend_code, backend_message};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::Request;
use hyper::header::CONTENT_LENGTH;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use serde::Deserialize;
use serde_json::value::RawValue;

/// A failure, with the detail that goes to the logs only.
#[derive(Debug)]
pub(super) struct Trouble {
    pub failure: Failure,
    pub detail: String,
    /// Whether sending the call again could help, and on which routes.
    pub retry: Retry,
}

/// Whether a failed call may be sent again within its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retry {
    /// The answer was the backend's own (or the time is up): never.
    Never,
    /// The request never left the gateway (no connection): on every route.
    NotSent,
    /// The backend may have run the call (a dropped connection, a 502, 503
    /// or 504 while it restarts): only on idempotent routes.
    MaybeRan,
}

impl Trouble {
    pub(super) fn new(failure: Failure, detail: impl Into<String>) -> Trouble {
        Trouble {
            failure,
            detail: detail.into(),
            retry: Retry::Never,
        }
    }

    fn retry(mut self, retry: Retry) -> Trouble {
        self.retry = retry;
        self
    }

    /// Whether a call on a route that is (or is not) idempotent may go again.
    pub(super) fn retryable(&self, idempotent: bool) -> bool {
        match self.retry {
            Retry::Never => false,
            Retry::NotSent => true,
            Retry::MaybeRan => idempotent,
        }
    }
}

/// Sends `request` and reads at most `max` bytes of answer.
pub(super) async fn exchange(
    client: &Client<HttpConnector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
    max: usize,
) -> Result<Answer, Trouble> {
    let response = client.request(request).await.map_err(|e| {
        let retry = if e.is_connect() {
            Retry::NotSent
        } else {
            Retry::MaybeRan
        };
        Trouble::new(Failure::Unreachable, e.to_string()).retry(retry)
    })?;
    let status = response.status().as_u16();
    let declared = response
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large(max));
    }
    let body = Limited::new(response.into_body(), max)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                too_large(max)
            } else {
                Trouble::new(Failure::Unreachable, format!("answer cut short: {e}"))
                    .retry(Retry::MaybeRan)
            }
        })?
        .to_bytes();
    interpret(status, &body)
}

fn too_large(max: usize) -> Trouble {
    Trouble::new(Failure::TooLarge, format!("answer over {max} bytes"))
}

/// The 4xx body a backend may send to give the client a code.
#[derive(Deserialize)]
struct Refusal {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<serde_json::Value>,
}

fn text(v: Option<serde_json::Value>) -> Option<String> {
    match v {
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    }
}

/// What an answer with `status` and `body` means for the client.
pub(super) fn interpret(status: u16, body: &[u8]) -> Result<Answer, Trouble> {
    match status {
        200..=299 => {
            let body = if body.iter().all(u8::is_ascii_whitespace) {
                &b"null"[..]
            } else {
                body
            };
            serde_json::from_slice::<Box<RawValue>>(body)
                .map(Answer::Result)
                .map_err(|e| Trouble::new(Failure::NotJson, format!("{status}: {e}")))
        }
        400..=499 => {
            let refusal = serde_json::from_slice::<Refusal>(body).ok();
            let (code, message) = refusal.map_or((None, None), |r| (text(r.code), text(r.message)));
            Ok(Answer::Refused {
                code: code.as_deref().and_then(backend_code),
                message: message.as_deref().and_then(backend_message),
            })
        }
        _ => {
            let detail = format!(
                "status {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            );
            // What a proxy or a restarting server answers while the backend
            // is away: worth another try where the method allows it.
            let retry = if matches!(status, 502..=504) {
                Retry::MaybeRan
            } else {
                Retry::Never
            };
            Err(Trouble::new(Failure::BackendError, detail).retry(retry))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(status: u16, body: &str) -> Option<Failure> {
        interpret(status, body.as_bytes()).err().map(|t| t.failure)
    }

    #[test]
    fn statuses_and_bodies_map_to_their_codes() {
        assert!(matches!(interpret(200, b"[1]"), Ok(Answer::Result(r)) if r.get() == "[1]"));
        assert!(matches!(interpret(204, b""), Ok(Answer::Result(r)) if r.get() == "null"));
        assert_eq!(failure(200, "<html>"), Some(Failure::NotJson));
        assert_eq!(failure(500, "{}"), Some(Failure::BackendError));
        assert_eq!(failure(302, ""), Some(Failure::BackendError));
        let Ok(Answer::Refused { code, message }) =
            interpret(404, br#"{"code":"no_such_room","message":"no room 7"}"#)
        else {
            panic!("a refusal")
        };
        assert_eq!(
            (code.as_deref(), message.as_deref()),
            (Some("no_such_room"), Some("no room 7"))
        );
        let Ok(Answer::Refused { code, message }) = interpret(400, br#"{"code":"<script>"}"#)
        else {
            panic!("a refusal")
        };
        assert_eq!((code, message), (None, None));
    }
}
