//! End-to-end: the `meridian` binary refuses bad configuration with located errors and a
//! non-zero exit, never a panic, and `meridian validate` tells good files from bad ones.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs `meridian <args>` and waits at most 20 s for it to exit.
fn run(args: &[&std::ffi::OsStr]) -> Output {
    let mut child = Command::new(meridian_bin())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn meridian");
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait().expect("try_wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > end {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "meridian {args:?} did not exit within 20 s:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn gateway_with_a_bad_config_exits_non_zero_with_located_errors() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cfg = dir.path().join("bad.yaml");
    std::fs::write(
        &cfg,
        "region: ''\n\
         listeners:\n  - address: 'not-an-address'\n\
         admin: '127.0.0.1:0'\n\
         table: {file: table.yaml, poll_ms: 0}\n\
         workers: 0\n",
    )
    .expect("write");
    let out = run(&["gateway".as_ref(), "--config".as_ref(), cfg.as_os_str()]);
    let all = text(&out);
    assert!(!out.status.success(), "exit {:?}: {all}", out.status);
    assert!(!all.contains("panicked"), "{all}");
    for want in [
        "listeners[0].address: 'not-an-address' is not an ip:port address",
        "region: must not be empty",
        "table.poll_ms: must be between 1 and 60000",
        "workers: must be between 1 and 256",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }

    // Unknown keys and missing files are errors too, not panics.
    std::fs::write(
        &cfg,
        "region: eu\nlisteners: [{address: '127.0.0.1:0'}]\nadmin: '127.0.0.1:0'\ntable: {file: t.yaml}\nworkrs: 2\n",
    )
    .expect("write");
    let out = run(&["gateway".as_ref(), "--config".as_ref(), cfg.as_os_str()]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("workrs"), "{all}");
    assert!(!all.contains("panicked"), "{all}");

    let missing = dir.path().join("missing.yaml");
    let out = run(&["gateway".as_ref(), "--config".as_ref(), missing.as_os_str()]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("missing.yaml"), "{all}");
    assert!(!all.contains("panicked"), "{all}");

    // A TLS listener whose certificate files do not exist.
    std::fs::write(
        &cfg,
        "region: eu\n\
         listeners:\n  - address: '127.0.0.1:0'\n    tls: {certificates: [{hosts: [a.test], cert: nope.pem, key: nope.key}]}\n\
         admin: '127.0.0.1:0'\ntable: {file: t.yaml}\n",
    )
    .expect("write");
    let out = run(&["gateway".as_ref(), "--config".as_ref(), cfg.as_os_str()]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("listeners[0].tls.certificates[0]"), "{all}");
    assert!(!all.contains("panicked"), "{all}");
}

#[test]
fn validate_reports_located_table_errors_and_passes_good_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Only validated, never dialled or bound: any non-zero port will do.
    let good_addr: std::net::SocketAddr = ([127, 0, 0, 1], 801).into();
    let good = table(
        3,
        vec![route(
            "vitals",
            Some("/vitals"),
            &[("vitals@v1", 90), ("vitals@v2", 10)],
        )],
        vec![
            subset_addrs("vitals@v1", &[good_addr]),
            subset_addrs("vitals@v2", &[([127, 0, 0, 1], 802).into()]),
        ],
    );
    let good_path = dir.path().join("good.yaml");
    write_table_at(&good_path, &good);
    let mut broken = good.clone();
    broken.routes[0].split[1].weight = -10;
    let bad_path = dir.path().join("broken.yaml");
    write_table_at(&bad_path, &broken);
    let cfg_path = dir.path().join("gateway.yaml");
    std::fs::write(&cfg_path, config_yaml("")).expect("write");

    let out = run(&["validate".as_ref(), bad_path.as_os_str()]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("routes[0].split[1].weight: must be >= 0"),
        "{all}"
    );
    assert!(all.contains("broken.yaml"), "{all}");
    assert!(!all.contains("panicked"), "{all}");

    let out = run(&["validate".as_ref(), good_path.as_os_str()]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("ok") && all.contains("good.yaml"), "{all}");

    // A gateway config is recognised and validated as one.
    let out = run(&["validate".as_ref(), cfg_path.as_os_str()]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(all.contains("Gateway"), "{all}");

    // A folder: every file is checked, one bad file fails the run, the good ones are listed ok.
    let out = run(&["validate".as_ref(), dir.path().as_os_str()]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("routes[0].split[1].weight: must be >= 0"),
        "{all}"
    );
    assert!(all.contains("good.yaml"), "{all}");

    // Syntax errors are located by field or line, not a panic.
    let syntax = dir.path().join("syntax.yaml");
    std::fs::write(&syntax, "version: 1\nroutes:\n  - name: a\n    split:\n      - {subset: s@v1, weight: lots}\nsubsets: []\n").expect("write");
    let out = run(&["validate".as_ref(), syntax.as_os_str()]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(all.contains("routes[0].split[0].weight"), "{all}");
    assert!(!all.contains("panicked"), "{all}");
}

#[test]
fn gateway_on_a_port_in_use_exits_non_zero_instead_of_waiting_for_it() {
    // Another process holds the port (bound here, on port 0, so the test owns it).
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let busy = holder.local_addr().expect("addr");
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("table.yaml"), "version: 1\n").expect("table");
    let cfg = dir.path().join("gateway.yaml");
    std::fs::write(
        &cfg,
        format!(
            "region: eu-west\n\
             listeners:\n  - address: '{busy}'\n\
             admin: '127.0.0.1:0'\n\
             table: {{file: table.yaml}}\n"
        ),
    )
    .expect("write");
    let ports = dir.path().join("ports.json");
    let out = run(&[
        "gateway".as_ref(),
        "--config".as_ref(),
        cfg.as_os_str(),
        "--ports-file".as_ref(),
        ports.as_os_str(),
    ]);
    let all = text(&out);
    assert!(!out.status.success(), "exit {:?}: {all}", out.status);
    assert!(all.contains(&busy.to_string()), "names the address: {all}");
    assert!(all.to_lowercase().contains("in use"), "says why: {all}");
    assert!(!ports.exists(), "no ports file for ports it does not hold");
    drop(holder);
}

#[test]
fn validate_on_a_folder_with_nothing_to_check_fails() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("notes.txt"), "not a config").expect("write");
    let out = run(&["validate".as_ref(), dir.path().as_os_str()]);
    let all = text(&out);
    assert!(!out.status.success(), "exit {:?}: {all}", out.status);
    assert!(all.contains("no .yaml"), "{all}");
}

