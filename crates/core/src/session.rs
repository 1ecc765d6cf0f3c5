//! The protocol state of one connection, whatever its transport.
//!
//! A transport feeds client messages to [`Session::handle`] and writes back
//! the frames it returns; it drains the session's [`Outbox`] for live events
//! and passes each through [`Session::admit`], which drops what recovery
//! already sent. Replies to a subscribe are ordered: per channel an `error`,
//! or a `reset` (resume impossible) or the replayed events / snapshots; then
//! one `ack` for the message; then live events.
//!
//! Each session registers a [`Connection`] with the node: the holders of its
//! subscriptions (token `sub` and `groups`) and its identity, so operators
//! can find it. Kill switches and disconnects reach the session as outbox
//! signals, handled in [`Session::take_live`] before any queued frame.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chouquette_protocol::client::{self, ChannelRequest, ClientBody, Connect, Subscribe};
use chouquette_protocol::server::{self, AckChannel, ErrorContext};
use chouquette_protocol::{CloseCode, ErrorCode, ResetReason};

use crate::app::App;
use crate::clock::unix_now;
pub use crate::connections::Identity;
use crate::connections::{Connection, Holder, Transport};
use crate::filter::Filter;
use crate::hub::{SubId, Subscriber};
use crate::limits::{ABUSE_CLOSE_REASON, Gate, Limit, MessageGate};
use crate::node::Node;
use crate::outbox::{
    NO_SLOT, Outbound, Outbox, SIGNAL_BROKER_LOST, SIGNAL_BROKER_RESTORED, SIGNAL_DISCONNECT,
    SIGNAL_SWITCHES,
};
use crate::publication::{ChannelId, valid_name};
use crate::recovery::Cursor;
use crate::switches::Switch;
use crate::telemetry::{BrokerOp, DropReason};
use crate::token::{self, Claims, Requirements, TokenError};

/// What the transport must do after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep going.
    Continue,
    /// Write the replies, then close with this code and reason.
    Close(CloseCode, &'static str),
}

#[derive(Debug)]
struct Slot {
    channel: ChannelId,
    sub_id: SubId,
    epoch: Arc<str>,
    cursor: Cursor,
    /// The hub's broker era the cursor counts in.
    era: u32,
    exp: Option<u64>,
}

/// Where one subscription stands: what a stateless transport puts in its
/// resume cursor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    /// The channel.
    pub channel: ChannelId,
    /// Its epoch.
    pub epoch: Arc<str>,
    /// The last offset delivered (or covered by the ack).
    pub offset: u64,
}

/// Why the connection must close, found while taking live frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// The outbox overflowed: close as a slow consumer.
    Overflowed,
    /// An operator disconnected this connection, with this reason.
    Disconnected(Box<str>),
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Session {
    node: Arc<Node>,
    outbox: Arc<Outbox>,
    connection: Arc<Connection>,
    slots: Vec<Option<Slot>>,
    /// Where subscriptions ended by the gateway (token expiry, a switch)
    /// stood, so a URL transport's cursor still lets them resume once the
    /// client subscribes again. At most one per channel; bounded by the
    /// subscription limit.
    ended: Vec<ResumePoint>,
    identity: Option<Arc<Identity>>,
    bad_messages: u32,
    /// When the publications of the live frames handed out by
    /// [`Session::take_live`] and not yet reported written reached the
    /// node: [`Session::written`] turns them into publish-to-write latency.
    unwritten: Vec<Instant>,
    /// Client-message rate (the first app's once one is held).
    gate: MessageGate,
    /// Whether the gate runs at an app's rate yet.
    gate_app: bool,
    /// The (app, user) pairs this connection counts for, released at the end.
    users: Vec<(Arc<str>, Box<str>)>,
}

/// A refusal of one channel of a subscribe.
struct Refusal {
    code: ErrorCode,
    message: String,
}

impl Refusal {
    fn new(code: ErrorCode, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }
}

