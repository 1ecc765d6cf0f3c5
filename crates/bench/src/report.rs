//! The outcome of a run: a human-readable table, then one JSON line.

use serde::Serialize;

use crate::cli::{BrokerChoice, Scenario};
use crate::histogram::Histogram;

/// Connection and memory figures, measured in every scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Gateway RSS before any connection, bytes.
    pub rss_baseline: u64,
    /// Gateway RSS with every connection subscribed and settled, bytes.
    pub rss_connected: u64,
    /// `(connected - baseline) / connections`, bytes.
    pub rss_per_connection: f64,
    /// `connected / connections`, bytes: everything the gateway processes
    /// hold, their own start-up memory included.
    pub rss_total_per_connection: f64,
}

/// One gateway process once every connection settled.
#[derive(Debug, Clone, Serialize)]
pub struct NodeFigures {
    /// Resident memory, bytes.
    pub rss: u64,
    /// Files it holds open (client sockets, listeners, Redis).
    pub open_files: u64,
    /// Its open-file limit.
    pub open_files_limit: u64,
}

/// Latencies in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest (bucket midpoint).
    pub max_ms: f64,
}

impl Latency {
    /// From a histogram in µs.
    pub fn from_histogram(h: &Histogram) -> Option<Latency> {
        let ms = |q: f64| h.quantile(q).map(|us| (us / 10.0).round() / 100.0);
        Some(Latency {
            p50_ms: ms(0.5)?,
            p99_ms: ms(0.99)?,
            p999_ms: ms(0.999)?,
            max_ms: ms(1.0)?,
        })
    }
}

/// Delivery figures over the measured window (load scenarios).
#[derive(Debug, Clone, Serialize)]
pub struct Load {
    /// Target events per second.
    pub rate: f64,
    /// Measured window, seconds.
    pub window_s: f64,
    /// Events accepted with a send time in the window.
    pub events_published: u64,
    /// Events accepted over the whole run (warmup and drain included).
    pub events_total: u64,
    /// Deliveries those events should make.
    pub deliveries_expected: u64,
    /// Deliveries of those events received by the clients.
    pub deliveries: u64,
    /// `deliveries / window`.
    pub delivered_per_s: f64,
    /// Publish-to-receive latency of those deliveries.
    pub latency: Option<Latency>,
    /// Gateway CPU time in the window, seconds (user + system).
    pub gateway_cpu_s: f64,
    /// Gateway CPU per delivered message, µs.
    pub gateway_cpu_us_per_delivery: f64,
    /// Gateway user-space CPU per delivered message, µs (without the kernel).
    pub gateway_user_us_per_delivery: f64,
    /// Gateway CPU use in the window, percent of one core.
    pub gateway_cpu_percent: f64,
    /// Load generators' CPU use in the window, percent of one core.
    pub loadgen_cpu_percent: f64,
    /// Publish batches that failed.
    pub publish_errors: u64,
    /// Redis CPU per delivered message, µs (`--broker redis`).
    pub redis_cpu_us_per_delivery: Option<f64>,
}

/// One phase of the abuse scenario.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// `none`, `flood` or `reconnect`.
    pub abuse: String,
    /// Deliveries to the subscribers of events sent in the phase's window.
    pub deliveries: u64,
    /// Their publish-to-receive latency.
    pub latency: Option<Latency>,
    /// Gateway CPU use in the window, percent of one core.
    pub gateway_cpu_percent: f64,
    /// The abusive client's CPU use in the window, percent of one core.
    pub abuser_cpu_percent: Option<f64>,
    /// What the abusive client did and had refused (whole phase).
    pub abuser: Option<crate::wire::AbuseResults>,
}

/// What became of one kind of held socket (`--scenario idle-abuse`).
#[derive(Debug, Clone, Serialize)]
pub struct Held {
    /// `half-open` or `never-subscribe`.
    pub kind: String,
    /// Sockets asked for.
    pub planned: usize,
    /// Sockets set up.
    pub opened: u64,
    /// Sockets that could not be set up.
    pub failed: u64,
    /// Closed by the gateway while watched.
    pub closed: u64,
    /// Of those, with close code 1008 (WebSockets).
    pub closed_1008: u64,
    /// Still open when the watch ended: not closed in time.
    pub still_open: u64,
    /// The gateway's deadline for them, seconds (`None`: not configured).
    pub deadline_s: Option<f64>,
    /// How long they were watched, seconds.
    pub watched_s: f64,
    /// Median time from set-up to close, seconds.
    pub close_p50_s: Option<f64>,
    /// Longest time from set-up to close, seconds.
    pub close_max_s: Option<f64>,
}

