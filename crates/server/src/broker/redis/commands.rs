//! Reaching Redis: where it is ([`Target`]), and the command connection
//! ([`Commands`]): one multiplexed connection to a server (given, or the
//! master the Sentinels name), or a Cluster connection that routes each
//! command and script to the shard owning its keys (a channel's keys share
//! one hash tag). Pub/sub needs no routing: a PUBLISH on any Cluster node
//! reaches the subscribers of every node, so the link listens on one.

use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection, PubSub};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{AsyncConnectionConfig, Client, Cmd, Pipeline, RedisError, RedisFuture, Value};
use tokio::time::timeout;

use super::RedisSettings;

/// Where Redis is. Its `Debug` hides a URL's password, so it is safe in logs.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// A server URL, `redis://[user:password@]host:port[/db]`.
    Url(String),
    /// Ask these Sentinels (`host:port`) for the master named `master`.
    Sentinel {
        /// Sentinel addresses, tried in order.
        addresses: Vec<String>,
        /// The monitored master's name.
        master: String,
        /// Database number on the master.
        db: i64,
    },
    /// A Redis Cluster, reached through any of these nodes (`host:port`).
    Cluster {
        /// Seed nodes.
        nodes: Vec<String>,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Url(url) => {
                // `scheme://user:password@host...` → `scheme://***@host...`
                let shown = match (url.find("://"), url.rfind('@')) {
                    (Some(scheme), Some(at)) if at > scheme => {
                        format!("{}***{}", &url[..scheme + 3], &url[at..])
                    }
                    _ => url.clone(),
                };
                f.debug_tuple("Url").field(&shown).finish()
            }
            Target::Sentinel {
                addresses, master, ..
            } => f
                .debug_struct("Sentinel")
                .field("addresses", addresses)
                .field("master", master)
                .finish_non_exhaustive(),
            Target::Cluster { nodes } => f.debug_struct("Cluster").field("nodes", nodes).finish(),
        }
    }
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Redis refused or failed.
    #[error("{0}")]
    Redis(#[from] RedisError),
    /// No answer in time.
    #[error("timed out connecting to Redis")]
    Timeout,
    /// No Sentinel knew a master that answers as one.
    #[error("no Sentinel named a reachable master `{0}`")]
    NoMaster(String),
    /// No Cluster node to connect to.
    #[error("no Cluster node answers")]
    NoNode,
}

pub(super) async fn within<T>(
    limit: Duration,
    f: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, ConnectError> {
    timeout(limit, f)
        .await
        .map_err(|_| ConnectError::Timeout)?
        .map_err(Into::into)
}

fn config(settings: &RedisSettings, response: Option<Duration>) -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(response)
}

/// The client of the current master: the URL, or what a Sentinel says.
async fn resolve(settings: &RedisSettings) -> Result<Client, ConnectError> {
    let (addresses, master, db) = match &settings.target {
        Target::Url(url) => return Ok(Client::open(url.as_str())?),
        Target::Cluster { nodes } => {
            let first = nodes.first().ok_or(ConnectError::NoNode)?;
            return Ok(Client::open(format!("redis://{first}/"))?);
        }
        Target::Sentinel {
            addresses,
            master,
            db,
        } => (addresses, master, *db),
    };
    let quick = config(settings, Some(settings.command_timeout));
    for address in addresses {
        let asked = async {
            let sentinel = Client::open(format!("redis://{address}/"))?;
            let mut con = sentinel
                .get_multiplexed_async_connection_with_config(&quick)
                .await?;
            let named: Option<(String, u16)> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(master)
                .query_async(&mut con)
                .await?;
            let Some((host, port)) = named else {
                return Ok::<_, RedisError>(None);
            };
            let client = Client::open(format!("redis://{host}:{port}/{db}"))?;
            let mut con = client
                .get_multiplexed_async_connection_with_config(&quick)
                .await?;
            // A Sentinel may name a master that was just demoted.
            let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut con).await?;
            let is_master =
                matches!(role.first(), Some(redis::Value::BulkString(r)) if r == b"master");
            Ok(is_master.then_some(client))
        };
        match timeout(settings.connect_timeout, asked).await {
            Ok(Ok(Some(client))) => return Ok(client),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::debug!(sentinel = %address, error = %e, "sentinel did not answer")
            }
            Err(_) => tracing::debug!(sentinel = %address, "sentinel timed out"),
        }
    }
    Err(ConnectError::NoMaster(master.clone()))
}

/// The command connection.
#[derive(Clone)]
pub enum Commands {
    /// One server.
    Single(MultiplexedConnection),
    /// A Cluster, routed by key.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Commands {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Commands::Single(c) => c.req_packed_command(cmd),
            Commands::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Commands::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Commands::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Commands::Single(c) => c.get_db(),
            Commands::Cluster(c) => c.get_db(),
        }
    }
}

/// A long wait for the "no timeout" of blocking reads: the Cluster client
/// needs one.
const NO_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

/// Opens the command connection, its answers awaited up to `response`
/// (`None`: no limit, for blocking reads), and says which servers pub/sub
/// may listen on, in order of preference.
pub async fn open(
    settings: &RedisSettings,
    response: Option<Duration>,
) -> Result<(Commands, Vec<Client>), ConnectError> {
    match &settings.target {
        Target::Cluster { nodes } => {
            let urls: Vec<String> = nodes.iter().map(|n| format!("redis://{n}/")).collect();
            let client = ClusterClient::builder(urls.clone())
                .connection_timeout(settings.connect_timeout)
                .response_timeout(response.unwrap_or(NO_TIMEOUT))
                .build()?;
            let con = within(settings.connect_timeout, client.get_async_connection()).await?;
            let listen = urls
                .iter()
                .map(|u| Client::open(u.as_str()))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((Commands::Cluster(con), listen))
        }
        _ => {
            let client = resolve(settings).await?;
            let con = within(
                settings.connect_timeout,
                client.get_multiplexed_async_connection_with_config(&config(settings, response)),
            )
            .await?;
            Ok((Commands::Single(con), vec![client]))
        }
    }
}

/// A pub/sub connection to the first of `servers` that takes one.
pub async fn pubsub(settings: &RedisSettings, servers: &[Client]) -> Result<PubSub, ConnectError> {
    let mut last = ConnectError::NoNode;
    for server in servers {
        match within(settings.connect_timeout, server.get_async_pubsub()).await {
            Ok(pubsub) => return Ok(pubsub),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_never_shows_its_password() {
        let target = Target::Url("redis://app:s3cret@10.0.0.5:6379/0".into());
        let shown = format!("{target:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("10.0.0.5:6379"), "{shown}");
    }
}
