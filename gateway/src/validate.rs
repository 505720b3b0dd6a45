//! `meridian validate`: checks gateway configs, routing tables, demo specs, control-plane configs
//! and intents, telling them apart by their top-level keys, and reports every error with its
//! file and field path.

use std::path::Path;

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

/// Guesses the kind from the top-level keys.
pub fn kind_of(text: &str) -> Kind {
    let v: serde_yaml::Value = serde_yaml::from_str(text).unwrap_or(serde_yaml::Value::Null);
    let has = |k: &str| v.get(k).is_some();
    if has("listeners") {
        Kind::Gateway
    } else if has("upstreams") {
        Kind::Demo
    } else if has("tokens") {
        Kind::Control
    } else if has("services") {
        Kind::Intent
    } else {
        Kind::Table
    }
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

/// Runs `meridian validate` over `paths` (folders are walked for `.yaml`, `.yml` and `.json`).
/// Prints one line per file and every error; returns whether all were valid.
pub fn run(paths: &[std::path::PathBuf]) -> bool {
    let mut files = Vec::new();
    for p in paths {
        collect(p, &mut files);
    }
    let mut ok = true;
    for f in files {
        match validate_file(&f) {
            Ok(kind) => println!("ok      {} ({kind:?})", f.display()),
            Err(errs) => {
                ok = false;
                println!("invalid {}", f.display());
                for e in &errs.0 {
                    println!("  {}: {e}", f.display());
                }
            }
        }
    }
    ok
}

fn collect(p: &Path, out: &mut Vec<std::path::PathBuf>) {
    if p.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(p)
            .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        entries.sort();
        for e in entries {
            let yaml = e
                .extension()
                .is_some_and(|x| x == "yaml" || x == "yml" || x == "json");
            if e.is_dir() || yaml {
                collect(&e, out);
            }
        }
    } else {
        out.push(p.to_path_buf());
    }
}
