//! `--scenario notifications` (issue 15): `-n` users (10,000 for the
//! issue's figure), each with `--pending` notifications waiting in Redis,
//! reconnect within `--reconnect-over` (10 s). It measures the time until
//! every pending notification is delivered and acknowledged, the gateway's
//! and Redis' CPU over that phase, and Redis memory per pending
//! notification (`INFO memory` before and after storing them, and again
//! once every one is acknowledged).
//!
//! One gateway on a `redis-server` of the bench's own. The notifications
//! are stored through `POST /api/v1/notify` (1,000 users per request, the
//! API's bound, [`STORE_CONCURRENCY`] requests at a time) while no user is
//! connected. Then user `i` connects at `i * reconnect_over / n` (a
//! WebSocket and a `connect` with its signed identity, nothing else), reads
//! its pending notifications (each id counted once; a second copy is a
//! duplicate), acknowledges them all in one `notification_ack` and waits for
//! its `ack`. A user with anything missing `--duration` after the last
//! connect counts as incomplete.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use crate::cli::Options;
use crate::gateway::{self, BrokerSpec, Gateway, LimitsSpec};
use crate::http::Http;
use crate::redis_server::RedisServer;
use crate::wire::{AppSpec, unix_nanos};

/// Users named in one `POST /api/v1/notify` (the API's bound).
const USERS_PER_REQUEST: usize = 1_000;
/// `POST /api/v1/notify` requests in flight while storing.
const STORE_CONCURRENCY: usize = 4;
/// The notifications' kind (not grouped: every one is pending on its own).
const KIND: &str = "bench";
/// The `uuid` of a user's acknowledgement, answered by an `ack` naming it.
const ACK_REF: &str = "bench-ack";

/// The measured figures of one run.
#[derive(Debug, Serialize)]
struct NotificationsSummary {
    users: usize,
    pending_per_user: usize,
    pending_total: usize,
    store_s: f64,
    stored_per_s: f64,
    redis_bytes_before: u64,
    redis_bytes_pending: u64,
    redis_bytes_per_pending: f64,
    redis_bytes_after_acks: u64,
    reconnect_over_s: f64,
    users_complete: usize,
    users_failed: usize,
    delivered: u64,
    duplicates: u64,
    all_delivered_s: Option<f64>,
    all_acked_s: Option<f64>,
    connect_to_delivered_p50_ms: Option<f64>,
    connect_to_delivered_p99_ms: Option<f64>,
    connect_to_delivered_max_ms: Option<f64>,
    gateway_cpu_s: f64,
    gateway_cpu_percent: f64,
    redis_cpu_s: f64,
}

/// What one user saw, times from the start of the reconnections.
#[derive(Debug, Default)]
struct UserOutcome {
    connected_at: Duration,
    delivered_at: Option<Duration>,
    acked_at: Option<Duration>,
    received: u64,
    duplicates: u64,
    failure: Option<String>,
}

/// Runs the scenario and prints its report.
pub async fn run(options: &Options) -> anyhow::Result<()> {
    let users = options.connections.max(1);
    let per_user = options.pending.max(1);
    let redis = RedisServer::start().await?;
    let app = AppSpec::fresh("bornes");
    let binary = gateway::binary(options.gateway.as_deref())?;
    // Acknowledgements are client messages; pending lists hold every one.
    let extra = format!(
        "\n[apps.limits]\nclient_messages_per_second = 0\n\n[apps.notifications]\nmax_pending = {}\n",
        per_user.max(1_000)
    );
    let broker = BrokerSpec::Redis {
        url: redis.url(),
        node: 0,
    };
    let gw =
        Gateway::start_with(&binary, &app, 4096, &LimitsSpec::default(), &broker, &extra).await?;

    let redis_bytes_before = redis.used_memory().await?;
    eprintln!("storing {per_user} notifications for each of {users} users");
    let stored_at = Instant::now();
    store(&gw, &app, users, per_user).await?;
    let store_s = stored_at.elapsed().as_secs_f64();
    let redis_bytes_pending = redis.used_memory().await?;

    eprintln!(
        "reconnecting {users} users over {:?}",
        options.reconnect_over
    );
    let (cpu_before, redis_cpu_before) = (gw.cpu_seconds()?, redis.cpu_seconds()?);
    let start = Instant::now();
    let outcomes = reconnect(gw.public, &app, users, per_user, options, start).await;
    let phase = start.elapsed().as_secs_f64();
    let gateway_cpu_s = gw.cpu_seconds()? - cpu_before;
    let redis_cpu_s = redis.cpu_seconds()? - redis_cpu_before;
    let redis_bytes_after_acks = redis.used_memory().await?;
    gw.stop(Duration::from_secs(5)).await;

    let pending_total = users * per_user;
    let pending_bytes = redis_bytes_pending.saturating_sub(redis_bytes_before);
    let summary = summarize(
        &outcomes,
        NotificationsSummary {
            users,
            pending_per_user: per_user,
            pending_total,
            store_s,
            stored_per_s: pending_total as f64 / store_s.max(1e-9),
            redis_bytes_before,
            redis_bytes_pending,
            redis_bytes_per_pending: pending_bytes as f64 / pending_total as f64,
            redis_bytes_after_acks,
            reconnect_over_s: options.reconnect_over.as_secs_f64(),
            users_complete: 0,
            users_failed: 0,
            delivered: 0,
            duplicates: 0,
            all_delivered_s: None,
            all_acked_s: None,
            connect_to_delivered_p50_ms: None,
            connect_to_delivered_p99_ms: None,
            connect_to_delivered_max_ms: None,
            gateway_cpu_s,
            gateway_cpu_percent: gateway_cpu_s * 100.0 / phase.max(1e-9),
            redis_cpu_s,
        },
    );
    print(&summary, &outcomes);
    Ok(())
}

