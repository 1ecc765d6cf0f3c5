//! A charging point of `chouquette demo --mqtt URL`: the same point as
//! `device.rs`, talking MQTT through that broker instead of WebSocket. The
//! gateway reads it with the MQTT source and commands it through
//! `[[sources.mqtt.commands]]` (docs/devices.md, "The demo"); the topics are
//! those of [`super::mqtt_section`]:
//!
//! - `devices/<uid>/status/<status>`, `devices/<uid>/alarm/<level>`,
//!   `devices/<uid>/telemetry`: its reports, JSON with its time in `time`;
//! - `devices/<uid>/state`: `online` on connecting, `offline` before a
//!   restart, and `offline` as its Last Will when its connection is cut;
//! - `devices/<uid>/commands` in, `devices/<uid>/replies` out.
//!
//! An outage mutes it, then drops its connection without a DISCONNECT, so
//! the broker publishes its Last Will.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rumqttc::{AsyncClient, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::time::{Instant, interval_at, sleep_until};

use super::device::{self, Link, Order, RETRY_AFTER};
use super::fleet::{Change, Rng};

/// Requests a point's MQTT client holds before the network takes them.
const CAPACITY: usize = 512;
/// How long the broker has to accept the connection, or to take a restart's
/// last messages.
const WAIT: Duration = Duration::from_secs(5);

/// The broker the points use.
#[derive(Debug, Clone)]
pub struct Broker {
    /// Host of the `--mqtt` URL.
    pub host: String,
    /// Its port.
    pub port: u16,
    /// When set, each point logs in with its id as user name and this
    /// password (a broker with per-device accounts and an ACL).
    pub device_password: Option<String>,
}

