//! Read-only access to request headers, whichever engine parsed them: Pingora's `HeaderMap`, or
//! the HTTP/1 engine's head, which points into its read buffer. Routing, the split, the retry
//! rules and tracing read headers only through [`Headers`], so both engines decide alike.

/// Header lookup by lower-case name.
pub trait Headers {
    /// The first value of header `name` (given in lower case), if there is one.
    fn first(&self, name: &str) -> Option<&[u8]>;

    /// Calls `f` on each value of header `name` in order, and returns its first `Some`.
    fn find_map<'a, T>(&'a self, name: &str, f: impl FnMut(&'a [u8]) -> Option<T>) -> Option<T>;

    /// True when header `name` is present.
    fn has(&self, name: &str) -> bool {
        self.first(name).is_some()
    }
}

impl Headers for http::HeaderMap {
    fn first(&self, name: &str) -> Option<&[u8]> {
        self.get(name).map(|v| v.as_bytes())
    }

    fn find_map<'a, T>(
        &'a self,
        name: &str,
        mut f: impl FnMut(&'a [u8]) -> Option<T>,
    ) -> Option<T> {
        self.get_all(name).iter().find_map(|v| f(v.as_bytes()))
    }
}

/// The host a request is for, lower case and without port, from a `Host` header value or an
/// absolute URI's authority. Borrows unless the name has upper case in it.
pub fn host_of(raw: &str) -> std::borrow::Cow<'_, str> {
    use std::borrow::Cow;
    let no_port = if raw.starts_with('[') {
        raw.split_once(']').map(|(h, _)| &h[1..]).unwrap_or(raw)
    } else {
        raw.rsplit_once(':').map(|(h, _)| h).unwrap_or(raw)
    };
    // A fully qualified name may end with a dot (`api.example.com.`): the same host.
    let no_port = no_port.strip_suffix('.').unwrap_or(no_port);
    if no_port.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(no_port.to_ascii_lowercase())
    } else {
        Cow::Borrowed(no_port)
    }
}
