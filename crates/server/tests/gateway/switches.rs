//! Kill switches (docs/admin.md "`POST /admin/switches`": reset reason and
//! error code `disabled`): each scope ends what it covers with `reset`
//! `disabled`, refuses new subscribes in it, leaves the rest alone, and once
//! lifted lets clients resume with no gap; switches survive a restart.

use std::time::Duration;

use chouquette_testkit::{
    APP, BASE_CONFIG, SECRET, SYNC_CHANNEL, TestNode, WsClient, claims, sign,
};
use serde_json::{Value, json};

use crate::common::{offsets, resume_msg, subscribe_msg};

const OTHER: &str = "other";
const OTHER_SECRET: &str = "other-secret";
const OTHER_KEY: &str = "other-key";
/// The channel of [`OTHER`] used as a probe.
const PROBE: &str = "probe";

/// A subscription token for any app, with optional `sub` and `groups`.
fn token_for(app: &str, channel: &str, sub: Option<&str>, groups: &[&str]) -> String {
    let mut c = claims(channel, json!({"*": {}}), 3600);
    c["app_id"] = json!(app);
    if let Some(sub) = sub {
        c["sub"] = json!(sub);
    }
    if !groups.is_empty() {
        c["groups"] = json!(groups);
    }
    sign(&c, if app == APP { SECRET } else { OTHER_SECRET })
}

/// Gives the connection a `connect` identity of [`APP`].
async fn connect_as(client: &mut WsClient, user: &str) {
    let mut c = claims("", json!({}), 3600);
    c["sub"] = json!(user);
    let token = sign(&c, SECRET);
    client
        .send_json(&json!({"class": "connect", "app_id": APP, "token": token}))
        .await;
    assert_eq!(client.recv().await["class"], "ack");
}

/// Subscribes with `token`; returns the ack's `(epoch, offset)` for the channel.
async fn subscribe_token(
    client: &mut WsClient,
    app: &str,
    channel: &str,
    token: &str,
) -> (String, u64) {
    client
        .send_json(&subscribe_msg("s", app, &[(channel, token)]))
        .await;
    let (ack, before) = client.recv_until("ack").await;
    assert!(before.iter().all(|m| m["class"] != "error"), "{before:?}");
    let at = &ack["channels"][channel];
    (
        at["epoch"].as_str().expect("epoch").to_string(),
        at["offset"].as_u64().expect("offset"),
    )
}

/// One client in a scenario: a subscription the switch may cover, and a
/// probe subscription it never covers.
struct Party {
    client: WsClient,
    app: &'static str,
    channel: &'static str,
    token: String,
    since: (String, u64),
    probe_app: &'static str,
    affected: bool,
}

struct Who<'a> {
    sub: Option<&'a str>,
    groups: &'a [&'a str],
    identity: Option<&'a str>,
}

const NOBODY: Who<'static> = Who {
    sub: None,
    groups: &[],
    identity: None,
};

async fn party(
    node: &TestNode,
    (app, channel): (&'static str, &'static str),
    who: Who<'_>,
    probe_app: &'static str,
    affected: bool,
) -> Party {
    let mut client = node.client().await;
    if let Some(user) = who.identity {
        connect_as(&mut client, user).await;
    }
    let token = token_for(app, channel, who.sub, who.groups);
    let since = subscribe_token(&mut client, app, channel, &token).await;
    let probe_channel = if probe_app == APP {
        SYNC_CHANNEL
    } else {
        PROBE
    };
    let probe_token = token_for(probe_app, probe_channel, None, &[]);
    subscribe_token(&mut client, probe_app, probe_channel, &probe_token).await;
    Party {
        client,
        app,
        channel,
        token,
        since,
        probe_app,
        affected,
    }
}

fn event_of(app: &str, channel: &str) -> Value {
    json!({"app_id": app, "channel": channel, "event_kind": "k", "keywords": [], "data": 1})
}

/// Publishes one event; returns its offset.
async fn publish_on(node: &TestNode, app: &str, channel: &str) -> u64 {
    let key = if app == APP {
        chouquette_testkit::API_KEY
    } else {
        OTHER_KEY
    };
    let (status, answer) = node.publish_raw(key, &event_of(app, channel)).await;
    assert_eq!(status, 200, "{answer}");
    answer["offset"].as_u64().expect("offset")
}

