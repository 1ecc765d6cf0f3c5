//! The ingest pipeline: the one way events from any source get published.
//!
//! A source submits events in groups, its unit of all-or-nothing: an HTTP
//! request is one group, a Redis inbox entry another. [`submit`] looks each
//! event's app up once, checks that the [`Caller`] may publish for it,
//! takes the app's publish tokens (unless the caller is exempt), validates
//! every event, then hands consecutive events of one channel, across groups,
//! to the broker in one call, timed and counted. It answers an [`Outcome`]
//! per event, so a source can set one bad group aside and carry on.
//!
//! What a refusal does (the same for every source):
//! - Before publishing (unknown app, wrong key, rate, invalid event), a
//!   refused event refuses its whole group: nothing of it is published.
//!   The checks run in that order over the whole group, so the first
//!   failing check names the event.
//! - A channel refusing an event (a bound hit, too many channels) refuses
//!   the rest of its group; its earlier events stay published.
//! - Other groups go on, except that a rate-limited group holds back every
//!   group after it ([`Skipped::HeldBack`]), so that a source retrying them
//!   later keeps their order.
//! - A broker that becomes unavailable stops everything: nothing after it
//!   is attempted, and [`Report::unavailable`] says why.

use std::time::Instant;

use crate::app::App;
use crate::broker::{BrokerError, PublishFailure};
use crate::history::LogError;
use crate::limits::{Limit, Limited};
use crate::node::Node;
use crate::publication::{ChannelId, EventError, NewEvent, Position, channel_runs};
use crate::telemetry::BrokerOp;

/// On whose authority events are submitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller<'a> {
    /// A backend presenting this API key: it must be the key of every
    /// event's app. The app's publish rate applies.
    Backend(&'a str),
    /// A source the gateway consumes itself (the Redis inbox, ...): trusted
    /// with every app, but the app's publish rate applies.
    Source,
    /// An operator already authorized by the admin key, or the gateway's own
    /// code (the demo): trusted, and not rate limited.
    Trusted,
    /// A client connection whose `connect` identity is `user` of `app`, its
    /// `publish` claim already checked (`session::publish`): every event
    /// must be of `app`; the user's `client_publishes` rate applies, then
    /// the app's publish rate.
    Client {
        /// The identity's app.
        app: &'a str,
        /// The identity's user.
        user: &'a str,
    },
}

impl Caller<'_> {
    fn rate_limited(self) -> bool {
        !matches!(self, Caller::Trusted)
    }
}

/// Why an event was refused; its group is refused with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The event names an app that is not configured (the name, cut to 64
    /// characters). Only trusted callers and sources are told: a backend
    /// gets [`Refusal::WrongKey`] instead, so app ids cannot be listed
    /// without credentials.
    #[error("unknown app `{0}`")]
    UnknownApp(String),
    /// The caller's API key is not the app's, or (for a backend) the app does
    /// not exist: the two are indistinguishable on purpose.
    #[error("unknown app or wrong API key")]
    WrongKey,
    /// The app publishes faster than its `publishes_per_second`.
    #[error("app `{app}` publishes faster than its limit")]
    RateLimited {
        /// The app over its limit.
        app: String,
        /// When its tokens are back.
        limited: Limited,
    },
    /// A client's user publishes faster than its app's
    /// `client_publishes_per_second`.
    #[error("this user publishes faster than its limit")]
    UserRateLimited {
        /// When its tokens are back.
        limited: Limited,
    },
    /// A field is out of its bounds.
    #[error(transparent)]
    Invalid(#[from] EventError),
    /// The channel refused it (a bound was hit); earlier events of the
    /// group stay published.
    #[error(transparent)]
    Channel(#[from] LogError),
    /// The node already tracks its maximum number of channels.
    #[error("too many channels (limit {0})")]
    TooManyChannels(usize),
}

impl Refusal {
    /// Whether the broker refused it (after earlier events of its group may
    /// have been published), rather than a check before publishing.
    pub fn by_broker(&self) -> bool {
        matches!(self, Refusal::Channel(_) | Refusal::TooManyChannels(_))
    }
}

/// Why an event was not attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skipped {
    /// Another event of its group was refused.
    GroupRefused,
    /// An earlier group was rate limited.
    HeldBack,
    /// The broker became unavailable before its turn.
    Unavailable,
}

