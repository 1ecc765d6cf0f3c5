//! The few Postgres wire messages the replication connection reads and
//! writes, by hand: `tokio-postgres` has no CopyBoth mode, and the backend
//! parser of `postgres-protocol` refuses `W` (CopyBothResponse).
//!
//! The bytes come from the network: every frame's length is checked against
//! a cap before anything is buffered for it, every read inside a frame is
//! bounds-checked, and what does not parse is a [`WireError`], never a
//! panic.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Largest frame accepted, whatever the settings: Postgres' own limit on
/// one message is 1 GiB.
pub(super) const HARD_CAP: usize = 1 << 30;
/// Bytes asked of the socket at a time when the buffer runs low: many
/// small XLogData frames arrive per read under load.
const READ_CHUNK: usize = 64 * 1024;

/// Why the connection's bytes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("postgres replication connection: {0}")]
    Io(#[from] std::io::Error),
    #[error("postgres closed the replication connection")]
    Closed,
    #[error(
        "postgres sent a `{kind}` message of {len} bytes, over the {cap} bytes this source accepts"
    )]
    TooLarge { kind: char, len: u64, cap: usize },
    #[error("postgres sent a `{kind}` message with an impossible length {len}")]
    BadLength { kind: char, len: i32 },
    #[error("postgres sent a malformed `{0}` message")]
    Malformed(char),
}

/// One backend message: its kind and its body (without the length).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Frame {
    pub tag: u8,
    pub body: Bytes,
}

/// Reads [`Frame`]s off a byte stream, holding at most one frame past the
/// bytes already read (the cap bounds it).
#[derive(Debug)]
pub(super) struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    cap: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// A reader refusing frames over `cap` bytes (and over [`HARD_CAP`]).
    pub fn new(io: R, cap: usize) -> FrameReader<R> {
        FrameReader {
            io,
            buf: BytesMut::with_capacity(READ_CHUNK),
            cap: cap.min(HARD_CAP),
        }
    }

    /// The next frame, waiting for it. Cancel-safe: the bytes read stay in
    /// the buffer, so it may be raced in a `select!`.
    pub async fn next(&mut self) -> Result<Frame, WireError> {
        loop {
            if let Some(frame) = self.buffered()? {
                return Ok(frame);
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                self.buf.reserve(READ_CHUNK);
            }
            if self.io.read_buf(&mut self.buf).await? == 0 {
                return Err(WireError::Closed);
            }
        }
    }

    /// The next frame if it is already read whole, without waiting.
    pub fn buffered(&mut self) -> Result<Option<Frame>, WireError> {
        let Some(header) = self.buf.get(..5) else {
            return Ok(None);
        };
        let tag = header[0];
        let len = i32::from_be_bytes([header[1], header[2], header[3], header[4]]);
        let body = usize::try_from(len)
            .ok()
            .and_then(|l| l.checked_sub(4))
            .ok_or(WireError::BadLength {
                kind: char::from(tag),
                len,
            })?;
        if body > self.cap {
            return Err(WireError::TooLarge {
                kind: char::from(tag),
                len: u64::try_from(body).unwrap_or(u64::MAX),
                cap: self.cap,
            });
        }
        let whole = body + 5;
        if self.buf.len() < whole {
            self.buf.reserve(whole - self.buf.len());
            return Ok(None);
        }
        let mut frame = self.buf.split_to(whole);
        frame.advance(5);
        Ok(Some(Frame {
            tag,
            body: frame.freeze(),
        }))
    }
}

/// A bounds-checked cursor over a frame's body.
pub(super) struct Body<'a> {
    bytes: &'a [u8],
    kind: char,
}

impl<'a> Body<'a> {
    pub fn new(bytes: &'a [u8], kind: u8) -> Body<'a> {
        Body {
            bytes,
            kind: char::from(kind),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        if self.bytes.len() < n {
            return Err(WireError::Malformed(self.kind));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take(1)?[0])
    }

    pub fn i32(&mut self) -> Result<i32, WireError> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn u64(&mut self) -> Result<u64, WireError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(u64::from_be_bytes(b))
    }

    pub fn i64(&mut self) -> Result<i64, WireError> {
        let mut b = [0u8; 8];
        b.copy_from_slice(self.take(8)?);
        Ok(i64::from_be_bytes(b))
    }

    /// A NUL-terminated string (lossy: it is only ever shown).
    pub fn cstr(&mut self) -> Result<String, WireError> {
        let end = self
            .bytes
            .iter()
            .position(|&b| b == 0)
            .ok_or(WireError::Malformed(self.kind))?;
        let text = String::from_utf8_lossy(self.take(end)?).into_owned();
        self.take(1)?;
        Ok(text)
    }

    pub fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.bytes)
    }
}

