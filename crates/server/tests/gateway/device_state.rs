//! Device time, late readings, binary sensors, flapping and clock skew on
//! the memory broker (the scenario is shared with the Redis tests).

use chouquette_testkit::{TestNode, config_with};

#[path = "device_state_scenario.rs"]
mod scenario;

#[tokio::test]
async fn late_readings_binary_sensors_flapping_and_skew_on_one_node() {
    let node = TestNode::start(&config_with("", scenario::CHANNEL_TOML)).await;
    scenario::run(&node, &node).await;
}
