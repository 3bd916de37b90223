//! A node's home directory, laid out as CometBFT's: `config/config.toml`,
//! `config/genesis.json`, `config/node_key.json`, `config/priv_validator_key.json`, `data/`.
//! Everything read from it is checked, and a problem names the file.

use bulwark_attest::{HexBytes, Measurements, Policy, Trust};
use bulwark_types::tendermint::{
    account, chain, private_key::PrivateKey, validator, Genesis, PublicKey, Time,
};
use serde::{Deserialize, Serialize};
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
}

/// `[p2p]` of config.toml.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct P2pConfig {
    /// Where to listen for peers.
    pub laddr: SocketAddr,
    /// Peers to keep connected to.
    #[serde(default)]
    pub persistent_peers: Vec<SocketAddr>,
    /// Largest message a peer may send; a larger frame closes that peer.
    pub max_frame_bytes: usize,
    /// Inbound handshakes per second from all sources together (burst: twice as many);
    /// absent: the edge's default (100). Raise it only for large validator sets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshakes_per_second: Option<u32>,
    /// Inbound handshakes in progress at once; absent: the edge's default (32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_inbound_handshakes: Option<usize>,
}

/// `[rpc]` of config.toml.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RpcConfig {
    /// Where to serve JSON-RPC.
    pub laddr: SocketAddr,
    /// Largest request body.
    pub max_body_bytes: usize,
}

/// `[consensus]` of config.toml: timeouts in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsensusConfig {
    /// timeoutPropose(0).
    pub timeout_propose_ms: u64,
    /// Added per round.
    pub timeout_propose_delta_ms: u64,
    /// timeoutPrevote(0).
    pub timeout_prevote_ms: u64,
    /// Added per round.
    pub timeout_prevote_delta_ms: u64,
    /// timeoutPrecommit(0).
    pub timeout_precommit_ms: u64,
    /// Added per round.
    pub timeout_precommit_delta_ms: u64,
    /// Wait after a commit before starting the next height.
    pub timeout_commit_ms: u64,
}

/// `[mempool]` of config.toml.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MempoolSection {
    /// Most transactions held.
    pub max_txs: usize,
    /// Most bytes held.
    pub max_bytes: usize,
    /// Largest transaction.
    pub max_tx_bytes: usize,
    /// Recently seen tx hashes remembered.
    pub cache_size: usize,
}

/// config.toml.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// A human name for this node.
    pub moniker: String,
    /// Peer networking.
    pub p2p: P2pConfig,
    /// JSON-RPC.
    pub rpc: RpcConfig,
    /// Consensus timeouts.
    pub consensus: ConsensusConfig,
    /// Mempool limits.
    pub mempool: MempoolSection,
}

impl NodeConfig {
    /// CometBFT-like defaults on the given ports.
    pub fn new(moniker: &str, p2p_port: u16, rpc_port: u16) -> Self {
        NodeConfig {
            moniker: moniker.into(),
            p2p: P2pConfig {
                laddr: SocketAddr::from(([127, 0, 0, 1], p2p_port)),
                persistent_peers: vec![],
                max_frame_bytes: 4 << 20,
                handshakes_per_second: None,
                max_inbound_handshakes: None,
            },
            rpc: RpcConfig {
                laddr: SocketAddr::from(([127, 0, 0, 1], rpc_port)),
                max_body_bytes: 1_000_000,
            },
            consensus: ConsensusConfig {
                timeout_propose_ms: 3000,
                timeout_propose_delta_ms: 500,
                timeout_prevote_ms: 1000,
                timeout_prevote_delta_ms: 500,
                timeout_precommit_ms: 1000,
                timeout_precommit_delta_ms: 500,
                timeout_commit_ms: 1000,
            },
            mempool: MempoolSection {
                max_txs: 5000,
                max_bytes: 1 << 30,
                max_tx_bytes: 1 << 20,
                cache_size: 10_000,
            },
        }
    }

    fn check(&self) -> Result<(), String> {
        let c = &self.consensus;
        if c.timeout_propose_ms == 0 || c.timeout_prevote_ms == 0 || c.timeout_precommit_ms == 0 {
            return Err("consensus timeouts must be positive".into());
        }
        if self.p2p.max_frame_bytes < 1024 {
            return Err("p2p.max_frame_bytes must be at least 1024".into());
        }
        let m = &self.mempool;
        if m.max_txs == 0 || m.max_tx_bytes == 0 || m.max_tx_bytes > m.max_bytes {
            return Err("mempool limits must be positive, with max_tx_bytes <= max_bytes".into());
        }
        if self.p2p.laddr == self.rpc.laddr {
            return Err("p2p.laddr and rpc.laddr must differ".into());
        }
        Ok(())
    }
}

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
    /// genesis.json's `attestation` section: which evidence the network admits.
    pub attestation: Policy,
    /// The validator key.
    pub validator_key: PrivValidatorKey,
    /// The node key.
    pub node_key: NodeKey,
}

