//! A short, human summary of what changed between two intents, for the audit log and the push
//! answer's log line: `services.vitals.versions.v2.endpoints.eu-west: +10.0.0.9:80`.

use std::collections::{BTreeMap, BTreeSet};

use meridian_api::intent::{Intent, Service};

/// One line per change; empty when nothing changed.
pub fn summarize(old: Option<&Intent>, new: &Intent) -> Vec<String> {
    let Some(old) = old else {
        return vec![format!(
            "initial intent: {} regions, {} services, {} routes",
            new.regions.len(),
            new.services.len(),
            new.routes.len()
        )];
    };
    let mut out = Vec::new();
    named_diff(
        "regions",
        old.regions
            .iter()
            .map(|r| (r.name.clone(), json(&r.failover))),
        new.regions
            .iter()
            .map(|r| (r.name.clone(), json(&r.failover))),
        &mut out,
        |name, a, b, out| out.push(format!("regions.{name}.failover: {a} -> {b}")),
    );
    let olds: BTreeMap<&str, &Service> =
        old.services.iter().map(|s| (s.name.as_str(), s)).collect();
    let news: BTreeMap<&str, &Service> =
        new.services.iter().map(|s| (s.name.as_str(), s)).collect();
    for name in olds.keys().filter(|n| !news.contains_key(*n)) {
        out.push(format!("services: -{name}"));
    }
    for (name, s) in &news {
        match olds.get(name) {
            None => out.push(format!("services: +{name}")),
            Some(o) if o != s => service_diff(o, s, &mut out),
            Some(_) => {}
        }
    }
    named_diff(
        "routes",
        old.routes.iter().map(|r| (r.name.clone(), json(r))),
        new.routes.iter().map(|r| (r.name.clone(), json(r))),
        &mut out,
        |name, a, b, out| {
            let fields = changed_fields(a, b);
            out.push(format!("routes.{name}: changed {}", fields.join(", ")));
        },
    );
    out
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}

fn named_diff(
    list: &str,
    old: impl Iterator<Item = (String, serde_json::Value)>,
    new: impl Iterator<Item = (String, serde_json::Value)>,
    out: &mut Vec<String>,
    changed: impl Fn(&str, &serde_json::Value, &serde_json::Value, &mut Vec<String>),
) {
    let old: BTreeMap<String, serde_json::Value> = old.collect();
    let new: BTreeMap<String, serde_json::Value> = new.collect();
    for k in old.keys().filter(|k| !new.contains_key(*k)) {
        out.push(format!("{list}: -{k}"));
    }
    for (k, v) in &new {
        match old.get(k) {
            None => out.push(format!("{list}: +{k}")),
            Some(o) if o != v => changed(k, o, v, out),
            Some(_) => {}
        }
    }
}

fn changed_fields(a: &serde_json::Value, b: &serde_json::Value) -> Vec<String> {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return vec!["value".into()];
    };
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .map(|k| k.to_string())
        .collect()
}

fn service_diff(o: &Service, s: &Service, out: &mut Vec<String>) {
    let p = format!("services.{}", s.name);
    if o.health_check != s.health_check {
        out.push(format!("{p}.health_check: changed"));
    }
    let ov: BTreeMap<&str, _> = o.versions.iter().map(|v| (v.name.as_str(), v)).collect();
    let nv: BTreeMap<&str, _> = s.versions.iter().map(|v| (v.name.as_str(), v)).collect();
    for name in ov.keys().filter(|n| !nv.contains_key(*n)) {
        out.push(format!("{p}.versions: -{name}"));
    }
    for (name, v) in &nv {
        let Some(old) = ov.get(name) else {
            out.push(format!("{p}.versions: +{name}"));
            continue;
        };
        let vp = format!("{p}.versions.{name}");
        let regions: BTreeSet<&String> = old.endpoints.keys().chain(v.endpoints.keys()).collect();
        for r in regions {
            let addrs = |m: &BTreeMap<String, Vec<meridian_api::intent::EndpointSpec>>| {
                m.get(r)
                    .map(|l| {
                        l.iter()
                            .map(|e| e.detail().address)
                            .collect::<BTreeSet<_>>()
                    })
                    .unwrap_or_default()
            };
            let (a, b) = (addrs(&old.endpoints), addrs(&v.endpoints));
            let mut parts: Vec<String> = b.difference(&a).map(|x| format!("+{x}")).collect();
            parts.extend(a.difference(&b).map(|x| format!("-{x}")));
            if !parts.is_empty() {
                out.push(format!("{vp}.endpoints.{r}: {}", parts.join(" ")));
            }
        }
        if old.outlier != v.outlier || old.limits != v.limits {
            out.push(format!("{vp}: outlier or limits changed"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meridian_api::intent::parse_intent;

    #[test]
    fn changes_are_summarised() {
        let a = parse_intent(
            "regions: [{name: eu}]\nservices:\n  - name: s\n    versions: [{name: v1, endpoints: {eu: ['10.0.0.1:80']}}]\nroutes: [{name: r, split: [{subset: s@v1, weight: 1}]}]\n",
        )
        .expect("a");
        let b = parse_intent(
            "regions: [{name: eu}]\nservices:\n  - name: s\n    versions: [{name: v1, endpoints: {eu: ['10.0.0.2:80']}}]\n  - name: t\n    versions: [{name: v1}]\nroutes: [{name: r, split: [{subset: s@v1, weight: 1}], retry: {attempts: 3}}]\n",
        )
        .expect("b");
        let d = summarize(Some(&a), &b);
        assert_eq!(
            d,
            vec![
                "services.s.versions.v1.endpoints.eu: +10.0.0.2:80 -10.0.0.1:80".to_string(),
                "services: +t".to_string(),
                "routes.r: changed retry".to_string(),
            ]
        );
        assert!(summarize(Some(&a), &a).is_empty());
        assert!(summarize(None, &a)[0].starts_with("initial intent"));
    }
}