/// What became of one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Published at this position (the first one's, marked `duplicate`,
    /// when its `id` had been published already).
    Published(Position),
    /// Refused, and its group with it.
    Refused(Refusal),
    /// Not attempted.
    NotAttempted(Skipped),
}

/// What [`submit`] did: an outcome per event, in the groups' shape.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Per group, per event, in submission order.
    pub groups: Vec<Vec<Outcome>>,
    /// Why the broker stopped the submission, if it became unavailable.
    pub unavailable: Option<BrokerError>,
}

/// Why a one-group publish ([`publish`]) did not go through whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// Event `index` was refused; `published` went out before it (only
    /// when the broker refused it).
    #[error("event {index}: {refusal}")]
    Refused {
        /// Position in the batch.
        index: usize,
        /// Why.
        refusal: Refusal,
        /// Positions of the events published before it.
        published: Vec<Position>,
    },
    /// The broker is unavailable; `published` went out before it failed.
    #[error("{error} (after {} published)", published.len())]
    Unavailable {
        /// The broker's error.
        error: BrokerError,
        /// Positions of the events published before it failed.
        published: Vec<Position>,
    },
}

/// Publishes `events` as one group (an HTTP request, the demo): all of
/// them, in order, or the reason why not.
pub async fn publish(
    node: &Node,
    caller: Caller<'_>,
    events: Vec<NewEvent>,
) -> Result<Vec<Position>, PublishError> {
    let mut report = submit(node, caller, vec![events]).await;
    let outcomes = report.groups.pop().unwrap_or_default();
    let mut published = Vec::with_capacity(outcomes.len());
    for (index, outcome) in outcomes.into_iter().enumerate() {
        match outcome {
            Outcome::Published(position) => published.push(position),
            Outcome::Refused(refusal) => {
                return Err(PublishError::Refused {
                    index,
                    refusal,
                    published,
                });
            }
            // Behind the refused event, or stopped by the broker.
            Outcome::NotAttempted(_) => {}
        }
    }
    match report.unavailable {
        Some(error) => Err(PublishError::Unavailable { error, published }),
        None => Ok(published),
    }
}

/// Publishes every group it may, in order (see the module docs for what a
/// refusal does); says per event what happened.
pub async fn submit(node: &Node, caller: Caller<'_>, groups: Vec<Vec<NewEvent>>) -> Report {
    let mut tally = Tally::new(&groups);
    let admitted = admit_all(node, caller, groups, &mut tally, Instant::now());
    measure_skew(node, &admitted);
    for (channel, run) in channel_runs(admitted, |a| &a.event) {
        if publish_run(node, &channel, run, &mut tally).await.is_err() {
            break;
        }
    }
    tally.finish()
}

/// Measures the clock skew of the devices (keys) of events with a device
/// time (`crate::telemetry::clock_skew`).
fn measure_skew(node: &Node, admitted: &[Admitted<'_>]) {
    let received = crate::device_time::DeviceTime::now();
    for a in admitted {
        if let (Some(time), Some(key)) = (a.event.time, &a.event.key) {
            node.telemetry()
                .clock_skew
                .observe(&a.event.app_id, key, time, received);
        }
    }
}

/// An event that passed every check, with where its outcome goes.
struct Admitted<'a> {
    slot: Slot,
    app: &'a App,
    event: NewEvent,
}

/// Where one event's outcome goes: (group, index in the group).
type Slot = (usize, usize);

/// The outcomes so far.
struct Tally {
    outcomes: Vec<Vec<Option<Outcome>>>,
    refused: Vec<bool>,
    unavailable: Option<BrokerError>,
}

impl Tally {
    fn new(groups: &[Vec<NewEvent>]) -> Tally {
        Tally {
            outcomes: groups.iter().map(|g| vec![None; g.len()]).collect(),
            refused: vec![false; groups.len()],
            unavailable: None,
        }
    }

    fn set(&mut self, (group, index): Slot, outcome: Outcome) {
        if let Some(slot) = self.outcomes.get_mut(group).and_then(|g| g.get_mut(index)) {
            *slot = Some(outcome);
        }
    }

