//! Who may see what: a token checked against the app and channel it is
//! presented for.
//!
//! Pure: no I/O, no state, the time passed in, so every refusal is a unit
//! test. A refusal carries the protocol's [`ErrorCode`] the client is sent;
//! limits, kill switches and the broker come later (the subscription
//! registry and recovery), once the token has said what it grants.

use std::sync::Arc;

use chouquette_protocol::ErrorCode;

use crate::app::App;
use crate::connections::Identity;
use crate::filter::Filter;
use crate::publication::valid_name;
use crate::session::publish::PublishGrant;
use crate::token::{self, Claims, Requirements, TokenError};

/// Why a request was refused, as the client is told.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The protocol's error code.
    pub code: ErrorCode,
    /// The human-readable reason.
    pub message: String,
}

impl Refusal {
    /// A refusal with `code`, explained by `message`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

impl From<TokenError> for Refusal {
    fn from(e: TokenError) -> Refusal {
        match e {
            TokenError::Expired => Refusal::new(ErrorCode::TokenExpired, "token expired"),
            other => Refusal::new(ErrorCode::InvalidToken, other.to_string()),
        }
    }
}

/// What a subscription token lets its holder see, and who holds it.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The events it may see.
    pub filter: Arc<Filter>,
    /// The token's `sub`.
    pub user: Option<Box<str>>,
    /// The token's `groups`, for kill switches.
    pub groups: Box<[String]>,
    /// When the subscription ends (token `exp`).
    pub exp: Option<u64>,
    /// The channel is notify-only (its policy): frames without `data`.
    pub notify_only: bool,
}

/// When a token is checked: the time, and the clock skew tolerated on its
/// `exp` and `nbf`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenClock {
    /// Seconds since the Unix epoch.
    pub now: u64,
    /// Seconds of skew tolerated (config `[tokens] leeway`).
    pub leeway: u64,
}

impl TokenClock {
    /// Whether a token that expires at `exp` no longer holds: `leeway`
    /// after `exp`, as [`token::verify`] counts it.
    pub fn expired(&self, exp: u64) -> bool {
        exp.saturating_add(self.leeway) <= self.now
    }
}

/// What subscribing to channel `name` of `app` with `token` grants at
/// `clock`, or why it is refused.
pub fn authorize(app: &App, name: &str, token: &str, clock: TokenClock) -> Result<Grant, Refusal> {
    if !valid_name(name) {
        return Err(Refusal::new(ErrorCode::BadMessage, "invalid channel name"));
    }
    let claims = verify(app, token, clock)?;
    let Some(granted) = claims.channel.as_deref() else {
        return Err(missing("channel"));
    };
    if granted != name {
        return Err(Refusal::new(
            ErrorCode::WrongChannel,
            "token was signed for another channel",
        ));
    }
    let Some(filters) = claims.filters.as_ref() else {
        return Err(missing("filters"));
    };
    let filter =
        Filter::parse(filters).map_err(|e| Refusal::new(ErrorCode::InvalidToken, e.to_string()))?;
    Ok(Grant {
        filter: Arc::new(filter),
        user: claims.sub.map(Into::into),
        groups: claims.groups.into_boxed_slice(),
        exp: claims.exp,
        notify_only: app.channel_policy(name).notify_only,
    })
}

/// The identity a `connect` token of `app` gives at `clock`, or why it is
/// refused.
pub fn identify(app: &App, token: &str, clock: TokenClock) -> Result<Identity, Refusal> {
    let claims = verify(app, token, clock)?;
    let user = claims.sub.ok_or_else(|| missing("sub"))?;
    let publish = match claims.publish.as_ref() {
        Some(claim) => Some(
            PublishGrant::parse(claim)
                .map_err(|e| Refusal::new(ErrorCode::InvalidToken, e.to_string()))?,
        ),
        None => None,
    };
    let messages = match claims.message.as_ref() {
        Some(claim) => Some(
            crate::messages::MessageGrant::parse(claim)
                .map_err(|e| Refusal::new(ErrorCode::InvalidToken, e.to_string()))?,
        ),
        None => None,
    };
    Ok(Identity {
        app: app.id.clone(),
        user,
        groups: claims.groups,
        exp: claims.exp,
        publish,
        messages,
    })
}

fn missing(claim: &str) -> Refusal {
    Refusal::new(
        ErrorCode::InvalidToken,
        format!("claim `{claim}` is missing"),
    )
}

