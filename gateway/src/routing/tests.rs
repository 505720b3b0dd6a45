use http::{HeaderMap, HeaderValue, Method};
use meridian_api::load::parse_table;

use super::*;

fn router() -> (Router, Vec<String>) {
    let t = parse_table(
        r#"
version: 1
routes:
  - { name: any, split: [{subset: s@v1, weight: 1}] }
  - { name: api-prefix, match: { hosts: [api.example.com], path: { prefix: "/v1" } }, split: [{subset: s@v1, weight: 1}] }
  - { name: api-longer, match: { hosts: [api.example.com], path: { prefix: "/v1/admin" } }, split: [{subset: s@v1, weight: 1}] }
  - { name: api-exact, match: { hosts: [api.example.com], path: { exact: "/v1/health" } }, split: [{subset: s@v1, weight: 1}] }
  - { name: api-regex, match: { hosts: [api.example.com], path: { regex: "^/v[0-9]+/" } }, split: [{subset: s@v1, weight: 1}] }
  - { name: wild, match: { hosts: ["*.example.com"] }, split: [{subset: s@v1, weight: 1}] }
  - { name: wild-deeper, match: { hosts: ["*.eu.example.com"] }, split: [{subset: s@v1, weight: 1}] }
  - name: post-only
    match: { hosts: [post.example.net], methods: [POST], headers: [{name: x-tenant, exact: acme}] }
    split: [{subset: s@v1, weight: 1}]
subsets: [{ name: s@v1 }]
"#,
    )
    .expect("valid");
    let names = t.routes.iter().map(|r| r.name.clone()).collect();
    (Router::new(&t.routes), names)
}

fn find(host: &str, path: &str, method: Method, headers: &HeaderMap) -> String {
    let (r, names) = router();
    r.find(host, path, &method, headers)
        .map(|i| names[i].clone())
        .unwrap_or_else(|| "none".into())
}

#[test]
fn precedence_is_host_then_path_kind() {
    let h = HeaderMap::new();
    assert_eq!(
        find("api.example.com", "/v1/health", Method::GET, &h),
        "api-exact"
    );
    assert_eq!(
        find("api.example.com", "/v1/admin/x", Method::GET, &h),
        "api-longer"
    );
    assert_eq!(
        find("api.example.com", "/v1/x", Method::GET, &h),
        "api-prefix"
    );
    assert_eq!(
        find("api.example.com", "/v2/x", Method::GET, &h),
        "api-regex"
    );
    // Nothing on the exact host takes it: the wildcard does.
    assert_eq!(find("api.example.com", "/other", Method::GET, &h), "wild");
    assert_eq!(
        find("x.eu.example.com", "/", Method::GET, &h),
        "wild-deeper"
    );
    assert_eq!(find("www.example.com", "/", Method::GET, &h), "wild");
    // The bare suffix is not a subdomain of itself.
    assert_eq!(find("example.com", "/", Method::GET, &h), "any");
}

#[test]
fn method_and_header_conditions_filter() {
    let mut h = HeaderMap::new();
    assert_eq!(find("post.example.net", "/", Method::POST, &h), "any");
    h.insert("x-tenant", HeaderValue::from_static("acme"));
    assert_eq!(find("post.example.net", "/", Method::POST, &h), "post-only");
    assert_eq!(find("post.example.net", "/", Method::GET, &h), "any");
}

#[test]
fn host_is_taken_without_port_and_lowercased() {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("API.Example.com:8080"));
    assert_eq!(
        request_host(&h, &"/".parse().expect("uri")),
        "api.example.com"
    );
    h.insert("host", HeaderValue::from_static("[::1]:80"));
    assert_eq!(request_host(&h, &"/".parse().expect("uri")), "::1");
    // A fully qualified name with its trailing dot is the same host.
    h.insert("host", HeaderValue::from_static("api.example.com.:443"));
    assert_eq!(
        request_host(&h, &"/".parse().expect("uri")),
        "api.example.com"
    );
    h.insert("host", HeaderValue::from_static("api.example.com."));
    assert_eq!(
        request_host(&h, &"/".parse().expect("uri")),
        "api.example.com"
    );
}