    /// Refuses event `slot`; the events of its group not yet published are
    /// not attempted.
    fn refuse(&mut self, slot: Slot, refusal: Refusal) {
        self.set(slot, Outcome::Refused(refusal));
        self.skip_group(slot.0, Skipped::GroupRefused);
        if let Some(refused) = self.refused.get_mut(slot.0) {
            *refused = true;
        }
    }

    fn skip_group(&mut self, group: usize, why: Skipped) {
        if let Some(outcomes) = self.outcomes.get_mut(group) {
            for outcome in outcomes.iter_mut().filter(|o| o.is_none()) {
                *outcome = Some(Outcome::NotAttempted(why));
            }
        }
    }

    fn is_refused(&self, group: usize) -> bool {
        self.refused.get(group).copied().unwrap_or(false)
    }

    /// The report; events left without an outcome are those the broker's
    /// unavailability stopped.
    fn finish(self) -> Report {
        let groups = self
            .outcomes
            .into_iter()
            .map(|g| {
                g.into_iter()
                    .map(|o| o.unwrap_or(Outcome::NotAttempted(Skipped::Unavailable)))
                    .collect()
            })
            .collect();
        Report {
            groups,
            unavailable: self.unavailable,
        }
    }
}

/// Checks every group in order; returns the events of those admitted,
/// flattened. A rate-limited group holds back those after it.
fn admit_all<'a>(
    node: &'a Node,
    caller: Caller<'_>,
    groups: Vec<Vec<NewEvent>>,
    tally: &mut Tally,
    now: Instant,
) -> Vec<Admitted<'a>> {
    let mut admitted = Vec::with_capacity(groups.iter().map(Vec::len).sum());
    let mut apps: Vec<&App> = Vec::new();
    let mut held = false;
    for (group, events) in groups.into_iter().enumerate() {
        if held {
            tally.skip_group(group, Skipped::HeldBack);
            continue;
        }
        apps.clear();
        match admit(node, caller, &events, &mut apps, now) {
            Ok(()) => admitted.extend(events.into_iter().zip(apps.iter()).enumerate().map(
                |(index, (event, app))| Admitted {
                    slot: (group, index),
                    app,
                    event,
                },
            )),
            Err((index, refusal)) => {
                held = matches!(
                    refusal,
                    Refusal::RateLimited { .. } | Refusal::UserRateLimited { .. }
                );
                tally.refuse((group, index), refusal);
            }
        }
    }
    admitted
}

/// The checks before publishing one group, in order: apps and key, rate,
/// fields. Fills `apps` with each event's app; the first refusal with the
/// index of the event it names.
fn admit<'a>(
    node: &'a Node,
    caller: Caller<'_>,
    events: &[NewEvent],
    apps: &mut Vec<&'a App>,
    now: Instant,
) -> Result<(), (usize, Refusal)> {
    for (index, event) in events.iter().enumerate() {
        let Some(app) = node.apps().get(&event.app_id) else {
            // A backend is authenticated before it learns anything about
            // which apps exist: an unknown app reads as a wrong key.
            if let Caller::Backend(_) = caller {
                return Err((index, Refusal::WrongKey));
            }
            let name = event.app_id.chars().take(64).collect();
            return Err((index, Refusal::UnknownApp(name)));
        };
        let allowed = match caller {
            Caller::Backend(key) => app.accepts_api_key(key),
            Caller::Client { app: own, .. } => *app.id == *own,
            Caller::Source | Caller::Trusted => true,
        };
        if !allowed {
            return Err((index, Refusal::WrongKey));
        }
        apps.push(app);
    }
    if let Caller::Client { app, user } = caller {
        take_client_tokens(node, app, user, events.len(), now)?;
    }
    if caller.rate_limited() {
        take_publish_tokens(node, events, now)?;
    }
    let max_data = node.max_data_bytes();
    for (index, event) in events.iter().enumerate() {
        event.validate().map_err(|e| (index, e.into()))?;
        let size = event.data.get().len();
        if size > max_data {
            let too_large = EventError::DataTooLarge {
                size,
                max: max_data,
            };
            return Err((index, too_large.into()));
        }
    }
    Ok(())
}

