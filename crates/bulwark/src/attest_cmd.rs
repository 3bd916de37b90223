//! `bulwark attest verify`.

use crate::{read, ReportArgs, VerifyArgs};
use anyhow::{bail, Context, Result};
use bulwark_attest::report::{policy_bits, REPORT_SIZE};
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
    json!({
        "raw": format!("{policy:#x}"),
        "abi_major": (policy >> 8) & 0xff,
        "abi_minor": policy & 0xff,
        "smt": policy & policy_bits::SMT != 0,
        "migrate_ma": policy & policy_bits::MIGRATE_MA != 0,
        "debug": policy & policy_bits::DEBUG != 0,
        "single_socket": policy & policy_bits::SINGLE_SOCKET != 0,
    })
}

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
    let measurements = if args.any_measurement {
        Measurements::Any
    } else {
        let mut list = Vec::new();
        for m in &args.measurement {
            list.push(
                m.parse::<HexBytes<48>>()
                    .map_err(|e| anyhow::anyhow!("--measurement {m}: {e}"))?,
            );
        }
        Measurements::OneOf(list)
    };
    let trust = if args.simulated {
        Trust::Simulated
    } else {
        Trust::Amd
    };
    let mut policy = Policy::strict(trust, measurements);
    policy.allow_debug = args.allow_debug;
    policy.allow_provisional_tcb = args.allow_provisional_tcb;
    policy.allow_vlek = args.allow_vlek;
    policy.vmpl = args.vmpl;
    let binding = match &args.report_data {
        None => Binding::Unchecked,
        Some(h) => match h.parse::<HexBytes<64>>() {
            Ok(b) => Binding::ReportData(b.0),
            Err(e) => bail!("--report-data: {e}"),
        },
    };

    let host_chain: Result<(), RejectReason> = match &args.ask_ark {
        None => Ok(()),
        Some(path) => check_host_chain(&read(path)?).map(|_| ()),
    };
    let result = host_chain.and_then(|()| verify_evidence(&evidence, &policy, &binding));
    let seen = inspect(&evidence);
    let out = match &result {
        Ok(v) => json!({
            "verified": true,
            "reason": null,
            "check": null,
            "product": v.product.name(),
            "report_version": v.report_version,
            "measurement": v.measurement.to_string(),
            "policy": policy_json(v.policy),
            "reported_tcb": v.reported_tcb,
            "vmpl": v.vmpl,
            "signing_key": v.signing_key,
            "chip_id": v.chip_id.to_string(),
            "report_data": v.report_data.to_string(),
        }),
        Err(reason) => json!({
            "verified": false,
            "reason": reason.to_string(),
            "check": reason.check(),
            "product": seen.as_ref().and_then(|s| s.product).map(|p| p.name()),
            "report_version": seen.as_ref().map(|s| s.report_version),
            "measurement": seen.as_ref().map(|s| s.measurement.to_string()),
            "policy": seen.as_ref().map(|s| policy_json(s.policy)),
            "reported_tcb": seen.as_ref().map(|s| s.reported_tcb),
            "vmpl": seen.as_ref().map(|s| s.vmpl),
        }),
    };
    println!("{out}");
    Ok(if result.is_ok() {
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
    use bulwark_attest::simulated::SimulatedPsp;
    use bulwark_attest::{EvidenceSource, GuestDevice};
    let report_data = hex_arg::<64>("report-data", &args.report_data)?;
    let mut source: Box<dyn EvidenceSource> = if args.simulated {
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
        Box::new(SimulatedPsp::new(secret, measurement))
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
