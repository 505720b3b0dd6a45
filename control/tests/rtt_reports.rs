//! Reported RTTs over HTTP: a real control plane on `127.0.0.1:0` (in this process), three
//! regions that all fail over `auto`, one testkit upstream per region, and reports posted to
//! `POST /v1/reports` the way gateways send them. The published tables must follow what each
//! region's gateways measure; bad values are ignored and counted, malformed bodies refused.

use std::time::{Duration, Instant};

use meridian_api::wire::{Status, TableResponse};
use meridian_testkit::MockUpstream;

mod common;
use serde_json::json;

const TOKEN: &str = "gw-token-0123";
const OPERATOR_TOKEN: &str = "op-token-0123";
const DEADLINE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);

struct World {
    _control: meridian_control::Running,
    _ups: Vec<MockUpstream>,
    _dir: tempfile::TempDir,
    base: String,
    http: reqwest::Client,
}

async fn world() -> World {
    let ups = common::upstreams(&["a", "b", "c"]).await;
    let intent = format!(
        "regions:\n  - {{ name: a, failover: auto }}\n  - {{ name: b, failover: auto }}\n  - {{ name: c, failover: auto }}\n\
         services:\n  - name: s\n    health_check: {{ path: /healthz, interval_ms: 200, timeout_ms: 150 }}\n\
         \x20   versions:\n      - name: v1\n        endpoints:\n\
         \x20         a: [\"{}\"]\n          b: [\"{}\"]\n          c: [\"{}\"]\n\
         routes:\n  - {{ name: r, split: [{{ subset: s@v1, weight: 1 }}] }}\n",
        ups[0].addr(),
        ups[1].addr(),
        ups[2].addr()
    );
    let dir = tempfile::tempdir().expect("dir");
    // The control plane probes the regions itself once at start (an hour is its next round), so
    // its fallback figures, loopback noise, stay put while the test runs.
    let common::Started {
        control,
        base,
        http,
    } = common::start_control(
        dir.path(),
        &intent,
        &format!(
            "tokens: {{ gw: {TOKEN}, op: {{ token: {OPERATOR_TOKEN}, role: operator }} }}\n\
             health: {{ warmup_ms: 2000 }}\nrtt: {{ interval_ms: 3600000 }}\n"
        ),
        Duration::from_secs(10),
    )
    .await;
    let w = World {
        _control: control,
        _ups: ups,
        _dir: dir,
        base,
        http,
    };
    w.wait("every region's table", |s| s.regions.len() == 3)
        .await;
    w
}

impl World {
    async fn status(&self) -> Status {
        self.http
            .get(format!("{}/v1/status", self.base))
            .bearer_auth(OPERATOR_TOKEN)
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("status json")
    }

