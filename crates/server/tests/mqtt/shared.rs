//! Two gateways sharing a Redis and one shared subscription group: the
//! MQTT broker gives each message to one of them, so each is published
//! once (offsets 1..=N with nothing in between), and both take a share.

use super::{DEVICES_CHANNEL, Device, WAIT, data, every_kind, ready, source_section};
use chouquette_testkit::{MosquittoServer, RedisServer, TestNode, eventually, redis_config_with};

#[tokio::test]
async fn two_gateways_publish_each_message_once() {
    let redis = RedisServer::start().await;
    let broker = MosquittoServer::start(&["D1"]).await;
    let start = async |id: &str| {
        let config = redis_config_with(&redis.url(), id, "", DEVICES_CHANNEL);
        let node = TestNode::start(&format!("{config}{}", source_section(&broker, id))).await;
        assert!(ready(&node).await, "{id} subscribes");
        node
    };
    let one = start("gw-1").await;
    let two = start("gw-2").await;
    let mut ws = one.client().await;
    ws.subscribe("devices", every_kind()).await;
    let mut d1 = Device::connect(&broker, "D1").await;

    const N: i64 = 40;
    for n in 1..=N {
        d1.publish("devices/D1/telemetry", &format!(r#"{{"n": {n}}}"#))
            .await;
    }
    let got = data(&mut ws, N as usize).await;
    let offsets: Vec<_> = got.iter().map(|m| m["offset"].as_i64().unwrap()).collect();
    assert_eq!(
        offsets,
        (1..=N).collect::<Vec<_>>(),
        "no message published twice"
    );
    let mut ns: Vec<_> = got
        .iter()
        .map(|m| m["data"]["n"].as_i64().unwrap())
        .collect();
    ns.sort_unstable();
    assert_eq!(ns, (1..=N).collect::<Vec<_>>(), "every message published");

    let published = async |node: &TestNode, id: &str| {
        let series =
            format!("chouquette_mqtt_published_total{{source=\"{id}\",outcome=\"published\"}}");
        node.metric(&series).await.unwrap_or(0.0)
    };
    let (a, b) = (published(&one, "gw-1").await, published(&two, "gw-2").await);
    assert_eq!(a + b, N as f64);
    assert!(
        a > 0.0 && b > 0.0,
        "both gateways took a share: {a} and {b}"
    );
    // One more: the channel's next offset, nothing published after the N.
    d1.publish("devices/D1/telemetry", r#"{"n": 0}"#).await;
    assert!(
        eventually(WAIT, async || published(&one, "gw-1").await
            + published(&two, "gw-2").await
            == (N + 1) as f64)
        .await
    );
    assert_eq!(data(&mut ws, 1).await[0]["offset"], N + 1);
}
