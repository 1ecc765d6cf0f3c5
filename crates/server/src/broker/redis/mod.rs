//! The Redis broker: offsets, history, state and delivery shared by every
//! gateway node on one Redis (direct or through Sentinel).
//!
//! One Lua script per publish gives the events their offsets, appends them
//! to history and state, and PUBLISHes them on the channel's topic in one
//! atomic step, so nodes never share an offset and each node receives a
//! channel in offset order on its single pub/sub connection. A node listens
//! only on the topics of channels it has subscribers for; it subscribes
//! before it reads history (see the recovery module), and drops idle topics
//! in a periodic sweep. When the link breaks, the node tells its clients
//! (`reset` `broker_unavailable`), refuses publishes and subscribes with
//! `unavailable`, and reconnects with capped exponential backoff and
//! jitter; once back, it listens again on all its topics in a few batched
//! commands and tells clients `broker_restored`.

mod commands;
mod devices;
mod lattices;
mod link;
mod notifications;
mod presence;
mod users;
mod wire;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chouquette_core::app::ChannelPolicy;
use chouquette_core::broker::{
    BoxFuture, Broker, BrokerError, PublishFailure, UserGrants, new_epoch,
};
use chouquette_core::device_state;
use chouquette_core::device_time::state_value;
use chouquette_core::history::{LogError, Recovered};
use chouquette_core::hub::Hub;
use chouquette_core::lattice::{Bounds, Lattice};
use chouquette_core::lattice_feed::NamespaceValues;
use chouquette_core::presence::LocalChange;
use chouquette_core::publication::{ChannelId, NewEvent, Position, Publication};
use chouquette_core::recovery::{self, Plan};
use chouquette_core::telemetry::Telemetry;
use chouquette_core::user_calls::CallReply;
use chouquette_core::user_mail::UserMessage;
use redis::{Script, ScriptInvocation};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

pub use commands::{Commands, Target};
use link::Link;
pub use link::backoff;
use wire::ChannelKeys;

const PUBLISH_LUA: &str = concat!(include_str!("common.lua"), include_str!("publish.lua"));
const RECOVER_LUA: &str = concat!(include_str!("common.lua"), include_str!("recover.lua"));
/// How long a `flapping` event that Redis refused is tried again, and the
/// pauses between tries (doubling from the first to the longest).
const ALARM_RETRY_FOR: Duration = Duration::from_secs(60);
const ALARM_FIRST_RETRY: Duration = Duration::from_millis(100);
const ALARM_MAX_RETRY: Duration = Duration::from_secs(5);

/// How to reach Redis and how to keep channels there.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// The server, or the Sentinels that know it.
    pub target: Target,
    /// Prefix of every key and topic.
    pub prefix: String,
    /// A channel nobody publishes to or joins for this long is forgotten.
    pub key_ttl: Duration,
    /// Longest wait for a connection.
    pub connect_timeout: Duration,
    /// Longest wait for a command's answer before the link counts as lost.
    pub command_timeout: Duration,
    /// Longest wait between reconnection attempts.
    pub reconnect_max: Duration,
    /// Most channels this node listens on.
    pub max_channels: usize,
    /// How long an inbox id is remembered to publish it only once.
    pub dedup_window: Duration,
    /// A message reaching this node later than this after Redis published
    /// it drops the link (this node is not keeping up; see `link.rs`).
    pub max_lag: Duration,
    /// How often the node stops listening on channels it no longer serves.
    pub topic_sweep: Duration,
    /// How long this node's presence entries outlive their last refresh
    /// (see `presence.rs`).
    pub presence_timeout: Duration,
}

/// The state the broker, its link task and its callers share.
struct Shared {
    settings: RedisSettings,
    hub: Arc<Hub>,
    telemetry: Arc<Telemetry>,
    /// The current link, when up.
    link: RwLock<Option<Link>>,
    /// Topics this node listens on → (channel, id of the link that
    /// confirmed the subscription; 0 while pending).
    watched: tokio::sync::Mutex<HashMap<Arc<str>, (ChannelId, u64)>>,
    status: watch::Sender<bool>,
    /// Raised by a caller that saw the link fail, so the task reconnects at
    /// once. `notify_waiters` stores no permit: a report about an old link
    /// cannot tear down the next one (a missed report is caught by the
    /// next ping, within a second).
    broken: Notify,
    publish: Script,
    recover: Script,
    /// Where control messages and link-up events go (see [`Control`]).
    control: RwLock<Option<ControlHandler>>,
    /// This process's reply address (see `users.rs`).
    reply_address: Box<str>,
    /// This process's name in presence entries: random, so a node
    /// restarted under the same id does not revive its old entries.
    presence_node: Box<str>,
}

