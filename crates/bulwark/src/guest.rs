//! The validator's side of PID 1 in the measured guest: what it does with its sealed data disk
//! (`bulwark_boot::sealed_disk`: dm-integrity and dm-crypt under a key wrapped by the sealing
//! key, the guest's own ext4, mounted at `/data`) and the inputs the host hands in at launch
//! ([`crate::launch`]). A validator VM boots in one of two ways:
//!
//! - **enrol** (the host gave `opt/bulwark/enroll`): the sealed data disk is made, and the
//!   identity is made from the kernel CRNG and sealed into the home on it; the enrollment
//!   (public keys and evidence binding them) is written beside it and printed on the console
//!   as one line ([`ENROLLMENT_LINE`]), the plaintext channel the host reads. No key ever
//!   leaves the guest. The boot then runs on as the validator's **launch instance**: it waits
//!   on the launch port for its network's `config.toml` and `genesis.json`
//!   ([`launch::receive`]), checks them as a run boot does (and that the genesis is for the
//!   chain and trust it enrolled for, and names this boot if the key is a validator's: if
//!   not, it runs as a full node), and runs. Its HOST_DATA binds no genesis (there was none at
//!   its launch); its TLS evidence does.
//! - **run**: the host's `config.toml` and `genesis.json` are checked first (the chain id must
//!   certify the genesis, its trust must be one this build has), then the data disk is opened
//!   for that chain, they are written into the home on it, and the home is loaded (the sealed
//!   identity must open), and the node checks its own report (HOST_DATA = SHA-256 of
//!   that genesis, its key a validator of it) before anything else.
//!
//! A production build (no simulated PSP) that finds no SEV-SNP guest device powers off saying
//! so; it never falls back to simulated attestation.

use crate::ceremony;
use crate::home::{Home, HomeError, PublicHome};
use crate::launch;
use anyhow::{bail, Context, Result};
use bulwark_attest::{GuestDevice, Trust};
use bulwark_boot::DataDisk;
use bulwark_identity::disk_key;
use serde::Deserialize;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The console line that carries an enrollment: this prefix, then the enrollment's JSON in
/// standard base64. `grep '^bulwark-enrollment: ' serial.log | cut -d' ' -f2 | base64 -d`
/// recovers `enrollment.json`.
pub const ENROLLMENT_LINE: &str = "bulwark-enrollment: ";

/// The largest enrolment request read from `fw_cfg`.
const MAX_ENROLL_REQUEST: u64 = 4096;

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
    /// The TCP port the enrolled guest takes its network's launch inputs on.
    #[serde(default = "launch_port")]
    pub launch_port: u16,
    /// SHA-256 of the launch token (hex): the launch inputs must carry the token. The operator
    /// who launches the VM makes it (`head -c 32 /dev/urandom | base64`) and keeps it.
    pub launch_token_sha256: bulwark_attest::HexBytes<32>,
}

fn amd() -> Trust {
    Trust::Amd
}

