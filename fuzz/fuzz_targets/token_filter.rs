//! Tokens and filters on arbitrary input: nothing may panic, and a token
//! signed with `sign` must verify with the same secret.
//!
//! Input (UTF-8, newline-separated): `token`, `json`, `kind`, then one
//! keyword per line. `json` is used both as a filter and as token claims.
#![no_main]

use chouquette_core::filter::Filter;
use chouquette_core::token::{self, MAX_TOKEN_LEN, Requirements, TokenError};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const SECRET: &[u8] = b"secret";
const REQ: Requirements = Requirements {
    now: 1_700_000_000,
    require_exp: false,
    leeway: 0,
};

fn check_filter(value: &Value, kind: &str, keywords: &[Box<str>]) {
    if let Ok(filter) = Filter::parse(value) {
        let _ = filter.matches(kind, keywords);
        let _ = filter.matches("*", keywords);
        let _ = filter.matches(kind, &[]);
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let token_text = lines.next().unwrap_or_default();
    let json = lines.next().unwrap_or_default();
    let kind = lines.next().unwrap_or_default();
    let keywords: Vec<Box<str>> = lines.map(Into::into).collect();

    // 1. Arbitrary token text.
    if let Ok(claims) = token::verify(token_text, &[SECRET], REQ)
        && let Some(filters) = &claims.filters
    {
        check_filter(filters, kind, &keywords);
    }

    // 2. Arbitrary JSON as a filter (and as a JSON string holding a filter).
    check_filter(&Value::String(json.to_owned()), kind, &keywords);
    let Ok(value) = serde_json::from_str::<Value>(json) else {
        return;
    };
    check_filter(&value, kind, &keywords);
    if let Some(filters) = value.get("filters") {
        check_filter(filters, kind, &keywords);
    }

    // 3. The same JSON as claims: sign, then verify with the same secret.
    let signed = token::sign(&value, SECRET);
    let result = token::verify(&signed, &[SECRET], REQ);
    match &result {
        Ok(claims) => {
            assert_eq!(Some(claims.app_id.as_str()), value["app_id"].as_str());
            assert_eq!(claims.sub.as_deref(), value["sub"].as_str());
            assert_eq!(claims.channel.as_deref(), value["channel"].as_str());
        }
        Err(TokenError::TooLong) => assert!(signed.len() > MAX_TOKEN_LEN),
        Err(TokenError::Malformed(_)) => {
            assert!(!value.is_object() || signed.len() > MAX_TOKEN_LEN)
        }
        Err(TokenError::Signature | TokenError::Algorithm(_)) => {
            panic!("signed token refused: {result:?}")
        }
        Err(_) => {} // Claim or Expired: the claims' own content.
    }
});
