//! What the control plane's HTTP tests share: mock upstreams, an in-process control plane on
//! `127.0.0.1:0`, and an HTTP client for it.

use std::path::Path;
use std::time::Duration;

use meridian_testkit::{MockUpstream, UpstreamConfig};

/// One mock upstream per name, named `up-{name}`.
pub async fn upstreams(names: &[&str]) -> Vec<MockUpstream> {
    let mut ups = Vec::new();
    for r in names {
        ups.push(
            MockUpstream::start(UpstreamConfig::new(format!("up-{r}")))
                .await
                .expect("upstream"),
        );
    }
    ups
}

/// A control plane running in this process, its base URL and a client for it.
pub struct Started {
    pub control: meridian_control::Running,
    pub base: String,
    pub http: reqwest::Client,
}

/// Writes `intent` to `dir/intent.yaml` and starts a control plane there, listening on
/// `127.0.0.1:0` with `more` (YAML lines: tokens, health, ...) added to its config. The client
/// gives up on a call after `timeout`.
pub async fn start_control(dir: &Path, intent: &str, more: &str, timeout: Duration) -> Started {
    std::fs::write(dir.join("intent.yaml"), intent).expect("intent");
    let cfg = meridian_control::ControlConfig::parse(
        &format!("listen: '127.0.0.1:0'\nintent: intent.yaml\nstate_dir: state\n{more}"),
        dir,
    )
    .expect("config");
    let control = meridian_control::start(cfg).await.expect("control plane");
    let base = format!("http://{}", control.addr);
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(timeout)
        .build()
        .expect("client");
    Started {
        control,
        base,
        http,
    }
}
