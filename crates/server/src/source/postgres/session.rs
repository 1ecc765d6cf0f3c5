//! The SQL connection to Postgres: checks that it can replicate, creates
//! the publication and slot when missing, names the cluster, and watches
//! the slot's lag. The slot itself is read by the replication connection
//! (`replication`), not here.

use tokio_postgres::{Client, NoTls};

use super::change::ChangeError;
use super::config::PostgresSettings;

/// Why a session ended (the source reconnects after a backoff).
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("postgres: {}", describe(.0))]
    Postgres(#[from] tokio_postgres::Error),
    #[error(
        "postgres has wal_level = {0}; logical replication needs wal_level = logical (and a restart)"
    )]
    WalLevel(String),
    #[error(
        "role `{0}` may not replicate: it needs the REPLICATION attribute (ALTER ROLE {0} REPLICATION)"
    )]
    NoReplication(String),
    #[error("table {0} does not exist")]
    NoTable(String),
    #[error(
        "publication `{0}` exists but does not publish {1}: ALTER PUBLICATION {0} ADD TABLE {1}"
    )]
    NotPublished(String, String),
    #[error("slot `{0}` exists with output plugin `{1}`, not pgoutput")]
    WrongPlugin(String, String),
    #[error(
        "slot `{0}` has lost WAL it had not read (wal_status = lost): changes were missed; drop the slot and resynchronise"
    )]
    SlotLost(String),
    #[error(transparent)]
    Change(#[from] ChangeError),
    #[error(transparent)]
    Replication(#[from] super::replication::ReplicationError),
    #[error(transparent)]
    Wire(#[from] super::wire::WireError),
    #[error("postgres ended the replication stream")]
    StreamEnded,
    #[error(transparent)]
    Lease(#[from] super::lease::LeaseError),
    #[error("another gateway took the slot's lease over")]
    LeaseLost,
    #[error("{0}")]
    Broker(#[from] chouquette_core::broker::BrokerError),
}

/// What the server said (`tokio-postgres` shows only "db error"), or the
/// error with its cause.
fn describe(e: &tokio_postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => format!("{}: {} ({})", db.severity(), db.message(), db.code().code()),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    }
}

/// The slot's standing, as Postgres reports it.
#[derive(Debug, Clone, Default)]
pub(super) struct SlotLag {
    /// WAL written since the slot's acknowledged position.
    pub bytes: u64,
    /// `reserved`, `extended`, `unreserved` or `lost`.
    pub wal_status: String,
}

/// A connected, checked session.
pub(super) struct Session {
    client: Client,
    /// `pg:<system identifier>`, the prefix of event ids.
    pub origin: String,
}

impl Session {
    /// Connects, checks the server and role, and sets up what is missing.
    pub async fn open(settings: &PostgresSettings) -> Result<Session, SessionError> {
        let (client, connection) = tokio_postgres::connect(&settings.url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "postgres connection ended");
            }
        });
        let session = Session {
            origin: String::new(),
            client,
        };
        session.check_server().await?;
        session.ensure_publication(settings).await?;
        session.ensure_slot(&settings.slot).await?;
        let origin = session.origin().await?;
        Ok(Session { origin, ..session })
    }

    async fn check_server(&self) -> Result<(), SessionError> {
        let level: String = self
            .client
            .query_one("SHOW wal_level", &[])
            .await?
            .try_get(0)?;
        if level != "logical" {
            return Err(SessionError::WalLevel(level));
        }
        let row = self
            .client
            .query_one(
                "SELECT current_user::text, rolreplication OR rolsuper FROM pg_roles \
                 WHERE rolname = current_user",
                &[],
            )
            .await?;
        let (role, may): (String, bool) = (row.try_get(0)?, row.try_get(1)?);
        if may {
            Ok(())
        } else {
            Err(SessionError::NoReplication(role))
        }
    }

    async fn ensure_publication(&self, settings: &PostgresSettings) -> Result<(), SessionError> {
        for table in &settings.tables {
            let exists: bool = self
                .client
                .query_one(
                    "SELECT to_regclass($1::text) IS NOT NULL",
                    &[&table.quoted()],
                )
                .await?
                .try_get(0)?;
            if !exists {
                return Err(SessionError::NoTable(table.qualified()));
            }
        }
        let publication = &settings.publication;
        let found = self
            .client
            .query_opt(
                "SELECT 1 FROM pg_publication WHERE pubname = $1",
                &[publication],
            )
            .await?;
        if found.is_none() {
            let list: Vec<String> = settings.tables.iter().map(|t| t.quoted()).collect();
            // Names were checked by the config loader: identifiers only.
            let sql = format!(
                "CREATE PUBLICATION \"{publication}\" FOR TABLE {}",
                list.join(", ")
            );
            self.client.batch_execute(&sql).await?;
            tracing::info!(%publication, "created the publication");
            return Ok(());
        }
        for table in &settings.tables {
            let published = self
                .client
                .query_opt(
                    "SELECT 1 FROM pg_publication_tables \
                     WHERE pubname = $1 AND schemaname = $2 AND tablename = $3",
                    &[publication, &table.schema, &table.name],
                )
                .await?;
            if published.is_none() {
                return Err(SessionError::NotPublished(
                    publication.clone(),
                    table.qualified(),
                ));
            }
        }
        Ok(())
    }

    async fn ensure_slot(&self, slot: &str) -> Result<(), SessionError> {
        let found = self
            .client
            .query_opt(
                "SELECT plugin::text FROM pg_replication_slots \
                 WHERE slot_name = $1 AND database = current_database()",
                &[&slot],
            )
            .await?;
        match found {
            Some(row) => {
                let plugin: String = row.try_get(0)?;
                if plugin != "pgoutput" {
                    return Err(SessionError::WrongPlugin(slot.to_string(), plugin));
                }
            }
            None => {
                self.client
                    .execute(
                        "SELECT pg_create_logical_replication_slot($1, 'pgoutput')",
                        &[&slot],
                    )
                    .await?;
                tracing::info!(%slot, "created the replication slot");
            }
        }
        Ok(())
    }

    /// `pg:<system identifier>`; the database name when the role may not
    /// read the control data.
    async fn origin(&self) -> Result<String, SessionError> {
        let sysid = self
            .client
            .query_one(
                "SELECT system_identifier::text FROM pg_control_system()",
                &[],
            )
            .await
            .and_then(|row| row.try_get::<_, String>(0));
        Ok(match sysid {
            Ok(id) => format!("pg:{id}"),
            Err(_) => {
                let db: String = self
                    .client
                    .query_one("SELECT current_database()::text", &[])
                    .await?
                    .try_get(0)?;
                format!("pg:{db}")
            }
        })
    }

    /// How far behind the slot is.
    pub async fn lag(&self, slot: &str) -> Result<SlotLag, SessionError> {
        let row = self
            .client
            .query_opt(
                "SELECT GREATEST(pg_current_wal_lsn() - confirmed_flush_lsn, 0)::bigint, \
                 COALESCE(wal_status, '') FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await?;
        let Some(row) = row else {
            return Ok(SlotLag::default());
        };
        let bytes: Option<i64> = row.try_get(0)?;
        Ok(SlotLag {
            bytes: bytes.and_then(|b| u64::try_from(b).ok()).unwrap_or(0),
            wal_status: row.try_get(1)?,
        })
    }
}
