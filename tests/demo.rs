//! End-to-end: `meridian demo` runs its two regional gateways, upstreams and load, shows the
//! live view, takes its canary step and exits 0 with a summary that adds up.

use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn the_demo_runs_shows_its_split_and_exits_cleanly() {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .args(["demo", "--duration", "6", "--rate", "200"])
        .output()
        .expect("run meridian demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stdout}\n{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "the demo overran"
    );
    // The live view: one block a second, with both gateways and both subsets.
    let blocks = stdout.matches("req/s  errors").count();
    assert!(
        blocks >= 5,
        "expected a live view each second, got {blocks}:\n{stdout}"
    );
    for needle in ["eu-west", "us-east", "vitals@v1", "vitals@v2", "p95"] {
        assert!(stdout.contains(needle), "missing {needle}:\n{stdout}");
    }
    // The summary: no errors, the split moved from ~10 % to ~30 % canary, no user moved back.
    let summary = stdout.split("summary").nth(1).expect("a summary");
    assert!(
        summary.contains(" errors 0"),
        "errors in the demo:\n{summary}"
    );
    let canary = |phase: &str| -> f64 {
        let line = summary
            .lines()
            .find(|l| l.contains(phase))
            .unwrap_or_else(|| panic!("no '{phase}' line:\n{summary}"));
        let after = line.split("vitals@v2").nth(1).expect("canary share");
        after
            .trim()
            .trim_start_matches(' ')
            .split('%')
            .next()
            .expect("pct")
            .trim()
            .parse()
            .expect("number")
    };
    let before = canary("before canary step");
    let after = canary("after canary step");
    assert!(
        (before - 10.0).abs() < 5.0,
        "canary share before the step: {before}"
    );
    assert!(
        (after - 30.0).abs() < 7.0,
        "canary share after the step: {after}"
    );
    assert!(
        summary.contains("0 moved back"),
        "a sticky user moved back:\n{summary}"
    );
}
