//! The header hashes a block producer computes and the `tendermint` crate does not:
//! `data_hash`, `last_commit_hash`, `last_results_hash`, `consensus_hash`, `evidence_hash`.
//! Each follows CometBFT v0.38 (`types/tx.go`, `types/block.go`, `types/results.go`,
//! `types/params.go`, `types/evidence.go`): a simple Merkle tree (RFC 6962 style, as in
//! `tendermint::merkle`) over protobuf encodings, or SHA-256 for the parameters.

use prost::Message;
use sha2::{Digest, Sha256};
use tendermint::block::{Commit, CommitSig};
use tendermint::consensus::Params;
use tendermint::evidence::{DuplicateVoteEvidence, Evidence};
use tendermint::merkle::simple_hash_from_byte_vectors;
use tendermint::Hash;
use tendermint_proto::v0_38 as pb;

type MerkleSha256 = tendermint::crypto::default::Sha256;

fn merkle(leaves: &[Vec<u8>]) -> Hash {
    Hash::Sha256(simple_hash_from_byte_vectors::<MerkleSha256>(leaves))
}

/// SHA-256 of `bytes`, as a `tendermint::Hash`.
pub fn sha256(bytes: &[u8]) -> Hash {
    Hash::Sha256(Sha256::digest(bytes).into())
}

/// `data_hash`: Merkle root whose leaves are the SHA-256 hashes of the transactions.
pub fn data_hash<T: AsRef<[u8]>>(txs: &[T]) -> Hash {
    let leaves: Vec<Vec<u8>> = txs
        .iter()
        .map(|tx| Sha256::digest(tx.as_ref()).to_vec())
        .collect();
    merkle(&leaves)
}

/// The proof that transaction `index` of `txs` is in the block whose `data_hash` is the
/// proof's root (CometBFT's `Txs.Proof`: the leaves are the transactions' SHA-256 hashes);
/// `None` past the last transaction.
pub fn tx_proof<T: AsRef<[u8]>>(txs: &[T], index: usize) -> Option<tendermint::tx::Proof> {
    let tx = txs.get(index)?;
    let leaves: Vec<[u8; 32]> = txs
        .iter()
        .map(|t| crate::parts::leaf_hash(&Sha256::digest(t.as_ref())))
        .collect();
    let mut aunts = Vec::new();
    let root = crate::parts::root_and_path(&leaves, index, &mut aunts);
    Some(tendermint::tx::Proof {
        root_hash: Hash::Sha256(root),
        data: tx.as_ref().to_vec(),
        proof: tendermint::merkle::Proof {
            total: txs.len() as u64,
            index: index as u64,
            leaf_hash: Hash::Sha256(leaves[index]),
            aunts: aunts.into_iter().map(Hash::Sha256).collect(),
        },
    })
}

/// Whether `proof` shows its transaction in a block whose `data_hash` is `data_hash`: the
/// leaf is the transaction's, and the aunts lead from it to that root. As in CometBFT, the
/// position is not proven exactly: a proof may also verify at another index of another total
/// whose path has the same shape.
pub fn verify_tx_proof(proof: &tendermint::tx::Proof, data_hash: &Hash) -> bool {
    let leaf = crate::parts::leaf_hash(&Sha256::digest(&proof.data));
    let (Ok(index), Ok(total)) = (
        usize::try_from(proof.proof.index),
        usize::try_from(proof.proof.total),
    ) else {
        return false;
    };
    let aunts: Option<Vec<[u8; 32]>> = proof
        .proof
        .aunts
        .iter()
        .map(|a| a.as_bytes().try_into().ok())
        .collect();
    // More than 2^32 transactions is no block (and keeps the tree's arithmetic in range).
    let root = aunts
        .filter(|a| a.len() <= 64 && index < total && total <= 1 << 32)
        .and_then(|a| crate::parts::root_from_aunts(index, total, leaf, &a));
    root.is_some_and(|r| {
        Hash::Sha256(r) == *data_hash
            && proof.root_hash == *data_hash
            && proof.proof.leaf_hash == Hash::Sha256(leaf)
    })
}

/// `last_commit_hash`: Merkle root over the protobuf encoding of each `CommitSig`, in
/// validator-set order.
pub fn commit_hash(commit: &Commit) -> Hash {
    commit_sigs_hash(&commit.signatures)
}

/// Merkle root over the protobuf encodings of `signatures`.
pub fn commit_sigs_hash(signatures: &[CommitSig]) -> Hash {
    let leaves: Vec<Vec<u8>> = signatures
        .iter()
        .map(|sig| pb::types::CommitSig::from(sig.clone()).encode_to_vec())
        .collect();
    merkle(&leaves)
}

/// The fields of a transaction result that enter `last_results_hash` (CometBFT's
/// deterministic subset of `ExecTxResult`); log, info, events and codespace do not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TxResultDigest {
    /// Result code; 0 is success.
    pub code: u32,
    /// Result data.
    pub data: Vec<u8>,
    /// Gas wanted.
    pub gas_wanted: i64,
    /// Gas used.
    pub gas_used: i64,
}

/// `last_results_hash`: Merkle root over the protobuf encoding of each result's deterministic
/// fields, in transaction order.
pub fn results_hash(results: &[TxResultDigest]) -> Hash {
    let leaves: Vec<Vec<u8>> = results
        .iter()
        .map(|r| {
            pb::abci::ExecTxResult {
                code: r.code,
                data: prost::bytes::Bytes::from(r.data.clone()),
                gas_wanted: r.gas_wanted,
                gas_used: r.gas_used,
                ..Default::default()
            }
            .encode_to_vec()
        })
        .collect();
    merkle(&leaves)
}

