//! `[[sources.postgres]]` checked before starting, and what only the
//! database can tell reported by `/readyz`.

use std::time::Duration;

use chouquette::config::{Config, ConfigError};
use chouquette_testkit::{BASE_CONFIG, PostgresServer, TestNode};

use super::{eventually, source_section};

fn problems(toml: &str) -> Vec<(Option<usize>, String)> {
    match Config::from_toml(toml, std::iter::empty()) {
        Err(ConfigError::Invalid(problems)) => {
            problems.into_iter().map(|p| (p.line, p.message)).collect()
        }
        other => panic!("expected problems, got {other:?}"),
    }
}

/// An unknown app, a broken template, an event kind missing for an
/// operation and a bad slot name are each reported at their line.
#[test]
fn bad_postgres_sections_are_refused_at_their_line() {
    let section = source_section("postgres://u@127.0.0.1:5432/app", "Main-Slot")
        .replace("app = \"bluelib\"", "app = \"nobody\"")
        .replace("\"status:{status}\"", "\"status:{status\"");
    let toml = format!(
        "{BASE_CONFIG}{section}\n[[sources.postgres.tables]]\ntable = \"public.other\"\n\
         app = \"bluelib\"\nchannel = \"x\"\nevent_kinds = {{ insert = \"added\" }}\n"
    );
    let found = problems(&toml);
    let line_of = |needle: &str| toml.lines().position(|l| l.contains(needle)).map(|i| i + 1);
    let has = |needle: &str, part: &str| {
        found
            .iter()
            .any(|(line, m)| *line == line_of(needle) && m.contains(part))
    };
    assert!(has("\"public.borne\"", "unknown app `nobody`"), "{found:?}");
    assert!(has("\"status:{status\"", "without its"), "{found:?}");
    assert!(has("\"Main-Slot\"", "slot `Main-Slot`"), "{found:?}");
    assert!(has("\"public.other\"", "needs `event_kind`"), "{found:?}");
    assert_eq!(found.len(), 4, "{found:?}");
}

/// A section with an unknown key is refused, like every section.
#[test]
fn unknown_postgres_keys_are_refused() {
    let toml = format!(
        "{BASE_CONFIG}{}",
        source_section("postgres://u@h/app", "main").replace("poll_interval", "poll_every")
    );
    let found = problems(&toml);
    assert!(
        found.iter().any(|(_, m)| m.contains("poll_every")),
        "{found:?}"
    );
}

/// What only the database knows (no such table, a role without the
/// REPLICATION attribute) is said by `/readyz`, which stays 200: clients
/// are still served.
#[tokio::test]
async fn a_missing_table_or_replication_right_is_reported_by_readyz() {
    let pg = PostgresServer::start().await;
    let no_table = TestNode::start(&format!(
        "{BASE_CONFIG}{}",
        source_section(&pg.url(), "main")
    ))
    .await;
    let says = async |node: &TestNode, part: &str| {
        eventually(Duration::from_secs(10), async || {
            let (status, body) = node.get("/readyz").await;
            status == 200 && body.contains(part)
        })
        .await
    };
    assert!(says(&no_table, "public.borne does not exist").await);
    let plain = TestNode::start(&format!(
        "{BASE_CONFIG}{}",
        source_section(&pg.url_as("plain_user", "app"), "other")
    ))
    .await;
    assert!(says(&plain, "REPLICATION").await);
    // Once the table exists, the first one recovers by itself.
    pg.client()
        .await
        .batch_execute(super::BORNE_TABLE)
        .await
        .unwrap();
    assert!(super::ready(&no_table, Duration::from_secs(10)).await);
    assert_eq!(
        no_table
            .metric("chouquette_postgres_up{slot=\"main\"}")
            .await,
        Some(1.0)
    );
}

/// A server without `wal_level = logical` is named by `/readyz` as what
/// keeps the source from streaming.
#[tokio::test]
async fn a_server_without_logical_wal_is_reported_by_readyz() {
    let pg = PostgresServer::start_with_wal_level("replica").await;
    pg.client()
        .await
        .batch_execute(super::BORNE_TABLE)
        .await
        .unwrap();
    let node = TestNode::start(&format!(
        "{BASE_CONFIG}{}",
        source_section(&pg.url(), "main")
    ))
    .await;
    assert!(
        eventually(Duration::from_secs(10), async || {
            let (status, body) = node.get("/readyz").await;
            status == 200 && body.contains("wal_level = replica")
        })
        .await
    );
    assert_eq!(
        node.metric("chouquette_postgres_up{slot=\"main\"}").await,
        Some(0.0)
    );
}

/// The connection string, which holds the password, can come from the
/// environment, taken as text.
#[test]
fn the_postgres_url_may_come_from_the_environment() {
    let toml = format!(
        "{BASE_CONFIG}{}",
        source_section("postgres://u@h/app", "main")
    );
    let env = [(
        "CHOUQUETTE_SOURCES__POSTGRES__0__URL".to_string(),
        "postgres://u:1234@db:5432/app".to_string(),
    )];
    let config = Config::from_toml(&toml, env.into_iter()).unwrap();
    assert_eq!(
        config.sources.postgres[0].url,
        "postgres://u:1234@db:5432/app"
    );
}
