use super::*;

const GOOD: &str = r#"
regions:
  - { name: eu-west, failover: [us-east] }
  - { name: us-east, failover: auto }
services:
  - name: vitals
    health_check: { path: /healthz, interval_ms: 200, timeout_ms: 100 }
    versions:
      - name: v1
        endpoints:
          eu-west: ["127.0.0.1:8081", { address: "vitals.eu.internal:8080", zone: a }]
          us-east: ["127.0.0.1:9081"]
      - name: v2
        endpoints: { eu-west: ["127.0.0.1:8082"] }
routes:
  - name: vitals
    match: { path: { prefix: /vitals } }
    split: [{ subset: vitals@v1, weight: 90 }, { subset: vitals@v2, weight: 10 }]
    allowed_regions: [eu-west, us-east]
"#;

#[test]
fn a_good_intent_passes() {
    let i = parse_intent(GOOD).expect("valid");
    assert!(i.regions[1].failover.is_auto());
    assert_eq!(i.services[0].health_check.unhealthy_threshold, 3);
    let eps = &i.services[0].versions[0].endpoints["eu-west"];
    assert_eq!(
        parse_address(&eps[1].detail().address),
        Ok(Address::Dns {
            host: "vitals.eu.internal".into(),
            port: 8080
        })
    );
}

#[test]
fn every_error_is_collected_with_its_path() {
    let bad = GOOD
        .replace("failover: auto", "failover: fastest")
        .replace("failover: [us-east]", "failover: [mars]")
        .replace("127.0.0.1:8082", "not an address:x")
        .replace(
            "us-east: [\"127.0.0.1:9081\"]",
            "ap-south: [\"127.0.0.1:9081\"]",
        )
        .replace("timeout_ms: 100", "timeout_ms: 900")
        .replace("subset: vitals@v2", "subset: vitals@v3")
        .replace("name: v2", "name: v1");
    let err = parse_intent(&bad).expect_err("invalid");
    let shown: Vec<String> = err.0.iter().map(|e| e.to_string()).collect();
    for want in [
        "regions[0].failover[0]: unknown region 'mars'",
        "regions[1].failover: 'fastest' must be 'auto'",
        "services[0].health_check.timeout_ms: must be between 1 and interval_ms",
        "services[0].versions[0].endpoints.ap-south: unknown region 'ap-south'",
        "services[0].versions[1].name: duplicate version 'v1'",
        "services[0].versions[1].endpoints.eu-west[0]: 'not an address:x'",
        "routes[0].split[1].subset: unknown subset 'vitals@v3'",
    ] {
        assert!(
            shown.iter().any(|s| s.starts_with(want)),
            "missing '{want}' in {shown:#?}"
        );
    }
}

#[test]
fn subset_policies_are_located_at_the_version() {
    let bad = GOOD.replace(
        "      - name: v2\n",
        "      - name: v2\n        outlier: { consecutive_failures: 0 }\n",
    );
    let err = parse_intent(&bad).expect_err("invalid").to_string();
    assert!(
        err.contains("services[0].versions[1].outlier.consecutive_failures: must be >= 1"),
        "{err}"
    );
}

#[test]
fn unknown_keys_are_errors() {
    let err = parse_intent("regions: []\nservices: []\nrouts: []\n").expect_err("invalid");
    assert!(err.to_string().contains("routs"), "{err}");
}

#[test]
fn addresses_parse() {
    assert!(matches!(parse_address("10.0.0.1:80"), Ok(Address::Ip(_))));
    assert!(matches!(parse_address("[::1]:80"), Ok(Address::Ip(_))));
    assert!(matches!(
        parse_address("Api.Example.COM.:443"),
        Ok(Address::Dns { ref host, port: 443 }) if host == "api.example.com"
    ));
    for bad in [
        "10.0.0.1:0",
        "host",
        "host:0",
        "host:99999",
        "-bad.example:80",
        "a..b:80",
        "sp ace:80",
    ] {
        assert!(parse_address(bad).is_err(), "{bad} should be refused");
    }
}

#[test]
fn a_folder_is_merged_and_errors_name_their_file() {
    let dir = std::env::temp_dir().join(format!("meridian-intent-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(
        dir.join("a.yaml"),
        "regions: [{ name: eu-west }]\nservices:\n  - name: a\n    versions: [{ name: v1, endpoints: { eu-west: ['127.0.0.1:1000'] } }]\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("b.yaml"),
        "services:\n  - name: b\n    versions: [{ name: v1, endpoints: { mars: ['127.0.0.1:1001'] } }]\n",
    )
    .expect("write");
    let err = read_intent(&dir).expect_err("mars is unknown").to_string();
    assert!(
        err.contains("b.yaml: services[0].versions[0].endpoints.mars: unknown region"),
        "{err}"
    );
    std::fs::write(
        dir.join("b.yaml"),
        "services:\n  - name: b\n    versions: [{ name: v1, endpoints: { eu-west: ['127.0.0.1:1001'] } }]\nroutes:\n  - { name: r, split: [{ subset: b@v1, weight: 1 }] }\n",
    )
    .expect("write");
    let (intent, raw) = read_intent(&dir).expect("valid");
    assert_eq!(intent.services.len(), 2);
    assert_eq!(raw.len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}
