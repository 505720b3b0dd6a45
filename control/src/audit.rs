//! The audit log: one JSON object per line, appended, never rewritten. Every new table version,
//! every push, every refused intent edit and every NACK a gateway reports is written with its
//! cause. Each line has `ts_unix_ms` and `kind`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

/// An open audit log.
#[derive(Debug)]
pub struct Audit {
    path: PathBuf,
    file: Mutex<std::fs::File>,
}

impl Audit {
    /// Opens (creating) `path` for appending.
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Audit {
            path: path.to_path_buf(),
            file: Mutex::new(file),
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry of `kind` with `fields` (an object) and the time.
    pub fn append(&self, kind: &str, fields: Value) {
        let mut entry = serde_json::json!({ "ts_unix_ms": crate::now_unix_ms(), "kind": kind });
        if let (Some(e), Value::Object(f)) = (entry.as_object_mut(), fields) {
            e.extend(f);
        }
        let mut line = entry.to_string();
        line.push('\n');
        let mut f = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = f.write_all(line.as_bytes()).and_then(|_| f.flush()) {
            tracing::error!(path = %self.path.display(), "audit log write failed: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_appended_as_json_lines() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("a/audit.jsonl");
        let a = Audit::open(&p).expect("open");
        a.append("table", serde_json::json!({"region": "eu", "version": 3}));
        drop(a);
        let a = Audit::open(&p).expect("reopen appends");
        a.append("push", serde_json::json!({"identity": "alice"}));
        let text = std::fs::read_to_string(&p).expect("read");
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["kind"], "table");
        assert_eq!(lines[0]["version"], 3);
        assert_eq!(lines[1]["identity"], "alice");
        assert!(lines[1]["ts_unix_ms"].as_u64().is_some());
    }
}
