//! A device flushing thousands of buffered readings at once: every one is
//! published. The source once stopped for good under such a flush (its
//! worker waiting for room to ack while its poller waited for room in the
//! worker's queue, rumqttc serving acks only between incoming packets);
//! that stall showed with the bench's `devices` scenario (200 devices and
//! a flush of 3,600 through a Mosquitto with `max_inflight_messages 100`),
//! not with this single device, which guards the flush itself.

use super::{WAIT, node_on};
use chouquette_testkit::{MosquittoServer, eventually};

const MESSAGES: usize = 5_000;

#[tokio::test]
async fn a_device_flushing_thousands_of_messages_has_every_one_published() {
    let broker = MosquittoServer::start(&["D1"]).await;
    let node = node_on(&broker).await;
    let mut d1 = super::Device::connect(&broker, "D1").await;
    d1.flush("devices/D1/telemetry", MESSAGES).await;
    let published = "chouquette_mqtt_published_total{source=\"gw-1\",outcome=\"published\"}";
    let all = MESSAGES as f64;
    assert!(
        eventually(WAIT, async || node.metric(published).await == Some(all)).await,
        "every message published: {:?} of {MESSAGES}",
        node.metric(published).await
    );
}
