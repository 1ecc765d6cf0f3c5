//! Lattices as the gateway serves them (PROTOCOL.md section 10, docs/lattices.md):
//! a namespace of an app holds one shared [`Lattice`] and one per user; a
//! backend merges updates into it (`POST /api/v1/lattices`), and clients
//! that sent `lattice_subscribe` get the full state, then each change.
//!
//! The values live in the broker ([`Broker::merge_lattices`],
//! [`Broker::lattices`]); this module holds what both brokers share (the
//! all-or-nothing merge of one update, the frames) and the node's index of
//! subscribed connections ([`LatticeFeed`]).
//!
//! A change travels as a [`UserCommand::Lattice`] through the user-mail seam
//! ([`Node::send_to_user`]): one message per changed user, and one for the
//! shared values addressed to the empty user id, which no identity can
//! hold (the API refuses it) and which every hub reads as "every subscriber
//! of the namespace". Each hub hands the frame, serialized once, straight
//! to the outboxes its [`LatticeFeed`] lists for that namespace (and user):
//! connections that did not subscribe are never woken.
//!
//! No gap between the full state and the changes: a session lists itself in
//! the feed *before* it reads the state, so a change merged after the read
//! reaches it as a frame, and one merged before is in the state. Changes
//! carry merged values, so the overlap (a change also in the state, or two
//! changes crossing) is harmless.
//!
//! [`Broker::merge_lattices`]: crate::broker::Broker::merge_lattices
//! [`Broker::lattices`]: crate::broker::Broker::lattices
//! [`UserCommand::Lattice`]: crate::user_mail::UserCommand::Lattice
//! [`Node::send_to_user`]: crate::node::Node::send_to_user

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;
use chouquette_protocol::server::Envelope;
use serde::Serialize;

use crate::era::Era;
use crate::lattice::{Bounds, Lattice, LatticeError};
use crate::outbox::{NO_SLOT, Outbound, Outbox};

/// Namespaces one app may hold. An update naming a further namespace is
/// refused (`507 lattice_full`); namespaces are never dropped on their own.
pub const MAX_NAMESPACES_PER_APP: usize = 64;

/// Users with values in one namespace. An update giving values to a
/// further user is refused whole (`507 lattice_full`).
pub const MAX_USERS_PER_NAMESPACE: usize = 100_000;

/// Namespaces one connection may subscribe to; a further
/// `lattice_subscribe` is answered `too_many_subscriptions`. It also bounds
/// the node's [`LatticeFeed`]: at most this many entries per connection.
pub const MAX_NAMESPACES_PER_CONNECTION: usize = 16;

/// Users one `POST /api/v1/lattices` may name (each is one message to
/// every node); more is `400 bad_message`.
pub const MAX_USERS_PER_UPDATE: usize = 1000;

/// Longest namespace name, in bytes (also: the characters of a channel
/// name, see [`crate::publication::valid_name`]).
pub const MAX_NAMESPACE_BYTES: usize = 64;

/// Whether `name` may name a namespace: 1 to [`MAX_NAMESPACE_BYTES`] bytes
/// of the characters a channel name may use (none of which is a Redis hash
/// tag's brace or the `|` that separates it from the app id).
pub fn valid_namespace(name: &str) -> bool {
    name.len() <= MAX_NAMESPACE_BYTES && crate::publication::valid_name(name)
}

/// The values of one namespace: shared, and by user. Used for an update
/// (what a backend posts), for a change (what changed, with the merged
/// values) and, in the memory broker, for the state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NamespaceValues {
    /// Seen by every subscriber.
    pub shared: Lattice,
    /// Seen only by the user's own connections.
    pub users: BTreeMap<String, Lattice>,
}

impl NamespaceValues {
    /// Whether nothing is in it.
    pub fn is_empty(&self) -> bool {
        self.shared.is_empty() && self.users.values().all(Lattice::is_empty)
    }
}

