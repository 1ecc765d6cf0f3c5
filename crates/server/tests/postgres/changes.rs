//! Inserts, updates and deletes as events: their shape, keywords, filters,
//! old values and order.

use std::time::Duration;

use serde_json::json;

use super::{BORNE_TABLE, data, node_on};
use chouquette_testkit::PostgresServer;

const WAIT: Duration = Duration::from_secs(10);

/// Every operation reaches the client whose token's filters select it, with
/// the operation, the new row and the old one, typed values and keywords
/// built from columns; another borne's subscriber gets only its own.
#[tokio::test]
async fn row_changes_reach_the_subscribers_their_keywords_select() {
    let pg = PostgresServer::start().await;
    let db = pg.client().await;
    db.batch_execute(BORNE_TABLE).await.unwrap();
    let node = node_on(&pg, "main").await;
    let mut b1 = node.client().await;
    let only = |borne: &str| {
        json!({
            "borne_added": {"borne": [borne]},
            "borne_changed": {"borne": [borne]},
            "borne_removed": {"borne": [borne]},
        })
    };
    b1.subscribe("bornes", only("B1")).await;
    let mut b2 = node.client().await;
    b2.subscribe("bornes", only("B2")).await;

    db.batch_execute(
        "INSERT INTO borne VALUES ('B1', 'ok', 22, true, '{\"v\": [1, 2]}', '{a,b}', \
         '2026-01-02 03:04:05+00'); \
         INSERT INTO borne (uid, status) VALUES ('B2', 'ok'); \
         UPDATE borne SET status = 'fault', power = NULL WHERE uid = 'B1'; \
         DELETE FROM borne WHERE uid = 'B1';",
    )
    .await
    .unwrap();

    let got = data(&mut b1, 3, WAIT).await;
    let kinds: Vec<_> = got.iter().map(|m| m["event_kind"].clone()).collect();
    assert_eq!(kinds, ["borne_added", "borne_changed", "borne_removed"]);
    let insert = &got[0]["data"];
    assert_eq!(insert["op"], "insert");
    assert_eq!(insert["table"], "public.borne");
    assert_eq!(insert["old"], json!(null));
    assert_eq!(
        insert["new"],
        json!({"uid": "B1", "status": "ok", "power": 22, "ok": true, "meta": {"v": [1, 2]},
               "tags": ["a", "b"], "seen": "2026-01-02 03:04:05+00"})
    );
    let lsn = insert["lsn"].as_str().unwrap();
    assert!(lsn.contains('/'), "an LSN like 0/16B3748: {lsn}");
    assert_eq!(got[0]["keywords"], json!(["borne:B1", "status:ok"]));
    let update = &got[1]["data"];
    assert_eq!(update["op"], "update");
    assert_eq!(update["old"]["status"], "ok");
    assert_eq!(update["new"]["status"], "fault");
    assert_eq!(update["new"]["power"], json!(null));
    assert_eq!(got[1]["keywords"], json!(["borne:B1", "status:fault"]));
    let delete = &got[2]["data"];
    assert_eq!(delete["op"], "delete");
    assert_eq!(delete["new"], json!(null));
    assert_eq!(delete["old"]["status"], "fault");
    assert_eq!(got[2]["keywords"], json!(["borne:B1", "status:fault"]));

    let other = data(&mut b2, 1, WAIT).await;
    assert_eq!(other[0]["data"]["new"]["uid"], "B2");
    b2.expect_silence(Duration::from_millis(300)).await;
    b1.expect_silence(Duration::from_millis(300)).await;
}

