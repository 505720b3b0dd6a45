//! [`UpstreamConfig`]: static configuration of a mock upstream.

use bytes::Bytes;

use crate::Latency;

/// Configuration for [`MockUpstream::start`](crate::MockUpstream::start).
///
/// Defaults (from [`UpstreamConfig::new`]): no latency, no periodic errors,
/// body `"<name>\n"`.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamConfig {
    /// Name reported in the `x-upstream` response header. Must be a valid
    /// header value (visible ASCII).
    pub name: String,
    /// Initial latency model; change it later with
    /// [`MockUpstream::set_latency`](crate::MockUpstream::set_latency).
    /// Default [`Latency::None`].
    pub latency: Latency,
    /// `Some((n, status))`: every `n`th non-health-check request (the `n`th,
    /// `2n`th, ... since start or the last
    /// [`reset_counters`](crate::MockUpstream::reset_counters)) is answered
    /// with `status` instead of 200. `n == 0` disables it; an invalid status
    /// becomes 500. Default `None`.
    pub error_every: Option<(u64, u16)>,
    /// Body of successful responses. Default `"<name>\n"`.
    pub body: Bytes,
}

impl UpstreamConfig {
    /// A config with the defaults described on [`UpstreamConfig`].
    pub fn new(name: impl Into<String>) -> Self {
        let name = name.into();
        let body = Bytes::from(format!("{name}\n"));
        UpstreamConfig {
            name,
            latency: Latency::None,
            error_every: None,
            body,
        }
    }

    /// Sets the initial latency model.
    #[must_use]
    pub fn latency(mut self, latency: Latency) -> Self {
        self.latency = latency;
        self
    }

    /// Answers every `n`th request with `status` (see the `error_every`
    /// field).
    #[must_use]
    pub fn error_every(mut self, n: u64, status: u16) -> Self {
        self.error_every = Some((n, status));
        self
    }

    /// Replaces the response body.
    #[must_use]
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn defaults_and_setters() {
        let c = UpstreamConfig::new("alpha");
        assert_eq!(c.name, "alpha");
        assert_eq!(c.body, Bytes::from_static(b"alpha\n"));
        assert_eq!(c.latency, Latency::None);
        assert_eq!(c.error_every, None);

        let c = c
            .latency(Latency::Fixed(Duration::from_millis(3)))
            .error_every(5, 502)
            .body("hello");
        assert_eq!(c.latency, Latency::Fixed(Duration::from_millis(3)));
        assert_eq!(c.error_every, Some((5, 502)));
        assert_eq!(c.body, Bytes::from_static(b"hello"));
    }
}