/// The outcome of merging one update into a namespace's current values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Merged {
    /// The new shared lattice, if it changed.
    pub shared: Option<Lattice>,
    /// The new lattice of each user whose values changed.
    pub users: BTreeMap<String, Lattice>,
    /// What changed, each key with its merged value (what clients get).
    pub change: NamespaceValues,
}

/// A refused merge: which lattice (`shared`, or `users.<id>`) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{lattice}: {error}")]
pub struct MergeError {
    /// `shared`, or `users.<id>` (the id cut to 64 characters).
    pub lattice: String,
    /// Why.
    pub error: LatticeError,
}

/// Merges `update` into the current values (`shared`, and `users` holding
/// at least every user the update names; a missing one counts as empty),
/// all or nothing: a bound passed by any lattice refuses the whole update.
/// Both brokers call this, so they merge alike.
pub fn merge(
    shared: &Lattice,
    users: &BTreeMap<String, Lattice>,
    update: &NamespaceValues,
    bounds: &Bounds,
) -> Result<Merged, MergeError> {
    let mut merged = Merged::default();
    let mut next = shared.clone();
    let delta = next
        .merge(&update.shared, bounds)
        .map_err(|error| MergeError {
            lattice: "shared".into(),
            error,
        })?;
    if !delta.is_empty() {
        merged.change.shared = next.current_of(&delta);
        merged.shared = Some(next);
    }
    for (user, values) in &update.users {
        let mut next = users.get(user).cloned().unwrap_or_default();
        let delta = next.merge(values, bounds).map_err(|error| MergeError {
            lattice: format!("users.{}", user.chars().take(64).collect::<String>()),
            error,
        })?;
        if !delta.is_empty() {
            merged
                .change
                .users
                .insert(user.clone(), next.current_of(&delta));
            merged.users.insert(user.clone(), next);
        }
    }
    Ok(merged)
}

#[derive(Serialize)]
struct Frame<'a> {
    class: &'static str,
    timestamp: &'a str,
    uuid: &'a str,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
    namespace: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    full: bool,
    shared: &'a Lattice,
    user: &'a Lattice,
}

fn frame(
    reference: Option<&str>,
    namespace: &str,
    full: bool,
    shared: &Lattice,
    user: &Lattice,
) -> Bytes {
    let env = Envelope::now();
    let frame = Frame {
        class: "lattice",
        timestamp: &env.timestamp,
        uuid: &env.uuid,
        reference,
        namespace,
        full,
        shared,
        user,
    };
    // Lattices serialize without failing (see `Lattice::to_json`).
    serde_json::to_vec(&frame)
        .map(Bytes::from)
        .unwrap_or_else(|_| Bytes::from_static(b"{\"class\":\"lattice\"}"))
}

/// The answer to `lattice_subscribe`: every value the user may see
/// (`"full": true`, `ref` naming the client's message).
pub fn full_frame(
    reference: Option<&str>,
    namespace: &str,
    shared: &Lattice,
    user: &Lattice,
) -> Bytes {
    frame(reference, namespace, true, shared, user)
}

/// A change: only the keys that changed, with their merged values.
pub fn change_frame(namespace: &str, shared: &Lattice, user: &Lattice) -> Bytes {
    frame(None, namespace, false, shared, user)
}

/// (app, namespace).
type Key = (Arc<str>, Box<str>);

/// Connections of one namespace on this node, by user: (connection id, outbox).
type ByUser = HashMap<Box<str>, Vec<(u64, Arc<Outbox>)>>;

/// This node's connections subscribed to each namespace. Bounded by the
/// connections: each lists itself at most
/// [`MAX_NAMESPACES_PER_CONNECTION`] times and leaves when it ends.
#[derive(Debug, Default)]
pub struct LatticeFeed {
    subscribers: RwLock<HashMap<Key, ByUser>>,
}

