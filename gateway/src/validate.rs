//! `meridian validate`: checks gateway configs, routing tables, demo specs, control-plane configs
//! and intents, telling them apart by their top-level keys, and reports every error with its
//! file and field path.
//!
//! A folder whose files are the parts of one intent (see [`is_intent_folder`]) is checked as the
//! control plane reads it: merged, by [`meridian_api::intent::read_intent`], so a file holding
//! only `routes:` is a part of the intent rather than a routing table missing its subsets.

use std::path::{Path, PathBuf};

use meridian_api::Errors;

use crate::config::GatewayConfig;

/// What kind of document a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A gateway bootstrap config (has `listeners`).
    Gateway,
    /// A demo spec (has `upstreams`).
    Demo,
    /// A control-plane config (has `tokens`).
    Control,
    /// An operator's intent (has `services`).
    Intent,
    /// A routing table (anything else).
    Table,
}

/// Top-level keys that only one kind of file has, to tell them apart.
const KEYS: [(Kind, &[&str]); 5] = [
    (
        Kind::Gateway,
        &[
            "listeners",
            "admin",
            "region",
            "workers",
            "upstream_keepalive_pool",
            "upstream_idle_timeout_ms",
            "client_idle_timeout_ms",
            "access_log",
            "debug_headers",
            "timeouts",
        ],
    ),
    (
        Kind::Demo,
        &["upstreams", "gateways", "load", "canary_step"],
    ),
    (
        Kind::Control,
        &[
            "tokens",
            "listen",
            "intent",
            "state_dir",
            "audit_log",
            "health",
            "rtt",
            "dns",
            "intent_poll_ms",
            "long_poll_max_ms",
        ],
    ),
    (Kind::Intent, &["services"]),
    (Kind::Table, &["version", "subsets"]),
];

/// What kind of file `text` is: the kind with the most of its own top-level keys, so that one
/// misspelt key (`listners:`) does not turn a gateway config into a routing table and give a
/// misleading error. Ties go to the kind listed first in [`KEYS`]; a file with none of them is
/// taken as a routing table.
pub fn kind_of(text: &str) -> Kind {
    kind_and_keys(text).0
}

/// [`kind_of`], and how many of that kind's own keys the text has (0: none of any kind's).
fn kind_and_keys(text: &str) -> (Kind, usize) {
    let parsed: Option<serde_yaml::Value> = serde_yaml::from_str(text).ok();
    // Text that is not valid YAML still says what it is meant to be by its top-level keys
    // (`key:` at the start of a line), so that its own parser reports the syntax error
    // rather than another kind's parser reporting unknown fields.
    let top: Vec<&str> = match parsed {
        Some(_) => Vec::new(),
        None => text
            .lines()
            .filter(|l| l.starts_with(|c: char| c.is_ascii_lowercase()))
            .filter_map(|l| l.split_once(':').map(|(k, _)| k.trim_end()))
            .collect(),
    };
    let has = |k: &str| match &parsed {
        Some(v) => v.get(k).is_some(),
        None => top.contains(&k),
    };
    let mut best = (Kind::Table, 0);
    for (kind, keys) in KEYS {
        let n = keys.iter().filter(|k| has(k)).count();
        if n > best.1 {
            best = (kind, n);
        }
    }
    best
}

/// True when `files` (a folder's files, as [`meridian_api::intent::intent_files`] lists them)
/// are the parts of one intent, to be merged as the control plane merges them: at least two
/// files, at least one of them an intent (it has `services`), and none with a key that only
/// another kind of file has. A part may hold nothing but `routes` or `regions`, keys an intent
/// shares with a routing table; a part with `version` or `subsets` is a routing table, and then
/// the folder is not an intent and each file is checked alone. A file that cannot be read is
/// left to the merged read, which reports it.
pub fn is_intent_folder(files: &[std::path::PathBuf]) -> bool {
    let kinds: Vec<(Kind, usize)> = files
        .iter()
        .map(|f| {
            std::fs::read_to_string(f)
                .map(|t| kind_and_keys(&t))
                .unwrap_or((Kind::Table, 0))
        })
        .collect();
    kinds.len() >= 2
        && kinds.iter().any(|(k, _)| *k == Kind::Intent)
        && kinds.iter().all(|(k, n)| *k == Kind::Intent || *n == 0)
}

/// Validates one file; `Ok(kind)` when valid.
pub fn validate_file(path: &Path) -> Result<Kind, Errors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let mut errs = Errors::default();
        errs.push("", format!("cannot read: {e}"));
        errs
    })?;
    let kind = kind_of(&text);
    match kind {
        Kind::Gateway => {
            GatewayConfig::parse(&text, path.parent().unwrap_or(Path::new(".")))?;
        }
        Kind::Demo => {
            crate::demo::spec::DemoSpec::parse(&text)?;
        }
        Kind::Control => {
            meridian_control::ControlConfig::parse(&text, path.parent().unwrap_or(Path::new(".")))?;
        }
        Kind::Intent => {
            meridian_api::intent::parse_intent(&text)?;
        }
        Kind::Table => {
            meridian_api::load::parse_table(&text)?;
        }
    }
    Ok(kind)
}

