//! One charging point of the demo as a real device of its gateway
//! (docs/devices.md): a WebSocket connection of its own over loopback, a
//! `connect` token whose `publish` claim pins it to `borne:<uid>` on the
//! demo's channel, its status changes and telemetry sent with `publish`
//! (stamped with its own time), and the backend's commands (`call`)
//! answered.
//!
//! It also plays the network's faults: an outage first mutes it (the
//! connection stays open, it says nothing: `device_silent` once past
//! `silent_after`), then cuts its connection (`device_offline`) until it
//! comes back (`device_online`). What changed meanwhile waits in its queue
//! and is sent on its return with the time it happened, after its fresh
//! status, so those older events are `late` and never replace it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chouquette_core::clock::unix_now;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, interval_at, sleep_until};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::fleet::{Change, Fleet, Rng};
use super::{APP, CHANNEL};

/// Orders a point's queue holds; past it the simulator's change for that
/// point is dropped (a point away for long loses its oldest news, logged).
pub const QUEUE: usize = 256;
/// The method that puts a point back to `available` (refused in `fault`).
pub const UNLOCK: &str = "borne.unlock";
/// The method that restarts a point: it answers, goes away for
/// [`RESTART_DOWN`], comes back; a fault is cleared.
pub const RESTART: &str = "borne.restart";
/// How long a restart keeps a point away.
pub const RESTART_DOWN: Duration = Duration::from_secs(3);
/// Wait before connecting again after a failure (the demo is stopping, or
/// its gateway refused us).
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Lifetime of a point's `connect` token; it sends a fresh one halfway.
const TOKEN_TTL: u64 = 3600;
/// How long the gateway has to acknowledge `connect`.
const CONNECT_WAIT: Duration = Duration::from_secs(5);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the simulator tells a point.
#[derive(Debug)]
pub enum Order {
    /// Report this change, which happened `at` (the point's clock).
    Report { change: Change, at: SystemTime },
    /// Say nothing for `mute`, then drop the connection for `cut`.
    Outage { mute: Duration, cut: Duration },
}

/// What every point shares: where its gateway is, the app's secret (the
/// backend signs its token), the fleet's truth and its telemetry period.
#[derive(Debug)]
pub struct Link {
    /// `ws://<public>/ws`.
    pub url: String,
    /// The app's secret.
    pub secret: String,
    /// The points as they are (a command changes them here too).
    pub fleet: Arc<Mutex<Fleet>>,
    /// Time between two telemetry reports: below `silent_after`.
    pub telemetry_every: Duration,
}

/// Why a session ended badly.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The WebSocket failed.
    #[error("websocket: {0}")]
    Socket(#[from] tokio_tungstenite::tungstenite::Error),
    /// The gateway refused the `connect`, or did not answer it.
    #[error("connect refused: {0}")]
    Refused(String),
    /// The gateway closed the connection.
    #[error("connection closed")]
    Closed,
}

/// A point's `connect` token: `sub` is its id, and its `publish` claim
/// pins it to `borne:<uid>` on the demo's channel (PROTOCOL.md section 8).
pub fn token(secret: &str, uid: &str) -> String {
    let claims = json!({
        "app_id": APP, "sub": uid, "exp": unix_now() + TOKEN_TTL,
        "publish": {CHANNEL: [format!("borne:{uid}")]},
    });
    chouquette_core::token::sign(&claims, secret.as_bytes())
}

/// A point's own generator, seeded by its id.
pub fn rng_of(uid: &str) -> Rng {
    Rng::new(
        uid.bytes()
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b))),
    )
}

/// Runs point `uid` until its orders end (the demo stops).
pub async fn run(uid: String, link: Arc<Link>, mut orders: mpsc::Receiver<Order>) {
    let mut rng = rng_of(&uid);
    loop {
        let away = match session(&uid, &link, &mut orders, &mut rng).await {
            Ok(Some(away)) => away,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(borne = %uid, error = %e, "demo point disconnected");
                RETRY_AFTER
            }
        };
        tokio::time::sleep(away).await;
    }
}