async fn switch(node: &TestNode, mut body: Value, enabled: bool) -> Value {
    body["enabled"] = json!(enabled);
    let (status, answer) = node.admin_post("/admin/switches", &body).await;
    assert_eq!(status, 200, "{answer}");
    answer
}

/// Reads until the `reset` of an affected party; it must name its channel.
async fn expect_disabled(p: &mut Party) {
    let (reset, before) = p.client.recv_until("reset").await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(reset["reason"], "disabled", "{reset}");
    assert_eq!(reset["channel"], p.channel, "{reset}");
}

/// Reads until the probe event at `offset`; returns what came before it.
async fn until_probe(p: &mut Party, offset: u64) -> Vec<Value> {
    let probe = if p.probe_app == APP {
        SYNC_CHANNEL
    } else {
        PROBE
    };
    let mut before = Vec::new();
    loop {
        let m = p.client.recv().await;
        if m["class"] == "data" && m["channel"] == probe && m["offset"] == offset {
            return before;
        }
        before.push(m);
    }
}

/// The whole story of one switch, for every party.
async fn scenario(node: &TestNode, body: Value, mut parties: Vec<Party>) {
    let answer = switch(node, body.clone(), false).await;
    assert_eq!(answer["changed"], true, "{answer}");
    let affected = parties.iter().filter(|p| p.affected).count();
    assert_eq!(answer["affected_connections"], affected, "{answer}");
    for p in parties.iter_mut().filter(|p| p.affected) {
        expect_disabled(p).await;
    }
    // While off: events on every channel, then a probe each party reads up to.
    let mut published = Vec::new();
    for p in &parties {
        if !published
            .iter()
            .any(|(a, c, _)| *a == p.app && *c == p.channel)
        {
            published.push((p.app, p.channel, publish_on(node, p.app, p.channel).await));
        }
    }
    let probe_bluelib = publish_on(node, APP, SYNC_CHANNEL).await;
    let probe_other = publish_on(node, OTHER, PROBE).await;
    for p in parties.iter_mut() {
        let probe = if p.probe_app == APP {
            probe_bluelib
        } else {
            probe_other
        };
        let seen = until_probe(p, probe).await;
        assert!(seen.iter().all(|m| m["class"] == "data"), "{seen:?}");
        let got = offsets(&seen, p.channel);
        if p.affected {
            assert!(got.is_empty(), "{} still receives {got:?}", p.channel);
        } else {
            assert_eq!(got.len(), 1, "{} lost its event: {seen:?}", p.channel);
        }
    }
    // New subscribes in scope are refused.
    for p in parties.iter_mut().filter(|p| p.affected) {
        p.client
            .send_json(&subscribe_msg("again", p.app, &[(p.channel, &p.token)]))
            .await;
        let refusal = p.client.recv().await;
        assert_eq!(refusal["class"], "error", "{refusal}");
        assert_eq!(refusal["code"], "disabled", "{refusal}");
        assert_eq!(refusal["channel"], p.channel, "{refusal}");
    }
    let answer = switch(node, body, true).await;
    assert_eq!(answer["changed"], true, "{answer}");
    // Lifted: resuming from where each stood replays what was missed.
    for p in parties.iter_mut().filter(|p| p.affected) {
        let (epoch, offset) = &p.since;
        let message = if p.app == APP {
            resume_msg("resume", p.channel, &p.token, epoch, *offset)
        } else {
            json!({"class": "subscribe", "app_id": p.app, "uuid": "resume",
                   "channels": {p.channel: {"filters": p.token,
                                            "since": {"epoch": epoch, "offset": offset}}}})
        };
        p.client.send_json(&message).await;
        let (ack, before) = p.client.recv_until("ack").await;
        let missed = published
            .iter()
            .find(|(a, c, _)| *a == p.app && *c == p.channel)
            .map(|(_, _, o)| *o);
        assert_eq!(
            offsets(&before, p.channel),
            Vec::from_iter(missed),
            "{before:?}"
        );
        assert_eq!(ack["channels"][p.channel]["recovered"], true, "{ack}");
    }
}

