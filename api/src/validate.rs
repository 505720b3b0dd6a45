//! Whole-table validation. Collects every problem with its path and never panics; a table that
//! fails here is never applied.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use crate::errors::{index, join, Errors};
use crate::table::{Endpoint, Route, Table};

/// Upper bound on any timeout, so a typo such as an extra zero is caught: one hour.
pub const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// Checks a parsed table. `Ok(())` means it may be applied.
pub fn validate_table(t: &Table) -> Result<(), Errors> {
    let mut errs = Errors::default();
    let mut subset_names = BTreeSet::new();
    for (i, s) in t.subsets.iter().enumerate() {
        let p = index("subsets", i);
        if !valid_subset_name(&s.name) {
            errs.push(
                join(&p, "name"),
                format!("'{}' must look like service@version", s.name),
            );
        }
        if !subset_names.insert(s.name.as_str()) {
            errs.push(join(&p, "name"), format!("duplicate subset '{}'", s.name));
        }
        if let Some(o) = &s.outlier {
            let op = join(&p, "outlier");
            if o.consecutive_failures == 0 {
                errs.push(join(&op, "consecutive_failures"), "must be >= 1");
            }
            if o.base_ejection_ms == 0 || o.base_ejection_ms > MAX_TIMEOUT_MS {
                errs.push(
                    join(&op, "base_ejection_ms"),
                    format!("must be between 1 and {MAX_TIMEOUT_MS}"),
                );
            }
            if o.max_ejection_ms < o.base_ejection_ms || o.max_ejection_ms > MAX_TIMEOUT_MS {
                errs.push(
                    join(&op, "max_ejection_ms"),
                    format!("must be between base_ejection_ms and {MAX_TIMEOUT_MS}"),
                );
            }
            if o.max_ejection_percent > 100 {
                errs.push(join(&op, "max_ejection_percent"), "must be <= 100");
            }
        }
        if let Some(l) = &s.limits {
            let lp = join(&p, "limits");
            if l.max_inflight == 0 {
                errs.push(join(&lp, "max_inflight"), "must be >= 1");
            }
            if l.max_inflight_per_endpoint == 0 {
                errs.push(join(&lp, "max_inflight_per_endpoint"), "must be >= 1");
            }
        }
        let mut seen = BTreeSet::new();
        for (j, e) in s.endpoints.iter().enumerate() {
            let ep = index(&join(&p, "endpoints"), j);
            check_endpoint(e, &ep, &mut errs);
            if !seen.insert(e.address.as_str()) {
                errs.push(
                    join(&ep, "address"),
                    format!("duplicate endpoint '{}' in this subset", e.address),
                );
            }
        }
    }

    let mut region_names = BTreeSet::new();
    for (i, r) in t.regions.iter().enumerate() {
        let p = index("regions", i);
        if r.name.trim().is_empty() {
            errs.push(join(&p, "name"), "must not be empty");
        }
        if !region_names.insert(r.name.as_str()) {
            errs.push(join(&p, "name"), format!("duplicate region '{}'", r.name));
        }
    }
    for (i, r) in t.regions.iter().enumerate() {
        let p = join(&index("regions", i), "failover");
        for (j, f) in r.failover.iter().enumerate() {
            if !region_names.contains(f.as_str()) {
                errs.push(index(&p, j), format!("unknown region '{f}'"));
            } else if *f == r.name {
                errs.push(index(&p, j), "a region cannot fail over to itself");
            }
        }
    }

    let mut route_names = BTreeSet::new();
    for (i, r) in t.routes.iter().enumerate() {
        let p = index("routes", i);
        if !route_names.insert(r.name.as_str()) {
            errs.push(join(&p, "name"), format!("duplicate route '{}'", r.name));
        }
        check_route(r, &p, &subset_names, &mut errs);
        check_policies(r, &p, &region_names, &mut errs);
    }
    errs.into_result(())
}

fn valid_subset_name(name: &str) -> bool {
    match name.split_once('@') {
        Some((svc, ver)) => !svc.is_empty() && !ver.is_empty() && !ver.contains('@'),
        None => false,
    }
}

