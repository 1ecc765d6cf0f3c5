//! Who the client is: the socket's peer, unless that peer is a trusted proxy
//! (`[listen] trusted_proxies`), whose word on the client's address is then
//! believed (a PROXY protocol header, else `X-Forwarded-For`). Every
//! per-address limit keys on the address resolved here.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use axum::http::HeaderMap;

/// One trusted network: an address and how many leading bits must match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    addr: IpAddr,
    prefix: u8,
}

/// Why a `trusted_proxies` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{entry}` is not an IP address or CIDR network (e.g. 10.0.0.0/8, ::1)")]
pub struct BadNetwork {
    entry: String,
}

impl FromStr for Network {
    type Err = BadNetwork;

    fn from_str(entry: &str) -> Result<Network, BadNetwork> {
        let bad = || BadNetwork {
            entry: entry.to_string(),
        };
        let (addr, prefix) = match entry.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (entry, None),
        };
        let addr = canonical(addr.trim().parse::<IpAddr>().map_err(|_| bad())?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p.trim().parse::<u8>().map_err(|_| bad())?,
            None => max,
        };
        if prefix > max {
            return Err(bad());
        }
        Ok(Network { addr, prefix })
    }
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        let bits = |a: IpAddr| match a {
            IpAddr::V4(v4) => u128::from(u32::from(v4)) << 96,
            IpAddr::V6(v6) => u128::from(v6),
        };
        if self.addr.is_ipv4() != ip.is_ipv4() {
            return false;
        }
        let mask = match self.prefix {
            0 => 0,
            p => u128::MAX << (128 - u32::from(p)),
        };
        bits(self.addr) & mask == bits(ip) & mask
    }
}

/// An IPv4 address written as IPv6 (`::ffff:a.b.c.d`, how a dual-stack
/// socket reports IPv4 peers) is the IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// The proxies whose word on the client's address is believed.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    networks: Vec<Network>,
}

/// Entries of `X-Forwarded-For` looked at, from the right: a longer chain
/// is a client writing its own header, and the address we stop at is then
/// still one a trusted proxy added.
const MAX_FORWARDED_HOPS: usize = 32;

impl TrustedProxies {
    /// Parses each entry (an IP or a CIDR network).
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<TrustedProxies, BadNetwork> {
        let networks = entries
            .iter()
            .map(|e| e.as_ref().parse())
            .collect::<Result<_, _>>()?;
        Ok(TrustedProxies { networks })
    }

    /// Whether nothing is trusted (the common case: clients connect directly).
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.networks.iter().any(|n| n.contains(ip))
    }

    /// The client behind trusted proxy `peer` according to
    /// `X-Forwarded-For`: the right-most address that is not itself a
    /// trusted proxy (what the left of it says was written by whoever it
    /// names, so it is not believed). `peer` itself when the header is
    /// missing or its right-most untrusted entry is not an address.
    pub fn forwarded_client(&self, peer: SocketAddr, headers: &HeaderMap) -> SocketAddr {
        let entries = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.rsplit(','))
            .take(MAX_FORWARDED_HOPS);
        let mut leftmost = None;
        for entry in entries {
            let Some(ip) = parse_forwarded(entry.trim()) else {
                return peer;
            };
            if !self.trusts(ip) {
                return SocketAddr::new(ip, 0);
            }
            leftmost = Some(ip);
        }
        // Every entry is a trusted proxy: the farthest one is the client.
        leftmost.map_or(peer, |ip| SocketAddr::new(ip, 0))
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port
/// (`1.2.3.4:5`, `[::1]:5`).
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(canonical)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 40000))
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            if let Ok(v) = v.parse() {
                h.append("x-forwarded-for", v);
            }
        }
        h
    }

    fn ip(s: &str) -> SocketAddr {
        SocketAddr::new(s.parse().unwrap_or(IpAddr::from([0, 0, 0, 0])), 0)
    }

    #[test]
    fn networks_match_by_prefix_and_family() {
        let t = TrustedProxies::parse(&["10.0.0.0/8", "::1", "127.0.0.1", "2001:db8::/32"])
            .unwrap_or_default();
        assert!(t.trusts("10.200.3.4".parse().unwrap_or(IpAddr::from([0; 4]))));
        assert!(t.trusts("::ffff:127.0.0.1".parse().unwrap_or(IpAddr::from([0; 4]))));
        assert!(t.trusts("2001:db8:1::5".parse().unwrap_or(IpAddr::from([0; 4]))));
        assert!(!t.trusts("11.0.0.1".parse().unwrap_or(IpAddr::from([0; 4]))));
        assert!(!t.trusts("127.0.0.2".parse().unwrap_or(IpAddr::from([0; 4]))));
        for bad in ["10.0.0.0/33", "nope", "::1/129", "1.2.3.4/x", ""] {
            assert!(TrustedProxies::parse(&[bad]).is_err(), "{bad}");
        }
        assert!(TrustedProxies::parse(&["0.0.0.0/0"]).is_ok());
    }

    #[test]
    fn the_rightmost_untrusted_forwarded_address_is_the_client() {
        let t = TrustedProxies::parse(&["127.0.0.1", "10.0.0.0/8"]).unwrap_or_default();
        let h = xff(&["6.6.6.6, 203.0.113.5", "10.1.1.1"]);
        assert_eq!(t.forwarded_client(peer(), &h), ip("203.0.113.5"));
        assert_eq!(t.forwarded_client(peer(), &xff(&[])), peer());
        assert_eq!(t.forwarded_client(peer(), &xff(&["junk"])), peer());
        assert_eq!(
            t.forwarded_client(peer(), &xff(&["[2001:db8::1]:443"])),
            ip("2001:db8::1")
        );
        assert_eq!(
            t.forwarded_client(peer(), &xff(&["10.0.0.9, 10.0.0.8"])),
            ip("10.0.0.9")
        );
    }
}
