//! The operator's commands against a control plane:
//! - `meridian tables --control URL [--token T]`: what the control plane serves, for a person;
//! - `meridian push --control URL [--token T] FILE`: validates an intent locally, uploads it, and
//!   prints the new table versions or the located errors.
//!
//! The token may also come from `MERIDIAN_TOKEN`. Both need an `operator` token: a known token
//! of another role gets a 403, printed with the role needed.

use std::path::Path;
use std::time::Duration;

use meridian_api::wire::{ErrorResponse, PushResponse, Status};

fn client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30))
        .build()?)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn token(given: Option<String>) -> Option<String> {
    given.or_else(|| std::env::var("MERIDIAN_TOKEN").ok())
}

/// The line for a 403: the token is known but its role does not allow the call. `body` is the
/// control plane's error (it names the role needed); `cmd` is the command, for the hint.
fn forbidden(url: &str, cmd: &str, body: &[u8]) -> String {
    let said = serde_json::from_slice::<ErrorResponse>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| String::from_utf8_lossy(body).trim().to_string());
    let said = if said.is_empty() {
        String::new()
    } else {
        format!(": {said}")
    };
    format!(
        "{url}: 403 forbidden{said}\n  `meridian {cmd}` needs an operator token (`role: operator` \
         in the control plane's config); check --token or MERIDIAN_TOKEN"
    )
}

/// The control plane's base URL: `http://` is assumed when no scheme is given
/// (`127.0.0.1:7100`), and a trailing `/` is dropped.
fn base(control: &str) -> String {
    let c = control.trim_end_matches('/');
    if c.contains("://") {
        c.to_string()
    } else {
        format!("http://{c}")
    }
}

/// `meridian tables`: prints `/v1/status`. Returns the text to print.
pub fn tables(control: &str, tok: Option<String>) -> anyhow::Result<String> {
    let url = format!("{}/v1/status", base(control));
    let status: Status = runtime()?.block_on(async {
        let mut req = client()?.get(&url);
        if let Some(t) = token(tok) {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        match resp.status().as_u16() {
            200 => Ok(resp.json::<Status>().await?),
            401 => anyhow::bail!("{url}: 401 unauthorized (check --token or MERIDIAN_TOKEN)"),
            403 => {
                let body = resp.bytes().await.unwrap_or_default();
                anyhow::bail!("{}", forbidden(&url, "tables", &body))
            }
            code => anyhow::bail!("{url}: {code} {}", resp.text().await.unwrap_or_default()),
        }
    })?;
    Ok(render_status(&status, meridian_control::now_unix_ms()))
}

/// A person's view of a status.
pub fn render_status(s: &Status, now_ms: u64) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "intent: {} (hash {})",
        s.intent.source,
        short(&s.intent.hash)
    );
    if let Some(e) = &s.intent.last_error {
        let _ = writeln!(
            out,
            "  last edit refused:\n    {}",
            e.replace('\n', "\n    ")
        );
    }
    let _ = writeln!(out, "\nREGION          VERSION  HASH          FAILOVER");
    for r in &s.regions {
        let _ = writeln!(
            out,
            "{:<15} {:>7}  {:<12}  {}",
            r.region,
            r.version,
            short(&r.hash),
            if r.failover.is_empty() {
                "-".to_string()
            } else {
                r.failover.join(" > ")
            }
        );
    }
    let _ = writeln!(
        out,
        "\nGATEWAY                         REGION          APPLIED  IN SYNC  LAST SEEN  LAST NACK"
    );
    for g in &s.gateways {
        let seen = now_ms.saturating_sub(g.last_seen_unix_ms) as f64 / 1000.0;
        let nack = g
            .last_nack
            .as_ref()
            .map(|n| format!("v{}: {}", n.version, n.reason.replace('\n', "; ")))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "{:<31} {:<15} {:>7}  {:<7}  {:>7.1}s  {}",
            g.gateway,
            g.region,
            g.applied_version.map_or("-".into(), |v| v.to_string()),
            if g.in_sync { "yes" } else { "NO" },
            seen,
            nack
        );
    }
    let unhealthy: Vec<String> = s
        .endpoints
        .iter()
        .filter(|e| e.health != "healthy")
        .map(|e| format!("{} {} ({})", e.service, e.address, e.health))
        .collect();
    let _ = writeln!(
        out,
        "\nendpoints: {} checked, {} not healthy",
        s.endpoints.len(),
        unhealthy.len()
    );
    for u in unhealthy {
        let _ = writeln!(out, "  {u}");
    }
    out
}

fn short(h: &str) -> &str {
    h.get(..12).unwrap_or(h)
}

/// `meridian push`: `Ok(text)` when accepted, `Err(text)` when refused (locally or remotely).
pub fn push(control: &str, tok: Option<String>, file: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    if let Err(errs) = meridian_api::intent::parse_intent(&text) {
        let mut out = format!("{}: invalid intent, not pushed:\n", file.display());
        for e in &errs.0 {
            out.push_str(&format!("  {}: {e}\n", file.display()));
        }
        return Err(out);
    }
    let url = format!("{}/v1/intent", base(control));
    let rt = runtime().map_err(|e| e.to_string())?;
    rt.block_on(async {
        let mut req = client()
            .map_err(|e| e.to_string())?
            .put(&url)
            .header(http::header::CONTENT_TYPE, "application/yaml")
            .body(text);
        if let Some(t) = token(tok) {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.map_err(|e| format!("{url}: {e}"))?;
        let code = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| format!("{url}: {e}"))?;
        match code {
            200 => {
                let r: PushResponse =
                    serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))?;
                let mut out = if r.changed {
                    "pushed; new table versions:\n".to_string()
                } else {
                    "pushed; the intent was already in force, no new versions:\n".to_string()
                };
                for (region, v) in &r.versions {
                    out.push_str(&format!("  {region}: {v}\n"));
                }
                Ok(out)
            }
            401 => Err(format!(
                "{url}: 401 unauthorized (check --token or MERIDIAN_TOKEN)\n"
            )),
            403 => Err(format!("{}\n", forbidden(&url, "push", &body))),
            _ => {
                let e: ErrorResponse = serde_json::from_slice(&body).unwrap_or(ErrorResponse {
                    error: String::from_utf8_lossy(&body).to_string(),
                    ..ErrorResponse::default()
                });
                let mut out = format!("refused by the control plane ({code}): {}\n", e.error);
                for fe in &e.errors {
                    out.push_str(&format!(
                        "  {}: {}: {}\n",
                        file.display(),
                        fe.path,
                        fe.message
                    ));
                }
                Err(out)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_control_url_without_a_scheme_means_http() {
        assert_eq!(super::base("127.0.0.1:7100"), "http://127.0.0.1:7100");
        assert_eq!(super::base("http://h:1/"), "http://h:1");
        assert_eq!(super::base("https://h:1"), "https://h:1");
    }
}
