//! One connection's subscriptions: the single record of each, and the only
//! code that adds or removes one.
//!
//! A subscription lives in three places that must agree: the session's
//! slot (its cursor, epoch, broker era and token `exp`), the hub's entry
//! (which queues its frames, tagged with the slot's index) and the
//! [`Holder`] the operators' connection registry sees. [`Subscriptions`]
//! keeps them together: [`Subscriptions::register`] creates all three and
//! [`Subscriptions::release`] removes all three; a slot is filled exactly
//! while its hub entry and holder exist. The holder is shared with the
//! connection registry, so a kill-switch check reads it here, without going
//! through the registry's lock.
//!
//! Admitting a live frame ([`Subscriptions::admit`]) is an index lookup by
//! the slot the frame carries: no lock, no allocation.

use std::sync::Arc;

use crate::connections::{Connection, Holder, Identity};
use crate::hub::{Hub, RENUMBERED, SubId, Subscriber};
use crate::outbox::{Marks, NO_SLOT, Outbound, Outbox, RECOVERING, State, Verdict};
use crate::presence::{PRESENCE, Seat};
use crate::publication::ChannelId;
use crate::switches::{Switch, Switches};

use super::ResumePoint;
use super::authorize::Grant;

/// Low bits of a slot tag: the slot's index. The high bits count the
/// index's reuses, so that a frame queued for a subscription that ended is
/// never taken for one of the next subscription in the same slot (frames
/// carry only the tag; the outbox may still hold the old one's).
const INDEX_BITS: u32 = 20;
const INDEX_MASK: u32 = (1 << INDEX_BITS) - 1;
/// Most subscriptions one connection can hold, whatever its limit says:
/// every index is below [`INDEX_MASK`], so no tag is [`NO_SLOT`].
pub const MAX_SLOTS: usize = INDEX_MASK as usize;

fn tag(index: usize, reuses: u16) -> u32 {
    // `index` < MAX_SLOTS: see `free_slot`.
    (index as u32 & INDEX_MASK) | (u32::from(reuses & 0xfff) << INDEX_BITS)
}

fn index_of(tag: u32) -> usize {
    (tag & INDEX_MASK) as usize
}

/// Why a subscription could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The connection holds the app's limit of subscriptions.
    #[error("at most {0} subscriptions per connection")]
    TooMany(usize),
    /// A kill switch in force covers it.
    #[error("switched off by an operator ({0})")]
    Disabled(Switch),
}

/// What becomes of a live frame taken from the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// New to its subscription (or not a channel's event): write it.
    New,
    /// Recovery (or an earlier frame) already covered it, or it is of a
    /// stale broker era.
    Duplicate,
    /// Its subscription has ended.
    Ended,
}

#[derive(Debug)]
struct Slot {
    /// What its frames carry: the index and how many times it was reused.
    tag: u32,
    /// Shared with the connection registry.
    holder: Arc<Holder>,
    sub_id: SubId,
    /// Known once recovery read the channel; `None` while it is pending.
    /// Its cursor and broker era are kept in the outbox's [`Marks`], where
    /// the fan-out reads them too.
    epoch: Option<Arc<str>>,
    exp: Option<u64>,
    /// Its place in the channel's presence, if the channel has presence:
    /// dropped with the slot, whatever ends the subscription.
    seat: Option<Seat>,
}

impl Slot {
    /// Where it stands, given its cursor `last`; none while recovering.
    fn point(&self, last: u64) -> Option<ResumePoint> {
        if last == RECOVERING {
            return None;
        }
        Some(ResumePoint {
            channel: self.holder.channel.clone(),
            epoch: self.epoch.clone()?,
            offset: last,
        })
    }
}

