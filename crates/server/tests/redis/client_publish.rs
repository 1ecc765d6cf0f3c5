//! A client's `publish` goes through the one pipeline, so over Redis every
//! gateway delivers it.

use chouquette_testkit::{APP, RedisServer, SECRET, sign};
use serde_json::json;

use crate::{data, nodes};

#[tokio::test]
async fn a_device_publishing_on_one_node_reaches_subscribers_on_both() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 2).await;
    let mut watchers = Vec::new();
    for node in &nodes {
        let mut watcher = node.client().await;
        let (ack, _) = watcher.subscribe("devices", json!({"status": {}})).await;
        assert_eq!(ack["channels"]["devices"]["offset"], 0, "{ack}");
        watchers.push(watcher);
    }
    let exp = chouquette_core::clock::unix_now() + 3600;
    let claims = json!({"app_id": APP, "sub": "D1", "exp": exp,
                        "publish": {"devices": ["device:D1"]}});
    let mut device = nodes[0].client().await;
    device
        .send_json(&json!({"class": "connect", "app_id": APP, "token": sign(&claims, SECRET)}))
        .await;
    assert_eq!(device.recv().await["class"], "ack");
    device
        .send_json(&json!({"class": "publish", "uuid": "p1", "app_id": APP,
                           "channel": "devices", "event_kind": "status",
                           "keywords": ["device:D1"], "data": {"t": 21}}))
        .await;
    let answer = device.recv().await;
    assert_eq!(answer["class"], "ack", "{answer}");
    assert_eq!(answer["offset"], 1, "{answer}");
    for watcher in &mut watchers {
        let got = data(watcher, "devices", 1).await;
        assert_eq!(got[0]["data"], json!({"t": 21}));
        assert_eq!(got[0]["offset"], 1);
    }
}