/// Why a session ended badly.
#[derive(Debug, thiserror::Error)]
pub enum MqttLinkError {
    /// The connection failed or was refused.
    #[error("mqtt: {0}")]
    Connection(#[from] rumqttc::ConnectionError),
    /// A request could not be queued.
    #[error("mqtt client: {0}")]
    Client(#[from] rumqttc::ClientError),
    /// No CONNACK in time.
    #[error("the broker did not accept the connection in time")]
    Timeout,
}

impl Broker {
    /// The broker of `mqtt://[user:password@]host[:port]`.
    pub fn from_url(url: &str, device_password: Option<String>) -> Option<Broker> {
        let rest = url.strip_prefix("mqtt://")?;
        let authority = rest.split('/').next()?;
        let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let (host, port) = match hostport.rsplit_once(':') {
            Some((host, port)) => (host, port.parse().ok()?),
            None => (hostport, 1883),
        };
        (!host.is_empty()).then(|| Broker {
            host: host.to_string(),
            port,
            device_password,
        })
    }
}

fn topic(uid: &str, leaf: &str) -> String {
    format!("devices/{uid}/{leaf}")
}

/// Runs point `uid` over MQTT until its orders end (the demo stops).
pub async fn run(
    uid: String,
    link: Arc<Link>,
    broker: Arc<Broker>,
    mut orders: mpsc::Receiver<Order>,
) {
    let mut rng = device::rng_of(&uid);
    loop {
        let away = match session(&uid, &link, &broker, &mut orders, &mut rng).await {
            Ok(Some(away)) => away,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(borne = %uid, error = %e, "demo MQTT point disconnected");
                RETRY_AFTER
            }
        };
        tokio::time::sleep(away).await;
    }
}

async fn connect(uid: &str, broker: &Broker) -> Result<(AsyncClient, EventLoop), MqttLinkError> {
    let mut options = MqttOptions::new(format!("demo-{uid}"), broker.host.as_str(), broker.port);
    options.set_keep_alive(Duration::from_secs(5));
    options.set_last_will(LastWill::new(
        topic(uid, "state"),
        "offline",
        QoS::AtLeastOnce,
        false,
    ));
    if let Some(password) = &broker.device_password {
        options.set_credentials(uid, password.as_str());
    }
    let (client, mut events) = AsyncClient::new(options, CAPACITY);
    let deadline = Instant::now() + WAIT;
    loop {
        let event = tokio::time::timeout_at(deadline, events.poll())
            .await
            .map_err(|_| MqttLinkError::Timeout)??;
        if matches!(event, Event::Incoming(Packet::ConnAck(_))) {
            break;
        }
    }
    client.try_subscribe(topic(uid, "commands"), QoS::AtLeastOnce)?;
    client.try_publish(topic(uid, "state"), QoS::AtLeastOnce, false, "online")?;
    Ok((client, events))
}

/// One connection: `Some(away)` when the point leaves on purpose (an
/// outage, a restart), `None` when its orders ended.
async fn session(
    uid: &str,
    link: &Link,
    broker: &Broker,
    orders: &mut mpsc::Receiver<Order>,
    rng: &mut Rng,
) -> Result<Option<Duration>, MqttLinkError> {
    let (client, mut events) = connect(uid, broker).await?;
    let current = device::lock(&link.fleet).borne(uid).cloned();
    if let Some(borne) = current {
        send(&client, &Change::Status(borne), SystemTime::now());
    }
    let mut telemetry = interval_at(Instant::now() + link.telemetry_every, link.telemetry_every);
    let mut outage: Option<(Instant, Duration)> = None;
    loop {
        let muted = outage.is_some();
        let drop_at = outage.map_or_else(Instant::now, |(at, _)| at);
        tokio::select! {
            order = orders.recv(), if !muted => match order {
                None => return Ok(None),
                Some(Order::Report { change, at }) => send(&client, &change, at),
                Some(Order::Outage { mute, cut }) => outage = Some((Instant::now() + mute, cut)),
            },
            _ = telemetry.tick(), if !muted => {
                let mut reading = device::telemetry(uid, &link.fleet, rng);
                reading["time"] = json!(device::unix_seconds(SystemTime::now()));
                queue(&client, &topic(uid, "telemetry"), &reading);
            }
            // Dropped without DISCONNECT: the broker publishes the Last Will.
            () = sleep_until(drop_at), if muted => return Ok(outage.map(|(_, cut)| cut)),
            event = events.poll() => {
                let Event::Incoming(Packet::Publish(p)) = event? else { continue };
                if muted {
                    continue;
                }
                let Ok(command) = serde_json::from_slice::<Value>(&p.payload) else { continue };
                if let Some(away) = answer(uid, link, &client, &command) {
                    restart(uid, &client, &mut events).await;
                    return Ok(Some(away));
                }
            }
        }
    }
}

/// Answers a command on its `reply_to`; how long to go away after it.
fn answer(uid: &str, link: &Link, client: &AsyncClient, command: &Value) -> Option<Duration> {
    let (reply, report, away) = device::command(uid, &link.fleet, command);
    let mut answer = json!({"id": command["id"]});
    if reply["class"] == "result" {
        answer["result"] = reply["result"].clone();
    } else {
        answer["error"] = json!({"code": reply["code"], "message": reply["message"]});
    }
    let reply_to = command["reply_to"]
        .as_str()
        .map_or_else(|| topic(uid, "replies"), str::to_string);
    queue(client, &reply_to, &answer);
    if let Some(change) = report {
        send(client, &change, SystemTime::now());
    }
    away
}

/// Says `offline` and leaves cleanly, once the broker took the reply.
async fn restart(uid: &str, client: &AsyncClient, events: &mut EventLoop) {
    let _ = client.try_publish(topic(uid, "state"), QoS::AtLeastOnce, false, "offline");
    let _ = client.try_disconnect();
    let deadline = Instant::now() + WAIT;
    while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, events.poll()).await {
        if matches!(event, Event::Outgoing(Outgoing::Disconnect)) {
            return;
        }
    }
}

/// Publishes `change`'s report on its topic, `time` in the payload.
fn send(client: &AsyncClient, change: &Change, at: SystemTime) {
    let report = device::report(change);
    let leaf = match change {
        Change::Status(b) => format!("status/{}", b.status),
        Change::Alarm { level, .. } => format!("alarm/{level}"),
    };
    let mut data = report.data;
    data["time"] = json!(device::unix_seconds(at));
    queue(client, &topic(change.uid(), &leaf), &data);
}

/// Queues a QoS 1 publish; a full client queue drops it (logged).
fn queue(client: &AsyncClient, topic: &str, payload: &Value) {
    let sent = client.try_publish(topic, QoS::AtLeastOnce, false, payload.to_string());
    if let Err(e) = sent {
        tracing::debug!(topic, error = %e, "demo MQTT point: message dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_broker_comes_from_the_url() {
        let b = Broker::from_url("mqtt://gw:pw@127.0.0.1:18830", None).expect("url");
        assert_eq!((b.host.as_str(), b.port), ("127.0.0.1", 18830));
        let b = Broker::from_url("mqtt://localhost", None).expect("url");
        assert_eq!((b.host.as_str(), b.port), ("localhost", 1883));
        assert!(Broker::from_url("http://localhost", None).is_none());
        assert!(Broker::from_url("mqtt://h:notaport", None).is_none());
    }
}
