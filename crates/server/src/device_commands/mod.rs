//! Backends calling a device (issue 14, "Commands"; docs/devices.md): one
//! command, one answer — the device's `result` or `error`, a timeout, or
//! "offline" at once when the device is not connected.
//!
//! Which way a command goes:
//! 1. Over WebSocket, always tried first: the device is a connection whose
//!    `connect` identity (`sub`) is the device id, and the command is a
//!    backend call to it ([`user_calls::call_user`]), across nodes.
//! 2. Over MQTT, when no connection holds the device and its app has a
//!    `[[sources.mqtt.commands]]`: published on the device's command
//!    topic and answered on its reply topic ([`waiting`] matches them).
//!
//! "Offline": over WebSocket, the call machinery knows at once that no
//! node holds the device. Over MQTT, only liveness can say it, through
//! [`last_seen::Tracked::seen`] (this node's trackers and the cluster's
//! ledger); unknown, the command waits.

pub mod last_seen;
pub mod waiting;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use chouquette_core::node::Node;
use chouquette_core::telemetry::prometheus::Family;
use chouquette_core::user_calls::{self, CallFailure, ClientAnswer, UserCall};
use serde_json::{Map, Value};

use crate::source::mqtt::CommandLink;
use crate::source::mqtt::commands::{MqttCommand, PublishError};
use last_seen::Tracked;
use waiting::{Full, Waiting};

/// How a command reached its device (the `transport` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A WebSocket connection's `call`.
    Ws,
    /// The device's MQTT command topic.
    Mqtt,
}

impl Transport {
    const ALL: [Transport; 2] = [Transport::Ws, Transport::Mqtt];

    /// Its label.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Ws => "ws",
            Transport::Mqtt => "mqtt",
        }
    }
}

/// Why a command got no answer from its device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Not connected; last heard from then, if known.
    #[error("the device is not connected")]
    Offline {
        /// When the device was last seen, if liveness knows.
        last_seen: Option<SystemTime>,
    },
    /// Sent; no answer in time.
    #[error("the device did not answer in time")]
    Timeout,
    /// Too many commands waiting for this device.
    #[error("{0}")]
    Busy(String),
    /// Too many commands waiting on the node, or a broker (ours or the
    /// MQTT one) away.
    #[error("{0}")]
    Unavailable(String),
}

/// How a command ended (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Ok,
    Error,
    Timeout,
    Offline,
    Busy,
    Unavailable,
}

impl Outcome {
    const ALL: [Outcome; 6] = [
        Outcome::Ok,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::Offline,
        Outcome::Busy,
        Outcome::Unavailable,
    ];

    fn of(answered: &Result<ClientAnswer, Failure>) -> Outcome {
        match answered {
            Ok(ClientAnswer::Result(_)) => Outcome::Ok,
            Ok(ClientAnswer::Error { .. }) => Outcome::Error,
            Err(Failure::Offline { .. }) => Outcome::Offline,
            Err(Failure::Timeout) => Outcome::Timeout,
            Err(Failure::Busy(_)) => Outcome::Busy,
            Err(Failure::Unavailable(_)) => Outcome::Unavailable,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Offline => "offline",
            Outcome::Busy => "busy",
            Outcome::Unavailable => "unavailable",
        }
    }
}

const COMMANDS: Family = Family::counter(
    "chouquette_device_commands_total",
    "Backend commands to devices, by transport and outcome.",
);

/// A backend's command to a device.
#[derive(Debug)]
pub struct Command<'a> {
    pub app: &'a str,
    /// The device id: a WebSocket `connect` identity, an MQTT topic level.
    pub device: &'a str,
    pub method: &'a str,
    pub args: &'a [Value],
    pub kwargs: &'a Map<String, Value>,
    /// How long to wait for the answer, all transports together.
    pub timeout: Duration,
}

/// The node's device commands: MQTT routes per app, the MQTT commands
/// waiting, liveness, and the counters.
#[derive(Debug)]
pub struct DeviceCommands {
    liveness: Tracked,
    mqtt: HashMap<String, Arc<CommandLink>>,
    waiting: Arc<Waiting>,
    outcomes: [[AtomicU64; Outcome::ALL.len()]; Transport::ALL.len()],
}

impl DeviceCommands {
    /// No MQTT route yet; liveness from `liveness` (the seam:
    /// [`last_seen`]).
    pub fn new(liveness: Tracked) -> DeviceCommands {
        DeviceCommands {
            liveness,
            mqtt: HashMap::new(),
            waiting: Arc::new(Waiting::default()),
            outcomes: Default::default(),
        }
    }