/// Without REPLICA IDENTITY FULL, a delete carries only the key columns
/// and an update that keeps the key carries no old row.
#[tokio::test]
async fn without_replica_identity_full_old_values_are_the_key_only() {
    let pg = PostgresServer::start().await;
    let db = pg.client().await;
    db.batch_execute(
        "CREATE TABLE borne (uid text PRIMARY KEY, status text, power int, ok boolean, \
         meta jsonb, tags text[], seen timestamptz)",
    )
    .await
    .unwrap();
    let node = node_on(&pg, "main").await;
    let mut client = node.client().await;
    client
        .subscribe("bornes", json!({"borne_changed": {}, "borne_removed": {}}))
        .await;
    db.batch_execute(
        "INSERT INTO borne (uid, status) VALUES ('B1', 'ok'); \
         UPDATE borne SET status = 'fault' WHERE uid = 'B1'; \
         DELETE FROM borne WHERE uid = 'B1';",
    )
    .await
    .unwrap();
    let got = data(&mut client, 2, WAIT).await;
    assert_eq!(got[0]["data"]["old"], json!(null));
    assert_eq!(got[1]["data"]["old"], json!({"uid": "B1"}));
    // The delete's keywords come from what is known: the key.
    assert_eq!(got[1]["keywords"], json!(["borne:B1"]));
}

/// One transaction of 1,000 rows and the one after it arrive whole, in
/// commit order, with consecutive offsets.
#[tokio::test]
async fn a_transaction_of_a_thousand_rows_arrives_in_commit_order() {
    let pg = PostgresServer::start().await;
    let db = pg.client().await;
    db.batch_execute(BORNE_TABLE).await.unwrap();
    let node = node_on(&pg, "main").await;
    let mut client = node.client().await;
    client
        .subscribe("bornes", json!({"borne_added": {}, "borne_changed": {}}))
        .await;
    db.batch_execute(
        "BEGIN; INSERT INTO borne (uid, power) SELECT 'B' || i, i FROM generate_series(1, 1000) i; \
         UPDATE borne SET status = 'last' WHERE uid = 'B1'; COMMIT; \
         INSERT INTO borne (uid, power) VALUES ('after', 1001);",
    )
    .await
    .unwrap();
    let got = data(&mut client, 1002, Duration::from_secs(30)).await;
    let powers: Vec<_> = got[..1000]
        .iter()
        .map(|m| m["data"]["new"]["power"].as_u64().unwrap())
        .collect();
    assert_eq!(powers, (1..=1000).collect::<Vec<_>>());
    assert_eq!(got[1000]["data"]["new"]["status"], "last");
    assert_eq!(got[1001]["data"]["new"]["uid"], "after");
    let offsets: Vec<_> = got.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
    assert!(
        offsets.windows(2).all(|w| w[1] == w[0] + 1),
        "consecutive offsets"
    );
    let lsns: Vec<_> = got.iter().map(|m| m["data"]["lsn"].clone()).collect();
    assert!(
        lsns[..1001].iter().all(|l| *l == lsns[0]),
        "one commit LSN per transaction"
    );
    assert_ne!(lsns[1001], lsns[0]);
}

/// A column added while the source streams appears in the events that
/// follow; a large (TOAST-ed) value an update leaves alone is still in
/// `new` (taken from the old row, which REPLICA IDENTITY FULL sends whole).
#[tokio::test]
async fn a_column_added_mid_stream_and_unchanged_large_values_are_kept() {
    let pg = PostgresServer::start().await;
    let db = pg.client().await;
    db.batch_execute(BORNE_TABLE).await.unwrap();
    let node = node_on(&pg, "main").await;
    let mut client = node.client().await;
    client
        .subscribe("bornes", json!({"borne_added": {}, "borne_changed": {}}))
        .await;
    db.batch_execute("INSERT INTO borne (uid) VALUES ('before')")
        .await
        .unwrap();
    let first = data(&mut client, 1, WAIT).await;
    assert!(first[0]["data"]["new"].get("notes").is_none());
    db.batch_execute(
        "ALTER TABLE borne ADD COLUMN notes text; \
         INSERT INTO borne (uid, notes) \
           SELECT 'big', string_agg(md5(i::text), '') FROM generate_series(1, 4000) i; \
         UPDATE borne SET status = 'fault' WHERE uid = 'big';",
    )
    .await
    .unwrap();
    let got = data(&mut client, 2, WAIT).await;
    let notes = got[0]["data"]["new"]["notes"].as_str().unwrap();
    assert_eq!(notes.len(), 4000 * 32);
    assert_eq!(got[1]["data"]["new"]["status"], "fault");
    assert_eq!(got[1]["data"]["new"]["notes"].as_str(), Some(notes));
}