fn fresh_key() -> Result<PrivateKey, HomeError> {
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| HomeError::Io {
        path: PathBuf::from("(system randomness)"),
        source: std::io::Error::other(e.to_string()),
    })?;
    let key = ed25519_consensus::SigningKey::from(seed);
    Ok(PrivateKey::Ed25519(key.into()))
}

fn validator_key(priv_key: PrivateKey) -> Result<PrivValidatorKey, HomeError> {
    let pub_key = priv_key.public_key();
    let ed = pub_key.ed25519().ok_or_else(|| HomeError::Invalid {
        path: "priv_validator_key.json".into(),
        reason: "not an ed25519 key".into(),
    })?;
    Ok(PrivValidatorKey {
        address: account::Id::from(ed),
        pub_key,
        priv_key,
    })
}

/// Writes a file that must not exist yet; `secret` files are readable by their owner only.
fn write_new(path: &Path, contents: &str, secret: bool) -> Result<(), HomeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| HomeError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
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
        Err(source) => {
            return Err(HomeError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    file.write_all(contents.as_bytes())
        .map_err(|source| HomeError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn json<T: Serialize>(value: &T) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// Writes a home for each validator of a new chain, with distinct loopback ports and each
/// node listing every other as a persistent peer.
pub fn testnet(
    output: &Path,
    validators: usize,
    chain_id: &str,
    base_port: u16,
) -> Result<Vec<PathBuf>, HomeError> {
    if validators == 0 {
        return Err(HomeError::Invalid {
            path: output.to_path_buf(),
            reason: "a testnet needs at least one validator".into(),
        });
    }
    let chain_id: chain::Id = chain_id.parse().map_err(|e| HomeError::Invalid {
        path: output.to_path_buf(),
        reason: format!("chain id: {e}"),
    })?;
    let keys: Vec<PrivValidatorKey> = (0..validators)
        .map(|_| fresh_key().and_then(validator_key))
        .collect::<Result<_, _>>()?;
    let genesis = Genesis {
        genesis_time: Time::now(),
        chain_id,
        initial_height: 1,
        consensus_params: bulwark_types::genesis::default_consensus_params(),
        validators: keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                let mut info = validator::Info::new(k.pub_key, 10u32.into());
                info.name = Some(format!("node{i}"));
                info
            })
            .collect(),
        app_hash: Default::default(),
        app_state: serde_json::json!({}),
    };
    let port = |i: usize, offset: u16| -> Result<u16, HomeError> {
        u16::try_from(usize::from(base_port) + 10 * i + usize::from(offset)).map_err(|_| {
            HomeError::Invalid {
                path: output.to_path_buf(),
                reason: "ports beyond 65535".into(),
            }
        })
    };
    let mut homes = Vec::new();
    for (i, key) in keys.into_iter().enumerate() {
        let home = output.join(format!("node{i}"));
        let mut config = NodeConfig::new(&format!("node{i}"), port(i, 0)?, port(i, 1)?);
        // One connection per pair: node i dials the nodes before it (and redials them when a
        // connection drops), so no message arrives twice.
        for j in 0..i {
            config
                .p2p
                .persistent_peers
                .push(SocketAddr::from(([127, 0, 0, 1], port(j, 0)?)));
        }
        write_home(&home, &config, &genesis, &key)?;
        homes.push(home);
    }
    Ok(homes)
}

/// Writes a single-validator home (`bulwark init`).
pub fn init(home: &Path, chain_id: &str) -> Result<(), HomeError> {
    let key = validator_key(fresh_key()?)?;
    let genesis = Genesis {
        genesis_time: Time::now(),
        chain_id: chain_id.parse().map_err(|e| HomeError::Invalid {
            path: home.to_path_buf(),
            reason: format!("chain id: {e}"),
        })?,
        initial_height: 1,
        consensus_params: bulwark_types::genesis::default_consensus_params(),
        validators: vec![validator::Info::new(key.pub_key, 10u32.into())],
        app_hash: Default::default(),
        app_state: serde_json::json!({}),
    };
    write_home(home, &NodeConfig::new("node", 26656, 26657), &genesis, &key)
}

/// The measurement a simulated PSP reports for this program: SHA-384 of the running
/// executable (process mode has no launch measurement; this names exactly what runs).
pub fn simulated_measurement() -> Result<[u8; 48], HomeError> {
    use sha2::Digest;
    let exe = std::env::current_exe().map_err(|source| HomeError::Io {
        path: PathBuf::from("(current executable)"),
        source,
    })?;
    let bytes = std::fs::read(&exe).map_err(|source| HomeError::Io {
        path: exe.clone(),
        source,
    })?;
    Ok(sha2::Sha384::digest(&bytes).into())
}

/// The attestation policy a new development network gets: simulated trust, strict defaults,
/// and only this very binary's measurement.
pub fn development_policy() -> Result<Policy, HomeError> {
    Ok(Policy::strict(
        Trust::Simulated,
        Measurements::OneOf(vec![HexBytes(simulated_measurement()?)]),
    ))
}

/// genesis.json: CometBFT's document plus Bulwark's `attestation` section.
fn genesis_json(
    genesis: &Genesis<serde_json::Value>,
    attestation: &Policy,
    path: &Path,
) -> Result<String, HomeError> {
    let invalid = |reason: String| HomeError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let mut value = serde_json::to_value(genesis).map_err(|e| invalid(e.to_string()))?;
    let policy = serde_json::to_value(attestation).map_err(|e| invalid(e.to_string()))?;
    match &mut value {
        serde_json::Value::Object(fields) => {
            fields.insert("attestation".into(), policy);
        }
        _ => return Err(invalid("genesis is not a JSON object".into())),
    }
    serde_json::to_string_pretty(&value).map_err(|e| invalid(e.to_string()))
}

fn write_home(
    home: &Path,
    config: &NodeConfig,
    genesis: &Genesis<serde_json::Value>,
    key: &PrivValidatorKey,
) -> Result<(), HomeError> {
    let cfg = home.join("config");
    write_new(&cfg.join("priv_validator_key.json"), &json(key), true)?;
    write_new(
        &cfg.join("node_key.json"),
        &json(&NodeKey {
            priv_key: fresh_key()?,
        }),
        true,
    )?;
    let toml = toml::to_string_pretty(config).map_err(|e| HomeError::Invalid {
        path: cfg.join("config.toml"),
        reason: e.to_string(),
    })?;
    write_new(&cfg.join("config.toml"), &toml, false)?;
    let genesis_path = cfg.join("genesis.json");
    let text = genesis_json(genesis, &development_policy()?, &genesis_path)?;
    write_new(&genesis_path, &text, false)?;
    let data = home.join("data");
    std::fs::create_dir_all(&data).map_err(|source| HomeError::Io { path: data, source })
}

fn read(path: PathBuf) -> Result<(PathBuf, String), HomeError> {
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok((path, s)),
        Err(source) => Err(HomeError::Io { path, source }),
    }
}

