//! End-to-end tests of the control plane and the gateways' sync client: real `meridian control`
//! and `meridian gateway` processes on `127.0.0.1:0`, testkit upstreams with flippable health,
//! two regions on loopback. Every wait polls with a deadline.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{client, meridian_bin, run_load, write_atomic, LoadSpec, START_DEADLINE};
use meridian_api::wire::{Status, TableResponse};
use meridian_testkit::MockUpstream;

const GW_TOKEN: &str = "gw-token-0123";
const ALICE_TOKEN: &str = "alice-token-0123";
const DEADLINE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);

/// The intent: two regions failing over to each other, one service with two endpoints in each.
fn intent(eu: &[&MockUpstream], us: &[&MockUpstream]) -> String {
    let list = |ups: &[&MockUpstream]| {
        ups.iter()
            .map(|u| format!("\"{}\"", u.addr()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "regions:\n  - {{ name: eu-west, failover: [us-east] }}\n  - {{ name: us-east, failover: [eu-west] }}\n\
         services:\n  - name: vitals\n    health_check: {{ path: /healthz, interval_ms: 100, timeout_ms: 80, \
         healthy_threshold: 2, unhealthy_threshold: 2 }}\n    versions:\n      - name: v1\n        endpoints:\n\
         \x20         eu-west: [{}]\n          us-east: [{}]\n\
         routes:\n  - name: vitals\n    split: [{{ subset: vitals@v1, weight: 100 }}]\n",
        list(eu),
        list(us)
    )
}

/// A running `meridian control`; killed on drop.
struct Control {
    child: Option<Child>,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Drop for Control {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("control.log")).unwrap_or_default();
            let tail = &log[log.len().saturating_sub(4000)..];
            eprintln!("---- control log ----\n{tail}");
        }
    }
}

impl Control {
    /// Writes the config (listening on `listen`) and starts the process in `dir`, where
    /// `intent.yaml` must already be.
    async fn start(dir: &Path, listen: &str) -> Control {
        let cfg = format!(
            "listen: \"{listen}\"\nintent: intent.yaml\nstate_dir: state\n\
             tokens: {{ gateways: {GW_TOKEN}, alice: {{ token: {ALICE_TOKEN}, role: operator }} }}\n\
             health: {{ concurrency: 16, warmup_ms: 2000 }}\nintent_poll_ms: 100\nlong_poll_max_ms: 5000\n"
        );
        std::fs::write(dir.join("control.yaml"), cfg).expect("control config");
        let ports = dir.join("control-ports.json");
        let _ = std::fs::remove_file(&ports);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("control.log"))
            .expect("log");
        let child = Command::new(meridian_bin())
            .args(["control", "--config"])
            .arg(dir.join("control.yaml"))
            .arg("--ports-file")
            .arg(&ports)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn meridian control");
        let mut c = Control {
            child: Some(child),
            dir: dir.to_path_buf(),
            addr: "127.0.0.1:0".parse().expect("addr"),
        };
        let end = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(text) = std::fs::read_to_string(&ports) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    c.addr = v["listen"].as_str().expect("listen").parse().expect("addr");
                    break;
                }
            }
            assert!(Instant::now() < end, "control plane wrote no ports file");
            tokio::time::sleep(POLL).await;
        }
        c
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn kill(&mut self) {
        if let Some(mut ch) = self.child.take() {
            let _ = ch.kill();
            let _ = ch.wait();
        }
    }

    async fn status(&self) -> Status {
        let r = client()
            .get(format!("{}/v1/status", self.url()))
            .bearer_auth(ALICE_TOKEN)
            .send()
            .await
            .expect("status");
        assert_eq!(r.status(), 200);
        r.json().await.expect("status json")
    }

    /// Polls `/v1/status` until `f` holds; returns that status.
    async fn wait_status(&self, what: &str, f: impl Fn(&Status) -> bool) -> Status {
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

    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.join("state/audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .collect()
    }
}

