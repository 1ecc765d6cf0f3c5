//! Error, reset and close codes: defined once, used by server, docs and clients.
//!
//! Each code says what a client should do next: fix its message, fetch a new
//! subscription from its backend, slow down, or reconnect and resume.

use serde::Serialize;

/// The `code` of an `error` message (docs/protocol.md, "Errors and closes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Not JSON, no class, wrong shape, or too large. Fix the message.
    BadMessage,
    /// The `app_id` is not configured on this gateway.
    UnknownApp,
    /// The token is malformed, forged, for another app, or uses a refused algorithm.
    InvalidToken,
    /// The token's `exp` has passed: fetch a fresh subscription from the backend.
    TokenExpired,
    /// The token was signed for another channel than the one it is given under.
    WrongChannel,
    /// The token does not grant this action.
    NotAllowed,
    /// Too many messages or connections: slow down.
    RateLimited,
    /// The connection already holds its maximum number of subscriptions.
    TooManySubscriptions,
    /// A kill switch is in force for this scope.
    Disabled,
    /// The gateway cannot serve this now (broker down, shutting down, no
    /// RPC route for a call's method).
    Unavailable,
    /// A call's backend refused it (4xx) without a code of its own.
    CallRefused,
    /// A call's backend failed (5xx, or a status that is no answer).
    BackendError,
    /// A call's backend could not be reached (refused or dropped connection).
    BackendUnavailable,
    /// A call's backend did not answer within the route's timeout.
    BackendTimeout,
    /// A call's backend answered with a body that is not JSON.
    BadBackendAnswer,
    /// A call's backend answered more than the gateway forwards.
    BackendAnswerTooLarge,
    /// A user-to-user `message` names more recipients than the app allows
    /// (its groups counted by their members): send to fewer.
    TooManyRecipients,
}

impl ErrorCode {
    /// Every code, in a stable order (metrics labels, docs).
    pub const ALL: [ErrorCode; 17] = [
        ErrorCode::BadMessage,
        ErrorCode::UnknownApp,
        ErrorCode::InvalidToken,
        ErrorCode::TokenExpired,
        ErrorCode::WrongChannel,
        ErrorCode::NotAllowed,
        ErrorCode::RateLimited,
        ErrorCode::TooManySubscriptions,
        ErrorCode::Disabled,
        ErrorCode::Unavailable,
        ErrorCode::CallRefused,
        ErrorCode::BackendError,
        ErrorCode::BackendUnavailable,
        ErrorCode::BackendTimeout,
        ErrorCode::BadBackendAnswer,
        ErrorCode::BackendAnswerTooLarge,
        ErrorCode::TooManyRecipients,
    ];

    /// The wire spelling of the code.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadMessage => "bad_message",
            ErrorCode::UnknownApp => "unknown_app",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::WrongChannel => "wrong_channel",
            ErrorCode::NotAllowed => "not_allowed",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::TooManySubscriptions => "too_many_subscriptions",
            ErrorCode::Disabled => "disabled",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::CallRefused => "call_refused",
            ErrorCode::BackendError => "backend_error",
            ErrorCode::BackendUnavailable => "backend_unavailable",
            ErrorCode::BackendTimeout => "backend_timeout",
            ErrorCode::BadBackendAnswer => "bad_backend_answer",
            ErrorCode::BackendAnswerTooLarge => "backend_answer_too_large",
            ErrorCode::TooManyRecipients => "too_many_recipients",
        }
    }

    /// Position in [`ErrorCode::ALL`], for per-code counters.
    pub fn index(self) -> usize {
        ErrorCode::ALL
            .iter()
            .position(|c| *c == self)
            .unwrap_or_default()
    }
}

/// The `reason` of a `reset` message (docs/protocol.md, "Subscribing": resume and reset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ResetReason {
    /// History no longer reaches back to the client's offset, or the epoch changed.
    HistoryGap,
    /// The gateway lost its broker; events may be missed until `broker_restored`.
    BrokerUnavailable,
    /// The broker is back; events published meanwhile may have been missed.
    BrokerRestored,
    /// A kill switch was switched off for this scope.
    Disabled,
    /// The gateway is stopping: reconnect elsewhere and resume.
    Shutdown,
}

impl ResetReason {
    /// The wire spelling of the reason.
    pub fn as_str(self) -> &'static str {
        match self {
            ResetReason::HistoryGap => "history_gap",
            ResetReason::BrokerUnavailable => "broker_unavailable",
            ResetReason::BrokerRestored => "broker_restored",
            ResetReason::Disabled => "disabled",
            ResetReason::Shutdown => "shutdown",
        }
    }
}

/// WebSocket close codes the gateway uses, with the reason text it sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseCode {
    /// 1001: the gateway is shutting down; reconnect (elsewhere) and resume.
    GoingAway,
    /// 1008: the client kept sending bad messages past the configured limit.
    PolicyViolation,
    /// 1009: a frame larger than the hard frame limit.
    MessageTooBig,
    /// 1011: an internal error on the gateway.
    InternalError,
    /// 1013: the client did not read fast enough (slow consumer) or the
    /// gateway is full; reconnect with backoff and resume with `since`.
    TryAgainLater,
}

impl CloseCode {
    /// The numeric close code (RFC 6455 section 7.4).
    pub fn code(self) -> u16 {
        match self {
            CloseCode::GoingAway => 1001,
            CloseCode::PolicyViolation => 1008,
            CloseCode::MessageTooBig => 1009,
            CloseCode::InternalError => 1011,
            CloseCode::TryAgainLater => 1013,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_spelling_matches_serde() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).expect("serializes");
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(ErrorCode::ALL[code.index()], code);
        }
    }
}