impl Home {
    /// Loads and checks a home directory.
    pub fn load(dir: &Path) -> Result<Home, HomeError> {
        let cfg = dir.join("config");
        let invalid = |path: &Path, reason: String| HomeError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let (p, s) = read(cfg.join("config.toml"))?;
        let config: NodeConfig = toml::from_str(&s).map_err(|e| invalid(&p, e.to_string()))?;
        config.check().map_err(|e| invalid(&p, e))?;
        let (p, s) = read(cfg.join("genesis.json"))?;
        let genesis: Genesis<serde_json::Value> =
            serde_json::from_str(&s).map_err(|e| invalid(&p, e.to_string()))?;
        if genesis.validators.is_empty() {
            return Err(invalid(&p, "no validators".into()));
        }
        if genesis.initial_height < 1 {
            return Err(invalid(&p, "initial_height must be at least 1".into()));
        }
        #[derive(Deserialize)]
        struct AttestationSection {
            attestation: Option<Policy>,
        }
        let section: AttestationSection =
            serde_json::from_str(&s).map_err(|e| invalid(&p, format!("attestation: {e}")))?;
        let attestation = section.attestation.ok_or_else(|| {
            invalid(
                &p,
                "no \"attestation\" section: a Bulwark network states which evidence it admits"
                    .into(),
            )
        })?;
        if attestation.measurements == Measurements::Any {
            return Err(invalid(
                &p,
                "attestation.measurements must list the allowed measurements".into(),
            ));
        }
        let (p, s) = read(cfg.join("priv_validator_key.json"))?;
        let validator_key: PrivValidatorKey =
            serde_json::from_str(&s).map_err(|e| invalid(&p, e.to_string()))?;
        if validator_key.priv_key.public_key() != validator_key.pub_key {
            return Err(invalid(&p, "pub_key does not belong to priv_key".into()));
        }
        if validator_key.pub_key.ed25519().map(account::Id::from) != Some(validator_key.address) {
            return Err(invalid(&p, "address does not belong to pub_key".into()));
        }
        let (p, s) = read(cfg.join("node_key.json"))?;
        let node_key: NodeKey = serde_json::from_str(&s).map_err(|e| invalid(&p, e.to_string()))?;
        Ok(Home {
            dir: dir.to_path_buf(),
            config,
            genesis,
            attestation,
            validator_key,
            node_key,
        })
    }

    /// Whether this node's validator key is in genesis.
    pub fn is_genesis_validator(&self) -> bool {
        self.genesis
            .validators
            .iter()
            .any(|v| v.pub_key == self.validator_key.pub_key)
    }
}
