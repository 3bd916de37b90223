//! The validator's side of PID 1 in the measured guest: what it does with the home on its
//! data disk (mounted by `bulwark-boot`) and the inputs the host hands in at launch
//! ([`crate::launch`]). A validator VM boots in one of two ways:
//!
//! - **enrol** (the host gave `opt/bulwark/enroll`): the identity is made from the kernel
//!   CRNG and sealed into the home; the enrollment (public keys and evidence binding them) is
//!   written beside it and printed on the console as one line ([`ENROLLMENT_LINE`]), the
//!   plaintext channel the host reads; then the VM powers off. No key ever leaves the guest.
//! - **run**: the host's `config.toml` and `genesis.json` are written into the home, which is
//!   loaded (the chain id must certify the genesis, its trust must be one this build has, the
//!   sealed identity must open), and the node checks its own report (HOST_DATA = SHA-256 of
//!   that genesis, its key a validator of it) before anything else.
//!
//! A production build (no simulated PSP) that finds no SEV-SNP guest device powers off saying
//! so; it never falls back to simulated attestation.

use crate::ceremony;
use crate::home::{Home, HomeError, PublicHome};
use crate::launch;
use anyhow::{bail, Context, Result};
use bulwark_attest::{GuestDevice, Trust};
use serde::Deserialize;
use std::io::Write;
use std::path::Path;

/// The console line that carries an enrollment: this prefix, then the enrollment's JSON in
/// standard base64. `grep '^bulwark-enrollment: ' serial.log | cut -d' ' -f2 | base64 -d`
/// recovers `enrollment.json`.
pub const ENROLLMENT_LINE: &str = "bulwark-enrollment: ";

/// `O_NOFOLLOW` (Linux x86-64).
const O_NOFOLLOW: i32 = 0o400000;

/// The largest enrolment request read from `fw_cfg`.
const MAX_ENROLL_REQUEST: u64 = 4096;
/// The largest `config.toml` read from `fw_cfg`.
const MAX_CONFIG: u64 = 64 * 1024;

/// What the host asks of an enrolling guest (`opt/bulwark/enroll`, JSON).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    /// The validator's human name.
    pub moniker: String,
    /// The chain the identity is made for (its name, without the genesis hash).
    pub chain_name: String,
    /// Whose evidence to enrol with: `amd` (the SEV-SNP device, the default) or `simulated`
    /// (development builds only).
    #[serde(default = "amd")]
    pub trust: Trust,
}

fn amd() -> Trust {
    Trust::Amd
}

impl EnrollRequest {
    /// Parses untrusted bytes.
    pub fn parse(bytes: &[u8]) -> Result<Self, HomeError> {
        serde_json::from_slice(bytes).map_err(|e| HomeError::Invalid {
            path: launch::path(launch::ENROLL),
            reason: e.to_string(),
        })
    }
}

/// The console line for an enrollment ([`ENROLLMENT_LINE`]).
pub fn enrollment_line(enrollment: &bulwark_identity::Enrollment) -> Result<String> {
    use base64::Engine;
    let json = serde_json::to_vec(enrollment)?;
    Ok(format!(
        "{ENROLLMENT_LINE}{}",
        base64::engine::general_purpose::STANDARD.encode(json)
    ))
}

/// The enrollment a console log carries (its last [`ENROLLMENT_LINE`]), if any.
pub fn enrollment_from_console(log: &str) -> Result<Option<bulwark_identity::Enrollment>> {
    use base64::Engine;
    let Some(line) = log
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(ENROLLMENT_LINE))
        .next_back()
    else {
        return Ok(None);
    };
    let json = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .context("the enrollment line is not base64")?;
    Ok(Some(
        serde_json::from_slice(&json).context("the enrollment line is not an enrollment")?,
    ))
}

