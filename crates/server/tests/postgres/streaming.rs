//! The replication connection itself: password authentication (SCRAM and
//! md5) and a stream kept alive through idle periods longer than the
//! server's timeout.

use std::time::Duration;

use serde_json::json;

use super::{BORNE_TABLE, data, eventually, node_on, ready, source_section};
use chouquette_testkit::{BASE_CONFIG, PostgresServer, TestNode};

const WAIT: Duration = Duration::from_secs(10);

/// `role`'s URL with `password` on the test database.
fn url_with(pg: &PostgresServer, role: &str, password: &str) -> String {
    format!("postgres://{role}:{password}@127.0.0.1:{}/app", pg.port())
}

/// With `pg_hba.conf` requiring `scram-sha-256` of one role and `md5` of
/// another (replication connections included), a source connecting as
/// each streams; a wrong password is named by `/readyz`.
#[tokio::test]
async fn scram_and_md5_passwords_are_accepted_and_a_wrong_one_reported() {
    let pg = PostgresServer::start().await;
    let admin = pg.client_as("postgres", "app").await;
    admin.batch_execute(BORNE_TABLE).await.unwrap();
    admin
        .batch_execute(
            "SET password_encryption = 'scram-sha-256'; \
             CREATE ROLE scram_user LOGIN REPLICATION PASSWORD 'scram secret'; \
             SET password_encryption = 'md5'; \
             CREATE ROLE md5_user LOGIN REPLICATION PASSWORD 'md5secret'; \
             CREATE PUBLICATION chouquette FOR TABLE borne;",
        )
        .await
        .unwrap();
    pg.hba_first(
        "host all scram_user 127.0.0.1/32 scram-sha-256\n\
         host replication scram_user 127.0.0.1/32 scram-sha-256\n\
         host all md5_user 127.0.0.1/32 md5\n\
         host replication md5_user 127.0.0.1/32 md5",
    )
    .await;
    // The reload has taken effect once a password is needed.
    assert!(
        eventually(WAIT, async || tokio_postgres::connect(
            &pg.url_as("scram_user", "app"),
            tokio_postgres::NoTls
        )
        .await
        .is_err())
        .await
    );
    let node_for = async |url: &str, slot: &str| {
        TestNode::start(&format!("{BASE_CONFIG}{}", source_section(url, slot))).await
    };
    let scram = node_for(&url_with(&pg, "scram_user", "scram secret"), "scram").await;
    let md5 = node_for(&url_with(&pg, "md5_user", "md5secret"), "md5").await;
    let wrong = node_for(&url_with(&pg, "scram_user", "guess"), "wrong").await;
    assert!(
        ready(&scram, WAIT).await,
        "{:?}",
        scram.get("/readyz").await
    );
    assert!(ready(&md5, WAIT).await, "{:?}", md5.get("/readyz").await);
    assert!(
        eventually(WAIT, async || {
            let (status, body) = wrong.get("/readyz").await;
            status == 200 && body.contains("password authentication failed")
        })
        .await,
        "{:?}",
        wrong.get("/readyz").await
    );
    let mut on_scram = scram.client().await;
    on_scram
        .subscribe("bornes", json!({"borne_added": {}}))
        .await;
    let mut on_md5 = md5.client().await;
    on_md5.subscribe("bornes", json!({"borne_added": {}})).await;
    admin
        .execute("INSERT INTO borne (uid) VALUES ('B1')", &[])
        .await
        .unwrap();
    for client in [&mut on_scram, &mut on_md5] {
        let got = data(client, 1, WAIT).await;
        assert_eq!(got[0]["data"]["new"]["uid"], "B1");
    }
}

/// With `wal_sender_timeout` at 2 s, a source idle for three times that
/// keeps its stream (it answers the server's keepalives), acknowledges the
/// server's position while idle (no lag left), and still delivers.
#[tokio::test]
async fn an_idle_stream_outlives_the_servers_timeout_and_is_acknowledged() {
    let pg = PostgresServer::start().await;
    pg.set(&[("wal_sender_timeout", "2s")]).await;
    let db = pg.client().await;
    db.batch_execute(BORNE_TABLE).await.unwrap();
    let node = node_on(&pg, "main").await;
    let mut client = node.client().await;
    client.subscribe("bornes", json!({"borne_added": {}})).await;
    db.execute("INSERT INTO borne (uid) VALUES ('B1')", &[])
        .await
        .unwrap();
    data(&mut client, 1, WAIT).await;
    // Idle: other WAL is written (a table not published), none of it for
    // the source; the slot is acknowledged past it all the same.
    db.batch_execute("CREATE TABLE other (x int); INSERT INTO other VALUES (1)")
        .await
        .unwrap();
    let lag = "chouquette_postgres_lag_bytes{slot=\"main\"}";
    assert!(
        eventually(WAIT, async || node.metric(lag).await == Some(0.0)).await,
        "the slot is acknowledged while idle: {:?}",
        node.metric(lag).await
    );
    client.expect_silence(Duration::from_secs(6)).await;
    let reconnects = "chouquette_postgres_reconnects_total{slot=\"main\"}";
    assert_eq!(node.metric(reconnects).await, Some(0.0));
    let active: bool = db
        .query_one(
            "SELECT active FROM pg_replication_slots WHERE slot_name = 'main'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(active, "the slot is still streamed");
    db.execute("INSERT INTO borne (uid) VALUES ('B2')", &[])
        .await
        .unwrap();
    let got = data(&mut client, 1, WAIT).await;
    assert_eq!(got[0]["data"]["new"]["uid"], "B2");
    assert_eq!(node.metric(reconnects).await, Some(0.0));
}
