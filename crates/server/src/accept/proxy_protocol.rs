//! The PROXY protocol header (HAProxy's, versions 1 and 2) that a trusted
//! proxy may send before anything else on a connection, to tell the client's
//! address. Only read from trusted proxies (`[listen] trusted_proxies`);
//! from anyone else the bytes go to HTTP and are a bad request.
//!
//! Written here rather than taken from a crate: the part we need (the
//! source address, TLVs skipped) is small, and the parser must accept any
//! bytes without panicking and never ask for more than a bounded header.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Version 2's fixed signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// Version 1's prefix.
const V1_PREFIX: &[u8] = b"PROXY ";
/// Longest version 1 header, CRLF included (the specification's bound).
pub const V1_MAX: usize = 107;
/// Longest version 2 payload accepted (addresses and TLVs). The
/// specification allows 65,535; proxies send far less, and this bounds what
/// a trusted but broken peer can make us buffer.
pub const V2_MAX_PAYLOAD: usize = 2048;
/// Most bytes ever buffered to read one header.
pub const MAX_HEADER: usize = 16 + V2_MAX_PAYLOAD;

/// What the bytes read so far are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// Too few bytes to tell; read more (never more than [`MAX_HEADER`]).
    Incomplete,
    /// Not a PROXY header: the bytes belong to the next protocol.
    Absent,
    /// A complete header of `len` bytes; `source` is the client's address,
    /// none for a `LOCAL`/`UNKNOWN` header (the proxy speaking for itself).
    Header {
        /// The client's address.
        source: Option<SocketAddr>,
        /// The header's length: what follows is the next protocol.
        len: usize,
    },
}

/// Why a PROXY header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// Version 1 text that does not follow the grammar.
    #[error("malformed PROXY v1 header: {0}")]
    V1(&'static str),
    /// Version 2 binary that does not follow the format.
    #[error("malformed PROXY v2 header: {0}")]
    V2(&'static str),
}

/// Parses the start of a connection from a trusted proxy.
pub fn parse(buf: &[u8]) -> Result<Parsed, ProxyError> {
    if starts_like(buf, V1_PREFIX) {
        return if buf.len() < V1_PREFIX.len() {
            Ok(Parsed::Incomplete)
        } else {
            parse_v1(buf)
        };
    }
    if starts_like(buf, &V2_SIGNATURE) {
        return if buf.len() < V2_SIGNATURE.len() {
            Ok(Parsed::Incomplete)
        } else {
            parse_v2(buf)
        };
    }
    Ok(Parsed::Absent)
}

/// Whether `buf` and `signature` agree on their common length (an empty
/// buffer agrees with everything: nothing is known yet).
fn starts_like(buf: &[u8], signature: &[u8]) -> bool {
    let n = buf.len().min(signature.len());
    buf[..n] == signature[..n]
}

fn parse_v1(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let window = &buf[..buf.len().min(V1_MAX)];
    let Some(end) = window.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err(ProxyError::V1("no CRLF within 107 bytes"))
        } else {
            Ok(Parsed::Incomplete)
        };
    };
    let line = std::str::from_utf8(&window[V1_PREFIX.len()..end])
        .map_err(|_| ProxyError::V1("not ASCII"))?;
    let mut fields = line.split(' ');
    let family = fields.next().unwrap_or_default();
    if family == "UNKNOWN" {
        return Ok(Parsed::Header {
            source: None,
            len: end + 2,
        });
    }
    let fields: Vec<&str> = fields.collect();
    let [src, _dst, sport, _dport] = fields[..] else {
        return Err(ProxyError::V1("expected 4 fields after the family"));
    };
    let ip: IpAddr = match family {
        "TCP4" => IpAddr::V4(src.parse().map_err(|_| ProxyError::V1("bad IPv4 source"))?),
        "TCP6" => IpAddr::V6(src.parse().map_err(|_| ProxyError::V1("bad IPv6 source"))?),
        _ => return Err(ProxyError::V1("family is not TCP4, TCP6 or UNKNOWN")),
    };
    let port: u16 = sport
        .parse()
        .map_err(|_| ProxyError::V1("bad source port"))?;
    Ok(Parsed::Header {
        source: Some(SocketAddr::new(ip, port)),
        len: end + 2,
    })
}

fn parse_v2(buf: &[u8]) -> Result<Parsed, ProxyError> {
    let Some(fixed) = buf.get(..16) else {
        return Ok(Parsed::Incomplete);
    };
    let (version_command, family) = (fixed[12], fixed[13]);
    if version_command >> 4 != 2 {
        return Err(ProxyError::V2("version is not 2"));
    }
    let payload_len = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
    if payload_len > V2_MAX_PAYLOAD {
        return Err(ProxyError::V2("longer than 2048 bytes"));
    }
    let len = 16 + payload_len;
    let Some(payload) = buf.get(16..len) else {
        return Ok(Parsed::Incomplete);
    };
    match version_command & 0x0f {
        // LOCAL: the proxy's own connection (a health check).
        0 => Ok(Parsed::Header { source: None, len }),
        1 => Ok(Parsed::Header {
            source: v2_source(family, payload)?,
            len,
        }),
        _ => Err(ProxyError::V2("command is neither LOCAL nor PROXY")),
    }
}