/// The production image's first duty: without the SEV-SNP guest device there is nothing to
/// attest with, and a production build has nothing to fall back to.
fn require_guest_device() -> Result<()> {
    if crate::home::SIMULATED_PSP {
        return Ok(());
    }
    GuestDevice::open().map(drop).map_err(|e| {
        anyhow::anyhow!(
            "sev_guest_device: {e}: this production image runs only as an SEV-SNP guest and has no simulated attestation to fall back to"
        )
    })
}

/// Writes `bytes` to `path` whole or not at all (a temporary file, synced, then renamed).
/// The host formatted the disk: a temporary file it left there (a symbolic link, say) is
/// removed, never written through, and the new one is created afresh without following links.
fn replace_file(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("incoming");
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", tmp.display())),
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .custom_flags(O_NOFOLLOW)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

/// Enrols this guest: a fresh identity sealed into `home/config`, the enrollment printed on
/// the console (a host takes it only after a clean power-off, which syncs the disk first). A home that already holds an identity prints its enrollment again (a lost
/// console log loses nothing) and never makes a second identity.
fn enroll(home: &Path, request: &EnrollRequest) -> Result<()> {
    let config = home.join("config");
    let sealed = config.join(ceremony::SEALED_IDENTITY);
    let enrollment = if sealed.exists() {
        eprintln!(
            "bulwark: this disk is already enrolled ({}); publishing its enrollment again",
            sealed.display()
        );
        ceremony::read_enrollment(&config.join(ceremony::ENROLLMENT))?
    } else {
        match request.trust {
            Trust::Amd => require_guest_device()?,
            Trust::Simulated if !crate::home::SIMULATED_PSP => bail!(
                "trust: the host asked for a simulated enrolment, and this production build has no simulated PSP: it enrols only with the SEV-SNP device"
            ),
            Trust::Simulated => {}
        }
        let mut source = crate::home::evidence_source(request.trust, home, None, [0; 32])?;
        let e = ceremony::enroll(
            source.as_mut(),
            &config,
            &request.moniker,
            &request.chain_name,
        )?;
        e
    };
    let line = enrollment_line(&enrollment)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    eprintln!(
        "bulwark: enrolled {} for chain {} (consensus key {}); powering off",
        enrollment.moniker, enrollment.chain_name, enrollment.consensus_key
    );
    Ok(())
}

/// PID 1's node function: enrol or run the validator whose home is `home`.
pub fn run(home: &Path) -> Result<()> {
    if let Some(bytes) = launch::read(launch::ENROLL, MAX_ENROLL_REQUEST)? {
        return enroll(home, &EnrollRequest::parse(&bytes)?);
    }
    let config = home.join("config");
    std::fs::create_dir_all(&config).with_context(|| format!("creating {}", config.display()))?;
    if !std::fs::symlink_metadata(&config).is_ok_and(|m| m.is_dir()) {
        bail!("{}: not a directory (the host's disk)", config.display());
    }
    for (name, max) in [
        (launch::CONFIG_TOML, MAX_CONFIG),
        (launch::GENESIS, launch::MAX_INPUT),
    ] {
        if let Some(bytes) = launch::read(name, max)? {
            replace_file(&config.join(name), &bytes)?;
        }
    }
    // The genesis's own checks (chain id, trust) come first: they hold on any machine.
    PublicHome::load(home)?;
    require_guest_device()?;
    let sealed = config.join(ceremony::SEALED_IDENTITY);
    if !sealed.exists() {
        bail!(
            "identity: this data disk holds no sealed identity ({}): boot it once with fw_cfg opt/bulwark/enroll to enrol",
            sealed.display()
        );
    }
    crate::run::start(Home::load(home)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_enrolment_request_defaults_to_amd_and_refuses_unknown_fields() {
        let r = EnrollRequest::parse(br#"{"moniker":"v0","chain_name":"main"}"#).unwrap();
        assert_eq!(r.trust, Trust::Amd);
        assert!(EnrollRequest::parse(br#"{"moniker":"v0","chain_name":"main","x":1}"#).is_err());
        assert!(EnrollRequest::parse(b"not json").is_err());
    }
}
