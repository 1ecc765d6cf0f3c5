//! The MQTT source: messages on configured topic filters become events
//! (OPERATING.md "MQTT source"; docs/sources/mqtt.md).
//!
//! How it reads: one rumqttc client (MQTT 3.1.1, plain TCP), two tasks. The
//! *poller* drives the connection (keep-alive, reconnection with a capped,
//! jittered backoff) and, on every ConnAck, subscribes every filter with
//! QoS 1 again (rumqttc does not, and a broker that restarted has forgotten
//! them); it hands each message to the *worker* over a bounded queue. The
//! worker maps a message to its event, submits it to the ingest pipeline and
//! only then acknowledges it (PUBACK, manual acks), so a gateway that dies
//! before publishing leaves the message to be delivered again.
//!
//! Guarantees:
//! - Each message is published once on its channel, or refused, counted
//!   (`chouquette_mqtt_invalid_total{reason}`) and logged (rate-limited),
//!   then acknowledged: a payload that is invalid now stays invalid.
//! - While the broker (ours) is away or the app over its rate, the worker
//!   keeps the message and retries; it acknowledges nothing meanwhile, so
//!   the MQTT broker's in-flight window stops sending more, while the
//!   poller keeps the connection alive.
//! - A redelivery (a crash between publishing and PUBACK, a reconnection)
//!   may publish a message twice, except a SenML pack whose times are all
//!   absolute: its event id is derived from topic and payload, and the
//!   broker answers "duplicate".
//! - With `share_group` (the default), gateways subscribe as
//!   `$share/<group>/<filter>`: the MQTT broker gives each message to one
//!   of them.
//! - Messages on the reply topics of `[[sources.mqtt.commands]]` are no
//!   events: the poller hands them to device commands ([`commands`]) and
//!   acknowledges them at once. Reply filters are never shared.
//!
//! Memory: the queue holds [`QUEUE`] messages of at most [`MAX_PACKET`]
//! bytes each.

pub mod commands;
mod config;
mod liveness;
mod message;
mod senml;
mod status;
pub mod topic;

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chouquette_core::ingest::{self, Caller, Outcome, Refusal};
use chouquette_core::node::Node;
use chouquette_core::publication::NewEvent;
use rumqttc::{
    AsyncClient, Event, EventLoop, MqttOptions, Packet, Publish, QoS, SubscribeFilter,
    SubscribeReasonCode,
};
use tokio::sync::mpsc;

pub use commands::{CommandLink, CommandSettings};
pub use config::{Format, MqttSettings, TopicSettings};
pub use senml::{Resolved, SenmlError, resolve as resolve_senml};
pub use status::{Invalid, Status, Statuses};

use super::Source;
use crate::broker::redis::backoff;
use crate::shutdown::Shutdown;

/// Largest MQTT packet accepted (either way). A larger one ends the
/// connection in rumqttc, and the broker would send it again: set the
/// broker's own limit below it (Mosquitto: `max_packet_size`).
pub const MAX_PACKET: usize = 1 << 20;
/// Messages handed from the poller to the worker and not yet handled.
/// Larger than a broker's in-flight window for QoS 1 (Mosquitto: 20), so
/// the poller keeps polling (keep-alive, pings) while the worker waits for
/// our broker: a blocked poller would let the MQTT connection time out and
/// have its messages delivered again. It blocks only on a flood of QoS 0.
const QUEUE: usize = 256;
/// Requests (acks, subscriptions) queued to the client.
const REQUESTS: usize = 64;
/// At most one log line about invalid messages per this long per source.
const LOG_EVERY: Duration = Duration::from_secs(10);
/// How long to wait before submitting again while our broker is away.
const UNAVAILABLE_RETRY: Duration = Duration::from_millis(200);

/// One broker connection's reader.
#[derive(Debug)]
pub struct MqttSource {
    settings: MqttSettings,
    status: Arc<Status>,
    /// Its side of device commands, when it carries some.
    commands: Option<Arc<CommandLink>>,
}

impl MqttSource {
    /// A reader of `settings`; its status is in `statuses`.
    pub fn new(settings: MqttSettings, statuses: &mut Statuses) -> MqttSource {
        let status = Arc::new(Status::new(settings.name()));
        statuses.push(status.clone());
        MqttSource {
            settings,
            status,
            commands: None,
        }
    }