/// The source of a `PROXY` command; none for families without an IP
/// (unspecified, UNIX sockets).
fn v2_source(family: u8, payload: &[u8]) -> Result<Option<SocketAddr>, ProxyError> {
    let short = ProxyError::V2("addresses shorter than their family");
    match family >> 4 {
        1 => {
            let a = payload.get(..12).ok_or(short)?;
            let ip = Ipv4Addr::new(a[0], a[1], a[2], a[3]);
            let port = u16::from_be_bytes([a[8], a[9]]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        2 => {
            let a = payload.get(..36).ok_or(short)?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&a[..16]);
            let port = u16::from_be_bytes([a[32], a[33]]);
            Ok(Some(SocketAddr::new(
                IpAddr::V6(Ipv6Addr::from(octets)),
                port,
            )))
        }
        0 | 3 => Ok(None),
        _ => Err(ProxyError::V2("unknown address family")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(0x20 | command);
        out.push(family);
        out.extend_from_slice(&u16::try_from(payload.len()).unwrap_or(0).to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn v1_gives_the_source_and_its_length() {
        let buf = b"PROXY TCP4 192.0.2.7 10.0.0.1 5555 443\r\nGET / HTTP/1.1\r\n";
        let Ok(Parsed::Header { source, len }) = parse(buf) else {
            panic!("a header");
        };
        assert_eq!(
            source,
            Some("192.0.2.7:5555".parse().unwrap_or_else(|_| unreachable!()))
        );
        assert_eq!(&buf[len..len + 3], b"GET");
        let v6 = b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n";
        assert!(matches!(
            parse(v6),
            Ok(Parsed::Header {
                source: Some(_),
                ..
            })
        ));
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Ok(Parsed::Header {
                source: None,
                len: 15
            })
        );
    }

    #[test]
    fn v1_partial_is_incomplete_and_overlong_is_refused() {
        assert_eq!(parse(b"PRO"), Ok(Parsed::Incomplete));
        assert_eq!(parse(b"PROXY TCP4 1.2.3.4"), Ok(Parsed::Incomplete));
        let long = [b"PROXY ".as_slice(), &[b'A'; 200]].concat();
        assert!(parse(&long).is_err());
        assert!(parse(b"PROXY TCP4 1.2.3 1.2.3.4 1 2\r\n").is_err());
        assert!(parse(b"PROXY TCP4 1.2.3.4 1.2.3.4 99999 2\r\n").is_err());
    }

    #[test]
    fn v2_gives_the_source_and_skips_tlvs() {
        let mut payload = vec![203, 0, 113, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb];
        payload.extend_from_slice(&[0x04, 0x00, 0x01, 0xff]); // a TLV
        let mut buf = v2(1, 0x11, &payload);
        buf.extend_from_slice(b"GET");
        let Ok(Parsed::Header { source, len }) = parse(&buf) else {
            panic!("a header");
        };
        assert_eq!(
            source,
            Some(
                "203.0.113.9:8080"
                    .parse()
                    .unwrap_or_else(|_| unreachable!())
            )
        );
        assert_eq!(&buf[len..], b"GET");
        assert_eq!(
            parse(&v2(0, 0, &[])),
            Ok(Parsed::Header {
                source: None,
                len: 16
            })
        );
        assert_eq!(parse(&buf[..20]), Ok(Parsed::Incomplete));
        assert!(parse(&v2(1, 0x21, &[0; 10])).is_err());
    }

    #[test]
    fn other_protocols_are_absent() {
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Ok(Parsed::Absent));
        assert_eq!(parse(&[0x16, 0x03, 0x01]), Ok(Parsed::Absent));
        assert_eq!(parse(b""), Ok(Parsed::Incomplete));
    }

    proptest! {
        #[test]
        fn any_bytes_parse_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse(&bytes);
            let _ = parse(&[b"PROXY ".as_slice(), &bytes].concat());
            let _ = parse(&[V2_SIGNATURE.as_slice(), &bytes].concat());
        }

        #[test]
        fn a_header_never_claims_more_than_was_read(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            for buf in [[b"PROXY ".as_slice(), &bytes].concat(), [V2_SIGNATURE.as_slice(), &bytes].concat()] {
                if let Ok(Parsed::Header { len, .. }) = parse(&buf) {
                    prop_assert!(len <= buf.len());
                }
            }
        }
    }
}
