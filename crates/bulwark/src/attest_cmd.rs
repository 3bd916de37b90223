//! `bulwark attest verify`.

use crate::{read, ReportArgs, VerifyArgs};
use anyhow::{bail, Context, Result};
use bulwark_attest::report::{platform_bits, policy_bits, REPORT_SIZE};
use bulwark_attest::{
    check_host_chain, inspect, verify as verify_evidence, Binding, Evidence, HexBytes,
    Measurements, Policy, RejectReason, Trust,
};
use serde_json::{json, Value};
use std::process::ExitCode;

/// A report file: raw bytes, or hex text of them.
fn report_bytes(raw: Vec<u8>) -> Vec<u8> {
    if raw.len() == REPORT_SIZE {
        return raw;
    }
    let text: String = String::from_utf8_lossy(&raw)
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    match hex::decode(&text) {
        Ok(bytes) if bytes.len() == REPORT_SIZE => bytes,
        _ => raw,
    }
}

fn policy_json(policy: u64) -> Value {
    let (abi_major, abi_minor) = policy_bits::abi(policy);
    json!({
        "raw": format!("{policy:#x}"),
        "abi_major": abi_major,
        "abi_minor": abi_minor,
        "smt": policy & policy_bits::SMT != 0,
        "migrate_ma": policy & policy_bits::MIGRATE_MA != 0,
        "debug": policy & policy_bits::DEBUG != 0,
        "single_socket": policy & policy_bits::SINGLE_SOCKET != 0,
        "cxl_allow": policy & policy_bits::CXL_ALLOW != 0,
        "mem_aes_256_xts": policy & policy_bits::MEM_AES_256_XTS != 0,
        "rapl_dis": policy & policy_bits::RAPL_DIS != 0,
        "ciphertext_hiding_dram": policy & policy_bits::CIPHERTEXT_HIDING_DRAM != 0,
        "page_swap_disable": policy & policy_bits::PAGE_SWAP_DISABLE != 0,
    })
}

fn platform_json(info: u64) -> Value {
    json!({
        "raw": format!("{info:#x}"),
        "smt_en": info & platform_bits::SMT_EN != 0,
        "tsme_en": info & platform_bits::TSME_EN != 0,
        "ecc_en": info & platform_bits::ECC_EN != 0,
        "rapl_dis": info & platform_bits::RAPL_DIS != 0,
        "ciphertext_hiding_en": info & platform_bits::CIPHERTEXT_HIDING_EN != 0,
        "alias_check_complete": info & platform_bits::ALIAS_CHECK_COMPLETE != 0,
        "tio_en": info & platform_bits::TIO_EN != 0,
    })
}

/// The policy: a whole document from `--policy`, or the strict template adjusted by flags.
fn policy_from(args: &VerifyArgs) -> Result<Policy> {
    if let Some(path) = &args.policy {
        let text = String::from_utf8(read(path)?)
            .with_context(|| format!("{} is not UTF-8", path.display()))?;
        return Policy::from_json(&text).with_context(|| format!("--policy {}", path.display()));
    }
    let measurements = if args.any_measurement {
        Measurements::Any
    } else {
        let parse = |m: &String| {
            m.parse()
                .map_err(|e| anyhow::anyhow!("--measurement {m}: {e}"))
        };
        Measurements::OneOf(args.measurement.iter().map(parse).collect::<Result<_>>()?)
    };
    let trust = if args.simulated {
        Trust::Simulated
    } else {
        Trust::Amd
    };
    let mut policy = Policy::strict(trust, measurements);
    if args.any_tcb {
        policy = policy.with_any_tcb();
    }
    policy.guest_policy.allow_debug = args.allow_debug;
    policy.allow_provisional_tcb = args.allow_provisional_tcb;
    policy.allow_vlek = args.allow_vlek;
    policy.vlek_csp_ids = args.vlek_csp.clone();
    policy.platform.require_alias_check = !args.no_alias_check;
    policy.vmpl = args.vmpl;
    Ok(policy)
}

/// Why verified evidence whose REPORT_DATA nobody checked is not accepted by default.
const UNBOUND: &str = "binding: REPORT_DATA was not checked (no --report-data), so the evidence \
    is bound to no key, nonce or chain and proves nothing fresh; pass --allow-unbound to accept \
    it for inspection";

