//! Subscription tokens (docs/protocol.md "Tokens"): HS256 with one of the app's
//! secrets, claims checked, everything else refused per channel.

use chouquette_testkit::{APP, BASE_CONFIG, OLD_SECRET, SECRET, TestNode, WsClient, claims, sign};
use serde_json::{Value, json};

use crate::common::{b64url, event, subscribe_msg};

/// Sends a one-channel subscribe for `bornes` of `app` with `token`; returns
/// the first reply.
async fn answer(client: &mut WsClient, app: &str, token: &str) -> Value {
    client
        .send_json(&subscribe_msg("tok", app, &[("bornes", token)]))
        .await;
    client.recv().await
}

/// Asserts `reply` is an error with `code` naming `bornes`.
fn assert_refused(reply: &Value, code: &str) {
    assert_eq!(reply["class"], "error", "{reply}");
    assert_eq!(reply["code"], code, "{reply}");
    assert_eq!(reply["channel"], "bornes", "{reply}");
    assert_eq!(reply["ref"], "tok", "{reply}");
}

fn filters() -> Value {
    json!({"*": {}})
}

/// A JWT with the given header, signed with an arbitrary signature.
fn hand_made(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(signature)
    )
}

#[tokio::test]
async fn refused_tokens_get_the_right_code_and_the_connection_stays_usable() {
    let node = TestNode::base().await;
    let mut client = node.client().await;
    let good = claims("bornes", filters(), 60);

    let forged = sign(&good, "attacker-secret");
    assert_refused(&answer(&mut client, APP, &forged).await, "invalid_token");

    // Tampered claims under a valid signature.
    let valid = sign(
        &claims("bornes", json!({"alarm": {"borne": "B1"}}), 60),
        SECRET,
    );
    let parts: Vec<&str> = valid.split('.').collect();
    let widened = b64url(good.to_string().as_bytes());
    let tampered = format!("{}.{widened}.{}", parts[0], parts[2]);
    assert_refused(&answer(&mut client, APP, &tampered).await, "invalid_token");

    let expired = sign(&claims("bornes", filters(), -10), SECRET);
    assert_refused(&answer(&mut client, APP, &expired).await, "token_expired");

    // Signed for the other app, with the other app's secret.
    let mut for_other = good.clone();
    for_other["app_id"] = json!("other");
    let other_signed = sign(&for_other, "other-secret");
    assert_refused(
        &answer(&mut client, APP, &other_signed).await,
        "invalid_token",
    );
    // Claims for bluelib, but signed with the other app's secret.
    let wrong_secret = sign(&good, "other-secret");
    assert_refused(
        &answer(&mut client, APP, &wrong_secret).await,
        "invalid_token",
    );
    // Claims for the other app, signed with bluelib's own secret.
    let wrong_app = sign(&for_other, SECRET);
    assert_refused(&answer(&mut client, APP, &wrong_app).await, "invalid_token");
    // A valid bluelib token presented under the other app.
    let valid_any = sign(&good, SECRET);
    assert_refused(
        &answer(&mut client, "other", &valid_any).await,
        "invalid_token",
    );

    let none = hand_made(&json!({"alg": "none", "typ": "JWT"}), &good, b"");
    assert_refused(&answer(&mut client, APP, &none).await, "invalid_token");
    let none_upper = hand_made(&json!({"alg": "None", "typ": "JWT"}), &good, b"");
    assert_refused(
        &answer(&mut client, APP, &none_upper).await,
        "invalid_token",
    );
    let hs512 = hand_made(&json!({"alg": "HS512", "typ": "JWT"}), &good, &[7u8; 64]);
    assert_refused(&answer(&mut client, APP, &hs512).await, "invalid_token");
    // HS256 header but the signature of another token: still refused.
    let other_sig = sign(&claims("elsewhere", filters(), 60), SECRET);
    let spliced = format!(
        "{}.{}",
        valid_any.rsplit_once('.').expect("three parts").0,
        other_sig.rsplit_once('.').expect("three parts").1
    );
    assert_refused(&answer(&mut client, APP, &spliced).await, "invalid_token");

    for garbage in ["", "a.b.c", "not-a-jwt", "..", "e30.e30.", "x.y.z.w"] {
        assert_refused(&answer(&mut client, APP, garbage).await, "invalid_token");
    }

    let mut no_exp = good.clone();
    no_exp.as_object_mut().expect("object").remove("exp");
    assert_refused(
        &answer(&mut client, APP, &sign(&no_exp, SECRET)).await,
        "invalid_token",
    );
    let mut no_channel = good.clone();
    no_channel
        .as_object_mut()
        .expect("object")
        .remove("channel");
    assert_refused(
        &answer(&mut client, APP, &sign(&no_channel, SECRET)).await,
        "invalid_token",
    );
    let mut no_filters = good.clone();
    no_filters
        .as_object_mut()
        .expect("object")
        .remove("filters");
    assert_refused(
        &answer(&mut client, APP, &sign(&no_filters, SECRET)).await,
        "invalid_token",
    );

    let elsewhere = sign(&claims("another-channel", filters(), 60), SECRET);
    assert_refused(&answer(&mut client, APP, &elsewhere).await, "wrong_channel");

    // None of these subscribed: nothing is delivered.
    node.publish_event(&event("bornes", "k", &[], json!(null)))
        .await;
    // After all that, a good token still works on the same connection.
    let reply = answer(&mut client, APP, &valid_any).await;
    assert_eq!(reply["class"], "ack", "{reply}");
    assert_eq!(reply["channels"]["bornes"]["offset"], 1);
    node.publish_event(&event("bornes", "k", &[], json!("live")))
        .await;
    let data = client.recv().await;
    assert_eq!(
        (data["offset"].clone(), data["data"].clone()),
        (json!(2), json!("live"))
    );
    let refused = node
        .metric("chouquette_errors_total{code=\"invalid_token\"}")
        .await;
    assert_eq!(refused, Some(19.0), "one invalid_token per refusal above");
    node.running.shutdown().await;
}

