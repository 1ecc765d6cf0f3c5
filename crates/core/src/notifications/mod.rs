//! Notifications to a user (PROTOCOL.md section 8, docs/notifications.md):
//! stored pending per user in the broker until a client acknowledges them,
//! delivered to every connection of the user on every node, delivered
//! again at the user's next connect, grouped per kind within a window.
//!
//! The flow: [`notify`] stores the notification in each user's pending
//! list ([`Broker::notifications`] applying a [`PendingOp`], the same pure
//! rules for every broker), then sends what the list says to deliver as a
//! ready `notification` frame through the user seam
//! ([`crate::user_mail`]: `UserCommand::Frame`, serialized once per
//! node). A grouped kind's window is closed by a timer on the node that
//! opened it. [`acknowledge`] removes entries and tells every connection
//! of the user (`notification_acked`), so other tabs drop them. Sessions
//! read the list at connect (`session/notifications.rs`).
//!
//! The kill switch scope `notifications` stops delivery, never storage:
//! while it is in force nothing is sent; when lifted each connection reads
//! its user's list again, so nothing pending is lost.
//!
//! [`Broker::notifications`]: crate::broker::Broker::notifications

pub mod memory;
pub mod pending;
pub mod request;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use chouquette_protocol::server::Envelope;
use serde::Serialize;
use serde_json::value::RawValue;

pub use pending::{Entry, Group, MAX_ACK_IDS, MAX_GROUP_IDS, Outcome, Pending, PendingOp};
pub use request::{NotifyRefusal, NotifyRequest};

use crate::broker::BrokerError;
use crate::node::Node;
use crate::user_mail::UserCommand;

/// Users one `POST /api/v1/notify` may name.
pub const MAX_USERS_PER_NOTIFY: usize = 1_000;
/// Longest `kind`, in bytes.
pub const MAX_KIND_BYTES: usize = 64;
/// Longest `title`, in bytes.
pub const MAX_TITLE_BYTES: usize = 1_024;
/// Longest `body`, in bytes.
pub const MAX_BODY_BYTES: usize = 8_192;
/// Longest `link`, in bytes.
pub const MAX_LINK_BYTES: usize = 2_048;
/// Longest idempotency `id`, in bytes.
pub const MAX_IDEMPOTENCY_BYTES: usize = 128;
/// Default of `[apps.notifications] max_pending`.
pub const DEFAULT_MAX_PENDING: usize = 1_000;
/// Default of `[apps.notifications] expire_after`: 30 days.
pub const DEFAULT_EXPIRE_AFTER: Duration = Duration::from_secs(30 * 86_400);
/// Users of one notification stored at once (each a broker round trip).
pub const USERS_AT_ONCE: usize = 16;

/// Group windows a node keeps a timer for at once; past it a new group is
/// closed (delivered) at once instead of at its window's end.
pub const MAX_GROUP_TIMERS: usize = 100_000;

/// `[apps.notifications]`: one app's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotificationPolicy {
    /// Entries kept per user; past it the oldest is dropped (counted).
    pub max_pending: usize,
    /// A pending notification older than this is dropped (counted).
    pub expire_after: Duration,
    /// Grouped kinds → their window.
    pub groups: HashMap<String, Duration>,
}

impl Default for NotificationPolicy {
    fn default() -> Self {
        NotificationPolicy {
            max_pending: DEFAULT_MAX_PENDING,
            expire_after: DEFAULT_EXPIRE_AFTER,
            groups: HashMap::new(),
        }
    }
}

/// The counters of one node (`chouquette_notifications_*`).
#[derive(Debug, Default)]
pub struct Notifier {
    accepted: AtomicU64,
    duplicates: AtomicU64,
    delivered: AtomicU64,
    acked: AtomicU64,
    dropped: AtomicU64,
    expired: AtomicU64,
    timers: AtomicUsize,
    scheduler: OnceLock<Arc<dyn Scheduler>>,
}

/// What must hear of every notification before it is stored, whichever
/// way it came (`POST /api/v1/notify`, a user's `message`): the server's
/// offline fallback (docs/notifications.md,
/// "Offline fallback"), which schedules a check of each user.
pub trait Scheduler: Send + Sync + std::fmt::Debug {
    /// Called with the users and kind of a notification about to be
    /// stored; a failure is the scheduler's to count and log.
    fn schedule<'a>(
        &'a self,
        app: &'a str,
        users: &'a [String],
        kind: &'a str,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
}

impl Notifier {
    /// Makes `scheduler` hear of every notification from now on (set once,
    /// at start-up; later calls change nothing).
    pub fn set_scheduler(&self, scheduler: Arc<dyn Scheduler>) {
        let _ = self.scheduler.set(scheduler);
    }

