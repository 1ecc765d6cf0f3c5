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

pub mod authorize;
mod backend_subs;
pub mod calls;
mod client_calls;
pub mod connect_auth;
pub mod lattices;
mod messages;
pub mod notifications;
pub mod publish;
pub mod subscriptions;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use chouquette_protocol::client::{self, ChannelRequest, ClientBody, Connect, Subscribe};
use chouquette_protocol::server::{self, AckChannel, ErrorContext};
use chouquette_protocol::{CloseCode, ErrorCode, ResetReason};

use crate::app::App;
use crate::broker::UNAVAILABLE_MESSAGE;
use crate::clock::unix_now;
pub use crate::connections::Identity;
use crate::connections::Transport;
use crate::filter::Filter;
use crate::limits::{ABUSE_CLOSE_REASON, Gate, Limit, MessageGate};
use crate::node::Node;
use crate::outbox::{
    Outbound, Outbox, SIGNAL_BROKER_LOST, SIGNAL_BROKER_RESTORED, SIGNAL_DISCONNECT,
    SIGNAL_SWITCHES, SIGNAL_USER,
};
use crate::publication::ChannelId;
use crate::recovery;
use crate::telemetry::{BrokerOp, DropReason, Telemetry};
use authorize::{Grant, Refusal, TokenClock, authorize, identify};
use subscriptions::{Admission, RegisterError, Subscriptions};

/// What the transport must do after a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Keep going.
    Continue,
    /// Write the replies, then close with this code and reason.
    Close(CloseCode, &'static str),
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
    /// Its subscriptions, with the connection and outbox they feed.
    subscriptions: Subscriptions,
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
    /// Its calls waiting on backends.
    calls: calls::InFlight,
    /// The subscriptions backends made (see [`backend_subs`]).
    backend: backend_subs::BackendSubs,
    /// Backends' calls this connection was sent and may answer.
    client_calls: crate::user_calls::OpenCalls,
    /// Its lattice namespaces (see [`lattices`]).
    lattices: lattices::LatticeSubs,
    /// Whether the client was told notifications are switched off.
    notifications_off: bool,
}

/// Counts an error and appends its frame.
fn error(
    telemetry: &Telemetry,
    out: &mut Vec<Bytes>,
    code: ErrorCode,
    message: &str,
    ctx: ErrorContext<'_>,
) {
    telemetry.error(code);
    out.push(server::error(code, message, ctx));
}

impl Session {
    /// A session for a new connection over `transport`.
    pub fn new(node: Arc<Node>, transport: Transport) -> Session {
        let limits = &node.session_limits();
        let outbox = Arc::new(Outbox::new(limits.outbox_capacity));
        let connection = node
            .connections()
            .open(transport, outbox, node.telemetry().clone());
        let gate = MessageGate::new(
            limits.client_messages,
            limits.max_rate_limited,
            Instant::now(),
        );
        Session {
            subscriptions: Subscriptions::new(
                node.hub().clone(),
                connection,
                node.session_limits().max_subscriptions,
            ),
            node,
            identity: None,
            bad_messages: 0,
            unwritten: Vec::new(),
            gate,
            gate_app: false,
            users: Vec::new(),
            calls: calls::InFlight::default(),
            backend: backend_subs::BackendSubs::default(),
            client_calls: crate::user_calls::OpenCalls::default(),
            lattices: lattices::LatticeSubs::default(),
            notifications_off: false,
        }
    }

    /// The queue of live frames for this connection.
    pub fn outbox(&self) -> &Arc<Outbox> {
        self.subscriptions.outbox()
    }

    /// The connection's identity, once a `connect` succeeded.
    pub fn identity(&self) -> Option<&Identity> {
        self.identity.as_deref()
    }