#[tokio::test]
async fn global_switch_resets_everything_until_lifted() {
    let node = TestNode::base().await;
    let mut a = node.client().await;
    let token_a = token_for(APP, "bornes", None, &[]);
    let (epoch, offset) = subscribe_token(&mut a, APP, "bornes", &token_a).await;
    let mut b = node.client().await;
    let token_b = token_for(OTHER, "x", Some("u"), &[]);
    subscribe_token(&mut b, OTHER, "x", &token_b).await;

    let answer = switch(&node, json!({"scope": "global"}), false).await;
    assert_eq!(answer["affected_connections"], 2, "{answer}");
    for (client, channel) in [(&mut a, "bornes"), (&mut b, "x")] {
        let reset = client.recv().await;
        assert_eq!(reset["class"], "reset");
        assert_eq!(reset["reason"], "disabled");
        assert_eq!(reset["channel"], channel);
    }
    let missed = publish_on(&node, APP, "bornes").await;
    a.send_json(&subscribe_msg(
        "x",
        APP,
        &[("alarms", &token_for(APP, "alarms", None, &[]))],
    ))
    .await;
    let refusal = a.recv().await;
    assert_eq!(refusal["code"], "disabled", "{refusal}");
    assert_eq!(refusal["channel"], "alarms");
    // The event published while off never came: the refusal is next in line.
    a.expect_silence(Duration::from_millis(200)).await;

    let (status, list) = node.admin_get("/admin/switches").await;
    assert_eq!(status, 200);
    assert_eq!(list["switches"], json!([{"scope": "global"}]));
    // Switching off twice changes nothing.
    assert_eq!(
        switch(&node, json!({"scope": "global"}), false).await["changed"],
        false
    );

    switch(&node, json!({"scope": "global"}), true).await;
    a.send_json(&resume_msg("r", "bornes", &token_a, &epoch, offset))
        .await;
    let (ack, before) = a.recv_until("ack").await;
    assert_eq!(offsets(&before, "bornes"), vec![missed]);
    assert_eq!(ack["channels"]["bornes"]["recovered"], true);
    assert_eq!(
        node.metric("chouquette_disabled_resets_total").await,
        Some(2.0)
    );
    assert_eq!(
        node.metric("chouquette_disabled_refusals_total").await,
        Some(1.0)
    );
    assert_eq!(
        node.metric("chouquette_admin_actions_total{action=\"switch_off\"}")
            .await,
        Some(2.0)
    );
}

#[tokio::test]
async fn app_switch() {
    let node = TestNode::base().await;
    let parties = vec![
        party(&node, (APP, "bornes"), NOBODY, OTHER, true).await,
        party(&node, (OTHER, "x"), NOBODY, OTHER, false).await,
    ];
    scenario(&node, json!({"scope": "app", "app": APP}), parties).await;
}

#[tokio::test]
async fn channel_switch() {
    let node = TestNode::base().await;
    let parties = vec![
        party(&node, (APP, "bornes"), NOBODY, APP, true).await,
        party(&node, (APP, "bornes"), NOBODY, OTHER, true).await,
        party(&node, (APP, "alarms"), NOBODY, APP, false).await,
        party(&node, (OTHER, "bornes"), NOBODY, OTHER, false).await,
    ];
    let body = json!({"scope": "channel", "app": APP, "channel": "bornes"});
    scenario(&node, body, parties).await;
}

#[tokio::test]
async fn group_switch() {
    let node = TestNode::base().await;
    let north = |groups| Who {
        sub: None,
        groups,
        identity: None,
    };
    let parties = vec![
        party(
            &node,
            (APP, "bornes"),
            north(&["north", "admin"]),
            APP,
            true,
        )
        .await,
        party(&node, (APP, "bornes"), north(&["south"]), APP, false).await,
        party(&node, (OTHER, "x"), north(&["north"]), OTHER, true).await,
        party(&node, (APP, "alarms"), NOBODY, APP, false).await,
    ];
    scenario(&node, json!({"scope": "group", "group": "north"}), parties).await;
}

#[tokio::test]
async fn user_switch_by_token_or_identity_narrowed_to_an_app() {
    let node = TestNode::base().await;
    let user = |sub| Who {
        sub,
        groups: &[],
        identity: None,
    };
    let identity = Who {
        sub: None,
        groups: &[],
        identity: Some("roger"),
    };
    let parties = vec![
        party(&node, (APP, "bornes"), user(Some("roger")), APP, true).await,
        party(&node, (APP, "bornes"), user(Some("vb")), APP, false).await,
        // Only its connection says it is roger.
        party(&node, (APP, "alarms"), identity, OTHER, true).await,
        // Roger of another app is someone else.
        party(&node, (OTHER, "x"), user(Some("roger")), OTHER, false).await,
    ];
    let body = json!({"scope": "user", "app": APP, "user": "roger"});
    scenario(&node, body, parties).await;
}