    /// Counts a notification (alone or in a group) sent to a user's
    /// connections, live or at connect.
    pub fn delivered(&self, n: u64) {
        self.delivered.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts what an operation on a pending list did.
    pub fn record(&self, outcome: &Outcome) {
        self.dropped.fetch_add(outcome.dropped, Ordering::Relaxed);
        self.expired.fetch_add(outcome.expired, Ordering::Relaxed);
        self.acked.fetch_add(outcome.acked, Ordering::Relaxed);
    }

    /// Appends the Prometheus families.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        for (name, help, value) in [
            (
                "accepted",
                "Notifications stored for a user (one per user named).",
                self.accepted.load(Ordering::Relaxed),
            ),
            (
                "duplicates",
                "POST /api/v1/notify answered with an earlier id (idempotency id seen).",
                self.duplicates.load(Ordering::Relaxed),
            ),
            (
                "delivered",
                "Notifications sent to a user's connections (live or again at connect).",
                self.delivered.load(Ordering::Relaxed),
            ),
            (
                "acked",
                "Notifications removed by a client's acknowledgement.",
                self.acked.load(Ordering::Relaxed),
            ),
            (
                "dropped",
                "Notifications dropped because the user's pending list was full (oldest first).",
                self.dropped.load(Ordering::Relaxed),
            ),
            (
                "expired",
                "Pending notifications dropped after expire_after.",
                self.expired.load(Ordering::Relaxed),
            ),
        ] {
            let _ = writeln!(out, "# HELP chouquette_notifications_{name}_total {help}");
            let _ = writeln!(out, "# TYPE chouquette_notifications_{name}_total counter");
            let _ = writeln!(out, "chouquette_notifications_{name}_total {value}");
        }
        let timers = self.timers.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP chouquette_notification_group_timers Group windows this node will close."
        );
        let _ = writeln!(out, "# TYPE chouquette_notification_group_timers gauge");
        let _ = writeln!(out, "chouquette_notification_group_timers {timers}");
    }
}

/// A notification as the backend sent it (fields checked by the API).
#[derive(Debug, Clone)]
pub struct Notify {
    /// The users, each once.
    pub users: Vec<String>,
    /// The kind.
    pub kind: String,
    /// Short text.
    pub title: String,
    /// Longer text.
    pub body: String,
    /// Where to go.
    pub link: Option<String>,
    /// JSON.
    pub data: Option<Box<RawValue>>,
    /// The idempotency id.
    pub idempotency: Option<String>,
    /// The sending user, for a user-to-user message (`from` on the wire).
    pub from: Option<String>,
}

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_micros()).unwrap_or(u64::MAX)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn timestamp(us: u64) -> String {
    chouquette_protocol::server::timestamp(UNIX_EPOCH + Duration::from_micros(us))
}

#[derive(Serialize)]
struct Grouped<'a> {
    count: u64,
    ids: &'a [String],
    first: String,
    last: String,
}

#[derive(Serialize)]
struct Message<'a> {
    class: &'static str,
    timestamp: &'a str,
    uuid: &'a str,
    id: &'a str,
    kind: &'a str,
    title: &'a str,
    body: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    link: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a RawValue>,
    created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    grouped: Option<Grouped<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<&'a str>,
}

/// The `notification` message for `entry` (built once, shared by every
/// connection of the user).
pub fn frame(entry: &Entry) -> Bytes {
    let env = Envelope::now();
    let data: Option<Box<RawValue>> = entry
        .data
        .as_deref()
        .and_then(|d| RawValue::from_string(d.to_string()).ok());
    let message = Message {
        class: "notification",
        timestamp: &env.timestamp,
        uuid: &env.uuid,
        id: &entry.id,
        kind: &entry.kind,
        title: &entry.title,
        body: &entry.body,
        link: entry.link.as_deref(),
        data: data.as_deref(),
        created: timestamp(entry.created),
        grouped: entry.group.as_ref().map(|g| Grouped {
            count: g.count,
            ids: &g.ids,
            first: timestamp(g.first),
            last: timestamp(g.last),
        }),
        from: entry.from.as_deref(),
    };
    Bytes::from(serde_json::to_vec(&message).unwrap_or_default())
}

/// `{"class":"notification_acked","ids":[...]}`: entries another
/// connection of the user acknowledged.
pub fn acked_frame(ids: &[String]) -> Bytes {
    let env = Envelope::now();
    let value = serde_json::json!({
        "class": "notification_acked",
        "timestamp": env.timestamp,
        "uuid": env.uuid,
        "ids": ids,
    });
    Bytes::from(value.to_string())
}

