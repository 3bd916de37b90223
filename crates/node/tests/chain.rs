//! Four validators in one process, each with its own consensus core, privval on disk, kvstore
//! and chain state, deciding real blocks of transactions with synchronous delivery. Checks:
//! every node executes the same blocks to the same app hash; the chain verifies with
//! tendermint's light-client verifier; a tampered block or commit is refused by name.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod common;

use bulwark_app::kvstore::KvStore;
use bulwark_app::Application;
use bulwark_consensus::{
    Action, Config, Consensus, Event, Height as CHeight, Signed, Validity, ValueId, VoteKind,
};
use bulwark_mempool::{tx_hash, Mempool, MempoolConfig};
use bulwark_node::chain::finalize_request;
use bulwark_node::chain::{
    block_id, commit_from_decision, pack_signature, BlockError, ChainState, CommitError,
};
use bulwark_node::proposal::{block_to_parts, Assembler, PartAdded};
use bulwark_store::privval::PrivValidator;
use bulwark_store::Store;
use bulwark_types::convert::value_id;
use bulwark_types::signing::public_key;
use bulwark_types::tendermint::abci::request;
use bulwark_types::tendermint::block::{self, Block, Commit, CommitSig, Header};
use bulwark_types::tendermint::{account, proposal, vote, Genesis, Time};
use bytes::Bytes;
use ed25519_consensus::SigningKey;
use std::collections::{HashMap, VecDeque};
use std::time::Duration;
use tendermint_light_client_verifier::options::Options;
use tendermint_light_client_verifier::types::{
    TrustThreshold, TrustedBlockState, UntrustedBlockState,
};
use tendermint_light_client_verifier::{ProdVerifier, Verdict, Verifier};

const N: usize = 4;
const HEIGHTS: u64 = 12;

struct Node {
    _dirs: Vec<tempfile::TempDir>,
    address: account::Id,
    core: Consensus,
    privval: PrivValidator,
    app: KvStore,
    mempool: Mempool,
    state: ChainState,
    last_commit: Option<Commit>,
    blocks: HashMap<ValueId, (Block, block::Id)>,
}

fn genesis(keys: &[SigningKey]) -> Genesis<serde_json::Value> {
    common::genesis("bulwark-chain-test", keys)
}