/// One connection's subscriptions, by slot.
#[derive(Debug)]
pub struct Subscriptions {
    hub: Arc<Hub>,
    connection: Arc<Connection>,
    slots: Vec<Option<Slot>>,
    /// Per index, how many times it was reused (wrapping; see [`tag`]).
    reuses: Vec<u16>,
    /// Where subscriptions ended by the gateway (token expiry, a switch)
    /// stood, so a URL transport's cursor still lets them resume once the
    /// client subscribes again. At most one per channel, and at most
    /// `max_ended` (the oldest forgotten first): a WebSocket client that
    /// goes through many channels one token after another would otherwise
    /// grow it for the life of the connection. Such a client tracks its
    /// own positions (`since`); only a URL transport's cursor needs these,
    /// and its request holds fewer channels than the bound.
    ended: Vec<ResumePoint>,
    max_ended: usize,
}

impl Subscriptions {
    /// No subscriptions yet, for `connection` on the node of `hub`,
    /// remembering at most `max_ended` ended positions (the subscription
    /// limit).
    pub fn new(hub: Arc<Hub>, connection: Arc<Connection>, max_ended: usize) -> Subscriptions {
        Subscriptions {
            hub,
            connection,
            slots: Vec::new(),
            reuses: Vec::new(),
            ended: Vec::new(),
            max_ended: max_ended.max(1),
        }
    }

    /// Remembers where an ended subscription stood, in place of any earlier
    /// position of its channel, within the bound.
    fn remember_ended(&mut self, point: ResumePoint) {
        self.ended.retain(|p| p.channel != point.channel);
        if self.ended.len() >= self.max_ended {
            self.ended.remove(0);
        }
        self.ended.push(point);
    }

    /// The connection, as the operators' registry sees it.
    pub fn connection(&self) -> &Arc<Connection> {
        &self.connection
    }

    /// The connection's queue of live frames.
    pub fn outbox(&self) -> &Arc<Outbox> {
        self.connection.outbox()
    }

