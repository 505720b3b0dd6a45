//! Route matching, compiled once per table.
//!
//! Precedence (also in the table docs): routes for the request's exact host first, then
//! wildcard hosts (`*.example.com`, the longest suffix first), then routes with no host. Within
//! one of those groups: an exact path beats a prefix path (the longest prefix first), which beats
//! a regex path, which beats a route with no path condition; ties keep file order. The first
//! route in that order whose method and header conditions also hold wins.

use std::borrow::Cow;
use std::collections::HashMap;

/// The route indexes' maps. Their keys come from the routing table, never from clients (a
/// request's host and path are only looked up), so a fast unkeyed hash is safe: SipHash was
/// 0.3 % of the CPU samples of a proxied request, for the three or more lookups each
/// request makes.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::FixedState>;

use http::{HeaderMap, HeaderName, Method};

use crate::headers::Headers;
use meridian_api::{Route, RouteMatch};
use regex::Regex;

/// A compiled path condition.
#[derive(Debug)]
enum PathRule {
    Any,
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

/// A compiled header condition.
#[derive(Debug)]
struct HeaderRule {
    name: HeaderName,
    exact: Option<String>,
    regex: Option<Regex>,
}

#[derive(Debug)]
struct Rule {
    route: usize,
    path: PathRule,
    methods: Vec<Method>,
    headers: Vec<HeaderRule>,
}

/// Prefixes of one length and the rules (in precedence order) that have them.
type PrefixMap = FastMap<Box<[u8]>, Vec<usize>>;

/// The rules of one host group, indexed by path so that a lookup costs about the same with ten
/// routes or ten thousand: a hash lookup for exact paths, one hash lookup per distinct prefix
/// length, and a scan only of the regex and path-less rules. Within each index the rules keep
/// precedence order, and the indexes are visited in precedence order, so the first rule that
/// passes its method and header conditions is the one a scan of the sorted list would find.
#[derive(Debug, Default)]
struct Group {
    exact: FastMap<Box<str>, Vec<usize>>,
    /// `(prefix length, prefix -> rules)`, longest first.
    prefix: Vec<(usize, PrefixMap)>,
    /// Regex rules, then rules without a path condition.
    rest: Vec<usize>,
}

impl Group {
    /// Indexes `sorted`, which is in precedence order.
    fn new(rules: &[Rule], sorted: &[usize]) -> Group {
        let mut g = Group::default();
        for &i in sorted {
            match &rules[i].path {
                PathRule::Exact(p) => g.exact.entry(p.as_str().into()).or_default().push(i),
                PathRule::Prefix(p) => {
                    let slot = match g.prefix.iter().position(|(len, _)| *len == p.len()) {
                        Some(slot) => slot,
                        None => {
                            g.prefix.push((p.len(), PrefixMap::default()));
                            g.prefix.len() - 1
                        }
                    };
                    g.prefix[slot]
                        .1
                        .entry(p.as_bytes().into())
                        .or_default()
                        .push(i);
                }
                PathRule::Regex(_) | PathRule::Any => g.rest.push(i),
            }
        }
        g.prefix.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        g
    }

    /// The candidates for `path`, in precedence order (their path condition may still need
    /// checking only for the regex and path-less rules).
    fn candidates<'a>(&'a self, path: &'a str) -> impl Iterator<Item = usize> + 'a {
        let exact = self.exact.get(path).into_iter().flatten();
        let prefix = self.prefix.iter().flat_map(move |(len, map)| {
            path.as_bytes()
                .get(..*len)
                .and_then(|head| map.get(head))
                .into_iter()
                .flatten()
        });
        exact.chain(prefix).chain(self.rest.iter()).copied()
    }
}

/// The compiled router: maps a request to a route index.
#[derive(Debug, Default)]
pub struct Router {
    rules: Vec<Rule>,
    exact: FastMap<String, Group>,
    /// `(".example.com", rules)`, longest suffix first.
    wildcard: Vec<(String, Group)>,
    any_host: Group,
}

impl Router {
    /// Compiles validated routes. A regex that fails here was already rejected by validation, so
    /// such a route only loses its path rule to `Any`-never-matches, never panics.
    pub fn new(routes: &[Route]) -> Router {
        let mut rules = Vec::with_capacity(routes.len());
        let mut exact: HashMap<String, Vec<usize>> = HashMap::new();
        let mut wildcard: Vec<(String, Vec<usize>)> = Vec::new();
        let mut any_host = Vec::new();
        for (i, route) in routes.iter().enumerate() {
            let m = &route.matcher;
            let rule = rules.len();
            rules.push(compile(i, m));
            if m.hosts.is_empty() {
                any_host.push(rule);
            }
            for h in &m.hosts {
                let h = h.to_ascii_lowercase();
                match h.strip_prefix('*') {
                    Some(suffix) => match wildcard.iter_mut().find(|w| w.0 == suffix) {
                        Some(w) => w.1.push(rule),
                        None => wildcard.push((suffix.to_string(), vec![rule])),
                    },
                    None => exact.entry(h).or_default().push(rule),
                }
            }
        }
        wildcard.sort_by_key(|w| std::cmp::Reverse(w.0.len()));
        let group = |mut v: Vec<usize>| {
            v.sort_by_key(|&i| precedence(&rules[i]));
            Group::new(&rules, &v)
        };
        let exact = exact.into_iter().map(|(h, v)| (h, group(v))).collect();
        let wildcard = wildcard.into_iter().map(|(s, v)| (s, group(v))).collect();
        let any_host = group(any_host);
        Router {
            rules,
            exact,
            wildcard,
            any_host,
        }
    }

