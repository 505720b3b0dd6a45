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
    retries: IntCounterVec,
    hedges: IntCounterVec,
    hedge_wins: IntCounterVec,
    budget_exhausted: IntCounterVec,
    residency_refusals: IntCounterVec,
    ejections: IntCounterVec,
    ejections_skipped: IntCounterVec,
    fail_open: IntCounterVec,
    circuit_open: IntCounterVec,
}

/// Why an attempt was retried; the `reason` label of `meridian_retries_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryReason {
    /// The connect failed (never reached the upstream).
    ConnectFailure,
    /// An HTTP/2 upstream refused the stream.
    RefusedStream,
    /// The connection broke before response headers.
    Reset,
    /// The attempt ran past its per-try timeout.
    PerTryTimeout,
    /// The upstream answered with a retryable status.
    Status,
    /// A pooled connection turned out to be closed (retried once, outside the budget).
    StaleConnection,
}

impl RetryReason {
    /// Every reason, in label order.
    pub const ALL: [RetryReason; 6] = [
        RetryReason::ConnectFailure,
        RetryReason::RefusedStream,
        RetryReason::Reset,
        RetryReason::PerTryTimeout,
        RetryReason::Status,
        RetryReason::StaleConnection,
    ];

    /// The label, matching the table's `retry_on` names where there is one.
    pub fn label(self) -> &'static str {
        match self {
            RetryReason::ConnectFailure => "connect-failure",
            RetryReason::RefusedStream => "refused-stream",
            RetryReason::Reset => "reset",
            RetryReason::PerTryTimeout => "per-try-timeout",
            RetryReason::Status => "status",
            RetryReason::StaleConnection => "stale-connection",
        }
    }
}

/// Pre-resolved counters of one route's retry, hedge and residency decisions.
#[derive(Debug)]
pub struct RouteCounters {
    /// Retries by [`RetryReason`] (same order as `RetryReason::ALL`).
    pub retries: [IntCounter; 6],
    /// Hedges sent.
    pub hedges: IntCounter,
    /// Hedges whose response won.
    pub hedge_wins: IntCounter,
    /// Retries or hedges refused for lack of budget.
    pub budget_exhausted: IntCounter,
    /// Requests refused because only regions outside `allowed_regions` could serve them.
    pub residency_refusals: IntCounter,
}

impl RouteCounters {
    /// Counts one retry.
    pub fn retry(&self, reason: RetryReason) {
        let i = RetryReason::ALL
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.retries[i].inc();
    }
}

/// Pre-resolved counters of one subset's passive-health and circuit decisions.
#[derive(Debug)]
pub struct SubsetCounters {
    /// Endpoints ejected.
    pub ejections: IntCounter,
    /// Ejections not made because of `max_ejection_percent`.
    pub ejections_skipped: IntCounter,
    /// Requests sent to an ejected endpoint because every endpoint was ejected.
    pub fail_open: IntCounter,
    /// Requests refused by the subset's in-flight limit.
    pub circuit_subset: IntCounter,
    /// Requests refused by the endpoint's in-flight limit.
    pub circuit_endpoint: IntCounter,
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
        let counter = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels)
        };
        let retries = counter(
            "meridian_retries_total",
            "Retries made, by reason.",
            &["route", "reason"],
        )?;
        let hedges = counter("meridian_hedges_total", "Hedged attempts sent.", &["route"])?;
        let hedge_wins = counter(
            "meridian_hedge_wins_total",
            "Hedged attempts whose response won the race.",
            &["route"],
        )?;
        let budget_exhausted = counter(
            "meridian_budget_exhausted_total",
            "Retries or hedges not made because the route's budget was spent.",
            &["route"],
        )?;
        let residency_refusals = counter(
            "meridian_residency_refusals_total",
            "Requests refused because only regions outside the route's allowed_regions could serve.",
            &["route"],
        )?;
        let ejections = counter(
            "meridian_outlier_ejections_total",
            "Endpoints ejected by outlier detection.",
            &["subset"],
        )?;
        let ejections_skipped = counter(
            "meridian_outlier_ejections_skipped_total",
            "Ejections not made because max_ejection_percent was reached.",
            &["subset"],
        )?;
        let fail_open = counter(
            "meridian_outlier_fail_open_total",
            "Requests sent to ejected endpoints because every endpoint was ejected.",
            &["subset"],
        )?;
        let circuit_open = counter(
            "meridian_circuit_open_total",
            "Requests refused by an in-flight limit.",
            &["subset", "limit"],
        )?;
        for c in [
            &retries,
            &hedges,
            &hedge_wins,
            &budget_exhausted,
            &residency_refusals,
            &ejections,
            &ejections_skipped,
            &fail_open,
            &circuit_open,
        ] {
            registry.register(Box::new(c.clone()))?;
        }
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
            retries,
            hedges,
            hedge_wins,
            budget_exhausted,
            residency_refusals,
            ejections,
            ejections_skipped,
            fail_open,
            circuit_open,
        })
    }

    /// Resolves one route's decision counters. Background work.
    pub fn route_counters(&self, route: &str) -> RouteCounters {
        RouteCounters {
            retries: RetryReason::ALL.map(|r| self.retries.with_label_values(&[route, r.label()])),
            hedges: self.hedges.with_label_values(&[route]),
            hedge_wins: self.hedge_wins.with_label_values(&[route]),
            budget_exhausted: self.budget_exhausted.with_label_values(&[route]),
            residency_refusals: self.residency_refusals.with_label_values(&[route]),
        }
    }

    /// Resolves one subset's decision counters. Background work.
    pub fn subset_counters(&self, subset: &str) -> SubsetCounters {
        SubsetCounters {
            ejections: self.ejections.with_label_values(&[subset]),
            ejections_skipped: self.ejections_skipped.with_label_values(&[subset]),
            fail_open: self.fail_open.with_label_values(&[subset]),
            circuit_subset: self.circuit_open.with_label_values(&[subset, "subset"]),
            circuit_endpoint: self.circuit_open.with_label_values(&[subset, "endpoint"]),
        }
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

    /// Unregisters the in-flight gauge of an endpoint that left the table. Handles still held by
    /// an older snapshot keep working; they are just no longer exported.
    pub fn remove_inflight_gauge(&self, endpoint: &str) {
        let _ = self.inflight.remove_label_values(&[endpoint]);
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