    /// Active subscriptions (those being recovered included).
    pub fn count(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// Registers a subscription to `channel` as `grant` allows, unless the
    /// connection holds `max` already or a switch in `switches` covers it
    /// (seen with the connection's `identity`). From now on the hub queues
    /// its frames; they are held back until [`Subscriptions::recovered`].
    /// Returns its slot's tag, which names it until it is released.
    pub fn register(
        &mut self,
        channel: ChannelId,
        grant: Grant,
        max: usize,
        identity: Option<&Identity>,
        switches: &Switches,
    ) -> Result<u32, RegisterError> {
        let max = max.min(MAX_SLOTS);
        if self.count() >= max {
            return Err(RegisterError::TooMany(max));
        }
        let index = self.free_slot();
        let slot = index as u32;
        let tag = tag(index, self.reuses[index]);
        let holder = Arc::new(Holder {
            slot,
            channel,
            user: grant.user,
            groups: grant.groups,
        });
        // Recorded before the switches are read: a switch put in force after
        // this check finds the holder and signals this session.
        self.connection.add(holder.clone());
        if let Some(switch) = switches.blocking(&holder.subject(identity)) {
            self.connection.remove(slot);
            return Err(RegisterError::Disabled(switch));
        }
        let era = self.hub.era();
        // Registered before history is read: see the recovery module.
        let subscriber = Subscriber {
            outbox: self.connection.outbox().clone(),
            slot: tag,
            filter: grant.filter,
            notify_only: grant.notify_only,
        };
        // Tracked before the hub can queue for it; admits nothing until
        // recovery says where history ended.
        self.outbox().track(tag, era);
        let sub_id = self.hub.subscribe(&holder.channel, subscriber);
        self.slots[index] = Some(Slot {
            tag,
            holder,
            sub_id,
            epoch: None,
            exp: grant.exp,
            seat: None,
        });
        Ok(tag)
    }

    /// Recovery read the subscription tagged `slot` up to offset `top` of
    /// `epoch`: live frames after it are new.
    pub fn recovered(&mut self, slot: u32, epoch: Arc<str>, top: u64) {
        if let Some(Some(s)) = self.slots.get_mut(index_of(slot))
            && s.tag == slot
        {
            s.epoch = Some(epoch);
            self.connection
                .outbox()
                .with_marks(|marks| marks.set(slot, top));
        }
    }

    /// Makes the subscription tagged `slot` a subscriber of its channel's
    /// presence, present as `user` if given (see [`crate::presence`]).
    pub fn take_seat(&mut self, slot: u32, user: Option<&str>) {
        if let Some(Some(s)) = self.slots.get_mut(index_of(slot))
            && s.tag == slot
        {
            let outbox = self.connection.outbox().clone();
            let seat = self
                .hub
                .presence()
                .enter(&s.holder.channel, user, outbox, slot);
            s.seat = Some(seat);
        }
    }

    /// Whether the subscription tagged `slot` is still active.
    pub fn holds(&self, slot: u32) -> bool {
        matches!(self.slots.get(index_of(slot)), Some(Some(s)) if s.tag == slot)
    }

    /// Ends the subscription tagged `slot`: slot, hub entry and holder at once.
    pub fn release(&mut self, slot: u32) {
        let index = index_of(slot);
        if matches!(self.slots.get(index), Some(Some(s)) if s.tag == slot) {
            self.take(index);
        }
    }

    /// Ends the subscription at index `i`: its slot and its cursor.
    fn take(&mut self, i: usize) -> Option<(Slot, u64)> {
        let slot = self.slots.get_mut(i)?.take()?;
        self.hub.unsubscribe(&slot.holder.channel, slot.sub_id);
        self.connection.remove(i as u32);
        let last = self.outbox().untrack(slot.tag).unwrap_or(RECOVERING);
        Some((slot, last))
    }

    /// A free index (below [`MAX_SLOTS`], as `register` counts first); a
    /// reused one counts one more reuse.
    fn free_slot(&mut self) -> usize {
        match self.slots.iter().position(Option::is_none) {
            Some(i) => {
                self.reuses[i] = self.reuses[i].wrapping_add(1);
                i
            }
            None => {
                self.slots.reserve_exact(1);
                self.slots.push(None);
                self.reuses.push(0);
                self.slots.len() - 1
            }
        }
    }

    /// Leaves every channel named `name` (of any app), forgetting where an
    /// ended one stood: the client unsubscribed, or subscribes again.
    pub fn drop_channel(&mut self, name: &str) {
        self.ended.retain(|p| &*p.channel.name != name);
        for i in 0..self.slots.len() {
            let named = self.slots[i]
                .as_ref()
                .is_some_and(|s| &*s.holder.channel.name == name);
            if named {
                self.take(i);
            }
        }
    }

    /// Ends every subscription a switch in `switches` covers (seen with the
    /// connection's `identity`), remembering where each stood; calls
    /// `each` with each one's channel.
    pub fn end_switched(
        &mut self,
        switches: &Switches,
        identity: Option<&Identity>,
        each: impl FnMut(&ChannelId),
    ) {
        let covered = |s: &Slot| switches.blocking(&s.holder.subject(identity)).is_some();
        self.end_where(covered, each);
    }

    /// Ends every subscription whose token expired at `now`, remembering
    /// where each stood; calls `each` with each one's channel.
    pub fn end_expired(&mut self, now: u64, each: impl FnMut(&ChannelId)) {
        self.end_where(|s| s.exp.is_some_and(|exp| exp <= now), each);
    }

    fn end_where(&mut self, ends: impl Fn(&Slot) -> bool, mut each: impl FnMut(&ChannelId)) {
        for i in 0..self.slots.len() {
            if !self.slots[i].as_ref().is_some_and(&ends) {
                continue;
            }
            if let Some((slot, last)) = self.take(i) {
                let channel = &slot.holder.channel;
                match slot.point(last) {
                    Some(point) => self.remember_ended(point),
                    None => self.ended.retain(|p| p.channel != *channel),
                }
                each(channel);
            }
        }
    }

    /// Keeps `point` among the ended positions when no subscription holds
    /// its channel: a URL transport's channel refused on resubscribe
    /// (expired token, `unavailable`, a limit) keeps the position its
    /// request's cursor gave, so the next request resumes without a gap.
    /// At most one per channel, like the positions of ended subscriptions.
    pub fn keep(&mut self, point: ResumePoint) {
        let held = self
            .slots
            .iter()
            .flatten()
            .any(|s| s.holder.channel == point.channel);
        if !held && !self.ended.iter().any(|p| p.channel == point.channel) {
            self.remember_ended(point);
        }
    }

    /// Leaves every channel; the connection is done.
    pub fn end(&mut self) {
        for i in 0..self.slots.len() {
            self.take(i);
        }
        self.slots = Vec::new();
        self.reuses = Vec::new();
        self.ended = Vec::new();
    }

    /// Whether a live frame should be written (see [`Admission`]).
    pub fn admit(&mut self, item: &Outbound) -> bool {
        let (hub, slots) = (&self.hub, &mut self.slots);
        self.connection
            .outbox()
            .with_marks(|marks| admission(hub, slots, marks, item) == Admission::New)
    }

    /// Hands up to `max` queued live frames to `each` with what becomes of
    /// them, in order; says whether the outbox overflowed and how many
    /// frames were waiting. `each` runs under the outbox's lock.
    pub fn drain(
        &mut self,
        max: usize,
        mut each: impl FnMut(Outbound, Admission),
    ) -> (State, usize) {
        let (hub, slots) = (&self.hub, &mut self.slots);
        self.connection.outbox().drain_counted(max, |item, marks| {
            let admission = admission(hub, slots, marks, &item);
            each(item, admission);
        })
    }

    /// Where every subscription stands: the active ones, and those the
    /// gateway ended that the client may renew.
    pub fn positions(&self) -> Vec<ResumePoint> {
        let slots = self.slots.iter().flatten();
        let mut points: Vec<ResumePoint> = self.outbox().with_marks(|marks| {
            slots
                .filter_map(|s| s.point(marks.last(s.tag).unwrap_or(RECOVERING)))
                .collect()
        });
        points.extend(self.ended.iter().cloned());
        points
    }

    /// The earliest `exp` among subscriptions, if any.
    pub fn next_expiry(&self) -> Option<u64> {
        self.slots.iter().flatten().filter_map(|s| s.exp).min()
    }
}

/// What becomes of a live frame, advancing its subscription's cursor if new.
fn admission(
    hub: &Hub,
    slots: &mut [Option<Slot>],
    marks: &mut Marks,
    item: &Outbound,
) -> Admission {
    if item.slot == NO_SLOT {
        return Admission::New;
    }
    let Some(Some(slot)) = slots.get_mut(index_of(item.slot)) else {
        return Admission::Ended;
    };
    if slot.tag != item.slot {
        // Queued for an earlier subscription in this slot.
        return Admission::Ended;
    }
    if item.offset == RENUMBERED {
        return renumbered(hub, slot, marks);
    }
    if item.offset == PRESENCE {
        // No event: the cursor does not move. One queued while the
        // subscribe was handled is written after its replies, so after
        // the `present` list.
        return Admission::New;
    }
    match marks.admit(item.slot, item.era, item.offset) {
        Verdict::New => Admission::New,
        Verdict::Seen => Admission::Duplicate,
        Verdict::Unknown => Admission::Ended,
    }
}

/// The hub says the slot's channel was numbered anew. Unless recovery
/// already read the new epoch (a subscribe that raced the renumbering), the
/// client is told (the frame is the `reset` `history_gap`) and the cursor
/// starts again, so the new epoch's offsets are not taken for old ones.
fn renumbered(hub: &Hub, slot: &mut Slot, marks: &mut Marks) -> Admission {
    let Some(current) = hub.channel_epoch(&slot.holder.channel) else {
        return Admission::Duplicate;
    };
    match &slot.epoch {
        Some(epoch) if *epoch != current => {
            slot.epoch = Some(current);
            marks.set(slot.tag, 0);
            Admission::New
        }
        // Still being recovered (recovery reads the new epoch), or already in it.
        _ => Admission::Duplicate,
    }
}

#[cfg(test)]
mod tests {
    use crate::era::Era;
    use std::time::Instant;