    /// Where MQTT commands wait (the MQTT sources deliver replies there).
    pub fn waiting(&self) -> &Arc<Waiting> {
        &self.waiting
    }

    /// Sends the commands of `link`'s apps through it.
    pub fn add_mqtt(&mut self, link: Arc<CommandLink>) {
        for app in link.apps() {
            self.mqtt.insert(app.to_string(), link.clone());
        }
    }

    /// Whether `app`'s devices may be commanded over MQTT.
    pub fn has_mqtt(&self, app: &str) -> bool {
        self.mqtt.contains_key(app)
    }

    /// Sends `command` (WebSocket first, then MQTT: see the module docs)
    /// and waits for its answer.
    pub async fn send(
        &self,
        node: &Node,
        command: Command<'_>,
    ) -> (Transport, Result<ClientAnswer, Failure>) {
        let started = Instant::now();
        let (transport, answered) = self.dispatch(node, &command, started).await;
        let outcome = Outcome::of(&answered);
        let t = Transport::ALL
            .iter()
            .position(|t| *t == transport)
            .unwrap_or(0);
        let o = Outcome::ALL.iter().position(|o| *o == outcome).unwrap_or(0);
        self.outcomes[t][o].fetch_add(1, Ordering::Relaxed);
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::debug!(
            app = command.app,
            method = command.method,
            transport = transport.as_str(),
            outcome = outcome.as_str(),
            ms,
            "device command"
        );
        (transport, answered)
    }

    async fn dispatch(
        &self,
        node: &Node,
        command: &Command<'_>,
        started: Instant,
    ) -> (Transport, Result<ClientAnswer, Failure>) {
        let call = UserCall {
            app: command.app,
            user: command.device,
            method: command.method,
            args: command.args,
            kwargs: command.kwargs,
            timeout: command.timeout,
        };
        let failure = match user_calls::call_user(node, call).await {
            Ok(answer) => return (Transport::Ws, Ok(answer)),
            Err(CallFailure::NotConnected) => None,
            Err(CallFailure::Timeout) => Some(Failure::Timeout),
            Err(e @ CallFailure::UserBusy(_)) => Some(Failure::Busy(e.to_string())),
            Err(e @ (CallFailure::NodeBusy(_) | CallFailure::Broker(_))) => {
                Some(Failure::Unavailable(e.to_string()))
            }
        };
        if let Some(failure) = failure {
            return (Transport::Ws, Err(failure));
        }
        let seen = self.liveness.seen(command.app, command.device).await;
        let offline = Failure::Offline {
            last_seen: seen.last_seen,
        };
        let Some(link) = self.mqtt.get(command.app) else {
            return (Transport::Ws, Err(offline));
        };
        if seen.online == Some(false) {
            return (Transport::Mqtt, Err(offline));
        }
        let left = command.timeout.saturating_sub(started.elapsed());
        (Transport::Mqtt, self.over_mqtt(link, command, left).await)
    }

    async fn over_mqtt(
        &self,
        link: &CommandLink,
        command: &Command<'_>,
        timeout: Duration,
    ) -> Result<ClientAnswer, Failure> {
        let (ticket, answer) =
            self.waiting
                .open(command.app, command.device)
                .map_err(|e| match e {
                    Full::Device => Failure::Busy(e.to_string()),
                    Full::Node => Failure::Unavailable(e.to_string()),
                })?;
        let published = link.publish(&MqttCommand {
            app: command.app,
            device: command.device,
            id: &ticket.id,
            method: command.method,
            args: command.args,
            kwargs: command.kwargs,
            expires: SystemTime::now() + timeout,
        });
        if let Err(e) = published {
            if let PublishError::Client(_) = e {
                tracing::warn!(app = command.app, error = %e, "device command not published");
            }
            return Err(Failure::Unavailable(e.to_string()));
        }
        let answered = tokio::time::timeout(timeout, answer).await;
        drop(ticket);
        match answered {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) | Err(_) => Err(Failure::Timeout),
        }
    }

    /// Renders the counters (Prometheus text).
    pub fn render(&self, out: &mut String) {
        let mut samples = COMMANDS.render(out);
        for (transport, counts) in Transport::ALL.iter().zip(&self.outcomes) {
            for (outcome, n) in Outcome::ALL.iter().zip(counts) {
                samples.sample(
                    &[
                        ("transport", transport.as_str()),
                        ("outcome", outcome.as_str()),
                    ],
                    n.load(Ordering::Relaxed),
                );
            }
        }
        self.waiting.render(out);
    }
}
