//! Lattices (docs/lattices.md, PROTOCOL.md section 10): `POST
//! /api/v1/lattices` merges values, `lattice_subscribe` answers the full
//! state then the changes. On the memory broker; `tests/redis/lattices.rs`
//! crosses nodes.

use chouquette_testkit::{API_KEY, APP, LatticeView, TestNode, WsClient, config_with};
use serde_json::{Value, json};

/// An update of `namespace` of [`APP`].
fn update(namespace: &str, shared: Value, users: Value) -> Value {
    json!({"app_id": APP, "namespace": namespace, "shared": shared, "users": users})
}

/// POSTs `body`; panics unless 200. Returns the answer.
async fn post(node: &TestNode, body: &Value) -> Value {
    let (status, answer) = node.lattice_update(Some(API_KEY), body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// A tab of `user`, listening for markers.
async fn tab(node: &TestNode, user: &str) -> WsClient {
    let mut client = node.client().await;
    client.join_sync().await;
    client.identify(user).await;
    client
}

/// Sends `lattice_subscribe` and returns the full state that answers it.
async fn subscribe(client: &mut WsClient, namespace: &str) -> Value {
    client
        .send_json(&json!({"class": "lattice_subscribe", "namespace": namespace, "uuid": "l1"}))
        .await;
    let (full, before) = client.recv_until("lattice").await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(
        (&full["full"], &full["namespace"], &full["ref"]),
        (&json!(true), &json!(namespace), &json!("l1")),
        "{full}"
    );
    assert!(full["uuid"].is_string() && full["timestamp"].is_string());
    full
}

/// The `lattice` messages `client` receives before the next marker.
async fn changes(node: &TestNode, client: &mut WsClient) -> Vec<Value> {
    let marker = node.publish_marker().await;
    let got = client.until_marker(marker).await;
    for m in &got {
        assert_eq!(m["class"], "lattice", "{m}");
        assert!(m.get("full").is_none(), "{m}");
    }
    got
}

#[tokio::test]
async fn two_tabs_of_a_user_converge_and_another_user_sees_only_the_shared_values() {
    let node = TestNode::base().await;
    let mut tabs = [tab(&node, "roger").await, tab(&node, "roger").await];
    let mut vb = tab(&node, "vb").await;
    let mut views = [LatticeView::default(), LatticeView::default()];
    for (tab, view) in tabs.iter_mut().zip(&mut views) {
        let full = subscribe(tab, "unread").await;
        assert_eq!((&full["shared"], &full["user"]), (&json!({}), &json!({})));
        view.apply(&full);
    }
    subscribe(&mut vb, "unread").await;

    let answer = post(
        &node,
        &update(
            "unread",
            json!({"total": {"counter": 7}}),
            json!({"roger": {"rooms": {"set": ["r1", "r2"]},
                             "status": {"register": {"value": "away", "ts": 10.5}}}}),
        ),
    )
    .await;
    assert_eq!(answer, json!({"changed": {"shared": 1, "users": 1}}));
    // Lower counter, one new room, an older status: only `rooms` changes,
    // and it is sent with its merged value.
    let answer = post(
        &node,
        &update(
            "unread",
            json!({"total": {"counter": 3}}),
            json!({"roger": {"rooms": {"set": ["r3"]},
                             "status": {"register": {"value": "busy", "ts": 9}}}}),
        ),
    )
    .await;
    assert_eq!(answer, json!({"changed": {"shared": 0, "users": 1}}));
    let expected = json!({
        "shared": {"total": {"counter": 7}},
        "user": {"rooms": {"set": ["r1", "r2", "r3"]},
                 "status": {"register": {"value": "away", "ts": 10.5}}}
    });
    for (tab, view) in tabs.iter_mut().zip(&mut views) {
        let got = changes(&node, tab).await;
        assert_eq!(got.len(), 3, "{got:?}");
        assert_eq!(
            got[2]["user"],
            json!({"rooms": {"set": ["r1", "r2", "r3"]}})
        );
        // Applied twice and backwards, the changes still end in one state.
        for m in got.iter().chain(got.iter().rev()) {
            view.apply(m);
        }
        assert_eq!(view.json(), expected);
    }
    // vb: the shared change only, and nothing of roger's in its full state.
    let got = changes(&node, &mut vb).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        (&got[0]["shared"], &got[0]["user"]),
        (&json!({"total": {"counter": 7}}), &json!({}))
    );
    let full = subscribe(&mut vb, "unread").await;
    assert_eq!(
        (&full["shared"], &full["user"]),
        (&expected["shared"], &json!({}))
    );
    // A tab opened later gets everything at once.
    let mut later = tab(&node, "roger").await;
    let mut view = LatticeView::default();
    view.apply(&subscribe(&mut later, "unread").await);
    assert_eq!(view.json(), expected);
}

#[tokio::test]
async fn no_change_falls_between_the_full_state_and_the_changes() {
    let node = TestNode::base().await;
    let mut client = tab(&node, "roger").await;
    let posting = async {
        for n in 1..=40u64 {
            let element = format!("e{n}");
            let body = update(
                "unread",
                json!({"total": {"counter": n}}),
                json!({"roger": {"seen": {"set": [element]}}}),
            );
            post(&node, &body).await;
        }
    };
    let subscribing = async {
        // Subscribes while the updates go on (the messages it sends are
        // answered in turn, the POSTs land before, between and after).
        let mut view = LatticeView::default();
        view.apply(&subscribe(&mut client, "unread").await);
        (client, view)
    };
    let ((), (mut client, mut view)) = tokio::join!(posting, subscribing);
    for m in changes(&node, &mut client).await {
        view.apply(&m);
    }
    let elements: Vec<String> = (1..=40).map(|n| format!("e{n}")).collect();
    let mut sorted = elements.clone();
    sorted.sort();
    assert_eq!(
        view.json(),
        json!({"shared": {"total": {"counter": 40}}, "user": {"seen": {"set": sorted}}})
    );
}

#[tokio::test]
async fn lattices_need_an_identity_and_unsubscribe_stops_the_changes() {
    let node = TestNode::base().await;
    let mut anonymous = node.client().await;
    anonymous
        .send_json(&json!({"class": "lattice_subscribe", "namespace": "unread", "uuid": "a"}))
        .await;
    let error = anonymous.recv().await;
    assert_eq!(
        (&error["class"], &error["code"], &error["ref"]),
        (&json!("error"), &json!("not_allowed"), &json!("a")),
        "{error}"
    );
    assert!(
        error["message"].as_str().unwrap().contains("connect"),
        "{error}"
    );

    let mut roger = tab(&node, "roger").await;
    roger
        .send_json(&json!({"class": "lattice_subscribe", "namespace": "no spaces"}))
        .await;
    assert_eq!(roger.recv().await["code"], "bad_message");
    roger
        .send_json(&json!({"class": "lattice_subscribe"}))
        .await;
    assert_eq!(roger.recv().await["code"], "bad_message");
    subscribe(&mut roger, "unread").await;
    roger
        .send_json(&json!({"class": "lattice_unsubscribe", "namespace": "unread", "uuid": "u"}))
        .await;
    let ack = roger.recv().await;
    assert_eq!((&ack["class"], &ack["ref"]), (&json!("ack"), &json!("u")));
    post(
        &node,
        &update(
            "unread",
            json!({"n": {"counter": 1}}),
            json!({"roger": {"n": {"counter": 1}}}),
        ),
    )
    .await;
    assert!(changes(&node, &mut roger).await.is_empty());
}

#[tokio::test]
async fn bad_values_and_keys_are_refused_and_nothing_is_merged() {
    let node = TestNode::base().await;
    let good = update("unread", json!({"n": {"counter": 1}}), json!({}));
    assert_eq!(node.lattice_update(None, &good).await.0, 401);
    assert_eq!(node.lattice_update(Some("wrong"), &good).await.0, 403);
    let mut unknown = good.clone();
    unknown["app_id"] = json!("nope");
    assert_eq!(node.lattice_update(Some(API_KEY), &unknown).await.0, 403);

    let cases = [
        (update("unread", json!({"total": 3}), json!({})), "total"),
        (
            update("unread", json!({"total": {"counter": -1}}), json!({})),
            "total",
        ),
        (
            update(
                "unread",
                json!({}),
                json!({"roger": {"status": {"register": {"value": 1}}}}),
            ),
            "status",
        ),
        (update("unread", json!({"g": {"gauge": 1}}), json!({})), "g"),
        (update("bad namespace", json!({}), json!({})), "namespace"),
        (update("unread", json!({}), json!({"": {}})), "user"),
        (
            json!({"app_id": APP, "namespace": "unread", "extra": 1}),
            "body",
        ),
    ];
    for (body, named) in cases {
        let (status, answer) = node.lattice_update(Some(API_KEY), &body).await;
        assert_eq!(
            (status, &answer["code"]),
            (400, &json!("bad_message")),
            "{body}: {answer}"
        );
        assert!(
            answer["message"].as_str().unwrap().contains(named),
            "{answer}"
        );
    }
    // A good shared part with a bad user part: nothing of it is merged.
    let mixed = update(
        "unread",
        json!({"n": {"counter": 5}}),
        json!({"roger": {"x": {"set": [1]}}}),
    );
    assert_eq!(node.lattice_update(Some(API_KEY), &mixed).await.0, 400);
    let mut roger = tab(&node, "roger").await;
    let full = subscribe(&mut roger, "unread").await;
    assert_eq!(full["shared"], json!({}));
}

/// `n` counters named `prefix0`, `prefix1`, ...
fn counters(prefix: &str, n: usize) -> Value {
    (0..n)
        .map(|i| (format!("{prefix}{i}"), json!({"counter": 1})))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

#[tokio::test]
async fn bounds_refuse_the_whole_update() {
    let node = TestNode::base().await;
    // 256 keys per lattice: one update of 257, or 200 then 57 more.
    let (status, answer) = node
        .lattice_update(
            Some(API_KEY),
            &update("unread", counters("k", 257), json!({})),
        )
        .await;
    assert_eq!(
        (status, &answer["code"]),
        (507, &json!("too_large")),
        "{answer}"
    );
    post(&node, &update("unread", counters("a", 200), json!({}))).await;
    let over = update(
        "unread",
        counters("b", 57),
        json!({"roger": {"mine": {"counter": 1}}}),
    );
    let (status, answer) = node.lattice_update(Some(API_KEY), &over).await;
    assert_eq!(
        (status, &answer["code"]),
        (507, &json!("too_large")),
        "{answer}"
    );
    assert!(
        answer["message"].as_str().unwrap().contains("shared"),
        "{answer}"
    );
    let mut roger = tab(&node, "roger").await;
    let full = subscribe(&mut roger, "unread").await;
    assert_eq!(full["shared"].as_object().unwrap().len(), 200);
    assert_eq!(full["user"], json!({}), "nothing of the refused update");

    // 64 namespaces per app ("unread" is one).
    for i in 1..64 {
        post(
            &node,
            &update(&format!("ns{i}"), counters("c", 1), json!({})),
        )
        .await;
    }
    let (status, answer) = node
        .lattice_update(Some(API_KEY), &update("ns64", counters("c", 1), json!({})))
        .await;
    assert_eq!(
        (status, &answer["code"]),
        (507, &json!("too_large")),
        "{answer}"
    );
    // Updating a namespace held still works.
    post(&node, &update("ns1", counters("d", 1), json!({}))).await;

    // 16 namespaces per connection.
    for i in 1..16 {
        subscribe(&mut roger, &format!("ns{i}")).await;
    }
    roger
        .send_json(&json!({"class": "lattice_subscribe", "namespace": "ns16"}))
        .await;
    assert_eq!(roger.recv().await["code"], "too_many_subscriptions");
    // Subscribing again to a held one only sends its state again.
    subscribe(&mut roger, "ns1").await;
}

#[tokio::test]
async fn the_python_example_posts_an_update_that_reaches_subscribers() {
    let node = TestNode::start(&config_with("", "")).await;
    let mut roger = tab(&node, "roger").await;
    subscribe(&mut roger, "unread").await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/python/lattice_update.py"
    );
    let run = |args: Vec<String>| {
        tokio::process::Command::new("python3")
            .arg(script)
            .args([
                "--url",
                &node.internal_url(),
                "--app",
                APP,
                "--namespace",
                "unread",
            ])
            .args(args)
            .output()
    };
    let output = run(vec![
        "--key".into(),
        API_KEY.into(),
        "--shared".into(),
        r#"{"total": {"counter": 7}}"#.into(),
        "--user".into(),
        "roger".into(),
        r#"{"rooms": {"set": ["r1"]}}"#.into(),
    ])
    .await
    .expect("python3 runs");
    assert!(output.status.success(), "{output:?}");
    let answer: Value = serde_json::from_slice(&output.stdout).expect("JSON answer");
    assert_eq!(answer, json!({"changed": {"shared": 1, "users": 1}}));
    let mut view = LatticeView::default();
    for m in changes(&node, &mut roger).await {
        view.apply(&m);
    }
    assert_eq!(
        view.json(),
        json!({"shared": {"total": {"counter": 7}}, "user": {"rooms": {"set": ["r1"]}}})
    );
    // A refused update: exit 1 and the gateway's code.
    let output = run(vec!["--key".into(), "wrong".into()])
        .await
        .expect("python3 runs");
    assert_eq!(output.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("not_allowed"),
        "{output:?}"
    );
}
