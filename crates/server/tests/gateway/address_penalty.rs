//! Issue 10, H3: one connection closed as abusive locked every client of its
//! address out for ~10 s (behind a NAT or a proxy, that is everyone). The
//! connection is closed; its address only pays a share of its
//! new-connection budget, so others connect at once, and only an address
//! that keeps abusing in a loop is slowed, then refused cheaply.

use chouquette_testkit::{TestNode, WsClient, config_with};
use serde_json::json;

/// A flood that closes a connection at once: rate 1 with a burst of 1, one
/// refusal tolerated.
const FLOOD_LIMITS: &str =
    "client_messages_per_second = 1\nclient_messages_burst = 1\nmax_rate_limited_messages = 1";

/// Floods `client` until the gateway closes it as abusive.
async fn flood_until_closed(client: &mut WsClient) {
    for i in 0..3 {
        let msg = json!({"class": "unsubscribe", "uuid": format!("f{i}"), "channels": ["x"]});
        client.send_json(&msg).await;
    }
    assert_eq!(
        client.expect_close().await,
        Some((1008, "rate_limited".to_string()))
    );
}

#[tokio::test]
async fn after_one_abusive_connection_another_client_of_its_address_connects_at_once() {
    let node = TestNode::start(&config_with(FLOOD_LIMITS, "")).await;
    let mut abuser = node.client().await;
    flood_until_closed(&mut abuser).await;
    // Same address (127.0.0.1), right after: upgraded and served.
    let mut neighbour = node.client().await;
    let (ack, _) = neighbour.subscribe("bornes", json!({"*": {}})).await;
    assert_eq!(ack["class"], "ack");
    assert_eq!(
        node.metric("chouquette_limited_total{limit=\"connections_per_address\"}")
            .await,
        Some(0.0)
    );
    node.running.shutdown().await;
}

/// An address whose connections are closed as abusive over and over runs
/// out of budget (each close costs a tenth of the burst, 2 tokens here):
/// its reconnections are then refused before any upgrade.
#[tokio::test]
async fn an_address_abusing_in_a_loop_is_slowed_and_refused_before_the_upgrade() {
    let limits =
        format!("{FLOOD_LIMITS}\nnew_connections_per_address = 1\nnew_connections_burst = 20");
    let node = TestNode::start(&config_with(&limits, "")).await;
    let mut served = 0;
    let mut refused = 0;
    for _ in 0..30 {
        match tokio_tungstenite::connect_async(node.ws_url()).await {
            Ok((stream, _)) => {
                served += 1;
                flood_until_closed(&mut WsClient::from_stream(stream)).await;
            }
            // 429 before the upgrade, or the socket closed at accept.
            Err(_) => refused += 1,
        }
    }
    // 20 tokens at 3 a cycle (1 to connect, 2 for the close): 7 cycles,
    // plus at most a token or two refilled while the loop runs.
    assert!((7..=9).contains(&served), "served {served}");
    assert_eq!(served + refused, 30);
    let limited = node
        .metric("chouquette_limited_total{limit=\"connections_per_address\"}")
        .await
        .unwrap_or(0.0);
    assert!(limited >= f64::from(refused), "{limited} < {refused}");
    node.running.shutdown().await;
}
