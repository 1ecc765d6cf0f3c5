//! docs/backend-quickstart.md, run as written: its Python backend
//! (examples/python/backend.py, PyJWT) signs a subscription that a real
//! WebSocket client forwards unchanged, then publishes with plain HTTP; the
//! user sees its borne's critical alarms and nothing else.

use chouquette_testkit::{API_KEY, SECRET, TestNode};
use serde_json::Value;

const SCRIPT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/python/backend.py"
);

/// Runs the quickstart's backend with `args`; its stdout as JSON.
async fn backend(args: &[&str]) -> Value {
    let output = tokio::process::Command::new("python3")
        .arg(SCRIPT)
        .args(args)
        .env("CHOUQUETTE_SECRET", SECRET)
        .env("CHOUQUETTE_API_KEY", API_KEY)
        .output()
        .await
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "the quickstart backend failed (scripts/test.sh installs examples/python/requirements.txt): {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("the backend prints JSON")
}

#[tokio::test]
async fn the_backend_quickstart_signs_and_publishes_as_documented() {
    let node = TestNode::base().await;
    let message = backend(&["subscription", "--user", "roger", "--borne", "B1"]).await;
    assert_eq!(message["class"], "subscribe", "{message}");
    let mut client = node.client().await;
    client.join_sync().await;
    client.send_json(&message).await;
    let (ack, _) = client.recv_until("ack").await;
    assert!(ack["channels"]["bornes"].is_object(), "{ack}");

    let url = node.internal_url();
    let url = url.trim_end_matches('/');
    let other = ["publish", "--url", url, "--borne", "B2"];
    let minor = ["publish", "--url", url, "--borne", "B1", "--level", "minor"];
    for args in [&other[..], &minor[..]] {
        let answer = backend(args).await;
        assert!(answer["offset"].is_u64(), "{answer}");
    }
    let data = r#"{"uid": "B1", "status": "oh, oh..."}"#;
    let answer = backend(&["publish", "--url", url, "--borne", "B1", "--data", data]).await;
    assert!(answer["offset"].is_u64(), "{answer}");
    let marker = node.publish_marker().await;
    let seen = client.until_marker(marker).await;
    let alarms: Vec<&Value> = seen.iter().filter(|m| m["class"] == "data").collect();
    assert_eq!(alarms.len(), 1, "only B1's critical alarm: {seen:?}");
    assert_eq!(alarms[0]["data"]["status"], "oh, oh...");
    assert_eq!(alarms[0]["offset"], answer["offset"]);
}