fn check_endpoint(e: &Endpoint, p: &str, errs: &mut Errors) {
    if e.address.parse::<SocketAddr>().is_err() {
        errs.push(
            join(p, "address"),
            format!("'{}' is not an ip:port address", e.address),
        );
    } else if e.address.ends_with(":0") {
        errs.push(join(p, "address"), "port must not be 0");
    }
    if e.region.trim().is_empty() {
        errs.push(join(p, "region"), "must not be empty");
    }
    if e.weight < 1 {
        errs.push(join(p, "weight"), "must be >= 1");
    }
    if e.sni.is_some() && !e.tls {
        errs.push(join(p, "sni"), "only applies when tls is true");
    }
}

fn check_route(r: &Route, p: &str, subsets: &BTreeSet<&str>, errs: &mut Errors) {
    if r.name.trim().is_empty() {
        errs.push(join(p, "name"), "must not be empty");
    }
    let m = join(p, "match");
    for (j, h) in r.matcher.hosts.iter().enumerate() {
        let hp = index(&join(&m, "hosts"), j);
        let bare = h.strip_prefix("*.").unwrap_or(h);
        if bare.is_empty() || bare.contains('*') || bare.contains(':') || bare.contains('/') {
            errs.push(
                hp,
                format!("'{h}' must be a host name or '*.suffix', without port"),
            );
        }
    }
    if let Some(path) = &r.matcher.path {
        let pp = join(&m, "path");
        let given = [&path.exact, &path.prefix, &path.regex]
            .iter()
            .filter(|v| v.is_some())
            .count();
        if given != 1 {
            errs.push(pp.clone(), "give exactly one of exact, prefix or regex");
        }
        for (name, v) in [("exact", &path.exact), ("prefix", &path.prefix)] {
            if let Some(s) = v {
                if !s.starts_with('/') {
                    errs.push(join(&pp, name), format!("'{s}' must start with '/'"));
                }
            }
        }
        if let Some(s) = &path.regex {
            if let Err(e) = regex::Regex::new(s) {
                errs.push(join(&pp, "regex"), format!("invalid regex: {e}"));
            }
        }
    }
    for (j, meth) in r.matcher.methods.iter().enumerate() {
        if meth.is_empty() || !meth.bytes().all(|b| b.is_ascii_uppercase()) {
            errs.push(
                index(&join(&m, "methods"), j),
                format!("'{meth}' must be an upper-case method"),
            );
        }
    }
    for (j, h) in r.matcher.headers.iter().enumerate() {
        let hp = index(&join(&m, "headers"), j);
        if !is_header_name(&h.name) {
            errs.push(
                join(&hp, "name"),
                format!("'{}' is not a header name", h.name),
            );
        }
        if h.exact.is_some() && h.regex.is_some() {
            errs.push(hp.clone(), "give exact or regex, not both");
        }
        if let Some(re) = &h.regex {
            if let Err(e) = regex::Regex::new(re) {
                errs.push(join(&hp, "regex"), format!("invalid regex: {e}"));
            }
        }
    }

    let sp = join(p, "split");
    if r.split.is_empty() {
        errs.push(sp.clone(), "must name at least one subset");
    }
    let mut in_split = BTreeMap::new();
    let mut total: i64 = 0;
    for (j, s) in r.split.iter().enumerate() {
        let ep = index(&sp, j);
        if !subsets.contains(s.subset.as_str()) {
            errs.push(
                join(&ep, "subset"),
                format!("unknown subset '{}'", s.subset),
            );
        }
        if in_split.insert(s.subset.as_str(), j).is_some() {
            errs.push(
                join(&ep, "subset"),
                format!("'{}' appears twice in this split", s.subset),
            );
        }
        if s.weight < 0 {
            errs.push(join(&ep, "weight"), "must be >= 0");
        } else if s.weight > 1_000_000 {
            errs.push(join(&ep, "weight"), "must be <= 1000000");
        } else {
            total += s.weight;
        }
    }
    if !r.split.is_empty() && total == 0 {
        errs.push(sp, "weights must not all be 0");
    }

    if let Some(st) = &r.sticky {
        let stp = join(p, "sticky");
        match (&st.header, &st.cookie) {
            (Some(h), None) if !is_header_name(h) => {
                errs.push(join(&stp, "header"), format!("'{h}' is not a header name"))
            }
            (None, Some(c)) if c.is_empty() => errs.push(join(&stp, "cookie"), "must not be empty"),
            (Some(_), None) | (None, Some(_)) => {}
            _ => errs.push(stp, "give exactly one of header or cookie"),
        }
    }
    if let Some(pin) = &r.pin {
        let pp = join(p, "pin");
        if !is_header_name(&pin.header) {
            errs.push(
                join(&pp, "header"),
                format!("'{}' is not a header name", pin.header),
            );
        }
        for (value, subset) in &pin.values {
            if !in_split.contains_key(subset.as_str()) {
                errs.push(
                    join(&join(&pp, "values"), value),
                    format!("'{subset}' is not in this route's split"),
                );
            }
        }
    }
    if let Some(t) = &r.timeouts {
        let tp = join(p, "timeouts");
        for (name, v) in [
            ("connect_ms", t.connect_ms),
            ("read_ms", t.read_ms),
            ("total_ms", t.total_ms),
        ] {
            if let Some(v) = v {
                if v == 0 || v > MAX_TIMEOUT_MS {
                    errs.push(
                        join(&tp, name),
                        format!("must be between 1 and {MAX_TIMEOUT_MS}"),
                    );
                }
            }
        }
    }
}

