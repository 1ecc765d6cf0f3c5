//! XMPP federation (docs/federation.md): the gateway joins an XMPP server
//! as a component (XEP-0114) and exchanges SenML packs with other
//! organisations' gateways, through durable mailboxes in Postgres after the
//! sen1 proxies' model.
//!
//! Four jobs per component, each on its own timer and its own database
//! connection, so one stalled part never stops another:
//! - **fill** (`fill_interval`): for each consumer, reads its channel's
//!   history after the consumer's stored position, and in one transaction
//!   writes the matching events' packs to the outbox and moves the
//!   position: an event is in the outbox before the consumer passes it;
//! - **link** (this task): keeps the component logged in; every
//!   `send_interval` writes the outbox entries that are due, each with its
//!   message id, asking for a receipt (XEP-0184), and sets its next attempt
//!   after an exponential backoff; a receipt removes the entry. Incoming
//!   messages are stored in the inbox (unique on sender and message id)
//!   before they are acknowledged, so a repeat is acknowledged again and
//!   stored once;
//! - **process** (`process_interval`): publishes pending inbox entries
//!   (validated, ids mapped back) through ingest, or marks them failed with
//!   the reason;
//! - **housekeeping** (every second): reads the mailboxes' sizes and ages
//!   for metrics and status, and forgets published entries past
//!   `keep_processed`.

pub mod config;
pub mod pack;
pub mod status;
pub mod store;
pub mod stream;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chouquette_core::ingest::{self, Caller, Outcome, Refusal};
use chouquette_core::node::Node;
use chouquette_core::publication::{ChannelId, NewEvent};
use tokio::time::MissedTickBehavior;

pub use config::{ConsumerSettings, IncomingSettings, Secret, XmppSettings};
pub use status::{Status, Statuses};

use self::status::Count;
use self::store::{Db, StoreError};
use self::stream::{Element, Link, LinkError, RECEIPTS, bare};
use super::Source;
use crate::broker::redis::backoff;
use crate::shutdown::Shutdown;

/// How often the housekeeping job reads the mailboxes' gauges.
const GAUGE_EVERY: Duration = Duration::from_secs(1);
/// How often it forgets old published inbox entries.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

/// One XMPP component with its mailboxes.
pub struct XmppSource {
    settings: Arc<XmppSettings>,
    status: Arc<Status>,
}

impl XmppSource {
    pub fn new(settings: XmppSettings, statuses: &mut Statuses) -> XmppSource {
        let status = Arc::new(Status::new(&settings.component));
        statuses.push(status.clone());
        XmppSource {
            settings: Arc::new(settings),
            status,
        }
    }
}

