//! A node's `config.toml`, laid out as CometBFT's where the two share a setting: the sections,
//! their defaults, and the checks of values against each other. Reading the file and
//! everything else in a home is `bulwark::home`'s.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

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
    /// Most full-node peers at once, where the genesis admits full nodes (validators always
    /// have room); absent: [`DEFAULT_MAX_FULL_NODE_PEERS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_full_node_peers: Option<usize>,
}

/// Full-node peers a node keeps at most unless config.toml says otherwise.
pub const DEFAULT_MAX_FULL_NODE_PEERS: usize = 16;

impl P2pConfig {
    /// Most full-node peers at once.
    pub fn max_full_node_peers(&self) -> usize {
        self.max_full_node_peers
            .unwrap_or(DEFAULT_MAX_FULL_NODE_PEERS)
    }
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

/// `[tx_index]` of config.toml, as CometBFT's: whether the block store indexes transactions
/// and events for `tx`, `tx_search` and `block_search`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxIndexConfig {
    /// `kv` (the default) or `null`.
    #[serde(default)]
    pub indexer: Indexer,
}

/// What indexes committed transactions and blocks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Indexer {
    /// CometBFT's kv indexer, written with each block.
    #[default]
    Kv,
    /// None: three fewer database keys per transaction (see docs/BENCHMARKS.md), and
    /// `tx`, `tx_search` and `block_search` answer that indexing is disabled, as CometBFT's do.
    Null,
}

/// `[instrumentation]` of config.toml, as CometBFT's (absent: metrics off).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstrumentationConfig {
    /// Whether to serve Prometheus metrics.
    #[serde(default)]
    pub prometheus: bool,
    /// Where: `host:port`, or `:port` for every interface (CometBFT's form).
    #[serde(default = "default_prometheus_addr")]
    pub prometheus_listen_addr: String,
    /// Most scrape connections at once.
    #[serde(default = "default_metrics_connections")]
    pub max_open_connections: usize,
    /// Prefix of CometBFT's metric names (Bulwark's own are `bulwark_`).
    #[serde(default = "default_namespace")]
    pub namespace: String,
}

fn default_prometheus_addr() -> String {
    ":26660".into()
}

fn default_metrics_connections() -> usize {
    3
}

fn default_namespace() -> String {
    "cometbft".into()
}

impl Default for InstrumentationConfig {
    fn default() -> Self {
        InstrumentationConfig {
            prometheus: false,
            prometheus_listen_addr: default_prometheus_addr(),
            max_open_connections: default_metrics_connections(),
            namespace: default_namespace(),
        }
    }
}

impl InstrumentationConfig {
    /// The address to serve metrics on (`:port` is every interface).
    pub fn listen_addr(&self) -> Result<SocketAddr, String> {
        let addr = &self.prometheus_listen_addr;
        let full = match addr.strip_prefix(':') {
            Some(port) => format!("0.0.0.0:{port}"),
            None => addr.clone(),
        };
        full.parse()
            .map_err(|e| format!("instrumentation.prometheus_listen_addr {addr:?}: {e}"))
    }
}

/// config.toml.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeConfig {
    /// A human name for this node.
    pub moniker: String,
    /// The ABCI application (`proxy_app`, `abci_timeout_ms`).
    #[serde(flatten)]
    pub app: bulwark_app::AppConfig,
    /// Peer networking.
    pub p2p: P2pConfig,
    /// JSON-RPC.
    pub rpc: RpcConfig,
    /// Consensus timeouts.
    pub consensus: ConsensusConfig,
    /// Mempool limits.
    pub mempool: MempoolSection,
    /// Prometheus metrics.
    #[serde(default)]
    pub instrumentation: InstrumentationConfig,
    /// Transaction and block indexing.
    #[serde(default)]
    pub tx_index: TxIndexConfig,
}

impl NodeConfig {
    /// CometBFT-like defaults on the given ports.
    pub fn new(moniker: &str, p2p_port: u16, rpc_port: u16) -> Self {
        NodeConfig {
            moniker: moniker.into(),
            app: bulwark_app::AppConfig::default(),
            p2p: P2pConfig {
                laddr: SocketAddr::from(([127, 0, 0, 1], p2p_port)),
                persistent_peers: vec![],
                max_frame_bytes: 4 << 20,
                handshakes_per_second: None,
                max_inbound_handshakes: None,
                max_full_node_peers: None,
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
            instrumentation: InstrumentationConfig::default(),
            tx_index: TxIndexConfig::default(),
        }
    }

    /// Checks the values against each other; `Err` says what is wrong.
    pub fn check(&self) -> Result<(), String> {
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
        let namespace = &self.instrumentation.namespace;
        let mut chars = namespace.chars();
        if !chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!(
                "instrumentation.namespace {namespace:?} must match [a-zA-Z_][a-zA-Z0-9_]*"
            ));
        }
        if self.instrumentation.prometheus {
            let metrics = self.instrumentation.listen_addr()?;
            if metrics == self.p2p.laddr || metrics == self.rpc.laddr {
                return Err("instrumentation.prometheus_listen_addr must differ from p2p.laddr and rpc.laddr".into());
            }
        }
        Ok(())
    }
}
