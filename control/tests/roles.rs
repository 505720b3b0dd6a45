//! Token roles over HTTP: a real control plane on `127.0.0.1:0` (in this process) with a bare
//! token (a gateway's, the form from before roles), an explicit gateway token and an operator
//! token. Each call is made with each kind of token: a known token used beyond its role gets a
//! 403 naming the role needed and changes nothing; an unknown or missing token gets a bare 401.

use std::time::{Duration, Instant};

use meridian_api::wire::{ErrorResponse, PushResponse, Status, TableResponse};
use meridian_testkit::MockUpstream;

mod common;
use serde_json::json;

/// A bare token: role `gateway`.
const BARE: &str = "bare-token-0123";
/// An explicit `role: gateway` token.
const GATEWAY: &str = "gw-token-0123";
/// A `role: operator` token.
const OPERATOR: &str = "op-token-0123";
const DEADLINE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(20);

struct World {
    control: meridian_control::Running,
    ups: Vec<MockUpstream>,
    dir: tempfile::TempDir,
    base: String,
    http: reqwest::Client,
}

/// The intent: regions `a` and `b`, one endpoint each, with `weight` on the route's split.
fn intent(ups: &[MockUpstream], weight: u32) -> String {
    format!(
        "regions:\n  - {{ name: a, failover: [b] }}\n  - {{ name: b, failover: [a] }}\n\
         services:\n  - name: s\n    health_check: {{ path: /healthz, interval_ms: 200, timeout_ms: 150 }}\n\
         \x20   versions:\n      - name: v1\n        endpoints:\n\
         \x20         a: [\"{}\"]\n          b: [\"{}\"]\n\
         routes:\n  - {{ name: r, split: [{{ subset: s@v1, weight: {weight} }}] }}\n",
        ups[0].addr(),
        ups[1].addr(),
    )
}

async fn world() -> World {
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
            "tokens:\n  legacy: {BARE}\n  \
             fleet: {{ token: {GATEWAY}, role: gateway }}\n  \
             alice: {{ token: {OPERATOR}, role: operator }}\n\
             health: {{ warmup_ms: 2000 }}\n"
        ),
        Duration::from_secs(10),
    )
    .await;
    let w = World {
        control,
        ups,
        dir,
        base,
        http,
    };
    let end = Instant::now() + DEADLINE;
    while w.status().await.regions.len() != 2 {
        assert!(Instant::now() < end, "no tables published");
        tokio::time::sleep(POLL).await;
    }
    w
}

impl World {
    /// `GET /v1/status` with the operator token.
    async fn status(&self) -> Status {
        let r = self
            .http
            .get(format!("{}/v1/status", self.base))
            .bearer_auth(OPERATOR)
            .send()
            .await
            .expect("status");
        assert_eq!(r.status(), 200, "status with the operator token");
        r.json().await.expect("status json")
    }

    /// Makes a call; returns the status code and the body.
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: String,
    ) -> (u16, Vec<u8>) {
        let mut req = self.http.request(
            method.parse().expect("method"),
            format!("{}{path}", self.base),
        );
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.body(body).send().await.expect("send");
        let code = r.status().as_u16();
        (code, r.bytes().await.expect("body").to_vec())
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(self.dir.path().join("state/audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line"))
            .collect()
    }
}

fn report(gateway: &str) -> String {
    json!({ "wire": 1, "gateway": gateway, "region": "a" }).to_string()
}

