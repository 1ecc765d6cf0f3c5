//! Subscription and connect tokens: HS256 JSON Web Tokens (RFC 7519).
//!
//! The backend signs, the gateway verifies; the client only carries them.
//! Only `HS256` is accepted: `alg: none` and every other algorithm are refused
//! before any signature work. Verification tries each of the app's secrets
//! (rotation) with a constant-time comparison. Time is passed in, so expiry
//! is a plain function of its inputs.
//!
//! Written on `hmac` + `sha2` rather than a JWT crate: HS256 is all the
//! protocol needs, and the general crates pull a second crypto stack into the
//! build for algorithms the gateway must refuse anyway.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// Longest token accepted, in bytes: bounds the work one message can cause.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

type HmacSha256 = Hmac<Sha256>;

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not three base64url parts, or a part is not the JSON it should be.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// Longer than [`MAX_TOKEN_LEN`].
    #[error("token longer than {MAX_TOKEN_LEN} bytes")]
    TooLong,
    /// `alg` is not HS256 (this includes `none`).
    #[error("algorithm {0:?} is not accepted")]
    Algorithm(String),
    /// No configured secret produces this signature.
    #[error("signature does not match")]
    Signature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` ("not before", RFC 7519 section 4.1.5) is still to come.
    #[error("token not valid yet (`nbf` is in the future)")]
    NotYetValid,
    /// A required claim is missing, or has the wrong type.
    #[error("claim `{0}` is missing or invalid")]
    Claim(&'static str),
}

/// The claims the gateway reads; others are ignored.
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// The app the token was signed for.
    pub app_id: String,
    /// For subscription tokens: the channel it grants.
    pub channel: Option<String>,
    /// For subscription tokens: the filter object (or a JSON string of it).
    pub filters: Option<serde_json::Value>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: Option<u64>,
    /// Not valid before this time, seconds since the Unix epoch.
    pub nbf: Option<u64>,
    /// The user or device id.
    pub sub: Option<String>,
    /// Groups of the user (establishment, role), for kill switches.
    pub groups: Vec<String>,
    /// For `connect` tokens: the channels the holder may publish on, each
    /// with its pinned keywords (checked by the session, not here).
    pub publish: Option<serde_json::Value>,
    /// For `connect` tokens: whom the holder may send user-to-user
    /// messages to (checked by [`crate::messages::MessageGrant`]).
    pub message: Option<serde_json::Value>,
}

impl Claims {
    /// Reads the known claims from a claims object, naming the first bad one.
    fn from_object(
        mut map: serde_json::Map<String, serde_json::Value>,
    ) -> Result<Claims, TokenError> {
        use serde_json::Value;
        let mut string = |name: &'static str| match map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(TokenError::Claim(name)),
        };
        let app_id = string("app_id")?.ok_or(TokenError::Claim("app_id"))?;
        let channel = string("channel")?;
        let sub = string("sub")?;
        // RFC 7519 NumericDate: seconds, possibly with a fraction.
        let mut date = |name: &'static str| match map.remove(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
                .map(Some)
                .ok_or(TokenError::Claim(name)),
            Some(_) => Err(TokenError::Claim(name)),
        };
        let exp = date("exp")?;
        let nbf = date("nbf")?;
        let groups = match map.remove("groups") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .into_iter()
                .map(|g| match g {
                    Value::String(s) => Ok(s),
                    _ => Err(TokenError::Claim("groups")),
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(TokenError::Claim("groups")),
        };
        Ok(Claims {
            app_id,
            channel,
            filters: map.remove("filters"),
            exp,
            nbf,
            sub,
            groups,
            publish: map.remove("publish").filter(|v| !v.is_null()),
            message: map.remove("message").filter(|v| !v.is_null()),
        })
    }
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// What a verification requires beyond the signature.
#[derive(Debug, Clone, Copy)]
pub struct Requirements {
    /// Current time, seconds since the Unix epoch.
    pub now: u64,
    /// Whether a token without `exp` is refused.
    pub require_exp: bool,
    /// Seconds of clock skew tolerated on `exp` and `nbf`: a backend whose
    /// clock runs a little ahead of the gateway's must not see its fresh
    /// tokens refused.
    pub leeway: u64,
}

/// Verifies `token` against any of `secrets` and returns its claims.
pub fn verify<S: AsRef<[u8]>>(
    token: &str,
    secrets: &[S],
    req: Requirements,
) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::TooLong);
    }
    let mut parts = token.split('.');
    let (Some(head_b64), Some(claims_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed("expected three dot-separated parts"));
    };
    let header: Header = decode_json(head_b64, "header")?;
    if header.alg != "HS256" {
        return Err(TokenError::Algorithm(header.alg.chars().take(16).collect()));
    }
    if header.crit.is_some() {
        return Err(TokenError::Malformed("`crit` header is not supported"));
    }
    let signature = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
    let signed = &token[..head_b64.len() + 1 + claims_b64.len()];
    if !secrets
        .iter()
        .any(|s| signature_matches(s.as_ref(), signed, &signature))
    {
        return Err(TokenError::Signature);
    }
    let claims = Claims::from_object(decode_json(claims_b64, "claims")?)?;
    if claims
        .nbf
        .is_some_and(|nbf| nbf > req.now.saturating_add(req.leeway))
    {
        return Err(TokenError::NotYetValid);
    }
    match claims.exp {
        Some(exp) if exp.saturating_add(req.leeway) <= req.now => Err(TokenError::Expired),
        None if req.require_exp => Err(TokenError::Claim("exp")),
        _ => Ok(claims),
    }
}

fn signature_matches(secret: &[u8], signed: &str, signature: &[u8]) -> bool {
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(signed.as_bytes());
    mac.verify_slice(signature).is_ok()
}

fn decode_json<T: for<'de> Deserialize<'de>>(
    part: &str,
    what: &'static str,
) -> Result<T, TokenError> {
    let (not_base64, not_json) = if what == "header" {
        ("header is not base64url", "header is not a JWT header")
    } else {
        ("claims are not base64url", "claims are not a JSON object")
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| TokenError::Malformed(not_base64))?;
    serde_json::from_slice(&bytes).map_err(|_| TokenError::Malformed(not_json))
}

/// Reads `app_id` and `channel` from a token *without verifying it*, to
/// route it to the app whose secrets then verify it. Never trust the result
/// for anything else.
pub fn peek_route(token: &str) -> Option<(String, Option<String>)> {
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let claims_b64 = token.split('.').nth(1)?;
    let map: serde_json::Map<String, serde_json::Value> = decode_json(claims_b64, "claims").ok()?;
    let app = map.get("app_id")?.as_str()?.to_string();
    let channel = map
        .get("channel")
        .and_then(|c| c.as_str())
        .map(String::from);
    Some((app, channel))
}

/// Signs `claims` with `secret` as an HS256 JWT (the backend's side; used by
/// the `token` command, the demo backend and tests).
pub fn sign(claims: &serde_json::Value, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signed = format!("{header}.{body}");
    let sig = match HmacSha256::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(signed.as_bytes());
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        }
        // HMAC accepts keys of any length; this branch cannot be taken.
        Err(_) => String::new(),
    };
    format!("{signed}.{sig}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_700_000_000;

    fn req() -> Requirements {
        Requirements {
            now: NOW,
            require_exp: true,
            leeway: 0,
        }
    }

    fn claims() -> serde_json::Value {
        json!({"app_id": "bluelib", "channel": "bornes", "filters": {"alarm": {}},
               "exp": NOW + 60, "sub": "roger", "groups": ["g1"]})
    }

    #[test]
    fn round_trip_with_rotation() {
        let tok = sign(&claims(), b"previous");
        let c = verify(&tok, &["current", "previous"], req()).expect("valid");
        assert_eq!(c.app_id, "bluelib");
        assert_eq!(c.sub.as_deref(), Some("roger"));
        assert_eq!(c.groups, vec!["g1".to_string()]);
    }

    #[test]
    fn forged_signature_is_refused() {
        let tok = sign(&claims(), b"attacker");
        assert_eq!(
            verify(&tok, &["current"], req()),
            Err(TokenError::Signature)
        );
    }

    #[test]
    fn tampered_claims_are_refused() {
        let tok = sign(&claims(), b"current");
        let mut parts: Vec<&str> = tok.split('.').collect();
        let evil = URL_SAFE_NO_PAD.encode(
            json!({"app_id": "bluelib", "channel": "bornes",
            "filters": {"*": {}}, "exp": NOW + 60})
            .to_string(),
        );
        parts[1] = &evil;
        assert_eq!(
            verify(&parts.join("."), &["current"], req()),
            Err(TokenError::Signature)
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(claims().to_string());
        let tok = format!("{header}.{body}.");
        assert!(matches!(
            verify(&tok, &["current"], req()),
            Err(TokenError::Algorithm(_))
        ));
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512"}"#);
        let tok = format!("{header}.{body}.AAAA");
        assert!(matches!(
            verify(&tok, &["current"], req()),
            Err(TokenError::Algorithm(_))
        ));
    }

    #[test]
    fn expiry_and_missing_exp() {
        let mut c = claims();
        c["exp"] = json!(NOW);
        assert_eq!(
            verify(&sign(&c, b"k"), &["k"], req()),
            Err(TokenError::Expired)
        );
        c.as_object_mut().expect("object").remove("exp");
        assert_eq!(
            verify(&sign(&c, b"k"), &["k"], req()),
            Err(TokenError::Claim("exp"))
        );
        let lax = Requirements {
            require_exp: false,
            ..req()
        };
        assert!(verify(&sign(&c, b"k"), &["k"], lax).is_ok());
    }

    #[test]
    fn a_token_used_before_its_nbf_is_refused() {
        let mut c = claims();
        c["nbf"] = json!(NOW + 10);
        let tok = sign(&c, b"k");
        assert_eq!(verify(&tok, &["k"], req()), Err(TokenError::NotYetValid));
        // Within the tolerated clock skew, or once its time has come, it is good.
        let skewed = Requirements {
            leeway: 10,
            ..req()
        };
        assert!(verify(&tok, &["k"], skewed).is_ok());
        c["nbf"] = json!(NOW);
        assert!(verify(&sign(&c, b"k"), &["k"], req()).is_ok());
        c["nbf"] = json!("soon");
        assert_eq!(
            verify(&sign(&c, b"k"), &["k"], req()),
            Err(TokenError::Claim("nbf"))
        );
    }

    #[test]
    fn leeway_tolerates_a_recently_expired_token() {
        let mut c = claims();
        c["exp"] = json!(NOW - 5);
        let tok = sign(&c, b"k");
        assert_eq!(verify(&tok, &["k"], req()), Err(TokenError::Expired));
        let skewed = Requirements {
            leeway: 10,
            ..req()
        };
        assert!(verify(&tok, &["k"], skewed).is_ok());
    }

    #[test]
    fn wrong_claim_types_name_the_claim() {
        let mut c = claims();
        c["groups"] = json!("g1");
        assert_eq!(
            verify(&sign(&c, b"k"), &["k"], req()),
            Err(TokenError::Claim("groups"))
        );
    }

    #[test]
    fn peek_reads_the_route_only() {
        let tok = sign(&claims(), b"whatever");
        assert_eq!(
            peek_route(&tok),
            Some(("bluelib".into(), Some("bornes".into())))
        );
        assert_eq!(peek_route("a.b.c"), None);
    }

    #[test]
    fn garbage_never_panics() {
        for t in [
            "",
            ".",
            "..",
            "a.b.c",
            "a.b.c.d",
            "....",
            "eyJ.eyJ.x",
            "\u{e9}.\u{e9}.\u{e9}",
        ] {
            assert!(verify(t, &["k"], req()).is_err());
        }
    }
}