fn token_refusal(e: TokenError) -> Refusal {
    match e {
        TokenError::Expired => Refusal::new(ErrorCode::TokenExpired, "token expired"),
        other => Refusal::new(ErrorCode::InvalidToken, other.to_string()),
    }
}

impl Session {
    /// A session for a new connection over `transport`.
    pub fn new(node: Arc<Node>, transport: Transport) -> Session {
        let outbox = Arc::new(Outbox::new(node.limits.outbox_capacity));
        let connection = node
            .connections
            .open(transport, outbox.clone(), node.telemetry.clone());
        let gate = MessageGate::new(
            node.limits.client_messages,
            node.limits.max_rate_limited,
            std::time::Instant::now(),
        );
        Session {
            node,
            outbox,
            connection,
            slots: Vec::new(),
            ended: Vec::new(),
            identity: None,
            bad_messages: 0,
            unwritten: Vec::new(),
            gate,
            gate_app: false,
            users: Vec::new(),
        }
    }

    /// The queue of live frames for this connection.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// The connection's identity, once a `connect` succeeded.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_deref()
    }

    /// Active subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    fn error(&self, out: &mut Vec<Bytes>, code: ErrorCode, message: &str, ctx: ErrorContext<'_>) {
        self.node.telemetry.error(code);
        out.push(server::error(code, message, ctx));
    }

    /// Handles one client text message, appending replies to `out`. The
    /// rate is checked first, before any parsing, so a flood costs little.
    pub async fn handle(&mut self, text: &str, out: &mut Vec<Bytes>) -> Verdict {
        match self.gate.admit(std::time::Instant::now()) {
            Gate::Pass => {}
            Gate::Refuse => {
                self.node.limiters.counters.hit(Limit::ClientMessages);
                let why = "too many messages: slow down";
                self.error(out, ErrorCode::RateLimited, why, ErrorContext::default());
                return Verdict::Continue;
            }
            Gate::Close => {
                self.node.limiters.counters.hit(Limit::ClientMessages);
                return Verdict::Close(CloseCode::PolicyViolation, ABUSE_CLOSE_REASON);
            }
        }
        if text.len() > self.node.limits.max_message_bytes {
            self.node.limiters.counters.hit(Limit::MessageSize);
            let limit = self.node.limits.max_message_bytes;
            return self.bad_message(&format!("message larger than {limit} bytes"), None, out);
        }
        let message = match client::parse(text) {
            Ok(m) => m,
            Err(e) => return self.bad_message(&e.message, e.uuid.as_deref(), out),
        };
        let reference = message.uuid.as_deref();
        match message.body {
            ClientBody::Subscribe(s) => return self.subscribe(s, reference, out).await,
            ClientBody::Unsubscribe(u) => {
                for name in &u.channels {
                    self.drop_channel(name);
                }
                out.push(server::ack(reference, None));
            }
            ClientBody::Connect(c) => self.connect(c, reference, out),
            ClientBody::Call(call) => {
                let ctx = ErrorContext {
                    reference,
                    id: Some(&call.id),
                    ..ErrorContext::default()
                };
                self.error(
                    out,
                    ErrorCode::Unavailable,
                    "no RPC route is configured for this method",
                    ctx,
                );
            }
            ClientBody::Publish(_) => {
                let ctx = ErrorContext {
                    reference,
                    ..ErrorContext::default()
                };
                self.error(
                    out,
                    ErrorCode::NotAllowed,
                    "client publishing is not enabled",
                    ctx,
                );
            }
        }
        Verdict::Continue
    }

    /// Answers a message that could not be used, and closes past the limit.
    pub fn bad_message(
        &mut self,
        why: &str,
        reference: Option<&str>,
        out: &mut Vec<Bytes>,
    ) -> Verdict {
        let ctx = ErrorContext {
            reference,
            ..ErrorContext::default()
        };
        self.error(out, ErrorCode::BadMessage, why, ctx);
        self.bad_messages += 1;
        if self.bad_messages > self.node.limits.max_bad_messages {
            Verdict::Close(CloseCode::PolicyViolation, "too many bad messages")
        } else {
            Verdict::Continue
        }
    }

    fn connect(&mut self, c: Connect, reference: Option<&str>, out: &mut Vec<Bytes>) {
        let ctx = ErrorContext {
            reference,
            ..ErrorContext::default()
        };
        let Some(app) = self.node.apps.get(&c.app_id).cloned() else {
            self.error(out, ErrorCode::UnknownApp, "unknown app", ctx);
            return;
        };
        self.hold_app(&app);
        match verify(&app, &c.token).and_then(|claims| {
            let user = claims
                .sub
                .clone()
                .ok_or_else(|| Refusal::new(ErrorCode::InvalidToken, "claim `sub` is missing"))?;
            Ok(Identity {
                app: app.id.clone(),
                user,
                groups: claims.groups,
                exp: claims.exp,
            })
        }) {
            Ok(identity) => {
                if let Err(r) = self.hold_user(&app, &identity.user) {
                    self.error(out, r.code, &r.message, ctx);
                    return;
                }
                let identity = Arc::new(identity);
                self.identity = Some(identity.clone());
                self.connection.set_identity(Some(identity));
                out.push(server::ack(reference, None));
                // The identity may bring existing subscriptions into a switch's scope.
                self.apply_switches(out);
            }
            Err(r) => self.error(out, r.code, &r.message, ctx),
        }
    }

    /// Handles a subscribe (also built by transports that take tokens in
    /// their URL, such as SSE and long-polling).
    pub async fn subscribe(
        &mut self,
        s: Subscribe,
        reference: Option<&str>,
        out: &mut Vec<Bytes>,
    ) -> Verdict {
        let Some(app) = self.node.apps.get(&s.app_id).cloned() else {
            let ctx = ErrorContext {
                reference,
                ..ErrorContext::default()
            };
            self.error(out, ErrorCode::UnknownApp, "unknown app", ctx);
            return Verdict::Continue;
        };
        let mut acked = BTreeMap::new();
        for (name, request) in &s.channels {
            match self.subscribe_one(&app, name, request, out).await {
                Ok(ack) => {
                    acked.insert(name.clone(), ack);
                }
                Err(r) => {
                    let ctx = ErrorContext {
                        reference,
                        channel: Some(name.get(..name.len().min(256)).unwrap_or("")),
                        id: None,
                    };
                    self.error(out, r.code, &r.message, ctx);
                }
            }
        }
        if !acked.is_empty() || s.channels.is_empty() {
            out.push(server::ack(reference, Some(&acked)));
        }
        Verdict::Continue
    }

    async fn subscribe_one(
        &mut self,
        app: &Arc<App>,
        name: &str,
        request: &ChannelRequest,
        out: &mut Vec<Bytes>,
    ) -> Result<AckChannel, Refusal> {
        if !valid_name(name) {
            return Err(Refusal::new(ErrorCode::BadMessage, "invalid channel name"));
        }
        let claims = verify(app, &request.filters)?;
        let Some(granted) = claims.channel.as_deref() else {
            return Err(Refusal::new(
                ErrorCode::InvalidToken,
                "claim `channel` is missing",
            ));
        };
        if granted != name {
            return Err(Refusal::new(
                ErrorCode::WrongChannel,
                "token was signed for another channel",
            ));
        }
        let Some(filters) = claims.filters.as_ref() else {
            return Err(Refusal::new(
                ErrorCode::InvalidToken,
                "claim `filters` is missing",
            ));
        };
        let filter = Filter::parse(filters)
            .map_err(|e| Refusal::new(ErrorCode::InvalidToken, e.to_string()))?;
        self.hold_app(app);
        if let Some(user) = claims.sub.as_deref() {
            self.hold_user(app, user)?;
        }
        self.drop_channel(name);
        if self.subscription_count() >= app.limits.max_subscriptions {
            let limit = app.limits.max_subscriptions;
            self.node.limiters.counters.hit(Limit::Subscriptions);
            return Err(Refusal::new(
                ErrorCode::TooManySubscriptions,
                format!("at most {limit} subscriptions per connection"),
            ));
        }
        let channel = ChannelId::new(&app.id, name);
        let slot = self.free_slot();
        // Recorded before the switches are read: a switch put in force after
        // this check finds the holder and signals this session.
        self.connection.add(Holder {
            slot,
            channel: channel.clone(),
            user: claims.sub.as_deref().map(Into::into),
            groups: claims.groups.clone().into_boxed_slice(),
        });
        if let Some(switch) = self.blocking(slot) {
            self.connection.remove(slot);
            self.node.telemetry.disabled_refusal();
            return Err(Refusal::new(
                ErrorCode::Disabled,
                format!("switched off by an operator ({switch})"),
            ));
        }
        let filter = Arc::new(filter);
        let era = self.node.hub.era();
        // Registered before history is read: see the recovery module.
        let sub_id = self.node.hub.subscribe(
            &channel,
            Subscriber {
                outbox: self.outbox.clone(),
                slot,
                filter: filter.clone(),
            },
        );
        let policy = app.channel_policy(name);
        let since = request.since.as_ref().map(|s| (s.epoch.as_str(), s.offset));
        let asked = Instant::now();
        let recovered = self
            .node
            .broker
            .recover(&channel, policy, since, since.is_none())
            .await;
        self.node
            .telemetry
            .broker_call(BrokerOp::Recover, asked.elapsed());
        let recovered = match recovered {
            Ok(r) => r,
            Err(e) => {
                self.node.hub.unsubscribe(&channel, sub_id);
                self.connection.remove(slot);
                return Err(Refusal::new(ErrorCode::Unavailable, e.to_string()));
            }
        };
        if recovered.gap {
            out.push(server::reset(Some(name), ResetReason::HistoryGap));
        }
        for p in &recovered.events {
            if filter.matches(&p.event_kind, &p.keywords) {
                out.push(if since.is_some() {
                    p.frame().clone()
                } else {
                    p.snapshot_frame().clone()
                });
            }
        }
        self.ended.retain(|p| p.channel != channel);
        self.slots[slot as usize] = Some(Slot {
            channel,
            sub_id,
            epoch: recovered.epoch.clone(),
            cursor: Cursor::at(recovered.top),
            era,
            exp: claims.exp,
        });
        Ok(AckChannel {
            epoch: recovered.epoch.to_string(),
            offset: recovered.top,
            recovered: since.is_some() && !recovered.gap,
        })
    }

    /// The first app a connection uses sets its client-message rate.
    fn hold_app(&mut self, app: &App) {
        if !self.gate_app {
            self.gate_app = true;
            self.gate.set_rate(app.limits.client_messages);
        }
    }

    /// Counts this connection for `user` of `app` (once per pair), unless
    /// the user already holds the app's limit of connections on this node.
    fn hold_user(&mut self, app: &App, user: &str) -> Result<(), Refusal> {
        if self.users.iter().any(|(a, u)| *a == app.id && &**u == user) {
            return Ok(());
        }
        let max = app.limits.max_connections_per_user;
        if !self.node.limiters.users.acquire(&app.id, user, max) {
            self.node.limiters.counters.hit(Limit::ConnectionsPerUser);
            return Err(Refusal::new(
                ErrorCode::RateLimited,
                format!("this user already holds {max} connections"),
            ));
        }
        self.users.push((app.id.clone(), user.into()));
        Ok(())
    }

    fn free_slot(&mut self) -> u32 {
        match self.slots.iter().position(Option::is_none) {
            Some(i) => i as u32,
            None => {
                self.slots.reserve_exact(1);
                self.slots.push(None);
                (self.slots.len() - 1) as u32
            }
        }
    }

    fn drop_channel(&mut self, name: &str) {
        self.ended.retain(|p| &*p.channel.name != name);
        for i in 0..self.slots.len() {
            if self.slots[i]
                .as_ref()
                .is_some_and(|s| &*s.channel.name == name)
            {
                self.release(i);
            }
        }
    }

    /// Ends the subscription in slot `i` (hub and connection), returning it.
    fn release(&mut self, i: usize) -> Option<Slot> {
        let slot = self.slots.get_mut(i)?.take()?;
        self.node.hub.unsubscribe(&slot.channel, slot.sub_id);
        self.connection.remove(i as u32);
        Some(slot)
    }

    /// The switch in force that covers the subscription in `slot`, if any.
    fn blocking(&self, slot: u32) -> Option<Switch> {
        let switches = &self.node.switches;
        self.connection
            .with_subject(slot, |subject| switches.blocking(subject))
            .flatten()
    }

    /// Ends every subscription a switch in force covers, each with a
    /// `reset` reason `disabled` naming its channel.
    pub fn apply_switches(&mut self, out: &mut Vec<Bytes>) {
        for i in 0..self.slots.len() {
            if self.slots[i].is_none() || self.blocking(i as u32).is_none() {
                continue;
            }
            if let Some(slot) = self.release(i) {
                self.remember_end(&slot);
                self.node.telemetry.disabled_reset();
                out.push(server::reset(
                    Some(&slot.channel.name),
                    ResetReason::Disabled,
                ));
            }
        }
    }

    /// Whether a live frame from the outbox should be written (drops what
    /// recovery already delivered, and frames of ended subscriptions).
    pub fn admit(&mut self, item: &Outbound) -> bool {
        admitted(&mut self.slots, item)
    }

    /// Handles the outbox's signals, then moves up to `max` live frames that
    /// are new to their subscription from the outbox into `out`; returns how
    /// many frames were taken or produced (`reset`s of switched-off channels).
    pub fn take_live(&mut self, out: &mut Vec<Bytes>, max: usize) -> Result<usize, Stop> {
        let signals = self.outbox.take_signals();
        if signals & SIGNAL_DISCONNECT != 0 {
            return Err(Stop::Disconnected(self.connection.disconnect_reason()));
        }
        let before = out.len();
        if signals & SIGNAL_SWITCHES != 0 {
            self.apply_switches(out);
        }
        if signals & SIGNAL_BROKER_LOST != 0 && self.subscription_count() > 0 {
            self.node.telemetry.link.reset_sent();
            out.push(server::reset(None, ResetReason::BrokerUnavailable));
        }
        if signals & SIGNAL_BROKER_RESTORED != 0 && self.subscription_count() > 0 {
            self.node.telemetry.link.reset_sent();
            out.push(server::reset(None, ResetReason::BrokerRestored));
        }
        let mut taken = out.len() - before;
        let slots = &mut self.slots;
        let unwritten = &mut self.unwritten;
        let (mut ended, mut duplicates) = (0, 0);
        let (state, depth) = self.outbox.drain_counted(max, |item| {
            taken += 1;
            if admitted(slots, &item) {
                unwritten.push(item.received);
                out.push(item.frame);
            } else if matches!(slots.get(item.slot as usize), Some(Some(_))) {
                duplicates += 1;
            } else {
                ended += 1;
            }
        });
        let telemetry = &self.node.telemetry;
        if depth > 0 {
            telemetry.outbox_depth(depth);
        }
        telemetry.dropped(DropReason::Ended, ended);
        telemetry.dropped(DropReason::Duplicate, duplicates);
        if state == crate::outbox::State::Overflowed {
            return Err(Stop::Overflowed);
        }
        Ok(taken)
    }

    /// The transport wrote (`ok`) or failed to write the frames
    /// [`Session::take_live`] handed out since the last call: records their
    /// publish-to-write latency with one clock read, or counts them as
    /// `write_failed` drops.
    pub fn written(&mut self, ok: bool) {
        if self.unwritten.is_empty() {
            return;
        }
        let telemetry = &self.node.telemetry;
        if ok {
            telemetry.written(Instant::now(), &self.unwritten);
        } else {
            telemetry.dropped(DropReason::WriteFailed, self.unwritten.len());
        }
        self.unwritten.clear();
        // A burst's buffer is not kept by an idle connection.
        if self.unwritten.capacity() > 256 {
            self.unwritten = Vec::new();
        }
    }

    /// Where every subscription stands: the active ones, and those the
    /// gateway ended (expired token, switch) that the client may renew.
    pub fn positions(&self) -> impl Iterator<Item = ResumePoint> + '_ {
        self.slots
            .iter()
            .flatten()
            .map(|s| ResumePoint {
                channel: s.channel.clone(),
                epoch: s.epoch.clone(),
                offset: s.cursor.last(),
            })
            .chain(self.ended.iter().cloned())
    }

    fn remember_end(&mut self, slot: &Slot) {
        self.ended.retain(|p| p.channel != slot.channel);
        self.ended.push(ResumePoint {
            channel: slot.channel.clone(),
            epoch: slot.epoch.clone(),
            offset: slot.cursor.last(),
        });
    }

    /// The earliest `exp` among subscriptions, if any.
    pub fn next_expiry(&self) -> Option<u64> {
        self.slots.iter().flatten().filter_map(|s| s.exp).min()
    }

    /// Ends every subscription whose token expired at `now`, with `token_expired`.
    pub fn expire(&mut self, now: u64, out: &mut Vec<Bytes>) {
        for i in 0..self.slots.len() {
            let expired = self.slots[i]
                .as_ref()
                .is_some_and(|s| s.exp.is_some_and(|exp| exp <= now));
            if expired && let Some(slot) = self.release(i) {
                self.remember_end(&slot);
                let ctx = ErrorContext {
                    channel: Some(&slot.channel.name),
                    ..ErrorContext::default()
                };
                self.error(
                    out,
                    ErrorCode::TokenExpired,
                    "subscription token expired",
                    ctx,
                );
            }
        }
    }

    /// Leaves every channel; the session is done.
    pub fn end(&mut self) {
        self.outbox.close();
        for slot in self.slots.drain(..).flatten() {
            self.node.hub.unsubscribe(&slot.channel, slot.sub_id);
        }
        self.node.connections.close(&self.connection);
        for (app, user) in self.users.drain(..) {
            self.node.limiters.users.release(&app, &user);
        }
    }
}

/// Whether a live frame is new to its subscription (advancing its cursor);
/// frames of ended subscriptions are not. A frame from a later broker era
/// restarts the cursor (offsets may have restarted with a new epoch); one
/// from an earlier era is stale: the client was told `reset` since.
fn admitted(slots: &mut [Option<Slot>], item: &Outbound) -> bool {
    if item.slot == NO_SLOT {
        return true;
    }
    let Some(Some(slot)) = slots.get_mut(item.slot as usize) else {
        return false;
    };
    if item.era != slot.era {
        if item.era < slot.era {
            return false;
        }
        slot.era = item.era;
        slot.cursor = Cursor::default();
    }
    slot.cursor.admit(item.offset)
}

impl Drop for Session {
    fn drop(&mut self) {
        self.end();
    }
}

fn verify(app: &App, token: &str) -> Result<Claims, Refusal> {
    let req = Requirements {
        now: unix_now(),
        require_exp: !app.allow_no_exp,
        leeway: 0,
    };
    let claims = token::verify(token, &app.secrets, req).map_err(token_refusal)?;
    if *claims.app_id != *app.id {
        return Err(Refusal::new(
            ErrorCode::InvalidToken,
            "token was signed for another app",
        ));
    }
    Ok(claims)
}