impl Source for XmppSource {
    async fn run(self, node: Arc<Node>, mut shutdown: Shutdown) {
        let XmppSource { settings, status } = self;
        if !prepare(&settings, &status, &mut shutdown).await {
            return;
        }
        let jobs = [
            tokio::spawn(fill_job(
                node.clone(),
                settings.clone(),
                status.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(process_job(
                node,
                settings.clone(),
                status.clone(),
                shutdown.clone(),
            )),
            tokio::spawn(housekeeping(
                settings.clone(),
                status.clone(),
                shutdown.clone(),
            )),
        ];
        link_job(&settings, &status, &mut shutdown).await;
        for job in jobs {
            job.abort();
        }
    }
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The wait before sending again an entry tried `attempts` times.
fn retry_after(settings: &XmppSettings, attempts: i32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.clamp(0, 20) as u32);
    settings
        .retry_initial
        .saturating_mul(factor)
        .min(settings.retry_max)
}

/// Creates the schema and records the federated apps, retrying until the
/// database answers; false when stopped first.
async fn prepare(settings: &XmppSettings, status: &Status, shutdown: &mut Shutdown) -> bool {
    let mut db = Db::new(settings.database.expose());
    let mut failures = 0u32;
    loop {
        let attempt = async {
            let client = db.client().await?;
            store::migrate(client).await?;
            let apps: Vec<(String, &'static str)> = settings
                .consumers
                .iter()
                .map(|c| (c.to.clone(), "out"))
                .chain(settings.incoming.iter().map(|r| (r.from.clone(), "in")))
                .collect();
            store::register_apps(client, &settings.component, &apps).await
        };
        match attempt.await {
            Ok(()) => {
                status.set_store(None);
                return true;
            }
            Err(e) => {
                db.failed();
                tracing::warn!(component = %settings.component, error = %e, "federation mailboxes not ready; retrying");
                status.set_store(Some(format!("mailboxes: {e}")));
            }
        }
        tokio::select! {
            _ = shutdown.stopped() => return false,
            _ = tokio::time::sleep(backoff(failures, settings.reconnect_max)) => {}
        }
        failures = failures.saturating_add(1);
    }
}

/// Why one run of a job stopped.
#[derive(Debug, thiserror::Error)]
enum JobError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Keeps the component logged in, serving each link until it breaks.
async fn link_job(settings: &XmppSettings, status: &Status, shutdown: &mut Shutdown) {
    let mut db = Db::new(settings.database.expose());
    let mut failures = 0u32;
    loop {
        let connect = stream::connect(
            &settings.server,
            &settings.component,
            settings.secret.expose(),
            settings.max_stanza_bytes,
        );
        let linked = tokio::select! {
            _ = shutdown.stopped() => return,
            linked = connect => linked,
        };
        match linked {
            Ok(mut link) => {
                tracing::info!(component = %settings.component, server = %settings.server, "federation linked to the XMPP server");
                status.set_link(None);
                failures = 0;
                match serve_link(&mut link, &mut db, settings, status, shutdown).await {
                    None => {
                        link.close().await;
                        return;
                    }
                    Some(e) => {
                        tracing::warn!(component = %settings.component, error = %e, "federation link lost; reconnecting");
                        status.set_link(Some(format!("link: {e}")));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(component = %settings.component, server = %settings.server, error = %e, "federation cannot link to the XMPP server; retrying");
                status.set_link(Some(format!("link: {e}")));
            }
        }
        tokio::select! {
            _ = shutdown.stopped() => return,
            _ = tokio::time::sleep(backoff(failures, settings.reconnect_max)) => {}
        }
        failures = failures.saturating_add(1);
    }
}

/// Serves one link: incoming stanzas, and due outbox entries on each tick.
/// `None` when stopping, else why the link broke.
async fn serve_link(
    link: &mut Link,
    db: &mut Db,
    settings: &XmppSettings,
    status: &Status,
    shutdown: &mut Shutdown,
) -> Option<LinkError> {
    let mut tick = tokio::time::interval(settings.send_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let result = tokio::select! {
            _ = shutdown.stopped() => return None,
            stanza = link.stanzas.recv() => match stanza {
                Some(Ok(element)) => on_stanza(link, db, settings, status, &element).await,
                Some(Err(e)) => return Some(e),
                None => return Some(LinkError::Closed),
            },
            _ = tick.tick() => send_due(link, db, settings, status).await,
        };
        match result {
            Ok(()) => {}
            Err(JobError::Link(e)) => return Some(e),
            Err(JobError::Store(e)) => {
                db.failed();
                status.add(Count::Failures, 1);
                status.set_store(Some(format!("mailboxes: {e}")));
                tracing::warn!(component = %settings.component, error = %e, "federation mailboxes failed; the sender will retry");
            }
        }
    }
}

/// Writes the outbox entries that are due and sets their next attempt.
async fn send_due(
    link: &mut Link,
    db: &mut Db,
    settings: &XmppSettings,
    status: &Status,
) -> Result<(), JobError> {
    let client = db.client().await?;
    let due = store::due(client, &settings.component, settings.batch).await?;
    for entry in due {
        link.send_message(
            &settings.component,
            &entry.to,
            &entry.message_id,
            &entry.body,
        )
        .await?;
        status.add(Count::Sent, 1);
        if entry.attempts > 0 {
            status.add(Count::Retried, 1);
        }
        let wait = retry_after(settings, entry.attempts);
        store::attempted(client, entry.id, wait, None).await?;
    }
    Ok(())
}

/// A message from the server: a receipt, an incoming pack, or an error.
async fn on_stanza(
    link: &mut Link,
    db: &mut Db,
    settings: &XmppSettings,
    status: &Status,
    element: &Element,
) -> Result<(), JobError> {
    if element.name != "message" {
        return Ok(());
    }
    let from = element.attr("from").unwrap_or_default();
    let id = element.attr("id").unwrap_or_default();
    if element.attr("type") == Some("error") {
        status.add(Count::Bounced, 1);
        tracing::warn!(component = %settings.component, %from, %id, "federation message bounced by the server; it will be sent again");
        return Ok(());
    }
    if let Some(receipt) = element.child("received")
        && receipt.attr("xmlns") == Some(RECEIPTS)
        && let Some(acked) = receipt.attr("id")
    {
        let client = db.client().await?;
        if store::delivered(client, &settings.component, bare(from), acked).await? {
            status.add(Count::Delivered, 1);
        }
    }
    let Some(body) = element.child("body") else {
        return Ok(());
    };
    receive(link, db, settings, status, from, id, &body.text).await
}

/// Stores an incoming message, then acknowledges it (known senders only).
async fn receive(
    link: &mut Link,
    db: &mut Db,
    settings: &XmppSettings,
    status: &Status,
    from: &str,
    id: &str,
    body: &str,
) -> Result<(), JobError> {
    let sender = bare(from);
    if id.is_empty() {
        status.add(Count::Refused, 1);
        tracing::warn!(component = %settings.component, %from, "federation message without an id refused");
        return Ok(());
    }
    if status.gauges().inbox_rows >= settings.max_inbox {
        status.add(Count::InboxFull, 1);
        tracing::warn!(component = %settings.component, %from, %id, "federation inbox full: message not stored nor acknowledged");
        return Ok(());
    }
    let client = db.client().await?;
    if settings.incoming_from(sender).is_none() {
        store::receive(
            client,
            &settings.component,
            sender,
            id,
            body,
            Some("unknown sender"),
        )
        .await?;
        status.add(Count::Refused, 1);
        tracing::warn!(component = %settings.component, %from, %id, "federation message from an unknown sender refused (kept as a failed inbox entry)");
        return Ok(());
    }
    match store::receive(client, &settings.component, sender, id, body, None).await? {
        store::Stored::New => status.add(Count::Received, 1),
        store::Stored::Repeat => status.add(Count::Repeats, 1),
    }
    link.send_receipt(&settings.component, from, id).await?;
    Ok(())
}

/// Copies matching events into the outbox on its timer.
async fn fill_job(
    node: Arc<Node>,
    settings: Arc<XmppSettings>,
    status: Arc<Status>,
    mut shutdown: Shutdown,
) {
    let mut db = Db::new(settings.database.expose());
    let mut tick = tokio::time::interval(settings.fill_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.stopped() => return,
            _ = tick.tick() => {}
        }
        for consumer in &settings.consumers {
            if status.gauges().outbox >= settings.max_outbox {
                break;
            }
            if let Err(e) = fill_consumer(&node, &mut db, &settings, &status, consumer).await {
                db.failed();
                status.add(Count::Failures, 1);
                status.set_store(Some(format!("mailboxes: {e}")));
                tracing::warn!(component = %settings.component, consumer = %consumer.name, error = %e, "federation outbox fill failed; retrying");
                break;
            }
        }
    }
}

/// One consumer's step: the events after its position, into the outbox.
async fn fill_consumer(
    node: &Node,
    db: &mut Db,
    settings: &XmppSettings,
    status: &Status,
    consumer: &ConsumerSettings,
) -> Result<(), StoreError> {
    let client = db.client().await?;
    let cursor = store::cursor(client, &settings.component, &consumer.name).await?;
    let Some(app) = node.apps().get(&consumer.app) else {
        return Ok(());
    };
    let policy = app.channel_policy(&consumer.channel);
    let channel = ChannelId::new(&consumer.app, &consumer.channel);
    let since = cursor
        .as_ref()
        .map(|(epoch, offset)| (epoch.as_str(), *offset));
    let recovered = match node.broker().recover(&channel, policy, since, false).await {
        Ok(recovered) => recovered,
        // The broker is away: the events wait in its history.
        Err(_) => return Ok(()),
    };
    let (offset, events) = match &cursor {
        // A new consumer starts at the channel's present.
        None => (recovered.top, Vec::new()),
        Some(_) if recovered.gap => {
            status.add(Count::Gaps, 1);
            tracing::error!(component = %settings.component, consumer = %consumer.name,
                "federation consumer fell behind its channel's history: events were lost before the outbox");
            (recovered.top, Vec::new())
        }
        Some((_, offset)) => {
            let events: Vec<_> = recovered.events.into_iter().take(settings.batch).collect();
            (events.last().map_or(*offset, |p| p.offset), events)
        }
    };
    let moved = cursor
        .as_ref()
        .is_none_or(|(epoch, at)| **epoch != *recovered.epoch || *at != offset);
    if !moved {
        return Ok(());
    }
    let now = now_seconds();
    let entries: Vec<store::NewOut> = events
        .iter()
        .filter(|p| {
            consumer
                .filter
                .as_ref()
                .is_none_or(|f| f.matches(&p.event_kind, &p.keywords))
        })
        .filter_map(|p| {
            let body = pack::outgoing(consumer, p.data().get(), p.key.as_deref(), now)?;
            Some(store::NewOut {
                message_id: format!("{}/{}/{}", consumer.name, recovered.epoch, p.offset),
                to: consumer.to.clone(),
                body,
            })
        })
        .collect();
    let position = store::Position {
        consumer: &consumer.name,
        app: &consumer.app,
        channel: &consumer.channel,
        to: &consumer.to,
        epoch: &recovered.epoch,
        offset,
    };
    store::fill(client, &settings.component, &position, &entries).await?;
    status.add(Count::Filled, entries.len() as u64);
    Ok(())
}

/// Publishes pending inbox entries on its timer.
async fn process_job(
    node: Arc<Node>,
    settings: Arc<XmppSettings>,
    status: Arc<Status>,
    mut shutdown: Shutdown,
) {
    let mut db = Db::new(settings.database.expose());
    let mut tick = tokio::time::interval(settings.process_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.stopped() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = process_once(&node, &mut db, &settings, &status).await {
            db.failed();
            status.add(Count::Failures, 1);
            status.set_store(Some(format!("mailboxes: {e}")));
            tracing::warn!(component = %settings.component, error = %e, "federation inbox processing failed; retrying");
        }
    }
}

/// One pass over the pending inbox entries, oldest first.
async fn process_once(
    node: &Node,
    db: &mut Db,
    settings: &XmppSettings,
    status: &Status,
) -> Result<(), StoreError> {
    let client = db.client().await?;
    let pending = store::pending(client, &settings.component, settings.batch).await?;
    let now = now_seconds();
    let mut ready: Vec<(i64, NewEvent)> = Vec::new();
    for entry in pending {
        let Some(rule) = settings.incoming_from(&entry.from) else {
            store::processed(client, entry.id, Some("unknown sender")).await?;
            status.add(Count::Refused, 1);
            continue;
        };
        match pack::incoming(rule, &entry.from, &entry.message_id, &entry.body, now) {
            Ok(event) => ready.push((entry.id, event)),
            Err(e) => {
                let reason = e.to_string();
                tracing::warn!(component = %settings.component, from = %entry.from, id = %entry.message_id, %reason, "federation message refused (kept as a failed inbox entry)");
                store::processed(client, entry.id, Some(&reason)).await?;
                status.add(Count::Refused, 1);
            }
        }
    }
    if ready.is_empty() {
        return Ok(());
    }
    let (ids, events): (Vec<i64>, Vec<NewEvent>) = ready.into_iter().unzip();
    let report = ingest::submit(
        node,
        Caller::Source,
        events.into_iter().map(|e| vec![e]).collect(),
    )
    .await;
    for (id, outcomes) in ids.into_iter().zip(report.groups) {
        match outcomes.first() {
            Some(Outcome::Published(_)) => {
                store::processed(client, id, None).await?;
                status.add(Count::Published, 1);
            }
            // Later: rate limited, or the broker away.
            Some(Outcome::Refused(Refusal::RateLimited { .. }))
            | Some(Outcome::NotAttempted(_))
            | None => break,
            Some(Outcome::Refused(refusal)) => {
                let reason = format!("refused: {refusal}");
                tracing::warn!(component = %settings.component, %reason, "federation event refused (kept as a failed inbox entry)");
                store::processed(client, id, Some(&reason)).await?;
                status.add(Count::Refused, 1);
            }
        }
    }
    Ok(())
}

/// Reads the gauges every second and prunes published entries.
async fn housekeeping(settings: Arc<XmppSettings>, status: Arc<Status>, mut shutdown: Shutdown) {
    let mut db = Db::new(settings.database.expose());
    let mut tick = tokio::time::interval(GAUGE_EVERY);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_prune = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = shutdown.stopped() => return,
            _ = tick.tick() => {}
        }
        let run = async {
            let client = db.client().await?;
            let gauges = store::gauges(client, &settings.component).await?;
            if last_prune.elapsed() >= PRUNE_EVERY {
                store::prune(client, &settings.component, settings.keep_processed).await?;
                last_prune = tokio::time::Instant::now();
            }
            Ok::<_, StoreError>(gauges)
        };
        match run.await {
            Ok(gauges) => {
                status.set_gauges(gauges);
                status.set_store(None);
            }
            Err(e) => {
                db.failed();
                status.set_store(Some(format!("mailboxes: {e}")));
            }
        }
    }
}
