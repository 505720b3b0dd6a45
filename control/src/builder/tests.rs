use super::*;
use meridian_api::intent::parse_intent;
use meridian_api::validate::validate_table;

const INTENT: &str = r#"
regions:
  - { name: eu-west, failover: [us-east] }
  - { name: us-east, failover: auto }
  - { name: ap-south }
services:
  - name: vitals
    versions:
      - name: v1
        endpoints:
          eu-west: ["10.0.0.1:80", "10.0.0.2:80"]
          us-east: ["10.1.0.1:80", "vitals.us.internal:80"]
          ap-south: ["10.2.0.1:80"]
      - name: v2
        endpoints: { eu-west: ["10.0.0.3:80"] }
routes:
  - name: vitals
    split: [{ subset: vitals@v1, weight: 90 }, { subset: vitals@v2, weight: 10 }]
"#;

fn intent() -> Intent {
    parse_intent(INTENT).expect("valid intent")
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("addr")
}

fn names() -> BTreeMap<String, Vec<IpAddr>> {
    BTreeMap::from([(
        "vitals.us.internal".to_string(),
        vec![IpAddr::from([10, 1, 0, 2]), IpAddr::from([10, 1, 0, 3])],
    )])
}

fn endpoints_of<'a>(t: &'a Table, subset: &str) -> Vec<&'a Endpoint> {
    t.subsets
        .iter()
        .find(|s| s.name == subset)
        .map(|s| s.endpoints.iter().collect())
        .unwrap_or_default()
}

#[test]
fn every_region_gets_a_valid_table_with_its_reachable_endpoints() {
    let tables = build(&intent(), &names(), &Health::new(), &Rtt::new());
    assert_eq!(tables.len(), 3);
    for t in tables.values() {
        validate_table(t).expect("built tables validate");
    }
    let eu = &tables["eu-west"];
    let regions: BTreeSet<&str> = endpoints_of(eu, "vitals@v1")
        .iter()
        .map(|e| e.region.as_str())
        .collect();
    assert_eq!(regions, BTreeSet::from(["eu-west", "us-east"]));
    // The DNS name became two endpoints.
    assert_eq!(endpoints_of(eu, "vitals@v1").len(), 5);
    let ap = &tables["ap-south"];
    assert_eq!(
        endpoints_of(ap, "vitals@v1").len(),
        1,
        "ap-south fails over nowhere"
    );
}

#[test]
fn same_inputs_build_the_same_tables() {
    let a = build(&intent(), &names(), &Health::new(), &Rtt::new());
    let b = build(&intent(), &names(), &Health::new(), &Rtt::new());
    assert_eq!(a, b);
}

#[test]
fn an_unhealthy_endpoint_is_marked_and_only_where_it_is_reachable() {
    let health = Health::from([(("vitals".to_string(), addr("10.0.0.1:80")), false)]);
    let before = build(&intent(), &names(), &Health::new(), &Rtt::new());
    let after = build(&intent(), &names(), &health, &Rtt::new());
    let ep = endpoints_of(&after["eu-west"], "vitals@v1")
        .into_iter()
        .find(|e| e.address == "10.0.0.1:80")
        .expect("listed");
    assert!(!ep.healthy);
    assert_ne!(
        content_hash(&before["eu-west"]),
        content_hash(&after["eu-west"])
    );
    // ap-south cannot reach eu-west: its table is untouched.
    assert_eq!(
        content_hash(&before["ap-south"]),
        content_hash(&after["ap-south"])
    );
}

#[test]
fn unknown_health_is_listed_healthy() {
    let tables = build(&intent(), &names(), &Health::new(), &Rtt::new());
    assert!(endpoints_of(&tables["eu-west"], "vitals@v1")
        .iter()
        .all(|e| e.healthy));
}

#[test]
fn auto_failover_follows_rtt() {
    let mut rtt = Rtt::new();
    rtt.insert((String::new(), "eu-west".into()), Duration::from_millis(40));
    rtt.insert((String::new(), "ap-south".into()), Duration::from_millis(9));
    let orders = failover_orders(&intent(), &rtt);
    assert_eq!(orders["us-east"], vec!["ap-south", "eu-west"]);
    // A pairwise measurement wins over the control plane's.
    rtt.insert(
        ("us-east".into(), "ap-south".into()),
        Duration::from_millis(90),
    );
    let orders = failover_orders(&intent(), &rtt);
    assert_eq!(orders["us-east"], vec!["eu-west", "ap-south"]);
    // Unmeasured regions go last, by name.
    let orders = failover_orders(&intent(), &Rtt::new());
    assert_eq!(orders["us-east"], vec!["ap-south", "eu-west"]);
    assert_eq!(orders["eu-west"], vec!["us-east"], "a given order stays");
}

