//! The signature a backend checks on every call (docs/rpc.md, "Verifying
//! the caller"): `X-Chouquette-Signature: t=<unix seconds>,v1=<hex>` where
//! the hex is HMAC-SHA256, keyed with the app's first secret, of `<t>.`
//! followed by the exact request body. The timestamp inside the signed
//! text lets a backend refuse replays older than its window.

use std::fmt::Write;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The request header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-chouquette-signature";

/// The replay window docs/rpc.md tells backends to use, in seconds.
pub const REPLAY_WINDOW_SECS: u64 = 300;

type HmacSha256 = Hmac<Sha256>;

fn mac(secret: &[u8], t: u64, body: &[u8]) -> HmacSha256 {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value signing `body` at unix time `t`.
pub fn sign(secret: &[u8], t: u64, body: &[u8]) -> String {
    let tag = mac(secret, t, body).finalize().into_bytes();
    let mut out = format!("t={t},v1=");
    for b in tag {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// Why a signature was refused (what a backend's check does).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not `t=<digits>,v1=<64 hex>`.
    #[error("malformed signature header")]
    Malformed,
    /// Older or newer than the window allows.
    #[error("signature timestamp outside the replay window")]
    Stale,
    /// The HMAC does not match the body.
    #[error("signature does not match")]
    Mismatch,
}

/// Checks a header value against `body` at unix time `now`, as a backend
/// does: the timestamp within `window` seconds, the HMAC in constant time.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now: u64,
    window: u64,
) -> Result<(), SignatureError> {
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .ok_or(SignatureError::Malformed)?;
    let t: u64 = t.parse().map_err(|_| SignatureError::Malformed)?;
    let tag = hex(v1).ok_or(SignatureError::Malformed)?;
    if t.abs_diff(now) > window {
        return Err(SignatureError::Stale);
    }
    mac(secret, t, body)
        .verify_slice(&tag)
        .map_err(|_| SignatureError::Mismatch)
}

fn hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_its_own_body_secret_and_time() {
        let header = sign(b"k", 1_000, b"{\"a\":1}");
        assert!(header.starts_with("t=1000,v1="), "{header}");
        assert_eq!(verify(b"k", &header, b"{\"a\":1}", 1_010, 300), Ok(()));
        let tampered = verify(b"k", &header, b"{\"a\":2}", 1_010, 300);
        assert_eq!(tampered, Err(SignatureError::Mismatch));
        let other_key = verify(b"j", &header, b"{\"a\":1}", 1_010, 300);
        assert_eq!(other_key, Err(SignatureError::Mismatch));
        let replayed = verify(b"k", &header, b"{\"a\":1}", 2_000, 300);
        assert_eq!(replayed, Err(SignatureError::Stale));
        for bad in ["", "t=1,v1=zz", "v1=00,t=1", "t=x,v1=00"] {
            assert_eq!(
                verify(b"k", bad, b"", 1, 300),
                Err(SignatureError::Malformed)
            );
        }
    }
}
