//! One simulated device of `--scenario devices`: an MQTT client (rumqttc,
//! MQTT 3.1.1, clean session) publishing QoS 1 JSON telemetry on
//! `devices/D<i>/telemetry`, and the ledger of what became of each message:
//! handed to the client, written (given a packet id), acknowledged by the
//! broker (PUBACK). Only acknowledged messages are the broker's to deliver,
//! so they are what the dashboard must receive exactly once.
//!
//! Each device has one task driving its connection (the rumqttc event
//! loop, never cancelled mid-poll: its cancel safety is not documented) and
//! is sent to from outside through its client, at most `window` messages
//! unacknowledged at a time (its QoS 1 in-flight window).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing, Packet, QoS};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout};

use crate::wire::unix_nanos;

/// Pause before polling again after a connection error (rumqttc reconnects
/// on the next poll).
const RETRY: Duration = Duration::from_millis(200);

/// The device id of device `index` (`{1}` of its topic).
pub fn device_id(index: usize) -> String {
    format!("D{index}")
}

/// The topic device `index` publishes on.
pub fn topic(index: usize) -> String {
    format!("devices/{}/telemetry", device_id(index))
}

/// A telemetry payload: the run-wide number `seq`, the send time `t_ns`
/// (Unix ns, the bench's clock), the device's own reading time `at` (Unix
/// s) and a value; `buffered` marks the messages of the flush.
pub fn payload(seq: u64, t_ns: u64, at_s: u64, buffered: bool) -> String {
    let flag = if buffered { r#","buffered":true"# } else { "" };
    format!(r#"{{"seq":{seq},"t_ns":{t_ns},"at":{at_s}{flag},"temp":21.5}}"#)
}

/// Counts shared by a group of devices (the regular ones, or the flusher).
#[derive(Debug, Default)]
pub struct Counters {
    /// Devices whose first connection was accepted (CONNACK).
    pub connected: AtomicUsize,
    /// Connection errors (each followed by a reconnection).
    pub connection_errors: AtomicU64,
    /// Messages acknowledged by the broker.
    pub acked: AtomicU64,
    /// Messages not sent: the in-flight window was full or the client's
    /// queue refused them.
    pub skipped: AtomicU64,
    /// Messages lost by the client when its connection dropped (clean
    /// session: rumqttc forgets what was queued or unacknowledged).
    pub dropped: AtomicU64,
}

/// One message as the device sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Its run-wide number.
    pub seq: u64,
    /// When it was handed to the client, Unix ns.
    pub sent_ns: u64,
}

/// What became of one device's messages. rumqttc writes requests in the
/// order they were queued and says which packet id it gave each
/// (`Outgoing::Publish`), so the queue maps packet ids back to messages.
/// Bounded by the in-flight window, except `acked`, which holds one entry
/// per acknowledged message of the run.
#[derive(Debug, Default)]
pub struct Ledger {
    queued: VecDeque<Sent>,
    in_flight: HashMap<u16, Sent>,
    acked: Vec<Sent>,
}

impl Ledger {
    /// A message was handed to the client.
    pub fn queue(&mut self, sent: Sent) {
        self.queued.push_back(sent);
    }

    /// The client wrote the oldest queued message with packet id `pkid`.
    pub fn written(&mut self, pkid: u16) {
        if let Some(sent) = self.queued.pop_front() {
            self.in_flight.insert(pkid, sent);
        }
    }

    /// The broker acknowledged `pkid`; whether it was one of ours.
    pub fn acked(&mut self, pkid: u16) -> bool {
        match self.in_flight.remove(&pkid) {
            Some(sent) => {
                self.acked.push(sent);
                true
            }
            None => false,
        }
    }

    /// The connection dropped: the client forgets what was queued or in
    /// flight (a clean session); how many messages that was.
    pub fn lost_connection(&mut self) -> usize {
        let lost = self.queued.len() + self.in_flight.len();
        self.queued.clear();
        self.in_flight.clear();
        lost
    }

    /// Every acknowledged message so far, kept.
    pub fn acked_so_far(&self) -> &[Sent] {
        &self.acked
    }

    /// Every acknowledged message so far.
    pub fn take_acked(&mut self) -> Vec<Sent> {
        std::mem::take(&mut self.acked)
    }
}

/// A connected (or connecting) device.
pub struct Device {
    index: usize,
    client: AsyncClient,
    ledger: Arc<Mutex<Ledger>>,
    room: Arc<Semaphore>,
    connected: watch::Receiver<bool>,
    poller: JoinHandle<()>,
}

impl Device {
    /// Starts device `index`'s connection to the broker on 127.0.0.1:`port`
    /// with a QoS 1 in-flight window of `window` messages; returns at once.
    pub fn connect(port: u16, index: usize, window: u16, counters: Arc<Counters>) -> Device {
        let mut options =
            MqttOptions::new(format!("bench-{}", device_id(index)), "127.0.0.1", port);
        options
            .set_keep_alive(Duration::from_secs(60))
            .set_inflight(window)
            .set_request_channel_capacity(usize::from(window));
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        network.set_connection_timeout(10);
        let (client, mut eventloop) = AsyncClient::new(options, usize::from(window));
        eventloop.set_network_options(network);
        let ledger = Arc::new(Mutex::new(Ledger::default()));
        let room = Arc::new(Semaphore::new(usize::from(window)));
        let (up, connected) = watch::channel(false);
        let poller = tokio::spawn(drive(eventloop, ledger.clone(), room.clone(), counters, up));
        Device {
            index,
            client,
            ledger,
            room,
            connected,
            poller,
        }
    }

    /// Waits until the broker accepted the connection; false after `within`.
    pub async fn wait_connected(&mut self, within: Duration) -> bool {
        timeout(within, self.connected.wait_for(|up| *up))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Sends message `seq` now if the in-flight window has room; its send
    /// time, or `None` (counted as skipped).
    pub fn try_send(
        &self,
        seq: u64,
        at_s: u64,
        buffered: bool,
        counters: &Counters,
    ) -> Option<u64> {
        match self.room.try_acquire() {
            Ok(permit) => permit.forget(),
            Err(_) => {
                counters.skipped.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        }
        self.send_with_room(seq, at_s, buffered, counters)
    }

    /// Sends message `seq` as soon as the in-flight window has room; its
    /// send time (`None`: the client refused it, counted as skipped).
    pub async fn send(
        &self,
        seq: u64,
        at_s: u64,
        buffered: bool,
        counters: &Counters,
    ) -> Option<u64> {
        self.room.acquire().await.ok()?.forget();
        self.send_with_room(seq, at_s, buffered, counters)
    }

    fn send_with_room(
        &self,
        seq: u64,
        at_s: u64,
        buffered: bool,
        counters: &Counters,
    ) -> Option<u64> {
        let sent_ns = unix_nanos();
        let body = payload(seq, sent_ns, at_s, buffered);
        let mut ledger = self.ledger.lock().unwrap_or_else(PoisonError::into_inner);
        ledger.queue(Sent { seq, sent_ns });
        match self
            .client
            .try_publish(topic(self.index), QoS::AtLeastOnce, false, body)
        {
            Ok(()) => Some(sent_ns),
            Err(_) => {
                ledger.queued.pop_back();
                drop(ledger);
                self.room.add_permits(1);
                counters.skipped.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Calls `visit` with every message the broker acknowledged so far
    /// (the connection goes on).
    pub fn visit_acked(&self, visit: impl FnOnce(&[Sent])) {
        visit(
            self.ledger
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .acked_so_far(),
        );
    }

    /// Closes the connection; every message the broker acknowledged.
    pub fn stop(self) -> Vec<Sent> {
        self.poller.abort();
        self.ledger
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take_acked()
    }
}

/// Drives one connection until aborted: notes the connection, packet ids
/// and acknowledgements in the ledger and frees window room on each PUBACK.
async fn drive(
    mut eventloop: EventLoop,
    ledger: Arc<Mutex<Ledger>>,
    room: Arc<Semaphore>,
    counters: Arc<Counters>,
    up: watch::Sender<bool>,
) {
    let lock = || ledger.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                if !up.send_replace(true) {
                    counters.connected.fetch_add(1, Ordering::Relaxed);
                }
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => lock().written(pkid),
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                if lock().acked(ack.pkid) {
                    counters.acked.fetch_add(1, Ordering::Relaxed);
                    room.add_permits(1);
                }
            }
            Ok(_) => {}
            Err(_) => {
                counters.connection_errors.fetch_add(1, Ordering::Relaxed);
                let lost = lock().lost_connection();
                counters.dropped.fetch_add(lost as u64, Ordering::Relaxed);
                room.add_permits(lost);
                sleep(RETRY).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sent(seq: u64) -> Sent {
        Sent {
            seq,
            sent_ns: seq * 10,
        }
    }

    #[test]
    fn packet_ids_map_back_to_the_messages_in_order() {
        let mut ledger = Ledger::default();
        ledger.queue(sent(1));
        ledger.queue(sent(2));
        ledger.written(7);
        ledger.written(8);
        assert!(ledger.acked(8));
        assert!(!ledger.acked(8), "a repeated PUBACK is not counted twice");
        assert!(!ledger.acked(99), "an unknown packet id is not ours");
        ledger.queue(sent(3));
        ledger.written(7 + 2);
        assert!(ledger.acked(7));
        assert_eq!(ledger.take_acked(), vec![sent(2), sent(1)]);
        assert_eq!(ledger.lost_connection(), 1, "message 3 was in flight");
        assert!(!ledger.acked(9));
    }

    #[test]
    fn payloads_are_small_json_with_the_numbers() {
        let regular: serde_json::Value =
            serde_json::from_str(&payload(5, 123, 1_700_000_000, false)).expect("json");
        assert_eq!(regular["seq"], 5);
        assert_eq!(regular["t_ns"], 123);
        assert_eq!(regular["at"], 1_700_000_000);
        assert!(regular.get("buffered").is_none());
        let flushed: serde_json::Value =
            serde_json::from_str(&payload(1, 2, 3, true)).expect("json");
        assert_eq!(flushed["buffered"], true);
        assert!(payload(u64::MAX, u64::MAX, u64::MAX, true).len() < 128);
        assert_eq!(topic(12), "devices/D12/telemetry");
    }
}
