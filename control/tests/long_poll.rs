//! The table long poll over HTTP: a real control plane on `127.0.0.1:0` (in this process) with
//! a 3 s longest hold. `GET /v1/tables/{region}?since=V` with `V` current holds for its whole
//! timeout when nothing changes and then answers a bare 304; it answers at once when `V` is not
//! current; and a held poll answers, with the new table, as soon as a newer version is
//! published.

use std::time::{Duration, Instant};

use meridian_api::wire::{PushResponse, TableResponse};
use meridian_testkit::MockUpstream;

mod common;

const OPERATOR: &str = "op-token-0123";
/// The control plane's `long_poll_max_ms`.
const HOLD: Duration = Duration::from_millis(3000);
const DEADLINE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);

/// Regions `a` and `b`, one healthy endpoint each, `weight` on the route's split.
fn intent(ups: &[MockUpstream], weight: u32) -> String {
    format!(
        "regions:\n  - {{ name: a, failover: [b] }}\n  - {{ name: b, failover: [a] }}\n\
         services:\n  - name: s\n    health_check: {{ path: /healthz, interval_ms: 500, timeout_ms: 400 }}\n\
         \x20   versions:\n      - name: v1\n        endpoints:\n\
         \x20         a: [\"{}\"]\n          b: [\"{}\"]\n\
         routes:\n  - {{ name: r, split: [{{ subset: s@v1, weight: {weight} }}] }}\n",
        ups[0].addr(),
        ups[1].addr(),
    )
}

/// One poll: its status, its table when it has one, and how long it took.
struct Answer {
    code: u16,
    table: Option<TableResponse>,
    body_len: usize,
    took: Duration,
}

async fn poll(http: &reqwest::Client, base: &str, query: &str) -> Answer {
    let start = Instant::now();
    let r = http
        .get(format!("{base}/v1/tables/a?{query}"))
        .bearer_auth(OPERATOR)
        .send()
        .await
        .expect("poll");
    let code = r.status().as_u16();
    let body = r.bytes().await.expect("body");
    let took = start.elapsed();
    let table = (code == 200).then(|| serde_json::from_slice(&body).expect("table response"));
    Answer {
        code,
        table,
        body_len: body.len(),
        took,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_holds_until_a_newer_version_or_its_timeout() {
    let ups = common::upstreams(&["a", "b"]).await;
    let dir = tempfile::tempdir().expect("dir");
    let common::Started {
        control,
        base,
        http,
    } = common::start_control(
        dir.path(),
        &intent(&ups, 1),
        &format!(
            "tokens: {{ alice: {{ token: {OPERATOR}, role: operator }} }}\n\
             health: {{ warmup_ms: 2000 }}\nlong_poll_max_ms: {}\n",
            HOLD.as_millis()
        ),
        Duration::from_secs(20),
    )
    .await;

    // The first table, and the endpoints' first health results in it (so that nothing but the
    // push below changes the table while the polls are held).
    let end = Instant::now() + DEADLINE;
    let current = loop {
        let a = poll(&http, &base, "since=0&wait_ms=0").await;
        if let Some(t) = a.table {
            if control
                .hub
                .status()
                .endpoints
                .iter()
                .all(|e| e.health == "healthy")
            {
                break t;
            }
        }
        assert!(Instant::now() < end, "no table with healthy endpoints");
        tokio::time::sleep(POLL).await;
    };
    let v = current.version;
    assert!(v > 0);

    // A version that is not current (0: none yet; v - 1: an older one) is answered at once.
    for since in [0, v - 1] {
        let a = poll(&http, &base, &format!("since={since}")).await;
        assert_eq!(a.code, 200, "since={since}");
        assert_eq!(a.table.as_ref().map(|t| t.version), Some(v));
        assert!(
            a.took < Duration::from_secs(1),
            "since={since}: {:?}",
            a.took
        );
    }

    // The current version, nothing changing: each poll is held for its whole timeout (the
    // control plane's longest hold by default, `wait_ms` when shorter, the longest hold when
    // `wait_ms` asks for more), then answered 304 with no body.
    let (q_default, q_shorter, q_longer) = (
        format!("since={v}"),
        format!("since={v}&wait_ms=1000"),
        format!("since={v}&wait_ms=60000"),
    );
    let (by_default, shorter, longer) = tokio::join!(
        poll(&http, &base, &q_default),
        poll(&http, &base, &q_shorter),
        poll(&http, &base, &q_longer),
    );
    for (what, a, hold) in [
        ("default", &by_default, HOLD),
        ("wait_ms=1000", &shorter, Duration::from_millis(1000)),
        ("wait_ms=60000", &longer, HOLD),
    ] {
        assert_eq!(a.code, 304, "{what}");
        assert_eq!(a.body_len, 0, "{what}: a 304 has no body");
        assert!(
            a.took >= hold.mul_f64(0.9),
            "{what}: answered after {:?}, before most of its {hold:?} hold",
            a.took
        );
        assert!(
            a.took < hold + Duration::from_secs(2),
            "{what}: held {:?}, well past its {hold:?} hold",
            a.took
        );
    }

    // A held poll answers as soon as a newer version is published, with that version.
    let held = {
        let (http, base) = (http.clone(), base.clone());
        tokio::spawn(async move { poll(&http, &base, &format!("since={v}")).await })
    };
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!held.is_finished(), "the poll was not held");
    let r = http
        .put(format!("{base}/v1/intent"))
        .bearer_auth(OPERATOR)
        .body(intent(&ups, 7))
        .send()
        .await
        .expect("push");
    assert_eq!(r.status(), 200);
    let pushed: PushResponse = r.json().await.expect("push response");
    let pushed_at = started.elapsed();
    let newer = pushed.versions["a"];
    assert!(newer > v, "the push made no newer version: {pushed:?}");
    let a = held.await.expect("poll task");
    assert_eq!(a.code, 200);
    let t = a.table.expect("table");
    assert_eq!(t.version, newer);
    assert_eq!(t.table.routes[0].split[0].weight, 7, "not the pushed table");
    assert!(
        a.took < pushed_at + Duration::from_millis(500),
        "answered {:?} after the poll started, the push was done at {pushed_at:?}",
        a.took
    );
    assert!(
        a.took < HOLD.mul_f64(0.9),
        "answered at {:?}: by the timeout, not by the new version",
        a.took
    );

    // Polling on from the new version holds again.
    let a = poll(&http, &base, &format!("since={newer}&wait_ms=1000")).await;
    assert_eq!(a.code, 304);
    assert!(a.took >= Duration::from_millis(900), "{:?}", a.took);
}