fn launch_port() -> u16 {
    launch::DEFAULT_LAUNCH_PORT
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

/// Where PID 1 puts the host's launch files before anything is opened: a home of config and
/// genesis only, checked before the data disk is touched (on the initramfs, never on disk).
const STAGING: &str = "/run/bulwark-launch";

/// The sealed data disk opened with the key in its slots (wrapped again into the other slot
/// when the firmware has committed to a newer TCB), mounted at `/data`.
fn open_disk(
    disk: &DataDisk,
    source: &mut dyn bulwark_attest::EvidenceSource,
    chain_name: &str,
) -> Result<PathBuf> {
    let slots = disk.read_slots()?;
    let opened = disk_key::unwrap(source, &slots, chain_name)
        .context("data disk: its key does not open on this guest for this chain")?;
    if let Some((slot, bytes)) = disk_key::rewrap(source, &opened, chain_name)? {
        disk.write_slot(slot, &bytes)?;
        disk.write_slot(opened.slot, &[])?;
        eprintln!("bulwark: the data disk's key is wrapped under the committed TCB now");
    }
    Ok(disk.open(&opened.key, Path::new(bulwark_boot::DATA_DIR))?)
}

/// Enrols this guest: a new sealed data disk (its key from the CRNG, wrapped under the sealing
/// key), a fresh identity sealed onto it, the enrollment printed on the console once every
/// block of the disk is written (a host may copy it from then on). Then this boot waits for
/// its network's launch inputs and runs the validator as its launch instance. A disk that is
/// already enrolled prints its enrollment again (a lost console log loses nothing), never
/// makes a second identity, and powers off: only the boot that made the identity is its
/// launch instance.
fn enroll(disk: &DataDisk, request: &EnrollRequest) -> Result<()> {
    match request.trust {
        Trust::Amd => require_guest_device()?,
        Trust::Simulated if !crate::home::SIMULATED_PSP => bail!(
            "trust: the host asked for a simulated enrolment, and this production build has no simulated PSP: it enrols only with the SEV-SNP device"
        ),
        Trust::Simulated => {}
    }
    let staging = Path::new(STAGING);
    let mut source = crate::home::evidence_source(request.trust, staging, None, [0; 32])?;
    let (home, enrollment, instance) = if disk.is_sealed()? {
        let home = open_disk(disk, source.as_mut(), &request.chain_name)?;
        eprintln!(
            "bulwark: this disk is already enrolled ({}); publishing its enrollment again",
            disk.device()
        );
        let enrollment =
            ceremony::read_enrollment(&home.join("config").join(ceremony::ENROLLMENT))?;
        println!("{}", enrollment_line(&enrollment)?);
        eprintln!("bulwark: powering off: a later boot of an enrolled disk is no launch instance; boot it with its network's genesis");
        return Ok(());
    } else {
        // The launch instance: this boot, which runs on as the validator once its genesis
        // comes (drawn now so that the enrollment, and so the genesis, names it).
        let mut instance = [0u8; 32];
        getrandom::getrandom(&mut instance).context("drawing the launch instance")?;
        let key = disk_key::generate()?;
        let slot = disk_key::wrap(source.as_mut(), &key, &request.chain_name)?;
        disk.write_slot(1, &[])?;
        disk.write_slot(0, &slot)?;
        let home = disk.create(&key, Path::new(bulwark_boot::DATA_DIR))?;
        eprintln!(
            "bulwark: made the sealed data disk on {} (dm-integrity, dm-crypt, the guest's own ext4)",
            disk.device()
        );
        let enrollment = ceremony::enroll(
            source.as_mut(),
            &home.join("config"),
            &request.moniker,
            &request.chain_name,
            &instance,
        )?;
        (home, enrollment, instance)
    };
    drop(source);
    bulwark_boot::sync_disks();
    let line = enrollment_line(&enrollment)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}")?;
    out.flush()?;
    drop(out);
    eprintln!(
        "bulwark: enrolled {} for chain {} (consensus key {}); this boot runs on as its launch instance: waiting for the network's config.toml and genesis.json on TCP port {}",
        enrollment.moniker, enrollment.chain_name, enrollment.consensus_key, request.launch_port
    );
    let mut home = launch::receive(request.launch_port, |inputs| {
        launch_home(&home, request, &enrollment, &instance, inputs)
    })?;
    home.launch = crate::home::Launch::Enrolled { instance };
    start_node(home)
}

/// Runs the node on the image's application: the one the measured image carries (started
/// here, its data on the sealed disk), else the built-in kvstore; never one the host names.
fn start_node(mut home: Home) -> Result<()> {
    let app = bulwark_boot::image_app::ImageApp::load(Path::new("/"))?;
    let measured = app
        .as_ref()
        .map_or("kvstore", |a| &a.spec.proxy_app)
        .to_string();
    if home.config.app.proxy_app != measured {
        eprintln!("bulwark: proxy_app {:?} of the host's config.toml ignored: the image's application is {measured:?}", home.config.app.proxy_app);
    }
    home.config.app.proxy_app = measured;
    let _running = app
        .map(|a| a.start(&home.dir.join("data/abci-app")))
        .transpose()?;
    crate::run::start(home)
}

