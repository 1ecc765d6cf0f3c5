//! A broker restart (killed, started again with no sessions): `/readyz`
//! says the source is down meanwhile (still 200); the source reconnects,
//! subscribes again, and every message sent after the broker is
//! back is published.

use super::{Device, WAIT, data, every_kind, node_on, ready};
use chouquette_testkit::{MosquittoServer, eventually};

#[tokio::test]
async fn the_source_reconnects_and_resubscribes_after_a_broker_restart() {
    let mut broker = MosquittoServer::start(&["D1"]).await;
    let node = node_on(&broker).await;
    let mut ws = node.client().await;
    ws.subscribe("devices", every_kind()).await;
    let mut d1 = Device::connect(&broker, "D1").await;
    d1.publish("devices/D1/telemetry", r#"{"n": 0}"#).await;
    assert_eq!(data(&mut ws, 1).await[0]["data"]["n"], 0);

    broker.kill().await;
    // Still ready (clients are served), the source's problem said.
    assert!(
        eventually(WAIT, async || {
            let (status, body) = node.get("/readyz").await;
            status == 200 && body.starts_with("ok\n") && body.contains("mqtt source `gw-1`: ")
        })
        .await,
        "/readyz says the source is down"
    );
    assert_eq!(
        node.metric("chouquette_mqtt_up{source=\"gw-1\"}").await,
        Some(0.0)
    );
    broker.restart().await;
    let reconnects = "chouquette_mqtt_reconnects_total{source=\"gw-1\"}";
    assert!(
        eventually(WAIT, async || node
            .metric(reconnects)
            .await
            .is_some_and(|n| n >= 1.0))
        .await,
        "the source noticed the restart"
    );
    assert!(ready(&node).await, "the source subscribed again");

    // The restarted broker knows no subscription but the one made again.
    let mut d1 = Device::connect(&broker, "D1").await;
    for n in 1..=10 {
        d1.publish("devices/D1/telemetry", &format!(r#"{{"n": {n}}}"#))
            .await;
    }
    let got = data(&mut ws, 10).await;
    let ns: Vec<_> = got
        .iter()
        .map(|m| m["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(ns, (1..=10).collect::<Vec<_>>());
}
