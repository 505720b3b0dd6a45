//! Request identity: `X-Request-Id` (kept when sane, else generated) and W3C `traceparent`
//! (continued with a new span id for the upstream hop, or started when absent or malformed).

use http::HeaderValue;

/// Longest incoming request id we keep.
const MAX_REQUEST_ID: usize = 128;

const HEX: &[u8; 16] = b"0123456789abcdef";

/// Writes `v` as 16 lower-case hex digits into `out`.
fn hex16(v: u64, out: &mut [u8]) {
    for (i, b) in out[..16].iter_mut().enumerate() {
        *b = HEX[((v >> (60 - 4 * i)) & 0xf) as usize];
    }
}

/// A header value from bytes already known to be visible ASCII (one allocation, no check that
/// can fail on our own output).
fn value(bytes: &[u8]) -> HeaderValue {
    HeaderValue::from_bytes(bytes).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// A random 128-bit id as 32 lower-case hex digits.
pub fn new_id128(rng: &mut fastrand::Rng) -> HeaderValue {
    let mut buf = [0u8; 32];
    hex16(rng.u64(..), &mut buf[..16]);
    hex16(rng.u64(..), &mut buf[16..]);
    value(&buf)
}

/// The request id to use: the client's when it is short printable ASCII, else a new one.
pub fn request_id(incoming: Option<&[u8]>, rng: &mut fastrand::Rng) -> HeaderValue {
    match incoming {
        Some(v)
            if !v.is_empty()
                && v.len() <= MAX_REQUEST_ID
                && v.iter().all(|b| b.is_ascii_graphic()) =>
        {
            value(v)
        }
        _ => new_id128(rng),
    }
}

/// The `traceparent` to send upstream: same trace id and flags as the incoming one with our new
/// span as parent, or a new trace when the incoming header is absent or malformed.
pub fn traceparent(incoming: Option<&[u8]>, rng: &mut fastrand::Rng) -> HeaderValue {
    // 00-<32 hex trace>-<16 hex span>-<2 hex flags>
    let mut buf = *b"00-00000000000000000000000000000000-0000000000000000-00";
    hex16(rng.u64(1..), &mut buf[36..52]);
    if let Some((trace, flags)) = incoming.and_then(parse) {
        buf[3..35].copy_from_slice(trace.as_bytes());
        buf[53..55].copy_from_slice(flags.as_bytes());
        return value(&buf);
    }
    hex16(rng.u64(..), &mut buf[3..19]);
    // The low half is never zero, so the trace id is never all zeros (invalid).
    hex16(rng.u64(1..), &mut buf[19..35]);
    value(&buf)
}

/// `(trace id, flags)` of a valid version-00 traceparent.
fn parse(v: &[u8]) -> Option<(&str, &str)> {
    let s = std::str::from_utf8(v).ok()?;
    let mut parts = s.split('-');
    let (ver, trace, parent, flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |p: &str, n: usize| {
        p.len() == n
            && p.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let ok = ver == "00"
        && parts.next().is_none()
        && hex(trace, 32)
        && hex(parent, 16)
        && hex(flags, 2)
        && trace.bytes().any(|b| b != b'0')
        && parent.bytes().any(|b| b != b'0');
    ok.then_some((trace, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_continues_or_starts() {
        let mut rng = fastrand::Rng::with_seed(5);
        let incoming = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let out = traceparent(Some(incoming), &mut rng);
        let out = out.to_str().expect("ascii");
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(out.ends_with("-01"));
        assert!(!out.contains("00f067aa0ba902b7"), "a new span id is used");
        assert!(parse(out.as_bytes()).is_some(), "{out}");
        let fresh = traceparent(None, &mut rng);
        let (trace, flags) = parse(fresh.as_bytes()).expect("a started trace is valid");
        assert_eq!(flags, "00");
        assert_ne!(trace, "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            &b"garbage"[..],
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let started = traceparent(Some(bad), &mut rng);
            assert_eq!(started.len(), 55);
            assert!(parse(started.as_bytes()).is_some(), "{started:?}");
        }
    }

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        let mut rng = fastrand::Rng::with_seed(6);
        assert_eq!(request_id(Some(b"abc-123"), &mut rng), "abc-123");
        assert_eq!(request_id(Some(b"has space"), &mut rng).len(), 32);
        assert_eq!(request_id(None, &mut rng).len(), 32);
        let id = request_id(None, &mut rng);
        assert!(id.as_bytes().iter().all(|b| HEX.contains(b)), "{id:?}");
        assert_ne!(id, request_id(None, &mut rng), "ids differ");
    }
}