    use bytes::Bytes;

    use super::*;
    use crate::connections::{Registry, Transport};
    use crate::filter::Filter;
    use crate::switches::{Switch, SwitchSpec};
    use crate::telemetry::Telemetry;

    fn grant(user: &str, exp: Option<u64>) -> Grant {
        let filter = Filter::parse(&serde_json::json!({"*": {}})).expect("filter");
        Grant {
            filter: Arc::new(filter),
            user: Some(user.into()),
            groups: Box::new([]),
            exp,
            notify_only: false,
        }
    }

    fn frame(slot: u32, era: Era, offset: u64) -> Outbound {
        Outbound {
            frame: Bytes::from_static(b"x"),
            slot,
            era,
            offset,
            received: Instant::now(),
        }
    }

    #[test]
    fn hub_holder_and_slot_come_and_go_together() {
        let telemetry = Arc::new(Telemetry::default());
        let hub = Arc::new(Hub::new(telemetry.clone()));
        let registry = Registry::default();
        let connection = registry.open(Transport::Ws, Arc::new(Outbox::new(8)), telemetry);
        let mut subs = Subscriptions::new(hub.clone(), connection.clone(), 8);
        let switches = Switches::default();
        let channel = ChannelId::new("a", "c");
        let slot = subs
            .register(channel.clone(), grant("u", Some(10)), 1, None, &switches)
            .expect("registered");
        assert_eq!((hub.subscriber_count(&channel), subs.count()), (1, 1));
        assert!(connection.held_by("a", "u"));
        // Held back until recovery says where history ended.
        assert!(!subs.admit(&frame(slot, hub.era(), 1)));
        assert_eq!(subs.positions().len(), 0);
        let again = subs.register(
            ChannelId::new("a", "d"),
            grant("u", None),
            1,
            None,
            &switches,
        );
        assert_eq!(again, Err(RegisterError::TooMany(1)));

        subs.recovered(slot, "e".into(), 3);
        assert!(!subs.admit(&frame(slot, hub.era(), 3)));
        assert!(subs.admit(&frame(slot, hub.era(), 4)));
        let later = hub.next_era();
        assert!(subs.admit(&frame(slot, later, 1)));
        assert!(!subs.admit(&frame(slot, Era::default(), 5)));

        subs.end_expired(10, |c| assert_eq!(*c, channel));
        assert_eq!((hub.subscriber_count(&channel), subs.count()), (0, 0));
        assert!(!connection.held_by("a", "u"));
        assert!(!subs.admit(&frame(slot, later, 2)));
        let ended: Vec<_> = subs.positions().into_iter().map(|p| p.offset).collect();
        assert_eq!(ended, vec![1]);
    }

