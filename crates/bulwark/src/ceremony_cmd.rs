//! `bulwark enroll`, `bulwark genesis assemble` and `bulwark verify-genesis`.

use crate::{read, AssembleArgs};
use anyhow::{Context, Result};
use bulwark::ceremony;
use bulwark::home::{evidence_source, SIMULATED_CHIP};
use bulwark_attest::{Measurements, Policy, Trust};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `bulwark enroll`: the identity is made and sealed here, inside the guest.
pub fn enroll(home: &Path, moniker: &str, chain_name: &str, simulated: bool) -> Result<ExitCode> {
    let cfg = home.join("config");
    if simulated && !bulwark_attest::SIMULATED_PSP_BUILT_IN {
        return Err(bulwark::home::HomeError::ProductionBuild("--simulated").into());
    }
    if !simulated {
        anyhow::bail!("trust: under AMD trust a validator enrols as the measured image's enrolling VM, which runs on as the launch instance its genesis names (`cargo xtask qemu --snp --enroll`); a process exits after enrolling, so no launch instance of it could sign. Process mode is for development: --simulated");
    }
    let chip = cfg.join(SIMULATED_CHIP);
    if !chip.exists() {
        let mut secret = [0u8; 32];
        getrandom::getrandom(&mut secret).map_err(|e| anyhow::anyhow!("randomness: {e}"))?;
        std::fs::create_dir_all(&cfg)?;
        std::fs::write(&chip, hex::encode(secret))
            .with_context(|| format!("writing {}", chip.display()))?;
    }
    // An enrolling guest has no genesis yet: its launch carries no network.
    let mut source = evidence_source(Trust::Simulated, home, None, [0; 32])?;
    let e = ceremony::enroll_for_process(source.as_mut(), &cfg, moniker, chain_name)?;
    println!(
        "{}",
        serde_json::json!({"enrollment": cfg.join(ceremony::ENROLLMENT), "consensus_key": e.consensus_key, "node_id": e.node_id})
    );
    Ok(ExitCode::SUCCESS)
}

/// `bulwark genesis assemble`.
pub fn assemble(args: &AssembleArgs) -> Result<ExitCode> {
    let measurements = ceremony::read_measurements(&args.measurements)?;
    if args.simulated && !bulwark_attest::SIMULATED_PSP_BUILT_IN {
        return Err(bulwark::home::HomeError::ProductionBuild("--simulated").into());
    }
    let mut policy = match &args.policy {
        Some(path) => serde_json::from_slice::<Policy>(&read(path)?)
            .with_context(|| format!("{}: not an attestation policy", path.display()))?,
        None if args.simulated => Policy::strict(Trust::Simulated, Measurements::Any),
        None => Policy::strict(Trust::Amd, Measurements::Any),
    };
    policy.measurements = Measurements::OneOf(measurements);
    // An app_state the image's built-in kvstore refuses would stop every validator for good.
    if ceremony::runs_builtin_kvstore(&args.measurements)? {
        bulwark_app::kvstore::read_app_state(args.app_state.to_string().as_bytes())
            .map_err(|e| anyhow::anyhow!("app_state: the image's kvstore refuses it: {e}"))?;
    }
    let enrollments = args
        .enrollment
        .iter()
        .map(|p| ceremony::read_enrollment(p))
        .collect::<Result<Vec<_>, _>>()?;
    let genesis = ceremony::assemble(
        &args.chain_name,
        &enrollments,
        &policy,
        ceremony::now(),
        args.app_state.clone(),
        args.attest_full_nodes,
    )
    .map_err(|e| match e {
        ceremony::CeremonyError::Enrollment { index, .. } => anyhow::anyhow!(
            "{}: {e}",
            args.enrollment
                .get(index)
                .map(PathBuf::as_path)
                .unwrap_or(Path::new("?"))
                .display()
        ),
        other => other.into(),
    })?;
    let text = serde_json::to_string_pretty(&genesis)?;
    std::fs::write(&args.out, text + "\n")
        .with_context(|| format!("writing {}", args.out.display()))?;
    println!("{}", genesis["chain_id"].as_str().unwrap_or_default());
    Ok(ExitCode::SUCCESS)
}

/// `bulwark verify-genesis`: exit 0 only when every validator verifies.
pub fn verify_genesis(path: &PathBuf, at: Option<u64>) -> Result<ExitCode> {
    let value: serde_json::Value = serde_json::from_slice(&read(path)?)
        .with_context(|| format!("{}: not JSON", path.display()))?;
    // What the validators' lines do not show, for whoever approves the chain id.
    let field = |name: &str| value.get(name).cloned().unwrap_or_default();
    let (state, full) = (field("app_state"), field("attest_full_nodes"));
    eprintln!("app_state: {state}; attest_full_nodes: {full}");
    match ceremony::verify_genesis(&value, at.unwrap_or_else(ceremony::now)) {
        Err(reason) => {
            let check = reason.split(':').next().unwrap_or_default().to_string();
            println!(
                "{}",
                serde_json::json!({"verified": false, "check": check, "reason": reason})
            );
            Ok(ExitCode::from(1))
        }
        Ok(lines) => {
            for line in &lines {
                println!("{}", serde_json::to_string(line)?);
            }
            Ok(if lines.iter().all(|l| l.verified) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// `bulwark show-validator`.
pub fn show_validator(home: &Path) -> Result<ExitCode> {
    let h = bulwark::home::Home::load(home)?;
    let consensus = h
        .validator_key
        .pub_key
        .ed25519()
        .map(|k| hex::encode(k.as_bytes()))
        .unwrap_or_default();
    let node_id = bulwark_types::tendermint::node::Id::try_from(h.node_key.priv_key.public_key())
        .map(|id| id.to_string())
        .unwrap_or_default();
    println!(
        "{}",
        serde_json::json!({
            "consensus_key": consensus,
            "address": h.validator_key.address.to_string(),
            "node_id": node_id,
            "chain_id": h.genesis.chain_id.to_string(),
            "genesis_validator": h.is_genesis_validator(),
        })
    );
    Ok(ExitCode::SUCCESS)
}
