//! `consensus_state` and `dump_consensus_state`: the height in progress as CometBFT v0.38
//! shows it. Votes appear as CometBFT's vote summaries (`Vote{index:address h/round/type(Name)
//! block signature @ time}`, each fingerprint the first 6 bytes, zero-padded), the bit arrays
//! as `BA{n:x_x} voted/total = fraction` over voting power.
//!
//! Steps are CometBFT's numbers: propose 3, prevote 4, precommit 6, commit 8. A node that is
//! not past its first height's start shows height and round only.

use crate::answer::{to_value, NodeView};
use crate::calls::cometbft;
use bulwark_consensus::{Round, RoundSeen, SignedVote, Step, ValueId, VoteKind};
use bulwark_node::engine::Engine;
use bulwark_types::commit::unpack_signature;
use bulwark_types::tendermint::block::CommitSig;
use bulwark_types::tendermint::{validator, Time};
use serde_json::{json, Value};
use tendermint_rpc::response_error::ResponseError;

/// CometBFT's `RoundStepType` number of a step.
fn step_number(step: Option<Step>) -> u8 {
    match step {
        None => 1,
        Some(Step::Propose) => 3,
        Some(Step::Prevote) => 4,
        Some(Step::Precommit) => 6,
        Some(Step::Decided) => 8,
    }
}

fn fingerprint(bytes: &[u8]) -> String {
    let mut six = [0u8; 6];
    for (slot, b) in six.iter_mut().zip(bytes) {
        *slot = *b;
    }
    hex::encode_upper(six)
}

fn rfc3339(time: Time) -> String {
    time.to_rfc3339()
}

/// The block hash of `value`, upper-case hex, or "" when none or unknown.
fn block_hash(engine: &Engine, value: Option<&ValueId>) -> String {
    value
        .and_then(|v| engine.block_id_of(v))
        .map(|id| id.hash.to_string())
        .unwrap_or_default()
}

fn summary(engine: &Engine, set: &validator::Set, height: u64, vote: &SignedVote) -> Value {
    let v = &vote.message;
    let index = v.validator.as_usize();
    let address = set
        .validators()
        .get(index)
        .map(|info| info.address.as_bytes().to_vec())
        .unwrap_or_default();
    let (kind, name) = match v.kind {
        VoteKind::Prevote => (1, "Prevote"),
        VoteKind::Precommit => (2, "Precommit"),
    };
    let hash = v
        .value
        .and_then(|value| engine.block_id_of(&value))
        .map(|id| id.hash.as_bytes().to_vec())
        .unwrap_or_default();
    let (time, signature) = match unpack_signature(&vote.signature) {
        Some((time, signature)) => (rfc3339(time), signature.as_bytes().to_vec()),
        None => (String::new(), Vec::new()),
    };
    Value::String(format!(
        "Vote{{{index}:{} {height}/{:02}/{kind}({name}) {} {} @ {time}}}",
        fingerprint(&address),
        v.round.0,
        fingerprint(&hash),
        fingerprint(&signature),
    ))
}

/// `BA{n:x_x} voted/total = fraction`, over voting power.
fn bit_array<T>(set: &validator::Set, votes: &[Option<T>]) -> String {
    let bits: String = votes
        .iter()
        .map(|v| if v.is_some() { 'x' } else { '_' })
        .collect();
    let total: u64 = set.validators().iter().map(|v| v.power()).sum();
    let voted: u64 = set
        .validators()
        .iter()
        .zip(votes)
        .filter(|(_, v)| v.is_some())
        .map(|(info, _)| info.power())
        .sum();
    let fraction = if total == 0 {
        0.0
    } else {
        voted as f64 / total as f64
    };
    format!(
        "BA{{{}:{bits}}} {voted}/{total} = {fraction:.2}",
        votes.len()
    )
}

fn round_votes(engine: &Engine, set: &validator::Set, height: u64, seen: &RoundSeen) -> Value {
    let votes = |list: &[Option<SignedVote>]| -> Vec<Value> {
        list.iter()
            .map(|v| match v {
                Some(vote) => summary(engine, set, height, vote),
                None => Value::String("nil-Vote".into()),
            })
            .collect()
    };
    json!({
        "round": seen.round.0,
        "prevotes": votes(&seen.prevotes),
        "prevotes_bit_array": bit_array(set, &seen.prevotes),
        "precommits": votes(&seen.precommits),
        "precommits_bit_array": bit_array(set, &seen.precommits),
    })
}

/// What both calls show of the height in progress.
struct InProgress {
    height: u64,
    round: u32,
    step: u8,
    rounds: Vec<RoundSeen>,
    proposer: Value,
    proposer_index: Option<usize>,
    proposal: Option<ValueId>,
    locked: Option<(Round, ValueId)>,
    valid: Option<(Round, ValueId)>,
}

fn in_progress(engine: &Engine) -> InProgress {
    let core = engine.consensus();
    let set = &engine.state().validator_set();
    let height = engine.state().next_height();
    let round = engine.round();
    let rounds = core.rounds_seen();
    let proposal = rounds
        .iter()
        .find(|r| r.round.0 == round)
        .and_then(|r| r.proposal);
    // The proposer of the current round, from the height's set (not the core, whose clone
    // would copy every vote).
    let index = Some(
        engine
            .state()
            .validators
            .proposer_in_round(Round(round))
            .as_usize(),
    );
    let proposer = index
        .and_then(|i| set.validators().get(i).map(|v| (i, v)))
        .map_or(
            Value::Null,
            |(i, v)| json!({"address": v.address.to_string(), "index": i}),
        );
    InProgress {
        height,
        round,
        step: step_number(core.step()),
        rounds,
        proposer,
        proposer_index: index,
        proposal,
        locked: core.locked(),
        valid: core.valid(),
    }
}

