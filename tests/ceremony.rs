//! The genesis ceremony with real processes: `bulwark testnet`'s genesis re-verifies with
//! `bulwark verify-genesis`; a genesis in which an attacker slipped one bad enrollment (bound to
//! another key, made for another chain, from a debug guest, from an unlisted image) names that
//! validator and the failed check; `bulwark genesis assemble` builds a genesis from the
//! enrollment files, refuses a bad one by file and check, and four processes commit on it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_attest::simulated::SimulatedPsp;
use bulwark_identity::{certify, Enrollment, Identity};
use harness::ports::testnet_block;
use harness::process::{bulwark_binary, fast_testnet, start, wait_for, Node};
use serde_json::Value;
use sha2::Digest;
use std::path::{Path, PathBuf};
use std::time::Duration;

const CHAIN: &str = "bulwark-testnet";

fn binary_measurement() -> [u8; 48] {
    sha2::Sha384::digest(std::fs::read(bulwark_binary().unwrap()).unwrap()).into()
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn bulwark(args: &[&str]) -> std::process::Output {
    std::process::Command::new(bulwark_binary().unwrap())
        .args(args)
        .output()
        .unwrap()
}

/// Runs `bulwark verify-genesis` on `genesis`: its exit code and its JSON lines.
fn verify_genesis(genesis: &Path) -> (Option<i32>, Vec<Value>) {
    let out = bulwark(&["verify-genesis", genesis.to_str().unwrap()]);
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (out.status.code(), lines)
}

/// An enrollment made by a simulated guest of `measurement` under guest `policy` for `chain`.
fn foreign_enrollment(measurement: [u8; 48], policy: u64, chain: &str) -> Enrollment {
    let mut psp = SimulatedPsp::new([0x42; 32], measurement);
    psp.policy = policy;
    let id = Identity::generate().unwrap();
    Enrollment::create(&mut psp, &id, "node1", chain, &[7; 32]).unwrap()
}

/// `genesis` with validator 1 replaced by `enrollment` (its key in the validator set, its
/// enrollment in place of node1's), re-certified so only the enrollment is wrong.
fn with_validator_1(genesis: &Value, enrollment: &Enrollment) -> Value {
    use base64::Engine as _;
    let mut g = genesis.clone();
    let key = hex::decode(&enrollment.consensus_key).unwrap();
    g["validators"][1]["pub_key"]["value"] = base64::engine::general_purpose::STANDARD
        .encode(&key)
        .into();
    // The address that goes with the key, as a careful forger would write it.
    let public = bulwark_types::tendermint::PublicKey::from_raw_ed25519(&key).unwrap();
    let address = bulwark_types::tendermint::account::Id::from(public.ed25519().unwrap());
    g["validators"][1]["address"] = address.to_string().into();
    g["enrollments"][1] = serde_json::to_value(enrollment).unwrap();
    certify(CHAIN, &mut g).unwrap();
    g
}

#[test]
fn verify_genesis_names_the_validator_and_check_of_each_bad_enrollment() {
    let dir = tempfile::tempdir().unwrap();
    let homes = fast_testnet(dir.path(), testnet_block(4).unwrap()).unwrap();
    let path = homes[0].join("config/genesis.json");
    let real = read_json(&path);

    let (code, lines) = verify_genesis(&path);
    assert_eq!(code, Some(0), "{lines:?}");
    assert_eq!(lines.len(), 4);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["validator"], format!("node{i}"));
        assert_eq!(l["verified"], true, "{l}");
        assert_eq!(l["measurement"], hex::encode(binary_measurement()));
        assert!(
            l["chip"].as_str().unwrap().len() == 128 && l["tcb"].is_object(),
            "{l}"
        );
    }

    let measurement = binary_measurement();
    let good_policy = SimulatedPsp::new([0; 32], [0; 48]).policy;
    let genuine_node1: Enrollment = serde_json::from_value(real["enrollments"][1].clone()).unwrap();
    // Bound to another key: node1's genuine evidence, an attacker's consensus key.
    let mut another_key = genuine_node1.clone();
    another_key.consensus_key = hex::encode(Identity::generate().unwrap().consensus_public());
    // Made for another chain, then relabelled for this one (the evidence still says which).
    let mut relabelled = foreign_enrollment(measurement, good_policy, "other-chain");
    relabelled.chain_name = CHAIN.into();
    let cases = [
        ("another consensus key", another_key, "report_data"),
        (
            "another chain name",
            foreign_enrollment(measurement, good_policy, "other-chain"),
            "chain_name",
        ),
        ("another chain, relabelled", relabelled, "report_data"),
        (
            "a debug guest policy",
            foreign_enrollment(measurement, good_policy | 1 << 19, CHAIN),
            "debug",
        ),
        (
            "an unlisted measurement",
            foreign_enrollment([7; 48], good_policy, CHAIN),
            "measurement",
        ),
    ];
    for (what, enrollment, check) in cases {
        let forged = dir.path().join("forged.json");
        std::fs::write(&forged, with_validator_1(&real, &enrollment).to_string()).unwrap();
        let (code, lines) = verify_genesis(&forged);
        assert_eq!(code, Some(1), "{what}: {lines:?}");
        assert_eq!(lines.len(), 4, "{what}");
        assert_eq!(lines[1]["validator"], "node1", "{what}");
        assert_eq!(lines[1]["verified"], false, "{what}");
        assert_eq!(lines[1]["check"], check, "{what}: {}", lines[1]);
        for i in [0, 2, 3] {
            assert_eq!(lines[i]["verified"], true, "{what}: {}", lines[i]);
        }
    }

    // A forged genesis reusing the real chain id fails before any validator is looked at.
    let mut forged = real.clone();
    forged["attestation"]["guest_policy"]["allow_debug"] = true.into();
    let forged_path = dir.path().join("forged.json");
    std::fs::write(&forged_path, forged.to_string()).unwrap();
    let (code, lines) = verify_genesis(&forged_path);
    assert_eq!(code, Some(1));
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["check"], "chain_id", "{}", lines[0]);
}