#[tokio::test]
async fn a_connect_brings_existing_subscriptions_into_scope() {
    let node = TestNode::base().await;
    switch(&node, json!({"scope": "user", "user": "roger"}), false).await;
    let mut client = node.client().await;
    let token = token_for(APP, "bornes", None, &[]);
    subscribe_token(&mut client, APP, "bornes", &token).await;
    connect_as(&mut client, "roger").await;
    let reset = client.recv().await;
    assert_eq!(reset["class"], "reset", "{reset}");
    assert_eq!(reset["reason"], "disabled");
    assert_eq!(reset["channel"], "bornes");
}

#[tokio::test]
async fn bodies_are_checked_strictly() {
    let node = TestNode::base().await;
    for (body, status) in [
        (json!({"scope": "galaxy", "enabled": false}), 400),
        (
            json!({"scope": "channel", "app": APP, "enabled": false}),
            400,
        ),
        (json!({"scope": "app", "enabled": false}), 400),
        (json!({"scope": "group", "enabled": false}), 400),
        (json!({"scope": "user", "user": "", "enabled": false}), 400),
        (
            json!({"scope": "global", "app": APP, "enabled": false}),
            400,
        ),
        (json!({"scope": "global"}), 400),
        (json!({"scope": "global", "enabled": "no"}), 400),
        (
            json!({"scope": "global", "enabled": false, "why": "x"}),
            400,
        ),
        (json!([]), 400),
        (
            json!({"scope": "app", "app": "nope", "enabled": false}),
            404,
        ),
    ] {
        let (got, answer) = node.admin_post("/admin/switches", &body).await;
        assert_eq!(got, status, "{body} -> {answer}");
        let code = if status == 404 {
            "unknown_app"
        } else {
            "bad_message"
        };
        assert_eq!(answer["code"], code, "{body} -> {answer}");
    }
    let (_, list) = node.admin_get("/admin/switches").await;
    assert_eq!(list["switches"], json!([]));
}

/// A fresh folder under the system's temporary directory.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir =
        std::env::temp_dir().join(format!("chouquette-{name}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// [`BASE_CONFIG`] with extra `[admin]` keys.
pub fn admin_config(extra: &str) -> String {
    BASE_CONFIG.replacen(
        "key = \"admin-key\"",
        &format!("key = \"admin-key\"\n{extra}"),
        1,
    )
}

#[tokio::test]
async fn switches_survive_a_restart_with_a_state_file() {
    let dir = temp_dir("state");
    let path = dir.join("switches.json");
    let config = admin_config(&format!("state_file = {:?}", path.display().to_string()));
    let body = json!({"scope": "channel", "app": APP, "channel": "bornes"});

    let first = TestNode::start(&config).await;
    switch(&first, body.clone(), false).await;
    first.running.shutdown().await;

    let second = TestNode::start(&config).await;
    let (_, list) = second.admin_get("/admin/switches").await;
    assert_eq!(
        list["switches"],
        json!([{"scope": "channel", "app": APP, "channel": "bornes"}])
    );
    let mut client = second.client().await;
    let token = token_for(APP, "bornes", None, &[]);
    client
        .send_json(&subscribe_msg("s", APP, &[("bornes", &token)]))
        .await;
    assert_eq!(client.recv().await["code"], "disabled");
    switch(&second, body, true).await;
    second.running.shutdown().await;

    let third = TestNode::start(&config).await;
    let mut client = third.client().await;
    subscribe_token(&mut client, APP, "bornes", &token).await;
    third.running.shutdown().await;

    std::fs::write(&path, "{ not json").expect("corrupt the file");
    let mut parsed =
        chouquette::config::Config::from_toml(&config, std::iter::empty()).expect("valid");
    parsed.listen.public = "127.0.0.1:0".parse().expect("addr");
    parsed.listen.internal = "127.0.0.1:0".parse().expect("addr");
    let err = chouquette::serve::start(parsed)
        .await
        .expect_err("a corrupt state file stops the start");
    assert!(
        err.to_string().contains("not a kill switch state file"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
