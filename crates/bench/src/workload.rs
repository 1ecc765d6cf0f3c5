//! What each scenario subscribes to and publishes, in one place so the
//! filters and the events always agree.

use serde_json::{Value, json};

use crate::cli::Scenario;
use crate::wire::{AppSpec, SENT_KEY};

/// Event kind of every published event.
const KIND: &str = "status";

/// The filter object of connection `index`.
pub fn filters(scenario: Scenario, index: usize) -> Value {
    match scenario {
        Scenario::Idle
        | Scenario::Rpc
        | Scenario::Postgres
        | Scenario::NotifyBytes
        | Scenario::Notifications
        | Scenario::Devices => {
            json!({"*": {}})
        }
        Scenario::Broadcast | Scenario::Abuse | Scenario::IdleAbuse | Scenario::Storm => {
            json!({KIND: {}})
        }
        Scenario::Filtered => json!({KIND: {"borne": borne(index)}}),
    }
}

/// Whether every connection of `scenario` has the same filter (one token).
pub fn shared_filter(scenario: Scenario) -> bool {
    scenario != Scenario::Filtered
}

/// The subscribe message of connection `index`, its token expiring at `exp`.
pub fn subscribe(app: &AppSpec, scenario: Scenario, index: usize, exp: u64) -> String {
    subscribe_on(app, scenario, index, exp, 1)
}

/// [`subscribe`] when the subscribers are spread over `channels` channels.
pub fn subscribe_on(
    app: &AppSpec,
    scenario: Scenario,
    index: usize,
    exp: u64,
    channels: usize,
) -> String {
    let channel = channel(app, index, channels);
    let token = token_on(app, scenario, index, exp, channels);
    subscribe_since(app, &channel, &token, None)
}

/// The signed subscription token of connection `index` (see [`subscribe_on`]).
pub fn token_on(
    app: &AppSpec,
    scenario: Scenario,
    index: usize,
    exp: u64,
    channels: usize,
) -> String {
    let claims = json!({"app_id": app.app, "channel": channel(app, index, channels),
                        "filters": filters(scenario, index), "exp": exp});
    chouquette_core::token::sign(&claims, app.secret.as_bytes())
}

/// A subscribe message to `channel` with `token`, resuming after `since`
/// (the epoch and the last offset the client saw) when given.
pub fn subscribe_since(
    app: &AppSpec,
    channel: &str,
    token: &str,
    since: Option<(&str, u64)>,
) -> String {
    let mut entry = json!({"filters": token});
    if let Some((epoch, offset)) = since {
        entry["since"] = json!({"epoch": epoch, "offset": offset});
    }
    json!({"class": "subscribe", "app_id": app.app, "uuid": "s",
           "channels": {channel: entry}})
    .to_string()
}

/// The channel of connection (or event) `index` out of `channels`: the
/// app's channel itself when there is one, `<channel>-<index % channels>`
/// otherwise.
pub fn channel(app: &AppSpec, index: usize, channels: usize) -> String {
    if channels <= 1 {
        app.channel.clone()
    } else {
        format!("{}-{}", app.channel, index % channels)
    }
}

/// Event number `seq`, sent at `sent_ns`; in `filtered`, it targets
/// subscriber `seq % connections`. With subscribers spread over `channels`
/// channels, it goes to channel `seq % channels` (in `filtered`, the
/// channel of its target subscriber).
pub fn event_on(
    app: &AppSpec,
    scenario: Scenario,
    seq: u64,
    connections: usize,
    sent_ns: u64,
    channels: usize,
) -> Value {
    let target = seq % connections.max(1) as u64;
    let keywords = match scenario {
        Scenario::Filtered => vec![format!("borne:{}", borne(target as usize))],
        Scenario::Idle
        | Scenario::Rpc
        | Scenario::Postgres
        | Scenario::NotifyBytes
        | Scenario::Notifications
        | Scenario::Devices
        | Scenario::Broadcast
        | Scenario::Abuse
        | Scenario::IdleAbuse
        | Scenario::Storm => {
            vec![format!("seq:{seq}")]
        }
    };
    let on = match scenario {
        Scenario::Filtered => target as usize,
        _ => seq as usize,
    };
    json!({"app_id": app.app, "channel": channel(app, on, channels), "event_kind": KIND,
           "keywords": keywords, "data": {SENT_KEY: sent_ns}})
}

/// Deliveries one event makes on average when `connected` of `planned`
/// connections are subscribed.
pub fn fan_out(scenario: Scenario, connected: usize, planned: usize, channels: usize) -> f64 {
    match scenario {
        Scenario::Broadcast | Scenario::Abuse | Scenario::IdleAbuse | Scenario::Storm => {
            connected as f64 / channels.max(1) as f64
        }
        Scenario::Filtered => connected as f64 / planned.max(1) as f64,
        Scenario::Idle
        | Scenario::Rpc
        | Scenario::Postgres
        | Scenario::NotifyBytes
        | Scenario::Notifications
        | Scenario::Devices => 0.0,
    }
}

fn borne(index: usize) -> String {
    format!("B{index}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resume_names_epoch_and_offset() {
        let app = AppSpec::fresh("bornes");
        let fresh: Value =
            serde_json::from_str(&subscribe_since(&app, "bornes", "t", None)).expect("json");
        assert_eq!(fresh["channels"]["bornes"]["filters"], "t");
        assert!(fresh["channels"]["bornes"].get("since").is_none());
        let resume: Value =
            serde_json::from_str(&subscribe_since(&app, "bornes", "t", Some(("e1", 41))))
                .expect("json");
        assert_eq!(
            resume["channels"]["bornes"]["since"],
            json!({"epoch": "e1", "offset": 41})
        );
    }
}
