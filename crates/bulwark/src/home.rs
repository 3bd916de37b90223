//! A node's home directory, laid out as CometBFT's: `config/config.toml`,
//! `config/genesis.json`, `config/node_key.json`, `config/priv_validator_key.json`, `data/`.
//! Everything read from it is checked, and a problem names the file.

use crate::ceremony::{self, CeremonyError};
#[cfg(feature = "simulated-psp")]
use bulwark_attest::simulated::SimulatedPsp;
#[cfg(feature = "simulated-psp")]
use bulwark_attest::HexBytes;
use bulwark_attest::{EvidenceSource, GuestDevice, Measurements, Policy, Trust};
use bulwark_identity::{ChainIdError, IdentityError, SealedIdentity};
use bulwark_net::FullNodes;
use bulwark_types::tendermint::{account, private_key::PrivateKey, Genesis, PublicKey};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use thiserror::Error;

/// A problem with a home directory.
#[derive(Debug, Error)]
pub enum HomeError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A file's content is wrong.
    #[error("{path}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Refusing to overwrite an existing key.
    #[error("{0} already exists; refusing to overwrite a key")]
    Exists(PathBuf),
    /// The genesis's chain id does not certify it.
    #[error("{path}: chain_id: {source}")]
    ChainId {
        /// genesis.json.
        path: PathBuf,
        /// Which check failed.
        source: ChainIdError,
    },
    /// The genesis trusts the simulated PSP, and this is a production build.
    #[error("{0}: trust: this genesis trusts the simulated PSP, and this production build has none: it runs only networks whose genesis says \"trust\": \"amd\" (no input can switch a production validator to simulated attestation)")]
    SimulatedTrust(PathBuf),
    /// Something only a development build (the `simulated-psp` feature) can do.
    #[error("{0} needs the simulated PSP, and this is a production build without it (build with `--features simulated-psp` for development networks)")]
    ProductionBuild(&'static str),
    /// A plaintext validator key under AMD trust.
    #[error("{0}: refusing a plaintext validator key under `trust: amd`: the host can read it and sign as this validator; an AMD network's validators keep only an identity sealed inside the guest ({SEALED})", SEALED = ceremony::SEALED_IDENTITY)]
    PlaintextKey(PathBuf),
    /// The sealed identity does not open.
    #[error("{path}: {source}")]
    Identity {
        /// The sealed identity's file.
        path: PathBuf,
        /// Why.
        source: IdentityError,
    },
    /// The evidence source could not be opened.
    #[error("{0}")]
    Evidence(String),
    /// The ceremony failed.
    #[error(transparent)]
    Ceremony(#[from] CeremonyError),
}

pub use bulwark_config::{
    ConsensusConfig, InstrumentationConfig, MempoolSection, NodeConfig, P2pConfig, RpcConfig,
};

/// priv_validator_key.json, in CometBFT's format.
#[derive(Serialize, Deserialize)]
pub struct PrivValidatorKey {
    /// The validator's address.
    pub address: account::Id,
    /// Its public key.
    pub pub_key: PublicKey,
    /// Its private key.
    pub priv_key: PrivateKey,
}

/// node_key.json, in CometBFT's format.
#[derive(Serialize, Deserialize)]
pub struct NodeKey {
    /// The node's identity key (peer authentication).
    pub priv_key: PrivateKey,
}

// Keys never appear in logs: only their public parts.
impl std::fmt::Debug for PrivValidatorKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivValidatorKey")
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey")
            .field("public", &self.priv_key.public_key())
            .finish_non_exhaustive()
    }
}

