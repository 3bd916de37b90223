//! `bulwark attest verify` as an operator runs it: the real binary on genuine evidence.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use serde_json::Value;
use std::process::Command;

fn data(path: &str) -> String {
    format!(
        "{}/../crates/attest/tests/data/{path}",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// Runs `bulwark` with `args`.
fn bulwark(args: &[&str]) -> std::process::Output {
    Command::new(harness::process::bulwark_binary().unwrap())
        .args(args)
        .output()
        .unwrap()
}

/// What the 2023 virtee Milan report predates in the strict template: its TCB and report
/// version (--any-tcb) and the memory alias check; and, with no REPORT_DATA to check, that it
/// is inspected unbound.
const OLD_MILAN: [&str; 3] = ["--any-tcb", "--no-alias-check", "--allow-unbound"];

/// 2025-06-01: inside the AWS VLEK's validity year.
const MID_2025: &str = "1748736000";

/// Runs `bulwark attest verify` and returns its exit code and the JSON on its last line.
fn run(args: &[&str]) -> (i32, Value) {
    let out = bulwark(&[&["attest", "verify"], args].concat());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = stdout
        .lines()
        .last()
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json)
}

#[test]
fn accepts_a_genuine_milan_report_given_as_hex_with_amds_own_chain() {
    let (code, out) = run(&[
        "--report",
        &data("virtee-sev-milan/report_milan.hex"),
        "--vcek",
        &data("virtee-sev-milan/vcek.der"),
        "--ask-ark",
        &data("virtee-sev-milan/ask_ark.pem"),
        "--any-measurement",
        OLD_MILAN[0],
        OLD_MILAN[1],
        OLD_MILAN[2],
    ]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["verified"], true);
    assert_eq!(out["binding"], "unchecked");
    assert_eq!(out["check"], Value::Null);
    assert_eq!(out["product"], "Milan");
    assert_eq!(out["report_version"], 2);
    assert_eq!(out["vmpl"], 0);
    assert_eq!(out["reported_tcb"]["snp"], 8);
    assert_eq!(out["policy"]["debug"], false);
    assert_eq!(out["measurement"].as_str().unwrap().len(), 96);
}

#[test]
fn rejects_debug_by_name_and_accepts_with_allow_debug() {
    let base = [
        "--report",
        &data("go-sev-guest-milan/report.bin"),
        "--vcek",
        &data("go-sev-guest-milan/vcek.der"),
        "--any-measurement",
        OLD_MILAN[0],
        OLD_MILAN[1],
        OLD_MILAN[2],
    ];
    let (code, out) = run(&base);
    assert_eq!(
        (code, out["verified"].clone(), out["check"].clone()),
        (1, Value::Bool(false), Value::from("debug"))
    );
    assert_eq!(out["policy"]["debug"], true);
    let mut relaxed = base.to_vec();
    relaxed.push("--allow-debug");
    assert_eq!(run(&relaxed).0, 0);
}

#[test]
fn a_vlek_report_needs_vlek_vmpl_1_and_provisional_tcb() {
    let base = [
        "--report",
        &data("trustee-snp-vlek/report.bin"),
        "--vlek",
        &data("trustee-snp-vlek/vlek.der"),
        "--any-measurement",
        "--allow-unbound",
        "--at",
        MID_2025,
    ];
    assert_eq!(run(&base).1["check"], "signing_key");
    let mut args = base.to_vec();
    args.extend([
        "--allow-vlek",
        "--vlek-csp",
        "CN=cc-us-east-2.amazonaws.com",
        "--vmpl",
        "1",
        "--allow-provisional-tcb",
        "--any-tcb",
    ]);
    let (code, out) = run(&args);
    assert_eq!(code, 0, "{out}");
    assert_eq!(out["signing_key"], "Vlek");
    assert_eq!(out["vmpl"], 1);
    // Without the time: checked now, after the VLEK expired (2025-12-10).
    let now: Vec<&str> = args
        .iter()
        .copied()
        .filter(|a| *a != "--at" && *a != MID_2025)
        .collect();
    let (code, out) = run(&now);
    assert_eq!(
        (code, out["check"].clone()),
        (1, Value::from("certificate_validity")),
        "{out}"
    );
}

#[test]
fn azure_genoa_and_the_measurement_allowlist() {
    let report = data("trustee-azure-genoa/report.bin");
    let vcek = data("trustee-azure-genoa/vcek.pem");
    // Genoa's 2025 evidence meets the strict template as it is.
    let (code, out) = run(&[
        "--report",
        &report,
        "--vcek",
        &vcek,
        "--any-measurement",
        "--allow-unbound",
    ]);
    assert_eq!(
        (code, out["product"].clone()),
        (0, Value::from("Genoa")),
        "{out}"
    );
    let measurement = out["measurement"].as_str().unwrap().to_string();
    let other = "00".repeat(48);
    let (code, out) = run(&[
        "--report",
        &report,
        "--vcek",
        &vcek,
        "--measurement",
        &other,
        "--allow-unbound",
    ]);
    assert_eq!(
        (code, out["check"].clone()),
        (1, Value::from("measurement"))
    );
    let (code, _) = run(&[
        "--report",
        &report,
        "--vcek",
        &vcek,
        "--measurement",
        &other,
        "--measurement",
        &measurement,
        "--allow-unbound",
    ]);
    assert_eq!(code, 0);
}

#[test]
fn report_data_binding_is_checked_when_given() {
    let genoa = [
        "--report",
        &data("trustee-azure-genoa/report.bin"),
        "--vcek",
        &data("trustee-azure-genoa/vcek.pem"),
        "--any-measurement",
    ];
    let mut wrong = genoa.to_vec();
    let other = "ab".repeat(64);
    wrong.extend(["--report-data", &other]);
    let (code, out) = run(&wrong);
    assert_eq!(
        (code, out["check"].clone(), out["binding"].clone()),
        (1, Value::from("report_data"), Value::from("checked"))
    );
    // Its own REPORT_DATA: verified and bound.
    let report = std::fs::read(data("trustee-azure-genoa/report.bin")).unwrap();
    let own = hex::encode(&report[0x50..0x90]);
    let mut right = genoa.to_vec();
    right.extend(["--report-data", &own]);
    let (code, out) = run(&right);
    assert_eq!(
        (code, out["binding"].clone()),
        (0, Value::from("checked")),
        "{out}"
    );
}

#[test]
fn without_report_data_the_binding_is_unchecked_and_the_exit_code_says_so() {
    let genoa = [
        "--report",
        &data("trustee-azure-genoa/report.bin"),
        "--vcek",
        &data("trustee-azure-genoa/vcek.pem"),
        "--any-measurement",
    ];
    let (code, out) = run(&genoa);
    assert_eq!(code, 1, "{out}");
    assert_eq!(out["verified"], false);
    assert_eq!(out["binding"], "unchecked");
    assert_eq!(out["check"], "binding");
    // Inspection on purpose: the same evidence passes, still marked unchecked.
    let mut inspect = genoa.to_vec();
    inspect.push("--allow-unbound");
    let (code, out) = run(&inspect);
    assert_eq!((code, out["verified"].clone()), (0, Value::Bool(true)));
    assert_eq!(out["binding"], "unchecked");
}

#[test]
fn the_strict_template_names_what_old_evidence_lacks() {
    let base = [
        "--report",
        &data("virtee-sev-milan/report.bin"),
        "--vcek",
        &data("virtee-sev-milan/vcek.der"),
        "--any-measurement",
        "--allow-unbound",
    ];
    assert_eq!(run(&base).1["check"], "minimum_report_version");
    let mut any_tcb = base.to_vec();
    any_tcb.push("--any-tcb");
    assert_eq!(run(&any_tcb).1["check"], "alias_check");
}

#[test]
fn a_policy_file_is_used_whole_and_a_typo_in_it_is_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let good = dir.join("policy.json");
    let mut policy = bulwark_attest::Policy::strict(
        bulwark_attest::Trust::Amd,
        bulwark_attest::Measurements::Any,
    );
    policy.host_data = Some(bulwark_attest::HexBytes([1; 32]));
    std::fs::write(&good, serde_json::to_string_pretty(&policy).unwrap()).unwrap();
    let args = |p: &std::path::Path| {
        vec![
            "--report".to_string(),
            data("trustee-azure-genoa/report.bin"),
            "--vcek".into(),
            data("trustee-azure-genoa/vcek.pem"),
            "--policy".into(),
            p.display().to_string(),
            "--allow-unbound".into(),
        ]
    };
    let a = args(&good);
    let (code, out) = run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    // The Azure guest's HOST_DATA is zero, not the file's: the whole file was applied.
    assert_eq!(
        (code, out["check"].clone()),
        (1, Value::from("host_data")),
        "{out}"
    );
    let typo = dir.join("typo.json");
    let text = serde_json::to_string(&policy)
        .unwrap()
        .replace("\"allow_tio\"", "\"allow_tioo\"");
    std::fs::write(&typo, text).unwrap();
    let a = args(&typo);
    let out = bulwark(
        &[
            &["attest", "verify"][..],
            &a.iter().map(String::as_str).collect::<Vec<_>>(),
        ]
        .concat(),
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("allow_tioo"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_host_chain_that_is_not_amds_is_named_and_rejected() {
    let mut pem = std::fs::read_to_string(data("virtee-sev-milan/ask_ark.pem")).unwrap();
    // Alter one base64 character inside the first certificate's body.
    let at = pem.find('\n').unwrap() + 40;
    let replacement = if &pem[at..at + 1] == "A" { "B" } else { "A" };
    pem.replace_range(at..at + 1, replacement);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fake = dir.join("fake_ask_ark.pem");
    std::fs::write(&fake, pem).unwrap();
    let (code, out) = run(&[
        "--report",
        &data("virtee-sev-milan/report.bin"),
        "--vcek",
        &data("virtee-sev-milan/vcek.der"),
        "--any-measurement",
        "--allow-unbound",
        "--ask-ark",
        fake.to_str().unwrap(),
    ]);
    assert_eq!(
        (code, out["check"].clone()),
        (1, Value::from("host_chain")),
        "{out}"
    );
}

#[test]
fn bad_files_and_bad_usage_fail_clearly() {
    let (code, out) = run(&[
        "--report",
        &data("virtee-sev-milan/vcek.der"),
        "--vcek",
        &data("virtee-sev-milan/vcek.der"),
        "--any-measurement",
    ]);
    assert_eq!(
        (code, out["check"].clone()),
        (1, Value::from("report_size"))
    );
    // Missing --vcek/--vlek and missing measurement choice are usage errors (exit 2).
    assert_eq!(
        run(&[
            "--report",
            &data("virtee-sev-milan/report.bin"),
            "--any-measurement"
        ])
        .0,
        2
    );
    assert_eq!(
        run(&[
            "--report",
            &data("virtee-sev-milan/report.bin"),
            "--vcek",
            &data("virtee-sev-milan/vcek.der")
        ])
        .0,
        2
    );
    // A missing file names itself.
    let out = bulwark(&[
        "attest",
        "verify",
        "--report",
        "/nonexistent",
        "--vcek",
        "/nonexistent",
        "--any-measurement",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent"));
}

#[test]
fn simulated_evidence_round_trips_through_report_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let report = dir.join("report.bin");
    let data = "cd".repeat(64);
    let measurement = "ab".repeat(48);
    let out = bulwark(&[
        "attest",
        "report",
        "--simulated",
        "--report-data",
        &data,
        "--measurement",
        &measurement,
        "--out",
        report.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("WARNING: simulated PSP"));
    let cert = format!("{}.vcek.der", report.display());
    let args = [
        "--report",
        report.to_str().unwrap(),
        "--vcek",
        &cert,
        "--measurement",
        &measurement,
        "--report-data",
        &data,
    ];
    let (code, _) = run(&args);
    assert_eq!(code, 1, "AMD trust must refuse simulated evidence");
    let mut simulated = args.to_vec();
    simulated.push("--simulated");
    let (code, v) = run(&simulated);
    assert_eq!(code, 0, "{v}");
    assert_eq!(v["measurement"], measurement);
}

#[test]
fn without_the_guest_device_report_asks_for_simulated() {
    if std::path::Path::new("/dev/sev-guest").exists() {
        return;
    }
    let out = bulwark(&[
        "attest",
        "report",
        "--report-data",
        &"00".repeat(64),
        "--out",
        "/tmp/never-written",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--simulated"));
}

#[test]
fn a_self_signed_fake_ark_offered_by_the_host_is_rejected_by_name() {
    // The simulated root is exactly that: a self-signed ARK and an ASK that are not AMD's.
    let fake = format!(
        "{}/../crates/attest/simulated/ark.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    let (code, out) = run(&[
        "--report",
        &data("virtee-sev-milan/report.bin"),
        "--vcek",
        &data("virtee-sev-milan/vcek.der"),
        "--any-measurement",
        "--allow-unbound",
        "--ask-ark",
        &fake,
    ]);
    assert_eq!(
        (code, out["check"].clone()),
        (1, Value::from("host_chain")),
        "{out}"
    );
    assert!(out["reason"].as_str().unwrap().contains("SIMULATED-ARK"));
}