/// What the broker tells the node's control handler.
#[derive(Debug, Clone, Copy)]
pub enum Control<'a> {
    /// A message another node (or this one) broadcast.
    Message(&'a [u8]),
    /// The link is up again: state kept in Redis may have changed meanwhile.
    Connected,
}

/// Receives [`Control`] events, on the link task: must not block.
pub type ControlHandler = Arc<dyn Fn(Control<'_>) + Send + Sync>;

impl Shared {
    fn control_topic(&self) -> String {
        format!("{}:control", self.settings.prefix)
    }

    /// The hash of kill switches; its `:known` marker shares the hash tag,
    /// so both sit on one Cluster slot.
    fn switches_key(&self) -> String {
        format!("{}:{{switches}}", self.settings.prefix)
    }

    fn on_control(&self, event: Control<'_>) {
        let handler = self
            .control
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some(handler) = handler {
            handler(event);
        }
    }

    fn current(&self) -> Option<Link> {
        self.link.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn keys(&self, channel: &ChannelId) -> ChannelKeys {
        ChannelKeys::new(&self.settings.prefix, channel)
    }

    /// Maps a Redis error to the broker's, asking for a reconnect when the
    /// connection itself failed.
    fn failed(&self, e: &redis::RedisError) -> BrokerError {
        if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() {
            self.broken.notify_waiters();
        }
        BrokerError::Unavailable(e.to_string())
    }
}

/// The Redis broker (see the module docs).
pub struct RedisBroker {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("target", &self.shared.settings.target)
            .finish_non_exhaustive()
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl RedisBroker {
    /// Starts the link task; waits up to the connect timeout for the first
    /// connection, and keeps trying in the background after that (the node
    /// is not ready meanwhile).
    pub async fn start(
        settings: RedisSettings,
        hub: Arc<Hub>,
        telemetry: Arc<Telemetry>,
    ) -> RedisBroker {
        let wait = settings.connect_timeout * 2;
        let shared = Arc::new(Shared {
            settings,
            hub,
            telemetry,
            link: RwLock::new(None),
            watched: tokio::sync::Mutex::new(HashMap::new()),
            status: watch::Sender::new(false),
            broken: Notify::new(),
            publish: Script::new(PUBLISH_LUA),
            recover: Script::new(RECOVER_LUA),
            control: RwLock::new(None),
            reply_address: uuid::Uuid::new_v4().simple().to_string().into(),
            presence_node: format!("{}{}", new_epoch(), new_epoch()).into(),
        });
        let mut up = shared.status.subscribe();
        let task = tokio::spawn(link::supervise(Arc::downgrade(&shared)));
        let _ = tokio::time::timeout(wait, up.wait_for(|up| *up)).await;
        RedisBroker { shared, task }
    }

    /// Sets where control messages and link-up events go.
    pub fn on_control(&self, handler: ControlHandler) {
        *self
            .shared
            .control
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(handler);
    }

    /// Sends `payload` to every node's control handler (this one's too);
    /// returns how many nodes listen.
    pub async fn broadcast(&self, payload: &str) -> Result<usize, BrokerError> {
        let link = self.shared.current().ok_or_else(not_connected)?;
        let mut commands = link.commands.clone();
        redis::cmd("PUBLISH")
            .arg(self.shared.control_topic())
            .arg(payload)
            .query_async(&mut commands)
            .await
            .map_err(|e| self.shared.failed(&e))
    }

    /// Records (`Some`) or forgets (`None`) one kill switch under `field`
    /// in Redis, where every node reads the switches in force.
    pub async fn store_switch(&self, field: &str, value: Option<&str>) -> Result<(), BrokerError> {
        let link = self.shared.current().ok_or_else(not_connected)?;
        let key = self.shared.switches_key();
        let mut pipe = redis::pipe();
        pipe.atomic();
        match value {
            Some(value) => pipe.hset(&key, field, value).ignore(),
            None => pipe.hdel(&key, field).ignore(),
        };
        pipe.set(format!("{key}:known"), 1).ignore();
        let mut commands = link.commands.clone();
        pipe.query_async::<()>(&mut commands)
            .await
            .map_err(|e| self.shared.failed(&e))
    }

    /// The kill switches recorded in Redis, or `None` when Redis has no
    /// record at all (a new or emptied Redis).
    pub async fn stored_switches(&self) -> Result<Option<Vec<String>>, BrokerError> {
        let link = self.shared.current().ok_or_else(not_connected)?;
        let key = self.shared.switches_key();
        let mut commands = link.commands.clone();
        let (known, values): (Option<String>, Vec<String>) = redis::pipe()
            .atomic()
            .get(format!("{key}:known"))
            .hvals(&key)
            .query_async(&mut commands)
            .await
            .map_err(|e| self.shared.failed(&e))?;
        Ok(known.map(|_| values))
    }

    /// Ends the link task when the node stops.
    pub fn stop_handle(&self) -> tokio::task::AbortHandle {
        self.task.abort_handle()
    }

    /// A connection of its own to the same Redis (resolved through Sentinel
    /// when configured), without a response timeout: for blocking reads.
    pub async fn dedicated(&self) -> Result<Commands, BrokerError> {
        commands::open(&self.shared.settings, None)
            .await
            .map(|(commands, _)| commands)
            .map_err(|e| BrokerError::Unavailable(e.to_string()))
    }

    /// Publishes `events` of one channel in one script call. An event's
    /// `id` (the backend's, or one a source derived) is its dedup id: one
    /// already published within the dedup window publishes nothing and gets
    /// the first one's position. A refused event stops the batch: the
    /// failure names the positions before it and hands back the events
    /// after it.
    async fn publish_events(
        &self,
        channel: &ChannelId,
        policy: &ChannelPolicy,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Position>, PublishFailure> {
        let published = run_publish(&self.shared, channel, policy, &events).await?;
        self.raise_alarms(channel, policy, &events, &published);
        let positions: Vec<Position> = published
            .offsets
            .iter()
            .map(|&(offset, duplicate)| Position {
                epoch: published.epoch.clone(),
                offset,
                duplicate,
            })
            .collect();
        if !published.state_full {
            return Ok(positions);
        }
        let rest = events.into_iter().skip(positions.len() + 1).collect();
        Err(PublishFailure {
            published: positions,
            error: LogError::StateFull(policy.max_state_keys).into(),
            rest,
        })
    }

    /// Publishes the `flapping` events `publish.lua` found, after the batch
    /// that raised them, in a task of their own: the batch itself is
    /// published and its caller answered meanwhile. `publish.lua` already
    /// recorded the episode, so an alarm that could not be published would
    /// never be raised again: it is tried until it goes, with a doubling
    /// pause, for [`ALARM_RETRY_FOR`]. Each alarm's dedup id names the
    /// event that raised it, so a call that went through but whose answer
    /// was lost publishes nothing the second time.
    fn raise_alarms(
        &self,
        channel: &ChannelId,
        policy: &ChannelPolicy,
        events: &[NewEvent],
        published: &wire::Published,
    ) {
        let Some(rule) = policy.flapping else {
            return;
        };
        let raised: Vec<NewEvent> = published
            .alarms
            .iter()
            .filter_map(|(index, alarm)| {
                let event = events.get(*index)?;
                let key = event.key.as_deref()?;
                let (offset, _) = published.offsets.get(*index)?;
                let mut raised = device_state::alarm_event(event, key, *alarm, rule);
                raised.id = Some(format!("alarm:{}:{offset}", published.epoch));
                Some(raised)
            })
            .collect();
        if raised.is_empty() {
            return;
        }
        let (shared, channel, policy) = (self.shared.clone(), channel.clone(), policy.clone());
        tokio::spawn(async move {
            let mut pause = ALARM_FIRST_RETRY;
            let deadline = tokio::time::Instant::now() + ALARM_RETRY_FOR;
            loop {
                let Err(e) = run_publish(&shared, &channel, &policy, &raised).await else {
                    return;
                };
                if tokio::time::Instant::now() + pause > deadline {
                    tracing::error!(%channel, error = %e, "a flapping event could not be published: given up");
                    return;
                }
                tracing::warn!(%channel, error = %e, "could not publish a flapping event; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(ALARM_MAX_RETRY);
            }
        });
    }

    /// Makes this node listen on `channel`'s topic before its history is
    /// read, so that nothing published in between is missed.
    async fn watch(&self, channel: &ChannelId) -> Result<Link, BrokerError> {
        let shared = &self.shared;
        let link = shared.current().ok_or_else(not_connected)?;
        let topic: Arc<str> = shared.keys(channel).topic.into();
        let mut watched = shared.watched.lock().await;
        match watched.get(&topic) {
            Some((_, confirmed)) if *confirmed == link.id => return Ok(link),
            None if watched.len() >= shared.settings.max_channels => {
                return Err(BrokerError::TooManyChannels(shared.settings.max_channels));
            }
            _ => {}
        }
        watched.insert(topic.clone(), (channel.clone(), 0));
        let mut sink = link.subscriptions.clone();
        match tokio::time::timeout(shared.settings.command_timeout, sink.subscribe(&*topic)).await {
            Ok(Ok(())) => {
                watched.insert(topic, (channel.clone(), link.id));
                Ok(link)
            }
            Ok(Err(e)) => Err(shared.failed(&e)),
            Err(_) => {
                shared.broken.notify_waiters();
                Err(BrokerError::Unavailable(
                    "Redis did not confirm a subscribe".into(),
                ))
            }
        }
    }

    async fn read(
        &self,
        channel: &ChannelId,
        policy: &ChannelPolicy,
        since: Option<(&str, u64)>,
        snapshot: bool,
    ) -> Result<Recovered, BrokerError> {
        let link = self.watch(channel).await?;
        let mode = match since {
            Some(_) => "since",
            None if snapshot && policy.keep_state => "snapshot",
            None => "none",
        };
        let read = self
            .run_recover(&link, channel, policy, mode, since)
            .await?;
        let mut items: Vec<_> = read.items.into_iter().map(Arc::new).collect();
        let Some((epoch, offset)) = since else {
            items.sort_unstable_by_key(|p| p.offset);
            return Ok(recovered(read.epoch, read.top, items, false));
        };
        match recovery::plan(offset, epoch == &*read.epoch, read.first, read.top) {
            Plan::Replay { after } => {
                items.retain(|p| p.offset > after && p.offset <= read.top);
                Ok(recovered(read.epoch, read.top, items, false))
            }
            // The state stands in for the missed history: read it now (the
            // subscription is registered, so what follows it arrives live).
            Plan::Gap if policy.keep_state => {
                let state = self
                    .run_recover(&link, channel, policy, "snapshot", None)
                    .await?;
                let mut items: Vec<_> = state.items.into_iter().map(Arc::new).collect();
                items.sort_unstable_by_key(|p| p.offset);
                Ok(recovered(state.epoch, state.top, items, true))
            }
            Plan::Gap => Ok(recovered(read.epoch, read.top, Vec::new(), true)),
        }
    }

    /// Runs `recover.lua` in `mode` (`since`, `snapshot` or `none`).
    async fn run_recover(
        &self,
        link: &Link,
        channel: &ChannelId,
        policy: &ChannelPolicy,
        mode: &str,
        since: Option<(&str, u64)>,
    ) -> Result<wire::Read, BrokerError> {
        let shared = &self.shared;
        let keys = shared.keys(channel);
        let (since_epoch, since_offset) = since.unwrap_or(("", 0));
        let mut commands = link.commands.clone();
        let reply: redis::Value = keyed(&shared.recover, &keys)
            .arg(new_epoch())
            .arg(mode)
            .arg(since_epoch)
            .arg(since_offset)
            .arg(policy.history_ttl.map_or(0, ms))
            .arg(ms(shared.settings.key_ttl))
            .invoke_async(&mut commands)
            .await
            .map_err(|e| shared.failed(&e))?;
        wire::read(reply)
    }
}

fn recovered(epoch: Arc<str>, top: u64, events: Vec<Arc<Publication>>, gap: bool) -> Recovered {
    Recovered {
        epoch,
        top,
        events,
        gap,
    }
}

/// An invocation of `script` naming `keys`, in the order both scripts
/// (`common.lua`) take them.
fn keyed<'a>(script: &'a Script, keys: &ChannelKeys) -> ScriptInvocation<'a> {
    let mut invocation = script.prepare_invoke();
    invocation
        .key(&keys.meta)
        .key(&keys.hist)
        .key(&keys.state)
        .key(&keys.seen)
        .key(&keys.seenoff)
        .key(&keys.devstate);
    invocation
}

fn not_connected() -> BrokerError {
    BrokerError::Unavailable("not connected to Redis".into())
}

impl Drop for RedisBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Broker for RedisBroker {
    fn notifications<'a>(
        &'a self,
        app: &'a str,
        user: &'a str,
        op: chouquette_core::notifications::PendingOp,
        now: u64,
        expire_after: u64,
    ) -> BoxFuture<'a, Result<chouquette_core::notifications::Outcome, BrokerError>> {
        Box::pin(self.pending_apply(app, user, op, now, expire_after))
    }

    fn notification_id<'a>(
        &'a self,
        app: &'a str,
        key: &'a str,
        claim: Option<&'a str>,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<Option<String>, BrokerError>> {
        Box::pin(self.notification_id_of(app, key, claim, ttl))
    }

    fn kind(&self) -> &'static str {
        "redis"
    }

    fn connected(&self) -> bool {
        *self.shared.status.borrow()
    }

    fn link(&self) -> watch::Receiver<bool> {
        self.shared.status.subscribe()
    }

    fn publish<'a>(
        &'a self,
        channel: &'a ChannelId,
        policy: &'a ChannelPolicy,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'a, Result<Vec<Position>, PublishFailure>> {
        Box::pin(self.publish_events(channel, policy, events))
    }

    fn recover<'a>(
        &'a self,
        channel: &'a ChannelId,
        policy: &'a ChannelPolicy,
        since: Option<(&'a str, u64)>,
        snapshot: bool,
    ) -> BoxFuture<'a, Result<Recovered, BrokerError>> {
        Box::pin(self.read(channel, policy, since, snapshot))
    }

    fn to_user<'a>(&'a self, message: &'a UserMessage) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move { self.publish_to_user(message).await.map(drop) })
    }

    fn to_user_counted<'a>(
        &'a self,
        message: &'a UserMessage,
    ) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(self.publish_to_user(message))
    }

    fn reply_address(&self) -> &str {
        &self.shared.reply_address
    }

    fn to_node<'a>(
        &'a self,
        address: &'a str,
        reply: &'a CallReply,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.shared.send_reply(address, reply))
    }

    fn set_grant<'a>(
        &'a self,
        app: &'a str,
        user: &'a str,
        channel: &'a str,
        filters: Option<&'a serde_json::Value>,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.write_grant(app, user, channel, filters))
    }

    fn grants<'a>(
        &'a self,
        app: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<UserGrants, BrokerError>> {
        Box::pin(self.read_grants(app, user))
    }

    fn merge_lattices<'a>(
        &'a self,
        app: &'a str,
        namespace: &'a str,
        update: &'a NamespaceValues,
        bounds: &'a Bounds,
    ) -> BoxFuture<'a, Result<NamespaceValues, BrokerError>> {
        Box::pin(self.merge_lattices_cas(app, namespace, update, bounds))
    }

    fn lattices<'a>(
        &'a self,
        app: &'a str,
        namespace: &'a str,
        user: &'a str,
    ) -> BoxFuture<'a, Result<(Lattice, Lattice), BrokerError>> {
        Box::pin(self.read_lattices(app, namespace, user))
    }

    fn presence_changed<'a>(
        &'a self,
        changes: &'a [LocalChange],
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.presence_changes(changes))
    }

    fn presence_refresh<'a>(
        &'a self,
        here: &'a [(ChannelId, Vec<Box<str>>)],
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(self.presence_refresh_now(here))
    }

    fn present<'a>(
        &'a self,
        channel: &'a ChannelId,
    ) -> BoxFuture<'a, Result<Vec<Box<str>>, BrokerError>> {
        Box::pin(self.read_present(channel))
    }
}