impl LatticeFeed {
    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<Key, ByUser>> {
        // Each update is one insert or removal: a poisoned lock is consistent.
        self.subscribers.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Lists connection `id` of `user` as subscribed to `namespace` of `app`.
    pub fn add(&self, app: &Arc<str>, namespace: &str, user: &str, id: u64, outbox: &Arc<Outbox>) {
        let mut subscribers = self.write();
        let list = subscribers
            .entry((app.clone(), namespace.into()))
            .or_default()
            .entry(user.into())
            .or_default();
        if !list.iter().any(|(c, _)| *c == id) {
            list.push((id, outbox.clone()));
        }
    }

    /// Takes connection `id` out of `namespace`'s list (idempotent).
    pub fn remove(&self, app: &str, namespace: &str, user: &str, id: u64) {
        let mut subscribers = self.write();
        let key: Key = (app.into(), namespace.into());
        let Some(by_user) = subscribers.get_mut(&key) else {
            return;
        };
        if let Some(list) = by_user.get_mut(user) {
            list.retain(|(c, _)| *c != id);
            if list.is_empty() {
                by_user.remove(user);
            }
        }
        if by_user.is_empty() {
            subscribers.remove(&key);
        }
    }

    /// Queues `frame` (its bytes shared) for every subscriber of
    /// `namespace` of `app` (`user` empty: the shared values), or only for
    /// `user`'s; returns how many. Never waits: a full outbox closes its
    /// connection as a slow consumer, like any other frame.
    pub fn deliver(&self, app: &str, namespace: &str, user: &str, frame: &Bytes) -> usize {
        let subscribers = self.subscribers.read().unwrap_or_else(|p| p.into_inner());
        let key: Key = (app.into(), namespace.into());
        let Some(by_user) = subscribers.get(&key) else {
            return 0;
        };
        let received = Instant::now();
        let push = |outbox: &Arc<Outbox>| {
            outbox.push(Outbound {
                frame: frame.clone(),
                slot: NO_SLOT,
                era: Era::default(),
                offset: 0,
                received,
            });
        };
        let mut reached = 0;
        if user.is_empty() {
            for (_, outbox) in by_user.values().flatten() {
                push(outbox);
                reached += 1;
            }
        } else if let Some(list) = by_user.get(user) {
            for (_, outbox) in list {
                push(outbox);
                reached += 1;
            }
        }
        reached
    }

    /// Subscriptions listed on this node, all namespaces together.
    pub fn len(&self) -> usize {
        let subscribers = self.subscribers.read().unwrap_or_else(|p| p.into_inner());
        subscribers
            .values()
            .flat_map(HashMap::values)
            .map(Vec::len)
            .sum()
    }

    /// Whether none is listed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// A value in wire form, from a small domain so that updates collide.
    fn wire_value() -> impl Strategy<Value = serde_json::Value> {
        prop_oneof![
            (0u64..4).prop_map(|n| json!({"counter": n})),
            proptest::collection::vec("[ab]", 0..3).prop_map(|s| json!({"set": s})),
            (0u8..3, "[xy]").prop_map(|(ts, v)| json!({"register": {"value": v, "ts": ts}})),
        ]
    }

    fn wire_lattice() -> impl Strategy<Value = Lattice> {
        proptest::collection::btree_map("[pq]", wire_value(), 0..3).prop_map(|m| {
            let text = serde_json::to_string(&m).expect("json");
            Lattice::parse(&text, &Bounds::default()).expect("valid")
        })
    }

    fn wire_update() -> impl Strategy<Value = NamespaceValues> {
        (
            wire_lattice(),
            proptest::collection::btree_map("[rv]", wire_lattice(), 0..2),
        )
            .prop_map(|(shared, users)| NamespaceValues { shared, users })
    }

    proptest! {
        /// A subscriber that read the state after any prefix of the updates
        /// and then receives the changes of the rest, in any order, some
        /// twice, holds what the broker holds: changes with merged values
        /// are enough, whatever the delivery.
        #[test]
        fn changes_in_any_order_and_repetition_reach_the_stored_state(
            updates in proptest::collection::vec(wire_update(), 1..6),
            read_after in 0usize..6,
            order in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
        ) {
            let bounds = Bounds::default();
            let mut store = NamespaceValues::default();
            let mut full = None;
            let mut changes = Vec::new();
            for (i, update) in updates.iter().enumerate() {
                if i == read_after.min(updates.len() - 1) && full.is_none() {
                    full = Some(store.clone());
                }
                let merged = merge(&store.shared, &store.users, update, &bounds).expect("bounded");
                if let Some(shared) = merged.shared {
                    store.shared = shared;
                }
                store.users.extend(merged.users);
                changes.push(merged.change);
            }
            let mut client = full.unwrap_or_default();
            // Every change once, in a scrambled order, then some again.
            let mut deliveries: Vec<&NamespaceValues> = changes.iter().rev().collect();
            deliveries.extend(order.iter().map(|i| &changes[i.index(changes.len())]));
            for change in deliveries {
                client.shared.merge(&change.shared, &Bounds::STORED).expect("unbounded");
                for (user, values) in &change.users {
                    client.users.entry(user.clone()).or_default().merge(values, &Bounds::STORED).expect("unbounded");
                }
            }
            client.users.retain(|_, l| !l.is_empty());
            store.users.retain(|_, l| !l.is_empty());
            prop_assert_eq!(client, store);
        }
    }

    fn lattice(v: serde_json::Value) -> Lattice {
        Lattice::parse(&v.to_string(), &Bounds::default()).expect("valid")
    }

    #[test]
    fn a_change_carries_merged_values_and_a_bound_refuses_everything() {
        let shared = lattice(json!({"rooms": {"set": ["r1"]}, "n": {"counter": 5}}));
        let mut users = BTreeMap::new();
        users.insert("roger".to_string(), lattice(json!({"c": {"counter": 1}})));
        let update = NamespaceValues {
            shared: lattice(json!({"rooms": {"set": ["r2"]}, "n": {"counter": 3}})),
            users: [
                ("roger".to_string(), lattice(json!({"c": {"counter": 1}}))),
                ("vb".to_string(), lattice(json!({"c": {"counter": 2}}))),
            ]
            .into(),
        };
        let merged = merge(&shared, &users, &update, &Bounds::default()).expect("merged");
        // The set's merged value, not only the new element; `n` did not change.
        assert_eq!(
            serde_json::to_value(&merged.change.shared).expect("json"),
            json!({"rooms": {"set": ["r1", "r2"]}})
        );
        assert_eq!(merged.change.users.keys().collect::<Vec<_>>(), ["vb"]);
        assert!(merged.users.contains_key("vb") && !merged.users.contains_key("roger"));

        let tight = Bounds {
            max_keys: 2,
            ..Bounds::default()
        };
        let over = NamespaceValues {
            shared: lattice(json!({"new": {"counter": 1}})),
            users: BTreeMap::new(),
        };
        assert_eq!(
            merge(&shared, &users, &over, &tight).map_err(|e| e.error),
            Err(LatticeError::TooManyKeys(2))
        );
    }

    #[test]
    fn the_feed_reaches_subscribers_of_the_namespace_and_user_only() {
        let feed = LatticeFeed::default();
        let app: Arc<str> = "a".into();
        let boxes: Vec<Arc<Outbox>> = (0..3).map(|_| Arc::new(Outbox::new(8))).collect();
        feed.add(&app, "unread", "roger", 1, &boxes[0]);
        feed.add(&app, "unread", "roger", 1, &boxes[0]);
        feed.add(&app, "unread", "vb", 2, &boxes[1]);
        feed.add(&app, "other", "roger", 3, &boxes[2]);
        assert_eq!(feed.len(), 3);
        let frame = Bytes::from_static(b"{}");
        assert_eq!(feed.deliver("a", "unread", "", &frame), 2);
        assert_eq!(feed.deliver("a", "unread", "roger", &frame), 1);
        assert_eq!(feed.deliver("a", "unread", "ana", &frame), 0);
        assert_eq!(feed.deliver("b", "unread", "", &frame), 0);
        feed.remove("a", "unread", "roger", 1);
        feed.remove("a", "unread", "vb", 2);
        feed.remove("a", "other", "roger", 3);
        assert!(feed.is_empty());
        assert!(feed.subscribers.read().expect("lock").is_empty());
    }
}
