//! The operator console (`GET /admin/`), its data route (`GET /admin/stats`)
//! and the flow metrics they show: publish-to-write latency, outbox depth,
//! broker round trips, per-app and per-channel counters, drops by reason.

use std::time::Duration;

use chouquette_testkit::{API_KEY, TestNode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::event;

/// GETs `path` on the internal listener; status line and header block
/// (lower-cased), and body.
async fn get_with_head(node: &TestNode, path: &str) -> (String, String) {
    let addr = node.running.internal;
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_ascii_lowercase(), body.to_string())
}

/// Polls `/admin/stats` until `check` holds (writes are recorded just after
/// the client could read them).
async fn stats_until(node: &TestNode, check: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..300 {
        let (status, body) = node.admin_get("/admin/stats").await;
        assert_eq!(status, 200, "{body}");
        if check(&body) {
            return body;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("/admin/stats never reached the expected state: {last}");
}

#[tokio::test]
async fn the_console_page_is_served_without_the_key_and_may_not_be_framed() {
    let node = TestNode::base().await;
    let (head, body) = get_with_head(&node, "/admin/").await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(head.contains("x-frame-options: deny"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'; script-src 'self'"),
        "{head}"
    );
    assert!(body.contains("<script src=\"console.js\""), "{body}");
    // Nothing from another origin.
    assert!(!body.contains("http://") && !body.contains("https://"));
    for (path, kind) in [
        ("/admin/console.js", "text/javascript"),
        ("/admin/console.css", "text/css"),
    ] {
        let (head, body) = get_with_head(&node, path).await;
        assert!(head.starts_with("http/1.1 200"), "{path}: {head}");
        assert!(head.contains(&format!("content-type: {kind}")), "{path}");
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{path}"
        );
    }
    let (head, _) = get_with_head(&node, "/admin").await;
    assert!(head.starts_with("http/1.1 308"), "{head}");
    assert!(head.contains("location: /admin/"), "{head}");
    // The page is on the internal listener only.
    let (status, _) = node.get_public("/admin/").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn stats_need_the_admin_key() {
    let node = TestNode::base().await;
    let (status, body) = node.admin_get_with(None, "/admin/stats").await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = node.admin_get_with(Some(API_KEY), "/admin/stats").await;
    assert_eq!(status, 403);
    let no_admin = chouquette_testkit::BASE_CONFIG.replace("[admin]\nkey = \"admin-key\"", "");
    let node = TestNode::start(&no_admin).await;
    let (status, _) = node.admin_get("/admin/stats").await;
    assert_eq!(status, 404);
}

fn channel<'a>(stats: &'a Value, name: &str) -> Option<&'a Value> {
    stats["channels"]
        .as_array()?
        .iter()
        .find(|c| c["app"] == "bluelib" && c["channel"] == name)
}

#[tokio::test]
async fn stats_and_metrics_count_the_flow_per_app_and_channel() {
    let node = TestNode::base().await;
    let mut client = node.client().await;
    client.subscribe("bornes", json!({"*": {}})).await;
    for i in 0..3 {
        node.publish_event(&event("bornes", "status", &["borne:B1"], json!({ "i": i })))
            .await;
    }
    node.publish_event(&event("alarms", "alarm", &[], json!(null)))
        .await;
    for _ in 0..3 {
        let m = client.recv().await;
        assert_eq!(m["class"], "data", "{m}");
    }

    let stats = stats_until(&node, |s| {
        s["publish_to_write_seconds"]["count"].as_u64() >= Some(3)
    })
    .await;
    assert_eq!(stats["broker"]["kind"], "memory");
    assert_eq!(stats["broker"]["connected"], true);
    assert!(stats["uptime_ms"].as_u64().is_some());
    assert_eq!(stats["connections"], 1);
    assert_eq!(stats["publications_total"], 4);
    assert_eq!(stats["deliveries_queued_total"], 3);
    assert_eq!(stats["apps"]["bluelib"]["published"], 4);
    assert_eq!(stats["apps"]["bluelib"]["delivered"], 3);
    assert_eq!(stats["apps"]["bluelib"]["subscriptions"], 1);
    assert_eq!(stats["apps"]["other"]["published"], 0);
    let bornes = channel(&stats, "bornes").expect("bornes");
    assert_eq!(
        (&bornes["published"], &bornes["delivered"]),
        (&json!(3), &json!(3))
    );
    let alarms = channel(&stats, "alarms").expect("alarms");
    assert_eq!(
        (&alarms["published"], &alarms["delivered"]),
        (&json!(1), &json!(0))
    );
    // One broker publish per request, one recover per subscribe.
    assert_eq!(stats["broker_roundtrip_seconds"]["publish"]["count"], 4);
    assert_eq!(stats["broker_roundtrip_seconds"]["recover"]["count"], 1);
    // Events written straight into the idle client's socket by the
    // fan-out never wait in its outbox: the depth is seen only for those
    // queued while its task was busy.
    assert!(
        stats["outbox_depth"]["count"].as_u64() <= Some(3),
        "{stats}"
    );
    let latency = &stats["publish_to_write_seconds"];
    assert_eq!(latency["bounds"].as_array().map(Vec::len), Some(16));
    assert_eq!(latency["counts"].as_array().map(Vec::len), Some(17));
    assert!(
        latency["sum"].as_f64().is_some_and(|s| s > 0.0 && s < 30.0),
        "{latency}"
    );
    assert_eq!(stats["drops"]["slow_consumer"], 0);
    assert_eq!(stats["drops"]["write_failed"], 0);

    // The same numbers in /metrics, as Prometheus series.
    let metric = |series: &'static str| {
        let node = &node;
        async move { node.metric(series).await }
    };
    assert_eq!(
        metric("chouquette_channel_published_total{app=\"bluelib\",channel=\"bornes\"}").await,
        Some(3.0)
    );
    assert_eq!(
        metric("chouquette_channel_delivered_total{app=\"bluelib\",channel=\"alarms\"}").await,
        Some(0.0)
    );
    assert_eq!(
        metric("chouquette_app_published_total{app=\"bluelib\"}").await,
        Some(4.0)
    );
    assert_eq!(
        metric("chouquette_app_delivered_total{app=\"bluelib\"}").await,
        Some(3.0)
    );
    assert!(metric("chouquette_publish_to_write_seconds_count").await >= Some(3.0));
    assert_eq!(
        metric("chouquette_publish_to_write_seconds_bucket{le=\"+Inf\"}").await,
        metric("chouquette_publish_to_write_seconds_count").await
    );
    assert_eq!(
        metric("chouquette_broker_roundtrip_seconds_count{op=\"recover\"}").await,
        Some(1.0)
    );
    assert_eq!(
        metric("chouquette_drops_total{reason=\"ended\"}").await,
        Some(0.0)
    );
    // Exported, whatever it counted (see above).
    assert!(metric("chouquette_outbox_depth_count").await.is_some());
}

