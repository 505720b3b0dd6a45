//! The demo's live view and summary. On a terminal the view redraws in place; otherwise each
//! second is printed as a block, so the output also reads well in a log.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::Duration;

use super::load::{quantile, Sample, Totals};
use crate::server::Bound;

fn ms(us: Option<u32>) -> String {
    us.map(|u| format!("{:.1}ms", f64::from(u) / 1000.0))
        .unwrap_or_else(|| "-".into())
}

/// Prints where everything listens.
pub fn banner(bounds: &[Bound], dir: &Path, duration: u64, rate: u32) {
    println!("meridian demo: {duration}s at {rate} req/s, canary weight raised halfway");
    for b in bounds {
        println!(
            "  gateway {:<8} http://{}  admin http://{}/metrics",
            b.region, b.listeners[0], b.admin
        );
    }
    println!("  table and access logs in {}", dir.display());
    println!();
}

/// Prints one second of traffic.
pub fn live(
    elapsed: Duration,
    window: &[Sample],
    subsets: &[String],
    regions: &[String],
    versions: &[u64],
) {
    let mut out = String::new();
    let tty = std::io::stdout().is_terminal();
    if tty {
        out.push_str("\x1b[2J\x1b[H");
    }
    let errors = window.iter().filter(|s| !s.ok).count();
    let versions: Vec<String> = regions
        .iter()
        .zip(versions)
        .map(|(r, v)| format!("{r}=v{v}"))
        .collect();
    out += &format!(
        "t={:>3}s  {:>5} req/s  errors {errors}  tables {}\n",
        elapsed.as_secs(),
        window.len(),
        versions.join(" ")
    );
    out += &format!(
        "  {:<9} {:<11} {:>6}  {:<22} {:>8} {:>8} {:>8}\n",
        "gateway", "subset", "share", "served in", "p50", "p95", "p99"
    );
    for (gi, g) in regions.iter().enumerate() {
        let mine: Vec<&Sample> = window.iter().filter(|s| s.gateway == gi).collect();
        for (si, sub) in subsets.iter().enumerate() {
            let hits: Vec<&&Sample> = mine.iter().filter(|s| s.subset == Some(si)).collect();
            let share = if mine.is_empty() {
                0.0
            } else {
                hits.len() as f64 * 100.0 / mine.len() as f64
            };
            let served: Vec<String> = regions
                .iter()
                .enumerate()
                .filter_map(|(ri, r)| {
                    let n = hits.iter().filter(|s| s.region == Some(ri)).count();
                    (n > 0).then(|| format!("{r} {:.0}%", n as f64 * 100.0 / hits.len() as f64))
                })
                .collect();
            let mut lat: Vec<u32> = hits
                .iter()
                .map(|s| s.latency.as_micros().min(u128::from(u32::MAX)) as u32)
                .collect();
            lat.sort_unstable();
            out += &format!(
                "  {:<9} {:<11} {:>5.1}%  {:<22} {:>8} {:>8} {:>8}\n",
                g,
                sub,
                share,
                served.join(", "),
                ms(quantile(&lat, 0.5)),
                ms(quantile(&lat, 0.95)),
                ms(quantile(&lat, 0.99)),
            );
        }
    }
    if !tty {
        out.push('\n');
    }
    let mut stdout = std::io::stdout().lock();
    let _ = stdout.write_all(out.as_bytes());
    let _ = stdout.flush();
}

/// Prints the end-of-run summary.
pub fn summary(t: &Totals, subsets: &[String], regions: &[String], dir: &Path) {
    println!("summary");
    println!(
        "  requests {}  ok {}  errors {}",
        t.ok + t.errors,
        t.ok,
        t.errors
    );
    for (phase, name) in ["before canary step", "after canary step"]
        .iter()
        .enumerate()
    {
        let n: u64 = t.by_phase[phase].iter().sum();
        let shares: Vec<String> = subsets
            .iter()
            .zip(&t.by_phase[phase])
            .map(|(s, c)| {
                let pct = if n == 0 {
                    0.0
                } else {
                    *c as f64 * 100.0 / n as f64
                };
                format!("{s} {pct:.1}%")
            })
            .collect();
        println!("  split {name:<19} {}  ({n} requests)", shares.join("  "));
    }
    for (si, s) in subsets.iter().enumerate() {
        let mut lat = t.latency_us[si].clone();
        lat.sort_unstable();
        println!(
            "  latency {s:<11} p50 {:>8}  p95 {:>8}  p99 {:>8}",
            ms(quantile(&lat, 0.5)),
            ms(quantile(&lat, 0.95)),
            ms(quantile(&lat, 0.99))
        );
    }
    for (gi, g) in regions.iter().enumerate() {
        let n: u64 = t.by_region[gi].iter().sum();
        let local = t.by_region[gi].get(gi).copied().unwrap_or(0);
        let pct = if n == 0 {
            0.0
        } else {
            local as f64 * 100.0 / n as f64
        };
        println!("  gateway {g:<8} served locally {pct:.1}% of {n}");
    }
    println!(
        "  sticky users {}: {} moved stable -> canary at the step, {} moved back (must be 0)",
        t.users, t.moved_forward, t.moved_back
    );
    println!("  access logs and table: {}", dir.display());
}