/// A loaded home directory.
#[derive(Debug)]
pub struct Home {
    /// The directory.
    pub dir: PathBuf,
    /// config.toml.
    pub config: NodeConfig,
    /// genesis.json.
    pub genesis: Genesis<serde_json::Value>,
    /// The chain name (the chain id without its genesis hash).
    pub chain_name: String,
    /// SHA-256 of genesis.json's bytes: what every TLS binding of this network names, and the
    /// HOST_DATA a launch for this network carries.
    pub genesis_sha256: [u8; 32],
    /// genesis.json's `attestation` section: which evidence the network admits.
    pub attestation: Policy,
    /// Which full nodes the genesis admits (`attest_full_nodes`).
    pub full_nodes: FullNodes,
    /// Whether this node runs as an unattested full node (`bulwark start --unattested`).
    pub unattested: bool,
    /// genesis.json as read (its enrollments, re-verified at start).
    pub genesis_document: serde_json::Value,
    /// The validator key.
    pub validator_key: PrivValidatorKey,
    /// The node key.
    pub node_key: NodeKey,
    /// How this boot was launched: [`Launch::ForGenesis`] unless the guest says otherwise.
    pub launch: Launch,
}

/// How the running boot was launched, for the check of its own report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Launch {
    /// For this network: the launch's HOST_DATA must be the SHA-256 of its genesis file (a
    /// validator's boots after its first, and every process-mode start).
    ForGenesis,
    /// The boot that enrolled this validator and then received its genesis: launched before
    /// any genesis existed, so its HOST_DATA binds none (the genesis is bound in its TLS
    /// evidence instead, by the guest that checked it). It runs as the validator's launch
    /// instance, which its enrollment published and the genesis names.
    Enrolled {
        /// The launch instance (held in memory only, since the enrolling boot drew it).
        instance: [u8; 32],
    },
}

fn validator_key(priv_key: PrivateKey) -> Result<PrivValidatorKey, HomeError> {
    let pub_key = priv_key.public_key();
    let ed = pub_key
        .ed25519()
        .ok_or_else(|| invalid("priv_validator_key.json", "not an ed25519 key"))?;
    Ok(PrivValidatorKey {
        address: account::Id::from(ed),
        pub_key,
        priv_key,
    })
}

fn private_key(key: &ed25519_consensus::SigningKey) -> PrivateKey {
    PrivateKey::Ed25519(key.clone().into())
}

/// Writes a file that must not exist yet; `secret` files are readable by their owner only.
fn write_new(path: &Path, contents: &str, secret: bool) -> Result<(), HomeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| io_error(dir.to_path_buf(), source))?;
    }
    let mut options = std::fs::OpenOptions::new();
    options
        .write(true)
        .create_new(true)
        .mode(if secret { 0o600 } else { 0o644 });
    let mut file = match options.open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(HomeError::Exists(path.to_path_buf()))
        }
        Err(source) => return Err(io_error(path.to_path_buf(), source)),
    };
    file.write_all(contents.as_bytes())
        .map_err(|source| io_error(path.to_path_buf(), source))
}

/// Whether this build has the simulated PSP (the `simulated-psp` feature). Decided by this
/// crate's own feature, so a build that links a simulated-capable verifier without it still
/// behaves as production.
pub const SIMULATED_PSP: bool = cfg!(feature = "simulated-psp");

/// The largest `config.toml` read from a home.
pub const MAX_CONFIG_FILE: u64 = 64 * 1024;
/// The largest `genesis.json` read from a home.
pub const MAX_GENESIS_FILE: u64 = 16 << 20;

/// The file in `config/` holding a process-mode node's simulated chip secret (64 hex digits).
/// Not a secret: the simulated PSP proves nothing, and its keys are public anyway.
pub const SIMULATED_CHIP: &str = "simulated_chip";