/// An authentication request (`R`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Auth {
    Ok,
    Cleartext,
    Md5([u8; 4]),
    Sasl(Vec<String>),
    SaslContinue(Vec<u8>),
    SaslFinal(Vec<u8>),
    Other(i32),
}

pub(super) fn auth(body: &[u8]) -> Result<Auth, WireError> {
    let mut b = Body::new(body, b'R');
    Ok(match b.i32()? {
        0 => Auth::Ok,
        3 => Auth::Cleartext,
        5 => {
            let salt = b.take(4)?;
            Auth::Md5([salt[0], salt[1], salt[2], salt[3]])
        }
        10 => {
            let mut mechanisms = Vec::new();
            // A short list ends with an empty name; bounded by the frame.
            loop {
                let name = b.cstr()?;
                if name.is_empty() {
                    break;
                }
                mechanisms.push(name);
            }
            Auth::Sasl(mechanisms)
        }
        11 => Auth::SaslContinue(b.rest().to_vec()),
        12 => Auth::SaslFinal(b.rest().to_vec()),
        other => Auth::Other(other),
    })
}

/// An `ErrorResponse` (or notice): what the server said, for the logs and
/// `/readyz`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerError {
    pub severity: String,
    pub code: String,
    pub message: String,
    pub detail: Option<String>,
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {} ({})", self.severity, self.message, self.code)?;
        if let Some(detail) = &self.detail {
            write!(f, ": {detail}")?;
        }
        Ok(())
    }
}

pub(super) fn server_error(body: &[u8]) -> Result<ServerError, WireError> {
    let mut b = Body::new(body, b'E');
    let mut error = ServerError::default();
    loop {
        let field = b.u8()?;
        if field == 0 {
            return Ok(error);
        }
        let value = b.cstr()?;
        match field {
            b'V' => error.severity = value,
            b'S' if error.severity.is_empty() => error.severity = value,
            b'C' => error.code = value,
            b'M' => error.message = value,
            b'D' => error.detail = Some(value),
            _ => {}
        }
    }
}

/// What a CopyData of the replication stream holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Replication {
    /// `w`: one `pgoutput` message.
    XLogData { start: u64, end: u64, data: Bytes },
    /// `k`: the server's position; `reply` asks for a status update now.
    Keepalive { end: u64, reply: bool },
}

/// Parses the body of a CopyData (`d`) frame of the stream.
pub(super) fn replication(body: &Bytes) -> Result<Replication, WireError> {
    let mut b = Body::new(body, b'd');
    match b.u8()? {
        b'w' => {
            let start = b.u64()?;
            let end = b.u64()?;
            let _sent = b.i64()?;
            // 25 bytes of header: kind, two LSNs, a timestamp.
            Ok(Replication::XLogData {
                start,
                end,
                data: body.slice(25..),
            })
        }
        b'k' => {
            let end = b.u64()?;
            let _sent = b.i64()?;
            let reply = b.u8()? == 1;
            Ok(Replication::Keepalive { end, reply })
        }
        _ => Err(WireError::Malformed('d')),
    }
}

