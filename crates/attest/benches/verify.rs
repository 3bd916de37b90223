//! Verification time per report: cold (the RSA-PSS chain ARK → ASK → VCEK is checked) and warm
//! (the same evidence again: the chain and the report's signature are cached by hash; every
//! policy and binding check still runs). Prints one JSON line; `cargo xtask bench` records it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_attest::{
    verify, verify_with_cache, Binding, ChainCache, Evidence, Measurements, Policy, Trust,
};

/// 2026-12-01: inside the virtee VCEK's validity window.
const NOW: u64 = 1_796_083_200;
use std::time::Instant;

fn data(dir: &str, file: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/data/{dir}/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn median_us(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

fn main() {
    let evidence = Evidence {
        report: data("virtee-sev-milan", "report.bin"),
        endorsement_cert: data("virtee-sev-milan", "vcek.der"),
    };
    // The strict template, with what the 2023 report predates relaxed (its TCB, v2, no alias
    // check): every check still runs.
    let mut policy = Policy::strict(Trust::Amd, Measurements::Any).with_any_tcb();
    policy.platform.require_alias_check = false;
    // Load the pinned roots (a one-off at start) outside the measurement.
    verify(&evidence, &policy, &Binding::Unchecked, NOW).unwrap();
    // `cargo test --all-targets` runs this binary without `--bench`: a smoke run is enough.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }

    let cold: Vec<f64> = (0..60)
        .map(|_| {
            let t = Instant::now();
            verify(&evidence, &policy, &Binding::Unchecked, NOW).unwrap();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let cache = ChainCache::new();
    verify_with_cache(&evidence, &policy, &Binding::Unchecked, NOW, &cache).unwrap();
    let warm: Vec<f64> = (0..600)
        .map(|_| {
            let t = Instant::now();
            verify_with_cache(&evidence, &policy, &Binding::Unchecked, NOW, &cache).unwrap();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    let (c, w) = (median_us(cold), median_us(warm));
    println!(
        "{{\"bench\":\"attest_verify\",\"fixture\":\"virtee-sev-milan\",\"cold_us_median\":{c:.0},\"warm_us_median\":{w:.0},\"cold_over_warm\":{:.1},\"cold_runs\":60,\"warm_runs\":600}}",
        c / w
    );
}
