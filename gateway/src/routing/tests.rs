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
}