#[cfg(feature = "simulated-psp")]
/// Makes the homes of a new chain with the genesis ceremony, run through the simulated PSP:
/// each node gets a simulated chip, makes its identity inside (sealed, never in plaintext on
/// disk) and enrols; the genesis is assembled from the first `validators` enrollments (the
/// rest are full nodes), its chain id self-certifying, and written to every home.
fn ceremony_homes(
    homes: &[(PathBuf, NodeConfig)],
    validators: usize,
    chain_name: &str,
    app_state: serde_json::Value,
    full_nodes: Option<bool>,
) -> Result<(), HomeError> {
    let measurement = simulated_measurement()?;
    let mut enrollments = Vec::new();
    for (home, config) in homes {
        let cfg = home.join("config");
        let toml = toml::to_string_pretty(config)
            .map_err(|e| invalid(cfg.join("config.toml"), e.to_string()))?;
        write_new(&cfg.join("config.toml"), &toml, false)?;
        let mut chip = [0u8; 32];
        getrandom::getrandom(&mut chip).map_err(|e| HomeError::Io {
            path: PathBuf::from("(system randomness)"),
            source: std::io::Error::other(e.to_string()),
        })?;
        write_new(&cfg.join(SIMULATED_CHIP), &hex::encode(chip), false)?;
        let mut psp = SimulatedPsp::new(chip, measurement);
        enrollments.push(ceremony::enroll_for_process(
            &mut psp,
            &cfg,
            &config.moniker,
            chain_name,
        )?);
        let data = home.join("data");
        std::fs::create_dir_all(&data).map_err(|source| HomeError::Io { path: data, source })?;
    }
    enrollments.truncate(validators);
    let genesis = ceremony::assemble(
        chain_name,
        &enrollments,
        &development_policy()?,
        ceremony::now(),
        app_state,
        full_nodes,
    )?;
    for (home, _) in homes {
        let path = home.join("config/genesis.json");
        let text = serde_json::to_string_pretty(&genesis)
            .map_err(|e| invalid(path.clone(), e.to_string()))?;
        write_new(&path, &text, false)?;
    }
    Ok(())
}

/// What `bulwark testnet` makes.
#[derive(Clone, Debug)]
pub struct TestnetSpec {
    /// Validators: `node0` on.
    pub validators: usize,
    /// Full nodes after them: enrolled like validators, not in the genesis.
    pub full_nodes: usize,
    /// Which full nodes the genesis admits (`attest_full_nodes`; `None`: none).
    pub attest_full_nodes: Option<bool>,
    /// The chain name.
    pub chain_name: String,
    /// P2P port of node0.
    pub base_port: u16,
    /// The genesis's `app_state`.
    pub app_state: serde_json::Value,
}

/// Writes a home for each validator (and full node) of a new chain, with distinct loopback
/// ports and each node listing every node before it as a persistent peer (so validators dial
/// only validators); identities and genesis come from the ceremony ([`ceremony_homes`]).
pub fn testnet(output: &Path, spec: TestnetSpec) -> Result<Vec<PathBuf>, HomeError> {
    if spec.validators == 0 {
        return Err(invalid(
            output.to_path_buf(),
            "a testnet needs at least one validator",
        ));
    }
    if spec.full_nodes > 0 && spec.attest_full_nodes.is_none() {
        return Err(invalid(
            output.to_path_buf(),
            "full nodes need a genesis that admits them (--attest-full-nodes)",
        ));
    }
    let port = |i: usize, offset: u16| -> Result<u16, HomeError> {
        u16::try_from(usize::from(spec.base_port) + 10 * i + usize::from(offset))
            .map_err(|_| invalid(output.to_path_buf(), "ports beyond 65535"))
    };
    let mut homes = Vec::new();
    for i in 0..spec.validators + spec.full_nodes {
        let home = output.join(format!("node{i}"));
        let mut config = NodeConfig::new(&format!("node{i}"), port(i, 0)?, port(i, 1)?);
        // Metrics stay off (CometBFT's default); where they would go is in the node's block.
        config.instrumentation.prometheus_listen_addr = format!("127.0.0.1:{}", port(i, 2)?);
        // One connection per pair: node i dials the nodes before it (and redials them when a
        // connection drops), so no message arrives twice.
        for j in 0..i {
            config
                .p2p
                .persistent_peers
                .push(SocketAddr::from(([127, 0, 0, 1], port(j, 0)?)));
        }
        homes.push((home, config));
    }
    #[cfg(feature = "simulated-psp")]
    {
        ceremony_homes(
            &homes,
            spec.validators,
            &spec.chain_name,
            spec.app_state,
            spec.attest_full_nodes,
        )?;
        Ok(homes.into_iter().map(|(h, _)| h).collect())
    }
    #[cfg(not(feature = "simulated-psp"))]
    {
        let _ = (homes, spec);
        Err(HomeError::ProductionBuild("a testnet's ceremony"))
    }
}

