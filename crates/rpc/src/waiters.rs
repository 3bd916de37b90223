//! `broadcast_tx_commit` calls waiting for their transaction's block: bounded, answered at
//! commit from the stored block and its results.

use crate::answer::committed_tx;
use bulwark_node::engine::Engine;
use serde_json::Value;
use std::collections::HashMap;
use tendermint_rpc::response_error::{Code, ResponseError};
use tokio::sync::oneshot;

/// Most `broadcast_tx_commit` calls waiting for their block at once.
pub const MAX_COMMIT_WAITERS: usize = 10_000;

/// Where a waiting call's answer goes.
pub type Answer = oneshot::Sender<Result<Value, ResponseError>>;

/// The calls waiting, by transaction hash.
#[derive(Debug, Default)]
pub struct CommitWaiters {
    by_hash: HashMap<[u8; 32], Vec<Answer>>,
    count: usize,
}

impl CommitWaiters {
    /// Waits for the transaction `hash`; refuses at once when too many calls already wait.
    pub fn add(&mut self, hash: [u8; 32], reply: Answer) {
        if self.count >= MAX_COMMIT_WAITERS {
            // Forget callers that gave up before refusing a new one.
            self.by_hash.retain(|_, senders| {
                senders.retain(|s| !s.is_closed());
                !senders.is_empty()
            });
            self.count = self.by_hash.values().map(Vec::len).sum();
        }
        if self.count >= MAX_COMMIT_WAITERS {
            let _ = reply.send(Err(ResponseError::new(
                Code::InternalError,
                Some(format!(
                    "{MAX_COMMIT_WAITERS} broadcast_tx_commit calls are already waiting"
                )),
            )));
            return;
        }
        self.by_hash.entry(hash).or_default().push(reply);
        self.count += 1;
    }

    /// Answers the callers whose transactions block `height` holds.
    pub fn committed(&mut self, engine: &Engine, height: u64) {
        if self.by_hash.is_empty() {
            return;
        }
        let hashes: Vec<[u8; 32]> = self.by_hash.keys().copied().collect();
        for (hash, answer) in committed_tx(engine, height, &hashes) {
            for reply in self.by_hash.remove(&hash).unwrap_or_default() {
                self.count -= 1;
                let _ = reply.send(answer.clone());
            }
        }
    }
}