fn version_of(s: &Status, region: &str) -> Option<u64> {
    s.regions
        .iter()
        .find(|r| r.region == region)
        .map(|r| r.version)
}

/// A running `meridian gateway` fed by the control plane; killed on drop.
struct Gw {
    child: Option<Child>,
    dir: PathBuf,
    addr: SocketAddr,
    admin: SocketAddr,
}

impl Drop for Gw {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("gateway.log")).unwrap_or_default();
            let tail = &log[log.len().saturating_sub(3000)..];
            eprintln!("---- gateway log ({}) ----\n{tail}", self.dir.display());
        }
    }
}

impl Gw {
    async fn start(dir: &Path, region: &str, control: &str, limits: &str) -> Gw {
        std::fs::create_dir_all(dir).expect("gateway dir");
        let cfg = format!(
            "region: {region}\nlisteners: [{{ address: \"127.0.0.1:0\" }}]\nadmin: \"127.0.0.1:0\"\n\
             debug_headers: true\ntable:\n  control:\n    urls: [\"{control}\"]\n    token: {GW_TOKEN}\n\
             \x20   id: gw-{region}\n    report_interval_ms: 200\n    long_poll_ms: 5000\n{limits}\
             \x20 last_known_good: lkg.json\n"
        );
        std::fs::write(dir.join("gateway.yaml"), cfg).expect("gateway config");
        let ports = dir.join("ports.json");
        let _ = std::fs::remove_file(&ports);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("gateway.log"))
            .expect("log");
        let child = Command::new(meridian_bin())
            .args(["gateway", "--config"])
            .arg(dir.join("gateway.yaml"))
            .arg("--ports-file")
            .arg(&ports)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn meridian gateway");
        let mut gw = Gw {
            child: Some(child),
            dir: dir.to_path_buf(),
            addr: "127.0.0.1:0".parse().expect("addr"),
            admin: "127.0.0.1:0".parse().expect("addr"),
        };
        let end = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(text) = std::fs::read_to_string(&ports) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) {
                    gw.addr = v["listeners"][0]
                        .as_str()
                        .expect("l")
                        .parse()
                        .expect("addr");
                    gw.admin = v["admin"].as_str().expect("admin").parse().expect("addr");
                    break;
                }
            }
            assert!(Instant::now() < end, "gateway wrote no ports file");
            tokio::time::sleep(POLL).await;
        }
        for a in [gw.addr, gw.admin] {
            while tokio::net::TcpStream::connect(a).await.is_err() {
                assert!(Instant::now() < end, "{a} does not accept connections");
                tokio::time::sleep(POLL).await;
            }
        }
        gw
    }

    fn kill(&mut self) {
        if let Some(mut ch) = self.child.take() {
            let _ = ch.kill();
            let _ = ch.wait();
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn admin(&self, path: &str) -> (u16, String) {
        let r = client()
            .get(format!("http://{}{path}", self.admin))
            .send()
            .await
            .expect("admin");
        (r.status().as_u16(), r.text().await.expect("body"))
    }

    async fn table(&self) -> serde_json::Value {
        serde_json::from_str(&self.admin("/table").await.1).expect("/table JSON")
    }

    async fn wait_version(&self, v: u64) {
        let end = Instant::now() + DEADLINE;
        loop {
            let t = self.table().await;
            if t["table"]["version"].as_u64() == Some(v) {
                return;
            }
            assert!(Instant::now() < end, "gateway not at version {v}: {t}");
            tokio::time::sleep(POLL).await;
        }
    }

    /// True when the table in force lists `addr` as unhealthy.
    async fn sees_unhealthy(&self, addr: SocketAddr) -> bool {
        let t = self.table().await;
        t["table"]["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
            .any(|e| e["address"] == addr.to_string() && e["healthy"] == false)
    }
}

/// Two upstreams per region, a control plane and a gateway per region, all converged.
struct World {
    _dir: tempfile::TempDir,
    ups: Vec<MockUpstream>,
    control: Control,
    eu: Gw,
    us: Gw,
}

async fn world(eu_limits: &str) -> World {
    let dir = tempfile::tempdir().expect("dir");
    let ups = common::upstreams("up", 4).await;
    std::fs::write(
        dir.path().join("intent.yaml"),
        intent(&[&ups[0], &ups[1]], &[&ups[2], &ups[3]]),
    )
    .expect("intent");
    let control = Control::start(dir.path(), "127.0.0.1:0").await;
    let (eu_dir, us_dir, url) = (dir.path().join("eu"), dir.path().join("us"), control.url());
    let (eu, us) = tokio::join!(
        Gw::start(&eu_dir, "eu-west", &url, eu_limits),
        Gw::start(&us_dir, "us-east", &url, ""),
    );
    let s = control
        .wait_status("both gateways in sync", |s| {
            s.gateways.len() == 2 && s.gateways.iter().all(|g| g.in_sync)
        })
        .await;
    eu.wait_version(version_of(&s, "eu-west").expect("eu table"))
        .await;
    us.wait_version(version_of(&s, "us-east").expect("us table"))
        .await;
    World {
        _dir: dir,
        ups,
        control,
        eu,
        us,
    }
}

/// Waits until `sick`'s request count has stood still for 300 ms while `busy` (an endpoint still
/// in use) served at least 20 requests, so the load was running all the while; returns the
/// count. Fails when that takes longer than [`DEADLINE`].
async fn settle(sick: &MockUpstream, busy: &MockUpstream) -> u64 {
    let end = Instant::now() + DEADLINE;
    let mut since = (Instant::now(), sick.requests(), busy.requests());
    loop {
        tokio::time::sleep(POLL).await;
        let (n, b) = (sick.requests(), busy.requests());
        if n != since.1 {
            since = (Instant::now(), n, b);
        } else if since.0.elapsed() >= Duration::from_millis(300) && b >= since.2 + 20 {
            return n;
        }
        assert!(
            Instant::now() < end,
            "the unhealthy endpoint kept getting requests ({n})"
        );
    }
}

/// Runs load through both gateways until `stop`; returns (sent, errors, first errors).
fn load(w: &World, stop: &Arc<AtomicBool>) -> tokio::task::JoinHandle<(u64, u64, Vec<String>)> {
    let specs: Vec<LoadSpec> = [&w.eu, &w.us]
        .iter()
        .map(|g| LoadSpec {
            stop: Some(stop.clone()),
            limit: Duration::from_secs(40),
            ..LoadSpec::new(g.url("/vitals"), 1_000_000, 4)
        })
        .collect();
    tokio::spawn(async move {
        let c = client();
        let (a, b) = tokio::join!(
            run_load(&c, specs[0].clone()),
            run_load(&c, specs[1].clone())
        );
        let mut first = a.first_errors.clone();
        first.extend(b.first_errors.clone());
        (a.sent + b.sent, a.errors + b.errors, first)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_health_flip_reaches_both_gateways_and_no_request_fails() {
    let w = world("").await;
    let before = w.control.status().await;
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(&w, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let sick = w.ups[0].addr();
    let flipped = Instant::now();
    w.ups[0].set_healthy(false);
    let end = Instant::now() + DEADLINE;
    while !(w.eu.sees_unhealthy(sick).await && w.us.sees_unhealthy(sick).await) {
        assert!(Instant::now() < end, "the flip did not reach both gateways");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let took = flipped.elapsed();
    // 2 failed checks 100 ms (±10 %) apart, then the push: well under a second.
    assert!(took < Duration::from_secs(3), "took {took:?}");

    // Both gateways now route on the new table. Requests that loaded the old one before the
    // swap may still be on their way to the sick endpoint: at most one per load worker (4 per
    // gateway, each waiting for its answer before it sends the next request). Wait for them to
    // land (its count stops growing while the load goes on elsewhere), then make sure nothing
    // more ever reaches it.
    let in_flight = 2 * 4;
    let at_swap = w.ups[0].requests();
    let settled = settle(&w.ups[0], &w.ups[1]).await;
    assert!(
        settled - at_swap <= in_flight,
        "{} requests reached the unhealthy endpoint after both gateways had the new table; at \
         most {in_flight} were in flight",
        settled - at_swap
    );
    // Then a good stretch of load more (every request served by the others).
    let (healthy_before, end) = (w.ups[1].requests(), Instant::now() + DEADLINE);
    while w.ups[1].requests() < healthy_before + 200 {
        assert!(Instant::now() < end, "the load stalled");
        tokio::time::sleep(POLL).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (sent, errors, first) = running.await.expect("load");
    assert!(sent > 100, "only {sent} requests sent");
    assert_eq!(errors, 0, "{errors} of {sent} failed: {first:?}");
    assert_eq!(
        w.ups[0].requests(),
        settled,
        "the unhealthy endpoint still got traffic after the requests in flight had drained"
    );

    let after = w
        .control
        .wait_status("both in sync on the new tables", |s| {
            s.gateways.iter().all(|g| g.in_sync) && s.gateways.len() == 2
        })
        .await;
    for r in ["eu-west", "us-east"] {
        assert!(
            version_of(&after, r) > version_of(&before, r),
            "{r} got no new version"
        );
    }
    let audit = w.control.audit();
    assert!(
        audit.iter().any(|e| e["kind"] == "table"
            && e["causes"].as_array().is_some_and(|c| c.iter().any(|c| {
                c["health"]["endpoint"] == sick.to_string() && c["health"]["healthy"] == false
            }))),
        "no audited table version names the flip: {audit:#?}"
    );
    eprintln!("health flip to both gateways: {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_survive_the_control_plane_and_converge_when_it_returns() {
    let mut w = world("").await;
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(&w, &stop);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let control_addr = w.control.addr;
    w.control.kill();
    tokio::time::sleep(Duration::from_millis(700)).await;
    stop.store(true, Ordering::SeqCst);
    let (sent, errors, first) = running.await.expect("load");
    assert!(sent > 100, "only {sent} requests sent");
    assert_eq!(
        errors, 0,
        "{errors} of {sent} failed with the control plane gone: {first:?}"
    );
    // A gateway that keeps running stays ready and says it lost the control plane.
    let end = Instant::now() + DEADLINE;
    loop {
        let (code, ready) = w.us.admin("/readyz").await;
        assert_eq!(code, 200, "{ready}");
        if ready.contains("control plane unreachable") {
            break;
        }
        assert!(Instant::now() < end, "/readyz never said so: {ready}");
        tokio::time::sleep(POLL).await;
    }

    // A gateway restarted while the control plane is down serves its last-known-good table.
    let version = w.eu.table().await["table"]["version"].as_u64().expect("v");
    let dir = w.eu.dir.clone();
    w.eu.kill();
    w.eu = Gw::start(&dir, "eu-west", &w.control.url(), "").await;
    let (code, ready) = w.eu.admin("/readyz").await;
    assert_eq!(code, 200, "{ready}");
    assert!(ready.contains("last-known-good"), "/readyz says: {ready}");
    assert_eq!(
        w.eu.table().await["table"]["version"].as_u64(),
        Some(version)
    );
    let c = client();
    for _ in 0..50 {
        let r = c.get(w.eu.url("/vitals")).send().await.expect("request");
        assert_eq!(r.status(), 200);
    }
    let log = std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default();
    assert!(log.contains("last-known-good"), "the log does not say so");

    // The control plane comes back on the same address; a change reaches both gateways.
    w.control = Control::start(&w.control.dir.clone(), &control_addr.to_string()).await;
    w.ups[2].set_healthy(false);
    let sick = w.ups[2].addr();
    let end = Instant::now() + DEADLINE;
    while !(w.eu.sees_unhealthy(sick).await && w.us.sees_unhealthy(sick).await) {
        assert!(
            Instant::now() < end,
            "the gateways did not converge after the return"
        );
        tokio::time::sleep(POLL).await;
    }
    let s = w
        .control
        .wait_status("both in sync after the return", |s| {
            s.gateways.len() == 2 && s.gateways.iter().all(|g| g.in_sync)
        })
        .await;
    w.eu.wait_version(version_of(&s, "eu-west").expect("eu"))
        .await;
    let (_, ready) = w.eu.admin("/readyz").await;
    assert!(
        !ready.contains("last-known-good"),
        "/readyz still says: {ready}"
    );
    let (_, ready) = w.us.admin("/readyz").await;
    assert!(
        !ready.contains("unreachable"),
        "/readyz still says: {ready}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_table_over_the_gateways_limits_is_nacked_and_the_old_one_serves() {
    let w = world("    limits: { max_endpoints: 4 }\n").await;
    let old = w.eu.table().await["table"]["version"].as_u64().expect("v");
    let extra = common::upstreams("extra", 1).await;
    let file = w.control.dir.join("bigger.yaml");
    std::fs::write(
        &file,
        intent(&[&w.ups[0], &w.ups[1], &extra[0]], &[&w.ups[2], &w.ups[3]]),
    )
    .expect("write");
    let out = Command::new(meridian_bin())
        .args([
            "push",
            "--control",
            &w.control.url(),
            "--token",
            ALICE_TOKEN,
        ])
        .arg(&file)
        .output()
        .expect("meridian push");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("eu-west:"), "{stdout}");

    let s = w
        .control
        .wait_status("the NACK", |s| {
            s.gateways.iter().any(|g| {
                g.region == "eu-west"
                    && g.last_nack
                        .as_ref()
                        .is_some_and(|n| n.reason.contains("over this gateway's limit of 4"))
            })
        })
        .await;
    let eu = s
        .gateways
        .iter()
        .find(|g| g.region == "eu-west")
        .expect("eu");
    assert_eq!(eu.applied_version, Some(old));
    assert!(!eu.in_sync);
    assert_eq!(
        eu.last_nack.as_ref().map(|n| n.version),
        version_of(&s, "eu-west")
    );
    // us-east has no such limit and took its table.
    w.us.wait_version(version_of(&s, "us-east").expect("us"))
        .await;
    // The old table keeps serving, and the refusal is visible at the gateway.
    let t = w.eu.table().await;
    assert_eq!(t["table"]["version"].as_u64(), Some(old));
    assert!(
        t["last_rejection"]
            .as_str()
            .is_some_and(|r| r.contains("limit")),
        "{t}"
    );
    let c = client();
    for _ in 0..20 {
        assert_eq!(
            c.get(w.eu.url("/vitals"))
                .send()
                .await
                .expect("req")
                .status(),
            200
        );
    }
    // `meridian tables` shows it to a person.
    let out = Command::new(meridian_bin())
        .args([
            "tables",
            "--control",
            &w.control.url(),
            "--token",
            ALICE_TOKEN,
        ])
        .output()
        .expect("meridian tables");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("gw-eu-west") && text.contains("over this gateway's limit"),
        "{text}"
    );
    assert!(w.control.audit().iter().any(|e| e["kind"] == "nack"));
    assert!(w
        .control
        .audit()
        .iter()
        .any(|e| e["kind"] == "push" && e["identity"] == "alice"));
}

/// `GET /v1/tables/{region}?since=0` with the operator token.
async fn table_of(control: &Control, region: &str) -> TableResponse {
    let r = client()
        .get(format!("{}/v1/tables/{region}?since=0", control.url()))
        .bearer_auth(ALICE_TOKEN)
        .send()
        .await
        .expect("tables");
    assert_eq!(r.status(), 200);
    r.json().await.expect("table json")
}

/// The addresses of every endpoint of a table.
fn addresses(t: &TableResponse) -> Vec<String> {
    t.table
        .subsets
        .iter()
        .flat_map(|s| s.endpoints.iter().map(|e| e.address.clone()))
        .collect()
}

/// Runs `meridian push` with the operator token; panics unless it succeeds.
fn push(control: &Control, file: &Path) -> String {
    let out = Command::new(meridian_bin())
        .args(["push", "--control", &control.url(), "--token", ALICE_TOKEN])
        .arg(file)
        .output()
        .expect("meridian push");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The intent, with health checks slow enough that a busy machine does not fail one: for tests
/// where the tables must not change by themselves.
fn calm_intent(eu: &[&MockUpstream], us: &[&MockUpstream]) -> String {
    intent(eu, us).replace(
        "interval_ms: 100, timeout_ms: 80",
        "interval_ms: 500, timeout_ms: 400",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_intent_survives_a_control_plane_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let ups = common::upstreams("keep", 3).await;
    let watched = calm_intent(&[&ups[0]], &[&ups[1]]);
    std::fs::write(dir.path().join("intent.yaml"), &watched).expect("intent");
    let mut control = Control::start(dir.path(), "127.0.0.1:0").await;
    control
        .wait_status("the first tables", |s| s.regions.len() == 2)
        .await;
    let extra = ups[2].addr().to_string();
    assert!(!addresses(&table_of(&control, "eu-west").await).contains(&extra));

    // Push an intent with one more eu-west endpoint through `meridian push`.
    let file = dir.path().join("pushed.yaml");
    std::fs::write(&file, calm_intent(&[&ups[0], &ups[2]], &[&ups[1]])).expect("w");
    let out = push(&control, &file);
    assert!(out.contains("eu-west:"), "{out}");
    let pushed = control
        .wait_status("the pushed intent in force", |s| {
            s.intent.source == "push by alice"
        })
        .await;
    let before: Vec<TableResponse> = vec![
        table_of(&control, "eu-west").await,
        table_of(&control, "us-east").await,
    ];
    assert!(addresses(&before[0]).contains(&extra), "push not applied");

    // Kill the process (no clean shutdown) and start it again with the same config and state.
    control.kill();
    let control = Control::start(dir.path(), "127.0.0.1:0").await;
    let s = control
        .wait_status("tables after the restart", |s| s.regions.len() == 2)
        .await;
    assert_eq!(
        std::fs::read_to_string(dir.path().join("intent.yaml")).expect("read"),
        watched,
        "the watched file changed"
    );
    assert_eq!(s.intent.source, "push by alice", "{:?}", s.intent);
    assert_eq!(s.intent.hash, pushed.intent.hash);
    for old in &before {
        let now = table_of(&control, &old.region).await;
        assert!(
            addresses(&now).contains(&extra),
            "{}: the restarted control plane serves the watched file's table, not the pushed \
             one: {:?}",
            old.region,
            addresses(&now)
        );
        assert!(
            now.version >= old.version,
            "{}: version went from {} to {} across the restart",
            old.region,
            old.version,
            now.version
        );
    }
    // Once every endpoint has been checked healthy again, the tables are the very ones served
    // before the restart.
    let end = Instant::now() + DEADLINE;
    for old in &before {
        loop {
            let now = table_of(&control, &old.region).await;
            if now.hash == old.hash {
                break;
            }
            assert!(
                Instant::now() < end,
                "{}: not the table served before the restart: {:#?}",
                old.region,
                now.table
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_moves_to_the_next_replica_when_its_control_plane_dies() {
    let ups = common::upstreams("rep", 3).await;
    let (da, db) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let first = calm_intent(&[&ups[0]], &[&ups[1]]);
    std::fs::write(da.path().join("intent.yaml"), &first).expect("intent a");
    std::fs::write(db.path().join("intent.yaml"), &first).expect("intent b");
    let mut a = Control::start(da.path(), "127.0.0.1:0").await;
    let b = Control::start(db.path(), "127.0.0.1:0").await;
    // The gateway lists both replicas, `a` first.
    let urls = format!("{}\", \"{}", a.url(), b.url());
    let gw_dir = da.path().join("gw");
    let gw = Gw::start(&gw_dir, "eu-west", &urls, "").await;
    a.wait_status("the gateway in sync with the first replica", |s| {
        s.gateways.iter().any(|g| g.in_sync)
    })
    .await;
    let c = client();
    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn({
        let (c, stop) = (c.clone(), stop.clone());
        let spec = LoadSpec {
            stop: Some(stop),
            rate: Some(200.0),
            limit: Duration::from_secs(30),
            ..LoadSpec::new(gw.url("/vitals"), 100_000, 4)
        };
        async move { run_load(&c, spec).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The first replica dies; the second one's intent gains an eu-west endpoint.
    a.kill();
    let extra = ups[2].addr().to_string();
    write_atomic(
        &db.path().join("intent.yaml"),
        &calm_intent(&[&ups[0], &ups[2]], &[&ups[1]]),
    );
    let end = Instant::now() + DEADLINE;
    loop {
        let t = gw.table().await;
        let has = t["table"]["subsets"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
            .any(|e| e["address"] == extra.as_str());
        if has {
            break;
        }
        assert!(
            Instant::now() < end,
            "the gateway never applied the second replica's table: {t}"
        );
        tokio::time::sleep(POLL).await;
    }
    b.wait_status("the gateway reporting to the second replica", |s| {
        s.gateways.iter().any(|g| g.in_sync)
    })
    .await;
    // The second replica's table serves: its new endpoint gets traffic.
    while ups[2].requests() < 5 {
        assert!(Instant::now() < end, "the new endpoint got no traffic");
        tokio::time::sleep(POLL).await;
    }
    stop.store(true, Ordering::SeqCst);
    let l = load.await.expect("load");
    assert!(l.sent >= 50, "load too small: {l:?}");
    assert_eq!(
        l.errors, 0,
        "requests failed while the replica changed: {:?}",
        l.first_errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_roles_malformed_bodies_and_invalid_intents_are_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let ups = common::upstreams("sec", 2).await;
    std::fs::write(
        dir.path().join("intent.yaml"),
        intent(&[&ups[0]], &[&ups[1]]),
    )
    .expect("w");
    let control = Control::start(dir.path(), "127.0.0.1:0").await;
    let before = control
        .wait_status("tables", |s| s.regions.len() == 2)
        .await;
    let c = client();
    let base = control.url();

    // Wrong or missing token: 401 and nothing else, on every call.
    for (method, path) in [
        ("GET", "/v1/status"),
        ("GET", "/v1/tables/eu-west?since=0"),
        ("POST", "/v1/reports"),
        ("PUT", "/v1/intent"),
        ("GET", "/v1/nothing"),
    ] {
        for token in [None, Some("wrong-token-0123"), Some("")] {
            let mut req = c.request(method.parse().expect("m"), format!("{base}{path}"));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            let r = req.body("{}").send().await.expect("send");
            assert_eq!(r.status(), 401, "{method} {path} with {token:?}");
            assert!(r.bytes().await.expect("body").is_empty(), "401 with a body");
        }
    }
    // A known token used beyond its role: 403 naming the role needed, and nothing changes. The
    // gateways' token is a bare one, which is a gateway token.
    let good = intent(&[&ups[0]], &[&ups[1]]).replace("weight: 100", "weight: 50");
    for (method, path, token, body, needs) in [
        ("PUT", "/v1/intent", GW_TOKEN, good.clone(), "operator"),
        ("GET", "/v1/status", GW_TOKEN, String::new(), "operator"),
        (
            "POST",
            "/v1/reports",
            ALICE_TOKEN,
            "{\"wire\": 1, \"gateway\": \"alice-gw\", \"region\": \"eu-west\"}".to_string(),
            "gateway",
        ),
    ] {
        let r = c
            .request(method.parse().expect("m"), format!("{base}{path}"))
            .bearer_auth(token)
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 403, "{method} {path}");
        let e: meridian_api::wire::ErrorResponse = r.json().await.expect("error json");
        assert!(
            e.error.contains(&format!("the {needs} role")),
            "{method} {path}: {e:?}"
        );
    }
    let s = control.status().await;
    assert_eq!(s.intent.hash, before.intent.hash);
    assert_eq!(version_of(&s, "eu-west"), version_of(&before, "eu-west"));
    assert!(s.gateways.iter().all(|g| g.gateway != "alice-gw"));
    assert!(control
        .audit()
        .iter()
        .any(|e| e["kind"] == "push-forbidden" && e["identity"] == "gateways"));
    // Both still do what their role allows.
    for token in [GW_TOKEN, ALICE_TOKEN] {
        let r = c
            .get(format!("{base}/v1/tables/eu-west?since=0"))
            .bearer_auth(token)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
    }
    // `meridian push` and `meridian tables` with the gateways' token say why they are refused.
    let file = dir.path().join("good.yaml");
    std::fs::write(&file, &good).expect("w");
    let out = Command::new(meridian_bin())
        .args(["push", "--control", &base, "--token", GW_TOKEN])
        .arg(&file)
        .output()
        .expect("push");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("403 forbidden") && err.contains("role: operator"),
        "{err}"
    );
    let out = Command::new(meridian_bin())
        .args(["tables", "--control", &base, "--token", GW_TOKEN])
        .output()
        .expect("tables");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("403 forbidden") && err.contains("role: operator"),
        "{err}"
    );
    assert_eq!(control.status().await.intent.hash, before.intent.hash);

    // Malformed report JSON: 400.
    for body in ["{", "[]", "{\"gateway\": 5}", "not json"] {
        let r = c
            .post(format!("{base}/v1/reports"))
            .bearer_auth(GW_TOKEN)
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 400, "report {body}");
    }
    // An invalid push: refused with located errors; nothing changes.
    let bad = intent(&[&ups[0]], &[&ups[1]]).replace("failover: [us-east]", "failover: [mars]");
    let r = c
        .put(format!("{base}/v1/intent"))
        .bearer_auth(ALICE_TOKEN)
        .body(bad.clone())
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 422);
    let e: meridian_api::wire::ErrorResponse = r.json().await.expect("error json");
    assert!(
        e.errors
            .iter()
            .any(|f| f.path == "regions[0].failover[0]" && f.message.contains("mars")),
        "{e:?}"
    );
    // `meridian push` refuses it locally, with the path.
    let file = dir.path().join("bad.yaml");
    std::fs::write(&file, &bad).expect("w");
    let out = Command::new(meridian_bin())
        .args(["push", "--control", &base, "--token", ALICE_TOKEN])
        .arg(&file)
        .output()
        .expect("push");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("regions[0].failover[0]: unknown region 'mars'"),
        "{err}"
    );

    // An invalid edit of the watched file is refused and shown; the intent in force stays.
    write_atomic(&dir.path().join("intent.yaml"), &bad);
    let s = control
        .wait_status("the refused edit", |s| s.intent.last_error.is_some())
        .await;
    assert!(s
        .intent
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("mars")));
    assert_eq!(s.intent.hash, before.intent.hash);
    assert_eq!(version_of(&s, "eu-west"), version_of(&before, "eu-west"));
    assert!(control
        .audit()
        .iter()
        .any(|e| e["kind"] == "intent-refused"));
    // Still alive.
    assert_eq!(control.status().await.regions.len(), 2);
}

#[test]
fn the_example_control_configs_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/control");
    let out = Command::new(meridian_bin())
        .arg("validate")
        .arg(&dir)
        .output()
        .expect("meridian validate");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("(Control)") && text.contains("(Intent)"),
        "{text}"
    );
}