    /// S1: a frame still queued for a subscription that ended was admitted
    /// under the next subscription to take its slot (frames carried only the
    /// slot's index), e.g. within one subscribe message.
    #[test]
    fn a_frame_of_an_ended_subscription_is_never_admitted_under_the_next_in_its_slot() {
        let telemetry = Arc::new(Telemetry::default());
        let hub = Arc::new(Hub::new(telemetry.clone()));
        let registry = Registry::default();
        let connection = registry.open(Transport::Ws, Arc::new(Outbox::new(8)), telemetry);
        let mut subs = Subscriptions::new(hub.clone(), connection, 8);
        let switches = Switches::default();
        let a = subs
            .register(
                ChannelId::new("a", "a"),
                grant("u", None),
                4,
                None,
                &switches,
            )
            .expect("a");
        subs.recovered(a, "e".into(), 0);
        // Queued for `a`, not yet written, when `a` ends.
        let stale = frame(a, hub.era(), 10);
        subs.release(a);
        let b = subs
            .register(
                ChannelId::new("a", "b"),
                grant("u", None),
                4,
                None,
                &switches,
            )
            .expect("b");
        assert_eq!(index_of(a), index_of(b), "the slot is reused");
        subs.recovered(b, "e".into(), 3);
        assert!(!subs.admit(&stale), "a's frame is not b's");
        assert!(subs.admit(&frame(b, hub.era(), 4)));
        // A release under an old tag does not end the new subscription.
        subs.release(a);
        assert_eq!(subs.count(), 1);
    }

