//! Requests shared by the application's tests.
#![allow(clippy::unwrap_used, dead_code)]

use bulwark_types::tendermint::abci::{request, types::CommitInfo};
use bulwark_types::tendermint::{account, block, Hash, Time};
use bytes::Bytes;

/// FinalizeBlock of `txs` at height `h`.
pub fn finalize(h: u64, txs: &[&str]) -> request::FinalizeBlock {
    request::FinalizeBlock {
        txs: txs.iter().map(|t| Bytes::from(t.to_string())).collect(),
        decided_last_commit: CommitInfo {
            round: 0u16.into(),
            votes: vec![],
        },
        misbehavior: vec![],
        hash: Hash::Sha256([h as u8; 32]),
        height: block::Height::try_from(h).unwrap(),
        time: Time::from_unix_timestamp(1_700_000_000 + h as i64, 0).unwrap(),
        next_validators_hash: Hash::Sha256([0; 32]),
        proposer_address: account::Id::new([0; 20]),
    }
}

/// A query of `key` at the latest height.
pub fn query(key: &str) -> request::Query {
    request::Query {
        data: Bytes::from(key.to_string()),
        path: String::new(),
        height: block::Height::try_from(0u64).unwrap(),
        prove: false,
    }
}

/// The handshake's Info request.
pub fn info() -> request::Info {
    request::Info {
        version: String::new(),
        block_version: 11,
        p2p_version: 8,
        abci_version: "2.0.0".into(),
    }
}