    /// Its side of device commands, waiting in `waiting`, when its config
    /// has `[[sources.mqtt.commands]]` (docs/devices.md "Commands").
    pub fn command_link(
        &mut self,
        waiting: &Arc<crate::device_commands::waiting::Waiting>,
    ) -> Option<Arc<CommandLink>> {
        if self.settings.commands.is_empty() {
            return None;
        }
        let link = self.commands.get_or_insert_with(|| {
            Arc::new(CommandLink::new(
                self.settings.commands.clone(),
                self.status.clone(),
                waiting.clone(),
            ))
        });
        Some(link.clone())
    }

    fn options(&self) -> MqttOptions {
        let s = &self.settings;
        let mut options = MqttOptions::new(&s.client_id, &s.host, s.port);
        options
            .set_keep_alive(Duration::from_secs(10))
            // The broker keeps the session (and what it has not had a
            // PUBACK for) across a reconnection.
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET)
            .set_request_channel_capacity(REQUESTS);
        if let Some(user) = &s.username {
            options.set_credentials(user, s.password.clone().unwrap_or_default());
        }
        options
    }
}

impl Source for MqttSource {
    async fn run(self, node: Arc<Node>, mut shutdown: Shutdown) {
        let (client, events) = AsyncClient::new(self.options(), REQUESTS);
        if let Some(link) = &self.commands {
            link.attach(client.clone());
        }
        let (queue, queued) = mpsc::channel(QUEUE);
        let replies = self.commands.as_deref();
        let poller = poll(
            events,
            &client,
            &self.settings,
            &self.status,
            replies,
            queue,
        );
        let worker = work(&node, &client, &self.settings, &self.status, queued);
        tokio::select! {
            () = shutdown.stopped() => {
                let _ = client.try_disconnect();
            }
            () = poller => {}
            () = worker => {}
        }
    }
}

/// Drives the connection: subscribes on every ConnAck, hands messages to
/// the worker (replies to device commands to `replies`, acknowledged at
/// once: nothing to publish), reconnects after a failure. Returns when the
/// worker is gone.
async fn poll(
    mut events: EventLoop,
    client: &AsyncClient,
    settings: &MqttSettings,
    status: &Status,
    replies: Option<&CommandLink>,
    queue: mpsc::Sender<Publish>,
) {
    let mut failures = 0u32;
    let wanted = settings.subscriptions();
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                let filters = wanted
                    .iter()
                    .map(|f| SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                if let Err(e) = client.try_subscribe_many(filters) {
                    status.down(format!("cannot subscribe: {e}"));
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                let refused: Vec<&str> = ack
                    .return_codes
                    .iter()
                    .zip(&wanted)
                    .filter(|(code, _)| matches!(code, SubscribeReasonCode::Failure))
                    .map(|(_, f)| f.as_str())
                    .collect();
                if refused.is_empty() {
                    failures = 0;
                    status.subscribed();
                    tracing::info!(source = %settings.name(), "mqtt source subscribed");
                } else {
                    let why = format!("the broker refused the subscription to {refused:?}");
                    tracing::error!(source = %settings.name(), "{why}");
                    status.down(why);
                }
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if replies.is_some_and(|r| r.take_reply(&publish)) {
                    let _ = client.try_ack(&publish);
                    continue;
                }
                if queue.send(publish).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(source = %settings.name(), error = %e, "mqtt source disconnected; reconnecting");
                } else {
                    tracing::debug!(source = %settings.name(), error = %e, "mqtt source still down");
                }
                status.down(e.to_string());
                status.reconnecting();
                failures = failures.saturating_add(1);
                tokio::time::sleep(backoff(failures, settings.reconnect_max)).await;
            }
        }
    }
}

/// Publishes each message, then acknowledges it.
async fn work(
    node: &Node,
    client: &AsyncClient,
    settings: &MqttSettings,
    status: &Status,
    mut queued: mpsc::Receiver<Publish>,
) {
    let mut log = RateLimitedLog::default();
    let mut acks = Acks::default();
    while let Some(publish) = acks.next(client, &mut queued).await {
        status.message();
        let seen = liveness::report(
            node.devices(),
            &settings.topics,
            &publish.topic,
            &publish.payload,
            publish.retain,
        );
        if seen == liveness::Seen::BadStatus {
            status.invalid(Invalid::NotJson);
            log.note(
                settings.name(),
                &publish.topic,
                Invalid::NotJson,
                "a status is `online` or `offline`",
            );
        } else if seen == liveness::Seen::Status {
            // A device's status, handled: no event.
        } else if publish.retain {
            status.invalid(Invalid::Retained);
        } else {
            match message::event(
                &settings.topics,
                &publish.topic,
                &publish.payload,
                unix_now(),
            ) {
                Ok(event) => match submit(node, event).await {
                    Ok(duplicate) => status.published(duplicate),
                    Err(refusal) => {
                        status.invalid(Invalid::Refused);
                        log.note(
                            settings.name(),
                            &publish.topic,
                            Invalid::Refused,
                            &refusal.to_string(),
                        );
                    }
                },
                Err(refused) => {
                    status.invalid(refused.reason);
                    log.note(
                        settings.name(),
                        &publish.topic,
                        refused.reason,
                        &refused.detail,
                    );
                }
            }
        }
        // Only now: handled for good. A QoS 0 message needs no ack.
        acks.send(client, publish);
    }
}

