//! Messages as events: JSON as is, SenML resolved, keywords and key from
//! topic levels, last state kept; invalid payloads counted, not published.

use serde_json::json;

use super::{Device, data, every_kind, node_on};
use chouquette_testkit::MosquittoServer;

/// A JSON message and a SenML pack from D1 reach the subscriber whose
/// filter selects D1 (not D2's message), with `device:D1`, and the last
/// state a later subscriber gets is each key's latest event.
#[tokio::test]
async fn json_and_senml_reach_subscribers_with_keywords_and_state() {
    let broker = MosquittoServer::start(&["D1", "D2"]).await;
    let node = node_on(&broker).await;
    let mut ws = node.client().await;
    ws.subscribe(
        "devices",
        json!({"telemetry": {"device": ["D1"]}, "measure": {"device": ["D1"]}}),
    )
    .await;
    let mut d1 = Device::connect(&broker, "D1").await;
    let mut d2 = Device::connect(&broker, "D2").await;

    d2.publish("devices/D2/telemetry", r#"{"temp": 30}"#).await;
    d1.publish("devices/D1/telemetry", r#"{"temp": 21.5}"#)
        .await;
    d1.publish(
        "devices/D1/senml",
        r#"[{"bn": "D1/", "bt": 1700000000, "bu": "Cel", "n": "temp", "v": 21.5},
            {"n": "hum", "u": "%RH", "t": 10, "v": 40}]"#,
    )
    .await;
    d1.publish("devices/D1/telemetry", r#"{"temp": 22}"#).await;

    let got = data(&mut ws, 3).await;
    assert_eq!(got[0]["event_kind"], "telemetry");
    assert_eq!(got[0]["keywords"], json!(["device:D1"]));
    assert_eq!(got[0]["data"], json!({"temp": 21.5}));
    assert_eq!(got[1]["event_kind"], "measure");
    assert_eq!(got[1]["keywords"], json!(["device:D1"]));
    assert_eq!(
        got[1]["data"],
        json!([
            {"n": "D1/temp", "u": "Cel", "t": 1700000000.0, "v": 21.5},
            {"n": "D1/hum", "u": "%RH", "t": 1700000010.0, "v": 40.0}
        ])
    );
    assert_eq!(got[2]["data"], json!({"temp": 22}));

    // A later subscriber gets each key's latest event as a snapshot.
    let mut late = node.client().await;
    let (_, snapshots) = late.subscribe("devices", every_kind()).await;
    let mut state: Vec<(String, serde_json::Value)> = snapshots
        .iter()
        .filter(|m| m["class"] == "data")
        .map(|m| {
            assert_eq!(m["snapshot"], true);
            (
                m["keywords"][0].as_str().unwrap().to_string(),
                m["data"].clone(),
            )
        })
        .collect();
    state.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.to_string().cmp(&b.1.to_string())));
    assert_eq!(
        state.len(),
        3,
        "device:D1, device:D2 and senml:D1: {state:?}"
    );
    assert!(state.contains(&("device:D1".into(), json!({"temp": 22}))));
    assert!(state.contains(&("device:D2".into(), json!({"temp": 30}))));
    assert_eq!(
        node.metric("chouquette_mqtt_published_total{source=\"gw-1\",outcome=\"published\"}")
            .await,
        Some(4.0)
    );
}

/// Payloads that are not valid for their format, and a topic missing the
/// level a keyword reads, are counted by reason and not published; the
/// valid message after them is.
#[tokio::test]
async fn invalid_payloads_are_counted_not_published() {
    let broker = MosquittoServer::start(&["D1"]).await;
    let node = node_on(&broker).await;
    let mut ws = node.client().await;
    ws.subscribe("devices", every_kind()).await;
    let mut d1 = Device::connect(&broker, "D1").await;

    d1.publish("devices/D1/telemetry", "not json").await;
    d1.publish("devices/D1/senml", "[]").await;
    d1.publish(
        "devices/D1/senml",
        r#"[{"n": "a", "v": 1, "vs": "two values"}]"#,
    )
    .await;
    d1.publish("devices/D1/senml", r#"{"n": "a", "v": 1}"#)
        .await;
    d1.publish("devices/D1/status", r#"{"ok": true}"#).await;
    d1.publish("devices/D1/status/door", r#"{"open": false}"#)
        .await;

    let got = data(&mut ws, 1).await;
    assert_eq!(got[0]["event_kind"], "status");
    assert_eq!(got[0]["keywords"], json!(["device:D1", "part:door"]));
    assert_eq!(got[0]["offset"], 1, "nothing was published before it");
    let invalid = |reason: &str| {
        format!("chouquette_mqtt_invalid_total{{source=\"gw-1\",reason=\"{reason}\"}}")
    };
    assert_eq!(node.metric(&invalid("not_json")).await, Some(1.0));
    assert_eq!(node.metric(&invalid("senml")).await, Some(3.0));
    assert_eq!(node.metric(&invalid("missing_level")).await, Some(1.0));
    assert_eq!(
        node.metric("chouquette_mqtt_messages_total{source=\"gw-1\"}")
            .await,
        Some(6.0)
    );
    assert_eq!(
        node.metric("chouquette_mqtt_up{source=\"gw-1\"}").await,
        Some(1.0)
    );
}