/// An intent split across a folder, as the control plane reads one: regions in one file,
/// services in another, and a file with nothing but routes.
fn write_split_intent(dir: &std::path::Path, route_subset: &str) {
    std::fs::write(
        dir.join("a-regions.yaml"),
        "regions:\n  - { name: eu-west, failover: [us-east] }\n  - { name: us-east }\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("b-services.yaml"),
        "services:\n  - name: vitals\n    versions:\n      - name: v1\n        endpoints:\n\
         \x20         eu-west: [\"127.0.0.1:801\"]\n          us-east: [\"127.0.0.1:802\"]\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("c-routes.yaml"),
        format!(
            "routes:\n  - name: vitals\n    match: {{ path: {{ prefix: /vitals }} }}\n\
             \x20   split: [{{ subset: {route_subset}, weight: 100 }}]\n"
        ),
    )
    .expect("write");
}

#[test]
fn validate_checks_a_folder_of_intent_files_as_one_merged_intent() {
    let dir = tempfile::tempdir().expect("temp dir");
    let intent = dir.path().join("intent");
    std::fs::create_dir(&intent).expect("mkdir");
    write_split_intent(&intent, "vitals@v1");

    // Each file alone is not a valid document (the routes name a subset only the services file
    // declares); merged, they are one valid intent.
    let routes = intent.join("c-routes.yaml");
    let out = run(&["validate".as_ref(), routes.as_os_str()]);
    assert!(!out.status.success(), "alone: {}", text(&out));

    let out = run(&["validate".as_ref(), intent.as_os_str()]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("(Intent, merged from a-regions.yaml, b-services.yaml, c-routes.yaml)"),
        "{all}"
    );
    assert!(
        !all.contains("Table"),
        "a part taken for a routing table: {all}"
    );
    assert!(!all.contains("invalid"), "{all}");

    // The folder given as a parent's sub-folder is found and merged too, next to other files.
    std::fs::write(dir.path().join("gateway.yaml"), config_yaml("")).expect("write");
    let out = run(&["validate".as_ref(), dir.path().as_os_str()]);
    let all = text(&out);
    assert!(out.status.success(), "{all}");
    assert!(
        all.contains("(Gateway)") && all.contains("(Intent, merged"),
        "{all}"
    );

    // A merged intent's error names the file it is in and the path inside that file.
    write_split_intent(&intent, "nope@v1");
    let out = run(&["validate".as_ref(), intent.as_os_str()]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    let want = format!(
        "{}: routes[0].split[0].subset: unknown subset 'nope@v1'",
        intent.join("c-routes.yaml").display()
    );
    assert!(all.contains(&want), "missing {want:?} in:\n{all}");

    // A misspelt key in one part is reported as such, in its file, not as another kind of file.
    write_split_intent(&intent, "vitals@v1");
    std::fs::write(intent.join("d-more.yaml"), "servces: []\n").expect("write");
    let out = run(&["validate".as_ref(), intent.as_os_str()]);
    let all = text(&out);
    assert!(!out.status.success(), "{all}");
    assert!(
        all.contains("d-more.yaml") && all.contains("servces"),
        "{all}"
    );
    assert!(!all.contains("panicked"), "{all}");

    // The control plane reads the same folder the same way: valid once the bad part is gone.
    std::fs::remove_file(intent.join("d-more.yaml")).expect("rm");
    let (merged, raw) =
        meridian_api::intent::read_intent(&intent).expect("the control plane's read");
    assert_eq!(raw.len(), 3);
    assert_eq!(
        (
            merged.regions.len(),
            merged.services.len(),
            merged.routes.len()
        ),
        (2, 1, 1)
    );
}