#[cfg_attr(not(feature = "simulated-psp"), allow(dead_code))]
fn io_error(path: impl Into<PathBuf>, source: std::io::Error) -> HomeError {
    HomeError::Io {
        path: path.into(),
        source,
    }
}

fn invalid(path: impl Into<PathBuf>, reason: impl Into<String>) -> HomeError {
    HomeError::Invalid {
        path: path.into(),
        reason: reason.into(),
    }
}

/// Writes a single-validator home (`bulwark init`) by the same ceremony.
pub fn init(home: &Path, chain_name: &str) -> Result<(), HomeError> {
    #[cfg(feature = "simulated-psp")]
    {
        ceremony_homes(
            &[(home.to_path_buf(), NodeConfig::new("node", 26656, 26657))],
            1,
            chain_name,
            serde_json::json!({}),
            None,
        )
    }
    #[cfg(not(feature = "simulated-psp"))]
    {
        let _ = (home, chain_name);
        Err(HomeError::ProductionBuild("`bulwark init`'s ceremony"))
    }
}

/// The executable a simulated PSP measures instead of the running one: set only by the
/// end-to-end tests' byzantine validator (`bulwark-byzantine`), which stands for a genuine
/// image that was compromised. The `bulwark` binary never sets it, and no input can.
#[cfg(feature = "simulated-psp")]
static MEASURED_AS: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Makes the simulated PSP of this process measure `exe` instead of the running executable
/// (see [`MEASURED_AS`]); only the first call counts.
#[cfg(feature = "simulated-psp")]
pub fn measure_as(exe: PathBuf) {
    let _ = MEASURED_AS.set(exe);
}

/// The measurement a simulated PSP reports for this program: SHA-384 of the running
/// executable (process mode has no launch measurement; this names exactly what runs).
#[cfg(feature = "simulated-psp")]
pub fn simulated_measurement() -> Result<[u8; 48], HomeError> {
    use sha2::Digest;
    let exe = match MEASURED_AS.get() {
        Some(exe) => exe.clone(),
        None => std::env::current_exe()
            .map_err(|source| io_error(PathBuf::from("(current executable)"), source))?,
    };
    let bytes = std::fs::read(&exe).map_err(|source| io_error(exe.clone(), source))?;
    Ok(sha2::Sha384::digest(&bytes).into())
}

/// The attestation policy a new development network gets: simulated trust, strict defaults,
/// and only this very binary's measurement.
#[cfg(feature = "simulated-psp")]
pub fn development_policy() -> Result<Policy, HomeError> {
    Ok(Policy::strict(
        Trust::Simulated,
        Measurements::OneOf(vec![HexBytes(simulated_measurement()?)]),
    ))
}

/// The evidence source of a node whose genesis has `trust`, living in `dir`: the SEV-SNP guest
/// device under `amd`. Under `simulated` (development builds only) a simulated PSP, whose
/// chip, launch digest and HOST_DATA are what a host's firmware would decide: in a VM the host
/// hands them in through `fw_cfg` ([`crate::launch`]); in process mode the chip is the home's
/// `config/simulated_chip` (for a home made before the ceremony, a chip derived from its node
/// key), the digest is SHA-384 of this executable, and HOST_DATA is
/// `config/simulated_host_data`, else `host_data` (the launcher is this very process).
pub fn evidence_source(
    trust: Trust,
    dir: &Path,
    node_public: Option<&[u8]>,
    host_data: [u8; 32],
) -> Result<Box<dyn EvidenceSource>, HomeError> {
    match trust {
        Trust::Amd => GuestDevice::open()
            .map(|d| Box::new(d) as Box<dyn EvidenceSource>)
            .map_err(|e| {
                HomeError::Evidence(format!(
                    "this network's genesis trusts AMD hardware only: {e}"
                ))
            }),
        Trust::Simulated => simulated_source(dir, node_public, host_data),
    }
}

