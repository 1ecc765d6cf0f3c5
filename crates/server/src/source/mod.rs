//! Sources: inbound streams of events besides the HTTP API. Each turns
//! outside input into publications through the node, and never drops an
//! accepted event silently.

pub mod redis_inbox;
