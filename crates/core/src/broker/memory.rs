//! The in-memory broker: one node, no external service.
//!
//! Each channel's log sits behind its own mutex, held while an event gets
//! its offset *and* is handed to the hub: that is what keeps delivery in
//! offset order. The hub never blocks (outboxes only queue), so the lock is
//! held for the fan-out's CPU time only. Epochs are random per process, so a
//! restarted node tells resuming clients `history_gap`, which is the truth.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::{BoxFuture, Broker, BrokerError, PublishFailure};
use crate::app::ChannelPolicy;
use crate::history::{Appended, ChannelLog, Recovered};
use crate::hub::Hub;
use crate::publication::{ChannelId, NewEvent, Position};

/// The default broker.
#[derive(Debug)]
pub struct MemoryBroker {
    hub: Arc<Hub>,
    channels: Mutex<HashMap<ChannelId, Arc<Mutex<ChannelLog>>>>,
    max_channels: usize,
    /// Always up: nothing external to lose.
    link: tokio::sync::watch::Sender<bool>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A log is updated by single appends that leave it consistent even if a
    // panic interrupted the holder, so poisoning is ignored.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl MemoryBroker {
    /// A broker delivering to `hub`, tracking at most `max_channels` channels.
    pub fn new(hub: Arc<Hub>, max_channels: usize) -> MemoryBroker {
        MemoryBroker {
            hub,
            channels: Mutex::new(HashMap::new()),
            max_channels,
            link: tokio::sync::watch::Sender::new(true),
        }
    }

    fn log(&self, channel: &ChannelId) -> Result<Arc<Mutex<ChannelLog>>, BrokerError> {
        let mut channels = lock(&self.channels);
        if let Some(log) = channels.get(channel) {
            return Ok(log.clone());
        }
        if channels.len() >= self.max_channels {
            return Err(BrokerError::TooManyChannels(self.max_channels));
        }
        let epoch: Arc<str> = super::new_epoch().into();
        let log = Arc::new(Mutex::new(ChannelLog::new(channel.clone(), epoch)));
        channels.insert(channel.clone(), log.clone());
        Ok(log)
    }

    fn publish_now(
        &self,
        channel: &ChannelId,
        policy: &ChannelPolicy,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Position>, PublishFailure> {
        let log = self.log(channel)?;
        let mut log = lock(&log);
        let now = Instant::now();
        let mut positions = Vec::with_capacity(events.len());
        let mut events = events.into_iter();
        while let Some(event) = events.next() {
            let appended = match log.append(event, policy, now) {
                Ok(appended) => appended,
                Err(e) => {
                    return Err(PublishFailure {
                        published: positions,
                        error: e.into(),
                        rest: events.collect(),
                    });
                }
            };
            let (offset, duplicate) = match appended {
                Appended::New(publication) => {
                    self.hub.deliver(&publication);
                    (publication.offset, false)
                }
                Appended::Duplicate(offset) => (offset, true),
            };
            positions.push(Position {
                epoch: log.epoch().clone(),
                offset,
                duplicate,
            });
        }
        Ok(positions)
    }
}

impl Broker for MemoryBroker {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn connected(&self) -> bool {
        true
    }

    fn link(&self) -> tokio::sync::watch::Receiver<bool> {
        self.link.subscribe()
    }

    fn publish<'a>(
        &'a self,
        channel: &'a ChannelId,
        policy: &'a ChannelPolicy,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<Vec<Position>, PublishFailure>> {
        let result = self.publish_now(channel, policy, events);
        Box::pin(async move { result })
    }

    fn recover<'a>(
        &'a self,
        channel: &'a ChannelId,
        policy: &'a ChannelPolicy,
        since: Option<(&'a str, u64)>,
        snapshot: bool,
    ) -> BoxFuture<'a, Result<Recovered, BrokerError>> {
        let result = self
            .log(channel)
            .map(|log| lock(&log).recover(since, snapshot, policy, Instant::now()));
        Box::pin(async move { result })
    }
}
