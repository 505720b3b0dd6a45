use crate::load::parse_table;

const GOOD: &str = r#"
version: 1
regions:
  - { name: eu-west, failover: [us-east] }
  - { name: us-east, failover: [eu-west] }
routes:
  - name: vitals
    match: { hosts: ["api.example.com", "*.example.com"], path: { prefix: "/vitals" }, methods: [GET] }
    split:
      - { subset: vitals@v1, weight: 80 }
      - { subset: vitals@v2, weight: 20 }
    sticky: { header: x-user-id }
    pin: { header: x-canary, values: { always: vitals@v2 } }
subsets:
  - name: vitals@v1
    endpoints:
      - { address: "127.0.0.1:8081", region: eu-west, zone: a }
  - name: vitals@v2
    endpoints: []
"#;

#[test]
fn a_good_table_passes() {
    let t = parse_table(GOOD).expect("valid");
    assert_eq!(t.routes[0].split.len(), 2);
}

#[test]
fn every_error_is_collected_with_its_path() {
    let bad = GOOD
        .replace("weight: 20", "weight: -5")
        .replace("127.0.0.1:8081", "nowhere")
        .replace("failover: [us-east]", "failover: [mars]")
        .replace("always: vitals@v2", "always: other@v9")
        .replace("prefix: \"/vitals\"", "regex: \"(unclosed\"");
    let err = parse_table(&bad).expect_err("invalid");
    let shown: Vec<String> = err.0.iter().map(|e| e.to_string()).collect();
    let expect = [
        "routes[0].split[1].weight: must be >= 0",
        "subsets[0].endpoints[0].address: 'nowhere' is not an ip:port address",
        "regions[0].failover[0]: unknown region 'mars'",
        "routes[0].pin.values.always: 'other@v9' is not in this route's split",
        "routes[0].match.path.regex: invalid regex",
    ];
    for e in expect {
        assert!(
            shown.iter().any(|s| s.starts_with(e)),
            "missing '{e}' in {shown:#?}"
        );
    }
}

#[test]
fn all_zero_weights_and_unknown_subsets_are_rejected() {
    let bad = GOOD
        .replace("weight: 80", "weight: 0")
        .replace("weight: 20", "weight: 0")
        .replace("subset: vitals@v1, weight", "subset: ghost@v1, weight");
    let err = parse_table(&bad).expect_err("invalid").to_string();
    assert!(
        err.contains("routes[0].split: weights must not all be 0"),
        "{err}"
    );
    assert!(
        err.contains("routes[0].split[0].subset: unknown subset 'ghost@v1'"),
        "{err}"
    );
}

#[test]
fn sticky_needs_exactly_one_source() {
    let bad = GOOD.replace(
        "{ header: x-user-id }",
        "{ header: x-user-id, cookie: sid }",
    );
    let err = parse_table(&bad).expect_err("invalid").to_string();
    assert!(err.contains("routes[0].sticky: give exactly one"), "{err}");
}

#[test]
fn resilience_policies_are_checked() {
    let bad = GOOD.replace(
        "    sticky: { header: x-user-id }\n",
        "    sticky: { header: x-user-id }\n    retry: { attempts: 0, retry_on: [sometimes], retry_on_status: [404] }\n    hedge: { delay_ms: 5, adaptive: { percentile: 95 } }\n    budget: { ratio: -1 }\n    allowed_regions: [mars]\n",
    );
    let err = parse_table(&bad).expect_err("invalid").to_string();
    for want in [
        "routes[0].retry.attempts: must be between 1 and 10",
        "routes[0].retry.retry_on[0]: 'sometimes' is not one of",
        "routes[0].retry.retry_on_status[0]: must be a 5xx status",
        "routes[0].hedge: give exactly one of delay_ms or adaptive",
        "routes[0].budget.ratio: must be between 0 and 10",
        "routes[0].allowed_regions[0]: unknown region 'mars'",
    ] {
        assert!(err.contains(want), "missing {want} in {err}");
    }
}

#[test]
fn policy_defaults_match_the_docs() {
    let t = parse_table(&GOOD.replace(
        "    sticky: { header: x-user-id }\n",
        "    sticky: { header: x-user-id }\n    retry: {}\n    budget: {}\n",
    ))
    .expect("valid");
    let r = t.routes[0].retry.clone().expect("retry");
    assert_eq!(r, crate::RetryPolicy::default());
    assert_eq!(r.attempts, 2);
    assert_eq!(r.retry_on_status, vec![502, 503, 504]);
    assert_eq!(t.routes[0].budget.clone().expect("budget").ratio, 0.2);
}