#[test]
fn unchanged_input_makes_no_new_version() {
    let built = build(&intent(), &names(), &Health::new(), &Rtt::new());
    let (first, last) = assign_versions(&Prior::new(), built.clone(), 0);
    assert_eq!(first.len(), 3);
    assert_eq!(last, 3);
    let prior: Prior = first
        .iter()
        .map(|(r, t, h)| (r.clone(), (t.version, h.clone())))
        .collect();
    let (again, last2) = assign_versions(&prior, built, last);
    assert!(again.is_empty());
    assert_eq!(last2, last);
}

#[test]
fn versions_only_grow_and_only_changed_regions_move() {
    let built = build(&intent(), &names(), &Health::new(), &Rtt::new());
    let (first, last) = assign_versions(&Prior::new(), built, 41);
    assert!(first.iter().all(|(_, t, _)| t.version > 41));
    let prior: Prior = first
        .iter()
        .map(|(r, t, h)| (r.clone(), (t.version, h.clone())))
        .collect();
    let health = Health::from([(("vitals".to_string(), addr("10.2.0.1:80")), false)]);
    let next = build(&intent(), &names(), &health, &Rtt::new());
    let (changed, last2) = assign_versions(&prior, next, last);
    // 10.2.0.1 is in ap-south, reached only by ap-south and by us-east (auto: every region).
    let mut regions: Vec<u64> = changed.iter().map(|(_, t, _)| t.version).collect();
    regions.sort();
    assert_eq!(changed.len(), 2);
    assert_eq!(regions, vec![last + 1, last + 2]);
    assert_eq!(last2, last + 2);
}

#[test]
fn an_unresolved_name_contributes_no_endpoint() {
    let tables = build(&intent(), &BTreeMap::new(), &Health::new(), &Rtt::new());
    assert_eq!(endpoints_of(&tables["eu-west"], "vitals@v1").len(), 3);
}

#[test]
fn published_bodies_are_table_responses() {
    let mut t = build(&intent(), &names(), &Health::new(), &Rtt::new())
        .remove("eu-west")
        .expect("eu-west");
    t.version = 7;
    let hash = content_hash(&t);
    let p = publish("eu-west", t, hash.clone(), 123);
    let r: TableResponse = serde_json::from_slice(&p.body).expect("json");
    assert_eq!((r.version, r.hash, r.built_unix_ms), (7, hash, 123));
    assert_eq!(content_hash(&r.table), p.hash);
}

const THREE_AUTO: &str = r#"
regions:
  - { name: a, failover: auto }
  - { name: b, failover: auto }
  - { name: c, failover: auto }
services:
  - name: s
    versions:
      - name: v1
        endpoints:
          a: ["10.0.0.1:80"]
          b: ["10.1.0.1:80"]
          c: ["10.2.0.1:80"]
routes:
  - name: r
    split: [{ subset: s@v1, weight: 1 }]
"#;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

#[test]
fn each_auto_region_orders_by_its_own_measurements() {
    let intent = parse_intent(THREE_AUTO).expect("valid intent");
    let mut rtt = Rtt::new();
    // The control plane sees c near and b far: that is the order of a region with no reports.
    rtt.insert((String::new(), "a".into()), ms(20));
    rtt.insert((String::new(), "b".into()), ms(50));
    rtt.insert((String::new(), "c".into()), ms(1));
    // Region a reports b fast and c slow; region c reports a slow and b fast.
    rtt.insert(("a".into(), "b".into()), ms(4));
    rtt.insert(("a".into(), "c".into()), ms(70));
    rtt.insert(("c".into(), "a".into()), ms(80));
    rtt.insert(("c".into(), "b".into()), ms(3));
    let orders = failover_orders(&intent, &rtt);
    assert_eq!(orders["a"], vec!["b", "c"], "a follows what a measured");
    assert_eq!(orders["c"], vec!["b", "a"], "c follows what c measured");
    assert_eq!(
        orders["b"],
        vec!["c", "a"],
        "b falls back to the control plane"
    );
    // The tables carry those orders, each only in its own region's entry.
    let tables = build(&intent, &BTreeMap::new(), &Health::new(), &rtt);
    let failover = |region: &str| -> Vec<String> {
        tables[region]
            .regions
            .iter()
            .find(|r| r.name == region)
            .map(|r| r.failover.clone())
            .unwrap_or_default()
    };
    assert_eq!(failover("a"), vec!["b", "c"]);
    assert_eq!(failover("c"), vec!["b", "a"]);
}

#[test]
fn a_region_missing_one_pair_mixes_its_own_figure_with_the_fallback() {
    let intent = parse_intent(THREE_AUTO).expect("valid intent");
    let mut rtt = Rtt::new();
    rtt.insert((String::new(), "b".into()), ms(1));
    rtt.insert((String::new(), "c".into()), ms(10));
    rtt.insert(("a".into(), "b".into()), ms(30));
    // a measured b at 30 ms and has no figure for c: the control plane's 10 ms counts.
    assert_eq!(failover_orders(&intent, &rtt)["a"], vec!["c", "b"]);
    // Another region's pairs never leak into a's order.
    rtt.insert(("b".into(), "c".into()), ms(500));
    assert_eq!(failover_orders(&intent, &rtt)["a"], vec!["c", "b"]);
}