#[test]
fn genesis_assemble_refuses_a_bad_enrollment_and_its_genesis_runs_four_processes() {
    let dir = tempfile::tempdir().unwrap();
    let homes = fast_testnet(dir.path(), testnet_block(4).unwrap()).unwrap();
    let testnet_genesis = read_json(&homes[0].join("config/genesis.json"));
    let policy = dir.path().join("policy.json");
    std::fs::write(&policy, testnet_genesis["attestation"].to_string()).unwrap();
    let measurements = dir.path().join("measurements.json");
    std::fs::write(
        &measurements,
        serde_json::json!([hex::encode(binary_measurement())]).to_string(),
    )
    .unwrap();
    let out = dir.path().join("genesis.json");
    let mut enrollments: Vec<PathBuf> = homes
        .iter()
        .map(|h| h.join("config/enrollment.json"))
        .collect();
    let assemble_with = |measurements: &Path, extra: &[&str], files: &[PathBuf]| {
        let mut args = vec![
            "genesis".to_string(),
            "assemble".into(),
            "--chain-name".into(),
            CHAIN.into(),
            "--measurements".into(),
            measurements.display().to_string(),
            "--policy".into(),
            policy.display().to_string(),
            "--out".into(),
            out.display().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        for f in files {
            args.push("--enrollment".into());
            args.push(f.display().to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        bulwark(&args)
    };
    let assemble = |files: &[PathBuf]| assemble_with(&measurements, &[], files);

    // A debug guest's enrollment among them: refused, naming its file and the check.
    let debug = dir.path().join("debug-enrollment.json");
    let good_policy = SimulatedPsp::new([0; 32], [0; 48]).policy;
    std::fs::write(
        &debug,
        serde_json::to_string(&foreign_enrollment(
            binary_measurement(),
            good_policy | 1 << 19,
            CHAIN,
        ))
        .unwrap(),
    )
    .unwrap();
    let refused = assemble(&[enrollments[0].clone(), debug.clone()]);
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("debug-enrollment.json") && stderr.contains("debug"),
        "{stderr}"
    );
    assert!(!out.exists());

    // An app_state the built-in kvstore would refuse at InitChain ("any_key" for "any-key"):
    // refused for an image without an application of its own, taken for one with.
    enrollments.truncate(4);
    let image = |inputs: Value| {
        let path = dir.path().join("measurement.json");
        let digest = hex::encode(binary_measurement());
        let json = serde_json::json!({"launch_digest": {"1": digest}, "inputs": inputs});
        std::fs::write(&path, json.to_string()).unwrap();
        path
    };
    let typo = ["--app-state", r#"{"validator_updates": "any_key"}"#];
    let refused = assemble_with(&image(serde_json::json!({})), &typo, &enrollments);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("app_state") && stderr.contains("any-key"),
        "{stderr}"
    );
    assert!(!out.exists());
    let app = image(serde_json::json!({"abci-app": {"sha256": "00"}}));
    let taken = assemble_with(&app, &typo, &enrollments);
    assert!(
        taken.status.success(),
        "{}",
        String::from_utf8_lossy(&taken.stderr)
    );
    std::fs::remove_file(&out).unwrap();

    // The four genuine enrollments: a genesis that verifies, with its own chain id.
    let made = assemble(&enrollments);
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let genesis = read_json(&out);
    // verify-genesis also shows what the validators' lines do not, for whoever approves it.
    let shown = bulwark(&["verify-genesis", out.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&shown.stderr);
    assert!(
        stderr.contains("app_state: {}; attest_full_nodes: null"),
        "{stderr}"
    );
    let chain_id = String::from_utf8_lossy(&made.stdout).trim().to_string();
    assert_eq!(genesis["chain_id"], chain_id.as_str());
    assert!(chain_id.starts_with("bulwark-testnet-"));
    let (code, lines) = verify_genesis(&out);
    assert_eq!(code, Some(0), "{lines:?}");

    // Every node runs on the assembled genesis with the keys it made itself.
    for h in &homes {
        std::fs::copy(&out, h.join("config/genesis.json")).unwrap();
    }
    let mut nodes: Vec<Node> = homes.iter().map(|h| start(h).unwrap()).collect();
    {
        let mut all: Vec<&mut Node> = nodes.iter_mut().collect();
        wait_for(&mut all, 3, Duration::from_secs(90)).unwrap();
    }
    for n in nodes.iter_mut() {
        n.stop_cleanly().unwrap();
    }
}
