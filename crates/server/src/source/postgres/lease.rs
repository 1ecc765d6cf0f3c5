//! One reader per slot among gateways sharing Redis: a lease, a Redis key
//! holding the reader's node id with a time to live, taken when free and
//! renewed by its holder. A gateway that dies stops renewing; another takes
//! the slot over once the key expires.
//!
//! The lease is checked before each read of the slot: a holder that loses
//! it (Redis unreachable longer than the TTL, a stall) stops reading. Should
//! two gateways ever overlap (a stall longer than the TTL during one
//! publish), the events' idempotency ids keep the changes from being
//! published twice.

use std::sync::Arc;
use std::time::Duration;

use crate::broker::redis::{Commands, RedisBroker};

const TAKE_OR_RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return 1
end
return 0
";

/// Who reads a slot, kept in Redis.
#[derive(Debug)]
pub struct Lease {
    broker: Arc<RedisBroker>,
    key: String,
    holder: String,
    ttl: Duration,
}

/// Why the lease could not be asked about.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("lease: {0}")]
    Broker(#[from] chouquette_core::broker::BrokerError),
}

impl Lease {
    /// The lease of `slot` under the broker's key `prefix`, held as `holder`.
    pub fn new(
        broker: Arc<RedisBroker>,
        prefix: &str,
        slot: &str,
        holder: &str,
        ttl: Duration,
    ) -> Lease {
        Lease {
            broker,
            key: format!("{prefix}:pg-lease:{slot}"),
            holder: holder.to_string(),
            ttl,
        }
    }

    /// How often the holder renews it (and a standby asks for it).
    pub fn every(&self) -> Duration {
        self.ttl / 3
    }

    /// A connection for [`Lease::take`].
    pub async fn connect(&self) -> Result<Commands, LeaseError> {
        Ok(self.broker.dedicated().await?)
    }

    /// Takes the lease when free, renews it when held: whether this gateway
    /// holds it now.
    pub async fn take(&self, con: &mut Commands) -> Result<bool, LeaseError> {
        let millis = u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX);
        let held: i64 = redis::Script::new(TAKE_OR_RENEW)
            .key(&self.key)
            .arg(&self.holder)
            .arg(millis)
            .invoke_async(con)
            .await?;
        Ok(held == 1)
    }
}