fn node(key: SigningKey, g: &Genesis<serde_json::Value>) -> Node {
    let (d1, d2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let address = account::Id::from(public_key(&key).ed25519().unwrap());
    let (app, state) = common::app_at_genesis(d2.path(), g);
    Node {
        address,
        core: Consensus::new(Config::default(), Some(address.as_bytes().to_vec())),
        privval: PrivValidator::open(key, &Store::open(d1.path()).unwrap()).unwrap(),
        app,
        mempool: Mempool::new(MempoolConfig::default()),
        state,
        last_commit: None,
        blocks: HashMap::new(),
        _dirs: vec![d1, d2],
    }
}

fn time_of(height: u64, round: u32) -> Time {
    Time::from_unix_timestamp(1_700_000_000 + height as i64, round * 1000).unwrap()
}

struct Run {
    nodes: Vec<Node>,
    /// Per height: (header, commit, app hash) as node 0 saw it.
    chain: Vec<(Header, Commit)>,
}

fn run() -> Run {
    let keys: Vec<SigningKey> = (0..N)
        .map(|i| SigningKey::from([40 + i as u8; 32]))
        .collect();
    let g = genesis(&keys);
    let mut nodes: Vec<Node> = keys.into_iter().map(|k| node(k, &g)).collect();
    let chain_id = g.chain_id.clone();
    let mut chain = Vec::new();
    for height in 1..=HEIGHTS {
        // Clients submit transactions to every node.
        for n in nodes.iter_mut() {
            for k in 0..height % 4 {
                let _ = n.mempool.add(
                    Bytes::from(format!("key{height}.{k}=value{height}")),
                    &n.app,
                );
            }
        }
        let mut queue: VecDeque<(usize, Event)> = VecDeque::new();
        for (i, n) in nodes.iter().enumerate() {
            queue.push_back((
                i,
                Event::NewHeight {
                    height: CHeight(height),
                    validators: n.state.validators.clone(),
                },
            ));
        }
        let mut decided = 0;
        while let Some((i, event)) = queue.pop_front() {
            let actions = nodes[i].core.handle(event);
            for action in actions {
                match action {
                    Action::GetValue { height: h, round } => {
                        let n = &mut nodes[i];
                        // BFT time: genesis time, then the median of the last commit's votes.
                        let time = n.state.next_block_time(n.last_commit.as_ref());
                        let txs = n
                            .app
                            .prepare_proposal(request::PrepareProposal {
                                max_tx_bytes: 1 << 20,
                                txs: n.mempool.reap(1 << 20),
                                local_last_commit: None,
                                misbehavior: vec![],
                                height: block::Height::try_from(h.0).unwrap(),
                                time,
                                next_validators_hash: n.state.validator_infos.hash(),
                                proposer_address: n.address,
                            })
                            .unwrap();
                        let txs: Vec<Vec<u8>> = txs.txs.iter().map(|t| t.to_vec()).collect();
                        let (block, id, _) = n
                            .state
                            .make_block(txs, n.last_commit.clone(), n.address, time)
                            .unwrap();
                        let value = value_id(&id);
                        // The block travels as parts; every receiver reassembles and checks it.
                        let (header, parts) = block_to_parts(&block).unwrap();
                        assert_eq!(header, id.part_set_header);
                        for m in nodes.iter_mut() {
                            let mut assembler = Assembler::new();
                            assembler.announce(header, round.0, round.0).unwrap();
                            let mut whole = None;
                            for p in parts.iter().rev() {
                                if let PartAdded::Complete(b) = assembler.add(&header, p).unwrap() {
                                    whole = Some(*b);
                                }
                            }
                            let whole = whole.expect("every part arrived");
                            assert_eq!(block_id(&whole).unwrap().0, id);
                            m.blocks.insert(value, (whole, id));
                        }
                        queue.push_back((
                            i,
                            Event::ProposeValue {
                                height: h,
                                round,
                                value,
                            },
                        ));
                    }
                    Action::Propose(p) => {
                        let (_, id) = nodes[i].blocks[&p.value].clone();
                        let mut tp = proposal::Proposal {
                            msg_type: proposal::Type::Proposal,
                            height: block::Height::try_from(p.height.0).unwrap(),
                            round: block::Round::try_from(p.round.0).unwrap(),
                            pol_round: p.pol_round.map(|r| block::Round::try_from(r.0).unwrap()),
                            block_id: Some(id),
                            timestamp: Some(time_of(p.height.0, p.round.0)),
                            signature: None,
                        };
                        nodes[i].privval.sign_proposal(&mut tp, &chain_id).unwrap();
                        let signature =
                            pack_signature(tp.timestamp.unwrap(), tp.signature.as_ref().unwrap());
                        for (j, receiver) in nodes.iter_mut().enumerate() {
                            // Each receiver checks the block against its own state and app.
                            let (block, _) = receiver.blocks[&p.value].clone();
                            let ok = receiver.state.validate_block(&block).is_ok()
                                && receiver.app.process_proposal(bulwark_node::chain::process_request(&block, &receiver.state.last_validator_infos, vec![])).unwrap() == bulwark_types::tendermint::abci::response::ProcessProposal::Accept;
                            let validity = if ok {
                                Validity::Valid
                            } else {
                                Validity::Invalid
                            };
                            queue.push_back((
                                j,
                                Event::Proposal {
                                    proposal: Signed::new(p, signature.clone()),
                                    validity,
                                },
                            ));
                        }
                    }
                    Action::Vote(v) => {
                        let n = &mut nodes[i];
                        let block_id = v.value.map(|value| n.blocks[&value].1);
                        let mut tv = vote::Vote {
                            vote_type: if v.kind == VoteKind::Prevote {
                                vote::Type::Prevote
                            } else {
                                vote::Type::Precommit
                            },
                            height: block::Height::try_from(v.height.0).unwrap(),
                            round: block::Round::try_from(v.round.0).unwrap(),
                            block_id,
                            timestamp: Some(
                                time_of(v.height.0, v.round.0)
                                    .checked_add(Duration::from_millis(500))
                                    .unwrap(),
                            ),
                            validator_address: n.address,
                            validator_index: vote::ValidatorIndex::try_from(v.validator.0).unwrap(),
                            signature: None,
                            extension: vec![],
                            extension_signature: None,
                        };
                        n.privval.sign_vote(&mut tv, &chain_id).unwrap();
                        let signature =
                            pack_signature(tv.timestamp.unwrap(), tv.signature.as_ref().unwrap());
                        for j in 0..N {
                            queue.push_back((j, Event::Vote(Signed::new(v, signature.clone()))));
                        }
                    }
                    Action::Decide(d) => {
                        let n = &mut nodes[i];
                        let (block, id) = n.blocks[&d.value].clone();
                        let commit =
                            commit_from_decision(&d, id, &n.state.validator_infos).unwrap();
                        let request =
                            finalize_request(&block, &n.state.last_validator_infos, vec![]);
                        if height > 1 {
                            // Everyone signed the previous block in this honest network.
                            assert_eq!(request.decided_last_commit.votes.len(), N);
                        }
                        let result = n.app.finalize_block(request).unwrap();
                        n.app.commit().unwrap();
                        let committed: Vec<[u8; 32]> =
                            block.data.iter().map(|t| tx_hash(t)).collect();
                        n.mempool.update(&committed, &n.app).unwrap();
                        n.state.apply(&block, id, &result).unwrap();
                        n.last_commit = Some(commit.clone());
                        if i == 0 {
                            chain.push((block.header.clone(), commit));
                        }
                        decided += 1;
                    }
                    Action::ScheduleTimeout { .. } | Action::Evidence(_) => {}
                }
            }
        }
        assert_eq!(decided, N, "every node decides height {height}");
    }
    Run { nodes, chain }
}

#[test]
fn four_validators_decide_execute_and_agree_on_every_app_hash() {
    let r = run();
    let hashes: Vec<_> = r.nodes.iter().map(|n| n.state.app_hash.clone()).collect();
    assert!(hashes.windows(2).all(|w| w[0] == w[1]));
    assert!(r
        .nodes
        .iter()
        .all(|n| n.state.last_block_height == HEIGHTS && n.mempool.is_empty()));
    // Transactions were executed: the kvstore has the last height's values.
    let q = r.nodes[3]
        .app
        .query(request::Query {
            data: Bytes::from("key11.0"),
            path: String::new(),
            height: block::Height::try_from(0u64).unwrap(),
            prove: false,
        })
        .unwrap();
    assert_eq!(q.value.as_ref(), b"value11");
}

#[test]
fn the_light_client_verifies_the_chain() {
    let r = run();
    let set = r.nodes[0].state.validator_infos.clone();
    let chain_id = r.nodes[0].state.chain_id.clone();
    let opts = Options {
        trust_threshold: TrustThreshold::ONE_THIRD,
        trusting_period: Duration::from_secs(14 * 86_400),
        clock_drift: Duration::from_secs(5),
    };
    let now = time_of(HEIGHTS + 100, 0);
    for h in 1..r.chain.len() {
        let (trusted, _) = &r.chain[h - 1];
        let (header, commit) = &r.chain[h];
        let signed =
            block::signed_header::SignedHeader::new(header.clone(), commit.clone()).unwrap();
        let verdict = ProdVerifier::default().verify_update_header(
            UntrustedBlockState {
                signed_header: &signed,
                validators: &set,
                next_validators: Some(&set),
            },
            TrustedBlockState {
                chain_id: &chain_id,
                header_time: trusted.time,
                height: trusted.height,
                next_validators: &set,
                next_validators_hash: trusted.next_validators_hash,
            },
            &opts,
            now,
        );
        assert_eq!(verdict, Verdict::Success, "height {}", h + 1);
    }
}

#[test]
fn tampered_blocks_and_commits_are_refused_by_name() {
    let r = run();
    let n = &r.nodes[0];
    let (header, _) = &r.chain[0];
    // Rebuild a valid next block, then break one thing at a time.
    let (good, _, _) = n
        .state
        .make_block(
            vec![b"x=1".to_vec()],
            n.last_commit.clone(),
            header.proposer_address,
            n.state.next_block_time(n.last_commit.as_ref()),
        )
        .unwrap();
    n.state.validate_block(&good).unwrap();
    let mut bad_app = good.clone();
    bad_app.header.app_hash = Default::default();
    assert!(matches!(
        n.state.validate_block(&bad_app),
        Err(BlockError::Header {
            field: "app_hash",
            ..
        })
    ));
    let mut bad_data = good.clone();
    bad_data.data.push(b"y=2".to_vec());
    assert!(matches!(
        n.state.validate_block(&bad_data),
        Err(BlockError::Header {
            field: "data_hash",
            ..
        })
    ));
    // BFT time (review C2): the block time is the median of the last commit's vote times; a
    // proposer can date it neither back nor ahead, and certainly not at the end of time.
    for time in [
        n.state.last_block_time,
        good.header
            .time
            .checked_add(Duration::from_nanos(1))
            .unwrap(),
        good.header
            .time
            .checked_add(Duration::from_secs(10 * 365 * 86_400))
            .unwrap(),
        Time::parse_from_rfc3339("9999-12-31T23:59:59.999999999Z").unwrap(),
    ] {
        let mut dated = good.clone();
        dated.header.time = time;
        assert!(
            matches!(
                n.state.validate_block(&dated),
                Err(BlockError::Header { field: "time", .. })
            ),
            "a block dated {time} was accepted"
        );
    }
    let mut stranger = good.clone();
    stranger.header.proposer_address = account::Id::new([7; 20]);
    assert!(matches!(
        n.state.validate_block(&stranger),
        Err(BlockError::Header {
            field: "proposer_address",
            ..
        })
    ));

    // A forged signature in the last commit (the header's commit hash updated to match).
    let mut forged_commit = n.last_commit.clone().unwrap();
    if let CommitSig::BlockIdFlagCommit { signature, .. } = &mut forged_commit.signatures[1] {
        let mut bytes = signature.as_ref().unwrap().as_bytes().to_vec();
        bytes[0] ^= 1;
        *signature = bulwark_types::tendermint::Signature::new(bytes).unwrap();
    }
    let forged_time = n.state.next_block_time(Some(&forged_commit));
    let (forged, _, _) = n
        .state
        .make_block(
            vec![],
            Some(forged_commit),
            header.proposer_address,
            forged_time,
        )
        .unwrap();
    assert_eq!(
        n.state.validate_block(&forged),
        Err(BlockError::LastCommit(CommitError::BadSignature {
            index: 1
        }))
    );
    // A commit with only two of four signatures.
    let mut thin = n.last_commit.clone().unwrap();
    thin.signatures[0] = CommitSig::BlockIdFlagAbsent;
    thin.signatures[1] = CommitSig::BlockIdFlagAbsent;
    let thin_time = n.state.next_block_time(Some(&thin));
    let (thin_block, _, _) = n
        .state
        .make_block(vec![], Some(thin), header.proposer_address, thin_time)
        .unwrap();
    assert!(matches!(
        n.state.validate_block(&thin_block),
        Err(BlockError::LastCommit(CommitError::NotEnoughPower {
            signed: 20,
            total: 40
        }))
    ));
    // Too little power claimed, and its signatures forged: refused on the claim, before any
    // signature is checked (a forged decided block costs nothing to refuse).
    let mut claimed = n.last_commit.clone().unwrap();
    for i in 0..3 {
        claimed.signatures[i] = CommitSig::BlockIdFlagAbsent;
    }
    if let CommitSig::BlockIdFlagCommit { signature, .. } = &mut claimed.signatures[3] {
        *signature = bulwark_types::tendermint::Signature::new(vec![7; 64]).unwrap();
    }
    let claimed_time = n.state.next_block_time(Some(&claimed));
    let (claimed_block, _, _) = n
        .state
        .make_block(vec![], Some(claimed), header.proposer_address, claimed_time)
        .unwrap();
    assert!(matches!(
        n.state.validate_block(&claimed_block),
        Err(BlockError::LastCommit(CommitError::NotEnoughPower {
            signed: 10,
            total: 40
        }))
    ));
    // The block id commits to the whole block.
    let (id_a, _) = block_id(&good).unwrap();
    let (id_b, _) = block_id(&bad_data).unwrap();
    assert_ne!(id_a.part_set_header, id_b.part_set_header);
}
