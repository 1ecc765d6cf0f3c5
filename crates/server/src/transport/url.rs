//! Subscriptions carried in a URL, for transports without client messages
//! (SSE, long-polling): `?sub=<token>&sub=<token>&cursor=<cursor>`.
//!
//! Each token names its app and channel in its claims; tokens are grouped by
//! app into ordinary subscribe messages, so verification, filters, recovery
//! and errors are exactly those of the WebSocket flow. The cursor records
//! `(app, channel, epoch, offset)` per subscription (base64url JSON) and is
//! what `since` is for a WebSocket client.
//!
//! Invariants: the cursor answered carries one position per channel the
//! request's tokens name, no more: the active subscriptions, those the
//! gateway ended, and those refused on this request (which keep the position
//! the incoming cursor gave, so a later request resumes without a gap). Its
//! length is thus bounded by the request's tokens, and a cursor is accepted
//! up to that bound (see [`cursor_limit`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use chouquette_core::publication::ChannelId;
use chouquette_core::session::{ResumePoint, Session};
use chouquette_core::token;
use chouquette_protocol::ErrorCode;
use chouquette_protocol::client::{ChannelRequest, Since, Subscribe};
use chouquette_protocol::server::{self, ErrorContext};

/// Longest cursor accepted whatever the request, in bytes.
pub const MAX_CURSOR_LEN: usize = 16 * 1024;

/// Room per token in the longest cursor accepted, beyond the token's own
/// length: the entry's epoch (8 hex digits from this gateway), offset, JSON
/// punctuation and base64 growth. The token carries the entry's app and
/// channel names in its claims, which take more room in it than in the
/// cursor.
const CURSOR_BYTES_PER_TOKEN: usize = 128;

/// Longest cursor accepted for a request with `tokens`: what a cursor
/// carrying one position per token's channel can need, and never less than
/// [`MAX_CURSOR_LEN`].
pub fn cursor_limit(tokens: &[String]) -> usize {
    tokens
        .iter()
        .map(|t| t.len().saturating_add(CURSOR_BYTES_PER_TOKEN))
        .fold(MAX_CURSOR_LEN, usize::saturating_add)
}

/// The parameters of a URL subscription.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct UrlRequest {
    /// Subscription tokens (`sub`, repeated).
    pub tokens: Vec<String>,
    /// Resume cursor (`cursor`, or the `Last-Event-ID` header).
    pub cursor: Option<String>,
    /// Requested long-poll wait in seconds (`timeout`).
    pub wait_secs: Option<u64>,
}

/// Parses the query string.
pub fn parse_query(query: Option<&str>) -> Result<UrlRequest, String> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
        .map_err(|e| format!("bad query string: {e}"))?;
    let mut request = UrlRequest::default();
    for (key, value) in pairs {
        match key.as_str() {
            "sub" => request.tokens.push(value),
            "cursor" => request.cursor = Some(value),
            "timeout" => {
                request.wait_secs = Some(
                    value
                        .parse()
                        .map_err(|_| "`timeout` must be whole seconds".to_string())?,
                )
            }
            _ => {}
        }
    }
    if request.tokens.is_empty() {
        return Err("at least one `sub=<token>` is required".into());
    }
    Ok(request)
}

/// Encodes every subscription's position.
pub fn encode_cursor(positions: impl Iterator<Item = ResumePoint>) -> String {
    let owned: Vec<ResumePoint> = positions.collect();
    let entries: Vec<(&str, &str, &str, u64)> = owned
        .iter()
        .map(|p| (&*p.channel.app, &*p.channel.name, &*p.epoch, p.offset))
        .collect();
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(&entries).unwrap_or_default())
}

/// Decodes a cursor of at most `limit` bytes into `(app, channel) → since`;
/// a bad cursor is an error.
pub fn decode_cursor(
    cursor: &str,
    limit: usize,
) -> Result<BTreeMap<(String, String), Since>, String> {
    let bad = || "the cursor is not one this gateway issued".to_string();
    if cursor.len() > limit {
        return Err(bad());
    }
    let bytes = URL_SAFE_NO_PAD.decode(cursor.trim()).map_err(|_| bad())?;
    let entries: Vec<(String, String, String, u64)> =
        serde_json::from_slice(&bytes).map_err(|_| bad())?;
    Ok(entries
        .into_iter()
        .map(|(app, channel, epoch, offset)| ((app, channel), Since { epoch, offset }))
        .collect())
}

/// Subscribes `session` to every token, resuming from `cursor` where it
/// names the channel; replies (errors, resets, replays, acks) go to `out`.
/// A channel refused (expired token, `unavailable`, a limit) keeps the
/// position the cursor gave it in the session's positions.
pub async fn subscribe_all(session: &mut Session, request: &UrlRequest, out: &mut Vec<Bytes>) {
    let limit = cursor_limit(&request.tokens);
    let since = match request.cursor.as_deref().map(|c| decode_cursor(c, limit)) {
        None => BTreeMap::new(),
        Some(Ok(map)) => map,
        Some(Err(message)) => {
            out.push(server::error(
                ErrorCode::BadMessage,
                &message,
                ErrorContext::default(),
            ));
            BTreeMap::new()
        }
    };
    let mut by_app: BTreeMap<String, BTreeMap<String, ChannelRequest>> = BTreeMap::new();
    for token in &request.tokens {
        let Some((app, Some(channel))) = token::peek_route(token) else {
            out.push(server::error(
                ErrorCode::InvalidToken,
                "token has no readable `app_id` and `channel` claims",
                ErrorContext::default(),
            ));
            continue;
        };
        let resume = since.get(&(app.clone(), channel.clone())).cloned();
        by_app.entry(app).or_default().insert(
            channel,
            ChannelRequest {
                filters: token.clone(),
                since: resume,
            },
        );
    }
    for (app_id, channels) in by_app {
        let resumes: Vec<ResumePoint> = channels
            .iter()
            .filter_map(|(name, request)| {
                let since = request.since.as_ref()?;
                Some(ResumePoint {
                    channel: ChannelId::new(&app_id, name),
                    epoch: Arc::from(since.epoch.as_str()),
                    offset: since.offset,
                })
            })
            .collect();
        session
            .subscribe(Subscribe { app_id, channels }, None, out)
            .await;
        // Kept only where no subscription holds the channel: refused ones.
        for point in resumes {
            session.keep_position(point);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trip() {
        let positions = vec![ResumePoint {
            channel: ChannelId::new("bluelib", "bornes"),
            epoch: "e1".into(),
            offset: 41,
        }];
        let cursor = encode_cursor(positions.into_iter());
        let map = decode_cursor(&cursor, MAX_CURSOR_LEN).expect("valid");
        let since = &map[&("bluelib".to_string(), "bornes".to_string())];
        assert_eq!(since.offset, 41);
        assert_eq!(since.epoch, "e1");
        assert!(decode_cursor("!!", MAX_CURSOR_LEN).is_err());
        assert!(decode_cursor(&URL_SAFE_NO_PAD.encode("{}"), MAX_CURSOR_LEN).is_err());
    }

    #[test]
    fn query_needs_a_token() {
        assert!(parse_query(Some("cursor=x")).is_err());
        let r = parse_query(Some("sub=a&sub=b&timeout=3")).expect("valid");
        assert_eq!(r.tokens, vec!["a", "b"]);
        assert_eq!(r.wait_secs, Some(3));
    }
}
