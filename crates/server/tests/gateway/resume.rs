//! Resume and reset, and last known state (docs/protocol.md "Subscribing":
//! `since`, `reset` `history_gap`, snapshots).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use chouquette_testkit::{TestNode, config_with, token};
use serde_json::{Value, json};

use crate::common::{event, offsets, resume_msg};

fn config_short_history() -> String {
    config_with("", "[apps.channels.short]\nhistory = 3\n")
}

/// The data messages before an ack, checked to be resumed (not snapshot) events.
fn replayed(before: &[Value], channel: &str) -> Vec<u64> {
    for m in before {
        assert_eq!(m["class"], "data", "{m}");
        assert!(m.get("snapshot").is_none(), "{m}");
    }
    offsets(before, channel)
}

#[tokio::test]
async fn since_replays_exactly_the_missed_matching_events_then_live() {
    let node = TestNode::base().await;
    let filters = json!({"alarm": {"borne": "B1"}});
    let tok = token("bornes", filters.clone(), 600);
    let mut client = node.client().await;
    let (ack, _) = client.subscribe("bornes", filters.clone()).await;
    let epoch = ack["channels"]["bornes"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_string();
    let b1 = |i: i32| event("bornes", "alarm", &["borne:B1"], json!(i));
    let b2 = |i: i32| event("bornes", "alarm", &["borne:B2"], json!(i));
    node.publish_event(&b1(1)).await;
    node.publish_event(&b2(2)).await;
    node.publish_event(&b1(3)).await;
    let mut last = 0;
    for _ in 0..2 {
        last = client.recv().await["offset"].as_u64().expect("offset");
    }
    assert_eq!(last, 3);
    client.close().await;

    // Missed while away: 4 (B1), 5 (B2), 6 (B1), 7 (status, not in filter).
    node.publish_event(&b1(4)).await;
    node.publish_event(&b2(5)).await;
    node.publish_event(&b1(6)).await;
    node.publish_event(&event("bornes", "status", &["borne:B1"], json!(7)))
        .await;

    let mut again = node.client().await;
    again.join_sync().await;
    again
        .send_json(&resume_msg("resume-1", "bornes", &tok, &epoch, last))
        .await;
    let (ack, before) = again.recv_until("ack").await;
    assert_eq!(ack["ref"], "resume-1");
    assert_eq!(replayed(&before, "bornes"), vec![4, 6]);
    let data: Vec<Value> = before.iter().map(|m| m["data"].clone()).collect();
    assert_eq!(data, vec![json!(4), json!(6)]);
    let channel = &ack["channels"]["bornes"];
    assert_eq!(channel["recovered"], true, "{ack}");
    assert_eq!(channel["epoch"], epoch.as_str(), "{ack}");
    assert_eq!(channel["offset"], 7, "{ack}");

    // Then live, with no duplicate of what was replayed.
    node.publish_event(&b1(8)).await;
    node.publish_event(&b2(9)).await;
    let marker = node.publish_marker().await;
    let live = again.until_marker(marker).await;
    assert_eq!(offsets(&live, "bornes"), vec![8]);
    assert_eq!(live.len(), 1, "{live:?}");

    // Resuming at the top replays nothing and is still recovered.
    let mut third = node.client().await;
    third
        .send_json(&resume_msg("resume-2", "bornes", &tok, &epoch, 9))
        .await;
    let (ack, before) = third.recv_until("ack").await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(ack["channels"]["bornes"]["recovered"], true, "{ack}");
    node.running.shutdown().await;
}

#[tokio::test]
async fn a_wrong_epoch_gets_a_history_gap_reset() {
    let node = TestNode::base().await;
    for i in 0..3 {
        node.publish_event(&event("bornes", "k", &[], json!(i)))
            .await;
    }
    let tok = token("bornes", json!({"*": {}}), 600);
    let mut client = node.client().await;
    client
        .send_json(&resume_msg("r", "bornes", &tok, "not-the-epoch", 1))
        .await;
    let (ack, before) = client.recv_until("ack").await;
    assert_eq!(before.len(), 1, "only a reset before the ack: {before:?}");
    let reset = &before[0];
    crate::common::assert_envelope(reset);
    assert_eq!(reset["class"], "reset");
    assert_eq!(reset["reason"], "history_gap");
    assert_eq!(reset["channel"], "bornes");
    assert_eq!(ack["channels"]["bornes"]["recovered"], false, "{ack}");
    assert_eq!(ack["channels"]["bornes"]["offset"], 3, "{ack}");
    // Then live events.
    node.publish_event(&event("bornes", "k", &[], json!("live")))
        .await;
    let data = client.recv().await;
    assert_eq!(
        (data["offset"].clone(), data["data"].clone()),
        (json!(4), json!("live"))
    );
    node.running.shutdown().await;
}

#[tokio::test]
async fn history_that_no_longer_reaches_back_gets_a_history_gap_reset() {
    let node = TestNode::start(&config_short_history()).await;
    let mut epoch = String::new();
    for i in 1..=10 {
        epoch = node
            .publish_event(&event("short", "k", &[], json!(i)))
            .await
            .0;
    }
    let tok = token("short", json!({"*": {}}), 600);
    // History keeps 8, 9, 10: resuming after 7 still works...
    let mut client = node.client().await;
    client
        .send_json(&resume_msg("ok", "short", &tok, &epoch, 7))
        .await;
    let (ack, before) = client.recv_until("ack").await;
    assert_eq!(replayed(&before, "short"), vec![8, 9, 10]);
    assert_eq!(ack["channels"]["short"]["recovered"], true, "{ack}");

    // ...after 6 it does not (7 is gone), nor from 0, nor past the top.
    let mut top = 10;
    for round in 0..5 {
        let since = [6, 2, 0, top + 1, top + 1000][round];
        let mut client = node.client().await;
        client
            .send_json(&resume_msg("gap", "short", &tok, &epoch, since))
            .await;
        let (ack, before) = client.recv_until("ack").await;
        assert_eq!(before.len(), 1, "since {since}: {before:?}");
        assert_eq!(before[0]["class"], "reset", "since {since}");
        assert_eq!(before[0]["reason"], "history_gap", "since {since}");
        assert_eq!(before[0]["channel"], "short", "since {since}");
        let channel = &ack["channels"]["short"];
        assert_eq!(channel["recovered"], false, "since {since}: {ack}");
        assert_eq!(channel["offset"], top, "since {since}: {ack}");
        // Then live events.
        top = node
            .publish_event(&event("short", "k", &[], json!("live")))
            .await
            .1;
        let data = client.recv().await;
        assert_eq!(data["class"], "data", "since {since}: {data}");
        assert_eq!(data["offset"], top, "since {since}: {data}");
    }
    node.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_while_events_flow_has_no_gap_and_no_duplicate() {
    let node = Arc::new(TestNode::base().await);
    let filters = json!({"alarm": {"borne": "B1"}});
    let tok = token("bornes", filters.clone(), 600);
    let mut client = node.client().await;
    let (ack, _) = client.subscribe("bornes", filters.clone()).await;
    let epoch = ack["channels"]["bornes"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let node = node.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut matching = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) || i < 200 {
                let borne = ["borne:B2", "borne:B1", "borne:B1"][(i % 3) as usize];
                let (_, offset) = node
                    .publish_event(&event("bornes", "alarm", &[borne], json!(i)))
                    .await;
                if borne == "borne:B1" {
                    matching.push(offset);
                }
                i += 1;
            }
            matching
        })
    };
    // Disconnect and resume repeatedly while the publisher runs.
    let mut seen: Vec<u64> = Vec::new();
    let mut last = 0u64;
    for round in 0..8 {
        // Read a few live events, then drop the connection.
        for _ in 0..(3 + round) {
            let m = client.recv().await;
            assert_eq!(m["class"], "data", "{m}");
            let offset = m["offset"].as_u64().expect("offset");
            assert!(offset > last, "offset {offset} after {last}");
            last = offset;
            seen.push(offset);
        }
        client.close().await;
        client = node.client().await;
        client
            .send_json(&resume_msg("again", "bornes", &tok, &epoch, last))
            .await;
        let (ack, before) = client.recv_until("ack").await;
        assert_eq!(ack["channels"]["bornes"]["recovered"], true, "{ack}");
        for offset in replayed(&before, "bornes") {
            assert!(offset > last, "replayed {offset} after {last}");
            last = offset;
            seen.push(offset);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let matching = publisher.await.expect("publisher");
    let top = *matching.last().expect("published");
    while last < top {
        let m = client.recv().await;
        let offset = m["offset"].as_u64().expect("offset");
        assert!(offset > last, "offset {offset} after {last}");
        last = offset;
        seen.push(offset);
    }
    assert_eq!(
        seen, matching,
        "every matching event exactly once, in order"
    );
    node.running.stop();
}

#[tokio::test]
async fn keep_state_sends_the_latest_matching_event_per_key_before_the_ack() {
    let node = TestNode::base().await;
    let keyed = |kind: &str, keywords: &[&str], key: Option<&str>, data: &str| {
        let mut e = event("bornes", kind, keywords, json!(data));
        if let Some(k) = key {
            e["key"] = json!(k);
        }
        e
    };
    let critical = ["level:critical"];
    let publish = [
        keyed(
            "alarm",
            &["borne:B1", critical[0]],
            Some("borne:B1"),
            "B1 first",
        ), // 1
        keyed("alarm", &["borne:B2", critical[0]], Some("borne:B2"), "B2"), // 2
        keyed("status", &["borne:B1"], Some("borne:B1"), "B1 latest"),      // 3
        keyed("alarm", &["borne:B1", critical[0]], None, "no key"),         // 4
        keyed("alarm", &["borne:B3", critical[0]], Some("borne:B3"), "B3"), // 5
        keyed(
            "alarm",
            &["borne:B4", critical[0]],
            Some("borne:B4"),
            "B4 old",
        ), // 6
        keyed(
            "alarm",
            &["borne:B4", "level:minor"],
            Some("borne:B4"),
            "B4 new",
        ), // 7
    ];
    for e in &publish {
        node.publish_event(e).await;
    }
    let filters = json!({"alarm": {"borne": ["B1", "B2", "B4"], "level": "critical"},
                         "status": {"borne": "B1"}});
    let mut client = node.client().await;
    let (ack, before) = client.subscribe("bornes", filters.clone()).await;
    for m in &before {
        assert_eq!(m["class"], "data", "{m}");
        assert_eq!(m["snapshot"], true, "{m}");
        assert_eq!(m["channel"], "bornes", "{m}");
        crate::common::assert_envelope(m);
    }
    let mut snap: Vec<(u64, String)> = before
        .iter()
        .map(|m| {
            (
                m["offset"].as_u64().expect("offset"),
                m["data"].as_str().expect("data").to_string(),
            )
        })
        .collect();
    snap.sort();
    assert_eq!(
        snap,
        vec![(2, "B2".to_string()), (3, "B1 latest".to_string())],
        "one snapshot per kept key whose latest event matches"
    );
    assert_eq!(ack["channels"]["bornes"]["offset"], 7, "{ack}");
    assert_eq!(ack["channels"]["bornes"]["recovered"], false, "{ack}");

    // Then live events, not marked as snapshots.
    node.publish_event(&keyed(
        "alarm",
        &["borne:B1", critical[0]],
        Some("borne:B1"),
        "live",
    ))
    .await;
    let live = client.recv().await;
    assert_eq!(live["offset"], 8, "{live}");
    assert!(live.get("snapshot").is_none(), "{live}");

    // A resume (with `since`) gets history, not snapshots.
    let epoch = ack["channels"]["bornes"]["epoch"].as_str().expect("epoch");
    let tok = token("bornes", filters, 600);
    let mut resumed = node.client().await;
    resumed
        .send_json(&resume_msg("r", "bornes", &tok, epoch, 8))
        .await;
    let (ack, before) = resumed.recv_until("ack").await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(ack["channels"]["bornes"]["recovered"], true, "{ack}");
    node.running.shutdown().await;
}

#[tokio::test]
async fn channels_without_keep_state_send_no_snapshot() {
    let node = TestNode::base().await;
    let mut e = event("plain", "alarm", &["borne:B1"], json!(1));
    e["key"] = json!("borne:B1");
    node.publish_event(&e).await;
    let mut client = node.client().await;
    let (ack, before) = client.subscribe("plain", json!({"*": {}})).await;
    assert!(before.is_empty(), "{before:?}");
    assert_eq!(ack["channels"]["plain"]["offset"], 1, "{ack}");
    node.running.shutdown().await;
}

/// The hub registers a subscription before history (or state) is read, so
/// an event published in between is both read and queued live; the gateway
/// must deliver it once. That window is microseconds wide: only a publisher
/// faster than HTTP (the node's own publish, in a tight loop) hits it often.
/// Rounds alternate between a fresh subscribe (snapshot, keep_state) and a
/// resume from the previous round's position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_while_a_fast_publisher_runs_never_duplicates_nor_skips() {
    let config = config_with(
        "outbox_capacity = 1000000",
        "[apps.channels.race]\nhistory = 100000\nkeep_state = true\n",
    );
    let node = Arc::new(TestNode::start(&config).await);
    // Keeps the channel from ever having no subscriber: each round's client
    // leaves as the next one joins, which would otherwise race the hub's
    // removal of empty channels (see the ignored test in `subscribe`).
    let mut anchor = node.client().await;
    anchor.subscribe("race", json!({})).await;
    let stop = Arc::new(AtomicBool::new(false));
    let publisher = {
        let node = node.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut published = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let mut e = event("race", "k", &[], json!(null));
                e["key"] = json!("the-key");
                let e = serde_json::from_value(e).expect("event");
                node.running.node.publish(vec![e]).await.expect("published");
                published += 1;
                tokio::task::yield_now().await;
            }
            published
        })
    };
    let filters = json!({"*": {}});
    let tok = token("race", filters.clone(), 600);
    let mut position: Option<(String, u64)> = None;
    for round in 0..120 {
        let mut client = node.client().await;
        let (ack, before) = match (&position, round % 2) {
            (Some((epoch, top)), 1) => {
                client
                    .send_json(&resume_msg("r", "race", &tok, epoch, *top))
                    .await;
                let (ack, before) = client.recv_until("ack").await;
                assert_eq!(ack["channels"]["race"]["recovered"], true, "{ack}");
                let top = ack["channels"]["race"]["offset"].as_u64().expect("top");
                let from = position.as_ref().map_or(0, |p| p.1);
                assert_eq!(
                    replayed(&before, "race"),
                    (from + 1..=top).collect::<Vec<u64>>(),
                    "round {round}: replay"
                );
                (ack, before)
            }
            _ => {
                let (ack, before) = client.subscribe("race", filters.clone()).await;
                let top = ack["channels"]["race"]["offset"].as_u64().expect("top");
                // One key kept: at most one snapshot, never past the ack's offset.
                assert!(before.len() <= 1, "round {round}: {before:?}");
                for m in &before {
                    assert_eq!(m["snapshot"], true, "{m}");
                    assert!(m["offset"].as_u64().expect("offset") <= top, "{m}");
                }
                (ack, before)
            }
        };
        let channel = &ack["channels"]["race"];
        let top = channel["offset"].as_u64().expect("top");
        let epoch = channel["epoch"].as_str().expect("epoch").to_string();
        // Live events continue right after the ack's offset, once each.
        let mut last = top;
        for _ in 0..3 {
            let m = client.recv().await;
            assert_eq!(m["class"], "data", "{m}");
            assert!(m.get("snapshot").is_none(), "{m}");
            let offset = m["offset"].as_u64().expect("offset");
            assert_eq!(
                offset,
                last + 1,
                "round {round}: live {offset} after {last} ({} before the ack)",
                before.len()
            );
            last = offset;
        }
        position = Some((epoch, top));
        client.close().await;
    }
    stop.store(true, Ordering::Relaxed);
    let published = publisher.await.expect("publisher");
    assert!(published > 0);
    anchor.close().await;
    node.running.stop();
}

