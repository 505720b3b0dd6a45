//! The one place where failures become HTTP responses: 502 when the upstream failed, 503 when no
//! endpoint could take the request, 504 when the upstream timed out, 404 when no route matched.

use pingora::{Error, ErrorSource, ErrorType};

/// Our own error for "the chosen subset has no healthy endpoint".
pub const NO_ENDPOINT: ErrorType = ErrorType::CustomCode("no healthy endpoint", 503);
/// Our own error for "the upstream exchange ran past its total timeout".
pub const TOTAL_TIMEOUT: ErrorType = ErrorType::CustomCode("upstream total timeout", 504);
/// The subset's in-flight limit is reached.
pub const CIRCUIT_SUBSET: ErrorType = ErrorType::CustomCode("subset-limit", 503);
/// The chosen endpoint's in-flight limit is reached.
pub const CIRCUIT_ENDPOINT: ErrorType = ErrorType::CustomCode("endpoint-limit", 503);
/// Healthy endpoints exist only in regions the route may not reach.
pub const RESIDENCY: ErrorType = ErrorType::CustomCode("residency", 503);

/// The `x-meridian-reject` value for a refusal the gateway made itself, if it was one.
pub fn reject_reason(e: &Error) -> Option<&'static str> {
    match e.etype() {
        ErrorType::CustomCode(name, _)
            if [CIRCUIT_SUBSET, CIRCUIT_ENDPOINT, RESIDENCY, NO_ENDPOINT]
                .iter()
                .any(|t| t == e.etype()) =>
        {
            Some(match *name {
                "no healthy endpoint" => "no-healthy-endpoint",
                other => other,
            })
        }
        _ => None,
    }
}

/// The gRPC status for an HTTP status we generate: 4 (deadline exceeded) for 504, 12
/// (unimplemented) for 404, else 14 (unavailable).
pub fn grpc_status_for(code: u16) -> u8 {
    match code {
        504 | 408 => 4,
        404 => 12,
        _ => 14,
    }
}

/// The status a client gets for `e`; 0 when the client is gone and nothing can be written.
pub fn status_for(e: &Error) -> u16 {
    use ErrorType::*;
    match e.etype() {
        HTTPStatus(code) | CustomCode(_, code) => *code,
        ConnectTimedout | ReadTimedout | WriteTimedout | TLSHandshakeTimedout
            if e.esource() == &ErrorSource::Upstream =>
        {
            504
        }
        _ => match e.esource() {
            ErrorSource::Upstream => 502,
            ErrorSource::Downstream => match e.etype() {
                WriteError | ReadError | ConnectionClosed => 0,
                ReadTimedout | WriteTimedout => 408,
                _ => 400,
            },
            ErrorSource::Internal | ErrorSource::Unset => match e.etype() {
                ConnectTimedout | ReadTimedout | WriteTimedout => 504,
                ConnectRefused | ConnectNoRoute | ConnectError | TLSHandshakeFailure
                | ConnectionClosed => 502,
                _ => 500,
            },
        },
    }
}

/// A short machine-readable reason for a status we generate.
pub fn reason_for(code: u16) -> &'static str {
    match code {
        404 => "no_route",
        408 => "client_timeout",
        400 => "bad_request",
        405 => "method_not_allowed",
        431 => "header_too_large",
        502 => "upstream_failed",
        503 => "no_healthy_endpoint",
        504 => "upstream_timeout",
        _ => "internal_error",
    }
}

/// The small JSON body sent with a generated error.
pub fn body_for(code: u16, request_id: &str) -> String {
    format!(
        "{{\"error\":\"{}\",\"status\":{code},\"request_id\":\"{request_id}\"}}\n",
        reason_for(code)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_failures_map_to_gateway_codes() {
        assert_eq!(status_for(&Error::new_up(ErrorType::ConnectRefused)), 502);
        assert_eq!(status_for(&Error::new_up(ErrorType::ReadTimedout)), 504);
        assert_eq!(status_for(&Error::new_up(ErrorType::ConnectTimedout)), 504);
        assert_eq!(status_for(&Error::new(NO_ENDPOINT)), 503);
        let e = Error::new_down(ErrorType::ConnectionClosed);
        assert_eq!(status_for(&e), 0);
    }

    #[test]
    fn grpc_codes_and_reject_reasons() {
        assert_eq!(grpc_status_for(504), 4);
        assert_eq!(grpc_status_for(503), 14);
        assert_eq!(grpc_status_for(502), 14);
        assert_eq!(
            reject_reason(&Error::new(CIRCUIT_SUBSET)),
            Some("subset-limit")
        );
        assert_eq!(
            reject_reason(&Error::new(NO_ENDPOINT)),
            Some("no-healthy-endpoint")
        );
        assert_eq!(
            reject_reason(&Error::new_up(ErrorType::ConnectRefused)),
            None
        );
    }

    #[test]
    fn bodies_are_json() {
        let b = body_for(503, "abc");
        let v: serde_json::Value = serde_json::from_str(&b).expect("json");
        assert_eq!(v["error"], "no_healthy_endpoint");
    }
}
