//! Request identity: `X-Request-Id` (kept when sane, else generated) and W3C `traceparent`
//! (continued with a new span id for the upstream hop, or started when absent or malformed).

/// Longest incoming request id we keep.
const MAX_REQUEST_ID: usize = 128;

/// A random 128-bit id as 32 lower-case hex digits.
pub fn new_id128(rng: &mut fastrand::Rng) -> String {
    format!("{:016x}{:016x}", rng.u64(..), rng.u64(..))
}

/// The request id to use: the client's when it is short printable ASCII, else a new one.
pub fn request_id(incoming: Option<&[u8]>, rng: &mut fastrand::Rng) -> String {
    match incoming {
        Some(v)
            if !v.is_empty()
                && v.len() <= MAX_REQUEST_ID
                && v.iter().all(|b| b.is_ascii_graphic()) =>
        {
            String::from_utf8_lossy(v).into_owned()
        }
        _ => new_id128(rng),
    }
}

/// The `traceparent` to send upstream: same trace id and flags as the incoming one with our new
/// span as parent, or a new trace when the incoming header is absent or malformed.
pub fn traceparent(incoming: Option<&[u8]>, rng: &mut fastrand::Rng) -> String {
    let span = format!("{:016x}", rng.u64(1..));
    if let Some((trace, flags)) = incoming.and_then(parse) {
        return format!("00-{trace}-{span}-{flags}");
    }
    let mut trace = new_id128(rng);
    if trace.bytes().all(|b| b == b'0') {
        trace.replace_range(31..32, "1");
    }
    format!("00-{trace}-{span}-00")
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
        assert!(
            out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{out}"
        );
        assert!(out.ends_with("-01"));
        assert!(!out.contains("00f067aa0ba902b7"), "a new span id is used");
        for bad in [
            &b"garbage"[..],
            b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let started = traceparent(Some(bad), &mut rng);
            assert_eq!(started.len(), 55);
            assert!(parse(started.as_bytes()).is_some(), "{started}");
        }
    }

    #[test]
    fn request_ids_are_kept_only_when_sane() {
        let mut rng = fastrand::Rng::with_seed(6);
        assert_eq!(request_id(Some(b"abc-123"), &mut rng), "abc-123");
        assert_eq!(request_id(Some(b"has space"), &mut rng).len(), 32);
        assert_eq!(request_id(None, &mut rng).len(), 32);
    }
}