/// Takes each app's publish tokens for its events in the group (every event
/// counts); the refusal names the app's first event.
fn take_publish_tokens(
    node: &Node,
    events: &[NewEvent],
    now: Instant,
) -> Result<(), (usize, Refusal)> {
    let mut per_app: Vec<(usize, &str, u32)> = Vec::new();
    for (index, event) in events.iter().enumerate() {
        match per_app.iter_mut().find(|(_, app, _)| *app == event.app_id) {
            Some((_, _, n)) => *n = n.saturating_add(1),
            None => per_app.push((index, &event.app_id, 1)),
        }
    }
    let limiters = &node.limiters();
    for (index, app, n) in per_app {
        if let Err(limited) = limiters.publish(app, n, now) {
            limiters.counters.hit(Limit::Publishes);
            let app = app.to_string();
            return Err((index, Refusal::RateLimited { app, limited }));
        }
    }
    Ok(())
}

/// Takes one of `user`'s client publish tokens per event; the refusal
/// names the first event.
fn take_client_tokens(
    node: &Node,
    app: &str,
    user: &str,
    events: usize,
    now: Instant,
) -> Result<(), (usize, Refusal)> {
    let limiters = &node.limiters();
    for _ in 0..events {
        if let Err(limited) = limiters.client_publish(app, user, now) {
            limiters.counters.hit(Limit::ClientPublishes);
            return Err((0, Refusal::UserRateLimited { limited }));
        }
    }
    Ok(())
}

/// The broker stopped the submission: it is unavailable.
struct Stopped;