/// One connection: `Some(away)` when the point leaves on purpose (an
/// outage, a restart) for that long, `None` when its orders ended.
async fn session(
    uid: &str,
    link: &Link,
    orders: &mut mpsc::Receiver<Order>,
    rng: &mut Rng,
) -> Result<Option<Duration>, LinkError> {
    let (mut ws, _) = tokio_tungstenite::connect_async(link.url.as_str()).await?;
    identify(&mut ws, uid, &link.secret).await?;
    // Its status on (re)connecting, so the dashboard is right at once.
    let current = lock(&link.fleet).borne(uid).cloned();
    if let Some(borne) = current {
        send(&mut ws, &publish(&Change::Status(borne), SystemTime::now())).await?;
    }
    let spread = Duration::from_millis(rng.below(1000) as u64)
        .mul_f64(link.telemetry_every.as_secs_f64().min(10.0) / 10.0);
    let mut telemetry = interval_at(Instant::now() + spread, link.telemetry_every);
    let renew_every = Duration::from_secs(TOKEN_TTL / 2);
    let mut renew = interval_at(Instant::now() + renew_every, renew_every);
    // While muted: (when the connection drops, for how long).
    let mut outage: Option<(Instant, Duration)> = None;
    loop {
        let muted = outage.is_some();
        let drop_at = outage.map_or_else(Instant::now, |(at, _)| at);
        tokio::select! {
            order = orders.recv(), if !muted => match order {
                None => {
                    let _ = ws.close(None).await;
                    return Ok(None);
                }
                Some(Order::Report { change, at }) => send(&mut ws, &publish(&change, at)).await?,
                Some(Order::Outage { mute, cut }) => outage = Some((Instant::now() + mute, cut)),
            },
            _ = telemetry.tick(), if !muted => {
                send(&mut ws, &telemetry_report(uid, &link.fleet, rng)).await?;
            }
            _ = renew.tick(), if !muted => {
                let connect = json!({"class": "connect", "app_id": APP, "token": token(&link.secret, uid)});
                send(&mut ws, &connect).await?;
            }
            () = sleep_until(drop_at), if muted => {
                let _ = ws.close(None).await;
                return Ok(outage.map(|(_, cut)| cut));
            }
            incoming = ws.next() => {
                let text = match incoming {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Err(LinkError::Closed),
                    Some(Ok(Message::Text(text))) => text,
                    Some(Ok(_)) => continue,
                };
                // A muted point hears commands but does not answer them.
                if muted {
                    continue;
                }
                let Ok(message) = serde_json::from_str::<Value>(text.as_str()) else {
                    continue;
                };
                if let Some(away) = heard(&mut ws, uid, link, &message).await? {
                    let _ = ws.close(None).await;
                    return Ok(Some(away));
                }
            }
        }
    }
}

/// Sends `connect` and waits for its `ack`.
async fn identify(ws: &mut Socket, uid: &str, secret: &str) -> Result<(), LinkError> {
    let connect =
        json!({"class": "connect", "uuid": "connect", "app_id": APP, "token": token(secret, uid)});
    send(ws, &connect).await?;
    let deadline = Instant::now() + CONNECT_WAIT;
    loop {
        let next = tokio::time::timeout_at(deadline, ws.next())
            .await
            .map_err(|_| LinkError::Refused("no answer".into()))?;
        let text = match next {
            None | Some(Ok(Message::Close(_))) => return Err(LinkError::Closed),
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(_)) => continue,
        };
        let Ok(answer) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        match answer["class"].as_str() {
            Some("ack") => return Ok(()),
            Some("error") => return Err(LinkError::Refused(answer["message"].to_string())),
            _ => {}
        }
    }
}

/// Handles one message from the gateway: answers a command; says how long
/// to go away when the command was a restart.
async fn heard(
    ws: &mut Socket,
    uid: &str,
    link: &Link,
    message: &Value,
) -> Result<Option<Duration>, LinkError> {
    match message["class"].as_str() {
        Some("call") => {
            let (reply, report, away) = command(uid, &link.fleet, message);
            send(ws, &reply).await?;
            if let Some(change) = report {
                send(ws, &publish(&change, SystemTime::now())).await?;
            }
            Ok(away)
        }
        Some("error") if message["code"] == "token_expired" => {
            let connect =
                json!({"class": "connect", "app_id": APP, "token": token(&link.secret, uid)});
            send(ws, &connect).await?;
            Ok(None)
        }
        Some("error") => {
            tracing::debug!(borne = %uid, answer = %message, "demo point refused");
            Ok(None)
        }
        _ => Ok(None),
    }
}

/// A command's reply (as a WebSocket `result` or `error`), the status
/// change to report, and how long to go away.
pub fn command(
    uid: &str,
    fleet: &Mutex<Fleet>,
    call: &Value,
) -> (Value, Option<Change>, Option<Duration>) {
    let id = call["id"].clone();
    let mut fleet = lock(fleet);
    let status = fleet.borne(uid).map_or("offline", |b| b.status);
    match call["method"].as_str() {
        Some(UNLOCK) if status == "fault" => {
            let message = "in fault: restart it first";
            let reply = json!({"class": "error", "id": id, "code": "fault", "message": message});
            (reply, None, None)
        }
        Some(UNLOCK) => {
            let borne = fleet.set_status(uid, "available");
            let reply = json!({"class": "result", "id": id, "result": {"status": "available"}});
            (reply, borne.map(Change::Status), None)
        }
        Some(RESTART) => {
            if status == "fault" {
                fleet.set_status(uid, "available");
            }
            let back = RESTART_DOWN.as_millis() as u64;
            let result = json!({"restarting": true, "back_in_ms": back});
            let reply = json!({"class": "result", "id": id, "result": result});
            (reply, None, Some(RESTART_DOWN))
        }
        _ => {
            let message = format!("this point knows {UNLOCK} and {RESTART}");
            let reply =
                json!({"class": "error", "id": id, "code": "unknown_method", "message": message});
            (reply, None, None)
        }
    }
}

