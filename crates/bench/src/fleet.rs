//! The gateways under test, with the Redis they share when there are
//! several: node 0 takes the publishes, subscribers go to the others (or to
//! node 0 when it is alone). Readings are summed over every node, so "CPU
//! per delivery" counts the whole fleet; Redis is read apart.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use anyhow::bail;

use crate::cli::{BrokerChoice, Options, ServerChoice};
use crate::gateway::{BrokerSpec, Gateway, LimitsSpec};
use crate::redis_server::RedisServer;
use crate::wire::AppSpec;

/// Every gateway of a run, and their Redis.
#[derive(Debug)]
pub struct Fleet {
    gateways: Vec<Gateway>,
    redis: Option<RedisServer>,
    /// Node 0's internal listener: where the publisher posts.
    pub internal: SocketAddr,
    /// Node 0's process id (for profilers).
    pub pid: u32,
}

impl Fleet {
    /// Starts Redis (for `--broker redis`) and `--nodes` gateways.
    pub async fn start(
        options: &Options,
        binary: &Path,
        app: &AppSpec,
        limits: &LimitsSpec,
    ) -> anyhow::Result<Fleet> {
        let nodes = options.nodes.max(1);
        if options.server == ServerChoice::Floor {
            if nodes > 1 || options.broker != BrokerChoice::Memory {
                bail!("--server floor is one node without a broker");
            }
            let floor = Gateway::start_floor().await?;
            eprintln!("floor server: pid {} on {}", floor.pid, floor.public);
            let (internal, pid) = (floor.internal, floor.pid);
            return Ok(Fleet {
                gateways: vec![floor],
                redis: None,
                internal,
                pid,
            });
        }
        let redis = match options.broker {
            BrokerChoice::Memory if nodes > 1 => bail!("--nodes {nodes} needs --broker redis"),
            BrokerChoice::Memory => None,
            BrokerChoice::Redis => Some(RedisServer::start().await?),
        };
        if let Some(redis) = &redis {
            eprintln!("redis-server pid {} on port {}", redis.pid, redis.port);
        }
        let mut gateways = Vec::with_capacity(nodes);
        for node in 0..nodes {
            let spec = match &redis {
                Some(redis) => BrokerSpec::Redis {
                    url: redis.url(),
                    node,
                },
                None => BrokerSpec::Memory,
            };
            let gateway =
                Gateway::start(binary, app, options.outbox_capacity, limits, &spec).await?;
            eprintln!("gateway {node}: pid {} on {}", gateway.pid, gateway.public);
            gateways.push(gateway);
        }
        let (internal, pid) = (gateways[0].internal, gateways[0].pid);
        Ok(Fleet {
            gateways,
            redis,
            internal,
            pid,
        })
    }

    /// Where subscribers connect: every node but the publisher's, when
    /// there are several.
    pub fn subscriber_targets(&self) -> Vec<SocketAddr> {
        let skip = usize::from(self.gateways.len() > 1);
        self.gateways.iter().skip(skip).map(|g| g.public).collect()
    }

    /// Node `index`, e.g. to stop and start it again (`storm`).
    pub fn node_mut(&mut self, index: usize) -> Option<&mut Gateway> {
        self.gateways.get_mut(index)
    }

    /// Node `index`.
    pub fn node(&self, index: usize) -> Option<&Gateway> {
        self.gateways.get(index)
    }

    /// Files each node holds open now, and its limit, in node order.
    pub fn open_files(&self) -> anyhow::Result<Vec<(u64, u64)>> {
        self.gateways
            .iter()
            .map(|g| {
                Ok((
                    crate::procfs::open_files(g.pid)?,
                    crate::procfs::open_files_limit(g.pid)?,
                ))
            })
            .collect()
    }

    /// Each node's resident memory, bytes, in node order.
    pub fn rss_per_node(&self) -> anyhow::Result<Vec<u64>> {
        self.gateways.iter().map(Gateway::rss).collect()
    }

    /// Summed resident memory, bytes.
    pub fn rss(&self) -> anyhow::Result<u64> {
        self.gateways.iter().map(Gateway::rss).sum()
    }

    /// Summed peak resident memory, bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        self.gateways.iter().map(Gateway::peak_rss).sum()
    }

    /// Summed CPU time so far, seconds.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        self.gateways.iter().map(Gateway::cpu_seconds).sum()
    }

    /// Summed user and system CPU time so far, seconds.
    pub fn cpu_split(&self) -> anyhow::Result<(f64, f64)> {
        let mut total = (0.0, 0.0);
        for gateway in &self.gateways {
            let (user, system) = gateway.cpu_split()?;
            total.0 += user;
            total.1 += system;
        }
        Ok(total)
    }

    /// Redis CPU time so far, seconds (none without Redis).
    pub fn redis_cpu_seconds(&self) -> anyhow::Result<Option<f64>> {
        self.redis
            .as_ref()
            .map(RedisServer::cpu_seconds)
            .transpose()
    }

    /// Whether every node answers `/readyz` 200.
    pub async fn ready(&self) -> bool {
        for gateway in &self.gateways {
            if !gateway.ready().await {
                return false;
            }
        }
        true
    }

    /// Stops every node; true if all were still running.
    pub async fn stop(self, grace: Duration) -> bool {
        let mut alive = true;
        for mut gateway in self.gateways {
            alive &= gateway.alive();
            gateway.stop(grace).await;
        }
        drop(self.redis);
        alive
    }
}