/// The token's claims, if one of `app`'s secrets signed it for `app`.
fn verify(app: &App, token: &str, clock: TokenClock) -> Result<Claims, Refusal> {
    let req = Requirements {
        now: clock.now,
        require_exp: !app.allow_no_exp,
        leeway: clock.leeway,
    };
    let claims = token::verify(token, &app.secrets, req)?;
    if *claims.app_id != *app.id {
        return Err(Refusal::new(
            ErrorCode::InvalidToken,
            "token was signed for another app",
        ));
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use serde_json::{Value, json};

    use super::*;
    use crate::app::{AppLimits, ChannelPolicy};

    const NOW: u64 = 1_700_000_000;
    const SECRET: &[u8] = b"secret";

    fn app() -> App {
        App {
            id: "a".into(),
            secrets: vec![SECRET.to_vec()],
            api_key: None,
            allow_no_exp: false,
            default_channel: ChannelPolicy::default(),
            channels: HashMap::new(),
            limits: AppLimits::default(),
            notifications: Default::default(),
            messages: Default::default(),
        }
    }

    fn claims() -> Value {
        json!({"app_id": "a", "channel": "c", "filters": {"alarm": {"borne": "B1"}},
               "exp": NOW + 60, "sub": "u", "groups": ["g"]})
    }

    /// A token of the test claims with `claim` set to `value` (or removed).
    fn with(claim: &str, value: Option<Value>) -> String {
        let mut claims = claims();
        if let Some(map) = claims.as_object_mut() {
            match value {
                Some(v) => map.insert(claim.into(), v),
                None => map.remove(claim),
            };
        }
        token::sign(&claims, SECRET)
    }

    fn at(now: u64, leeway: u64) -> TokenClock {
        TokenClock { now, leeway }
    }

    fn refusal(name: &str, token: &str) -> ErrorCode {
        match authorize(&app(), name, token, at(NOW, 0)) {
            Ok(_) => panic!("{name} was granted"),
            Err(r) => r.code,
        }
    }

    #[test]
    fn grants_what_the_token_says() {
        let grant =
            authorize(&app(), "c", &token::sign(&claims(), SECRET), at(NOW, 0)).expect("granted");
        assert!(grant.filter.matches("alarm", &["borne:B1".into()]));
        assert!(!grant.filter.matches("alarm", &["borne:B2".into()]));
        assert_eq!(grant.user.as_deref(), Some("u"));
        assert_eq!(&*grant.groups, ["g".to_string()]);
        assert_eq!(grant.exp, Some(NOW + 60));
    }

    #[test]
    fn refuses_each_bad_request_with_its_code() {
        let good = token::sign(&claims(), SECRET);
        assert_eq!(refusal("", &good), ErrorCode::BadMessage);
        assert_eq!(refusal("a b", &good), ErrorCode::BadMessage);
        assert_eq!(refusal("c", "not.a.token"), ErrorCode::InvalidToken);
        let forged = token::sign(&claims(), b"attacker");
        assert_eq!(refusal("c", &forged), ErrorCode::InvalidToken);
        let other_app = with("app_id", Some(json!("b")));
        assert_eq!(refusal("c", &other_app), ErrorCode::InvalidToken);
        assert_eq!(refusal("d", &good), ErrorCode::WrongChannel);
        assert_eq!(
            refusal("c", &with("channel", None)),
            ErrorCode::InvalidToken
        );
        assert_eq!(
            refusal("c", &with("filters", None)),
            ErrorCode::InvalidToken
        );
        let bad_filter = with("filters", Some(json!(["alarm"])));
        assert_eq!(refusal("c", &bad_filter), ErrorCode::InvalidToken);
        assert_eq!(refusal("c", &with("exp", None)), ErrorCode::InvalidToken);
        let expired = with("exp", Some(json!(NOW - 1)));
        assert_eq!(refusal("c", &expired), ErrorCode::TokenExpired);
    }

    #[test]
    fn identifies_a_connect_token_with_a_user() {
        let identity =
            identify(&app(), &token::sign(&claims(), SECRET), at(NOW, 0)).expect("identified");
        assert_eq!((&*identity.app, identity.user.as_str()), ("a", "u"));
        assert_eq!(identity.groups, vec!["g".to_string()]);
        assert_eq!(identity.publish, None);
        let pinned = with("publish", Some(json!({"devices": ["device:D1"]})));
        let identity = identify(&app(), &pinned, at(NOW, 0)).expect("identified");
        assert!(
            identity
                .publish
                .is_some_and(|g| g.allows("devices", &["device:D1".into()]))
        );
        let malformed = with("publish", Some(json!({"devices": "device:D1"})));
        let refused = identify(&app(), &malformed, at(NOW, 0)).map(|_| ());
        assert_eq!(refused.map_err(|r| r.code), Err(ErrorCode::InvalidToken));
        let refused = identify(&app(), &with("sub", None), at(NOW, 0)).map(|_| ());
        assert_eq!(
            refused,
            Err(Refusal::new(
                ErrorCode::InvalidToken,
                "claim `sub` is missing"
            ))
        );
    }

    #[test]
    fn leeway_tolerates_skew_on_exp_and_nbf_and_no_more() {
        let expired = with("exp", Some(json!(NOW - 2)));
        let code = |t: &str, leeway| authorize(&app(), "c", t, at(NOW, leeway)).map(|_| ());
        assert_eq!(code(&expired, 5), Ok(()));
        assert_eq!(
            code(&expired, 0).map_err(|r| r.code),
            Err(ErrorCode::TokenExpired)
        );
        let early = with("nbf", Some(json!(NOW + 2)));
        assert_eq!(code(&early, 5), Ok(()));
        assert_eq!(
            code(&early, 0).map_err(|r| r.code),
            Err(ErrorCode::InvalidToken)
        );
        let connect = identify(&app(), &expired, at(NOW, 5)).map(|_| ());
        assert_eq!(connect, Ok(()));
        assert!(at(NOW, 5).expired(NOW - 5));
        assert!(!at(NOW, 5).expired(NOW - 4));
    }
}