/// Stores `per_user` notifications for each user through the API.
async fn store(gw: &Gateway, app: &AppSpec, users: usize, per_user: usize) -> anyhow::Result<()> {
    let url = format!("http://{}/api/v1/notify", gw.internal);
    let http = Http::default();
    let mut requests = JoinSet::new();
    for k in 0..per_user {
        for first in (0..users).step_by(USERS_PER_REQUEST) {
            let names: Vec<String> = (first..users.min(first + USERS_PER_REQUEST))
                .map(user)
                .collect();
            let body = json!({"app_id": app.app, "users": names, "kind": KIND,
                              "title": format!("Pending {k}"),
                              "body": format!("Bench notification {k}, waiting for its user"),
                              "data": {"k": k}});
            if requests.len() >= STORE_CONCURRENCY {
                finish(requests.join_next().await)?;
            }
            let (http, url, key) = (http.clone(), url.clone(), app.api_key.clone());
            requests.spawn(async move {
                http.post_json(&url, &key, body.to_string().into_bytes())
                    .await
            });
        }
    }
    while let Some(done) = requests.join_next().await {
        finish(Some(done))?;
    }
    Ok(())
}

fn finish(
    done: Option<Result<anyhow::Result<(u16, String)>, tokio::task::JoinError>>,
) -> anyhow::Result<()> {
    match done {
        None => Ok(()),
        Some(joined) => match joined.context("a notify request panicked")?? {
            (200, _) => Ok(()),
            (status, body) => bail!("POST /api/v1/notify answered {status}: {body}"),
        },
    }
}

fn user(index: usize) -> String {
    format!("user-{index}")
}

/// Every user connects at its time in the spread; returns what each saw.
async fn reconnect(
    public: SocketAddr,
    app: &AppSpec,
    users: usize,
    per_user: usize,
    options: &Options,
    start: Instant,
) -> Vec<UserOutcome> {
    let deadline = start + options.reconnect_over + options.duration;
    let step = options.reconnect_over.as_secs_f64() / users as f64;
    let mut sessions = JoinSet::new();
    for index in 0..users {
        let at = start + Duration::from_secs_f64(step * index as f64);
        let app = app.clone();
        sessions.spawn(async move {
            sleep_until(at).await;
            let mut outcome = UserOutcome {
                connected_at: at - start,
                ..UserOutcome::default()
            };
            let session = session(public, &app, index, per_user, start, &mut outcome);
            match timeout_at(deadline, session).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => outcome.failure = Some(format!("{e:#}")),
                Err(_) => outcome.failure = Some("not done before the deadline".into()),
            }
            outcome
        });
    }
    let mut outcomes = Vec::with_capacity(users);
    while let Some(done) = sessions.join_next().await {
        outcomes.push(done.unwrap_or_else(|e| UserOutcome {
            failure: Some(format!("the session panicked: {e}")),
            ..UserOutcome::default()
        }));
    }
    outcomes
}

