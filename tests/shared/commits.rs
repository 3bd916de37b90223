//! Commit verification shared by the end-to-end tests (`rpc.rs`, `byzantine.rs`): a chain is
//! verified from the trust its genesis gives, height after height, by
//! `tendermint-light-client-verifier` (ProdVerifier between consecutive heights: the header's
//! validator set is the one the previous height named, the commit is for that header, and
//! signatures of more than 2/3 of the set's voting power are valid for it).
#![allow(dead_code)]

use anyhow::{anyhow, bail, Context, Result};
use bulwark_types::tendermint::block::signed_header::SignedHeader;
use bulwark_types::tendermint::block::{Block, Height};
use bulwark_types::tendermint::validator::{Info, Set};
use bulwark_types::tendermint::{chain, Genesis, Hash, Time};
use bulwark_types::tendermint_proto::v0_38::types as pb;
use bulwark_types::tendermint_proto::Protobuf;
use harness::rpc::RpcClient;
use std::path::Path;
use std::time::Duration;
use tendermint_light_client_verifier::options::Options;
use tendermint_light_client_verifier::types::{
    TrustThreshold, TrustedBlockState, UntrustedBlockState,
};
use tendermint_light_client_verifier::{ProdVerifier, Verdict, Verifier};

/// A light client's trusted state, advanced one height at a time.
pub struct ChainVerifier {
    chain_id: chain::Id,
    height: Height,
    time: Time,
    next: Set,
    next_hash: Hash,
}

impl ChainVerifier {
    /// Trust from genesis alone: its validators sign height 1, which is dated at genesis time
    /// exactly (BFT time), so the trusted time before it is just earlier.
    pub fn from_genesis(genesis: &Genesis<serde_json::Value>) -> Self {
        let next = Set::without_proposer(genesis.validators.clone());
        ChainVerifier {
            chain_id: genesis.chain_id.clone(),
            height: Height::try_from(0u64).expect("height 0"),
            time: genesis
                .genesis_time
                .checked_sub(Duration::from_secs(1))
                .expect("genesis time after the epoch"),
            next_hash: next.hash(),
            next,
        }
    }

    /// The height trusted so far (0: genesis only).
    pub fn height(&self) -> u64 {
        self.height.value()
    }

    /// Verifies the next height's signed header against the trusted state, `validators` being
    /// that height's set and `next` the one after; on success it becomes the trusted state.
    pub fn verify_next(
        &mut self,
        signed: &SignedHeader,
        validators: Vec<Info>,
        next: Vec<Info>,
    ) -> Result<()> {
        let h = signed.header.height.value();
        if h != self.height.value() + 1 {
            bail!("height {h} after trusted height {}", self.height.value());
        }
        let validators = Set::without_proposer(validators);
        let next = Set::without_proposer(next);
        let options = Options {
            trust_threshold: TrustThreshold::TWO_THIRDS,
            trusting_period: Duration::from_secs(3600),
            clock_drift: Duration::from_secs(10),
        };
        let now = signed
            .header
            .time
            .checked_add(Duration::from_secs(1))
            .ok_or_else(|| anyhow!("height {h}: block time {} overflows", signed.header.time))?;
        let verdict = ProdVerifier::default().verify_update_header(
            UntrustedBlockState {
                signed_header: signed,
                validators: &validators,
                next_validators: Some(&next),
            },
            TrustedBlockState {
                chain_id: &self.chain_id,
                header_time: self.time,
                height: self.height,
                next_validators: &self.next,
                next_validators_hash: self.next_hash,
            },
            &options,
            now,
        );
        if verdict != Verdict::Success {
            bail!("height {h}: the light-client verifier says {verdict:?}");
        }
        self.height = signed.header.height;
        self.time = signed.header.time;
        self.next_hash = signed.header.next_validators_hash;
        self.next = next;
        Ok(())
    }
}

/// The genesis in the home `home` (the trust root: the file the network was made from, not
/// what a node serves).
pub fn genesis_of(home: &Path) -> Result<Genesis<serde_json::Value>> {
    let path = home.join("config/genesis.json");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", path.display()))
}

/// Height `h`'s validator set as the node serves it (RPC `validators`).
pub fn validators_at(rpc: &mut RpcClient, h: u64) -> Result<Vec<Info>> {
    let r = rpc.call(
        "validators",
        serde_json::json!({ "height": h.to_string(), "per_page": "100" }),
    )?;
    serde_json::from_value(r["validators"].clone())
        .with_context(|| format!("validators of height {h}: {r}"))
}

/// Height `h`'s signed header as the node serves it (RPC `commit`).
pub fn commit_at(rpc: &mut RpcClient, h: u64) -> Result<SignedHeader> {
    let r = rpc.call("commit", serde_json::json!({ "height": h.to_string() }))?;
    serde_json::from_value(r["signed_header"].clone())
        .with_context(|| format!("commit of height {h}: {r}"))
}

/// The addresses whose signatures height `h`'s commit holds.
pub fn signers_at(rpc: &mut RpcClient, h: u64) -> Result<Vec<String>> {
    Ok(commit_at(rpc, h)?
        .commit
        .signatures
        .iter()
        .filter_map(|s| s.validator_address().map(|a| a.to_string()))
        .collect())
}

/// Height `h`'s block as the node serves it (RPC `block`) and its size as the chain counts it
/// against `block.max_bytes` (its protobuf encoding).
pub fn block_at(rpc: &mut RpcClient, h: u64) -> Result<(Block, usize)> {
    let r = rpc.call("block", serde_json::json!({ "height": h.to_string() }))?;
    let block: Block = serde_json::from_value(r["block"].clone())
        .with_context(|| format!("block of height {h}"))?;
    let size = Protobuf::<pb::Block>::encoded_len(block.clone());
    Ok((block, size))
}

/// Every commit the node behind `rpc` stores for heights `1..=top` verifies from `genesis`
/// (with that height's validator set, over RPC). Returns the headers, height 1 first.
pub fn verify_stored_commits(
    genesis: &Genesis<serde_json::Value>,
    rpc: &mut RpcClient,
    top: u64,
) -> Result<Vec<SignedHeader>> {
    let mut verifier = ChainVerifier::from_genesis(genesis);
    let mut headers = Vec::new();
    let mut validators = validators_at(rpc, 1)?;
    for h in 1..=top {
        let signed = commit_at(rpc, h)?;
        let next = validators_at(rpc, h + 1)?;
        verifier.verify_next(&signed, validators, next.clone())?;
        headers.push(signed);
        validators = next;
    }
    Ok(headers)
}
