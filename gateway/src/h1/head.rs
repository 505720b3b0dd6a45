//! HTTP/1.x message heads for the gateway's own HTTP/1 engine. A head is parsed once with
//! httparse and kept as offsets into its bytes (no per-header copies), with the body framing it
//! implies (RFC 9112 §6.3). Requests that could be read two ways by two servers (request
//! smuggling) are refused: `Content-Length` together with `Transfer-Encoding`, differing
//! `Content-Length` values, a transfer coding other than a final `chunked`.

use bytes::Bytes;
use http::Method;
use smallvec::SmallVec;

use crate::headers::Headers;

/// Most header fields in one head. Default: 128 (nginx allows about 100 by its buffer size).
pub const MAX_FIELDS: usize = 128;
/// Fields a response head is first parsed for; more take a second parse with room for
/// [`MAX_FIELDS`].
const FEW_FIELDS: usize = 24;
/// Most bytes in one head, request line included. Default: 64 KiB (nginx: 4 × 8 KiB buffers).
pub const MAX_HEAD: usize = 64 * 1024;

/// A byte range in a head.
#[derive(Debug, Clone, Copy, Default)]
pub struct Span {
    start: u32,
    end: u32,
}

impl Span {
    fn of(base: &[u8], part: &[u8]) -> Span {
        let start = part.as_ptr() as usize - base.as_ptr() as usize;
        Span {
            start: start as u32,
            end: (start + part.len()) as u32,
        }
    }

    /// The bytes of this span in `buf`.
    pub fn get<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start as usize..self.end as usize]
    }
}

/// One header field: name and value.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Name, as sent.
    pub name: Span,
    /// Value, without surrounding whitespace.
    pub value: Span,
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the sender closes the connection (responses only).
    Close,
}

/// Why a head was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadError {
    /// Not HTTP/1.x, or malformed: 400.
    Malformed(&'static str),
    /// Over [`MAX_HEAD`] or [`MAX_FIELDS`]: 431.
    TooLarge,
}

/// A parsed request head, owning its bytes.
#[derive(Debug)]
pub struct RequestHead {
    bytes: Bytes,
    /// The method.
    pub method: Method,
    target: Span,
    /// Where the path ends inside the target (the query string starts there).
    path: Span,
    /// The authority of an absolute-form target (`GET http://host/path`), if given so.
    pub(super) authority: Option<Span>,
    /// HTTP/1.0 rather than 1.1.
    pub http10: bool,
    /// Header fields in order.
    pub fields: SmallVec<[Field; 24]>,
    /// How the request body is delimited.
    pub framing: Framing,
    /// The client wants the connection kept open after this exchange.
    pub keep_alive: bool,
    /// `Expect: 100-continue`.
    pub expect_continue: bool,
    /// An upgrade (e.g. WebSocket) is requested: `Upgrade` with `Connection: upgrade`.
    pub upgrade: bool,
    /// The `Connection` header names other fields to drop at this hop.
    pub conn_tokens: bool,
}

/// A parsed response head, owning its bytes.
#[derive(Debug)]
pub struct ResponseHead {
    bytes: Bytes,
    /// Status code.
    pub status: u16,
    reason: Span,
    /// HTTP/1.0 rather than 1.1.
    pub http10: bool,
    /// Header fields in order.
    pub fields: SmallVec<[Field; 24]>,
    /// How the body is delimited (before the request method and status are considered; see
    /// [`ResponseHead::body_framing`]).
    framing: Framing,
    /// The upstream will close the connection after this response.
    pub close: bool,
    /// The `Connection` header names other fields to drop at this hop.
    pub conn_tokens: bool,
}

/// What the framing headers of a head said.
#[derive(Default)]
struct FramingFields {
    length: Option<u64>,
    chunked: bool,
    other_coding: bool,
    te_seen: bool,
    conflicting_length: bool,
    bad_length: bool,
    conn_close: bool,
    conn_keep_alive: bool,
    conn_upgrade: bool,
    conn_tokens: bool,
    expect_continue: bool,
    upgrade: bool,
}