/// What a point reports: an event's kind, keywords, key and data.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// `status`, `alarm` or `telemetry`.
    pub kind: &'static str,
    /// Its keywords, `borne:<uid>` first.
    pub keywords: Vec<String>,
    /// `borne:<uid>` for a status.
    pub key: Option<String>,
    /// The event's data.
    pub data: Value,
}

/// The report of `change`.
pub fn report(change: &Change) -> Report {
    let uid = change.uid();
    match change {
        Change::Status(b) => Report {
            kind: "status",
            keywords: vec![
                format!("borne:{uid}"),
                format!("status:{}", b.status),
                format!("city:{}", b.city),
            ],
            key: Some(format!("borne:{uid}")),
            data: serde_json::to_value(b).unwrap_or_default(),
        },
        Change::Alarm { level, message, .. } => Report {
            kind: "alarm",
            keywords: vec![format!("borne:{uid}"), format!("level:{level}")],
            key: None,
            data: json!({"uid": uid, "level": level, "message": message}),
        },
    }
}

/// The `publish` message reporting `change`, with the point's time.
fn publish(change: &Change, at: SystemTime) -> Value {
    let report = report(change);
    let mut message = json!({
        "class": "publish", "app_id": APP, "channel": CHANNEL, "event_kind": report.kind,
        "keywords": report.keywords, "data": report.data, "time": unix_seconds(at),
    });
    if let Some(key) = report.key {
        message["key"] = json!(key);
    }
    message
}

/// A telemetry report: the power drawn now and the connector temperature.
fn telemetry_report(uid: &str, fleet: &Mutex<Fleet>, rng: &mut Rng) -> Value {
    json!({
        "class": "publish", "app_id": APP, "channel": CHANNEL, "event_kind": "telemetry",
        "keywords": [format!("borne:{uid}")],
        "data": telemetry(uid, fleet, rng),
        "time": unix_seconds(SystemTime::now()),
    })
}

/// A telemetry reading of point `uid`.
pub fn telemetry(uid: &str, fleet: &Mutex<Fleet>, rng: &mut Rng) -> Value {
    let (status, rated) = lock(fleet)
        .borne(uid)
        .map_or(("offline", 0), |b| (b.status, b.power_kw));
    let power = if status == "charging" {
        rated as f64 * (40 + rng.below(60)) as f64 / 100.0
    } else {
        0.0
    };
    let temperature = 18.0 + power / 10.0 + rng.below(40) as f64 / 10.0;
    json!({"uid": uid, "power_kw": power.round(), "temperature_c": (temperature * 10.0).round() / 10.0})
}

/// `at` as Unix seconds with milliseconds (a device time).
pub fn unix_seconds(at: SystemTime) -> f64 {
    let millis = at
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    millis as f64 / 1000.0
}

async fn send(ws: &mut Socket, message: &Value) -> Result<(), LinkError> {
    ws.send(Message::text(message.to_string())).await?;
    Ok(())
}

/// The fleet, even after a panic elsewhere (it holds plain data).
pub fn lock(fleet: &Mutex<Fleet>) -> std::sync::MutexGuard<'_, Fleet> {
    fleet.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_point_in_fault_refuses_unlock_and_restart_clears_it() {
        let fleet = Mutex::new(Fleet::new(3, 7));
        lock(&fleet).set_status("B2", "fault");
        let call = json!({"class": "call", "id": "1", "method": UNLOCK});
        let (reply, report, away) = command("B2", &fleet, &call);
        assert_eq!(
            (reply["code"].as_str(), report, away),
            (Some("fault"), None, None)
        );
        let call = json!({"class": "call", "id": "2", "method": RESTART});
        let (reply, _, away) = command("B2", &fleet, &call);
        assert_eq!(reply["result"]["restarting"], true);
        assert_eq!(away, Some(RESTART_DOWN));
        let (reply, report, _) = command("B2", &fleet, &json!({"id": "3", "method": UNLOCK}));
        assert_eq!(reply["result"]["status"], "available", "{reply}");
        assert!(matches!(report, Some(Change::Status(b)) if b.status == "available"));
    }

    #[test]
    fn a_report_carries_the_points_pin_and_time() {
        let fleet = Fleet::new(1, 7);
        let change = Change::Status(fleet.bornes()[0].clone());
        let at = UNIX_EPOCH + Duration::from_millis(1_796_292_000_250);
        let message = publish(&change, at);
        assert_eq!(message["keywords"][0], "borne:B1");
        assert_eq!(message["key"], "borne:B1");
        assert_eq!(message["time"], 1_796_292_000.25);
    }
}
