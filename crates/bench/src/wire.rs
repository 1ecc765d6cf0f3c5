//! What the parent and its workers say to each other: the plan (an
//! environment variable), commands (JSON lines on the worker's stdin) and
//! reports (JSON lines on its stdout).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::cli::Scenario;

/// Environment variable carrying a worker's [`Plan`] (it holds the app secret).
pub const PLAN_VAR: &str = "CHOUQUETTE_BENCH_PLAN";

/// Key of the send time (Unix ns) in every published event's `data`.
pub const SENT_KEY: &str = "bench_t";
/// How [`SENT_KEY`] appears in a data message, right before its value.
pub const SENT_PATTERN: &str = "\"bench_t\":";

/// App, channel and credentials shared by the gateway config and the clients.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppSpec {
    /// App id.
    pub app: String,
    /// Channel subscribed and published to.
    pub channel: String,
    /// Token secret.
    pub secret: String,
    /// Publish API key.
    pub api_key: String,
}

impl AppSpec {
    /// App `bench` on `channel`, with a secret and an API key of this run
    /// only (a gateway left over from another run accepts neither).
    pub fn fresh(channel: &str) -> AppSpec {
        let nonce = format!("{}-{}", std::process::id(), unix_nanos());
        AppSpec {
            app: "bench".into(),
            channel: channel.into(),
            secret: format!("secret-{nonce}"),
            api_key: format!("key-{nonce}"),
        }
    }
}

/// One worker's share of the connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// The scenario (decides each connection's filter).
    pub scenario: Scenario,
    /// The gateway's public listener.
    pub target: SocketAddr,
    /// App and credentials.
    pub app: AppSpec,
    /// Global index of this worker's first connection.
    pub first: usize,
    /// Connections this worker opens.
    pub count: usize,
    /// Most sockets per source address.
    pub per_source: usize,
    /// New connections per second for this worker.
    pub connect_rate: u32,
    /// The worker exits by itself after this long, whatever happens.
    pub lifetime: Duration,
    /// Instead of subscribers, one abusive client (`--scenario abuse`).
    #[serde(default)]
    pub abuse: Option<crate::abuse::Abuse>,
    /// Instead of subscribers, sockets held open without being used
    /// (`--scenario idle-abuse`).
    #[serde(default)]
    pub hold: Option<crate::holders::Hold>,
    /// Instead of subscribers, MQTT devices publishing on a schedule
    /// (`--scenario devices`).
    #[serde(default)]
    pub devices: Option<crate::device_load::Share>,
    /// Subscribers are spread over this many channels (`--channels`).
    #[serde(default = "one")]
    pub channels: usize,
    /// Instead of plain subscribers, clients that reconnect at once when
    /// their connection ends and resume with `since` (`--scenario storm`).
    #[serde(default)]
    pub storm: Option<crate::storm_client::Share>,
}

fn one() -> usize {
    1
}

impl Plan {
    /// The source address of global connection `index`: 127.0.0.2 and up,
    /// each holding `per_source` sockets on ports from [`FIRST_SOURCE_PORT`].
    /// Explicit ports keep `bind` O(1): with port 0 the kernel scans every
    /// port bound on the address, which made connecting quadratic.
    pub fn source(&self, index: usize) -> SocketAddrV4 {
        self.source_of(index, 0)
    }

    /// [`Plan::source`] for the `attempt`-th connection of `index` (0: the
    /// first): odd attempts take the port `per_source` above, so a
    /// reconnection never needs the 4-tuple its previous connection may
    /// still hold in TIME_WAIT on either side.
    pub fn source_of(&self, index: usize, attempt: u64) -> SocketAddrV4 {
        let per_source = self.per_source.clamp(1, MAX_PER_SOURCE);
        let host = (FIRST_SOURCE_HOST + index / per_source).min(LAST_SOURCE_HOST);
        let half = if attempt % 2 == 1 { per_source } else { 0 };
        let port = usize::from(FIRST_SOURCE_PORT) + index % per_source + half;
        SocketAddrV4::new(
            Ipv4Addr::new(127, 0, 0, host as u8),
            u16::try_from(port).unwrap_or(u16::MAX),
        )
    }
}

/// The first client source address is 127.0.0.2 (.1 is the servers').
pub const FIRST_SOURCE_HOST: usize = 2;
/// The last client source address, 127.0.0.254: connections past
/// `(LAST - FIRST + 1) * per_source` would share sources (the bench
/// refuses such a run, see `plan::check`).
pub const LAST_SOURCE_HOST: usize = 254;