fn check_policies(r: &Route, p: &str, regions: &BTreeSet<&str>, errs: &mut Errors) {
    if let Some(rt) = &r.retry {
        let rp = join(p, "retry");
        if !(1..=10).contains(&rt.attempts) {
            errs.push(join(&rp, "attempts"), "must be between 1 and 10");
        }
        for (i, k) in rt.retry_on.iter().enumerate() {
            if !crate::table::RETRY_KINDS.contains(&k.as_str()) {
                errs.push(
                    index(&join(&rp, "retry_on"), i),
                    format!(
                        "'{k}' is not one of {}",
                        crate::table::RETRY_KINDS.join(", ")
                    ),
                );
            }
        }
        for (i, c) in rt.retry_on_status.iter().enumerate() {
            if !(500..=599).contains(c) {
                errs.push(
                    index(&join(&rp, "retry_on_status"), i),
                    "must be a 5xx status",
                );
            }
        }
        if let Some(t) = rt.per_try_timeout_ms {
            if t == 0 || t > MAX_TIMEOUT_MS {
                errs.push(
                    join(&rp, "per_try_timeout_ms"),
                    format!("must be between 1 and {MAX_TIMEOUT_MS}"),
                );
            }
        }
        if rt.backoff_max_ms < rt.backoff_base_ms || rt.backoff_max_ms > 60_000 {
            errs.push(
                join(&rp, "backoff_max_ms"),
                "must be between backoff_base_ms and 60000",
            );
        }
    }
    if let Some(h) = &r.hedge {
        let hp = join(p, "hedge");
        match (&h.delay_ms, &h.adaptive) {
            (Some(d), None) if *d == 0 || *d > MAX_TIMEOUT_MS => errs.push(
                join(&hp, "delay_ms"),
                format!("must be between 1 and {MAX_TIMEOUT_MS}"),
            ),
            (None, Some(a)) => {
                if !(50.0..=99.9).contains(&a.percentile) {
                    errs.push(
                        join(&hp, "adaptive.percentile"),
                        "must be between 50 and 99.9",
                    );
                }
                if a.min_samples == 0 {
                    errs.push(join(&hp, "adaptive.min_samples"), "must be >= 1");
                }
            }
            (Some(_), None) => {}
            _ => errs.push(hp, "give exactly one of delay_ms or adaptive"),
        }
    }
    if let Some(b) = &r.budget {
        let bp = join(p, "budget");
        if !(0.0..=10.0).contains(&b.ratio) {
            errs.push(join(&bp, "ratio"), "must be between 0 and 10");
        }
        if !(1..=60).contains(&b.window_s) {
            errs.push(join(&bp, "window_s"), "must be between 1 and 60");
        }
    }
    for (i, reg) in r.allowed_regions.iter().enumerate() {
        if !regions.contains(reg.as_str()) {
            errs.push(
                index(&join(p, "allowed_regions"), i),
                format!("unknown region '{reg}' (declare it under regions)"),
            );
        }
    }
}

/// True when `name` is an HTTP header name (an RFC 9110 token).
pub fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

#[cfg(test)]
mod tests;
