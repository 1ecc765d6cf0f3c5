//! What a client makes of the `lattice` messages it receives: a `full`
//! message replaces its view, a change is merged into it. Tests compare
//! views to show that tabs and nodes converge.

use chouquette_core::lattice::{Bounds, Lattice};
use serde_json::Value;

/// One client's view of one namespace.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LatticeView {
    /// The shared values.
    pub shared: Lattice,
    /// The client's own user's values.
    pub user: Lattice,
}

fn lattice(value: &Value) -> Lattice {
    Lattice::parse(&value.to_string(), &Bounds::STORED).expect("a lattice in a `lattice` message")
}

impl LatticeView {
    /// Applies one `lattice` message; panics on anything else.
    pub fn apply(&mut self, message: &Value) {
        assert_eq!(message["class"], "lattice", "{message}");
        let (shared, user) = (lattice(&message["shared"]), lattice(&message["user"]));
        if message["full"] == true {
            self.shared = shared;
            self.user = user;
        } else {
            self.shared
                .merge(&shared, &Bounds::STORED)
                .expect("unbounded");
            self.user.merge(&user, &Bounds::STORED).expect("unbounded");
        }
    }

    /// The view's values as JSON (`{"shared": ..., "user": ...}`).
    pub fn json(&self) -> Value {
        serde_json::json!({
            "shared": serde_json::from_str::<Value>(&self.shared.to_json()).expect("json"),
            "user": serde_json::from_str::<Value>(&self.user.to_json()).expect("json"),
        })
    }
}
