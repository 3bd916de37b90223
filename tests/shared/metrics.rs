//! A node's Prometheus metrics as an operator's Prometheus sees them: scraped over HTTP and
//! parsed by an independent text-format parser (`prometheus-parse`), for `start.rs` and
//! `attested.rs`.
#![allow(dead_code)]

use prometheus_parse::{Sample, Scrape, Value};

/// Node `i`'s metrics (a testnet made from port `base` with `instrumentation.prometheus` on).
pub fn scrape(base: u16, i: usize) -> Scrape {
    let addr = harness::process::metrics_addr(base, i);
    let (status, body) = harness::rpc::http_get(&addr, "/metrics").expect("a scrape");
    assert_eq!(status, 200, "{body}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text")
}

/// The value of the one gauge or counter `name` whose labels include `labels`.
pub fn value(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let matching: Vec<&Sample> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    match matching.as_slice() {
        [Sample {
            value: Value::Gauge(v) | Value::Counter(v),
            ..
        }] => *v,
        other => panic!("{name} {labels:?}: {other:?}"),
    }
}

/// The config.toml replacement that turns metrics on.
pub const ON: (&str, &str) = ("prometheus = false", "prometheus = true");
