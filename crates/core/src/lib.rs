//! Chouquette's logic without sockets.
//!
//! The flow of one event: a source hands a [`NewEvent`] to the one
//! [`ingest`] pipeline, which checks it against its app and rate; the
//! [`broker`] gives it its offset, keeps it in history and delivers it to
//! every node's [`Hub`]; the hub finds the subscriptions
//! whose [`Filter`] matches through its keyword [`index`] and queues the
//! event's shared bytes in each connection's [`Outbox`]; the transport drains
//! the outbox through its [`Session`], which also answers client messages.
//!
//! ```
//! use chouquette_core::filter::Filter;
//! let f = Filter::parse(&serde_json::json!({"alarm": {"borne": "B1"}})).unwrap();
//! assert!(f.matches("alarm", &["borne:B1".into()]));
//! ```
//!
//! [`NewEvent`]: publication::NewEvent
//! [`Hub`]: hub::Hub
//! [`Filter`]: filter::Filter
//! [`Outbox`]: outbox::Outbox
//! [`Session`]: session::Session

pub mod app;
pub mod broker;
pub mod clock;
pub mod connections;
pub mod device_state;
pub mod device_time;
pub mod devices;
pub mod era;
pub mod filter;
pub mod history;
pub mod hub;
pub mod index;
pub mod ingest;
pub mod lattice;
pub mod lattice_feed;
pub mod limits;
pub mod messages;
pub mod node;
pub mod notifications;
pub mod outbox;
pub mod presence;
pub mod publication;
pub mod recovery;
pub mod rpc;
pub mod session;
pub mod switches;
pub mod telemetry;
pub mod token;
pub mod user_calls;
pub mod user_mail;