pub fn verify(args: &VerifyArgs) -> Result<ExitCode> {
    let report = report_bytes(read(&args.report)?);
    let cert_path = args
        .vcek
        .as_ref()
        .or(args.vlek.as_ref())
        .context("--vcek or --vlek")?;
    let evidence = Evidence {
        report,
        endorsement_cert: read(cert_path)?,
    };
    let policy = policy_from(args)?;
    let binding = match &args.report_data {
        None => Binding::Unchecked,
        Some(h) => match h.parse::<HexBytes<64>>() {
            Ok(b) => Binding::ReportData(b.0),
            Err(e) => bail!("--report-data: {e}"),
        },
    };
    let bound = matches!(binding, Binding::ReportData(_));
    let now = args.at.unwrap_or_else(bulwark::ceremony::now);

    let host_chain: Result<(), RejectReason> = match &args.ask_ark {
        None => Ok(()),
        Some(path) => check_host_chain(&read(path)?).map(|_| ()),
    };
    let result = host_chain.and_then(|()| verify_evidence(&evidence, &policy, &binding, now));
    let seen = inspect(&evidence);
    let binding_state = if bound { "checked" } else { "unchecked" };
    let accepted = result.is_ok() && (bound || args.allow_unbound);
    let out = match &result {
        Ok(v) => json!({
            "verified": accepted,
            "binding": binding_state,
            "reason": if accepted { Value::Null } else { Value::from(UNBOUND) },
            "check": if accepted { Value::Null } else { Value::from("binding") },
            "product": v.product.name(),
            "report_version": v.report_version,
            "measurement": v.measurement.to_string(),
            "policy": policy_json(v.policy),
            "platform_info": platform_json(v.platform_info),
            "reported_tcb": v.reported_tcb,
            "launch_tcb": v.launch_tcb,
            "current_firmware": v.current_firmware,
            "vmpl": v.vmpl,
            "signing_key": v.signing_key,
            "chip_id": v.chip_id.to_string(),
            "report_data": v.report_data.to_string(),
            "certificate_not_after": v.endorsement_not_after,
            "checked_at": now,
        }),
        Err(reason) => json!({
            "verified": false,
            "binding": binding_state,
            "reason": reason.to_string(),
            "check": reason.check(),
            "product": seen.as_ref().and_then(|s| s.product).map(|p| p.name()),
            "report_version": seen.as_ref().map(|s| s.report_version),
            "measurement": seen.as_ref().map(|s| s.measurement.to_string()),
            "policy": seen.as_ref().map(|s| policy_json(s.policy)),
            "platform_info": seen.as_ref().map(|s| platform_json(s.platform_info)),
            "reported_tcb": seen.as_ref().map(|s| s.reported_tcb),
            "vmpl": seen.as_ref().map(|s| s.vmpl),
            "checked_at": now,
        }),
    };
    println!("{out}");
    Ok(if accepted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn hex_arg<const N: usize>(name: &str, value: &str) -> Result<[u8; N]> {
    value
        .parse::<HexBytes<N>>()
        .map(|h| h.0)
        .map_err(|e| anyhow::anyhow!("--{name}: {e}"))
}

pub fn report(args: &ReportArgs) -> Result<ExitCode> {
    use bulwark_attest::{EvidenceSource, GuestDevice};
    let report_data = hex_arg::<64>("report-data", &args.report_data)?;
    let mut source: Box<dyn EvidenceSource> = if args.simulated {
        simulated_source(args)?
    } else {
        match GuestDevice::open() {
            Ok(device) => Box::new(device),
            Err(e) => bail!("{e}; on a machine without SEV-SNP use --simulated"),
        }
    };
    let evidence = source.evidence(report_data)?;
    let cert_out = args.cert_out.clone().unwrap_or_else(|| {
        let mut p = args.out.clone().into_os_string();
        p.push(".vcek.der");
        p.into()
    });
    std::fs::write(&args.out, &evidence.report)
        .with_context(|| format!("writing {}", args.out.display()))?;
    std::fs::write(&cert_out, &evidence.endorsement_cert)
        .with_context(|| format!("writing {}", cert_out.display()))?;
    println!(
        "{}",
        json!({"report": args.out.display().to_string(), "certificate": cert_out.display().to_string(), "trust": source.trust()})
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(feature = "simulated-psp")]
fn simulated_source(args: &ReportArgs) -> Result<Box<dyn bulwark_attest::EvidenceSource>> {
    eprintln!(
        "bulwark: WARNING: simulated PSP: this evidence proves nothing about where code runs"
    );
    let secret = match &args.chip_secret {
        Some(h) => hex_arg::<32>("chip-secret", h)?,
        None => [0x11; 32],
    };
    let measurement = match &args.measurement {
        Some(h) => hex_arg::<48>("measurement", h)?,
        None => [0; 48],
    };
    Ok(Box::new(bulwark_attest::simulated::SimulatedPsp::new(
        secret,
        measurement,
    )))
}

#[cfg(not(feature = "simulated-psp"))]
fn simulated_source(_: &ReportArgs) -> Result<Box<dyn bulwark_attest::EvidenceSource>> {
    Err(bulwark::home::HomeError::ProductionBuild("--simulated").into())
}
