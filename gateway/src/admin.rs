//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process is up), `/readyz`
//! (a routing table is in force) and `/table` (that table, as JSON, with its status).

use std::sync::Arc;

use async_trait::async_trait;
use http::{Response, StatusCode};
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::state::Gateway;

/// The admin app of one gateway.
#[derive(Debug)]
pub struct Admin(pub Arc<Gateway>);

fn reply(status: StatusCode, content_type: &str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut r = Response::new(body);
    *r.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    r
}

impl Admin {
    /// Answers one admin path.
    pub fn route(&self, path: &str) -> Response<Vec<u8>> {
        let gw = &self.0;
        match path {
            "/metrics" => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                gw.metrics.render(),
            ),
            "/healthz" => reply(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                let snap = gw.snapshot.load();
                let note = gw
                    .source_note
                    .load()
                    .as_ref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default();
                match snap.as_ref() {
                    Some(s) => {
                        // Still ready (the table in force serves), but a refused newer table is
                        // worth seeing here too.
                        let refused = gw
                            .last_rejection
                            .load()
                            .as_ref()
                            .map(|r| format!("; last table refused: {r}"))
                            .unwrap_or_default();
                        reply(
                            StatusCode::OK,
                            "text/plain",
                            format!("ready: table version {}{note}{refused}\n", s.version)
                                .into_bytes(),
                        )
                    }
                    None => {
                        let why = gw
                            .last_rejection
                            .load()
                            .as_ref()
                            .map(|r| r.to_string())
                            .unwrap_or_else(|| "no table loaded yet".into());
                        reply(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "text/plain",
                            format!("not ready: {why}{note}\n").into_bytes(),
                        )
                    }
                }
            }
            "/table" => {
                let snap = gw.snapshot.load();
                let rejection = gw.last_rejection.load().as_ref().map(|r| r.to_string());
                let body = serde_json::json!({
                    "region": gw.config.region,
                    "source": gw
                        .source_note
                        .load()
                        .as_ref()
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| gw.config.table_file.display().to_string()),
                    "last_rejection": rejection,
                    "table": snap.as_ref().map(|s| &s.table),
                });
                let status = if snap.is_some() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                let text = serde_json::to_vec_pretty(&body).unwrap_or_default();
                reply(status, "application/json", text)
            }
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                b"try /metrics, /healthz, /readyz or /table\n".to_vec(),
            ),
        }
    }
}

#[async_trait]
impl ServeHttp for Admin {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let path = session.req_header().uri.path().to_string();
        let mut r = self.route(&path);
        let len = r.body().len();
        if let Ok(v) = http::HeaderValue::from_str(&len.to_string()) {
            r.headers_mut().insert(http::header::CONTENT_LENGTH, v);
        }
        r
    }
}
