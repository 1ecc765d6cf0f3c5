//! `--scenario notify-bytes`: the bandwidth that "notify, then fetch" saves
//! (docs/notifications.md). `-n` subscribers each subscribe to two channels
//! of one app, `bornes` (events with their `data`) and `docs` (configured
//! `notify_only = true`: events without `data`); the same [`EVENTS`]
//! events, each with about [`DATA_BYTES`] of realistic JSON `data`, are
//! published to each. Every subscriber counts the bytes of the text frames
//! it receives per channel until it has every event of both. Reports bytes
//! per delivery on each channel and the saving, as a table and a JSON
//! line. Bytes depend on the messages alone, not on the machine: a short
//! run of a debug or release build gives the same figures.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::cli::Options;
use crate::gateway::{self, BrokerSpec, Gateway, LimitsSpec};
use crate::http::Http;
use crate::wire::{AppSpec, unix_nanos};

/// Events published to each channel.
pub const EVENTS: u64 = 100;
/// Approximate size of each event's `data`, in bytes.
pub const DATA_BYTES: usize = 1024;
/// The channel configured `notify_only = true`.
const NOTIFY_ONLY: &str = "docs";
/// The channel delivering `data`.
const FULL: &str = "bornes";

/// The measured figures of one run.
#[derive(Debug, Serialize)]
struct Summary {
    subscribers: usize,
    events: u64,
    data_bytes: usize,
    deliveries_per_channel: u64,
    bytes_per_delivery_full: f64,
    bytes_per_delivery_notify_only: f64,
    saving_ratio: f64,
}

/// Bytes and frames one subscriber got on each channel.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    full: (u64, u64),
    notify_only: (u64, u64),
}

/// Runs the scenario and prints its report.
pub async fn run(options: &Options) -> anyhow::Result<()> {
    let app = AppSpec::fresh(FULL);
    let binary = gateway::binary(options.gateway.as_deref())?;
    let extra = format!(
        "\n[apps.limits]\nclient_messages_per_second = 0\n\n[apps.channels.{NOTIFY_ONLY}]\nnotify_only = true\n"
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
    let subscribers = options.connections.max(1);
    let mut readers = Vec::with_capacity(subscribers);
    for _ in 0..subscribers {
        readers.push(subscribe(gw.public, &app).await?);
    }
    let tasks: Vec<_> = readers
        .into_iter()
        .map(|ws| tokio::spawn(tally(ws)))
        .collect();
    publish(gw.internal, &app).await?;
    let mut total = Tally::default();
    for task in tasks {
        let t = tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .context("a subscriber did not get every event within 60 s")?
            .context("a subscriber panicked")??;
        total.full.0 += t.full.0;
        total.full.1 += t.full.1;
        total.notify_only.0 += t.notify_only.0;
        total.notify_only.1 += t.notify_only.1;
    }
    gw.stop(Duration::from_secs(5)).await;
    let per = |(bytes, frames): (u64, u64)| bytes as f64 / frames.max(1) as f64;
    let (full, bare) = (per(total.full), per(total.notify_only));
    let summary = Summary {
        subscribers,
        events: EVENTS,
        data_bytes: DATA_BYTES,
        deliveries_per_channel: total.full.1,
        bytes_per_delivery_full: full,
        bytes_per_delivery_notify_only: bare,
        saving_ratio: 1.0 - bare / full,
    };
    println!(
        "notify-bytes: {} subscribers x {} events of ~{} B data per channel",
        summary.subscribers, summary.events, summary.data_bytes
    );
    println!("  with data (bornes):      {full:8.1} B per delivery");
    println!("  notify_only (docs):      {bare:8.1} B per delivery");
    println!(
        "  saving:                  {:8.1} %  ({:.1}x fewer bytes)",
        summary.saving_ratio * 100.0,
        full / bare.max(1.0)
    );
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A WebSocket subscribed to both channels (both `ack`s read).
async fn subscribe(public: SocketAddr, app: &AppSpec) -> anyhow::Result<Ws> {
    let url = format!("ws://{public}/ws");
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .context("cannot open a WebSocket")?;
    let exp = unix_nanos() / 1_000_000_000 + 3600;
    for channel in [FULL, NOTIFY_ONLY] {
        let claims = json!({"app_id": app.app, "channel": channel,
                            "filters": {"*": {}}, "exp": exp});
        let token = chouquette_core::token::sign(&claims, app.secret.as_bytes());
        let subscribe = json!({"class": "subscribe", "app_id": app.app,
                               "channels": {channel: {"filters": token}}});
        ws.send(Message::text(subscribe.to_string())).await?;
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.as_str().contains(r#""class":"ack""#) => break,
                Some(Ok(Message::Text(t))) => bail!("subscribe refused: {}", t.as_str()),
                Some(Ok(_)) => continue,
                Some(Err(e)) => bail!("the gateway connection failed: {e}"),
                None => bail!("the gateway closed the connection"),
            }
        }
    }
    Ok(ws)
}

/// Counts the bytes of every `data` frame per channel until [`EVENTS`] of
/// each arrived.
async fn tally(mut ws: Ws) -> anyhow::Result<Tally> {
    let mut t = Tally::default();
    while t.full.1 < EVENTS || t.notify_only.1 < EVENTS {
        let text = match ws.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
            Some(Err(e)) => bail!("the gateway connection failed: {e}"),
            None => bail!("the gateway closed the connection"),
        };
        let message: Value = serde_json::from_str(text.as_str())?;
        let bytes = text.len() as u64;
        match message["channel"].as_str() {
            Some(FULL) => t.full = (t.full.0 + bytes, t.full.1 + 1),
            Some(NOTIFY_ONLY) => {
                if message.get("data").is_some() {
                    bail!("a notify_only event carried data: {message}");
                }
                t.notify_only = (t.notify_only.0 + bytes, t.notify_only.1 + 1);
            }
            _ => {}
        }
    }
    Ok(t)
}

/// A realistic document-change event: ids, a title, an excerpt, padded to
/// about [`DATA_BYTES`].
fn event(channel: &str, i: u64) -> Value {
    let mut data = json!({
        "id": format!("doc-{i}"), "revision": i, "author": {"id": 42, "name": "Ana Lopes"},
        "title": "Quarterly report: charging stations", "tags": ["report", "q3", "stations"],
        "updated": "2026-12-03T10:00:00Z",
    });
    let used = data.to_string().len();
    data["excerpt"] = json!("lorem ipsum ".repeat(DATA_BYTES.saturating_sub(used + 14) / 12));
    json!({"app_id": "bench", "channel": channel, "event_kind": "edited",
           "keywords": [format!("doc:{i}"), "team:t1"], "key": format!("doc:{i}"), "data": data})
}

/// Publishes [`EVENTS`] events to each channel, in batches of 10.
async fn publish(internal: SocketAddr, app: &AppSpec) -> anyhow::Result<()> {
    let http = Http::default();
    let url = format!("http://{internal}/api/v1/publish");
    for start in (0..EVENTS).step_by(10) {
        let batch: Vec<Value> = (start..(start + 10).min(EVENTS))
            .flat_map(|i| [event(FULL, i), event(NOTIFY_ONLY, i)])
            .collect();
        let body = serde_json::to_vec(&batch)?;
        let (status, answer) = http.post_json(&url, &app.api_key, body).await?;
        if status != 200 {
            bail!("publish answered {status}: {answer}");
        }
    }
    Ok(())
}
