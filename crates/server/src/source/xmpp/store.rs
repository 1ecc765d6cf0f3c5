//! The mailboxes in Postgres, after the sen1 proxies' model: the outbox
//! (events waiting to be sent and acknowledged), the inbox (messages
//! received, waiting to be published, or kept as failed with the reason),
//! the consumers (each rule's position in its channel) and the federated
//! apps (the JIDs the component talks to, mirrored from the config). The
//! schema is created at start by numbered migrations.
//!
//! Each job holds its own [`Db`]: a connection made on first use and made
//! again after any error, so a restarted Postgres costs each job one failed
//! run, never an event.

use std::time::Duration;

use tokio_postgres::{Client, NoTls};

/// Why a mailbox operation failed (the job retries at its next run).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("postgres: {0}")]
    Postgres(#[from] tokio_postgres::Error),
}

/// The schema, one statement list per version, applied in order once.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE fed_app (
    component text NOT NULL,
    jid text NOT NULL,
    direction text NOT NULL CHECK (direction IN ('in', 'out')),
    PRIMARY KEY (component, jid, direction)
);
CREATE TABLE fed_consumer (
    component text NOT NULL,
    name text NOT NULL,
    app text NOT NULL,
    channel text NOT NULL,
    to_jid text NOT NULL,
    epoch text NOT NULL,
    position bigint NOT NULL,
    PRIMARY KEY (component, name)
);
CREATE TABLE fed_outbox (
    id bigserial PRIMARY KEY,
    component text NOT NULL,
    consumer text NOT NULL,
    message_id text NOT NULL,
    to_jid text NOT NULL,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error text,
    UNIQUE (component, message_id)
);
CREATE INDEX fed_outbox_due ON fed_outbox (component, next_attempt_at);
CREATE TABLE fed_inbox (
    id bigserial PRIMARY KEY,
    component text NOT NULL,
    from_jid text NOT NULL,
    message_id text NOT NULL,
    body text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    status text NOT NULL CHECK (status IN ('pending', 'published', 'failed')),
    reason text,
    processed_at timestamptz,
    UNIQUE (component, from_jid, message_id)
);
CREATE INDEX fed_inbox_status ON fed_inbox (component, status, id);
"#];

/// A connection to the mailboxes' database, made again after a failure.
pub struct Db {
    url: String,
    client: Option<Client>,
}

impl Db {
    pub fn new(url: &str) -> Db {
        Db {
            url: url.to_string(),
            client: None,
        }
    }

    /// The connection, made now if there is none (or it broke).
    pub async fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            let (client, connection) = tokio_postgres::connect(&self.url, NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::debug!(error = %e, "federation mailbox connection ended");
                }
            });
            self.client = Some(client);
        }
        match &mut self.client {
            Some(client) => Ok(client),
            None => unreachable!("set above"),
        }
    }

    /// Forgets the connection after an error, so the next use makes another.
    pub fn failed(&mut self) {
        self.client = None;
    }
}

