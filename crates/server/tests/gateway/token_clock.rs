//! Token times (docs/protocol.md "Tokens"): the clock-skew leeway on `exp`
//! and `nbf` (`[tokens] leeway`), a `connect` identity that ends when its
//! token does, and app ids that cannot be listed without a valid token.

use std::time::Duration;

use chouquette_testkit::{APP, BASE_CONFIG, Received, SECRET, TestNode, WsClient, claims, sign};
use serde_json::{Value, json};

use crate::common::subscribe_msg;

/// A node of [`BASE_CONFIG`] with `[tokens] leeway` set to `leeway`.
async fn node_with_leeway(leeway: &str) -> TestNode {
    TestNode::start(&format!("[tokens]\nleeway = \"{leeway}\"\n{BASE_CONFIG}")).await
}

fn now() -> i64 {
    i64::try_from(chouquette_core::clock::unix_now()).expect("now fits")
}

/// Subscription claims for `bornes` with `claim` set to `at`.
fn bornes_with(claim: &str, at: i64) -> String {
    let mut c = claims("bornes", json!({"*": {}}), 3600);
    c[claim] = json!(at);
    sign(&c, SECRET)
}

/// A `connect` token for user `roger` of `app` expiring at `exp`.
fn connect_token(app: &str, exp: i64) -> Value {
    let c = json!({"app_id": app, "sub": "roger", "exp": exp});
    json!({"class": "connect", "app_id": app, "uuid": "c1", "token": sign(&c, SECRET)})
}

async fn first_reply(client: &mut WsClient, message: &Value) -> Value {
    client.send_json(message).await;
    client.recv().await
}

/// The leeway was hard-coded to 0: a backend whose clock ran two seconds
/// ahead of the gateway's (or a token used right at its end) was refused.
#[tokio::test]
async fn a_token_two_seconds_past_exp_or_before_nbf_is_accepted_within_the_leeway() {
    for (leeway, ok) in [("5s", true), ("0s", false)] {
        let node = node_with_leeway(leeway).await;
        let mut client = node.client().await;
        let cases = [
            ("exp", now() - 2, "token_expired"),
            ("nbf", now() + 2, "invalid_token"),
        ];
        for (claim, at, refused) in cases {
            let message = subscribe_msg("s1", APP, &[("bornes", &bornes_with(claim, at))]);
            let reply = first_reply(&mut client, &message).await;
            let (class, code) = if ok { ("ack", "") } else { ("error", refused) };
            assert_eq!(reply["class"], class, "{claim}, leeway {leeway}: {reply}");
            if !ok {
                assert_eq!(reply["code"], code, "{claim}, leeway {leeway}: {reply}");
            }
        }
        let reply = first_reply(&mut client, &connect_token(APP, now() - 2)).await;
        let class = if ok { "ack" } else { "error" };
        assert_eq!(reply["class"], class, "connect, leeway {leeway}: {reply}");
        node.running.shutdown().await;
    }
}

#[test]
fn a_leeway_over_five_minutes_is_a_config_problem() {
    let text = format!("[tokens]\nleeway = \"10m\"\n{BASE_CONFIG}");
    let problems = match chouquette::config::Config::from_toml(&text, std::iter::empty()) {
        Err(chouquette::config::ConfigError::Invalid(p)) => p,
        other => panic!("expected a problem, got {other:?}"),
    };
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].line, Some(2), "{problems:?}");
    assert!(
        problems[0].message.contains("tokens.leeway"),
        "{problems:?}"
    );
}

/// The `exp` of a `connect` token was checked once: the identity it gave
/// lasted as long as the connection.
#[tokio::test]
async fn a_connect_identity_ends_with_token_expired_when_its_token_does() {
    let node = node_with_leeway("0s").await;
    let mut client = node.client().await;
    let exp = now() + 2;
    let reply = first_reply(&mut client, &connect_token(APP, exp)).await;
    assert_eq!(reply["class"], "ack", "{reply}");
    let path = "/admin/connections?app=bluelib&user=roger";
    let (_, listed) = node.admin_get(path).await;
    assert_eq!(listed["connections"].as_array().map(Vec::len), Some(1));

    let expired = match client.next_within(Duration::from_secs(10)).await {
        Some(Received::Json(m)) => m,
        other => panic!("expected token_expired, got {other:?}"),
    };
    assert_eq!(expired["class"], "error", "{expired}");
    assert_eq!(expired["code"], "token_expired", "{expired}");
    assert!(expired.get("channel").is_none(), "{expired}");
    assert!(now() >= exp, "ended before its exp");
    let (_, listed) = node.admin_get(path).await;
    assert_eq!(listed["connections"], json!([]), "the identity is gone");

    // The connection stays open: a new connect gives it an identity again.
    let reply = first_reply(&mut client, &connect_token(APP, now() + 3600)).await;
    assert_eq!(reply["class"], "ack", "{reply}");
    let (_, listed) = node.admin_get(path).await;
    assert_eq!(listed["connections"].as_array().map(Vec::len), Some(1));
    node.running.shutdown().await;
}

#[tokio::test]
async fn a_new_connect_before_expiry_refreshes_the_identity() {
    let node = node_with_leeway("0s").await;
    let mut client = node.client().await;
    let reply = first_reply(&mut client, &connect_token(APP, now() + 2)).await;
    assert_eq!(reply["class"], "ack", "{reply}");
    let reply = first_reply(&mut client, &connect_token(APP, now() + 3600)).await;
    assert_eq!(reply["class"], "ack", "{reply}");
    client.expect_silence(Duration::from_secs(4)).await;
    node.running.shutdown().await;
}