/// One thing `meridian validate` checks.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    /// A file on its own.
    File(PathBuf),
    /// A folder of intent files, merged (see [`is_intent_folder`]).
    IntentFolder(PathBuf, Vec<PathBuf>),
}

/// Runs `meridian validate` over `paths` (folders are walked for `.yaml`, `.yml` and `.json`).
/// Prints one line per file, or per folder of intent files, and every error; returns whether all
/// were valid.
pub fn run(paths: &[PathBuf]) -> bool {
    let mut items = Vec::new();
    let mut ok = true;
    for p in paths {
        let before = items.len();
        collect(p, &mut items);
        if items.len() == before {
            // An empty folder, or one with no .yaml/.yml/.json: checking nothing is not a pass.
            println!(
                "invalid {}: no .yaml, .yml or .json files in it",
                p.display()
            );
            ok = false;
        }
    }
    for item in items {
        match item {
            Item::File(f) => match validate_file(&f) {
                Ok(kind) => println!("ok      {} ({kind:?})", f.display()),
                Err(errs) => {
                    ok = false;
                    println!("invalid {}", f.display());
                    for e in &errs.0 {
                        println!("  {}: {e}", f.display());
                    }
                }
            },
            Item::IntentFolder(dir, files) => {
                let names: Vec<String> = files
                    .iter()
                    .filter_map(|f| f.file_name().map(|n| n.to_string_lossy().to_string()))
                    .collect();
                let what = format!("(Intent, merged from {})", names.join(", "));
                match meridian_api::intent::read_intent(&dir) {
                    Ok(_) => println!("ok      {} {what}", dir.display()),
                    Err(errs) => {
                        ok = false;
                        println!("invalid {} {what}", dir.display());
                        // Each error's path starts with the file it is in (`b.yaml: routes[0]`).
                        for e in &errs.0 {
                            if e.path.is_empty() || e.path.starts_with('(') {
                                println!("  {}: {e}", dir.display());
                            } else {
                                println!("  {}/{e}", dir.display());
                            }
                        }
                    }
                }
            }
        }
    }
    ok
}

/// What `p` stands for: a file, or a folder's files (or the folder, when it is an intent) and
/// then its sub-folders, each in name order.
fn collect(p: &Path, out: &mut Vec<Item>) {
    if !p.is_dir() {
        out.push(Item::File(p.to_path_buf()));
        return;
    }
    // The same listing as the control plane's for an intent folder.
    let files = meridian_api::intent::intent_files(p).unwrap_or_default();
    if is_intent_folder(&files) {
        out.push(Item::IntentFolder(p.to_path_buf(), files));
    } else {
        out.extend(files.into_iter().map(Item::File));
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(p)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    dirs.retain(|d| d.is_dir());
    dirs.sort();
    for d in dirs {
        collect(&d, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example(rel: &str) -> String {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs")
            .join(rel);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn every_example_is_told_apart() {
        for (file, kind) in [
            ("gateway.example.yaml", Kind::Gateway),
            ("table.example.yaml", Kind::Table),
            ("demo/demo.yaml", Kind::Demo),
            ("demo/eu-west.yaml", Kind::Gateway),
            ("control/control.yaml", Kind::Control),
            ("control/intent.yaml", Kind::Intent),
            ("control/gateway-eu-west.yaml", Kind::Gateway),
        ] {
            assert_eq!(kind_of(&example(file)), kind, "{file}");
        }
    }

    #[test]
    fn one_misspelt_key_does_not_change_the_kind() {
        let gw = example("gateway.example.yaml").replace("\nlisteners:", "\nlistners:");
        assert!(gw.contains("listners:"));
        assert_eq!(kind_of(&gw), Kind::Gateway);
        let ctl = example("control/control.yaml").replace("\ntokens:", "\ntokns:");
        assert!(ctl.contains("tokns:"));
        assert_eq!(kind_of(&ctl), Kind::Control);
        // And the error then names the misspelt key, not a key of another kind of file.
        let err = GatewayConfig::parse(&gw, Path::new("."))
            .expect_err("invalid")
            .to_string();
        assert!(err.contains("listners"), "{err}");
    }

    #[test]
    fn a_yaml_syntax_error_keeps_the_kind_and_is_reported_as_such() {
        let broken = format!("{}\nextra: [unclosed\n", example("gateway.example.yaml"));
        assert_eq!(kind_of(&broken), Kind::Gateway);
        // Through `validate`'s own dispatch: the table parser would name its own fields.
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("gateway.yaml");
        std::fs::write(&path, &broken).expect("write");
        let err = validate_file(&path).expect_err("invalid").to_string();
        assert!(!err.contains("expected one of `version`"), "{err}");
    }
}