/// `consensus_state`.
pub fn consensus_state(engine: &Engine) -> Result<Value, ResponseError> {
    let now = in_progress(engine);
    let set = &engine.state().validator_set();
    let votes: Vec<Value> = now
        .rounds
        .iter()
        .map(|r| round_votes(engine, set, now.height, r))
        .collect();
    Ok(json!({"round_state": {
        "height/round/step": format!("{}/{}/{}", now.height, now.round, now.step),
        "start_time": rfc3339(engine.height_started()),
        "proposal_block_hash": block_hash(engine, now.proposal.as_ref()),
        "locked_block_hash": block_hash(engine, now.locked.as_ref().map(|(_, v)| v)),
        "valid_block_hash": block_hash(engine, now.valid.as_ref().map(|(_, v)| v)),
        "height_vote_set": votes,
        "proposer": now.proposer,
    }}))
}

/// A validator set as `RoundState` shows it, with `proposer` the validator at that index.
fn validator_set(set: &validator::Set, proposer: Option<usize>) -> Result<Value, ResponseError> {
    let mut shown = Vec::new();
    for info in set.validators() {
        let mut v = to_value(info)?;
        v["proposer_priority"] = Value::String(info.proposer_priority.value().to_string());
        cometbft::validator(&mut v);
        shown.push(v);
    }
    let proposer = proposer
        .and_then(|i| shown.get(i).cloned())
        .unwrap_or(Value::Null);
    Ok(json!({"validators": shown, "proposer": proposer}))
}

/// `dump_consensus_state`: the height in progress in CometBFT's `RoundState` shape (blocks
/// and part sets it does not keep are `null`), and each connected peer with the highest
/// height of a proposal or vote it sent.
pub fn dump_consensus_state(engine: &Engine, node: &NodeView<'_>) -> Result<Value, ResponseError> {
    let now = in_progress(engine);
    let state = engine.state();
    let set = &state.validator_set();
    let votes: Vec<Value> = now
        .rounds
        .iter()
        .map(|r| round_votes(engine, set, now.height, r))
        .collect();
    let round_of = |x: &Option<(Round, ValueId)>| x.as_ref().map_or(-1, |(r, _)| i64::from(r.0));
    let id_of = |x: &Option<(Round, ValueId)>| {
        x.as_ref()
            .and_then(|(_, v)| engine.block_id_of(v))
            .map_or(Ok(Value::Null), |id| to_value(&id))
    };
    let peers: Vec<Value> = (node.peers)()
        .iter()
        .map(|p| {
            let height = engine.peer_working_heights().get(&p.connection).copied();
            json!({
                "node_address": format!("{}@{}", p.info.node_info.id, p.info.remote_ip),
                "peer_state": {"round_state": {
                    "height": height.map_or(Value::Null, |h| Value::String(h.to_string())),
                }},
            })
        })
        .collect();
    Ok(json!({
        "round_state": {
            "height": now.height.to_string(),
            "round": now.round,
            "step": now.step,
            "start_time": rfc3339(engine.height_started()),
            "commit_time": rfc3339(state.last_block_time),
            "validators": validator_set(set, now.proposer_index)?,
            "proposal": now.proposal.and_then(|v| engine.block_id_of(&v)).map_or(Ok(Value::Null), |id| to_value(&id))?,
            "proposal_block": null,
            "proposal_block_parts": null,
            "locked_round": round_of(&now.locked),
            "locked_block_id": id_of(&now.locked)?,
            "locked_block": null,
            "locked_block_parts": null,
            "valid_round": round_of(&now.valid),
            "valid_block_id": id_of(&now.valid)?,
            "valid_block": null,
            "valid_block_parts": null,
            "votes": votes,
            "commit_round": -1,
            "last_commit": last_commit(engine),
            "last_validators": validator_set(&state.last_validator_infos, None)?,
            "triggered_timeout_precommit": false,
            "proposer": now.proposer,
        },
        "peers": peers,
    }))
}

/// The last block's precommits as CometBFT's `last_commit` vote set shows them.
fn last_commit(engine: &Engine) -> Value {
    let (Some(commit), set) = (engine.last_commit(), &engine.state().last_validator_infos) else {
        return Value::Null;
    };
    let height = commit.height.value();
    let mut voted = Vec::new();
    let votes: Vec<Value> = commit
        .signatures
        .iter()
        .enumerate()
        .map(|(index, sig)| {
            let (address, time, signature, hash) = match sig {
                CommitSig::BlockIdFlagCommit {
                    validator_address,
                    timestamp,
                    signature,
                } => (
                    validator_address,
                    timestamp,
                    signature,
                    commit.block_id.hash.as_bytes().to_vec(),
                ),
                CommitSig::BlockIdFlagNil {
                    validator_address,
                    timestamp,
                    signature,
                } => (validator_address, timestamp, signature, Vec::new()),
                CommitSig::BlockIdFlagAbsent => {
                    voted.push(None);
                    return Value::String("nil-Vote".into());
                }
            };
            voted.push(Some(()));
            let signature = signature
                .as_ref()
                .map(|s| s.as_bytes().to_vec())
                .unwrap_or_default();
            Value::String(format!(
                "Vote{{{index}:{} {height}/{:02}/2(Precommit) {} {} @ {}}}",
                fingerprint(address.as_bytes()),
                commit.round.value(),
                fingerprint(&hash),
                fingerprint(&signature),
                rfc3339(*time),
            ))
        })
        .collect();
    json!({
        "votes": votes,
        "votes_bit_array": bit_array(set, &voted),
        "peer_maj_23s": {},
    })
}
