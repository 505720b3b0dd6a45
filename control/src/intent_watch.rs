//! The intent in force at start, and the watcher of the intent files.
//!
//! The watcher polls the intent path (a file or a folder) and compares the bytes it reads with
//! the last bytes it saw. A changed, valid intent is sent to the reconciler; a changed, invalid
//! one is refused with its located errors (logged, audited, shown in `/v1/status`) and the intent
//! in force stays. See [`crate::store`] for how a pushed intent and the files take turns.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meridian_api::intent::{read_intent, Intent};

use crate::hub::Hub;
use crate::reconcile::{Event, IntentSource};
use crate::store::{raw_hash, read_raw, Store};

/// The intent to start with.
#[derive(Debug)]
pub struct Initial {
    /// The intent and where it came from, if any is usable.
    pub intent: Option<(Intent, IntentSource)>,
    /// Hash of the watched files as read.
    pub watched_hash: Option<String>,
    /// Why the watched files were not used, when they were invalid.
    pub error: Option<String>,
}

/// Picks the intent in force at start: the pushed one while the watched files are unchanged
/// since the push (or invalid), else the watched files.
pub fn initial(path: &Path, store: &Store) -> Initial {
    let watched_hash = read_raw(path).ok().map(|r| raw_hash(&r));
    let watched = read_intent(path);
    let pushed = store.load_pushed();
    let error = watched.as_ref().err().map(|e| e.to_string());
    let label = path.display().to_string();
    let intent = match (pushed, watched) {
        (Some(p), _) if p.watched_hash.is_some() && p.watched_hash == watched_hash => {
            Some((p.intent, IntentSource::Restored(p.identity)))
        }
        (_, Ok((i, _))) => Some((i, IntentSource::File(label))),
        (Some(p), Err(_)) => Some((p.intent, IntentSource::Restored(p.identity))),
        (None, Err(_)) => None,
    };
    Initial {
        intent,
        watched_hash,
        error,
    }
}

/// Polls `path` every `every`, starting from `last` (the hash [`initial`] saw).
pub async fn watch(path: PathBuf, every: Duration, mut last: Option<String>, hub: Arc<Hub>) {
    loop {
        tokio::time::sleep(every).await;
        let raw = match read_raw(&path) {
            Ok(r) => r,
            Err(e) => {
                let h = Some(format!("unreadable: {e}"));
                if h != last {
                    tracing::error!(path = %path.display(), "cannot read the intent; keeping the intent in force: {e}");
                    hub.set_intent_error(Some(format!("cannot read {}: {e}", path.display())));
                    last = h;
                }
                continue;
            }
        };
        let h = Some(raw_hash(&raw));
        if h == last {
            continue;
        }
        last = h.clone();
        *hub.watched_hash.lock().unwrap_or_else(|p| p.into_inner()) = h;
        match read_intent(&path) {
            Ok((intent, _)) => {
                let sent = hub.events.send(Event::Intent {
                    intent: Box::new(intent),
                    source: IntentSource::File(path.display().to_string()),
                    reply: None,
                });
                if sent.is_err() {
                    return;
                }
            }
            Err(errs) => {
                let shown = errs.to_string();
                tracing::error!(path = %path.display(), "intent edit refused; keeping the intent in force:\n{shown}");
                hub.audit.append(
                    "intent-refused",
                    serde_json::json!({ "source": path.display().to_string(), "errors": shown }),
                );
                hub.set_intent_error(Some(shown));
            }
        }
    }
}
