//! Prometheus metrics, one registry per gateway. Label lookups happen when a snapshot is built
//! (background work): the request path holds pre-resolved handles and only touches atomics.

use std::sync::Arc;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

/// Status codes with a pre-resolved counter; any other code takes the labelled slow path.
const CODES: [u16; 22] = [
    200, 201, 202, 204, 206, 301, 302, 304, 400, 401, 403, 404, 405, 408, 409, 413, 429, 499, 500,
    502, 503, 504,
];

/// Latency buckets in seconds: 0.5 ms to 30 s.
const BUCKETS: [f64; 16] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0,
];

/// Every metric a gateway exports.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// The registry `/metrics` renders.
    pub registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    inflight: IntGaugeVec,
    /// Version of the table in force (0 before the first).
    pub table_version: IntGauge,
    /// Tables refused by validation.
    pub table_rejections: IntCounter,
    /// Tables applied.
    pub table_applies: IntCounter,
    /// Access-log lines dropped because the writer fell behind.
    pub access_log_dropped: IntCounter,
}

/// Pre-resolved counters for one (route, subset, region).
#[derive(Debug)]
pub struct RequestHandles {
    codes: [IntCounter; CODES.len()],
    labels: [String; 3],
    requests: IntCounterVec,
    duration: Histogram,
}

impl RequestHandles {
    /// Counts one finished request with its status code and duration.
    pub fn record(&self, code: u16, seconds: f64) {
        match CODES.iter().position(|&c| c == code) {
            Some(i) => self.codes[i].inc(),
            None => {
                let code = code.to_string();
                let [r, s, g] = &self.labels;
                self.requests.with_label_values(&[r, s, g, &code]).inc();
            }
        }
        self.duration.observe(seconds);
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new("meridian_requests_total", "Requests finished, by outcome."),
            &["route", "subset", "region", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "meridian_request_duration_seconds",
                "Time from request start to the end of the response.",
            )
            .buckets(BUCKETS.to_vec()),
            &["route", "subset", "region"],
        )?;
        let inflight = IntGaugeVec::new(
            Opts::new(
                "meridian_upstream_inflight",
                "Requests in flight per endpoint.",
            ),
            &["endpoint"],
        )?;
        let table_version =
            IntGauge::new("meridian_table_version", "Version of the table in force.")?;
        let table_rejections = IntCounter::new(
            "meridian_table_rejections_total",
            "Routing tables refused by validation; the previous table stayed in force.",
        )?;
        let table_applies =
            IntCounter::new("meridian_table_applies_total", "Routing tables applied.")?;
        let access_log_dropped = IntCounter::new(
            "meridian_access_log_dropped_total",
            "Access-log lines dropped because the writer fell behind.",
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(inflight.clone()))?;
        registry.register(Box::new(table_version.clone()))?;
        registry.register(Box::new(table_rejections.clone()))?;
        registry.register(Box::new(table_applies.clone()))?;
        registry.register(Box::new(access_log_dropped.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            duration,
            inflight,
            table_version,
            table_rejections,
            table_applies,
            access_log_dropped,
        })
    }

    /// Resolves the handles for one (route, subset, region). Background work.
    pub fn handles(&self, route: &str, subset: &str, region: &str) -> Arc<RequestHandles> {
        let codes = CODES.map(|c| {
            self.requests
                .with_label_values(&[route, subset, region, &c.to_string()])
        });
        Arc::new(RequestHandles {
            codes,
            labels: [route.to_string(), subset.to_string(), region.to_string()],
            requests: self.requests.clone(),
            duration: self.duration.with_label_values(&[route, subset, region]),
        })
    }

    /// The in-flight gauge of one endpoint.
    pub fn inflight_gauge(&self, endpoint: &str) -> IntGauge {
        self.inflight.with_label_values(&[endpoint])
    }

    /// Renders the Prometheus text format.
    pub fn render(&self) -> Vec<u8> {
        use prometheus::Encoder;
        let mut out = Vec::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut out) {
            out = format!("# encode error: {e}\n").into_bytes();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_count_common_and_rare_codes() {
        let m = Metrics::new().expect("metrics");
        let h = m.handles("r", "s@v1", "eu");
        h.record(200, 0.01);
        h.record(200, 0.01);
        h.record(418, 0.01);
        let text = String::from_utf8(m.render()).expect("utf8");
        assert!(
            text.contains(
                r#"meridian_requests_total{code="200",region="eu",route="r",subset="s@v1"} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"code="418""#), "{text}");
        assert!(text.contains(
            "meridian_request_duration_seconds_count{region=\"eu\",route=\"r\",subset=\"s@v1\"} 3"
        ));
    }
}
