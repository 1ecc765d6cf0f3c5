//! Helpers shared by the gateway tests (the general ones live in testkit).

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use chouquette_testkit::APP;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// base64url without padding (RFC 7515), to build tokens by hand.
pub fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// An event of [`APP`] as a backend publishes it.
pub fn event(channel: &str, kind: &str, keywords: &[&str], data: Value) -> Value {
    json!({"app_id": APP, "channel": channel, "event_kind": kind,
           "keywords": keywords, "data": data})
}

/// A subscribe message for `app` with several `(channel, token)` pairs.
pub fn subscribe_msg(uuid: &str, app: &str, channels: &[(&str, &str)]) -> Value {
    let mut map = serde_json::Map::new();
    for (name, token) in channels {
        map.insert((*name).to_string(), json!({ "filters": token }));
    }
    json!({"class": "subscribe", "app_id": app, "uuid": uuid, "channels": map})
}

/// A subscribe message for one channel of [`APP`] resuming at `(epoch, offset)`.
pub fn resume_msg(uuid: &str, channel: &str, token: &str, epoch: &str, offset: u64) -> Value {
    json!({"class": "subscribe", "app_id": APP, "uuid": uuid,
           "channels": {channel: {"filters": token,
                                  "since": {"epoch": epoch, "offset": offset}}}})
}

/// The offsets of the `data` messages of `channel` among `messages`.
pub fn offsets(messages: &[Value], channel: &str) -> Vec<u64> {
    messages
        .iter()
        .filter(|m| m["class"] == "data" && m["channel"] == channel)
        .map(|m| m["offset"].as_u64().expect("offset"))
        .collect()
}

/// Asserts the section 2 envelope: ISO 8601 UTC timestamp with microseconds
/// (`YYYY-MM-DDTHH:MM:SS.ffffffZ`, close to now) and a v4 uuid.
pub fn assert_envelope(message: &Value) {
    let ts = message["timestamp"]
        .as_str()
        .expect("timestamp is a string");
    let pattern = "dddd-dd-ddTdd:dd:dd.ddddddZ";
    assert_eq!(ts.len(), pattern.len(), "timestamp {ts}");
    for (c, p) in ts.chars().zip(pattern.chars()) {
        match p {
            'd' => assert!(c.is_ascii_digit(), "timestamp {ts}"),
            other => assert_eq!(c, other, "timestamp {ts}"),
        }
    }
    let at = humantime::parse_rfc3339(ts).expect("timestamp parses as RFC 3339");
    let skew = match SystemTime::now().duration_since(at) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    assert!(skew < Duration::from_secs(60), "timestamp {ts} is not now");
    let uuid = message["uuid"].as_str().expect("uuid is a string");
    let parsed = uuid::Uuid::parse_str(uuid).expect("uuid parses");
    assert_eq!(parsed.get_version_num(), 4, "uuid {uuid} is not v4");
    assert_eq!(
        parsed.hyphenated().to_string(),
        uuid,
        "uuid {uuid} is not in the hyphenated form"
    );
}

/// One HTTP/1.1 exchange over a fresh TCP connection (`Connection: close`),
/// for requests the test HTTP client cannot make (no `Authorization`).
pub async fn raw_http(addr: SocketAddr, head: &str, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "{head}\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write head");
    stream.write_all(body).await.expect("write body");
    read_response(&mut stream).await
}

/// Reads one HTTP/1.1 response until the server closes; status and body.
pub async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("response within 10 s")
        .expect("read response");
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    (status, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// A small deterministic pseudo-random generator (xorshift64*), so that
/// "random" inputs are the same on every run.
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `len` random bytes.
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn b64url_matches_rfc_4648_vectors() {
    assert_eq!(b64url(b""), "");
    assert_eq!(b64url(b"f"), "Zg");
    assert_eq!(b64url(b"fo"), "Zm8");
    assert_eq!(b64url(b"foo"), "Zm9v");
    assert_eq!(b64url(b"foob"), "Zm9vYg");
    assert_eq!(b64url(&[0xfb, 0xff]), "-_8");
}