#[cfg(not(feature = "simulated-psp"))]
fn simulated_source(
    dir: &Path,
    _node_public: Option<&[u8]>,
    _host_data: [u8; 32],
) -> Result<Box<dyn EvidenceSource>, HomeError> {
    Err(HomeError::SimulatedTrust(dir.join("config/genesis.json")))
}

#[cfg(feature = "simulated-psp")]
fn simulated_source(
    dir: &Path,
    node_public: Option<&[u8]>,
    host_data: [u8; 32],
) -> Result<Box<dyn EvidenceSource>, HomeError> {
    use crate::launch;
    let chip: [u8; 32] = match launch::fixed::<32>(launch::SIMULATED_CHIP)? {
        Some(chip) => chip,
        None => match hex_file::<32>(&dir.join("config").join(SIMULATED_CHIP))? {
            Some(chip) => chip,
            None => {
                let node_public = node_public.ok_or_else(|| {
                    invalid(
                        dir.join("config").join(SIMULATED_CHIP),
                        "missing: a simulated node needs its chip",
                    )
                })?;
                sha2::Sha256::digest([b"bulwark simulated chip".as_slice(), node_public].concat())
                    .into()
            }
        },
    };
    let measurement = match launch::fixed::<48>(launch::SIMULATED_MEASUREMENT)? {
        Some(digest) => digest,
        None => simulated_measurement()?,
    };
    let mut psp = SimulatedPsp::new(chip, measurement);
    psp.host_data = match launch::fixed::<32>(launch::HOST_DATA)? {
        Some(given) => given,
        None => hex_file::<32>(&dir.join("config").join(SIMULATED_HOST_DATA))?.unwrap_or(host_data),
    };
    Ok(Box::new(psp))
}

/// The file in `config/` with a process-mode launch's simulated HOST_DATA (64 hex digits).
pub const SIMULATED_HOST_DATA: &str = "simulated_host_data";

