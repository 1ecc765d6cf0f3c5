//! The demo backend's notifications to its users (docs/notifications.md),
//! as a real backend would send them through `POST /api/v1/notify`:
//!
//! - a critical alarm on borne B1 notifies both users (kind `alarm`,
//!   grouped within 30 s: a storm of alarms is one notification, not many);
//! - every [`REPORT_EVERY`] (first after [`FIRST_REPORTS_AFTER`]) a burst
//!   of [`REPORT_BURST`] maintenance reports (kind `report`, grouped within
//!   [`REPORT_WINDOW`]) shows grouping at a glance: the first report at
//!   once, the others as one notification with their count.
//!
//! Nobody acknowledges for the users, so each user's pending list stays
//! bounded by the demo's `max_pending` (oldest dropped, counted).

use std::sync::Arc;
use std::time::Duration;

use chouquette_core::node::Node;
use chouquette_core::notifications::{self, Notify};
use serde_json::json;
use serde_json::value::RawValue;

use super::APP;
use super::fleet::Change;

/// The demo's users: both are notified.
pub const USERS: [&str; 2] = ["roger", "vb"];
/// Kind of the alarm notifications.
pub const ALARM_KIND: &str = "alarm";
/// Kind of the maintenance reports, sent in bursts.
pub const REPORT_KIND: &str = "report";
/// Reports in one burst.
pub const REPORT_BURST: usize = 12;
/// The reports' grouping window: a burst is delivered as the first report,
/// then one group of the others when it closes.
pub const REPORT_WINDOW: Duration = Duration::from_secs(3);
/// Time between two bursts.
pub const REPORT_EVERY: Duration = Duration::from_secs(60);
/// The first burst comes soon after the demo starts, for a quick look.
pub const FIRST_REPORTS_AFTER: Duration = Duration::from_secs(3);

/// `[apps.notifications]` of the demo's app, as an operator writes it.
pub const CONFIG: &str = r#"
max_pending = 100
expire_after = "1h"

[[group]]
kind = "alarm"
window = "30s"

[[group]]
kind = "report"
window = "3s"
"#;

/// Notifies both users of a critical alarm on borne B1 (other changes notify nobody).
pub async fn alarm(node: &Arc<Node>, change: &Change) {
    let Change::Alarm {
        uid,
        level: "critical",
        message,
    } = change
    else {
        return;
    };
    if uid != "B1" {
        return;
    }
    let data = json!({"uid": uid, "level": "critical"}).to_string();
    send(
        node,
        ALARM_KIND,
        format!("Critical alarm on {uid}"),
        (*message).to_string(),
        Some(data),
    )
    .await;
}

/// Sends a burst of reports every [`REPORT_EVERY`], until the node stops
/// (the task is ended with it).
pub async fn reports(node: Arc<Node>) {
    tokio::time::sleep(FIRST_REPORTS_AFTER).await;
    let mut tick = tokio::time::interval(REPORT_EVERY);
    let mut next = 1u64;
    loop {
        tick.tick().await;
        for _ in 0..REPORT_BURST {
            let point = format!("B{}", 1 + next % 20);
            let body = format!("Maintenance report #{next} filed for {point}");
            send(&node, REPORT_KIND, "Maintenance report".into(), body, None).await;
            next += 1;
        }
    }
}

async fn send(node: &Arc<Node>, kind: &str, title: String, body: String, data: Option<String>) {
    let request = Notify {
        users: USERS.iter().map(|u| u.to_string()).collect(),
        kind: kind.into(),
        title,
        body,
        link: None,
        data: data.and_then(|d| RawValue::from_string(d).ok()),
        idempotency: None,
        from: None,
    };
    if let Err(e) = notifications::notify(node, APP, request).await {
        tracing::warn!(error = %e, "demo notification refused");
    }
}
