//! Every file under `configs/` is valid, as `meridian validate` sees it, and a broken copy of one
//! is rejected with located errors.

use std::path::Path;
use std::process::Command;

fn validate(paths: &[&Path]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_meridian"))
        .arg("validate")
        .args(paths)
        .output()
        .expect("run meridian validate");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn configs() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

#[test]
fn every_file_under_configs_is_valid() {
    let dir = configs();
    let (ok, text) = validate(&[&dir]);
    assert!(ok, "meridian validate configs/ failed:\n{text}");
    let checked = text.lines().filter(|l| l.starts_with("ok ")).count();
    let on_disk = walk(&dir);
    assert!(checked >= 6, "too few files validated:\n{text}");
    assert_eq!(checked, on_disk, "validate skipped files:\n{text}");
}

fn walk(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .expect("read configs")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .map(|p| {
            if p.is_dir() {
                walk(&p)
            } else if p
                .extension()
                .is_some_and(|x| x == "yaml" || x == "yml" || x == "json")
            {
                1
            } else {
                0
            }
        })
        .sum()
}

#[test]
fn a_broken_copy_is_rejected_with_located_errors() {
    let src = configs().join("demo/table.yaml");
    let text = std::fs::read_to_string(&src).expect("read demo table");
    let broken = text.replacen("weight: 10 }", "weight: -3 }", 1);
    assert_ne!(
        broken, text,
        "the demo table changed shape; update this test"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("table.yaml");
    std::fs::write(&path, broken).expect("write");
    let (ok, out) = validate(&[&path]);
    assert!(!ok, "a negative weight was accepted:\n{out}");
    assert!(
        out.contains("routes[0].split[1].weight: must be >= 0"),
        "{out}"
    );
}
