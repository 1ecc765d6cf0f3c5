//! A client that stops reading must not hold up the others: its small
//! outbox overflows, it is closed with 1013 `slow_consumer`, and it resumes
//! with `since` on reconnect.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chouquette_testkit::{Received, TestNode, config_with, token};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::common::{event, resume_msg};

/// Events per publish request.
const BATCH: u64 = 16;
/// Most events published and not yet read by the fast client. Kept below
/// `outbox_capacity` so that the fast client, which reads as fast as it
/// can, is never the one overflowing: what is measured is that the slow one
/// does not hold it up.
const WINDOW: u64 = 48;
/// History of the busy channel, so the dropped client can resume.
const HISTORY: u64 = 5000;
/// Published at most, waiting for the slow client to be dropped.
const MAX_EVENTS: u64 = 20_000;

fn config() -> String {
    config_with(
        "outbox_capacity = 64\nwrite_timeout = \"2s\"",
        &format!("[apps.channels.busy]\nhistory = {HISTORY}\n"),
    )
}

async fn slow_consumer_seen(node: &TestNode) -> bool {
    let drops = node
        .metric("chouquette_slow_consumer_drops_total")
        .await
        .unwrap_or(0.0);
    let closes = node
        .metric("chouquette_closes_total{reason=\"slow_consumer\"}")
        .await
        .unwrap_or(0.0);
    drops > 0.0 || closes > 0.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_dropped_without_delaying_the_others_and_resumes() {
    let node = Arc::new(TestNode::start(&config()).await);
    let filters = json!({"*": {}});
    let mut fast = node.client().await;
    let (ack, _) = fast.subscribe("busy", filters.clone()).await;
    let epoch = ack["channels"]["busy"]["epoch"]
        .as_str()
        .expect("epoch")
        .to_string();
    // The slow client subscribes, then is never polled until the end.
    let mut slow = node.client().await;
    let (ack, _) = slow.subscribe("busy", filters.clone()).await;
    assert_eq!(ack["channels"]["busy"]["epoch"], epoch.as_str());

    let (progress_tx, progress) = watch::channel(0u64);
    let reader = tokio::spawn(async move {
        let mut received: Vec<(u64, Instant)> = Vec::new();
        loop {
            let m = fast.recv().await;
            let at = Instant::now();
            assert_eq!(m["class"], "data", "fast client got {m}");
            let offset = m["offset"].as_u64().expect("offset");
            received.push((offset, at));
            progress_tx.send_replace(offset);
            if m["event_kind"] == "end" {
                return (fast, received);
            }
        }
    });

    let pad = "x".repeat(1000);
    let mut sent_at: Vec<Instant> = Vec::new(); // by offset - 1
    let mut published = 0u64;
    let mut dropped_at = None;
    let mut after_drop = 0;
    while published < MAX_EVENTS {
        // The guard `wait_for` returns locks the value: drop it at once.
        let mut seen = progress.clone();
        let room = tokio::time::timeout(Duration::from_secs(10), async {
            seen.wait_for(|read| published - read <= WINDOW - BATCH)
                .await
                .map(|_| ())
        })
        .await;
        assert!(
            matches!(room, Ok(Ok(()))),
            "the fast client stalled at {} of {published}",
            *progress.borrow()
        );
        let batch: Vec<Value> = (1..=BATCH)
            .map(|i| event("busy", "tick", &[], json!({"n": published + i, "pad": pad})))
            .collect();
        let started = Instant::now();
        let positions = node.publish_batch(&batch).await;
        for (i, (_, offset)) in positions.iter().enumerate() {
            assert_eq!(*offset, published + 1 + i as u64);
            sent_at.push(started);
        }
        published += BATCH;
        if dropped_at.is_none() {
            if slow_consumer_seen(&node).await {
                dropped_at = Some(published);
            }
        } else {
            // Keep publishing a little after the drop.
            after_drop += 1;
            if after_drop == 10 {
                break;
            }
        }
    }
    assert!(
        dropped_at.is_some(),
        "the slow client was not dropped after {published} events"
    );
    sent_at.push(Instant::now());
    let (_, end) = node
        .publish_event(&event("busy", "end", &[], json!({"n": published + 1})))
        .await;
    assert_eq!(end, published + 1);

    // The fast client got every event, in order, each soon after its publish.
    let (mut fast, received) = reader.await.expect("reader");
    let got: Vec<u64> = received.iter().map(|(o, _)| *o).collect();
    assert_eq!(got, (1..=end).collect::<Vec<u64>>());
    let worst = received
        .iter()
        .map(|(offset, at)| at.duration_since(sent_at[(*offset - 1) as usize]))
        .max()
        .expect("events");
    assert!(
        worst < Duration::from_secs(1),
        "an event took {worst:?} to reach the fast client"
    );
    eprintln!(
        "slow consumer: dropped after {} of {end} events; worst fast latency {worst:?}",
        dropped_at.unwrap_or_default()
    );

    // The slow client: what reached it is a gap-free prefix, then the close.
    let mut last = 0u64;
    let close = loop {
        match slow.next_within(Duration::from_secs(20)).await {
            Some(Received::Json(m)) => {
                assert_eq!(m["class"], "data", "slow client got {m}");
                let offset = m["offset"].as_u64().expect("offset");
                assert_eq!(offset, last + 1, "slow client skipped");
                last = offset;
            }
            Some(Received::Closed(close)) => break close,
            None => panic!("the slow client was neither fed nor closed (at {last})"),
        }
    };
    if let Some((code, reason)) = &close {
        assert_eq!(*code, 1013, "{reason}");
        assert_eq!(reason, "slow_consumer");
    }
    assert!(
        last < end,
        "the slow client got everything: it was not slow"
    );
    assert!(slow_consumer_seen(&node).await);
    assert_eq!(
        node.metric("chouquette_closes_total{reason=\"slow_consumer\"}")
            .await,
        Some(1.0),
        "only the slow client was closed"
    );

    // It reconnects and resumes from its last offset.
    let mut again = node.client().await;
    let tok = token("busy", filters, 600);
    again
        .send_json(&resume_msg("resume", "busy", &tok, &epoch, last))
        .await;
    let (ack, before) = again.recv_until("ack").await;
    if end - last <= HISTORY {
        let replayed: Vec<u64> = before
            .iter()
            .map(|m| m["offset"].as_u64().expect("offset"))
            .collect();
        assert_eq!(replayed, (last + 1..=end).collect::<Vec<u64>>());
        assert_eq!(ack["channels"]["busy"]["recovered"], true, "{ack}");
    } else {
        assert_eq!(before.len(), 1, "{before:?}");
        assert_eq!(before[0]["reason"], "history_gap");
        assert_eq!(ack["channels"]["busy"]["recovered"], false, "{ack}");
    }
    // Both are live again.
    node.publish_event(&event("busy", "tick", &[], json!("live")))
        .await;
    assert_eq!(again.recv().await["offset"], end + 1);
    assert_eq!(fast.recv().await["offset"], end + 1);
    node.running.stop();
}