/// Publishes one channel's run. A refused event refuses the rest of its
/// group; the run goes on with the next group's events.
async fn publish_run(
    node: &Node,
    channel: &ChannelId,
    mut run: Vec<Admitted<'_>>,
    tally: &mut Tally,
) -> Result<(), Stopped> {
    run.retain(|a| !tally.is_refused(a.slot.0));
    let Some(first) = run.first() else {
        return Ok(());
    };
    let policy = first.app.channel_policy(&channel.name);
    let (mut slots, mut events): (Vec<Slot>, Vec<NewEvent>) =
        run.into_iter().map(|a| (a.slot, a.event)).unzip();
    while !events.is_empty() {
        let asked = Instant::now();
        let result = node.broker().publish(channel, policy, events).await;
        node.telemetry()
            .broker_call(BrokerOp::Publish, asked.elapsed());
        let (positions, failure) = match result {
            Ok(positions) => (positions, None),
            Err(PublishFailure {
                published,
                error,
                rest,
            }) => (published, Some((error, rest))),
        };
        let fresh = positions.iter().filter(|p| !p.duplicate).count();
        node.telemetry().published_on(channel, fresh);
        let done = positions.len();
        for (slot, position) in slots.iter().zip(positions) {
            tally.set(*slot, Outcome::Published(position));
        }
        let Some((error, rest)) = failure else {
            return Ok(());
        };
        let refused = match error {
            BrokerError::Refused(e) => Refusal::Channel(e),
            BrokerError::TooManyChannels(limit) => Refusal::TooManyChannels(limit),
            unavailable => {
                tally.unavailable = Some(unavailable);
                return Err(Stopped);
            }
        };
        let Some(&slot) = slots.get(done) else {
            return Ok(());
        };
        tally.refuse(slot, refused);
        (slots, events) = slots
            .into_iter()
            .skip(done + 1)
            .zip(rest)
            .filter(|((group, _), _)| *group != slot.0)
            .unzip();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::app::{App, Apps, ChannelPolicy};
    use crate::broker::MemoryBroker;
    use crate::hub::Hub;
    use crate::limits::{Limiters, Rate};
    use crate::node::NodeParts;
    use crate::telemetry::Telemetry;

    fn node(publishes: Rate, policy: ChannelPolicy, max_channels: usize) -> Node {
        let telemetry = Arc::new(Telemetry::default());
        let hub = Arc::new(Hub::new(telemetry.clone()));
        let app = App {
            id: "a".into(),
            secrets: vec![b"secret".to_vec()],
            api_key: Some("key".into()),
            allow_no_exp: false,
            default_channel: policy,
            channels: Default::default(),
            limits: Default::default(),
            notifications: Default::default(),
            messages: Default::default(),
        };
        let limiters = Limiters::new(
            Rate::new(0, 1),
            16,
            [(Arc::from("a"), publishes)],
            Instant::now(),
        );
        Node::new(NodeParts {
            id: "test".into(),
            apps: Apps::new(vec![app]),
            hub: hub.clone(),
            broker: Arc::new(MemoryBroker::new(hub, max_channels)),
            telemetry,
            limits: Default::default(),
            max_data_bytes: 1024,
            switches: Vec::new(),
            limiters,
        })
    }

    fn plain() -> Node {
        node(Rate::new(0, 1), ChannelPolicy::default(), 100)
    }

    fn event(channel: &str, key: Option<&str>) -> NewEvent {
        NewEvent {
            app_id: "a".into(),
            channel: channel.into(),
            event_kind: "k".into(),
            keywords: Vec::new(),
            key: key.map(Into::into),
            data: serde_json::value::RawValue::NULL.to_owned(),
            id: None,
            time: None,
        }
    }

    fn offsets(outcomes: &[Outcome]) -> Vec<Option<u64>> {
        outcomes
            .iter()
            .map(|o| match o {
                Outcome::Published(p) => Some(p.offset),
                _ => None,
            })
            .collect()
    }

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn every_group_is_published_in_order_one_broker_call_per_channel_run() {
        let node = plain();
        let groups = vec![
            vec![event("c", None), event("c", None)],
            vec![event("c", None), event("d", None)],
        ];
        let report = block_on(submit(&node, Caller::Source, groups));
        assert!(report.unavailable.is_none());
        assert_eq!(offsets(&report.groups[0]), [Some(1), Some(2)]);
        assert_eq!(offsets(&report.groups[1]), [Some(3), Some(1)]);
        assert_eq!(node.telemetry().stats().publications_total, 4);
    }

    #[test]
    fn a_bad_event_refuses_its_group_only_and_the_checks_keep_their_order() {
        let node = plain();
        let mut unknown = event("c", None);
        unknown.app_id = "nope".into();
        let invalid = event("has space", None);
        let groups = vec![
            vec![event("c", None), invalid.clone(), unknown.clone()],
            vec![event("c", None)],
            vec![invalid],
        ];
        let first = groups[0].clone();
        let report = block_on(submit(&node, Caller::Trusted, groups));
        // Apps are checked over the whole group before fields.
        assert_eq!(
            report.groups[0],
            [
                Outcome::NotAttempted(Skipped::GroupRefused),
                Outcome::NotAttempted(Skipped::GroupRefused),
                Outcome::Refused(Refusal::UnknownApp("nope".into())),
            ]
        );
        // A backend is not told the app does not exist: it reads as a wrong key.
        let backend = block_on(submit(&node, Caller::Backend("key"), vec![first]));
        assert_eq!(backend.groups[0][2], Outcome::Refused(Refusal::WrongKey));
        assert_eq!(offsets(&report.groups[1]), [Some(1)]);
        assert!(matches!(
            report.groups[2][0],
            Outcome::Refused(Refusal::Invalid(EventError::BadName("channel")))
        ));
    }

    #[test]
    fn data_over_the_nodes_bound_is_refused_from_every_caller() {
        let node = plain();
        let mut big = event("c", None);
        let json = format!("\"{}\"", "x".repeat(1100));
        big.data = serde_json::value::RawValue::from_string(json).expect("valid JSON");
        match block_on(publish(&node, Caller::Trusted, vec![event("c", None), big])) {
            Err(PublishError::Refused {
                index: 1,
                refusal:
                    Refusal::Invalid(EventError::DataTooLarge {
                        size: 1102,
                        max: 1024,
                    }),
                published,
            }) => assert!(published.is_empty()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_one_group_publish_names_the_refused_event_and_publishes_nothing() {
        let node = plain();
        let batch = vec![event("c", None), event("c", None), event("has space", None)];
        match block_on(publish(&node, Caller::Trusted, batch)) {
            Err(PublishError::Refused {
                index: 2,
                refusal: Refusal::Invalid(_),
                published,
            }) => assert!(published.is_empty()),
            other => panic!("{other:?}"),
        }
        assert_eq!(node.telemetry().stats().publications_total, 0);
    }

    #[test]
    fn a_backend_needs_the_apps_key_and_others_do_not() {
        let node = plain();
        for (caller, refused) in [
            (Caller::Backend("wrong"), true),
            (Caller::Backend("key"), false),
            (Caller::Source, false),
            (Caller::Trusted, false),
        ] {
            let result = block_on(publish(&node, caller, vec![event("c", None)]));
            assert_eq!(
                matches!(
                    result,
                    Err(PublishError::Refused {
                        index: 0,
                        refusal: Refusal::WrongKey,
                        ..
                    })
                ),
                refused,
                "{caller:?}: {result:?}"
            );
        }
    }

    #[test]
    fn every_event_takes_a_token_and_a_limited_group_holds_back_the_next() {
        let node = node(Rate::new(1, 3), ChannelPolicy::default(), 100);
        let groups = vec![
            vec![event("c", None), event("c", None)],
            vec![event("c", None), event("c", None)],
            vec![event("c", None)],
        ];
        let report = block_on(submit(&node, Caller::Source, groups));
        assert_eq!(offsets(&report.groups[0]), [Some(1), Some(2)]);
        match &report.groups[1][..] {
            [
                Outcome::Refused(Refusal::RateLimited { app, limited }),
                second,
            ] => {
                assert_eq!(app, "a");
                assert!(limited.retry_after > std::time::Duration::ZERO);
                assert_eq!(*second, Outcome::NotAttempted(Skipped::GroupRefused));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(report.groups[2], [Outcome::NotAttempted(Skipped::HeldBack)]);
        assert_eq!(node.limiters().counters.get(Limit::Publishes), 1);
        // The refused group took no token: one is left for one event.
        let one = block_on(publish(
            &node,
            Caller::Backend("key"),
            vec![event("c", None)],
        ));
        assert_eq!(one.map(|p| p.len()), Ok(1));
        // Trusted callers are not limited.
        let many = vec![event("c", None); 5];
        assert!(block_on(publish(&node, Caller::Trusted, many)).is_ok());
    }

    #[test]
    fn a_channel_refusal_stops_its_group_and_the_run_goes_on_with_the_next() {
        let policy = ChannelPolicy {
            keep_state: true,
            max_state_keys: 1,
            ..ChannelPolicy::default()
        };
        let node = node(Rate::new(0, 1), policy, 100);
        let groups = vec![
            vec![
                event("c", Some("k1")),
                event("c", Some("k2")),
                event("c", None),
                event("d", None),
            ],
            vec![event("c", None)],
        ];
        let report = block_on(submit(&node, Caller::Source, groups));
        assert_eq!(offsets(&report.groups[0]), [Some(1), None, None, None]);
        assert_eq!(
            report.groups[0][1],
            Outcome::Refused(Refusal::Channel(LogError::StateFull(1)))
        );
        assert_eq!(
            report.groups[0][2..],
            [const { Outcome::NotAttempted(Skipped::GroupRefused) }; 2]
        );
        assert_eq!(offsets(&report.groups[1]), [Some(2)]);
        // One group alone: the error names the event and what went out.
        let batch = vec![event("c", None), event("c", Some("k3")), event("c", None)];
        match block_on(publish(&node, Caller::Trusted, batch)) {
            Err(PublishError::Refused {
                index: 1,
                refusal,
                published,
            }) => {
                assert!(refusal.by_broker());
                assert_eq!(published.len(), 1);
                assert_eq!(published[0].offset, 3);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn too_many_channels_is_a_refusal_of_that_group() {
        let node = node(Rate::new(0, 1), ChannelPolicy::default(), 1);
        let groups = vec![vec![event("c", None)], vec![event("d", None)]];
        let report = block_on(submit(&node, Caller::Source, groups));
        assert_eq!(offsets(&report.groups[0]), [Some(1)]);
        assert_eq!(
            report.groups[1],
            [Outcome::Refused(Refusal::TooManyChannels(1))]
        );
    }

    #[test]
    fn an_id_published_already_answers_its_first_position() {
        let node = plain();
        let mut once = event("c", None);
        once.id = Some("inbox:1-0".into());
        let first = block_on(publish(&node, Caller::Source, vec![once.clone()]));
        let again = block_on(publish(&node, Caller::Source, vec![once]));
        let (first, again) = (first.expect("published"), again.expect("answered"));
        assert_eq!(first[0].offset, again[0].offset);
        assert!(!first[0].duplicate && again[0].duplicate);
        assert_eq!(node.telemetry().stats().publications_total, 1);
    }
}