/// Asserts a 403 whose JSON error names the role needed.
fn assert_forbidden(what: &str, (code, body): (u16, Vec<u8>), needs: &str) {
    assert_eq!(code, 403, "{what}: {}", String::from_utf8_lossy(&body));
    let e: ErrorResponse = serde_json::from_slice(&body).expect("403 body is an ErrorResponse");
    assert!(
        e.error
            .contains(&format!("needs a token with the {needs} role")),
        "{what}: {}",
        e.error
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_tokens_cannot_push_and_change_nothing() {
    let w = world().await;
    let before = w.status().await;
    let changed = intent(&w.ups, 7);
    for token in [BARE, GATEWAY] {
        assert_forbidden(
            token,
            w.call("PUT", "/v1/intent", Some(token), changed.clone())
                .await,
            "operator",
        );
        // Status is the operator's too.
        assert_forbidden(
            token,
            w.call("GET", "/v1/status", Some(token), String::new())
                .await,
            "operator",
        );
    }
    // Nothing changed: same intent, same source, same versions. A push is applied before its
    // answer, so the status right after the refusals would show one.
    let after = w.status().await;
    assert_eq!(after.intent.hash, before.intent.hash);
    assert_eq!(after.intent.source, before.intent.source);
    assert!(
        after.intent.source.starts_with("file "),
        "{}",
        after.intent.source
    );
    let versions = |s: &Status| {
        s.regions
            .iter()
            .map(|r| (r.region.clone(), r.version))
            .collect::<Vec<_>>()
    };
    assert_eq!(versions(&after), versions(&before));
    assert!(w.audit().iter().all(|e| e["kind"] != "push"));
    // Refusals are counted, and a refused push is audited with who tried.
    assert_eq!(w.control.hub.forbidden(), 4);
    let refused: Vec<_> = w
        .audit()
        .into_iter()
        .filter(|e| e["kind"] == "push-forbidden")
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused
        .iter()
        .any(|e| e["identity"] == "fleet" && e["role"] == "gateway" && e["needs"] == "operator"));

    // What gateways are for still works, with both forms of gateway token.
    for token in [BARE, GATEWAY] {
        let (code, body) = w
            .call("GET", "/v1/tables/a?since=0", Some(token), String::new())
            .await;
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
        let t: TableResponse = serde_json::from_slice(&body).expect("table");
        assert_eq!(t.table.version, versions(&before)[0].1);
        let (code, _) = w
            .call("POST", "/v1/reports", Some(token), report(token))
            .await;
        assert_eq!(code, 204, "report with {token}");
    }
    let s = w.status().await;
    assert_eq!(s.gateways.len(), 2, "{:?}", s.gateways);

    // The operator's push goes through, and the status says who pushed.
    let (code, body) = w.call("PUT", "/v1/intent", Some(OPERATOR), changed).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let pushed: PushResponse = serde_json::from_slice(&body).expect("push response");
    assert!(pushed.changed);
    let s = w.status().await;
    assert_eq!(s.intent.source, "push by alice");
    assert_eq!(s.intent.hash, pushed.intent_hash);
    assert!(versions(&s)
        .iter()
        .all(|(r, v)| pushed.versions.get(r) == Some(v) && *v > 0));
    assert_ne!(versions(&s), versions(&before));
    assert!(w
        .audit()
        .iter()
        .any(|e| e["kind"] == "push" && e["identity"] == "alice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_tokens_read_tables_but_do_not_report() {
    let w = world().await;
    // Reports feed failover ordering and the gateways' sync state: only gateways send them.
    assert_forbidden(
        "operator report",
        w.call("POST", "/v1/reports", Some(OPERATOR), report("op-gw"))
            .await,
        "gateway",
    );
    let s = w.status().await;
    assert!(
        s.gateways.iter().all(|g| g.gateway != "op-gw"),
        "a refused report was taken: {:?}",
        s.gateways
    );
    assert_eq!(w.control.hub.forbidden(), 1);
    // Reading tables is allowed, for debugging.
    let (code, body) = w
        .call("GET", "/v1/tables/b?since=0", Some(OPERATOR), String::new())
        .await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let t: TableResponse = serde_json::from_slice(&body).expect("table");
    assert!(t.table.regions.iter().any(|r| r.name == "b"));
    // A 404 or 405 is the same for every known token (no role says more than that).
    for token in [OPERATOR, GATEWAY] {
        let (code, _) = w
            .call("GET", "/v1/nothing", Some(token), String::new())
            .await;
        assert_eq!(code, 404);
        let (code, _) = w
            .call("DELETE", "/v1/intent", Some(token), String::new())
            .await;
        assert_eq!(code, 405);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_or_missing_tokens_get_a_bare_401_everywhere() {
    let w = world().await;
    let before = w.status().await;
    let changed = intent(&w.ups, 9);
    for (method, path, body) in [
        ("GET", "/v1/status", String::new()),
        ("GET", "/v1/tables/a?since=0", String::new()),
        ("POST", "/v1/reports", report("intruder")),
        ("PUT", "/v1/intent", changed.clone()),
        ("GET", "/v1/nothing", String::new()),
    ] {
        // Near misses of real tokens are as unknown as anything else.
        for token in [
            None,
            Some("wrong-token-0123"),
            Some("op-token-012"),
            Some(""),
        ] {
            let (code, got) = w.call(method, path, token, body.clone()).await;
            assert_eq!(code, 401, "{method} {path} with {token:?}");
            assert!(got.is_empty(), "401 with a body");
        }
    }
    let after = w.status().await;
    assert_eq!(after.intent.hash, before.intent.hash);
    assert!(after.gateways.is_empty(), "{:?}", after.gateways);
    // 401s are not role refusals.
    assert_eq!(w.control.hub.forbidden(), 0);
}

#[test]
fn a_config_with_an_unknown_role_is_refused_with_its_path() {
    let err = meridian_control::ControlConfig::parse(
        "listen: '127.0.0.1:0'\nintent: i.yaml\nstate_dir: s\ntokens:\n  \
         gw: gw-token-0123\n  root: { token: root-token-0123, role: admin }\n",
        std::path::Path::new("."),
    )
    .expect_err("an unknown role is refused")
    .to_string();
    assert!(
        err.contains("tokens.root.role: unknown role 'admin'"),
        "{err}"
    );
}
