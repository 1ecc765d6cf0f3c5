//! Lattice namespaces on Redis (docs/lattices.md), shared by every node and
//! kept across restarts (no expiry).
//!
//! Keys, all under one hash tag per namespace so a Cluster keeps them on
//! one slot and one script may touch them together:
//!
//! - `<prefix>:{app|ns}:lattice:shared`: the shared lattice (JSON text);
//! - `<prefix>:{app|ns}:lattice:user:<user>`: one user's lattice;
//! - `<prefix>:{app|ns}:lattice:users`: the set of users with values
//!   (bounded by [`MAX_USERS_PER_NAMESPACE`]);
//! - `<prefix>:{app}:lattices`: the app's namespaces (bounded by
//!   [`MAX_NAMESPACES_PER_APP`]), a tag of its own.
//!
//! The merge runs in Rust with [`lattice_feed::merge`], the memory broker's
//! code, as an optimistic transaction: read the lattices the update
//! touches, merge, then one script writes the results only if every one of
//! them still holds the text that was read (compare and set), and refuses
//! a new user past the bound in the same step. A concurrent merge from any
//! node makes the script answer "changed"; the merge is redone on what that
//! one wrote, up to [`MERGE_ATTEMPTS`] times. So no concurrent update is
//! lost, and no merge logic is written twice (the script compares texts,
//! it does not merge).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use chouquette_core::broker::BrokerError;
use chouquette_core::lattice::{Bounds, Lattice};
use chouquette_core::lattice_feed::{
    self, MAX_NAMESPACES_PER_APP, MAX_USERS_PER_NAMESPACE, NamespaceValues,
};
use redis::Script;

use super::{RedisBroker, Shared, not_connected};

/// Merges tried before an update counts as failed (503): each retry means
/// another merge of the same namespace succeeded meanwhile, so this is only
/// reached under a storm of concurrent updates of one namespace.
pub(super) const MERGE_ATTEMPTS: usize = 32;

/// Compare and set. KEYS: the users set, the shared lattice, then each
/// user's lattice. ARGV: the bound on users, the number of users n, then
/// for the n + 1 lattices the text read (`''`: absent), then their new text
/// (`''`: unchanged), then the n user ids. Answers 1 (written), 0 (a
/// lattice changed since it was read: nothing written), -1 (past the bound
/// on users: nothing written).
const CAS_LUA: &str = r"
local n = tonumber(ARGV[2])
local count = n + 1
for i = 1, count do
  local held = redis.call('GET', KEYS[i + 1]) or ''
  if held ~= ARGV[2 + i] then return 0 end
