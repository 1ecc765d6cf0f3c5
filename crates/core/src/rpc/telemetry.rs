//! RPC counters: calls by route and outcome with their latency, and calls
//! refused before any backend, by reason. Series are bounded by the config
//! (one set per configured route), never by what clients send.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::{Answer, Failure, Route};
use crate::telemetry::prometheus::Family;
use crate::telemetry::{Histogram, Nanos};

const CALLS: Family = Family::counter(
    "chouquette_rpc_calls_total",
    "Client calls sent to a backend, by app, route prefix and outcome.",
);
const LATENCY: Family = Family::histogram(
    "chouquette_rpc_call_seconds",
    "Time from sending a call to a backend to having its answer, by app and route prefix.",
);
const REFUSED: Family = Family::counter(
    "chouquette_rpc_refused_total",
    "Client calls answered by the gateway without a backend, by reason.",
);

/// How a call sent to a backend ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A `result`.
    Result,
    /// A 4xx: the backend refused it.
    Refused,
    /// One of the [`Failure`]s.
    Failed(Failure),
}

impl Outcome {
    const ALL: [Outcome; 7] = [
        Outcome::Result,
        Outcome::Refused,
        Outcome::Failed(Failure::BackendError),
        Outcome::Failed(Failure::Unreachable),
        Outcome::Failed(Failure::Timeout),
        Outcome::Failed(Failure::NotJson),
        Outcome::Failed(Failure::TooLarge),
    ];

    /// The outcome of an answer.
    pub fn of(answer: &Answer) -> Outcome {
        match answer {
            Answer::Result(_) => Outcome::Result,
            Answer::Refused { .. } => Outcome::Refused,
            Answer::Failed(f) => Outcome::Failed(*f),
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Result => "result",
            Outcome::Refused => "refused",
            Outcome::Failed(Failure::BackendError) => "backend_error",
            Outcome::Failed(Failure::Unreachable) => "unreachable",
            Outcome::Failed(Failure::Timeout) => "timeout",
            Outcome::Failed(Failure::NotJson) => "not_json",
            Outcome::Failed(Failure::TooLarge) => "too_large",
        }
    }

    fn index(self) -> usize {
        Outcome::ALL
            .iter()
            .position(|o| *o == self)
            .unwrap_or_default()
    }
}

/// One route's calls by outcome, and their latency.
#[derive(Debug, Default)]
pub struct RouteCounters {
    outcomes: [AtomicU64; Outcome::ALL.len()],
    latency: Histogram<Nanos>,
}

impl RouteCounters {
    /// A call ended with `outcome` after `took`.
    pub fn record(&self, outcome: Outcome, took: Duration) {
        self.outcomes[outcome.index()].fetch_add(1, Ordering::Relaxed);
        self.latency
            .observe(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
    }
}

/// Why the gateway answered a call itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No identity on the connection (`not_allowed`).
    NotConnected,
    /// The connection's identity expired (`token_expired`).
    Expired,
    /// No route for the method (`unavailable`).
    NoRoute,
    /// Over the app's calls per second (`rate_limited`).
    AppRate,
    /// Over the connection's calls in flight (`rate_limited`).
    InFlight,
}

impl Refusal {
    const ALL: [Refusal; 5] = [
        Refusal::NotConnected,
        Refusal::Expired,
        Refusal::NoRoute,
        Refusal::AppRate,
        Refusal::InFlight,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Refusal::NotConnected => "not_connected",
            Refusal::Expired => "identity_expired",
            Refusal::NoRoute => "no_route",
            Refusal::AppRate => "calls_per_second",
            Refusal::InFlight => "calls_in_flight",
        }
    }
}

/// Calls refused before any backend.
#[derive(Debug, Default)]
pub struct RpcTelemetry {
    refused: [AtomicU64; Refusal::ALL.len()],
}

impl RpcTelemetry {
    /// A call was answered by the gateway itself.
    pub fn refused(&self, why: Refusal) {
        let i = Refusal::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.refused[i].fetch_add(1, Ordering::Relaxed);
    }

    /// Calls refused for `why` so far.
    pub fn refusals(&self, why: Refusal) -> u64 {
        let i = Refusal::ALL.iter().position(|r| *r == why).unwrap_or(0);
        self.refused[i].load(Ordering::Relaxed)
    }

    /// Renders the refusals and every route's series.
    pub(super) fn render(&self, routes: &[(&str, &Route)], out: &mut String) {
        let mut samples = REFUSED.render(out);
        for (why, n) in Refusal::ALL.iter().zip(&self.refused) {
            samples.sample(&[("reason", why.as_str())], n.load(Ordering::Relaxed));
        }
        let mut samples = CALLS.render(out);
        for (app, route) in routes {
            for outcome in Outcome::ALL {
                let n = route.counters.outcomes[outcome.index()].load(Ordering::Relaxed);
                let labels = [
                    ("app", *app),
                    ("route", &*route.prefix),
                    ("outcome", outcome.as_str()),
                ];
                samples.sample(&labels, n);
            }
        }
        let mut samples = LATENCY.render(out);
        for (app, route) in routes {
            let snap = route.counters.latency.snapshot();
            samples.histogram(&[("app", *app), ("route", &*route.prefix)], &snap);
        }
    }
}
