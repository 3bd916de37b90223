//! How long each ABCI call takes, for CometBFT's `abci_connection_method_timing_seconds`:
//! [`Timed`] wraps the node's application and records every call, whatever it answered, in
//! the process's [`TIMINGS`].

use crate::{AppError, Application};
use bulwark_types::tendermint::abci::{request, response};
use std::sync::Mutex;
use std::time::Instant;

/// Upper bounds of the buckets, seconds (CometBFT's).
pub const BOUNDS: [f64; 10] = [
    0.0001, 0.0004, 0.002, 0.009, 0.02, 0.1, 0.65, 2.0, 6.0, 25.0,
];

/// The ABCI methods timed, by CometBFT's label.
pub const METHODS: [&str; 10] = [
    "info",
    "init_chain",
    "check_tx",
    "prepare_proposal",
    "process_proposal",
    "finalize_block",
    "commit",
    "query",
    "extend_vote",
    "verify_vote_extension",
];

/// One method's observations: counts per bucket of [`BOUNDS`] (one more above the last),
/// their sum and number.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MethodTimes {
    /// Per bucket, not cumulative.
    pub counts: [u64; BOUNDS.len() + 1],
    /// Seconds in all.
    pub sum: f64,
    /// Calls.
    pub count: u64,
}

/// Every method's times.
#[derive(Debug)]
pub struct Timings(Mutex<[MethodTimes; METHODS.len()]>);

/// The times of this process's application (a node runs one).
pub static TIMINGS: Timings = Timings(Mutex::new(
    [const {
        MethodTimes {
            counts: [0; BOUNDS.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }; METHODS.len()],
));

impl Timings {
    fn observe(&self, method: usize, seconds: f64) {
        let mut all = match self.0.lock() {
            Ok(all) => all,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(m) = all.get_mut(method) else {
            return;
        };
        let bucket = BOUNDS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BOUNDS.len());
        if let Some(c) = m.counts.get_mut(bucket) {
            *c += 1;
        }
        m.sum += seconds;
        m.count += 1;
    }

    /// Each method's label and times now.
    pub fn snapshot(&self) -> Vec<(&'static str, MethodTimes)> {
        let all = match self.0.lock() {
            Ok(all) => all.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        METHODS.into_iter().zip(all).collect()
    }
}

/// An application whose every call is timed into [`TIMINGS`].
pub struct Timed(pub Box<dyn Application>);

fn timed<T>(method: usize, call: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let answer = call();
    TIMINGS.observe(method, started.elapsed().as_secs_f64());
    answer
}

impl Application for Timed {
    fn info(&self, request: request::Info) -> Result<response::Info, AppError> {
        timed(0, || self.0.info(request))
    }
    fn init_chain(&mut self, request: request::InitChain) -> Result<response::InitChain, AppError> {
        timed(1, || self.0.init_chain(request))
    }
    fn check_tx(&self, request: request::CheckTx) -> Result<response::CheckTx, AppError> {
        timed(2, || self.0.check_tx(request))
    }
    fn prepare_proposal(
        &mut self,
        request: request::PrepareProposal,
    ) -> Result<response::PrepareProposal, AppError> {
        timed(3, || self.0.prepare_proposal(request))
    }
    fn process_proposal(
        &mut self,
        request: request::ProcessProposal,
    ) -> Result<response::ProcessProposal, AppError> {
        timed(4, || self.0.process_proposal(request))
    }
    fn finalize_block(
        &mut self,
        request: request::FinalizeBlock,
    ) -> Result<response::FinalizeBlock, AppError> {
        timed(5, || self.0.finalize_block(request))
    }
    fn extend_vote(
        &mut self,
        request: request::ExtendVote,
    ) -> Result<response::ExtendVote, AppError> {
        timed(8, || self.0.extend_vote(request))
    }
    fn verify_vote_extension(
        &mut self,
        request: request::VerifyVoteExtension,
    ) -> Result<response::VerifyVoteExtension, AppError> {
        timed(9, || self.0.verify_vote_extension(request))
    }
    fn commit(&mut self) -> Result<response::Commit, AppError> {
        timed(6, || self.0.commit())
    }
    fn query(&self, request: request::Query) -> Result<response::Query, AppError> {
        timed(7, || self.0.query(request))
    }
    fn consensus_params_are(&mut self, params: &bulwark_types::tendermint::consensus::Params) {
        self.0.consensus_params_are(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_its_bucket_and_the_sum() {
        let t = Timings(Mutex::new(Default::default()));
        t.observe(6, 0.0003);
        t.observe(6, 30.0);
        let commit = &t.snapshot()[6];
        assert_eq!(commit.0, "commit");
        assert_eq!(commit.1.counts[1], 1);
        assert_eq!(commit.1.counts[BOUNDS.len()], 1);
        assert_eq!(commit.1.count, 2);
        assert!((commit.1.sum - 30.0003).abs() < 1e-9);
    }
}