end
local fresh = {}
for j = 1, n do
  local new = ARGV[2 + count + 1 + j]
  local user = ARGV[2 + 2 * count + j]
  if new ~= '' and redis.call('SISMEMBER', KEYS[1], user) == 0 then
    fresh[#fresh + 1] = user
  end
end
if #fresh > 0 and redis.call('SCARD', KEYS[1]) + #fresh > tonumber(ARGV[1]) then
  return -1
end
for i = 1, count do
  local new = ARGV[2 + count + i]
  if new ~= '' then redis.call('SET', KEYS[i + 1], new) end
end
for _, user in ipairs(fresh) do redis.call('SADD', KEYS[1], user) end
return 1
";

/// Adds a namespace to its app's set unless the set is full (0).
const ADD_NAMESPACE_LUA: &str = r"
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1
";

/// Hashed once: `EVALSHA` after the first call.
static CAS: LazyLock<Script> = LazyLock::new(|| Script::new(CAS_LUA));
static ADD_NAMESPACE: LazyLock<Script> = LazyLock::new(|| Script::new(ADD_NAMESPACE_LUA));

/// The keys of one namespace.
struct NamespaceKeys {
    tag: String,
}

impl NamespaceKeys {
    fn new(prefix: &str, app: &str, namespace: &str) -> NamespaceKeys {
        NamespaceKeys {
            tag: format!("{prefix}:{{{app}|{namespace}}}:lattice"),
        }
    }

    fn users(&self) -> String {
        format!("{}:users", self.tag)
    }

    fn shared(&self) -> String {
        format!("{}:shared", self.tag)
    }

    fn user(&self, user: &str) -> String {
        format!("{}:user:{user}", self.tag)
    }
}

/// A stored lattice; unreadable text (written by hand, or by a later
/// version) is logged and read as empty, and the next merge replaces it.
fn stored(text: Option<&str>) -> Lattice {
    let Some(text) = text else {
        return Lattice::default();
    };
    Lattice::parse(text, &Bounds::STORED).unwrap_or_else(|e| {
        tracing::warn!(error = %e, "unreadable lattice in Redis, read as empty");
        Lattice::default()
    })
}

impl Shared {
    fn namespace_keys(&self, app: &str, namespace: &str) -> NamespaceKeys {
        NamespaceKeys::new(&self.settings.prefix, app, namespace)
    }

    fn namespaces_key(&self, app: &str) -> String {
        format!("{}:{{{app}}}:lattices", self.settings.prefix)
    }
}

impl RedisBroker {
    /// Merges `update` into `namespace` (see the module docs).
    pub(super) async fn merge_lattices_cas(
        &self,
        app: &str,
        namespace: &str,
        update: &NamespaceValues,
        bounds: &Bounds,
    ) -> Result<NamespaceValues, BrokerError> {
        let shared = &self.shared;
        let link = shared.current().ok_or_else(not_connected)?;
        let mut commands = link.commands.clone();
        let added: i64 = ADD_NAMESPACE
            .key(shared.namespaces_key(app))
            .arg(namespace)
            .arg(MAX_NAMESPACES_PER_APP)
            .invoke_async(&mut commands)
            .await
            .map_err(|e| shared.failed(&e))?;
        if added != 1 {
            return Err(BrokerError::TooManyNamespaces(MAX_NAMESPACES_PER_APP));
        }
        let keys = shared.namespace_keys(app, namespace);
        let users: Vec<&String> = update
            .users
            .iter()
            .filter(|(_, l)| !l.is_empty())
            .map(|(u, _)| u)
            .collect();
        let mut lattice_keys = vec![keys.shared()];
        lattice_keys.extend(users.iter().map(|u| keys.user(u)));
        for _ in 0..MERGE_ATTEMPTS {
            let read: Vec<Option<String>> = redis::cmd("MGET")
                .arg(&lattice_keys)
                .query_async(&mut commands)
                .await
                .map_err(|e| shared.failed(&e))?;
            if read.len() != lattice_keys.len() {
                return Err(BrokerError::Unavailable("unexpected reply to MGET".into()));
            }
            let current_shared = stored(read[0].as_deref());
            let current_users: BTreeMap<String, Lattice> = users
                .iter()
                .zip(&read[1..])
                .map(|(u, text)| ((*u).clone(), stored(text.as_deref())))
                .collect();
            let merged = lattice_feed::merge(&current_shared, &current_users, update, bounds)?;
            if merged.change.is_empty() {
                return Ok(merged.change);
            }
            let mut new_texts = vec![merged.shared.as_ref().map(Lattice::to_json)];
            new_texts.extend(
                users
                    .iter()
                    .map(|u| merged.users.get(*u).map(Lattice::to_json)),
            );
            let mut script = CAS.key(keys.users());
            script.key(&lattice_keys);
            script.arg(MAX_USERS_PER_NAMESPACE).arg(users.len());
            for text in &read {
                script.arg(text.as_deref().unwrap_or(""));
            }
            for text in &new_texts {
                script.arg(text.as_deref().unwrap_or(""));
            }
            for user in &users {
                script.arg(user.as_str());
            }
            let written: i64 = script
                .invoke_async(&mut commands)
                .await
                .map_err(|e| shared.failed(&e))?;
            match written {
                1 => return Ok(merged.change),
                -1 => return Err(BrokerError::TooManyLatticeUsers(MAX_USERS_PER_NAMESPACE)),
                _ => tokio::task::yield_now().await,
            }
        }
        tracing::warn!(%app, %namespace, "lattice update given up: the namespace kept changing");
        Err(BrokerError::Unavailable(format!(
            "lattice namespace changed under {MERGE_ATTEMPTS} attempts"
        )))
    }

    /// The shared values of `namespace` and `user`'s own.
    pub(super) async fn read_lattices(
        &self,
        app: &str,
        namespace: &str,
        user: &str,
    ) -> Result<(Lattice, Lattice), BrokerError> {
        let shared = &self.shared;
        let link = shared.current().ok_or_else(not_connected)?;
        let mut commands = link.commands.clone();
        let keys = shared.namespace_keys(app, namespace);
        let (shared_text, user_text): (Option<String>, Option<String>) = redis::cmd("MGET")
            .arg(keys.shared())
            .arg(keys.user(user))
            .query_async(&mut commands)
            .await
            .map_err(|e| shared.failed(&e))?;
        Ok((stored(shared_text.as_deref()), stored(user_text.as_deref())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_namespace_keys_share_one_hash_tag_apart_from_channel_keys() {
        let keys = NamespaceKeys::new("cq", "bluelib", "unread");
        for key in [keys.users(), keys.shared(), keys.user("roger")] {
            assert!(key.starts_with("cq:{bluelib|unread}:lattice:"), "{key}");
        }
        assert_eq!(stored(Some("not json")), Lattice::default());
    }
}
