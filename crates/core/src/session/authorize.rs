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
}

/// What subscribing to channel `name` of `app` with `token` grants at `now`
/// (seconds since the Unix epoch), or why it is refused.
pub fn authorize(app: &App, name: &str, token: &str, now: u64) -> Result<Grant, Refusal> {
    if !valid_name(name) {
        return Err(Refusal::new(ErrorCode::BadMessage, "invalid channel name"));
    }
    let claims = verify(app, token, now)?;
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
    })
}

/// The identity a `connect` token of `app` gives at `now`, or why it is refused.
pub fn identify(app: &App, token: &str, now: u64) -> Result<Identity, Refusal> {
    let claims = verify(app, token, now)?;
    let user = claims.sub.ok_or_else(|| missing("sub"))?;
    Ok(Identity {
        app: app.id.clone(),
        user,
        groups: claims.groups,
        exp: claims.exp,
    })
}

fn missing(claim: &str) -> Refusal {
    Refusal::new(
        ErrorCode::InvalidToken,
        format!("claim `{claim}` is missing"),
    )
}

/// The token's claims, if one of `app`'s secrets signed it for `app`.
fn verify(app: &App, token: &str, now: u64) -> Result<Claims, Refusal> {
    let req = Requirements {
        now,
        require_exp: !app.allow_no_exp,
        leeway: 0,
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

    fn refusal(name: &str, token: &str) -> ErrorCode {
        match authorize(&app(), name, token, NOW) {
            Ok(_) => panic!("{name} was granted"),
            Err(r) => r.code,
        }
    }

    #[test]
    fn grants_what_the_token_says() {
        let grant = authorize(&app(), "c", &token::sign(&claims(), SECRET), NOW).expect("granted");
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
        let identity = identify(&app(), &token::sign(&claims(), SECRET), NOW).expect("identified");
        assert_eq!((&*identity.app, identity.user.as_str()), ("a", "u"));
        assert_eq!(identity.groups, vec!["g".to_string()]);
        let refused = identify(&app(), &with("sub", None), NOW).map(|_| ());
        assert_eq!(
            refused,
            Err(Refusal::new(
                ErrorCode::InvalidToken,
                "claim `sub` is missing"
            ))
        );
    }
}
