//! Backends calling a user's connections across gateways on one Redis: the
//! call crosses the users topic, each node says how many connections it
//! reached, and the client's answer comes back on the calling node's own
//! replies topic (docs/rpc.md "Calls to clients").

use std::time::{Duration, Instant};

use chouquette_testkit::{API_KEY, APP, RedisServer, TestNode, WsClient};
use serde_json::{Value, json};

use crate::nodes;

fn call_to(user: &str, timeout: &str) -> Value {
    json!({"app_id": APP, "user": user, "method": "device.status", "args": [],
           "timeout": timeout})
}

/// POSTs `body` to node's calls route with the app's key.
async fn call(node: &TestNode, body: Value) -> (u16, Value) {
    node.api_post("/api/v1/calls", Some(API_KEY), &body).await
}

async fn expect_call(client: &mut WsClient) -> Value {
    let (call, before) = client.recv_until("call").await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(call["method"], "device.status", "{call}");
    call["id"].clone()
}

#[tokio::test]
async fn a_backend_on_node_a_gets_the_answer_of_a_user_on_node_b() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 2).await;
    let mut on_b = nodes[1].client().await;
    on_b.identify("roger").await;
    let backend = call(&nodes[0], call_to("roger", "5s"));
    let client = async {
        let id = expect_call(&mut on_b).await;
        on_b.send_json(&json!({"class": "result", "id": id, "result": {"battery": 12}}))
            .await;
    };
    let ((status, body), ()) = tokio::join!(backend, client);
    assert_eq!((status, body), (200, json!({"result": {"battery": 12}})));
    // And a client's error, the same way.
    let backend = call(&nodes[0], call_to("roger", "5s"));
    let client = async {
        let id = expect_call(&mut on_b).await;
        on_b.send_json(&json!({"class": "error", "id": id, "code": "asleep"}))
            .await;
    };
    let ((status, body), ()) = tokio::join!(backend, client);
    let expected = json!({"error": {"code": "asleep", "message": ""}});
    assert_eq!((status, body), (200, expected));
    // Nobody answering: a timeout on node A, not on node B.
    let backend = call(&nodes[0], call_to("roger", "300ms"));
    let ((status, body), _) = tokio::join!(backend, expect_call(&mut on_b));
    assert_eq!((status, &body["code"]), (504, &json!("timeout")), "{body}");
}

#[tokio::test]
async fn a_user_on_no_node_is_not_connected_as_soon_as_every_node_said_so() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 3).await;
    let mut vb = nodes[2].client().await;
    vb.identify("vb").await;
    let started = Instant::now();
    let (status, body) = call(&nodes[0], call_to("roger", "30s")).await;
    assert_eq!(
        (status, &body["code"]),
        (404, &json!("not_connected")),
        "{body}"
    );
    // Every node answered "none": no wait for the one-second allowance
    // for nodes that do not answer.
    let took = started.elapsed();
    assert!(took < Duration::from_millis(900), "{took:?}");
}

#[tokio::test]
async fn a_listener_that_never_answers_delays_not_connected_by_one_second_only() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 2).await;
    // A "node" that hears calls and dies before answering: a bare
    // subscriber on the users topic.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut hung = client.get_async_pubsub().await.unwrap();
    hung.subscribe("chq:users").await.unwrap();
    let started = Instant::now();
    let (status, body) = call(&nodes[0], call_to("roger", "30s")).await;
    assert_eq!(
        (status, &body["code"]),
        (404, &json!("not_connected")),
        "{body}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // A user who is connected still gets the call and answers.
    let mut on_b = nodes[1].client().await;
    on_b.identify("roger").await;
    let backend = call(&nodes[0], call_to("roger", "5s"));
    let answer = async {
        let id = expect_call(&mut on_b).await;
        on_b.send_json(&json!({"class": "result", "id": id, "result": true}))
            .await;
    };
    let ((status, body), ()) = tokio::join!(backend, answer);
    assert_eq!((status, body), (200, json!({"result": true})));
    drop(hung);
}

#[tokio::test]
async fn a_message_to_a_user_crosses_nodes() {
    let redis = RedisServer::start().await;
    let nodes = nodes(&redis, 2).await;
    let mut on_b = nodes[1].client().await;
    on_b.identify("roger").await;
    let body = json!({"app_id": APP, "user": "roger", "event_kind": "chat.typing",
                      "data": {"room": "lobby"}});
    let (status, answer) = nodes[0]
        .api_post("/api/v1/users/send", Some(API_KEY), &body)
        .await;
    // Node A holds none of roger's connections; both nodes heard it.
    assert_eq!(
        (status, answer),
        (200, json!({"connections": 0, "nodes": 2}))
    );
    let (message, before) = on_b.recv_until("message").await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(
        (&message["event_kind"], &message["data"]),
        (&json!("chat.typing"), &json!({"room": "lobby"}))
    );
}