fn scan_fields(fields: &[Field], buf: &[u8]) -> FramingFields {
    let mut f = FramingFields::default();
    for field in fields {
        let name = field.name.get(buf);
        let value = field.value.get(buf);
        if name.eq_ignore_ascii_case(b"content-length") {
            match parse_length(value) {
                Some(n) if f.length.is_some_and(|m| m != n) => f.conflicting_length = true,
                Some(n) => f.length = Some(n),
                None => f.bad_length = true,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            f.te_seen = true;
            for coding in tokens(value) {
                // Only a final `chunked` frames the body; anything after it, or any other
                // coding, leaves the length unknown.
                if coding.eq_ignore_ascii_case(b"chunked") {
                    if f.chunked {
                        f.other_coding = true;
                    }
                    f.chunked = true;
                } else {
                    f.other_coding = true;
                    f.chunked = false;
                }
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for t in tokens(value) {
                if t.eq_ignore_ascii_case(b"close") {
                    f.conn_close = true;
                } else if t.eq_ignore_ascii_case(b"keep-alive") {
                    f.conn_keep_alive = true;
                } else if t.eq_ignore_ascii_case(b"upgrade") {
                    f.conn_upgrade = true;
                    f.conn_tokens = true;
                } else {
                    f.conn_tokens = true;
                }
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            f.expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        } else if name.eq_ignore_ascii_case(b"upgrade") {
            f.upgrade = true;
        }
    }
    f
}

/// Comma-separated tokens of a header value, trimmed, empty ones skipped.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value
        .split(|&b| b == b',')
        .map(|t| t.trim_ascii())
        .filter(|t| !t.is_empty())
}

fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn spans(base: &[u8], headers: &[httparse::Header<'_>]) -> SmallVec<[Field; 24]> {
    headers
        .iter()
        .map(|h| Field {
            name: Span::of(base, h.name.as_bytes()),
            value: Span::of(base, h.value.trim_ascii()),
        })
        .collect()
}

fn parse_error(e: httparse::Error) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => HeadError::TooLarge,
        httparse::Error::Version => HeadError::Malformed("not HTTP/1.x"),
        httparse::Error::Token => HeadError::Malformed("invalid method or header name"),
        httparse::Error::HeaderName => HeadError::Malformed("invalid header name"),
        httparse::Error::HeaderValue => HeadError::Malformed("invalid header value"),
        httparse::Error::NewLine | httparse::Error::Status => {
            HeadError::Malformed("malformed request line")
        }
    }
}

impl RequestHead {
    /// Parses a request head from the start of `buf`. `Ok(None)`: incomplete, read more (the
    /// caller enforces [`MAX_HEAD`]). On success the head's bytes are split off the front of
    /// `buf`.
    pub fn parse(buf: &mut bytes::BytesMut) -> Result<Option<RequestHead>, HeadError> {
        // Uninitialised: an initialised array of 128 fields is 4 KiB written on every parse.
        let mut storage =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
        let mut req = httparse::Request::new(&mut []);
        let len = match req.parse_with_uninit_headers(buf, &mut storage) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(parse_error(e)),
        };
        let base: &[u8] = buf;
        let method = req.method.unwrap_or("GET");
        let method = Method::from_bytes(method.as_bytes())
            .map_err(|_| HeadError::Malformed("invalid method"))?;
        let target_str = req.path.unwrap_or("/");
        let target = Span::of(base, target_str.as_bytes());
        let http10 = req.version == Some(0);
        let fields = spans(base, req.headers);
        let (path, authority) = split_target(base, target_str.as_bytes())?;
        let f = scan_fields(&fields, base);
        if f.te_seen && f.length.is_some() {
            return Err(HeadError::Malformed(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if f.conflicting_length || f.bad_length {
            return Err(HeadError::Malformed("invalid Content-Length"));
        }
        let framing = if f.te_seen {
            if f.other_coding || !f.chunked || http10 {
                return Err(HeadError::Malformed("unsupported Transfer-Encoding"));
            }
            Framing::Chunked
        } else {
            match f.length {
                Some(0) | None => Framing::Empty,
                Some(n) => Framing::Length(n),
            }
        };
        let keep_alive = if http10 {
            f.conn_keep_alive && !f.conn_close
        } else {
            !f.conn_close
        };
        // The usual request is its head alone: the head then takes the whole buffer, which
        // costs no allocation (splitting one buffer in two allocates its shared header).
        let bytes = if len == buf.len() {
            std::mem::take(buf).freeze()
        } else {
            buf.split_to(len).freeze()
        };
        let head = RequestHead {
            bytes,
            method,
            target,
            path,
            authority,
            http10,
            fields,
            framing,
            keep_alive,
            expect_continue: f.expect_continue && !http10,
            upgrade: f.upgrade && f.conn_upgrade,
            conn_tokens: f.conn_tokens,
        };
        if !http10 && !head.has("host") && head.authority.is_none() {
            return Err(HeadError::Malformed("HTTP/1.1 request without Host"));
        }
        // Two Host fields: this hop and the next could route by different ones (RFC 9112
        // section 3.2 asks for a 400).
        let hosts = head
            .fields
            .iter()
            .filter(|f| f.name.get(&head.bytes).eq_ignore_ascii_case(b"host"))
            .count();
        if hosts > 1 {
            return Err(HeadError::Malformed("more than one Host field"));
        }
        Ok(Some(head))
    }

    /// The head's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The path, without the query string.
    pub fn path(&self) -> &str {
        match std::str::from_utf8(self.path.get(&self.bytes)) {
            Ok(p) if !p.is_empty() => p,
            _ => "/",
        }
    }

    /// The path and query to send upstream (origin form).
    pub fn origin_target(&self) -> &[u8] {
        let t = self.target.get(&self.bytes);
        match self.authority {
            // Absolute form: from the path on.
            Some(_) => &self.bytes[self.path.start as usize..self.target.end as usize],
            None => t,
        }
    }

    /// The host to route by: an absolute target's authority, which wins over the `Host` field
    /// (RFC 9112 section 3.2.2), else the `Host` field.
    pub fn host_raw(&self) -> &str {
        std::str::from_utf8(self.host_value().unwrap_or(b"")).unwrap_or("")
    }

    /// The `Host` value to send upstream: the same host the request is routed by.
    pub fn host_value(&self) -> Option<&[u8]> {
        self.authority
            .map(|a| a.get(&self.bytes))
            .or_else(|| self.first("host"))
    }

    /// The bytes of `span`.
    pub fn get(&self, span: Span) -> &[u8] {
        span.get(&self.bytes)
    }

    /// True when the `Connection` header lists `name` (a field to drop at this hop).
    pub fn connection_lists(&self, name: &[u8]) -> bool {
        self.conn_tokens && lists(&self.fields, &self.bytes, name)
    }
}

/// True when a `Connection` field among `fields` lists `name`.
fn lists(fields: &[Field], buf: &[u8], name: &[u8]) -> bool {
    fields
        .iter()
        .filter(|f| f.name.get(buf).eq_ignore_ascii_case(b"connection"))
        .any(|f| tokens(f.value.get(buf)).any(|t| t.eq_ignore_ascii_case(name)))
}

/// (path span, authority span) of a request target: origin form (`/a?b`), absolute form
/// (`http://host/a?b`) or asterisk form (`*`).
fn split_target(base: &[u8], t: &[u8]) -> Result<(Span, Option<Span>), HeadError> {
    let path_of = |p: &[u8]| {
        let end = p.iter().position(|&b| b == b'?').unwrap_or(p.len());
        Span::of(base, &p[..end])
    };
    if t.first() == Some(&b'/') || t == b"*" {
        return Ok((path_of(t), None));
    }
    let rest = if t.len() > 7 && t[..7].eq_ignore_ascii_case(b"http://") {
        &t[7..]
    } else if t.len() > 8 && t[..8].eq_ignore_ascii_case(b"https://") {
        &t[8..]
    } else {
        return Err(HeadError::Malformed("invalid request target"));
    };
    let end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let authority = &rest[..end];
    if authority.is_empty() {
        return Err(HeadError::Malformed("invalid request target"));
    }
    let path = &rest[end..];
    if path.first() != Some(&b'/') {
        // `http://host` or `http://host?q`: the path is `/`; no bytes for it here, so point at
        // an empty span and let the caller use "/".
        return Ok((Span::of(base, &path[..0]), Some(Span::of(base, authority))));
    }
    Ok((path_of(path), Some(Span::of(base, authority))))
}

impl Headers for RequestHead {
    fn first(&self, name: &str) -> Option<&[u8]> {
        let buf = &self.bytes;
        self.fields
            .iter()
            .find(|f| f.name.get(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| f.value.get(buf))
    }

    fn find_map<'a, T>(
        &'a self,
        name: &str,
        mut f: impl FnMut(&'a [u8]) -> Option<T>,
    ) -> Option<T> {
        let buf = &self.bytes;
        self.fields
            .iter()
            .filter(|x| x.name.get(buf).eq_ignore_ascii_case(name.as_bytes()))
            .find_map(|x| f(x.value.get(buf)))
    }
}

impl ResponseHead {
    /// Parses a response head from the start of `buf`; `Ok(None)` when incomplete. On success
    /// the head's bytes are split off the front of `buf`.
    pub fn parse(buf: &mut bytes::BytesMut) -> Result<Option<ResponseHead>, HeadError> {
        // A response's fields are first parsed into room for a few, which is all most have:
        // httparse wants them initialised, and 128 of them are 4 KiB written on every parse.
        let mut few = [httparse::EMPTY_HEADER; FEW_FIELDS];
        let mut many = Vec::new();
        let mut resp = httparse::Response::new(&mut few);
        let mut parsed = resp.parse(buf);
        if matches!(parsed, Err(httparse::Error::TooManyHeaders)) {
            many.resize(MAX_FIELDS, httparse::EMPTY_HEADER);
            resp = httparse::Response::new(&mut many);
            parsed = resp.parse(buf);
        }
        let len = match parsed {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(parse_error(e)),
        };
        let base: &[u8] = buf;
        let status = resp.code.unwrap_or(0);
        if !(100..=999).contains(&status) {
            return Err(HeadError::Malformed("invalid status"));
        }
        let reason = Span::of(base, resp.reason.unwrap_or("").as_bytes());
        let http10 = resp.version == Some(0);
        let fields = spans(base, resp.headers);
        let f = scan_fields(&fields, base);
        if f.conflicting_length || (f.bad_length && !f.te_seen) {
            return Err(HeadError::Malformed("invalid Content-Length"));
        }
        // RFC 9112 §6.3: Transfer-Encoding wins over Content-Length; a coding we cannot frame
        // means the body runs to the close.
        let framing = if f.te_seen {
            if f.chunked && !f.other_coding {
                Framing::Chunked
            } else {
                Framing::Close
            }
        } else {
            match f.length {
                Some(0) => Framing::Empty,
                Some(n) => Framing::Length(n),
                None => Framing::Close,
            }
        };
        let close = f.conn_close
            || (http10 && !f.conn_keep_alive)
            || (framing == Framing::Close && status >= 200 && status != 204 && status != 304);
        let bytes = buf.split_to(len).freeze();
        Ok(Some(ResponseHead {
            bytes,
            status,
            reason,
            http10,
            fields,
            framing,
            close,
            conn_tokens: f.conn_tokens,
        }))
    }

    /// The head's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The reason phrase.
    pub fn reason(&self) -> &[u8] {
        self.reason.get(&self.bytes)
    }

    /// The bytes of `span`.
    pub fn get(&self, span: Span) -> &[u8] {
        span.get(&self.bytes)
    }

    /// The body's framing for a response to a request with `method`: none for HEAD, 1xx, 204
    /// and 304 whatever the headers say (RFC 9112 §6.3 rules 1 and 2).
    pub fn body_framing(&self, method: &Method) -> Framing {
        if *method == Method::HEAD
            || (100..200).contains(&self.status)
            || self.status == 204
            || self.status == 304
        {
            Framing::Empty
        } else {
            self.framing
        }
    }

    /// True when the `Connection` header lists `name`.
    pub fn connection_lists(&self, name: &[u8]) -> bool {
        self.conn_tokens && lists(&self.fields, &self.bytes, name)
    }

    /// The first value of header `name` (lower case).
    pub fn first(&self, name: &str) -> Option<&[u8]> {
        let buf = &self.bytes;
        self.fields
            .iter()
            .find(|f| f.name.get(buf).eq_ignore_ascii_case(name.as_bytes()))
            .map(|f| f.value.get(buf))
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;

    fn req(text: &str) -> Result<Option<RequestHead>, HeadError> {
        RequestHead::parse(&mut BytesMut::from(text))
    }

    #[test]
    fn a_simple_get_and_what_follows_it() {
        let mut buf =
            BytesMut::from("GET /a/b?x=1 HTTP/1.1\r\nHost: Api.Test\r\nX-K: v \r\n\r\nNEXT");
        let h = RequestHead::parse(&mut buf).expect("ok").expect("complete");
        assert_eq!(&buf[..], b"NEXT", "only the head is taken");
        assert_eq!(h.method, Method::GET);
        assert_eq!(h.path(), "/a/b");
        assert_eq!(h.origin_target(), b"/a/b?x=1");
        assert_eq!(h.host_raw(), "Api.Test");
        assert_eq!(h.first("x-k"), Some(&b"v"[..]));
        assert_eq!(h.framing, Framing::Empty);
        assert!(h.keep_alive && !h.http10 && !h.upgrade);
    }

    #[test]
    fn partial_heads_ask_for_more() {
        assert!(req("GET / HTTP/1.1\r\nHost: a").expect("ok").is_none());
    }

    #[test]
    fn absolute_targets_route_by_authority() {
        let h = req("GET http://api.test:8080/v?q HTTP/1.1\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert_eq!(h.host_raw(), "api.test:8080");
        assert_eq!(h.path(), "/v");
        assert_eq!(h.origin_target(), b"/v?q");
    }

    #[test]
    fn smuggling_shapes_are_refused() {
        for bad in [
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +3\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET nope HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            assert!(
                matches!(req(bad), Err(HeadError::Malformed(_))),
                "accepted: {bad:?}"
            );
        }
        // The same length twice is one length.
        let h = req("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert_eq!(h.framing, Framing::Length(3));
    }

    #[test]
    fn connection_semantics() {
        let h = req("GET / HTTP/1.0\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(!h.keep_alive, "1.0 closes by default");
        let h = req("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(h.keep_alive);
        let h =
            req("GET / HTTP/1.1\r\nHost: a\r\nConnection: close, x-secret\r\nX-Secret: 1\r\n\r\n")
                .expect("ok")
                .expect("complete");
        assert!(!h.keep_alive);
        assert!(h.connection_lists(b"X-Secret"));
        let h =
            req("GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
                .expect("ok")
                .expect("complete");
        assert!(h.upgrade);
    }

    #[test]
    fn two_host_fields_are_refused_and_an_absolute_target_wins_over_host() {
        let two = "GET / HTTP/1.1\r\nHost: a.example\r\nhost: b.example\r\n\r\n";
        assert!(matches!(req(two), Err(HeadError::Malformed(_))));
        let abs = "GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\n\r\n";
        let h = req(abs).expect("ok").expect("complete");
        assert_eq!(h.host_raw(), "a.example");
        assert_eq!(h.host_value(), Some(&b"a.example"[..]));
        assert_eq!(h.origin_target(), b"/x");
    }

    #[test]
    fn too_many_fields_is_431() {
        let mut text = String::from("GET / HTTP/1.1\r\nHost: a\r\n");
        for i in 0..MAX_FIELDS + 1 {
            text.push_str(&format!("x-{i}: v\r\n"));
        }
        text.push_str("\r\n");
        assert_eq!(req(&text).err(), Some(HeadError::TooLarge));
    }

    #[test]
    fn a_response_with_more_fields_than_the_first_parse_has_room_for_is_parsed_whole() {
        let head = |n: usize| {
            let mut text = String::from("HTTP/1.1 200 OK\r\n");
            for i in 0..n {
                text.push_str(&format!("x-{i}: v{i}\r\n"));
            }
            text.push_str("Content-Length: 3\r\n\r\nabc");
            BytesMut::from(text.as_str())
        };
        let mut buf = head(FEW_FIELDS + 20);
        let r = ResponseHead::parse(&mut buf)
            .expect("ok")
            .expect("complete");
        assert_eq!(r.body_framing(&Method::GET), Framing::Length(3));
        assert_eq!(r.fields.len(), FEW_FIELDS + 21);
        let last = r.fields[FEW_FIELDS + 19];
        assert_eq!(
            r.get(last.value),
            format!("v{}", FEW_FIELDS + 19).as_bytes()
        );
        assert_eq!(&buf[..], b"abc");
        let mut buf = head(MAX_FIELDS);
        assert_eq!(
            ResponseHead::parse(&mut buf).err(),
            Some(HeadError::TooLarge)
        );
    }

    #[test]
    fn response_framing() {
        let parse = |t: &str| {
            ResponseHead::parse(&mut BytesMut::from(t))
                .expect("ok")
                .expect("complete")
        };
        let r = parse("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(r.body_framing(&Method::GET), Framing::Length(5));
        assert_eq!(r.body_framing(&Method::HEAD), Framing::Empty);
        assert!(!r.close);
        let r = parse("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n");
        assert_eq!(r.body_framing(&Method::GET), Framing::Chunked);
        let r = parse("HTTP/1.1 200 OK\r\n\r\n");
        assert_eq!(r.body_framing(&Method::GET), Framing::Close);
        assert!(r.close);
        let r = parse("HTTP/1.1 304 Not Modified\r\n\r\n");
        assert_eq!(r.body_framing(&Method::GET), Framing::Empty);
        assert!(!r.close);
        let r = parse("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n");
        assert!(r.close, "1.0 closes unless keep-alive");
        assert_eq!(r.reason(), b"OK");
    }
}