/// First client source port: below the ephemeral range (32768 and up).
pub const FIRST_SOURCE_PORT: u16 = 10_000;
/// Most sockets per source address (ports 10000..30000; a reconnection's
/// port is up to this above, so ports stay under 50,000).
pub const MAX_PER_SOURCE: usize = 20_000;

/// Parent to worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Count events sent within `[start_ns, end_ns)` (Unix ns).
    Window {
        /// Start, inclusive.
        start_ns: u64,
        /// End, exclusive.
        end_ns: u64,
    },
    /// Send a [`Report::Result`].
    Report,
    /// `storm`: the gateway holding the clients is gone and about to be
    /// started again; a client is caught up once it has seen every offset
    /// of its channel up to `offsets[channel]` (what node 0 had
    /// acknowledged by then). Answered by [`Report::Armed`].
    Restart {
        /// The highest offset acknowledged so far, per channel.
        offsets: Vec<u64>,
    },
    /// Close everything and exit.
    Exit,
}

/// Worker to parent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Report {
    /// Every connection attempt has ended.
    Connected {
        /// Subscribed (acked) connections.
        connected: usize,
        /// Refused politely by the gateway (HTTP 503).
        refused: usize,
        /// Failed after retries.
        failed: usize,
    },
    /// Counts and latencies.
    Result(Results),
    /// What an abusive client did and had refused.
    Abuse(AbuseResults),
    /// What held sockets saw.
    Held(HeldResults),
    /// What a worker's MQTT devices sent and had acknowledged.
    Devices(crate::device_load::Results),
    /// `storm`: the [`Command::Restart`] was taken.
    Armed,
    /// `storm`: what the reconnecting clients did.
    Storm(crate::storm_client::Results),
}

/// What one worker's held sockets saw (`--scenario idle-abuse`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HeldResults {
    /// Their kind.
    pub hold: crate::holders::Hold,
    /// Sockets set up (connected, and upgraded for `never-subscribe`).
    pub opened: u64,
    /// Sockets that could not be set up.
    pub failed: u64,
    /// Of the opened, closed by the gateway so far.
    pub closed: u64,
    /// Of the closed, with a close frame of code 1008.
    pub closed_1008: u64,
    /// Time from set-up to close, sparse `(bucket, count)`, µs.
    pub histogram: Vec<(usize, u64)>,
}

/// What an abusive client did, and what the gateway refused it.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct AbuseResults {
    /// Messages sent.
    pub messages: u64,
    /// `rate_limited` errors received.
    pub rate_limited: u64,
    /// WebSocket upgrades accepted.
    pub connections: u64,
    /// Upgrades refused with an HTTP status (429, 503).
    pub refused: u64,
    /// Connections that ended (closed by the gateway, for the flood).
    pub closed: u64,
    /// Connect or upgrade failures without an HTTP answer.
    pub failed: u64,
}

/// What a worker measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Results {
    /// Data messages received in all.
    pub delivered: u64,
    /// Of those, sent within the window.
    pub in_window: u64,
    /// Latency histogram of in-window messages, sparse `(bucket, count)`, µs.
    pub histogram: Vec<(usize, u64)>,
    /// Connections that ended after subscribing.
    pub dropped: usize,
    /// Connections still open.
    pub open: usize,
}

/// Now, in ns since the Unix epoch (the clock shared by all processes).
pub fn unix_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_spread_over_addresses_and_ports() {
        let plan = Plan {
            scenario: Scenario::Idle,
            target: SocketAddr::from(([127, 0, 0, 1], 1)),
            app: AppSpec {
                app: "a".into(),
                channel: "c".into(),
                secret: "s".into(),
                api_key: "k".into(),
            },
            first: 0,
            count: 30_000,
            per_source: 10_000,
            connect_rate: 1,
            lifetime: Duration::from_secs(1),
            abuse: None,
            hold: None,
            devices: None,
            channels: 1,
            storm: None,
        };
        assert_eq!(plan.source(0).to_string(), "127.0.0.2:10000");
        assert_eq!(plan.source(9_999).to_string(), "127.0.0.2:19999");
        assert_eq!(plan.source(10_000).to_string(), "127.0.0.3:10000");
        assert_eq!(plan.source_of(10_000, 1).to_string(), "127.0.0.3:20000");
        assert_eq!(plan.source_of(10_000, 2).to_string(), "127.0.0.3:10000");
        assert_eq!(plan.source_of(29_999, 3).to_string(), "127.0.0.4:29999");
    }

    #[test]
    fn pattern_names_the_key() {
        assert_eq!(SENT_PATTERN, format!("\"{SENT_KEY}\":"));
    }
}
