//! Retry policy on the request path: which requests may be retried, which failures count as
//! which retry reason, and the backoff between attempts.
//!
//! Rules (the route's [`RetryPolicy`] gives attempts, kinds, statuses and backoff):
//! - Only idempotent requests are retried: GET, HEAD, OPTIONS, TRACE, PUT, DELETE, or any method
//!   carrying `Idempotency-Key`. A connect failure is the one exception: that request provably
//!   never reached the upstream, so any method may be retried.
//! - A request whose body outgrew the replay buffer (64 KiB) is not retried; its first failure
//!   is passed through.
//! - A request that arrived with `x-meridian-attempt` was already sent by a gateway that owns
//!   the retries, so here only connect failures and stale pooled connections are retried.
//! - Nothing is retried once response bytes went to the client.
//! - Every retry goes to another endpoint, and takes one token from the route's budget; a stale
//!   pooled connection is retried once outside the budget, and that retry does not count
//!   against the route's `attempts`.

use std::time::Duration;

use meridian_api::RetryPolicy;
use pingora::{Error, ErrorType};

use crate::headers::Headers;
use crate::metrics::RetryReason;

/// The header that tells the next hop which attempt this is.
pub const ATTEMPT_HEADER: &str = "x-meridian-attempt";

/// Our error for "the upstream answered with a status the route retries".
pub const RETRY_STATUS: &str = "retryable upstream status";

/// True for requests that may be sent twice.
pub fn idempotent<H: Headers>(method: &http::Method, headers: &H) -> bool {
    use http::Method;
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) || headers.has("idempotency-key")
}

/// The retry reason of an error that happened after the connection was made and before any
/// response header, or `None` when it is not a retryable kind.
pub fn classify(e: &Error) -> Option<RetryReason> {
    use ErrorType::*;
    match e.etype() {
        ReadTimedout | WriteTimedout => Some(RetryReason::PerTryTimeout),
        H2Error | InvalidH2 if e.to_string().contains("REFUSED_STREAM") => {
            Some(RetryReason::RefusedStream)
        }
        ConnectionClosed | ReadError | WriteError | H1Error | H2Error | InvalidHTTPHeader => {
            Some(RetryReason::Reset)
        }
        ConnectTimedout | ConnectRefused | ConnectNoRoute | ConnectError | TLSHandshakeFailure
        | TLSHandshakeTimedout => Some(RetryReason::ConnectFailure),
        _ => None,
    }
}

/// True when `policy` retries `reason`.
pub fn allows(policy: &RetryPolicy, reason: RetryReason) -> bool {
    match reason {
        RetryReason::Status => !policy.retry_on_status.is_empty(),
        RetryReason::StaleConnection => true,
        r => policy.retry_on.iter().any(|k| k == r.label()),
    }
}

/// Full-jitter backoff before retry number `n` (1 for the first retry).
pub fn backoff(policy: &RetryPolicy, n: u32, rng: &mut fastrand::Rng) -> Duration {
    let exp = policy
        .backoff_base_ms
        .saturating_mul(1u64 << n.saturating_sub(1).min(16));
    let cap = exp.min(policy.backoff_max_ms);
    Duration::from_millis(rng.u64(0..=cap))
}

#[cfg(test)]
mod tests {
    use pingora::http::RequestHeader;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn idempotency_by_method_or_key() {
        let get = RequestHeader::build("GET", b"/", None).expect("req");
        assert!(idempotent(&get.method, &get.headers));
        let mut post = RequestHeader::build("POST", b"/", None).expect("req");
        assert!(!idempotent(&post.method, &post.headers));
        post.insert_header("Idempotency-Key", "k1").expect("header");
        assert!(idempotent(&post.method, &post.headers));
    }

    #[test]
    fn failures_map_to_reasons() {
        assert_eq!(
            classify(&Error::new_up(ErrorType::ConnectRefused)),
            Some(RetryReason::ConnectFailure)
        );
        assert_eq!(
            classify(&Error::new_up(ErrorType::ReadTimedout)),
            Some(RetryReason::PerTryTimeout)
        );
        assert_eq!(
            classify(&Error::new_up(ErrorType::ConnectionClosed)),
            Some(RetryReason::Reset)
        );
        assert_eq!(classify(&Error::new_up(ErrorType::InternalError)), None);
    }

    proptest! {
        /// Backoff stays within [0, min(max, base × 2^(n-1))].
        #[test]
        fn backoff_is_bounded(base in 1u64..100, extra in 0u64..1000, n in 1u32..20, seed in any::<u64>()) {
            let p = RetryPolicy { backoff_base_ms: base, backoff_max_ms: base + extra, ..RetryPolicy::default() };
            let mut rng = fastrand::Rng::with_seed(seed);
            let d = backoff(&p, n, &mut rng).as_millis() as u64;
            let cap = (base.saturating_mul(1 << (n - 1).min(16))).min(base + extra);
            prop_assert!(d <= cap);
        }
    }
}