/// Everything measured in one run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The scenario.
    pub scenario: Scenario,
    /// The server under test: `gateway` or `floor`.
    pub server: &'static str,
    /// The cores the server was pinned to (`--server-cpus`), if any.
    pub server_cpus: Option<String>,
    /// Channels the subscribers are spread over.
    pub channels: usize,
    /// The broker.
    pub broker: BrokerChoice,
    /// Gateway nodes (node 0 publishes; subscribers on the others when several).
    pub nodes: usize,
    /// Connections asked for.
    pub connections: usize,
    /// Subscribed connections.
    pub connected: usize,
    /// Refused politely (503) by the gateway.
    pub refused: usize,
    /// Failed after retries.
    pub failed: usize,
    /// Subscribed connections that ended before the end of the run.
    pub dropped: usize,
    /// Load-generator processes.
    pub workers: usize,
    /// Seconds to open and subscribe every connection.
    pub connect_s: f64,
    /// Gateway CPU spent while connecting, per subscribed connection, µs.
    pub connect_us_per_connection: f64,
    /// Gateway memory.
    pub memory: Memory,
    /// Gateway peak RSS over the run, bytes.
    pub rss_peak: u64,
    /// Delivery figures (broadcast, filtered).
    pub load: Option<Load>,
    /// The phases of the abuse scenario.
    pub phases: Option<Vec<Phase>>,
    /// The held sockets of the idle-abuse scenario.
    pub held: Option<Vec<Held>>,
    /// Each node, in order (node 0 first).
    pub node_figures: Vec<NodeFigures>,
    /// The gateway was alive and ready at the end.
    pub gateway_ok: bool,
}

