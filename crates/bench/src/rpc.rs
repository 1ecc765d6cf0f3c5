//! `--scenario rpc`: client calls through the gateway to a trivial backend
//! in this process. `-n` callers each connect (a `connect` with a signed
//! identity) and make one call at a time for the warmup and the window;
//! then as many callers POST the same backend directly, for the latency a
//! call costs without the gateway. Reports calls per second through the
//! gateway and the latency it adds (p50, p99), as a table and a JSON line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::cli::Options;
use crate::gateway::{self, BrokerSpec, Gateway, LimitsSpec};
use crate::histogram::{AtomicHistogram, Histogram};
use crate::http::Http;
use crate::report::Latency;
use crate::wire::{AppSpec, unix_nanos};

/// The measured figures of one run.
#[derive(Debug, Serialize)]
struct RpcSummary {
    callers: usize,
    window_s: f64,
    calls: u64,
    calls_per_s: f64,
    errors: u64,
    through_gateway: Option<Latency>,
    direct: Option<Latency>,
    added_p50_ms: Option<f64>,
    added_p99_ms: Option<f64>,
    gateway_cpu_percent: f64,
}

/// What the callers of one phase counted in the window.
#[derive(Default)]
struct Counts {
    latency: AtomicHistogram,
    calls: AtomicU64,
    errors: AtomicU64,
}

/// When the measured window runs.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Window {
    fn after(options: &Options) -> Window {
        let start = Instant::now() + options.warmup;
        Window {
            start,
            end: start + options.duration,
        }
    }

    fn holds(&self, at: Instant) -> bool {
        at >= self.start && at < self.end
    }
}

/// Runs the scenario and prints its report.
pub async fn run(options: &Options) -> anyhow::Result<()> {
    let backend = start_backend().await?;
    let url = format!("http://{backend}/rpc");
    let app = AppSpec::fresh("bornes");
    let binary = gateway::binary(options.gateway.as_deref())?;
    let extra = format!(
        "\n[apps.limits]\ncalls_per_second = 0\nclient_messages_per_second = 0\n\n[[apps.rpc]]\nprefix = \"\"\nurl = \"{url}\"\ntimeout = \"10s\"\n"
    );
    let gw = Gateway::start_with(
        &binary,
        &app,
        4096,
        &LimitsSpec::default(),
        &BrokerSpec::Memory,
        &extra,
    )
    .await?;
    let callers = options.connections.max(1);
    let cpu_before = gw.cpu_seconds()?;
    let window = Window::after(options);
    let through = run_callers(callers, window, |i, counts| {
        call_loop(gw.public, app.clone(), i, window, counts)
    })
    .await?;
    let cpu = gw.cpu_seconds()? - cpu_before;
    let window = Window::after(options);
    let direct = run_callers(callers, window, |_, counts| {
        direct_loop(url.clone(), window, counts)
    })
    .await?;
    gw.stop(Duration::from_secs(5)).await;
    let summary = summarize(options, callers, &through, &direct, cpu);
    print(&summary);
    Ok(())
}

/// Runs `callers` loops made by `make` until the window ends.
async fn run_callers<F, Fut>(callers: usize, window: Window, make: F) -> anyhow::Result<Counts>
where
    F: Fn(usize, Arc<Counts>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let counts = Arc::new(Counts::default());
    let tasks: Vec<_> = (0..callers)
        .map(|i| tokio::spawn(make(i, counts.clone())))
        .collect();
    for task in tasks {
        task.await.context("a caller panicked")??;
    }
    tokio::time::sleep_until(window.end).await;
    Arc::try_unwrap(counts).map_err(|_| anyhow::anyhow!("callers still hold their counts"))
}

