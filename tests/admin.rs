//! End-to-end: the admin listener of a real `meridian gateway` process: `/healthz`, `/readyz`
//! before and after a first valid table, `/table` and `/metrics`.

mod common;

use common::*;
use meridian_testkit::{MockUpstream, UpstreamConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_ready_until_a_valid_table_then_everything_is_reported() {
    let up = MockUpstream::start(UpstreamConfig::new("alpha"))
        .await
        .expect("upstream");
    // Start on an invalid table (negative weight): the process runs but is not ready.
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bad = table(
        1,
        vec![route("vitals", None, &[("vitals@v1", 1), ("vitals@v2", 1)])],
        vec![subset("vitals@v1", &[&up]), subset("vitals@v2", &[&up])],
    );
    bad.routes[0].split[1].weight = -1;
    write_table_at(&dir.path().join("table.yaml"), &bad);
    let mut gw = Gw::spawn(dir, &config_yaml("")).await;
    let c = client();

    let (code, body) = gw.admin_get("/healthz").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = gw.admin_get("/readyz").await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("routes[0].split[1].weight: must be >= 0"),
        "/readyz says why: {body}"
    );
    let (code, body) = gw.admin_get("/table").await;
    assert_eq!(code, 503, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("/table is JSON");
    assert!(v["table"].is_null(), "{body}");
    assert_eq!(v["region"], REGION);
    assert!(
        v["last_rejection"]
            .as_str()
            .is_some_and(|r| r.contains("weight")),
        "{body}"
    );
    // Without a table, client requests get a 503 (not a hang, not a crash).
    let r = get(&c, &gw.url("/vitals"), &[]).await;
    assert_eq!(r.status(), 503);
    let m = gw.metrics().await;
    assert_eq!(metric(&m, "meridian_table_version", &[]), Some(0.0));
    assert_eq!(
        metric(&m, "meridian_table_rejections_total", &[]),
        Some(1.0),
        "the start-up table was refused once:\n{m}"
    );
    assert_eq!(up.requests(), 0);

    // A valid table makes it ready.
    let good = table(
        7,
        vec![route("vitals", None, &[("vitals@v1", 1)])],
        vec![subset("vitals@v1", &[&up])],
    );
    gw.write_table(&good);
    gw.wait_ready().await;
    let (code, body) = gw.admin_get("/readyz").await;
    assert_eq!(code, 200);
    assert!(body.contains("version 7"), "{body}");
    let (code, body) = gw.admin_get("/table").await;
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("/table is JSON");
    assert_eq!(v["table"]["version"], 7, "{body}");
    assert_eq!(v["table"]["routes"][0]["name"], "vitals", "{body}");
    assert!(v["last_rejection"].is_null(), "{body}");

    for _ in 0..5 {
        let r = get(&c, &gw.url("/vitals"), &[]).await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(up.requests(), 5);

    gw.assert_metric(
        "meridian_requests_total",
        &[
            ("route", "vitals"),
            ("subset", "vitals@v1"),
            ("region", REGION),
            ("code", "200"),
        ],
        5.0,
    )
    .await;
    gw.assert_metric(
        "meridian_request_duration_seconds_count",
        &[
            ("route", "vitals"),
            ("subset", "vitals@v1"),
            ("region", REGION),
        ],
        5.0,
    )
    .await;
    gw.assert_metric(
        "meridian_upstream_inflight",
        &[("endpoint", &up.addr().to_string())],
        0.0,
    )
    .await;
    let m = gw.metrics().await;
    assert!(
        m.contains("meridian_request_duration_seconds_bucket{"),
        "histogram buckets:\n{m}"
    );
    assert_eq!(metric(&m, "meridian_table_version", &[]), Some(7.0));
    assert_eq!(
        metric(&m, "meridian_table_rejections_total", &[]),
        Some(1.0)
    );

    let (code, _) = gw.admin_get("/nope").await;
    assert_eq!(code, 404);
    assert!(gw.running());
}