/// With `columns`, only those columns are in `new` and `old`; keywords
/// may still read the others.
#[tokio::test]
async fn only_the_configured_columns_are_sent() {
    let pg = PostgresServer::start().await;
    let db = pg.client().await;
    db.batch_execute(BORNE_TABLE).await.unwrap();
    let section = super::source_section(&pg.url(), "main").replace(
        "key = \"borne:{uid}\"",
        "key = \"borne:{uid}\"\ncolumns = [\"uid\", \"power\"]",
    );
    let node = chouquette_testkit::TestNode::start(&format!(
        "{}{section}",
        chouquette_testkit::BASE_CONFIG
    ))
    .await;
    assert!(super::ready(&node, WAIT).await);
    let mut client = node.client().await;
    client
        .subscribe("bornes", json!({"borne_changed": {}}))
        .await;
    db.batch_execute(
        "INSERT INTO borne (uid, status, power) VALUES ('B1', 'ok', 3); \
         UPDATE borne SET power = 4 WHERE uid = 'B1';",
    )
    .await
    .unwrap();
    let got = data(&mut client, 1, WAIT).await;
    assert_eq!(got[0]["data"]["new"], json!({"uid": "B1", "power": 4}));
    assert_eq!(got[0]["data"]["old"], json!({"uid": "B1", "power": 3}));
    assert_eq!(got[0]["keywords"], json!(["borne:B1", "status:ok"]));
}

/// A TRUNCATE becomes one event (op `truncate`, no rows, the commit's LSN)
/// on a table that names a kind for it, between the changes around it; a
/// table that names none publishes nothing for it.
#[tokio::test]
async fn a_truncate_is_one_event_without_rows_where_it_has_a_kind() {
    let pg = PostgresServer::start().await;
    let db = pg.client().await;
    db.batch_execute(BORNE_TABLE).await.unwrap();
    let section = super::source_section(&pg.url(), "main").replace(
        "delete = \"borne_removed\" }",
        "delete = \"borne_removed\", truncate = \"bornes_cleared\" }",
    );
    let node = chouquette_testkit::TestNode::start(&format!(
        "{}{section}",
        chouquette_testkit::BASE_CONFIG
    ))
    .await;
    assert!(super::ready(&node, WAIT).await);
    let without = node_on(&pg, "other").await;
    let mut client = node.client().await;
    client
        .subscribe("bornes", json!({"borne_added": {}, "bornes_cleared": {}}))
        .await;
    let mut other = without.client().await;
    other.subscribe("bornes", json!({"*": {}})).await;
    db.batch_execute(
        "INSERT INTO borne (uid) VALUES ('B1'); TRUNCATE borne; INSERT INTO borne (uid) VALUES ('B2');",
    )
    .await
    .unwrap();
    let got = data(&mut client, 3, WAIT).await;
    let kinds: Vec<_> = got.iter().map(|m| m["event_kind"].clone()).collect();
    assert_eq!(kinds, ["borne_added", "bornes_cleared", "borne_added"]);
    let cleared = &got[1]["data"];
    assert_eq!(cleared["op"], "truncate");
    assert_eq!(cleared["table"], "public.borne");
    assert_eq!(cleared["new"], json!(null));
    assert_eq!(cleared["old"], json!(null));
    assert!(cleared["lsn"].as_str().unwrap().contains('/'));
    assert_eq!(got[1]["keywords"], json!([]));
    let got = data(&mut other, 2, WAIT).await;
    let kinds: Vec<_> = got.iter().map(|m| m["event_kind"].clone()).collect();
    assert_eq!(kinds, ["borne_added", "borne_added"]);
    other.expect_silence(Duration::from_millis(300)).await;
}