/// After a `reset` `history_gap` on a channel that keeps state, the client
/// used to get live events only: the state published meanwhile (after a
/// gateway restart, say) never reached it. It now gets the snapshots a
/// subscribe without `since` would get, then live events.
#[tokio::test]
async fn a_history_gap_on_a_channel_with_state_is_followed_by_its_snapshots() {
    let node = TestNode::base().await;
    for (borne, status) in [("B1", "ok"), ("B2", "ok"), ("B1", "down")] {
        let mut e = event("bornes", "status", &[], json!(status));
        e["key"] = json!(format!("borne:{borne}"));
        node.publish_event(&e).await;
    }
    let tok = token("bornes", json!({"*": {}}), 600);
    let mut client = node.client().await;
    client
        .send_json(&resume_msg("r", "bornes", &tok, "not-the-epoch", 1))
        .await;
    let (ack, before) = client.recv_until("ack").await;
    assert_eq!(before[0]["class"], "reset", "{before:?}");
    assert_eq!(before[0]["reason"], "history_gap");
    let snapshots: Vec<(u64, &Value)> = before[1..]
        .iter()
        .map(|m| {
            assert_eq!(m["snapshot"], true, "{m}");
            (m["offset"].as_u64().unwrap(), &m["data"])
        })
        .collect();
    assert_eq!(snapshots, [(2, &json!("ok")), (3, &json!("down"))]);
    assert_eq!(ack["channels"]["bornes"]["recovered"], false, "{ack}");
    assert_eq!(ack["channels"]["bornes"]["offset"], 3, "{ack}");
    node.publish_event(&event("bornes", "k", &[], json!("live")))
        .await;
    assert_eq!(client.recv().await["offset"], 4);
    node.running.shutdown().await;
}
