//! What the control plane keeps on disk in its state folder, each file written atomically
//! (temporary file, fsync, rename):
//! - `versions.json`: the highest version handed out and each region's version and hash, so
//!   versions keep growing across restarts and an unchanged table keeps its version;
//! - `pushed-intent.json`: the last intent an operator pushed, who pushed it, and the hash of the
//!   watched intent files at that moment.
//!
//! Which intent is in force after a restart: the pushed one while the watched files are still as
//! they were when it was pushed; the watched files once they changed after the push (the last
//! writer wins, whichever way it wrote).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use meridian_api::intent::Intent;
use meridian_api::wire::hex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// `versions.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Versions {
    /// Highest version handed out.
    pub last_version: u64,
    /// Region -> (version, hash) of its current table.
    pub regions: BTreeMap<String, (u64, String)>,
}

/// `pushed-intent.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pushed {
    /// Token identity that pushed it.
    pub identity: String,
    /// When, Unix ms.
    pub pushed_unix_ms: u64,
    /// Hash of the watched files when it was pushed (see [`raw_hash`]).
    pub watched_hash: Option<String>,
    /// The intent.
    pub intent: Intent,
}

/// The state folder.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating) the state folder.
    pub fn open(dir: &Path) -> std::io::Result<Store> {
        std::fs::create_dir_all(dir)?;
        Ok(Store {
            dir: dir.to_path_buf(),
        })
    }

    /// The saved versions; empty when there are none or the file is unreadable (logged).
    pub fn load_versions(&self) -> Versions {
        self.load("versions.json").unwrap_or_default()
    }

    /// Saves the versions.
    pub fn save_versions(&self, v: &Versions) -> std::io::Result<()> {
        self.save("versions.json", v)
    }

    /// The pushed intent, if any.
    pub fn load_pushed(&self) -> Option<Pushed> {
        self.load("pushed-intent.json")
    }

    /// Saves a pushed intent.
    pub fn save_pushed(&self, p: &Pushed) -> std::io::Result<()> {
        self.save("pushed-intent.json", p)
    }

    fn load<T: serde::de::DeserializeOwned>(&self, name: &str) -> Option<T> {
        let path = self.dir.join(name);
        let bytes = std::fs::read(&path).ok()?;
        match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::error!(path = %path.display(), "ignoring unreadable state file: {e}");
                None
            }
        }
    }

    fn save<T: Serialize>(&self, name: &str, v: &T) -> std::io::Result<()> {
        let bytes = serde_json::to_vec_pretty(v).map_err(std::io::Error::other)?;
        write_atomic(&self.dir.join(name), &bytes)
    }
}

/// Writes `bytes` to a sibling temporary file, syncs it and renames it over `path`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

/// Hash of the watched intent files (names and bytes), to tell whether they changed.
pub fn raw_hash(raw: &[(String, Vec<u8>)]) -> String {
    let mut h = Sha256::new();
    for (name, bytes) in raw {
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    hex(&h.finalize())
}

/// Reads the watched files' names and bytes without parsing them.
pub fn read_raw(path: &Path) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for f in meridian_api::intent::intent_files(path)? {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        out.push((name, std::fs::read(&f)?));
    }
    Ok(out)
}

/// Hash of an intent's canonical JSON.
pub fn intent_hash(intent: &Intent) -> String {
    hex(&Sha256::digest(
        serde_json::to_vec(intent).unwrap_or_default(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_atomically() {
        let dir = tempfile::tempdir().expect("dir");
        let s = Store::open(&dir.path().join("state")).expect("open");
        assert_eq!(s.load_versions(), Versions::default());
        let v = Versions {
            last_version: 9,
            regions: BTreeMap::from([("eu".to_string(), (9, "h".to_string()))]),
        };
        s.save_versions(&v).expect("save");
        assert_eq!(s.load_versions(), v);
        assert!(s.load_pushed().is_none());
        let p = Pushed {
            identity: "alice".into(),
            pushed_unix_ms: 1,
            watched_hash: Some("w".into()),
            intent: Intent::default(),
        };
        s.save_pushed(&p).expect("save");
        assert_eq!(s.load_pushed(), Some(p));
        let leftovers = std::fs::read_dir(dir.path().join("state"))
            .expect("ls")
            .filter(|e| {
                e.as_ref()
                    .map(|e| e.file_name().to_string_lossy().contains("tmp"))
                    .unwrap_or(false)
            })
            .count();
        assert_eq!(leftovers, 0);
    }
}