/// A file of `2 * N` hex digits, if it exists.
#[cfg(feature = "simulated-psp")]
fn hex_file<const N: usize>(path: &Path) -> Result<Option<[u8; N]>, HomeError> {
    match std::fs::read_to_string(path) {
        Ok(text) => hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .map(Some)
            .ok_or_else(|| invalid(path.to_path_buf(), format!("not {} hex digits", 2 * N))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(io_error(path.to_path_buf(), source)),
    }
}

/// Reads a text file of at most `max` bytes (the host wrote the disk: a huge file must not
/// exhaust the guest's memory).
fn read(path: PathBuf, max: u64) -> Result<(PathBuf, String), HomeError> {
    use std::io::Read;
    let mut text = String::new();
    let result = std::fs::File::open(&path).and_then(|f| f.take(max + 1).read_to_string(&mut text));
    match result {
        Ok(_) if text.len() as u64 > max => Err(invalid(path, format!("larger than {max} bytes"))),
        Ok(_) => Ok((path, text)),
        Err(source) => Err(HomeError::Io { path, source }),
    }
}

/// What a home holds that anyone may read: config, genesis (its chain id checked), policy.
/// Loading it opens no identity.
#[derive(Debug)]
pub struct PublicHome {
    /// The directory.
    pub dir: PathBuf,
    /// config.toml.
    pub config: NodeConfig,
    /// genesis.json.
    pub genesis: Genesis<serde_json::Value>,
    /// The chain name.
    pub chain_name: String,
    /// SHA-256 of genesis.json's bytes: the HOST_DATA a launch for this network carries.
    pub genesis_sha256: [u8; 32],
    /// genesis.json's `attestation` section.
    pub attestation: Policy,
    /// Which full nodes the genesis admits (`attest_full_nodes`).
    pub full_nodes: FullNodes,
    /// genesis.json as read.
    pub genesis_document: serde_json::Value,
}

impl PublicHome {
    /// Loads and checks a home's config and genesis; the genesis's chain id must certify it.
    pub fn load(dir: &Path) -> Result<PublicHome, HomeError> {
        let cfg = dir.join("config");
        let (p, s) = read(cfg.join("config.toml"), MAX_CONFIG_FILE)?;
        let config: NodeConfig = toml::from_str(&s).map_err(|e| invalid(&p, e.to_string()))?;
        config.check().map_err(|e| invalid(&p, e))?;
        let (p, s) = read(cfg.join("genesis.json"), MAX_GENESIS_FILE)?;
        let genesis: Genesis<serde_json::Value> =
            serde_json::from_str(&s).map_err(|e| invalid(&p, e.to_string()))?;
        if genesis.validators.is_empty() {
            return Err(invalid(&p, "no validators"));
        }
        if genesis.initial_height < 1 {
            return Err(invalid(&p, "initial_height must be at least 1"));
        }
        let document: serde_json::Value =
            serde_json::from_str(&s).map_err(|e| invalid(&p, e.to_string()))?;
        let chain_name =
            bulwark_identity::check_chain_id(&document).map_err(|source| HomeError::ChainId {
                path: p.clone(),
                source,
            })?;
        #[derive(Deserialize)]
        struct AttestationSection {
            attestation: Option<Policy>,
        }
        let section: AttestationSection =
            serde_json::from_str(&s).map_err(|e| invalid(&p, format!("attestation: {e}")))?;
        let attestation = section.attestation.ok_or_else(|| {
            invalid(
                &p,
                "no \"attestation\" section: a Bulwark network states which evidence it admits",
            )
        })?;
        if attestation.trust == Trust::Simulated && !SIMULATED_PSP {
            return Err(HomeError::SimulatedTrust(p));
        }
        if attestation.measurements == Measurements::Any {
            return Err(invalid(
                &p,
                "attestation.measurements must list the allowed measurements",
            ));
        }
        let full_nodes = match ceremony::admits_full_nodes(&document).map_err(|e| invalid(&p, e))? {
            None => FullNodes::Refused,
            Some(true) => FullNodes::Attested,
            Some(false) => FullNodes::Unattested,
        };
        Ok(PublicHome {
            dir: dir.to_path_buf(),
            config,
            genesis,
            chain_name,
            genesis_sha256: sha2::Sha256::digest(s.as_bytes()).into(),
            attestation,
            full_nodes,
            genesis_document: document,
        })
    }
}

impl PublicHome {
    /// The home of these keys, launched for its genesis.
    fn with_keys(
        self,
        validator_key: PrivValidatorKey,
        node_key: NodeKey,
        unattested: bool,
    ) -> Home {
        Home {
            dir: self.dir,
            config: self.config,
            genesis: self.genesis,
            chain_name: self.chain_name,
            genesis_sha256: self.genesis_sha256,
            attestation: self.attestation,
            full_nodes: self.full_nodes,
            genesis_document: self.genesis_document,
            validator_key,
            node_key,
            launch: Launch::ForGenesis,
            unattested,
        }
    }
}

impl Home {
    /// Loads and checks a home directory: its config, its genesis (whose chain id must
    /// certify it), and its identity: the sealed one, opened with this node's evidence source
    /// (and re-sealed when the firmware has committed to a newer TCB), or, only under
    /// simulated trust, plaintext key files.
    pub fn load(dir: &Path) -> Result<Home, HomeError> {
        let public = PublicHome::load(dir)?;
        let cfg = public.dir.join("config");
        let sealed_path = cfg.join(ceremony::SEALED_IDENTITY);
        let plaintext_path = cfg.join("priv_validator_key.json");
        let (validator_key, node_key) = if sealed_path.exists() {
            let identity_error = |source| HomeError::Identity {
                path: sealed_path.clone(),
                source,
            };
            let sealed = SealedIdentity::read(&sealed_path).map_err(identity_error)?;
            let mut source = evidence_source(
                public.attestation.trust,
                &public.dir,
                None,
                public.genesis_sha256,
            )?;
            let (identity, resealed) = sealed
                .open(source.as_mut(), &public.chain_name)
                .map_err(identity_error)?;
            if let Some(newer) = resealed {
                newer.write(&sealed_path).map_err(identity_error)?;
                tracing::info!(tcb = %newer.tcb_version, "re-sealed the identity under the committed TCB");
            }
            (
                validator_key(private_key(identity.consensus_key()))?,
                NodeKey {
                    priv_key: private_key(identity.node_key()),
                },
            )
        } else {
            if public.attestation.trust == Trust::Amd {
                return Err(HomeError::PlaintextKey(plaintext_path));
            }
            let (p, s) = read(plaintext_path, MAX_CONFIG_FILE)?;
            let validator_key: PrivValidatorKey =
                serde_json::from_str(&s).map_err(|e| invalid(&p, e.to_string()))?;
            if validator_key.priv_key.public_key() != validator_key.pub_key {
                return Err(invalid(&p, "pub_key does not belong to priv_key"));
            }
            if validator_key.pub_key.ed25519().map(account::Id::from) != Some(validator_key.address)
            {
                return Err(invalid(&p, "address does not belong to pub_key"));
            }
            let (p, s) = read(cfg.join("node_key.json"), MAX_CONFIG_FILE)?;
            let node_key: NodeKey =
                serde_json::from_str(&s).map_err(|e| invalid(&p, e.to_string()))?;
            (validator_key, node_key)
        };
        Ok(public.with_keys(validator_key, node_key, false))
    }

    /// Loads a home to run as an unattested full node (`bulwark start --unattested`), on a
    /// machine with no evidence to give: only where the genesis admits such nodes
    /// (`attest_full_nodes: false`). Its keys are plaintext files, made here at the first
    /// start if missing: no peer takes them for a validator's, whatever the chain does.
    pub fn load_unattested(dir: &Path) -> Result<Home, HomeError> {
        let public = PublicHome::load(dir)?;
        let genesis = public.dir.join("config/genesis.json");
        if public.full_nodes != FullNodes::Unattested {
            return Err(invalid(
                genesis,
                "this genesis admits no unattested full nodes (it would need \"attest_full_nodes\": false)",
            ));
        }
        let cfg = public.dir.join("config");
        let (key_path, node_path) = (
            cfg.join("priv_validator_key.json"),
            cfg.join("node_key.json"),
        );
        let fresh = |path: &Path| -> Result<PrivateKey, HomeError> {
            let mut seed = [0u8; 32];
            getrandom::getrandom(&mut seed)
                .map_err(|e| io_error(path.to_path_buf(), std::io::Error::other(e.to_string())))?;
            Ok(private_key(&ed25519_consensus::SigningKey::from(seed)))
        };
        let text = |path: &Path, value: serde_json::Result<String>| {
            value.map_err(|e| invalid(path.to_path_buf(), e.to_string()))
        };
        // Each file on its own: a start stopped between the two finds one, makes the other.
        if !node_path.exists() {
            let node = NodeKey {
                priv_key: fresh(&node_path)?,
            };
            write_new(
                &node_path,
                &text(&node_path, serde_json::to_string_pretty(&node))?,
                true,
            )?;
        }
        if !key_path.exists() {
            let key = validator_key(fresh(&key_path)?)?;
            write_new(
                &key_path,
                &text(&key_path, serde_json::to_string_pretty(&key))?,
                true,
            )?;
        }
        let (p, s) = read(key_path, MAX_CONFIG_FILE)?;
        let validator_key: PrivValidatorKey =
            serde_json::from_str(&s).map_err(|e| invalid(&p, e.to_string()))?;
        let (p, s) = read(node_path, MAX_CONFIG_FILE)?;
        let node_key: NodeKey = serde_json::from_str(&s).map_err(|e| invalid(&p, e.to_string()))?;
        if public
            .genesis
            .validators
            .iter()
            .any(|v| v.pub_key == validator_key.pub_key)
        {
            return Err(invalid(
                cfg.join("priv_validator_key.json"),
                "a genesis validator's key: a validator runs attested, never as an unattested full node",
            ));
        }
        Ok(public.with_keys(validator_key, node_key, true))
    }

    /// Whether this node's validator key is in genesis.
    pub fn is_genesis_validator(&self) -> bool {
        self.genesis
            .validators
            .iter()
            .any(|v| v.pub_key == self.validator_key.pub_key)
    }
}
