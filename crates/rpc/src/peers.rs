//! How `net_info` shows a connected peer: CometBFT's peer info, plus what its verified
//! attestation evidence says.

use bulwark_net::VerifiedPeer;
use bulwark_p2p::peers::validator_address;
use bulwark_p2p::Peer;
use bulwark_types::tendermint::{node, Time};
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tendermint_rpc::endpoint::net_info;

/// The p2p protocol version announced in node info.
const P2P_PROTOCOL: u64 = 8;

/// This node's `node_info` (`status`, and the Hello it sends): its id from its node key,
/// what it runs, and where it listens.
pub fn own_node_info(
    node_key: bulwark_types::tendermint::PublicKey,
    moniker: &str,
    chain_id: &str,
    p2p: std::net::SocketAddr,
    rpc: std::net::SocketAddr,
) -> Result<node::Info, String> {
    let id = node::Id::try_from(node_key).map_err(|e| format!("node key: {e}"))?;
    let info = serde_json::json!({
        "protocol_version": {"p2p": P2P_PROTOCOL.to_string(), "block": bulwark_types::BLOCK_PROTOCOL.to_string(), "app": "0"},
        "id": id.to_string(),
        "listen_addr": format!("tcp://{p2p}"),
        "network": chain_id,
        "version": env!("CARGO_PKG_VERSION"),
        // CometBFT's channel ids for what the one attested connection carries: block sync
        // (0x40), consensus state, data, votes, vote-set bits (0x20-0x23), mempool (0x30),
        // evidence (0x38).
        "channels": "40202122233038",
        "moniker": moniker,
        "other": {"tx_index": "off", "rpc_address": format!("tcp://{rpc}")},
    });
    serde_json::from_value(info).map_err(|e| format!("node info: {e}"))
}

/// What `net_info` shows of a peer's verified evidence.
pub fn attestation_json(peer: &VerifiedPeer) -> Value {
    if !peer.attested {
        // An unattested full node: no evidence, nothing verified to show.
        return Value::Null;
    }
    serde_json::json!({
        "validator_address": validator_address(&peer.consensus_key),
        "measurement": hex::encode(peer.measurement),
        "chip_id": hex::encode(peer.chip_id),
        "reported_tcb": peer.reported_tcb,
    })
}

/// A connected peer as RPC shows it.
#[derive(Clone, Debug)]
pub struct ShownPeer {
    /// The connection's id (the engine's `PeerId`).
    pub connection: u64,
    /// As `net_info` lists it.
    pub info: net_info::PeerInfo,
    /// What its verified evidence says (shown as `attestation`).
    pub attestation: Value,
}

/// Connection `connection`'s peer as `net_info` shows it, once it introduced itself; `own` is
/// this node's info, whose protocol versions and network the peer shares (its `Hello` named
/// this chain).
pub fn peer_info(connection: u64, peer: &Peer, own: &node::Info) -> Option<ShownPeer> {
    let hello = peer.hello.as_ref()?;
    let mut info = own.clone();
    info.id = hello.node_id.parse().ok()?;
    info.moniker = hello.moniker.parse().ok()?;
    info.listen_addr = node::info::ListenAddress::new(hello.listen_addr.clone());
    info.version = serde_json::from_value(Value::String(hello.version.clone())).ok()?;
    info.other.rpc_address = String::new();
    let duration = peer.since.elapsed();
    let since_epoch = peer.started.duration_since(std::time::UNIX_EPOCH).ok()?;
    let started = Time::from_unix_timestamp(
        i64::try_from(since_epoch.as_secs()).ok()?,
        since_epoch.subsec_nanos(),
    )
    .ok()?;
    let monitor = |bytes: &AtomicU64| net_info::Monitor {
        active: true,
        start: started,
        duration,
        idle: Duration::ZERO,
        bytes: bytes.load(Ordering::Relaxed),
        samples: 0,
        inst_rate: 0,
        cur_rate: 0,
        avg_rate: bytes.load(Ordering::Relaxed) / duration.as_secs().max(1),
        peak_rate: 0,
        bytes_rem: 0,
        time_rem: 0,
        progress: 0,
    };
    let info = net_info::PeerInfo {
        node_info: info,
        is_outbound: peer.outbound,
        connection_status: net_info::ConnectionStatus {
            duration,
            send_monitor: monitor(&peer.traffic.sent),
            recv_monitor: monitor(&peer.traffic.received),
            channels: vec![],
        },
        remote_ip: peer.addr.ip(),
    };
    Some(ShownPeer {
        connection,
        info,
        attestation: attestation_json(&peer.attested),
    })
}
