//! The bridge between chain types and the consensus core: a `BlockID` becomes the core's
//! `ValueId`, a `tendermint` validator set becomes the core's weighted set (same order, same
//! proposer priorities).

use bulwark_consensus::{Validator, ValidatorIndex, ValidatorSet, ValidatorSetError, ValueId};
use prost::Message;
use sha2::{Digest, Sha256};
use tendermint::block;
use tendermint::validator;
use tendermint_proto::v0_38 as pb;

/// The core's `id(v)` for a block: SHA-256 over the protobuf `BlockID` (header hash and
/// part-set header), so two `BlockID`s that share a header hash but not their parts are
/// different values, exactly as CometBFT's votes tell them apart.
pub fn value_id(block_id: &block::Id) -> ValueId {
    let raw = pb::types::BlockId::from(*block_id).encode_to_vec();
    ValueId(Sha256::digest(raw).into())
}

/// The core's view of a `tendermint` validator set: addresses, powers and proposer
/// priorities in the set's order, and its proposer as round 0's.
pub fn consensus_validator_set(set: &validator::Set) -> Result<ValidatorSet, ValidatorSetError> {
    let validators = core_validators(set);
    let proposer = set
        .proposer()
        .as_ref()
        .and_then(|p| set.validators().iter().position(|v| v.address == p.address))
        .map_or(ValidatorIndex(0), |i| ValidatorIndex(i as u32));
    ValidatorSet::with_priorities(validators, proposer)
}

/// The core's validators of `set`, in its order, with their proposer priorities.
pub fn core_validators(set: &validator::Set) -> Vec<Validator> {
    set.validators()
        .iter()
        .map(|v| Validator {
            address: v.address.as_bytes().to_vec(),
            power: v.power(),
            priority: v.proposer_priority.value(),
        })
        .collect()
}