    /// Presence frames are no events: admitted while history is read and
    /// after any offset, without moving the cursor; dropped once their
    /// subscription ended; and the seat goes with the slot.
    #[test]
    fn presence_frames_leave_the_cursor_alone_and_end_with_their_subscription() {
        let telemetry = Arc::new(Telemetry::default());
        let hub = Arc::new(Hub::new(telemetry.clone()));
        let registry = Registry::default();
        let connection = registry.open(Transport::Ws, Arc::new(Outbox::new(8)), telemetry);
        let mut subs = Subscriptions::new(hub.clone(), connection, 8);
        let channel = ChannelId::new("a", "chat");
        let slot = subs
            .register(
                channel.clone(),
                grant("u", None),
                4,
                None,
                &Switches::default(),
            )
            .expect("registered");
        subs.take_seat(slot, Some("u"));
        assert_eq!(hub.presence().local(), vec![(channel, vec!["u".into()])]);
        assert!(
            subs.admit(&frame(slot, hub.era(), PRESENCE)),
            "while recovering"
        );
        subs.recovered(slot, "e".into(), 3);
        assert!(subs.admit(&frame(slot, hub.era(), 4)));
        assert!(subs.admit(&frame(slot, hub.era(), PRESENCE)));
        assert!(
            subs.admit(&frame(slot, hub.era(), 5)),
            "the cursor did not move"
        );
        subs.drop_channel("chat");
        assert!(!subs.admit(&frame(slot, hub.era(), PRESENCE)));
        assert!(
            hub.presence().local().is_empty(),
            "the seat went with the slot"
        );
    }

    #[test]
    fn a_switch_in_force_refuses_without_leaving_a_trace() {
        let telemetry = Arc::new(Telemetry::default());
        let hub = Arc::new(Hub::new(telemetry.clone()));
        let registry = Registry::default();
        let connection = registry.open(Transport::Sse, Arc::new(Outbox::new(8)), telemetry);
        let mut subs = Subscriptions::new(hub.clone(), connection.clone(), 8);
        let user = SwitchSpec {
            scope: "user",
            user: Some("u"),
            ..SwitchSpec::default()
        };
        let switch = Switch::parse(&user).expect("valid");
        let switches = Switches::new([switch.clone()]);
        let channel = ChannelId::new("a", "c");
        let refused = subs.register(channel.clone(), grant("u", None), 4, None, &switches);
        assert_eq!(refused, Err(RegisterError::Disabled(switch)));
        assert_eq!((hub.subscriber_count(&channel), subs.count()), (0, 0));
        assert!(!connection.held_by("a", "u"));
    }

    /// A WebSocket client going through many channels, one short-lived
    /// token after another, left a position per channel for the life of
    /// the connection: the ended positions are now bounded.
    #[test]
    fn ended_positions_stay_bounded_on_a_long_lived_connection() {
        let telemetry = Arc::new(Telemetry::default());
        let hub = Arc::new(Hub::new(telemetry.clone()));
        let registry = Registry::default();
        let connection = registry.open(Transport::Ws, Arc::new(Outbox::new(8)), telemetry);
        let mut subs = Subscriptions::new(hub.clone(), connection, 3);
        let switches = Switches::default();
        for n in 0..10u64 {
            let channel = ChannelId::new("a", &format!("c{n}"));
            let slot = subs
                .register(channel, grant("u", Some(n + 1)), 3, None, &switches)
                .expect("registered");
            subs.recovered(slot, "e".into(), n);
            subs.end_expired(n + 1, |_| {});
        }
        let kept: Vec<_> = subs.positions().into_iter().map(|p| p.offset).collect();
        assert_eq!(kept, vec![7, 8, 9], "the newest three, oldest forgotten");
    }
}