/// Publishes `events` of one channel in one call of `publish.lua`.
async fn run_publish(
    shared: &Shared,
    channel: &ChannelId,
    policy: &ChannelPolicy,
    events: &[NewEvent],
) -> Result<wire::Published, BrokerError> {
    let link = shared.current().ok_or_else(not_connected)?;
    let keys = shared.keys(channel);
    let mut invocation = keyed(&shared.publish, &keys);
    invocation
        .arg(new_epoch())
        .arg(policy.history)
        .arg(u8::from(policy.keep_state))
        .arg(policy.max_state_keys)
        .arg(policy.history_ttl.map_or(0, ms))
        .arg(ms(shared.settings.key_ttl))
        .arg(&keys.topic)
        .arg(ms(shared.settings.dedup_window))
        .arg(policy.flapping.map_or(0, |f| f.changes))
        .arg(policy.flapping.map_or(0, |f| ms(f.window)));
    for event in events {
        let tracked = policy
            .state_field
            .as_deref()
            .filter(|_| policy.keep_state && event.key.is_some())
            .and_then(|field| state_value(&event.data, field));
        invocation
            .arg(event.id.as_deref().unwrap_or(""))
            .arg(event.key.as_deref().unwrap_or(""))
            .arg(event.time.map_or(String::new(), |t| t.millis().to_string()))
            .arg(tracked.unwrap_or_default())
            .arg(wire::encode(event));
    }
    let mut commands = link.commands.clone();
    let reply: redis::Value = invocation
        .invoke_async(&mut commands)
        .await
        .map_err(|e| shared.failed(&e))?;
    wire::published(reply)
}
