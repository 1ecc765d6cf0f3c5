//! Pending notifications on Redis (docs/notifications.md), shared by every
//! node and kept across restarts, expiring.
//!
//! Keys:
//!
//! - `<prefix>:{app|user}:notifications`: the user's pending list
//!   ([`Pending`], JSON), expiring `expire_after` after its last change
//!   (so never before its newest entry would), deleted when empty;
//! - `<prefix>:{app}:notify-id:<id>`: the notification id of an
//!   idempotency id, expiring after `expire_after`.
//!
//! An operation runs in Rust with [`Pending::apply`], the memory broker's
//! code, as an optimistic transaction, as lattices do: read the list,
//! apply, then one script writes the result only if the list still holds
//! the text that was read (compare and set). A concurrent change from any
//! node makes the script answer 0 and the operation is redone on what that
//! one wrote, up to [`ATTEMPTS`] times. Each change rewrites the whole
//! list: cheap for the few dozen entries a user usually has, and bounded
//! by `max_pending`.

use std::sync::LazyLock;
use std::time::Duration;

use chouquette_core::broker::BrokerError;
use chouquette_core::notifications::{Outcome, Pending, PendingOp};
use redis::Script;

use super::{RedisBroker, not_connected};

/// Attempts before an operation counts as failed (503): each retry means
/// another change of the same user's list succeeded meanwhile.
const ATTEMPTS: usize = 32;

/// Compare and set. KEYS: the list. ARGV: the text read (`''`: absent),
/// the new text (`''`: delete), the expiry in ms. Answers 1 (written) or 0
/// (changed meanwhile: nothing written).
const CAS_LUA: &str = r"
local held = redis.call('GET', KEYS[1]) or ''
if held ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
";

static CAS: LazyLock<Script> = LazyLock::new(|| Script::new(CAS_LUA));

fn list_key(prefix: &str, app: &str, user: &str) -> String {
    format!("{prefix}:{{{app}|{user}}}:notifications")
}

fn id_key(prefix: &str, app: &str, key: &str) -> String {
    format!("{prefix}:{{{app}}}:notify-id:{key}")
}

/// A stored list; unreadable text (written by hand, or by a later
/// version) is logged and read as empty, and the next change replaces it.
fn stored(text: Option<&str>) -> Pending {
    let Some(text) = text else {
        return Pending::default();
    };
    serde_json::from_str(text).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "unreadable pending notifications in Redis, read as empty");
        Pending::default()
    })
}

impl RedisBroker {
    /// See [`chouquette_core::broker::Broker::notifications`].
    pub(super) async fn pending_apply(
        &self,
        app: &str,
        user: &str,
        op: PendingOp,
        now: u64,
        expire_after: u64,
    ) -> Result<Outcome, BrokerError> {
        let shared = &self.shared;
        let link = shared.current().ok_or_else(not_connected)?;
        let mut commands = link.commands.clone();
        let key = list_key(&shared.settings.prefix, app, user);
        let ttl_ms = (expire_after / 1_000).max(1);
        for _ in 0..ATTEMPTS {
            let read: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut commands)
                .await
                .map_err(|e| shared.failed(&e))?;
            let mut pending = stored(read.as_deref());
            let outcome = pending.apply(op.clone(), now, expire_after);
            if !outcome.changed {
                return Ok(outcome);
            }
            let text = if pending.is_empty() {
                String::new()
            } else {
                serde_json::to_string(&pending)
                    .map_err(|e| BrokerError::Unavailable(e.to_string()))?
            };
            let written: i64 = CAS
                .key(&key)
                .arg(read.as_deref().unwrap_or(""))
                .arg(text)
                .arg(ttl_ms)
                .invoke_async(&mut commands)
                .await
                .map_err(|e| shared.failed(&e))?;
            if written == 1 {
                return Ok(outcome);
            }
            tokio::task::yield_now().await;
        }
        tracing::warn!(%app, "notification change given up: the user's list kept changing");
        Err(BrokerError::Unavailable(format!(
            "pending notifications changed under {ATTEMPTS} attempts"
        )))
    }

    /// See [`chouquette_core::broker::Broker::notification_id`].
    pub(super) async fn notification_id_of(
        &self,
        app: &str,
        key: &str,
        claim: Option<&str>,
        ttl: Duration,
    ) -> Result<Option<String>, BrokerError> {
        let shared = &self.shared;
        let link = shared.current().ok_or_else(not_connected)?;
        let mut commands = link.commands.clone();
        let key = id_key(&shared.settings.prefix, app, key);
        let Some(claim) = claim else {
            return redis::cmd("GET")
                .arg(&key)
                .query_async(&mut commands)
                .await
                .map_err(|e| shared.failed(&e));
        };
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        // SET NX GET answers the value held (nil when it set ours).
        let held: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(claim)
            .arg("NX")
            .arg("GET")
            .arg("PX")
            .arg(ms)
            .query_async(&mut commands)
            .await
            .map_err(|e| shared.failed(&e))?;
        Ok(held.filter(|h| h != claim))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_carry_the_user_tag_and_junk_reads_as_empty() {
        assert_eq!(list_key("cq", "a", "roger"), "cq:{a|roger}:notifications");
        assert_eq!(id_key("cq", "a", "k1"), "cq:{a}:notify-id:k1");
        assert_eq!(stored(Some("not json")), Pending::default());
    }
}