/// Prints the table to stdout, then the JSON line.
pub fn print(summary: &Summary) {
    println!("{}", table(summary));
    match serde_json::to_string(summary) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("chouquette-bench: cannot serialize the summary: {e}"),
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn table(s: &Summary) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("scenario", scenario_name(s.scenario)),
        (
            "server",
            format!(
                "{}, {} channel(s), {}",
                s.server,
                s.channels,
                s.server_cpus
                    .as_ref()
                    .map_or("not pinned".into(), |c| format!("pinned to cores {c}"))
            ),
        ),
        (
            "gateways",
            format!(
                "{} ({:?} broker{})",
                s.nodes,
                s.broker,
                if s.nodes > 1 {
                    "; node 0 publishes, subscribers on the others; figures summed"
                } else {
                    ""
                }
            )
            .to_lowercase(),
        ),
        (
            "connections",
            format!(
                "{} subscribed of {} ({} refused, {} failed, {} dropped), {} workers",
                s.connected, s.connections, s.refused, s.failed, s.dropped, s.workers
            ),
        ),
        (
            "connecting",
            format!(
                "{:.1} s, gateway CPU {:.0} µs per connection",
                s.connect_s, s.connect_us_per_connection
            ),
        ),
        ("gateway RSS before", mib(s.memory.rss_baseline)),
        ("gateway RSS connected", mib(s.memory.rss_connected)),
        (
            "RSS per connection",
            format!(
                "{:.0} B ({:.2} KiB)",
                s.memory.rss_per_connection,
                s.memory.rss_per_connection / 1024.0
            ),
        ),
        (
            "RSS over connections",
            format!(
                "{:.0} B (all the gateways' RSS, not less their start)",
                s.memory.rss_total_per_connection
            ),
        ),
        ("gateway RSS peak", mib(s.rss_peak)),
    ];
    if s.node_figures.len() > 1 {
        rows.push(("per node", node_row(&s.node_figures)));
    }
    if let Some(load) = &s.load {
        rows.extend(load_rows(load));
    }
    if let Some(phases) = &s.phases {
        rows.extend(phase_rows(phases));
    }
    if let Some(held) = &s.held {
        rows.extend(held.iter().map(held_row));
    }
    rows.push(("gateway ok at end", s.gateway_ok.to_string()));
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("  {k:<width$}  {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Each node's RSS and open files: `node: RSS, files/limit`.
fn node_row(nodes: &[NodeFigures]) -> String {
    nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "{i}: {}, {}/{} files",
                mib(n.rss),
                n.open_files,
                n.open_files_limit
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn phase_rows(phases: &[Phase]) -> Vec<(&'static str, String)> {
    let p99 = |p: &Phase| p.latency.as_ref().map(|l| l.p99_ms);
    let quiet: Vec<f64> = phases
        .iter()
        .filter(|p| p.abuse == "none")
        .filter_map(p99)
        .collect();
    let baseline = (!quiet.is_empty()).then(|| quiet.iter().sum::<f64>() / quiet.len() as f64);
    phases
        .iter()
        .map(|p| {
            let latency = p.latency.as_ref().map_or("none".into(), |l| {
                format!(
                    "p50 {:.2} / p99 {:.2} / p99.9 {:.2} ms",
                    l.p50_ms, l.p99_ms, l.p999_ms
                )
            });
            let ratio = match (p99(p), baseline) {
                (Some(v), Some(b)) if b > 0.0 => format!(", p99 x{:.2} of no-abuse mean", v / b),
                _ => String::new(),
            };
            let abuser = p.abuser.map_or(String::new(), |a| {
                format!(
                    "; abuser: {} msgs, {} rate_limited, {} upgrades, {} refused, {} closed, {} failed, {:.0} % CPU",
                    a.messages,
                    a.rate_limited,
                    a.connections,
                    a.refused,
                    a.closed,
                    a.failed,
                    p.abuser_cpu_percent.unwrap_or(0.0)
                )
            });
            let label: &'static str = match p.abuse.as_str() {
                "flood" => "phase flood",
                "reconnect" => "phase reconnect",
                "burn" => "phase burn (control)",
                "idle-abuse" => "phase idle-abuse",
                _ => "phase none",
            };
            (
                label,
                format!(
                    "{} deliveries, {latency}{ratio}, gateway {:.0} % CPU{abuser}",
                    p.deliveries, p.gateway_cpu_percent
                ),
            )
        })
        .collect()
}

/// The scenario as given on the command line.
fn scenario_name(scenario: Scenario) -> String {
    serde_json::to_value(scenario)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// One kind of held socket: how many the gateway closed and how soon, and
/// loudly how many it did not.
fn held_row(h: &Held) -> (&'static str, String) {
    let label = if h.kind == "half-open" {
        "held half-open"
    } else {
        "held never-subscribe"
    };
    let deadline = h.deadline_s.map_or("no deadline configured".into(), |d| {
        format!("deadline {d:.1} s")
    });
    let timing = match (h.close_p50_s, h.close_max_s) {
        (Some(p50), Some(max)) => format!("time to close p50 {p50:.2} s, max {max:.2} s"),
        _ => "none closed".into(),
    };
    let verdict = if h.still_open > 0 || h.opened == 0 {
        format!(
            "NOT CLOSED: {} of {} still open after {:.1} s",
            h.still_open, h.opened, h.watched_s
        )
    } else {
        "all closed".into()
    };
    let policy = if h.kind == "never-subscribe" {
        format!(" ({} with 1008)", h.closed_1008)
    } else {
        String::new()
    };
    (
        label,
        format!(
            "{verdict}; {} planned, {} opened, {} failed, {} closed{policy}; {timing} ({deadline})",
            h.planned, h.opened, h.failed, h.closed
        ),
    )
}

fn load_rows(load: &Load) -> Vec<(&'static str, String)> {
    let latency = load.latency.as_ref().map_or("none".into(), |l| {
        format!(
            "p50 {:.2} / p99 {:.2} / p99.9 {:.2} / max {:.2} ms",
            l.p50_ms, l.p99_ms, l.p999_ms, l.max_ms
        )
    });
    vec![
        ("target rate", format!("{:.1} events/s", load.rate)),
        ("window", format!("{:.1} s", load.window_s)),
        (
            "events published",
            format!(
                "{} in the window ({} in all)",
                load.events_published, load.events_total
            ),
        ),
        (
            "deliveries",
            format!(
                "{} of {} expected",
                load.deliveries, load.deliveries_expected
            ),
        ),
        ("delivered", format!("{:.0} msgs/s", load.delivered_per_s)),
        ("latency", latency),
        (
            "gateway CPU",
            format!(
                "{:.2} s ({:.0} % of a core), {:.3} µs per delivery ({:.3} µs in user space)",
                load.gateway_cpu_s,
                load.gateway_cpu_percent,
                load.gateway_cpu_us_per_delivery,
                load.gateway_user_us_per_delivery
            ),
        ),
        (
            "load generator CPU",
            format!("{:.0} % of a core", load.loadgen_cpu_percent),
        ),
        ("publish errors", load.publish_errors.to_string()),
        (
            "Redis CPU",
            load.redis_cpu_us_per_delivery
                .map_or("no Redis".into(), |us| format!("{us:.2} µs per delivery")),
        ),
    ]
}
