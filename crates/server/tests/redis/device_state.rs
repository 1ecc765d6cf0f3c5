//! Device time, late readings, binary sensors and flapping decided
//! atomically by publish.lua: published on one node, watched on another.

use chouquette_testkit::{RedisServer, TestNode, redis_config_with};

#[path = "../gateway/device_state_scenario.rs"]
mod scenario;

#[tokio::test]
async fn late_readings_binary_sensors_flapping_and_skew_across_two_nodes() {
    let redis = RedisServer::start().await;
    let config = |id: &str| redis_config_with(&redis.url(), id, "", scenario::CHANNEL_TOML);
    let publisher = TestNode::start(&config("publisher")).await;
    let watcher = TestNode::start(&config("watcher")).await;
    scenario::run(&publisher, &watcher).await;
}