/// Acknowledgements waiting for room in the client's request channel,
/// oldest first.
///
/// Only the poller drains that channel, by polling the event loop, and
/// rumqttc serves a request only when it has no incoming packet left to
/// hand out: under a flood (a device flushing hours of buffered readings;
/// Mosquitto sends a slow subscriber more than its in-flight window) acks
/// pile up. Waiting for room there would stop the worker, the queue would
/// fill, the poller would wait for the queue, and neither would ever move
/// again. So the worker never waits to ack: what does not fit waits here
/// and is offered again before each message and every [`ACK_RETRY`]. It
/// holds at most one entry per packet id the MQTT broker has in flight to
/// us (65,535 at most), each a `Publish` stripped of topic and payload.
#[derive(Default)]
struct Acks {
    unsent: VecDeque<Publish>,
}

/// How soon acks that found no room are offered again when no message
/// comes.
const ACK_RETRY: Duration = Duration::from_millis(5);

impl Acks {
    /// The next message to handle (`None`: the poller is gone), offering
    /// the waiting acks meanwhile.
    async fn next(
        &mut self,
        client: &AsyncClient,
        queued: &mut mpsc::Receiver<Publish>,
    ) -> Option<Publish> {
        loop {
            self.offer(client);
            if self.unsent.is_empty() {
                return queued.recv().await;
            }
            tokio::select! {
                publish = queued.recv() => return publish,
                () = tokio::time::sleep(ACK_RETRY) => {}
            }
        }
    }

    /// Acknowledges `publish`, now or as soon as there is room.
    fn send(&mut self, client: &AsyncClient, mut publish: Publish) {
        if publish.qos == QoS::AtMostOnce {
            return;
        }
        publish.topic.clear();
        publish.payload = bytes::Bytes::new();
        self.unsent.push_back(publish);
        self.offer(client);
    }

    /// Hands the client as many waiting acks as it takes, in order.
    fn offer(&mut self, client: &AsyncClient) {
        while let Some(publish) = self.unsent.front() {
            if client.try_ack(publish).is_err() {
                return;
            }
            self.unsent.pop_front();
        }
    }
}

/// Submits one event until it is published (`Ok(duplicate)`) or refused
/// for good; waits out the app's rate and our broker's absence.
async fn submit(node: &Node, event: NewEvent) -> Result<bool, Refusal> {
    loop {
        let report = ingest::submit(node, Caller::Source, vec![vec![event.clone()]]).await;
        let outcome = report.groups.into_iter().flatten().next();
        match outcome {
            Some(Outcome::Published(position)) => return Ok(position.duplicate),
            Some(Outcome::Refused(Refusal::RateLimited { limited, .. })) => {
                tokio::time::sleep(limited.retry_after).await;
            }
            Some(Outcome::Refused(refusal)) => return Err(refusal),
            Some(Outcome::NotAttempted(_)) | None => {
                tokio::time::sleep(UNAVAILABLE_RETRY).await;
            }
        }
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Logs the first invalid message, then at most one line per
/// [`LOG_EVERY`] saying how many were not logged: a device sending garbage
/// fast does not flood the log (the metric counts every one).
#[derive(Default)]
struct RateLimitedLog {
    last: Option<Instant>,
    quiet: u64,
}

impl RateLimitedLog {
    fn note(&mut self, source: &str, topic: &str, reason: Invalid, detail: &str) {
        if self.last.is_some_and(|at| at.elapsed() < LOG_EVERY) {
            self.quiet += 1;
            return;
        }
        tracing::warn!(
            source,
            topic,
            reason = reason.label(),
            detail,
            not_logged = self.quiet,
            "mqtt message not published"
        );
        self.last = Some(Instant::now());
        self.quiet = 0;
    }
}