    async fn wait(&self, what: &str, f: impl Fn(&Status) -> bool) -> Status {
        let end = Instant::now() + DEADLINE;
        loop {
            let s = self.status().await;
            if f(&s) {
                return s;
            }
            assert!(Instant::now() < end, "timed out waiting for {what}: {s:#?}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// Posts a raw report body; returns the status code.
    async fn post(&self, body: String) -> u16 {
        self.http
            .post(format!("{}/v1/reports", self.base))
            .bearer_auth(TOKEN)
            .body(body)
            .send()
            .await
            .expect("report")
            .status()
            .as_u16()
    }

    /// Posts a gateway's report carrying `rtt_ms`; it must be taken (204).
    async fn report(&self, gateway: &str, region: &str, rtt_ms: serde_json::Value) {
        let body = json!({ "wire": 1, "gateway": gateway, "region": region, "rtt_ms": rtt_ms });
        assert_eq!(self.post(body.to_string()).await, 204, "report {body}");
    }
}

fn failover(s: &Status, region: &str) -> Vec<String> {
    s.regions
        .iter()
        .find(|r| r.region == region)
        .map(|r| r.failover.clone())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reported_rtts_order_each_regions_failover() {
    let w = world().await;

    // Region a's gateway measures c near and b far: a fails over to c first.
    w.report("gw-a-1", "a", json!({ "b": 80.0, "c": 5.0 }))
        .await;
    let s = w
        .wait("a: [c, b]", |s| failover(s, "a") == ["c", "b"])
        .await;
    let a_version = s
        .regions
        .iter()
        .find(|r| r.region == "a")
        .map(|r| r.version);

    // One contrary sample from a, and region c's first report.
    w.report("gw-a-1", "a", json!({ "b": 2.0, "c": 90.0 }))
        .await;
    w.report("gw-c-1", "c", json!({ "a": 70.0, "b": 4.0 }))
        .await;
    // Then region b's first report, chosen to reverse whatever order b has now (from the control
    // plane's own probes), so that the change is sure to show. Reports are smoothed in the order
    // they arrive: once b's new order is published, a's and c's reports have been taken too.
    let s = w.status().await;
    let (first, second) = match failover(&s, "b").as_slice() {
        [x, y] => (x.clone(), y.clone()),
        other => panic!("b fails over to two regions: {other:?}"),
    };
    w.report(
        "gw-b-1",
        "b",
        json!({ first.clone(): 90.0, second.clone(): 3.0 }),
    )
    .await;
    let s = w
        .wait("b reversed", |s| {
            failover(s, "b") == [second.as_str(), first.as_str()]
        })
        .await;
    assert_eq!(
        failover(&s, "a"),
        ["c", "b"],
        "a single contrary report reordered a"
    );
    assert_eq!(failover(&s, "c"), ["b", "a"], "c follows its own reports");
    // Two regions, two different orders, each from its own measurements.
    assert_ne!(failover(&s, "a"), failover(&s, "c"));

    // A sustained change from a (two gateways now) does reorder a.
    let end = Instant::now() + DEADLINE;
    let mut sent = 1;
    loop {
        let gw = if sent % 2 == 0 { "gw-a-1" } else { "gw-a-2" };
        w.report(gw, "a", json!({ "b": 2.0, "c": 90.0 })).await;
        sent += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let s = w.status().await;
        if failover(&s, "a") == ["b", "c"] {
            let v = s
                .regions
                .iter()
                .find(|r| r.region == "a")
                .map(|r| r.version);
            assert!(v > a_version, "a's table got a new version");
            break;
        }
        assert!(Instant::now() < end, "a never turned to [b, c]: {s:#?}");
    }
    assert!(
        sent > 2,
        "smoothing: one report should not have been enough"
    );
    // The table a gateway of region a downloads carries the new order.
    let t: TableResponse = w
        .http
        .get(format!("{}/v1/tables/a?since=0", w.base))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("table")
        .json()
        .await
        .expect("table json");
    let own = t.table.regions.iter().find(|r| r.name == "a").expect("a");
    assert_eq!(own.failover, ["b", "c"]);
    // c is untouched by a's reports.
    assert_eq!(failover(&w.status().await, "c"), ["b", "a"]);

    // Bad values are ignored and counted, the report is still taken, nothing reorders.
    w.report(
        "gw-a-3",
        "a",
        json!({ "b": -5.0, "c": 1e9, "zz": 3.0, "a": 1.0 }),
    )
    .await;
    w.report("gw-x-1", "mars", json!({ "b": 3.0 })).await;
    let s = w.status().await;
    let g = |id: &str| {
        s.gateways
            .iter()
            .find(|g| g.gateway == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} listed"))
    };
    assert_eq!(g("gw-a-3").rtt_ignored, 4);
    assert!(g("gw-a-3").rtt_ms.is_empty());
    assert_eq!(g("gw-x-1").rtt_ignored, 1);
    assert_eq!(g("gw-c-1").rtt_ignored, 0);
    assert_eq!(
        g("gw-c-1").rtt_ms.get("b").copied(),
        Some(4.0),
        "the last valid RTTs are shown"
    );
    assert_eq!(failover(&s, "a"), ["b", "c"]);

    // Malformed RTTs make a malformed report: 400, as for any other malformed field.
    for rtt in [r#"{"b": "fast"}"#, r#"[1, 2]"#, r#"{"b": null}"#] {
        let body = format!(r#"{{"wire": 1, "gateway": "gw-a-1", "region": "a", "rtt_ms": {rtt}}}"#);
        assert_eq!(w.post(body.clone()).await, 400, "{body}");
    }
    // A report without RTTs (an older gateway) is fine and changes nothing.
    assert_eq!(
        w.post(r#"{"wire": 1, "gateway": "gw-old", "region": "a"}"#.to_string())
            .await,
        204
    );
    assert_eq!(failover(&w.status().await, "a"), ["b", "c"]);
}