/// One user: connect with its identity, read its pending notifications,
/// acknowledge them all, wait for the `ack`.
async fn session(
    public: SocketAddr,
    app: &AppSpec,
    index: usize,
    per_user: usize,
    start: Instant,
    outcome: &mut UserOutcome,
) -> anyhow::Result<()> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{public}/ws"))
        .await
        .context("cannot open a WebSocket")?;
    let claims = json!({"app_id": app.app, "sub": user(index),
                        "exp": unix_nanos() / 1_000_000_000 + 3600});
    let token = chouquette_core::token::sign(&claims, app.secret.as_bytes());
    let connect = json!({"class": "connect", "app_id": app.app, "token": token});
    ws.send(Message::text(connect.to_string())).await?;
    let mut ids = HashSet::with_capacity(per_user);
    while let Some(frame) = ws.next().await {
        let Message::Text(text) = frame.context("the connection failed")? else {
            continue;
        };
        let message: Value = serde_json::from_str(text.as_str()).context("not JSON")?;
        match message["class"].as_str() {
            Some("notification") => {
                let id = message["id"]
                    .as_str()
                    .context("a notification without id")?;
                outcome.received += 1;
                if !ids.insert(id.to_string()) {
                    outcome.duplicates += 1;
                } else if ids.len() == per_user {
                    outcome.delivered_at = Some(start.elapsed());
                    let ack = json!({"class": "notification_ack", "uuid": ACK_REF,
                                     "ids": ids.iter().collect::<Vec<_>>()});
                    ws.send(Message::text(ack.to_string())).await?;
                }
            }
            Some("ack") if message["ref"] == ACK_REF => {
                outcome.acked_at = Some(start.elapsed());
                let _ = ws.close(None).await;
                return Ok(());
            }
            Some("error") => bail!("the gateway answered {message}"),
            _ => {}
        }
    }
    bail!("the gateway closed the connection")
}

fn summarize(outcomes: &[UserOutcome], mut s: NotificationsSummary) -> NotificationsSummary {
    let complete: Vec<&UserOutcome> = outcomes
        .iter()
        .filter(|o| o.failure.is_none() && o.acked_at.is_some())
        .collect();
    s.users_complete = complete.len();
    s.users_failed = outcomes.len() - complete.len();
    s.delivered = outcomes.iter().map(|o| o.received - o.duplicates).sum();
    s.duplicates = outcomes.iter().map(|o| o.duplicates).sum();
    if s.users_failed == 0 {
        let last = |f: fn(&UserOutcome) -> Option<Duration>| {
            complete
                .iter()
                .filter_map(|o| f(o))
                .max()
                .map(|d| d.as_secs_f64())
        };
        s.all_delivered_s = last(|o| o.delivered_at);
        s.all_acked_s = last(|o| o.acked_at);
    }
    let mut waits: Vec<f64> = complete
        .iter()
        .filter_map(|o| Some((o.delivered_at? - o.connected_at).as_secs_f64() * 1000.0))
        .collect();
    waits.sort_by(f64::total_cmp);
    let at = |q: f64| {
        let last = waits.len().checked_sub(1)?;
        waits.get(((last as f64) * q).round() as usize).copied()
    };
    s.connect_to_delivered_p50_ms = at(0.5);
    s.connect_to_delivered_p99_ms = at(0.99);
    s.connect_to_delivered_max_ms = at(1.0);
    s
}

fn print(s: &NotificationsSummary, outcomes: &[UserOutcome]) {
    let ms = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1} ms"));
    let secs = |v: Option<f64>| v.map_or("NOT ALL".into(), |v| format!("{v:.2} s"));
    println!(
        "scenario notifications: {} users x {} pending = {} notifications, reconnecting over {:.0} s",
        s.users, s.pending_per_user, s.pending_total, s.reconnect_over_s
    );
    println!(
        "stored in                  {:.2} s ({:.0} pending notifications/s)",
        s.store_s, s.stored_per_s
    );
    println!(
        "Redis memory               {:.0} B per pending notification ({} -> {} B; {} B after the acks)",
        s.redis_bytes_per_pending,
        s.redis_bytes_before,
        s.redis_bytes_pending,
        s.redis_bytes_after_acks
    );
    println!(
        "users complete             {} of {} ({} delivered, {} duplicates)",
        s.users_complete, s.users, s.delivered, s.duplicates
    );
    println!(
        "every pending delivered    {} after the first connect",
        secs(s.all_delivered_s)
    );
    println!(
        "every one acknowledged     {} after the first connect",
        secs(s.all_acked_s)
    );
    println!(
        "connect to all delivered   p50 {}, p99 {}, max {}",
        ms(s.connect_to_delivered_p50_ms),
        ms(s.connect_to_delivered_p99_ms),
        ms(s.connect_to_delivered_max_ms)
    );
    println!(
        "gateway CPU                {:.2} s ({:.0}% of one core over the phase); Redis {:.2} s",
        s.gateway_cpu_s, s.gateway_cpu_percent, s.redis_cpu_s
    );
    for failure in outcomes.iter().filter_map(|o| o.failure.as_ref()).take(5) {
        println!("failed: {failure}");
    }
    println!("{}", serde_json::to_string(s).unwrap_or_default());
}