#[tokio::test]
async fn sse_and_long_poll_writes_count_in_the_latency() {
    let node = TestNode::base().await;
    let token = chouquette_testkit::token("bornes", json!({"*": {}}), 3600);
    // The first poll answers at once (snapshot and ack); the second waits for live events.
    let (status, first) = node.poll(&[&token], None, 0).await;
    assert_eq!(status, 200, "{first}");
    let cursor = first["cursor"].as_str().unwrap().to_string();
    let waiting = {
        let token = token.clone();
        let node = &node;
        async move { node.poll(&[&token], Some(&cursor), 10).await }
    };
    let publish = async {
        // The poll must be waiting before the event goes out: wait for its subscription.
        stats_until(&node, |s| s["subscriptions"] == 1).await;
        node.publish_event(&event("bornes", "status", &["borne:B2"], json!(1)))
            .await;
    };
    let ((status, answer), ()) = tokio::join!(waiting, publish);
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["messages"][0]["class"], "data", "{answer}");
    stats_until(&node, |s| s["publish_to_write_seconds"]["count"] == 1).await;
}

#[tokio::test]
async fn the_grafana_dashboard_names_real_series() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/grafana-dashboard.json"
    );
    let text = std::fs::read_to_string(path).unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    assert!(
        dashboard["panels"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    );
    let node = TestNode::base().await;
    let (status, metrics) = node.get("/metrics").await;
    assert_eq!(status, 200);
    // Every family is declared by a `# TYPE` line, even before it has a value.
    let families: Vec<(&str, &str)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .collect();
    let exported = |name: &str| {
        families.iter().any(|(family, kind)| {
            name == *family
                || (*kind == "histogram"
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| name.strip_suffix(suffix) == Some(family)))
        })
    };
    let mut named = 0;
    for part in text.split("chouquette_").skip(1) {
        let name: String = part
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() || name == "gateway" {
            continue; // the dashboard's uid
        }
        named += 1;
        assert!(
            exported(&format!("chouquette_{name}")),
            "the dashboard names chouquette_{name}, which /metrics does not export"
        );
    }
    assert!(named > 20, "{named}");
}