/// `consensus_hash`: SHA-256 of the protobuf `HashedParams` (block max bytes and max gas only,
/// so other parameters can change without changing the hash).
pub fn consensus_params_hash(params: &Params) -> Hash {
    let hashed = pb::types::HashedParams {
        block_max_bytes: params.block.max_bytes as i64,
        block_max_gas: params.block.max_gas,
    };
    sha256(&hashed.encode_to_vec())
}

/// `evidence_hash`: Merkle root over the protobuf encoding of each piece of evidence (the
/// concrete evidence message, not the `Evidence` wrapper).
pub fn evidence_hash(evidence: &[Evidence]) -> Hash {
    let leaves: Vec<Vec<u8>> = evidence.iter().map(evidence_bytes).collect();
    merkle(&leaves)
}

/// One piece of evidence as CometBFT hashes it: the protobuf encoding of the concrete message.
pub fn evidence_bytes(e: &Evidence) -> Vec<u8> {
    match pb::types::Evidence::from(e.clone()).sum {
        Some(pb::types::evidence::Sum::DuplicateVoteEvidence(d)) => d.encode_to_vec(),
        Some(pb::types::evidence::Sum::LightClientAttackEvidence(l)) => l.encode_to_vec(),
        None => Vec::new(),
    }
}

/// `DuplicateVoteEvidence.Hash()` of CometBFT (what `broadcast_evidence` answers): SHA-256 of
/// its protobuf form with the voter's real power, which the caller takes from the set of the
/// evidence height (tendermint-rs 0.41's conversion writes the total power there instead).
pub fn duplicate_vote_hash(d: &DuplicateVoteEvidence, validator_power: u64) -> Hash {
    let raw = pb::types::DuplicateVoteEvidence {
        vote_a: Some(d.vote_a.clone().into()),
        vote_b: Some(d.vote_b.clone().into()),
        total_voting_power: i64::try_from(d.total_voting_power.value()).unwrap_or(i64::MAX),
        validator_power: i64::try_from(validator_power).unwrap_or(i64::MAX),
        timestamp: Some(d.timestamp.into()),
    };
    sha256(&raw.encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855";

    #[test]
    fn empty_lists_hash_to_the_empty_sha256() {
        let none: [&[u8]; 0] = [];
        assert_eq!(data_hash(&none).to_string(), EMPTY);
        assert_eq!(results_hash(&[]).to_string(), EMPTY);
        assert_eq!(evidence_hash(&[]).to_string(), EMPTY);
        assert_eq!(commit_sigs_hash(&[]).to_string(), EMPTY);
    }

    #[test]
    fn every_transactions_proof_leads_to_the_data_hash_and_nothing_else_does() {
        for n in 1..=17usize {
            let txs: Vec<Vec<u8>> = (0..n).map(|i| format!("k{i}=v{n}").into_bytes()).collect();
            let root = data_hash(&txs);
            for i in 0..n {
                let proof = tx_proof(&txs, i).unwrap();
                assert!(verify_tx_proof(&proof, &root), "{n} txs, index {i}");
                assert_eq!(proof.data, txs[i]);
                // Another transaction, another position, another root: refused.
                let mut other = proof.clone();
                other.data = b"forged".to_vec();
                assert!(!verify_tx_proof(&other, &root));
                let mut moved = proof.clone();
                moved.proof.index = ((i + 1) % n) as u64;
                assert!(n == 1 || !verify_tx_proof(&moved, &root), "{n} {i}");
                let mut huge = proof.clone();
                huge.proof.total = u64::MAX;
                huge.proof.index = u64::MAX - 1;
                assert!(!verify_tx_proof(&huge, &root));
                let mut cut = proof.clone();
                cut.proof.aunts.pop();
                assert!(n == 1 || !verify_tx_proof(&cut, &root));
            }
            assert!(tx_proof(&txs, n).is_none());
        }
        // CometBFT's own proof of a block's only transaction (tx_search with prove).
        let tx = b"async-key=value";
        let proof = tx_proof(&[tx], 0).unwrap();
        assert_eq!(
            proof.root_hash.to_string(),
            "3081F9915040D138B3AD7F895732D2767C29E85BA5D84388D04E17A5D8262B7A"
        );
    }

    #[test]
    fn results_hash_ignores_nothing_deterministic() {
        let a = TxResultDigest {
            code: 0,
            data: b"x".to_vec(),
            gas_wanted: 1,
            gas_used: 1,
        };
        let b = TxResultDigest {
            code: 1,
            ..a.clone()
        };
        let c = TxResultDigest {
            data: b"y".to_vec(),
            ..a.clone()
        };
        let d = TxResultDigest {
            gas_used: 2,
            ..a.clone()
        };
        let h = |r: &TxResultDigest| results_hash(std::slice::from_ref(r));
        assert_ne!(h(&a), h(&b));
        assert_ne!(h(&a), h(&c));
        assert_ne!(h(&a), h(&d));
        assert_eq!(h(&a), h(&a.clone()));
    }

    #[test]
    fn data_hash_depends_on_order() {
        assert_ne!(data_hash(&[b"a", b"b"]), data_hash(&[b"b", b"a"]));
    }
}