/// Applies the migrations not applied yet (under an advisory lock, so two
/// gateways starting together do not race).
pub async fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.batch_execute(
        "SELECT pg_advisory_xact_lock(7263541);
         CREATE TABLE IF NOT EXISTS fed_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    .await?;
    let done: i32 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM fed_migrations", &[])
        .await?
        .get(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(done.max(0) as usize) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO fed_migrations (version) VALUES ($1)",
            &[&(i as i32 + 1)],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Records the JIDs the component sends to and accepts from.
pub async fn register_apps(
    client: &Client,
    component: &str,
    apps: &[(String, &'static str)],
) -> Result<(), StoreError> {
    for (jid, direction) in apps {
        client
            .execute(
                "INSERT INTO fed_app (component, jid, direction) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&component, jid, direction],
            )
            .await?;
    }
    Ok(())
}

/// A consumer's position: the channel's epoch and the last offset copied.
pub async fn cursor(
    client: &Client,
    component: &str,
    consumer: &str,
) -> Result<Option<(String, u64)>, StoreError> {
    let row = client
        .query_opt(
            "SELECT epoch, position FROM fed_consumer WHERE component = $1 AND name = $2",
            &[&component, &consumer],
        )
        .await?;
    Ok(row.map(|r| (r.get(0), r.get::<_, i64>(1).max(0) as u64)))
}

/// One outbox entry to write.
#[derive(Debug, Clone)]
pub struct NewOut {
    pub message_id: String,
    pub to: String,
    pub body: String,
}

/// The rule of a consumer, stored with its position.
pub struct Position<'a> {
    pub consumer: &'a str,
    pub app: &'a str,
    pub channel: &'a str,
    pub to: &'a str,
    pub epoch: &'a str,
    pub offset: u64,
}

/// Writes `entries` to the outbox and moves the consumer to `position`, in
/// one transaction: an event is either copied and passed, or neither.
pub async fn fill(
    client: &mut Client,
    component: &str,
    position: &Position<'_>,
    entries: &[NewOut],
) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    for entry in entries {
        tx.execute(
            "INSERT INTO fed_outbox (component, consumer, message_id, to_jid, body) VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
            &[&component, &position.consumer, &entry.message_id, &entry.to, &entry.body],
        )
        .await?;
    }
    tx.execute(
        "INSERT INTO fed_consumer (component, name, app, channel, to_jid, epoch, position) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (component, name) DO UPDATE SET app = $3, channel = $4, to_jid = $5, epoch = $6, position = $7",
        &[&component, &position.consumer, &position.app, &position.channel, &position.to, &position.epoch, &(position.offset as i64)],
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// An outbox entry due to be sent.
#[derive(Debug, Clone)]
pub struct Due {
    pub id: i64,
    pub message_id: String,
    pub to: String,
    pub body: String,
    pub attempts: i32,
}

/// The oldest entries whose next attempt is due.
pub async fn due(client: &Client, component: &str, batch: usize) -> Result<Vec<Due>, StoreError> {
    let rows = client
        .query(
            "SELECT id, message_id, to_jid, body, attempts FROM fed_outbox
             WHERE component = $1 AND next_attempt_at <= now() ORDER BY id LIMIT $2",
            &[&component, &(batch as i64)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Due {
            id: r.get(0),
            message_id: r.get(1),
            to: r.get(2),
            body: r.get(3),
            attempts: r.get(4),
        })
        .collect())
}

/// Counts an attempt and sets the next one `wait` from now.
pub async fn attempted(
    client: &Client,
    id: i64,
    wait: Duration,
    error: Option<&str>,
) -> Result<(), StoreError> {
    let seconds = wait.as_secs_f64();
    client
        .execute(
            "UPDATE fed_outbox SET attempts = attempts + 1,
               next_attempt_at = now() + make_interval(secs => $2), last_error = coalesce($3, last_error)
             WHERE id = $1",
            &[&id, &seconds, &error],
        )
        .await?;
    Ok(())
}

/// The receiver has it: the entry leaves the outbox. Whether it was there.
pub async fn delivered(
    client: &Client,
    component: &str,
    from: &str,
    message_id: &str,
) -> Result<bool, StoreError> {
    let n = client
        .execute(
            "DELETE FROM fed_outbox WHERE component = $1 AND message_id = $2 AND to_jid = $3",
            &[&component, &message_id, &from],
        )
        .await?;
    Ok(n > 0)
}

/// What storing an incoming message did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    New,
    /// Its sender and id were stored already: a repeat.
    Repeat,
}

/// Stores an incoming message (idempotent on sender and message id).
pub async fn receive(
    client: &Client,
    component: &str,
    from: &str,
    message_id: &str,
    body: &str,
    failed: Option<&str>,
) -> Result<Stored, StoreError> {
    let status = if failed.is_some() {
        "failed"
    } else {
        "pending"
    };
    let n = client
        .execute(
            "INSERT INTO fed_inbox (component, from_jid, message_id, body, status, reason, processed_at)
             VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $5 = 'failed' THEN now() END)
             ON CONFLICT DO NOTHING",
            &[&component, &from, &message_id, &body, &status, &failed],
        )
        .await?;
    Ok(if n > 0 { Stored::New } else { Stored::Repeat })
}

/// An inbox entry waiting to be published.
#[derive(Debug, Clone)]
pub struct Pending {
    pub id: i64,
    pub from: String,
    pub message_id: String,
    pub body: String,
}

/// The oldest pending inbox entries, in arrival order.
pub async fn pending(
    client: &Client,
    component: &str,
    batch: usize,
) -> Result<Vec<Pending>, StoreError> {
    let rows = client
        .query(
            "SELECT id, from_jid, message_id, body FROM fed_inbox
             WHERE component = $1 AND status = 'pending' ORDER BY id LIMIT $2",
            &[&component, &(batch as i64)],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| Pending {
            id: r.get(0),
            from: r.get(1),
            message_id: r.get(2),
            body: r.get(3),
        })
        .collect())
}

/// Marks an inbox entry published, or failed with `reason`.
pub async fn processed(client: &Client, id: i64, reason: Option<&str>) -> Result<(), StoreError> {
    let status = if reason.is_some() {
        "failed"
    } else {
        "published"
    };
    client
        .execute(
            "UPDATE fed_inbox SET status = $2, reason = $3, processed_at = now() WHERE id = $1",
            &[&id, &status, &reason],
        )
        .await?;
    Ok(())
}

/// Forgets published entries older than `keep` (failed ones stay for an
/// operator to read and delete).
pub async fn prune(client: &Client, component: &str, keep: Duration) -> Result<u64, StoreError> {
    let seconds = keep.as_secs_f64();
    Ok(client
        .execute(
            "DELETE FROM fed_inbox WHERE component = $1 AND status = 'published'
               AND processed_at < now() - make_interval(secs => $2)",
            &[&component, &seconds],
        )
        .await?)
}

/// The mailboxes' sizes and ages, for metrics and status.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Gauges {
    pub outbox: i64,
    pub outbox_oldest_seconds: f64,
    pub inbox_pending: i64,
    pub inbox_oldest_seconds: f64,
    pub inbox_failed: i64,
    /// Every inbox row (pending, published and kept, failed).
    pub inbox_rows: i64,
}

pub async fn gauges(client: &Client, component: &str) -> Result<Gauges, StoreError> {
    let out = client
        .query_one(
            "SELECT count(*), coalesce(extract(epoch FROM now() - min(created_at))::float8, 0) FROM fed_outbox WHERE component = $1",
            &[&component],
        )
        .await?;
    let inbox = client
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'pending'),
                    coalesce(extract(epoch FROM now() - min(received_at) FILTER (WHERE status = 'pending'))::float8, 0),
                    count(*) FILTER (WHERE status = 'failed'),
                    count(*)
             FROM fed_inbox WHERE component = $1",
            &[&component],
        )
        .await?;
    Ok(Gauges {
        outbox: out.get(0),
        outbox_oldest_seconds: out.get(1),
        inbox_pending: inbox.get(0),
        inbox_oldest_seconds: inbox.get(1),
        inbox_failed: inbox.get(2),
        inbox_rows: inbox.get(3),
    })
}
