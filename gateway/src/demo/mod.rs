//! `meridian demo`: two regional gateways (real Pingora services on loopback), a stable and a
//! canary version of one service in each region (testkit upstreams with log-normal latency), a
//! load generator with sticky users, and a live view. Halfway through, the canary's weight is
//! raised by rewriting the table file, which the gateways hot-swap. Everything comes from the
//! files under `configs/demo/`, embedded at build time.

pub mod load;
pub mod spec;
pub mod view;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use meridian_api::{Endpoint, Table};
use meridian_testkit::{start_blocking, Latency, UpstreamConfig};
use pingora::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch};

use crate::config::GatewayConfig;
use crate::server::{add_gateway, new_server, Bound};
use crate::state::Gateway;
use spec::DemoSpec;

/// The embedded demo files, by name.
pub const FILES: [(&str, &str); 4] = [
    ("demo.yaml", include_str!("../../../configs/demo/demo.yaml")),
    (
        "table.yaml",
        include_str!("../../../configs/demo/table.yaml"),
    ),
    (
        "eu-west.yaml",
        include_str!("../../../configs/demo/eu-west.yaml"),
    ),
    (
        "us-east.yaml",
        include_str!("../../../configs/demo/us-east.yaml"),
    ),
];

fn file(name: &str) -> anyhow::Result<&'static str> {
    FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| anyhow::anyhow!("demo file {name} is not embedded"))
}

/// Stops the Pingora server when notified.
struct Stop(Arc<tokio::sync::Notify>);

#[async_trait]
impl ShutdownSignalWatch for Stop {
    async fn recv(&self) -> ShutdownSignal {
        self.0.notified().await;
        ShutdownSignal::FastShutdown
    }
}

/// Runs the demo for `duration` seconds at `rate` requests per second.
pub fn run(duration: u64, rate: u32) -> anyhow::Result<()> {
    let spec = DemoSpec::parse(file("demo.yaml")?)
        .map_err(|e| anyhow::anyhow!("configs/demo/demo.yaml:\n{e}"))?;
    let dir = work_dir()?;

    // Upstreams first: their addresses go into the table.
    let mut cfgs = Vec::new();
    for g in &spec.upstreams {
        for i in 0..g.count {
            let latency = Latency::LogNormal {
                median: Duration::from_secs_f64(g.median_ms / 1000.0),
                sigma: g.sigma,
            };
            let name = format!("{}-{}-{}", g.subset.replace('@', "-"), g.region, i + 1);
            cfgs.push(UpstreamConfig::new(name).latency(latency));
        }
    }
    let (upstreams, _upstream_rt) = start_blocking(cfgs).context("starting demo upstreams")?;
    let mut table: Table = meridian_api::load::parse_table(file(&spec.table)?)
        .map_err(|e| anyhow::anyhow!("configs/demo/{}:\n{e}", spec.table))?;
    let mut next = upstreams.iter();
    for g in &spec.upstreams {
        let subset = table
            .subsets
            .iter_mut()
            .find(|s| s.name == g.subset)
            .ok_or_else(|| anyhow::anyhow!("demo upstream subset {} not in table", g.subset))?;
        for i in 0..g.count {
            let u = next
                .next()
                .ok_or_else(|| anyhow::anyhow!("upstream count mismatch"))?;
            subset.endpoints.push(Endpoint {
                address: u.addr().to_string(),
                region: g.region.clone(),
                zone: format!("{}{}", g.zone, ["a", "b"][i % 2]),
                weight: 1,
                healthy: true,
                tls: false,
                sni: None,
            });
        }
    }
    let table_path = dir.join(&spec.table);
    write_table(&table_path, &table)?;

    // Gateways: one Pingora server, a proxy and an admin service per region.
    let mut server = new_server(Duration::from_secs(0))?;
    let mut gateways = Vec::new();
    for name in &spec.gateways {
        let cfg = GatewayConfig::parse(file(name)?, &dir)
            .map_err(|e| anyhow::anyhow!("configs/demo/{name}:\n{e}"))?;
        let gw = Gateway::new(cfg)?;
        let mut last = None;
        crate::sync::poll_once(&gw, &mut last);
        let bound = add_gateway(&mut server, &gw)?;
        crate::sync::watch_file_from(gw.clone(), last)?;
        gateways.push((gw, bound));
    }
    let stop = Arc::new(tokio::sync::Notify::new());
    let stop_rx = stop.clone();
    let server_thread = std::thread::Builder::new()
        .name("pingora".into())
        .spawn(move || {
            server.run(RunArgs {
                shutdown_signal: Box::new(Stop(stop_rx)),
            })
        })?;
    let bounds: Vec<Bound> = gateways.iter().map(|(_, b)| b.clone()).collect();
    wait_listening(&bounds)?;
    view::banner(&bounds, &dir, duration, rate);

    let subsets: Vec<String> = table.subsets.iter().map(|s| s.name.clone()).collect();
    let regions: Vec<String> = bounds.iter().map(|b| b.region.clone()).collect();
    let load = load::Load::start(&spec.load, &bounds, &subsets, rate)?;
    let started = Instant::now();
    let total = Duration::from_secs(duration.max(2));
    let mut stepped = false;
    let mut second = 1;
    while started.elapsed() < total {
        let tick = started + Duration::from_secs(second);
        std::thread::sleep(tick.saturating_duration_since(Instant::now()));
        second += 1;
        if !stepped && started.elapsed() >= total / 2 {
            if let Some(step) = &spec.canary_step {
                set_canary(&mut table, step)?;
                write_table(&table_path, &table)?;
                load.mark_phase();
                stepped = true;
            }
        }
        let window = load.take_window();
        let versions: Vec<u64> = gateways
            .iter()
            .map(|(g, _)| g.snapshot.load().as_ref().map_or(0, |s| s.version))
            .collect();
        view::live(started.elapsed(), &window, &subsets, &regions, &versions);
    }
    let totals = load.stop();
    stop.notify_one();
    let _ = server_thread.join();
    view::summary(&totals, &subsets, &regions, &dir);
    if totals.ok == 0 {
        anyhow::bail!("no request succeeded");
    }
    Ok(())
}

/// A fresh folder for the rendered table and the access logs.
fn work_dir() -> anyhow::Result<PathBuf> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let dir = std::env::temp_dir().join(format!("meridian-demo-{}-{stamp}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// Writes a table atomically (temporary file, then rename) so a gateway never reads half of it.
fn write_table(path: &Path, table: &Table) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_yaml::to_string(table)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn set_canary(table: &mut Table, step: &spec::CanaryStep) -> anyhow::Result<()> {
    let route = table
        .routes
        .iter_mut()
        .find(|r| r.name == step.route)
        .ok_or_else(|| anyhow::anyhow!("canary_step.route {} not in table", step.route))?;
    for s in route.split.iter_mut() {
        s.weight = if s.subset == step.canary {
            step.weight
        } else {
            100 - step.weight
        };
    }
    table.version += 1;
    Ok(())
}

fn wait_listening(bounds: &[Bound]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    for b in bounds {
        for addr in b.listeners.iter().chain([&b.admin]) {
            while std::net::TcpStream::connect(addr).is_err() {
                if Instant::now() > deadline {
                    anyhow::bail!("gateway {} did not start listening on {addr}", b.region);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    Ok(())
}