    /// Active subscriptions.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.count()
    }

    /// Now, with the leeway tokens get (config `[tokens] leeway`).
    fn token_clock(&self) -> TokenClock {
        TokenClock {
            now: unix_now(),
            leeway: self.node.session_limits().token_leeway,
        }
    }

    /// The app `id` names, or the `unknown_app` error appended to `out`.
    /// App ids are no secret on the public listener (every page's
    /// subscribe message carries one), so the protocol's code is given.
    fn app(&self, id: &str, reference: Option<&str>, out: &mut Vec<Bytes>) -> Option<Arc<App>> {
        let app = self.node.apps().get(id).cloned();
        if app.is_none() {
            let ctx = ErrorContext {
                reference,
                ..ErrorContext::default()
            };
            self.error(out, ErrorCode::UnknownApp, "unknown app", ctx);
        }
        app
    }

    fn error(&self, out: &mut Vec<Bytes>, code: ErrorCode, message: &str, ctx: ErrorContext<'_>) {
        error(self.node.telemetry(), out, code, message, ctx);
    }

    /// Handles one client text message, appending replies to `out`. The
    /// rate is checked first, before any parsing, so a flood costs little.
    pub async fn handle(&mut self, text: &str, out: &mut Vec<Bytes>) -> Verdict {
        let limits = &self.node.session_limits();
        match self.gate.admit(Instant::now()) {
            Gate::Pass => {}
            Gate::Refuse => {
                self.node.limiters().counters.hit(Limit::ClientMessages);
                let why = "too many messages: slow down";
                self.error(out, ErrorCode::RateLimited, why, ErrorContext::default());
                return Verdict::Continue;
            }
            Gate::Close => {
                self.node.limiters().counters.hit(Limit::ClientMessages);
                return Verdict::Close(CloseCode::PolicyViolation, ABUSE_CLOSE_REASON);
            }
        }
        if text.len() > limits.max_message_bytes {
            self.node.limiters().counters.hit(Limit::MessageSize);
            let limit = limits.max_message_bytes;
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
                    self.subscriptions.drop_channel(name);
                }
                out.push(server::ack(reference, None));
            }
            ClientBody::Connect(c) => self.connect(c, reference, out),
            ClientBody::Call(call) => {
                let caller = calls::Caller {
                    node: &self.node,
                    identity: self.identity.as_ref(),
                    outbox: self.subscriptions.outbox(),
                    in_flight: &self.calls,
                };
                calls::start(caller, call, reference, out);
            }
            ClientBody::Publish(raw) => return self.publish(&raw, reference, out).await,
            ClientBody::Result(result) => self.call_result(result),
            ClientBody::Error(error) => return self.call_error(error, reference, out),
            ClientBody::LatticeSubscribe(l) => {
                self.lattice_subscribe(&l.namespace, reference, out).await;
            }
            ClientBody::LatticeUnsubscribe(l) => {
                self.lattice_unsubscribe(&l.namespace, reference, out);
            }
            ClientBody::NotificationAck(a) => self.notification_ack(a.ids, reference, out).await,
            ClientBody::Message(raw) => return self.message(&raw, reference, out).await,
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
        if self.bad_messages > self.node.session_limits().max_bad_messages {
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
        let Some(app) = self.app(&c.app_id, reference, out) else {
            return;
        };
        let identity = match identify(&app, &c.token, self.token_clock()) {
            Ok(identity) => identity,
            Err(r) => return self.error(out, r.code, &r.message, ctx),
        };
        // Only a verified token may set the connection's rate: a junk token
        // naming the most lenient app must not get that app's rate.
        self.hold_app(&app);
        if let Err(r) = self.hold_user(&app, &identity.user) {
            return self.error(out, r.code, &r.message, ctx);
        }
        self.set_identity(Some(Arc::new(identity)), out);
        out.push(server::ack(reference, None));
        // The identity may bring existing subscriptions into a switch's scope.
        self.apply_switches(out);
    }

    /// Handles a subscribe (also built by transports that take tokens in
    /// their URL, such as SSE and long-polling).
    pub async fn subscribe(
        &mut self,
        s: Subscribe,
        reference: Option<&str>,
        out: &mut Vec<Bytes>,
    ) -> Verdict {
        let Some(app) = self.app(&s.app_id, reference, out) else {
            return Verdict::Continue;
        };
        let mut acked = BTreeMap::new();
        for (name, request) in &s.channels {
            match self.subscribe_channel(&app, name, request, out).await {
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

    /// One channel of a subscribe: what its token grants, then the
    /// subscription registered, then the client caught up.
    async fn subscribe_channel(
        &mut self,
        app: &App,
        name: &str,
        request: &ChannelRequest,
        out: &mut Vec<Bytes>,
    ) -> Result<AckChannel, Refusal> {
        let grant = authorize(app, name, &request.filters, self.token_clock())?;
        let filter = grant.filter.clone();
        let channel = ChannelId::new(&app.id, name);
        let slot = self.register(app, channel.clone(), grant)?;
        self.recover(app, slot, &channel, &filter, request, out)
            .await
    }

    /// Counts the connection for the app and the token's user, replaces a
    /// subscription to the same channel name, and registers the new one
    /// (subscription limit, kill switches, hub); returns its slot.
    fn register(&mut self, app: &App, channel: ChannelId, grant: Grant) -> Result<u32, Refusal> {
        self.hold_app(app);
        if let Some(user) = grant.user.as_deref() {
            self.hold_user(app, user)?;
        }
        self.subscriptions.drop_channel(&channel.name);
        let max = app.limits.max_subscriptions;
        let identity = self.identity.as_deref();
        // Present as the `connect` identity, else as the token's `sub`.
        let present_as = app.channel_policy(&channel.name).presence.then(|| {
            identity
                .map(|i| Box::from(i.user.as_str()))
                .or_else(|| grant.user.clone())
        });
        let registered =
            self.subscriptions
                .register(channel, grant, max, identity, self.node.switches());
        if let (Ok(slot), Some(user)) = (&registered, present_as) {
            self.subscriptions.take_seat(*slot, user.as_deref());
        }
        registered.map_err(|e| {
            let code = match e {
                RegisterError::TooMany(_) => {
                    self.node.limiters().counters.hit(Limit::Subscriptions);
                    ErrorCode::TooManySubscriptions
                }
                RegisterError::Disabled(_) => {
                    self.node.telemetry().disabled_refusal();
                    ErrorCode::Disabled
                }
            };
            Refusal::new(code, e.to_string())
        })
    }

    /// Reads the history (resume) or last state (fresh subscribe) of the
    /// subscription in `slot` and appends what the client is owed; releases
    /// the subscription if the broker cannot answer.
    async fn recover(
        &mut self,
        app: &App,
        slot: u32,
        channel: &ChannelId,
        filter: &Filter,
        request: &ChannelRequest,
        out: &mut Vec<Bytes>,
    ) -> Result<AckChannel, Refusal> {
        let policy = app.channel_policy(&channel.name);
        let since = request.since.as_ref().map(|s| (s.epoch.as_str(), s.offset));
        let asked = Instant::now();
        let broker = &self.node.broker();
        let recovered = broker
            .recover(channel, policy, since, since.is_none())
            .await;
        let telemetry = &self.node.telemetry();
        telemetry.broker_call(BrokerOp::Recover, asked.elapsed());
        let recovered = recovered.map_err(|e| {
            self.subscriptions.release(slot);
            // The detail is for operators; the client gets a fixed message.
            tracing::warn!(%channel, error = %e, "subscribe refused: the broker cannot recover");
            Refusal::new(ErrorCode::Unavailable, UNAVAILABLE_MESSAGE)
        })?;
        let present = match policy.presence {
            true => Some(self.present(slot, channel).await?),
            false => None,
        };
        let how = (since.is_some(), policy.notify_only);
        recovery::catch_up(&channel.name, &recovered, filter, how, out);
        out.extend(present);
        let (epoch, top) = (recovered.epoch, recovered.top);
        self.subscriptions.recovered(slot, epoch.clone(), top);
        Ok(AckChannel {
            epoch: epoch.to_string(),
            offset: top,
            recovered: since.is_some() && !recovered.gap,
        })
    }

    /// The `present` list of a presence channel, for the subscription in
    /// `slot` (already a listener, so no change after the read is missed);
    /// releases the subscription if the broker cannot answer.
    async fn present(&mut self, slot: u32, channel: &ChannelId) -> Result<Bytes, Refusal> {
        match self.node.broker().present(channel).await {
            Ok(users) => Ok(crate::presence::present_frame(&channel.name, users)),
            Err(e) => {
                self.subscriptions.release(slot);
                tracing::warn!(%channel, error = %e, "subscribe refused: presence unreadable");
                Err(Refusal::new(ErrorCode::Unavailable, UNAVAILABLE_MESSAGE))
            }
        }
    }

    /// The first app a connection uses sets its client-message rate; called
    /// only once a token of that app is verified (connect, subscribe).
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
        let limiters = &self.node.limiters();
        if !limiters.users.acquire(&app.id, user, max) {
            limiters.counters.hit(Limit::ConnectionsPerUser);
            return Err(Refusal::new(
                ErrorCode::RateLimited,
                format!("this user already holds {max} connections"),
            ));
        }
        self.users.push((app.id.clone(), user.into()));
        Ok(())
    }

    /// Ends every subscription a switch in force covers, each with a
    /// `reset` reason `disabled` naming its channel.
    pub fn apply_switches(&mut self, out: &mut Vec<Bytes>) {
        let telemetry = &self.node.telemetry();
        let identity = self.identity.as_deref();
        self.subscriptions
            .end_switched(self.node.switches(), identity, |channel| {
                telemetry.disabled_reset();
                out.push(server::reset(Some(&channel.name), ResetReason::Disabled));
            });
        self.notification_switch(out);
    }

    /// Whether a live frame from the outbox should be written (drops what
    /// recovery already delivered, and frames of ended subscriptions).
    pub fn admit(&mut self, item: &Outbound) -> bool {
        self.subscriptions.admit(item)
    }

    /// Handles the outbox's signals, then moves up to `max` live frames that
    /// are new to their subscription from the outbox into `out`; returns how
    /// many frames were taken or produced (`reset`s of switched-off channels).
    pub fn take_live(&mut self, out: &mut Vec<Bytes>, max: usize) -> Result<usize, Stop> {
        let before = out.len();
        self.signalled(out)?;
        let mut taken = out.len() - before;
        let unwritten = &mut self.unwritten;
        let (mut ended, mut duplicates) = (0, 0);
        let (state, depth) = self.subscriptions.drain(max, |item, admission| {
            taken += 1;
            match admission {
                Admission::New => {
                    // A call's answer or a presence frame is no
                    // publication: no publish-to-write latency.
                    if item.slot != crate::outbox::NO_SLOT
                        && item.offset != crate::presence::PRESENCE
                    {
                        unwritten.push(item.received);
                    }
                    out.push(item.frame);
                }
                Admission::Duplicate => duplicates += 1,
                Admission::Ended => ended += 1,
            }
        });
        let telemetry = &self.node.telemetry();
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

    /// Acts on the outbox's signals: a disconnect stops the connection; a
    /// switch change ends what it covers; broker link changes are told to
    /// clients that hold subscriptions.
    fn signalled(&mut self, out: &mut Vec<Bytes>) -> Result<(), Stop> {
        let connection = self.subscriptions.connection();
        let signals = connection.outbox().take_signals();
        if signals & SIGNAL_DISCONNECT != 0 {
            return Err(Stop::Disconnected(connection.disconnect_reason()));
        }
        if connection.mail_overflowed() {
            return Err(Stop::Overflowed);
        }
        if signals & SIGNAL_USER != 0 && connection.has_mail() {
            // Posted after the driver last looked: wake it again for
            // `read_mail` rather than leave the command waiting.
            connection.outbox().signal(SIGNAL_USER);
        }
        if signals & SIGNAL_SWITCHES != 0 {
            self.apply_switches(out);
        }
        let link = [
            (SIGNAL_BROKER_LOST, ResetReason::BrokerUnavailable),
            (SIGNAL_BROKER_RESTORED, ResetReason::BrokerRestored),
        ];
        if signals & SIGNAL_BROKER_RESTORED != 0 {
            self.reload_lattices_later();
        }
        for (signal, reason) in link {
            let holds = self.subscriptions.count() > 0 || self.lattices.any();
            if signals & signal != 0 && holds {
                self.node.telemetry().link.reset_sent();
                out.push(server::reset(None, reason));
            }
        }
        Ok(())
    }

    /// The transport wrote (`ok`) or failed to write the frames
    /// [`Session::take_live`] handed out since the last call: records their
    /// publish-to-write latency with one clock read, or counts them as
    /// `write_failed` drops.
    pub fn written(&mut self, ok: bool) {
        if self.unwritten.is_empty() {
            return;
        }
        let telemetry = &self.node.telemetry();
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
    pub fn positions(&self) -> impl Iterator<Item = ResumePoint> + use<> {
        self.subscriptions.positions().into_iter()
    }

    /// Keeps where a channel the session does not hold stood (see
    /// [`Subscriptions::keep`]), so it stays in [`Session::positions`].
    pub fn keep_position(&mut self, point: ResumePoint) {
        self.subscriptions.keep(point);
    }

    /// When the next token stops holding (its `exp` plus the leeway), in
    /// seconds since the Unix epoch: a subscription's, or the `connect`
    /// identity's. The transport calls [`Session::expire`] then.
    pub fn next_expiry(&self) -> Option<u64> {
        let identity = self.identity.as_deref().and_then(|i| i.exp);
        let leeway = self.node.session_limits().token_leeway;
        [self.subscriptions.next_expiry(), identity]
            .into_iter()
            .flatten()
            .min()
            .map(|exp| exp.saturating_add(leeway))
    }

    /// Ends what a token expired at `now` held, each with `token_expired`:
    /// every such subscription (the error names its channel), and the
    /// `connect` identity (the error names no channel; the connection stays
    /// open, its subscriptions go on, and a new `connect` gives it an
    /// identity again).
    pub fn expire(&mut self, now: u64, out: &mut Vec<Bytes>) {
        let clock = TokenClock {
            now,
            leeway: self.node.session_limits().token_leeway,
        };
        self.expire_identity(clock, out);
        let telemetry = &self.node.telemetry();
        let ended_before = now.saturating_sub(clock.leeway);
        self.subscriptions.end_expired(ended_before, |channel| {
            let ctx = ErrorContext {
                channel: Some(&channel.name),
                ..ErrorContext::default()
            };
            let why = "subscription token expired";
            error(telemetry, out, ErrorCode::TokenExpired, why, ctx);
        });
    }

    /// Drops the `connect` identity once its token no longer holds.
    fn expire_identity(&mut self, clock: TokenClock, out: &mut Vec<Bytes>) {
        let expired = self
            .identity
            .as_deref()
            .and_then(|i| i.exp)
            .is_some_and(|exp| clock.expired(exp));
        if !expired {
            return;
        }
        let why = "connect token expired: send a new connect";
        self.error(out, ErrorCode::TokenExpired, why, ErrorContext::default());
        // After the error: the backend subscriptions it ends follow it.
        self.set_identity(None, out);
    }

    /// Leaves every channel; the session is done.
    pub fn end(&mut self) {
        if let Some(identity) = self.identity.take() {
            let transport = self.subscriptions.connection().transport();
            self.node.devices().disconnected(&identity, transport);
        }
        self.end_lattices();
        self.subscriptions.outbox().close();
        self.subscriptions.end();
        self.node
            .connections()
            .close(self.subscriptions.connection());
        for (app, user) in self.users.drain(..) {
            self.node.limiters().users.release(&app, &user);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.end();
    }
}