/// `{"class":"notification_status","status":"disabled"|"enabled"}`: the
/// kill switch scope `notifications` covering the connection's app came
/// into force, or was lifted (pending ones follow).
pub fn status_frame(enabled: bool) -> Bytes {
    let env = Envelope::now();
    let value = serde_json::json!({
        "class": "notification_status",
        "timestamp": env.timestamp,
        "uuid": env.uuid,
        "status": if enabled { "enabled" } else { "disabled" },
    });
    Bytes::from(value.to_string())
}

/// A fresh notification id.
pub fn new_id() -> String {
    format!("n-{}", &uuid::Uuid::new_v4().simple().to_string()[..16])
}

/// Stores `request` for each of its users and delivers it (see the module
/// docs); answers the notification's id, an earlier one for a repeated
/// idempotency id. A broker failure part-way leaves the users before it
/// stored: the backend retries with the same idempotency id, and the
/// users stored already may get it twice (at least once, never lost).
pub async fn notify(node: &Arc<Node>, app: &str, request: Notify) -> Result<String, BrokerError> {
    let Some(policy) = node.apps().get(app).map(|a| a.notifications.clone()) else {
        return Err(BrokerError::Unavailable("unknown app".into()));
    };
    // Scheduled before it is stored: a check finding nothing new is cheap,
    // a notification stored but never checked would get no digest.
    if let Some(scheduler) = node.notifier().scheduler.get() {
        scheduler.schedule(app, &request.users, &request.kind).await;
    }
    let ttl = policy.expire_after;
    if let Some(key) = &request.idempotency
        && let Some(id) = node.broker().notification_id(app, key, None, ttl).await?
    {
        node.notifier().duplicates.fetch_add(1, Ordering::Relaxed);
        return Ok(id);
    }
    let id = new_id();
    let now = now_micros();
    let window = policy.groups.get(&request.kind).map(|w| micros(*w));
    let entry = Entry {
        id: id.clone(),
        kind: request.kind,
        title: request.title,
        body: request.body,
        link: request.link,
        data: request.data.map(|d| d.get().to_string()),
        created: now,
        group: None,
        from: request.from,
    };
    let app: Arc<str> = app.into();
    let entry = Arc::new(entry);
    // Users are stored and sent to [`USERS_AT_ONCE`] at a time (each is a
    // broker round trip); a failure stops before the next batch.
    let mut users = request.users.into_iter();
    loop {
        let mut batch = tokio::task::JoinSet::new();
        for user in users.by_ref().take(USERS_AT_ONCE) {
            let (node, app, entry) = (node.clone(), app.clone(), entry.clone());
            let max_pending = policy.max_pending;
            batch.spawn(async move {
                let op = PendingOp::Add {
                    entry: Box::new((*entry).clone()),
                    window,
                    max_pending,
                };
                let outcome = node
                    .broker()
                    .notifications(&app, &user, op, now, micros(ttl))
                    .await?;
                node.notifier().accepted.fetch_add(1, Ordering::Relaxed);
                node.notifier().record(&outcome);
                deliver(&node, &app, &user, &outcome.deliver).await;
                if let Some((kind, closes)) = outcome.schedule {
                    close_later(&node, &app, &user, kind, closes, ttl).await;
                }
                Ok::<(), BrokerError>(())
            });
        }
        if batch.is_empty() {
            break;
        }
        let mut failed = None;
        while let Some(done) = batch.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => failed = Some(e),
                Err(e) => failed = Some(BrokerError::Unavailable(e.to_string())),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
    let app = &*app;
    if let Some(key) = &request.idempotency
        && let Some(first) = node
            .broker()
            .notification_id(app, key, Some(&id), ttl)
            .await?
    {
        return Ok(first);
    }
    Ok(id)
}

/// Sends `entries` to every connection of `user`, unless notifications
/// are switched off for the app (they stay pending).
async fn deliver(node: &Node, app: &str, user: &str, entries: &[Entry]) {
    if entries.is_empty() || node.switches().notifications_off(app) {
        return;
    }
    for entry in entries {
        node.notifier().delivered(entry.count());
        if let Err(e) = node
            .send_to_user(app, user, UserCommand::Frame(frame(entry)))
            .await
        {
            // Stored: the user gets it at the next connect.
            tracing::warn!(error = %e, "notification stored but not sent");
        }
    }
}

/// Closes `user`'s open group of `kind` at `closes` (µs) and delivers it;
/// at once when the node already keeps [`MAX_GROUP_TIMERS`].
async fn close_later(
    node: &Arc<Node>,
    app: &str,
    user: &str,
    kind: String,
    closes: u64,
    ttl: Duration,
) {
    let notifier = node.notifier();
    if notifier.timers.fetch_add(1, Ordering::Relaxed) >= MAX_GROUP_TIMERS {
        notifier.timers.fetch_sub(1, Ordering::Relaxed);
        close_group(node, app, user, kind, ttl).await;
        return;
    }
    let node = node.clone();
    let (app, user) = (app.to_string(), user.to_string());
    tokio::spawn(async move {
        let wait = closes.saturating_sub(now_micros());
        tokio::time::sleep(Duration::from_micros(wait)).await;
        close_group(&node, &app, &user, kind, ttl).await;
        node.notifier().timers.fetch_sub(1, Ordering::Relaxed);
    });
}

async fn close_group(node: &Node, app: &str, user: &str, kind: String, ttl: Duration) {
    let op = PendingOp::CloseGroup(kind);
    match node
        .broker()
        .notifications(app, user, op, now_micros(), micros(ttl))
        .await
    {
        Ok(outcome) => {
            node.notifier().record(&outcome);
            deliver(node, app, user, &outcome.deliver).await;
        }
        // The group stays pending, closed at the user's next connect.
        Err(e) => tracing::warn!(error = %e, "notification group not closed"),
    }
}

/// Removes `ids` from `user`'s pending list and tells every connection of
/// the user which entries went (`notification_acked`). Answers how many
/// notifications were removed.
pub async fn acknowledge(
    node: &Node,
    app: &str,
    user: &str,
    ids: Vec<String>,
) -> Result<u64, BrokerError> {
    let ttl = node
        .apps()
        .get(app)
        .map_or(DEFAULT_EXPIRE_AFTER, |a| a.notifications.expire_after);
    let outcome = node
        .broker()
        .notifications(app, user, PendingOp::Ack(ids), now_micros(), micros(ttl))
        .await?;
    node.notifier().record(&outcome);
    if !outcome.acked_ids.is_empty() {
        let frame = acked_frame(&outcome.acked_ids);
        if let Err(e) = node
            .send_to_user(app, user, UserCommand::Frame(frame))
            .await
        {
            tracing::warn!(error = %e, "acknowledgement not told to the other connections");
        }
    }
    Ok(outcome.acked)
}

/// What a connecting client of `user` is sent: the pending entries, oldest
/// first, each as its frame.
pub async fn pending_frames(node: &Node, app: &str, user: &str) -> Result<Vec<Bytes>, BrokerError> {
    let ttl = node
        .apps()
        .get(app)
        .map_or(DEFAULT_EXPIRE_AFTER, |a| a.notifications.expire_after);
    let outcome = node
        .broker()
        .notifications(app, user, PendingOp::List, now_micros(), micros(ttl))
        .await?;
    node.notifier().record(&outcome);
    node.notifier()
        .delivered(outcome.deliver.iter().map(Entry::count).sum());
    Ok(outcome.deliver.iter().map(frame).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switches::{Scope, Subject, Switch, SwitchSpec, Switches};

    #[test]
    fn the_notifications_scope_takes_an_optional_app_and_covers_no_subscription() {
        let spec = |app| SwitchSpec {
            scope: "notifications",
            app,
            ..SwitchSpec::default()
        };
        let one = Switch::parse(&spec(Some("bluelib"))).expect("valid");
        let every = Switch::parse(&spec(None)).expect("valid");
        assert_eq!(one.scope, Scope::Notifications);
        let with_user = SwitchSpec {
            user: Some("roger"),
            ..spec(None)
        };
        assert!(Switch::parse(&with_user).is_err());
        let subject = Subject {
            app: "bluelib",
            channel: "bornes",
            ..Subject::default()
        };
        assert!(!one.covers(&subject) && !every.covers(&subject));
        let switches = Switches::new([one]);
        assert!(switches.notifications_off("bluelib"));
        assert!(!switches.notifications_off("other"));
        assert!(Switches::new([every]).notifications_off("other"));
    }

    #[test]
    fn frames_carry_the_protocol_fields() {
        let entry = Entry {
            id: "n-1".into(),
            kind: "comment".into(),
            title: "t".into(),
            body: "b".into(),
            link: None,
            data: Some(r#"{"post":7}"#.into()),
            created: 1_700_000_000_000_000,
            group: Some(Group {
                count: 2,
                ids: vec!["n-1".into(), "n-2".into()],
                first: 1_700_000_000_000_000,
                last: 1_700_000_001_000_000,
                closed: true,
            }),
            from: None,
        };
        let v: serde_json::Value = serde_json::from_slice(&frame(&entry)).expect("JSON");
        assert_eq!(v["class"], "notification");
        assert_eq!(v["data"], serde_json::json!({"post": 7}));
        assert!(v.get("link").is_none(), "{v}");
        assert_eq!(v["created"], "2023-11-14T22:13:20.000000Z");
        assert_eq!(v["grouped"]["count"], 2);
        assert_eq!(v["grouped"]["last"], "2023-11-14T22:13:21.000000Z");
        assert!(v["grouped"].get("closed").is_none(), "{v}");
    }
}