    /// The route index for a request, if any route takes it. `host` is lower case, without port.
    pub fn find<H: Headers>(
        &self,
        host: &str,
        path: &str,
        method: &Method,
        headers: &H,
    ) -> Option<usize> {
        let pass = |i: usize| {
            let rule = &self.rules[i];
            matches(rule, path, method, headers).then_some(rule.route)
        };
        if let Some(found) = self
            .exact
            .get(host)
            .and_then(|g| g.candidates(path).find_map(pass))
        {
            return Some(found);
        }
        for (suffix, g) in &self.wildcard {
            if host.len() > suffix.len() && host.ends_with(suffix.as_str()) {
                if let Some(found) = g.candidates(path).find_map(pass) {
                    return Some(found);
                }
            }
        }
        self.any_host.candidates(path).find_map(pass)
    }
}

/// Sort key: exact paths, then prefixes longest first, then regexes, then no path; then order.
fn precedence(rule: &Rule) -> (u8, std::cmp::Reverse<usize>, usize) {
    let (class, len) = match &rule.path {
        PathRule::Exact(_) => (0, 0),
        PathRule::Prefix(p) => (1, p.len()),
        PathRule::Regex(_) => (2, 0),
        PathRule::Any => (3, 0),
    };
    (class, std::cmp::Reverse(len), rule.route)
}

fn compile(route: usize, m: &RouteMatch) -> Rule {
    let path = match &m.path {
        None => PathRule::Any,
        Some(p) => match (&p.exact, &p.prefix, &p.regex) {
            (Some(e), _, _) => PathRule::Exact(e.clone()),
            (_, Some(pre), _) => PathRule::Prefix(pre.clone()),
            (_, _, Some(re)) => match Regex::new(re) {
                Ok(re) => PathRule::Regex(re),
                // Unreachable for a validated table; a route that cannot compile takes nothing.
                Err(_) => PathRule::Exact(String::from("\0")),
            },
            _ => PathRule::Any,
        },
    };
    let methods = m
        .methods
        .iter()
        .filter_map(|s| Method::from_bytes(s.as_bytes()).ok())
        .collect();
    let headers = m
        .headers
        .iter()
        .filter_map(|h| {
            Some(HeaderRule {
                name: HeaderName::from_bytes(h.name.as_bytes()).ok()?,
                exact: h.exact.clone(),
                regex: h.regex.as_deref().and_then(|r| Regex::new(r).ok()),
            })
        })
        .collect();
    Rule {
        route,
        path,
        methods,
        headers,
    }
}

fn matches<H: Headers>(rule: &Rule, path: &str, method: &Method, headers: &H) -> bool {
    let path_ok = match &rule.path {
        PathRule::Any => true,
        PathRule::Exact(e) => path == e,
        PathRule::Prefix(p) => path.starts_with(p.as_str()),
        PathRule::Regex(re) => re.is_match(path),
    };
    if !path_ok || !(rule.methods.is_empty() || rule.methods.contains(method)) {
        return false;
    }
    rule.headers.iter().all(|h| {
        let Some(v) = headers.first(h.name.as_str()) else {
            return false;
        };
        let Ok(v) = std::str::from_utf8(v) else {
            return false;
        };
        h.exact.as_deref().is_none_or(|e| e == v)
            && h.regex.as_ref().is_none_or(|re| re.is_match(v))
    })
}

/// The request's host, lower case and without port, from `Host` or the URI's authority.
pub fn request_host<'a>(headers: &'a HeaderMap, uri: &'a http::Uri) -> Cow<'a, str> {
    let raw = headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    crate::headers::host_of(raw)
}

#[cfg(test)]
mod tests;
