//! A notification entry stored the way `POST /api/v1/notify` stores one
//! (core's `notifications::notify`: the offline fallback scheduled, the
//! idempotency id checked, each user's pending list, grouping, live
//! delivery), with the route's answers turned into the inbox's: what the
//! route refuses goes to the dead letters; what it answers 503 stays
//! pending and is read again.

use std::sync::Arc;

use chouquette_core::broker::BrokerError;
use chouquette_core::node::Node;
use chouquette_core::notifications::{self, Notify};

/// Stores `request` for the users of `app`. `Ok(None)`: stored (or a
/// repeat of an id stored before); `Ok(Some(reason))`: refused for good,
/// a dead letter; `Err`: the broker failed, the entry stays pending.
pub(super) async fn store(
    node: &Arc<Node>,
    app: &str,
    request: Notify,
) -> Result<Option<String>, BrokerError> {
    // The route authenticates first: an unknown app never reaches core.
    if node.apps().get(app).is_none() {
        return Ok(Some(format!("unknown app `{app}`")));
    }
    match notifications::notify(node, app, request).await {
        Ok(_) => Ok(None),
        // The route's 507 `too_large` (the memory broker's bound): sending
        // it again would be refused the same way.
        Err(e @ BrokerError::TooManyNotifiedUsers(_)) => Ok(Some(e.to_string())),
        Err(e) => Err(e),
    }
}
