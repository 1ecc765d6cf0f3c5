//! A first end-to-end check: subscribe, publish, receive.

use chouquette_testkit::TestNode;
use serde_json::json;

#[tokio::test]
async fn subscribe_publish_receive() {
    let node = TestNode::base().await;
    let mut client = node.client().await;
    let (ack, before) = client
        .subscribe("bornes", json!({"alarm": {"borne": "B1"}}))
        .await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(ack["ref"], "sub-1");
    assert_eq!(ack["channels"]["bornes"]["offset"], 0);
    node.publish("bornes", "alarm", &["borne:B2"], json!({"uid": "B2"}))
        .await;
    let offset = node
        .publish("bornes", "alarm", &["borne:B1"], json!({"uid": "B1"}))
        .await;
    let data = client.recv().await;
    assert_eq!(data["class"], "data");
    assert_eq!(data["offset"], offset);
    assert_eq!(data["data"]["uid"], "B1");
    node.running.shutdown().await;
}