/// Appends a standby status update (`r` in a CopyData): `written`,
/// `flushed` and `applied` positions, the client's clock (microseconds since
/// 2000-01-01), and whether the server should answer at once.
pub(super) fn status_update(
    written: u64,
    flushed: u64,
    applied: u64,
    clock: i64,
    reply: bool,
    out: &mut BytesMut,
) {
    let mut body = BytesMut::with_capacity(34);
    body.put_u8(b'r');
    body.put_u64(written);
    body.put_u64(flushed);
    body.put_u64(applied);
    body.put_i64(clock);
    body.put_u8(u8::from(reply));
    // 34 bytes always fit an i32 length.
    if let Ok(data) = frontend::CopyData::new(body) {
        data.write(out);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn frame(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        out.extend_from_slice(&(i32::try_from(body.len()).unwrap() + 4).to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[tokio::test]
    async fn frames_are_read_whole_across_reads_and_one_by_one() {
        let mut bytes = frame(b'Z', b"I");
        bytes.extend(frame(b'd', &[7; 300]));
        // A reader that hands out the bytes three at a time.
        let (mut tx, rx) = tokio::io::duplex(3);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            tx.write_all(&bytes).await.unwrap();
        });
        let mut reader = FrameReader::new(rx, 1024);
        assert_eq!(
            reader.next().await.unwrap(),
            Frame {
                tag: b'Z',
                body: Bytes::from_static(b"I")
            }
        );
        let second = reader.next().await.unwrap();
        assert_eq!((second.tag, second.body.len()), (b'd', 300));
        writer.await.unwrap();
        assert!(matches!(reader.next().await, Err(WireError::Closed)));
    }

    #[tokio::test]
    async fn an_oversized_or_impossible_length_is_an_error_before_any_buffering() {
        let mut reader = FrameReader::new(&b"d\x7f\xff\xff\xff"[..], 1 << 20);
        let e = reader.next().await.unwrap_err();
        assert!(matches!(e, WireError::TooLarge { kind: 'd', .. }), "{e}");
        assert!(e.to_string().contains("1048576"), "{e}");
        let mut reader = FrameReader::new(&b"E\0\0\0\x02"[..], 1 << 20);
        let e = reader.next().await.unwrap_err();
        assert!(matches!(e, WireError::BadLength { len: 2, .. }), "{e}");
        let mut reader = FrameReader::new(&b"E\xff\xff\xff\xff"[..], 1 << 20);
        assert!(matches!(
            reader.next().await,
            Err(WireError::BadLength { .. })
        ));
        // Cut off mid-frame.
        let mut reader = FrameReader::new(&b"d\0\0\0\x10abc"[..], 1 << 20);
        assert!(matches!(reader.next().await, Err(WireError::Closed)));
    }

    #[test]
    fn xlogdata_and_keepalives_parse_and_garbage_does_not() {
        let mut w = vec![b'w'];
        w.extend(0x10u64.to_be_bytes());
        w.extend(0x20u64.to_be_bytes());
        w.extend(5i64.to_be_bytes());
        w.extend(b"B...");
        assert_eq!(
            replication(&Bytes::from(w)).unwrap(),
            Replication::XLogData {
                start: 0x10,
                end: 0x20,
                data: Bytes::from_static(b"B...")
            }
        );
        let mut k = vec![b'k'];
        k.extend(0x30u64.to_be_bytes());
        k.extend(9i64.to_be_bytes());
        k.push(1);
        assert_eq!(
            replication(&Bytes::from(k.clone())).unwrap(),
            Replication::Keepalive {
                end: 0x30,
                reply: true
            }
        );
        k.pop();
        for garbage in [&k[..], b"", b"w\0\0", b"x0123456789"] {
            assert!(matches!(
                replication(&Bytes::copy_from_slice(garbage)),
                Err(WireError::Malformed('d'))
            ));
        }
    }

    #[test]
    fn a_status_update_is_a_copydata_of_34_bytes() {
        let mut out = BytesMut::new();
        status_update(1, 2, 3, 4, true, &mut out);
        assert_eq!(out.len(), 1 + 4 + 34);
        assert_eq!(&out[..5], b"d\0\0\0\x26");
        assert_eq!(out[5], b'r');
        assert_eq!(&out[6..14], &1u64.to_be_bytes());
        assert_eq!(&out[14..22], &2u64.to_be_bytes());
        assert_eq!(&out[22..30], &3u64.to_be_bytes());
        assert_eq!(&out[30..38], &4i64.to_be_bytes());
        assert_eq!(out[38], 1);
    }

    #[test]
    fn errors_and_auth_requests_parse_and_garbage_does_not() {
        let e = server_error(b"SERROR\0VERROR\0C42704\0Mslot \"x\" does not exist\0\0").unwrap();
        assert_eq!(e.to_string(), "ERROR: slot \"x\" does not exist (42704)");
        assert!(server_error(b"SERROR").is_err());
        assert_eq!(auth(b"\0\0\0\0").unwrap(), Auth::Ok);
        assert_eq!(auth(b"\0\0\0\x05salt").unwrap(), Auth::Md5(*b"salt"));
        assert_eq!(
            auth(b"\0\0\0\x0aSCRAM-SHA-256\0\0").unwrap(),
            Auth::Sasl(vec!["SCRAM-SHA-256".into()])
        );
        assert!(auth(b"\0\0\0\x05sa").is_err());
        assert!(auth(b"\0\0\0\x0aSCRAM").is_err());
        assert!(auth(b"\0\0").is_err());
    }
}
