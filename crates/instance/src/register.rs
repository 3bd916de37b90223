//! The register of the chain state (who holds each validator's key) and how claims are kept
//! out of the application's view.

use crate::claim::Claim;
use bulwark_types::tendermint::abci::types::ExecTxResult;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The instance that last claimed a validator's key, and the height of the block that
/// carried the claim.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holder {
    /// The instance, hex.
    pub instance: String,
    /// The height of the claim's block.
    pub height: u64,
}

/// Per validator (upper-case hex address), its holder.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register(BTreeMap<String, Holder>);

/// What the register says of one instance of a validator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Authorization {
    /// No instance holds the validator's key (the genesis named none: it joined later): this
    /// instance signs only after its claim.
    Unclaimed,
    /// This instance holds the key since its claim's block (the one before the chain's first
    /// for the launch instance the genesis names).
    Holder {
        /// The height of its claim's block.
        since: u64,
    },
    /// Another instance holds it.
    Elsewhere {
        /// The other instance's first eight hex digits.
        instance: String,
        /// The height of its claim's block.
        since: u64,
    },
}

impl Authorization {
    /// Whether the instance may sign.
    pub fn may_sign(&self) -> bool {
        matches!(self, Authorization::Holder { .. })
    }

    /// A short name for metrics and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Authorization::Unclaimed => "unclaimed",
            Authorization::Holder { .. } => "holder",
            Authorization::Elsewhere { .. } => "elsewhere",
        }
    }

    /// Every [`Authorization::label`].
    pub const LABELS: [&'static str; 3] = ["unclaimed", "holder", "elsewhere"];
}

impl Register {
    /// The register before the first block of a chain starting at `initial_height`: each
    /// validator's launch instance (the boot that enrolled it, named in the genesis by its
    /// enrollment) holds its key from the start, as if claimed in the block before the first.
    pub fn at_launch(
        initial_height: u64,
        launch_instances: impl IntoIterator<Item = ([u8; 20], [u8; 32])>,
    ) -> Register {
        Register(
            launch_instances
                .into_iter()
                .map(|(validator, instance)| {
                    (
                        hex::encode_upper(validator),
                        Holder {
                            instance: hex::encode(instance),
                            height: initial_height.saturating_sub(1),
                        },
                    )
                })
                .collect(),
        )
    }

    /// The holder of `validator`'s key.
    pub fn holder(&self, validator: &[u8; 20]) -> Option<&Holder> {
        self.0.get(&hex::encode_upper(validator))
    }

    /// Records the claims in the block of `height` (already validated, or decided).
    pub fn apply(&mut self, height: u64, txs: &[impl AsRef<[u8]>]) {
        for tx in txs {
            if let Some(Ok(claim)) = Claim::from_tx(tx.as_ref()) {
                self.0.insert(
                    claim.validator_hex(),
                    Holder {
                        instance: hex::encode(claim.instance),
                        height,
                    },
                );
            }
        }
    }

    /// What the register says of `instance` of `validator`.
    pub fn authorization(&self, validator: &[u8; 20], instance: &[u8; 32]) -> Authorization {
        match self.holder(validator) {
            None => Authorization::Unclaimed,
            Some(h) if h.instance == hex::encode(instance) => {
                Authorization::Holder { since: h.height }
            }
            Some(h) => Authorization::Elsewhere {
                instance: h.instance.chars().take(8).collect(),
                since: h.height,
            },
        }
    }

    /// Validators with a holder.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no validator has a holder.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// A block's transactions without its claims (what the application sees), and where the
/// claims were.
pub fn split_claims(txs: &[Bytes]) -> (Vec<Bytes>, Vec<usize>) {
    let mut app = Vec::with_capacity(txs.len());
    let mut claims = Vec::new();
    for (i, tx) in txs.iter().enumerate() {
        if Claim::from_tx(tx).is_some() {
            claims.push(i);
        } else {
            app.push(tx.clone());
        }
    }
    (app, claims)
}

/// The application's results for the other transactions, with a result for each claim put
/// back at its position: one result per transaction of the block, in its order.
pub fn merge_results(app: Vec<ExecTxResult>, claims: &[usize]) -> Vec<ExecTxResult> {
    if claims.is_empty() {
        return app;
    }
    let total = app.len() + claims.len();
    let mut app = app.into_iter();
    (0..total)
        .map(|i| {
            if claims.binary_search(&i).is_ok() {
                ExecTxResult {
                    log: "bulwark instance claim".into(),
                    ..Default::default()
                }
            } else {
                app.next().unwrap_or_default()
            }
        })
        .collect()
}

/// Runs the application's FinalizeBlock on `request` without its claims and puts a result
/// back for each claim, so the results (and their hash) cover every transaction of the block.
pub fn finalize_without_claims<E>(
    mut request: bulwark_types::tendermint::abci::request::FinalizeBlock,
    finalize: impl FnOnce(
        bulwark_types::tendermint::abci::request::FinalizeBlock,
    ) -> Result<bulwark_types::tendermint::abci::response::FinalizeBlock, E>,
) -> Result<bulwark_types::tendermint::abci::response::FinalizeBlock, E> {
    let (app, claims) = split_claims(&request.txs);
    request.txs = app;
    let mut result = finalize(request)?;
    result.tx_results = merge_results(std::mem::take(&mut result.tx_results), &claims);
    Ok(result)
}