/// A backend answering every call at once with a small JSON object.
async fn start_backend() -> anyhow::Result<SocketAddr> {
    let router = axum::Router::new().route(
        "/rpc",
        axum::routing::post(|| async { axum::Json(json!({"ok": true})) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok(addr)
}

/// One caller through the gateway: connect, then one call at a time.
async fn call_loop(
    public: SocketAddr,
    app: AppSpec,
    index: usize,
    window: Window,
    counts: Arc<Counts>,
) -> anyhow::Result<()> {
    let url = format!("ws://{public}/ws");
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .context("cannot open a WebSocket")?;
    let claims = json!({"app_id": app.app, "sub": format!("caller-{index}"),
                        "exp": unix_nanos() / 1_000_000_000 + 3600});
    let token = chouquette_core::token::sign(&claims, app.secret.as_bytes());
    let connect = json!({"class": "connect", "app_id": app.app, "token": token});
    ws.send(Message::text(connect.to_string())).await?;
    next_text(&mut ws).await?;
    let mut id = 0u64;
    while Instant::now() < window.end {
        id += 1;
        let call = json!({"class": "call", "id": id, "method": "bench.ping", "args": [index]});
        let sent = Instant::now();
        ws.send(Message::text(call.to_string())).await?;
        let answer = next_text(&mut ws).await?;
        let ok = answer.starts_with(r#"{"class":"result""#);
        record(&counts, &window, sent, ok);
    }
    Ok(())
}

/// One caller straight to the backend, as the gateway would call it.
async fn direct_loop(url: String, window: Window, counts: Arc<Counts>) -> anyhow::Result<()> {
    let http = Http::default();
    let body = json!({"method": "bench.ping", "args": [0], "kwargs": {},
                      "user": {"app_id": "bench", "user_id": "caller", "groups": []}});
    while Instant::now() < window.end {
        let sent = Instant::now();
        let answer = http
            .post_json(&url, "-", body.to_string().into_bytes())
            .await;
        record(&counts, &window, sent, matches!(answer, Ok((200, _))));
    }
    Ok(())
}

fn record(counts: &Counts, window: &Window, sent: Instant, ok: bool) {
    if !window.holds(sent) {
        return;
    }
    if ok {
        let micros = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
        counts.latency.record(micros);
        counts.calls.fetch_add(1, Ordering::Relaxed);
    } else {
        counts.errors.fetch_add(1, Ordering::Relaxed);
    }
}

async fn next_text(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> anyhow::Result<String> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.as_str().to_owned()),
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("the gateway connection failed: {e}"),
            None => bail!("the gateway closed the connection"),
        }
    }
}

fn latency(counts: &Counts) -> (Histogram, Option<Latency>) {
    let mut h = Histogram::default();
    h.merge(&counts.latency.snapshot());
    let ms = |q: f64| h.quantile(q).map(|us| us / 1000.0);
    let figures = match (ms(0.5), ms(0.99), ms(0.999), ms(1.0)) {
        (Some(p50_ms), Some(p99_ms), Some(p999_ms), Some(max_ms)) => Some(Latency {
            p50_ms,
            p99_ms,
            p999_ms,
            max_ms,
        }),
        _ => None,
    };
    (h, figures)
}

fn summarize(
    options: &Options,
    callers: usize,
    through: &Counts,
    direct: &Counts,
    cpu: f64,
) -> RpcSummary {
    let window_s = options.duration.as_secs_f64();
    let calls = through.calls.load(Ordering::Relaxed);
    let (_, through_gateway) = latency(through);
    let (_, direct_latency) = latency(direct);
    let added =
        |f: fn(&Latency) -> f64| Some(f(through_gateway.as_ref()?) - f(direct_latency.as_ref()?));
    RpcSummary {
        callers,
        window_s,
        calls,
        calls_per_s: calls as f64 / window_s,
        errors: through.errors.load(Ordering::Relaxed),
        added_p50_ms: added(|l| l.p50_ms),
        added_p99_ms: added(|l| l.p99_ms),
        through_gateway,
        direct: direct_latency,
        gateway_cpu_percent: cpu * 100.0 / (options.warmup + options.duration).as_secs_f64(),
    }
}

fn print(s: &RpcSummary) {
    let show = |l: &Option<Latency>| {
        l.as_ref().map_or("-".into(), |l| {
            format!("p50 {:.3} ms, p99 {:.3} ms", l.p50_ms, l.p99_ms)
        })
    };
    println!(
        "scenario rpc: {} callers, one call at a time, {:.0} s window",
        s.callers, s.window_s
    );
    println!(
        "calls through the gateway  {:.0}/s ({} calls, {} errors)",
        s.calls_per_s, s.calls, s.errors
    );
    println!("through the gateway        {}", show(&s.through_gateway));
    println!("backend directly           {}", show(&s.direct));
    if let (Some(p50), Some(p99)) = (s.added_p50_ms, s.added_p99_ms) {
        println!("added by the gateway       p50 {p50:.3} ms, p99 {p99:.3} ms");
    }
    println!(
        "gateway CPU                {:.0}% of one core",
        s.gateway_cpu_percent
    );
    println!("{}", serde_json::to_string(s).unwrap_or_default());
}