/// The home the enrolled guest runs with, from the launch inputs the host sent: they pass a
/// run boot's checks, name the chain and trust this guest enrolled for, and if its key is a
/// validator's the genesis names this boot its launch instance (else it is a full node).
fn launch_home(
    home: &Path,
    request: &EnrollRequest,
    enrollment: &bulwark_identity::Enrollment,
    instance: &[u8; 32],
    inputs: launch::LaunchInputs,
) -> Result<Home> {
    inputs.check_token(&request.launch_token_sha256.0)?;
    let files = inputs.files()?;
    let staging = Path::new(STAGING);
    write_launch_files(staging, &files)?;
    let public = PublicHome::load(staging)?;
    if public.chain_name != enrollment.chain_name {
        bail!(
            "chain: the genesis is for chain {}, this validator enrolled for {}",
            public.chain_name,
            enrollment.chain_name
        );
    }
    if public.attestation.trust != request.trust {
        bail!(
            "trust: the genesis trusts {:?} evidence, this validator enrolled with {:?}",
            public.attestation.trust,
            request.trust
        );
    }
    // Every check a run makes of the genesis comes before the sealed home is written.
    let at = u64::try_from(public.genesis.genesis_time.unix_timestamp()).unwrap_or(0);
    let key = enrollment.consensus_public()?;
    ceremony::check_genesis_for(&public.genesis_document, at, &key).map_err(anyhow::Error::msg)?;
    let address = bulwark_types::tendermint::PublicKey::from_raw_ed25519(&key)
        .and_then(|k| k.ed25519())
        .map(bulwark_types::tendermint::account::Id::from)
        .context("the enrollment's consensus key is not ed25519")?;
    let named = ceremony::launch_instances(&public.genesis_document)
        .map_err(|e| anyhow::anyhow!("genesis: {e}"))?;
    // A key in no validator's place passed check_genesis_for only as a full node (the genesis
    // admits them): it runs as one, and claims its instance if the chain makes it a validator.
    let named = named
        .iter()
        .find(|(a, _)| a.as_slice() == address.as_bytes());
    if named.is_some_and(|(_, i)| i != instance) {
        bail!("launch_instance: the genesis does not name this boot as its validator's launch instance");
    }
    write_launch_files(home, &files)?;
    Ok(Home::load(home)?)
}

/// Writes the host's launch files into `home/config` (a directory, never a link).
fn write_launch_files(home: &Path, files: &[(&str, Vec<u8>)]) -> Result<()> {
    let config = home.join("config");
    std::fs::create_dir_all(&config).with_context(|| format!("creating {}", config.display()))?;
    if !std::fs::symlink_metadata(&config).is_ok_and(|m| m.is_dir()) {
        bail!("{}: not a directory", config.display());
    }
    for (name, bytes) in files {
        bulwark_boot::replace_file(&config.join(name), bytes)?;
    }
    Ok(())
}

/// PID 1's node function: enrol, or run the validator whose home is on the sealed data disk.
pub fn run(disk: &DataDisk) -> Result<()> {
    std::fs::create_dir_all(STAGING).with_context(|| format!("creating {STAGING}"))?;
    if let Some(bytes) = launch::read(launch::ENROLL, MAX_ENROLL_REQUEST)? {
        return enroll(disk, &EnrollRequest::parse(&bytes)?);
    }
    let mut files = Vec::new();
    for (name, max) in [
        (launch::CONFIG_TOML, crate::home::MAX_CONFIG_FILE),
        (launch::GENESIS, launch::MAX_INPUT),
    ] {
        let bytes = launch::read(name, max)?.with_context(|| {
            format!(
                "launch: {} is required: the sealed data disk opens only for the chain it names",
                launch::path(name).display()
            )
        })?;
        files.push((name, bytes));
    }
    // The genesis's own checks (chain id, trust) come first: they hold on any machine, and
    // the disk is not touched before they pass.
    let staging = Path::new(STAGING);
    write_launch_files(staging, &files)?;
    let public = PublicHome::load(staging)?;
    require_guest_device()?;
    let mut source =
        crate::home::evidence_source(public.attestation.trust, staging, None, [0; 32])?;
    let home = open_disk(disk, source.as_mut(), &public.chain_name)?;
    drop(source);
    write_launch_files(&home, &files)?;
    let sealed = home.join("config").join(ceremony::SEALED_IDENTITY);
    if !sealed.exists() {
        bail!(
            "identity: the sealed data disk holds no identity ({}): enrol it again",
            sealed.display()
        );
    }
    start_node(Home::load(&home)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_enrolment_request_defaults_to_amd_and_refuses_unknown_fields() {
        let token = "ab".repeat(32);
        let r = EnrollRequest::parse(
            format!(r#"{{"moniker":"v0","chain_name":"main","launch_token_sha256":"{token}"}}"#)
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(r.trust, Trust::Amd);
        assert_eq!(r.launch_port, launch::DEFAULT_LAUNCH_PORT);
        assert_eq!(r.launch_token_sha256.0, [0xab; 32]);
        // Without a launch token anyone on the host's loopback could launch the validator.
        assert!(EnrollRequest::parse(br#"{"moniker":"v0","chain_name":"main"}"#).is_err());
        assert!(EnrollRequest::parse(
            format!(
                r#"{{"moniker":"v0","chain_name":"main","launch_token_sha256":"{token}","x":1}}"#
            )
            .as_bytes()
        )
        .is_err());
        assert!(EnrollRequest::parse(b"not json").is_err());
    }
}
