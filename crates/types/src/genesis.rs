//! What a new chain's genesis starts with.

use tendermint::consensus;

/// The consensus parameters a new chain starts with: CometBFT v0.38's defaults.
pub fn default_consensus_params() -> consensus::Params {
    let defaults = r#"{"block":{"max_bytes":"22020096","max_gas":"-1"},"evidence":{"max_age_num_blocks":"100000","max_age_duration":"172800000000000","max_bytes":"1048576"},"validator":{"pub_key_types":["ed25519"]},"version":{"app":"0"}}"#;
    serde_json::from_str(defaults).unwrap_or_else(|_| unreachable!("the literal above is valid"))
}