/// PROTOCOL.md section 7: an app the gateway does not have is `unknown_app`
/// (app ids are in every page's subscribe message: no secret to keep).
#[tokio::test]
async fn unknown_app_is_refused() {
    let node = TestNode::base().await;
    let mut client = node.client().await;
    let tok = sign(&claims("bornes", filters(), 60), SECRET);
    let reply = answer(&mut client, "no-such-app", &tok).await;
    assert_eq!(reply["class"], "error", "{reply}");
    assert_eq!(reply["code"], "unknown_app", "{reply}");
    assert_eq!(reply["ref"], "tok", "{reply}");
    node.running.shutdown().await;
}

#[tokio::test]
async fn the_previous_secret_still_verifies() {
    let node = TestNode::base().await;
    let mut client = node.client().await;
    let tok = sign(&claims("bornes", filters(), 60), OLD_SECRET);
    let reply = answer(&mut client, APP, &tok).await;
    assert_eq!(reply["class"], "ack", "{reply}");
    assert!(reply["channels"]["bornes"].is_object(), "{reply}");
    node.publish_event(&event("bornes", "k", &[], json!("x")))
        .await;
    assert_eq!(client.recv().await["data"], "x");
    node.running.shutdown().await;
}

#[tokio::test]
async fn the_other_app_accepts_its_own_tokens_only() {
    let node = TestNode::base().await;
    let mut client = node.client().await;
    let mut other = claims("bornes", filters(), 60);
    other["app_id"] = json!("other");
    let reply = answer(&mut client, "other", &sign(&other, "other-secret")).await;
    assert_eq!(reply["class"], "ack", "{reply}");
    // Same channel name, other app: nothing of bluelib's `bornes` leaks in.
    node.publish_event(&event("bornes", "k", &[], json!("bluelib")))
        .await;
    let body = json!({"app_id": "other", "channel": "bornes", "event_kind": "k", "data": "other"});
    let (status, answer) = node.publish_raw("other-key", &body).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["offset"], 1, "offsets are per app: {answer}");
    let data = client.recv().await;
    assert_eq!(data["data"], "other", "{data}");
    assert_eq!(data["offset"], 1, "{data}");
    node.running.shutdown().await;
}

#[tokio::test]
async fn an_active_subscription_ends_with_token_expired_when_its_token_does() {
    // No leeway: the subscription ends at the token's `exp` itself.
    let node = TestNode::start(&format!("[tokens]\nleeway = \"0s\"\n{BASE_CONFIG}")).await;
    let mut client = node.client().await;
    client.join_sync().await;
    let short = claims("bornes", filters(), 2);
    let exp = short["exp"].as_u64().expect("exp");
    let reply = answer(&mut client, APP, &sign(&short, SECRET)).await;
    assert_eq!(reply["class"], "ack", "{reply}");
    node.publish_event(&event("bornes", "k", &[], json!("before")))
        .await;
    assert_eq!(client.recv().await["data"], "before");

    let expired = match client.next_within(std::time::Duration::from_secs(10)).await {
        Some(chouquette_testkit::Received::Json(m)) => m,
        other => panic!("expected token_expired, got {other:?}"),
    };
    let now = chouquette_core::clock::unix_now();
    assert_eq!(expired["class"], "error", "{expired}");
    assert_eq!(expired["code"], "token_expired", "{expired}");
    assert_eq!(expired["channel"], "bornes", "{expired}");
    crate::common::assert_envelope(&expired);
    assert!(now >= exp, "ended at {now}, before its exp {exp}");

    // No more events of that channel; the other subscription goes on.
    node.publish_event(&event("bornes", "k", &[], json!("after")))
        .await;
    let marker = node.publish_marker().await;
    assert_eq!(client.until_marker(marker).await, Vec::<Value>::new());
    assert_eq!(node.metric("chouquette_subscriptions").await, Some(1.0));
    assert_eq!(
        node.metric("chouquette_errors_total{code=\"token_expired\"}")
            .await,
        Some(1.0)
    );
    // A fresh token subscribes again.
    let reply = answer(
        &mut client,
        APP,
        &sign(&claims("bornes", filters(), 60), SECRET),
    )
    .await;
    assert_eq!(reply["class"], "ack", "{reply}");
    assert_eq!(reply["channels"]["bornes"]["offset"], 2, "{reply}");
    node.running.shutdown().await;
}

/// `nbf` was ignored: a token signed for later opened the channel at once.
#[tokio::test]
async fn a_token_before_its_nbf_is_refused() {
    let node = TestNode::base().await;
    let mut client = node.client().await;
    let mut later = claims("bornes", filters(), 3600);
    later["nbf"] = json!(chouquette_core::clock::unix_now() + 600);
    let reply = answer(&mut client, APP, &sign(&later, SECRET)).await;
    assert_refused(&reply, "invalid_token");
    assert!(
        reply["message"].as_str().unwrap().contains("nbf"),
        "{reply}"
    );
    later["nbf"] = json!(chouquette_core::clock::unix_now().saturating_sub(1));
    let reply = answer(&mut client, APP, &sign(&later, SECRET)).await;
    assert_eq!(reply["class"], "ack", "{reply}");
}
