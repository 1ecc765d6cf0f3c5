//! Backends commanding a device over WebSocket (docs/devices.md
//! "Commands"): a real gateway, a real WebSocket device whose `connect`
//! identity is the device id, answering `result` or `error`, answering
//! nothing (timeout), answering with the wrong id (ignored), or absent
//! (offline at once). `tests/mqtt/commands.rs` covers MQTT devices.

use std::time::{Duration, Instant};

use chouquette_testkit::{API_KEY, APP, TestNode, WsClient, eventually};
use serde_json::{Value, json};

const COMMANDS: &str = "/api/v1/devices/commands";

/// A device connected over WebSocket as `device`.
async fn device(node: &TestNode, device: &str) -> WsClient {
    let mut client = node.client().await;
    client.join_sync().await;
    client.identify(device).await;
    client
}

fn command_to(device: &str, method: &str, timeout: &str) -> Value {
    json!({"app_id": APP, "device": device, "method": method, "args": ["now"],
           "kwargs": {"delay": 5}, "timeout": timeout})
}

async fn command(node: &TestNode, body: Value) -> (u16, Value) {
    node.api_post(COMMANDS, Some(API_KEY), &body).await
}

/// Reads up to the next `call`; asserts its method and arguments; its id.
async fn expect_command(client: &mut WsClient, method: &str) -> Value {
    let (call, _) = client.recv_until("call").await;
    assert_eq!(call["method"], method, "{call}");
    assert_eq!(call["args"], json!(["now"]));
    assert_eq!(call["kwargs"], json!({"delay": 5}));
    call["id"].clone()
}

async fn outcomes(node: &TestNode, outcome: &str) -> Option<f64> {
    node.metric(&format!(
        r#"chouquette_device_commands_total{{transport="ws",outcome="{outcome}"}}"#
    ))
    .await
}

#[tokio::test]
async fn the_devices_result_and_error_go_back_to_the_backend() {
    let node = TestNode::base().await;
    let mut d1 = device(&node, "D1").await;
    let backend = command(&node, command_to("D1", "device.status", "5s"));
    let answer = async {
        let id = expect_command(&mut d1, "device.status").await;
        d1.send_json(&json!({"class": "result", "id": id, "result": {"battery": 87}}))
            .await;
    };
    let ((status, body), ()) = tokio::join!(backend, answer);
    assert_eq!(
        (status, body),
        (200, json!({"result": {"battery": 87}, "transport": "ws"}))
    );
    let backend = command(&node, command_to("D1", "device.reboot", "5s"));
    let answer = async {
        let id = expect_command(&mut d1, "device.reboot").await;
        d1.send_json(&json!({"class": "error", "id": id, "code": "busy", "message": "charging"}))
            .await;
    };
    let ((status, body), ()) = tokio::join!(backend, answer);
    let expected = json!({"error": {"code": "busy", "message": "charging"}, "transport": "ws"});
    assert_eq!((status, body), (200, expected));
    assert_eq!(outcomes(&node, "ok").await, Some(1.0));
    assert_eq!(outcomes(&node, "error").await, Some(1.0));
}

#[tokio::test]
async fn an_answer_with_the_wrong_id_is_ignored_and_the_command_times_out() {
    let node = TestNode::base().await;
    let mut d1 = device(&node, "D1").await;
    let backend = command(&node, command_to("D1", "device.status", "500ms"));
    let answer = async {
        let id = expect_command(&mut d1, "device.status").await;
        let wrong = format!("{}x", id.as_str().unwrap_or_default());
        d1.send_json(&json!({"class": "result", "id": wrong, "result": "spoofed"}))
            .await;
    };
    let ((status, body), ()) = tokio::join!(backend, answer);
    assert_eq!((status, &body["code"]), (504, &json!("timeout")), "{body}");
    assert_eq!(body["transport"], "ws");
    assert_eq!(outcomes(&node, "timeout").await, Some(1.0));
    let ignored = eventually(Duration::from_secs(5), async || {
        node.metric("chouquette_client_call_answers_ignored_total")
            .await
            == Some(1.0)
    })
    .await;
    assert!(ignored, "the wrong id is counted as ignored");
}

#[tokio::test]
async fn a_device_not_connected_is_offline_at_once() {
    let node = TestNode::base().await;
    // Another device's connection does not count.
    let _d2 = device(&node, "D2").await;
    let started = Instant::now();
    let (status, body) = command(&node, command_to("D1", "device.status", "30s")).await;
    assert_eq!(
        (status, body.clone()),
        (
            404,
            json!({"code": "offline", "message": "the device is not connected",
                   "last_seen": null, "transport": "ws"})
        ),
        "{body}"
    );
    // At once: not after the command's timeout (30 s).
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(outcomes(&node, "offline").await, Some(1.0));
}

#[tokio::test]
async fn bad_requests_are_refused_before_anything_is_sent() {
    let node = TestNode::base().await;
    let (status, _) = node
        .api_post(COMMANDS, None, &command_to("D1", "m", "1s"))
        .await;
    assert_eq!(status, 401);
    for body in [
        json!({"app_id": APP, "device": "", "method": "m"}),
        json!({"app_id": APP, "device": 7, "method": "m"}),
        json!({"app_id": APP, "device": "D1", "method": "bad method"}),
        json!({"app_id": APP, "device": "D1", "method": "m", "timeout": "2m"}),
        json!({"app_id": APP, "device": "D1", "method": "m", "args": {}}),
    ] {
        let (status, answer) = command(&node, body.clone()).await;
        assert_eq!(
            (status, &answer["code"]),
            (400, &json!("bad_message")),
            "{body}"
        );
    }
}
