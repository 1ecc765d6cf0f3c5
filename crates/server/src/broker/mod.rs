//! Broker implementations that need I/O (the trait and the in-memory broker
//! live in `chouquette-core`).

pub mod redis;