/// The precedence rule written as plainly as possible: every route whose host group applies, in
/// (host group, path kind, prefix length, file order) order, first one that matches wins.
fn reference(
    routes: &[meridian_api::Route],
    rules: &[Rule],
    host: &str,
    path: &str,
    m: &Method,
) -> Option<usize> {
    let hosts = |i: usize| &routes[i].matcher.hosts;
    let exact: Vec<usize> = (0..rules.len())
        .filter(|&i| hosts(i).iter().any(|h| h == host))
        .collect();
    let mut suffixes: Vec<&str> = routes
        .iter()
        .flat_map(|r| r.matcher.hosts.iter())
        .filter_map(|h| h.strip_prefix('*'))
        .filter(|s| host.len() > s.len() && host.ends_with(s))
        .collect();
    suffixes.sort_by_key(|s| std::cmp::Reverse(s.len()));
    suffixes.dedup();
    let mut groups = vec![exact];
    for s in suffixes {
        groups.push(
            (0..rules.len())
                .filter(|&i| hosts(i).iter().any(|h| h.strip_prefix('*') == Some(s)))
                .collect(),
        );
    }
    groups.push((0..rules.len()).filter(|&i| hosts(i).is_empty()).collect());
    let h = HeaderMap::new();
    groups.into_iter().find_map(|mut g| {
        g.sort_by_key(|&i| precedence(&rules[i]));
        g.into_iter()
            .find(|&i| matches(&rules[i], path, m, &h))
            .map(|i| rules[i].route)
    })
}

#[test]
fn the_path_index_agrees_with_a_plain_scan_on_random_tables() {
    let mut rng = fastrand::Rng::with_seed(11);
    let segs = ["a", "ab", "b", "v1", "v1/x", "é", "ab/c"];
    let paths: Vec<String> = (0..200)
        .map(|_| {
            let n = rng.usize(0..4);
            let mut p = String::new();
            for _ in 0..n {
                p.push('/');
                p.push_str(segs[rng.usize(..segs.len())]);
            }
            if p.is_empty() {
                p.push('/');
            }
            p
        })
        .collect();
    for round in 0..30 {
        let mut yaml = String::from("version: 1\nsubsets: [{ name: s@v1 }]\nroutes:\n");
        for i in 0..rng.usize(1..40) {
            let host = match rng.usize(0..4) {
                0 => String::new(),
                1 => "hosts: [api.test], ".into(),
                2 => "hosts: [\"*.test\"], ".into(),
                _ => "hosts: [\"*.b.test\", x.b.test], ".into(),
            };
            let p = &paths[rng.usize(..paths.len())];
            let path = match rng.usize(0..4) {
                0 => String::new(),
                1 => format!("path: {{ exact: \"{p}\" }}, "),
                2 => format!("path: {{ prefix: \"{p}\" }}, "),
                _ => format!("path: {{ regex: \"^{p}\" }}, "),
            };
            let method = if rng.usize(0..5) == 0 {
                "methods: [POST], "
            } else {
                ""
            };
            yaml.push_str(&format!(
                "  - {{ name: r{i}, match: {{ {host}{path}{method} }}, split: [{{subset: s@v1, weight: 1}}] }}\n"
            ));
        }
        let t = parse_table(&yaml).unwrap_or_else(|e| panic!("round {round}: {e}\n{yaml}"));
        let router = Router::new(&t.routes);
        let rules: Vec<Rule> = t
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| compile(i, &r.matcher))
            .collect();
        for host in ["api.test", "x.b.test", "y.b.test", "other.example"] {
            for p in &paths {
                for m in [Method::GET, Method::POST] {
                    assert_eq!(
                        router.find(host, p, &m, &HeaderMap::new()),
                        reference(&t.routes, &rules, host, p, &m),
                        "round {round}: {m} {host}{p}\n{yaml}"
                    );
                }
            }
        }
    }
}
