//! JSON-RPC calls as the node understands them, parsed from either of CometBFT's request forms:
//! a POSTed JSON-RPC object (params by name or by position, tx as base64, query data as hex)
//! or a GET URI (`/block?height=5`, `/broadcast_tx_sync?tx=0x...` or `tx="k=v"`). Parsing is
//! pure: every request gets a [`Call`] or a JSON-RPC error, whatever the bytes. Answers are
//! shaped as a CometBFT v0.38 node's in [`cometbft`].

use base64::Engine as _;
use bulwark_types::tendermint_proto::v0_38 as pb;
use serde_json::{Map, Value};
use std::borrow::Cow;
use tendermint_rpc::response_error::{Code, ResponseError};

pub mod cometbft;

/// Largest page of validators (CometBFT's limit).
pub const MAX_PER_PAGE: usize = 100;
/// Default page size of `validators` (CometBFT's).
pub const DEFAULT_PER_PAGE: usize = 30;

/// How long a broadcast waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BroadcastMode {
    /// Returns once the node has the transaction (CheckTx not awaited).
    Async,
    /// Returns CheckTx's result.
    Sync,
    /// Returns once the transaction is in a committed block (or fails CheckTx).
    Commit,
}

/// One request, parsed.
#[derive(Clone, Debug, PartialEq)]
pub enum Call {
    /// `health`.
    Health,
    /// `status`.
    Status,
    /// `net_info`.
    NetInfo,
    /// `genesis`.
    Genesis,
    /// `block` (latest if no height).
    Block(Option<u64>),
    /// `block_results`.
    BlockResults(Option<u64>),
    /// `commit`.
    Commit(Option<u64>),
    /// `validators`.
    Validators {
        /// Height (latest if none).
        height: Option<u64>,
        /// 1-based page.
        page: usize,
        /// Page size.
        per_page: usize,
    },
    /// `broadcast_tx_*`.
    BroadcastTx {
        /// The transaction.
        tx: Vec<u8>,
        /// How long to wait.
        mode: BroadcastMode,
    },
    /// `abci_query`.
    AbciQuery {
        /// Query path.
        path: String,
        /// Query data.
        data: Vec<u8>,
        /// Height (latest if none).
        height: Option<u64>,
        /// Whether a proof is asked for.
        prove: bool,
    },
    /// `abci_info`.
    AbciInfo,
    /// `num_unconfirmed_txs`.
    NumUnconfirmedTxs,
    /// `broadcast_evidence`: evidence of misbehaviour, as CometBFT's JSON carries it.
    BroadcastEvidence(Box<pb::types::Evidence>),
    /// `block_by_hash`.
    BlockByHash(Vec<u8>),
    /// `header` (latest if no height).
    Header(Option<u64>),
    /// `header_by_hash`.
    HeaderByHash(Vec<u8>),
    /// `blockchain`: the metas of at most 20 blocks, highest first.
    Blockchain {
        /// `minHeight` (the first block if none).
        min: Option<u64>,
        /// `maxHeight` (the latest if none).
        max: Option<u64>,
    },
    /// `consensus_params` (latest if no height).
    ConsensusParams(Option<u64>),
    /// `unconfirmed_txs`: up to `limit` waiting transactions.
    UnconfirmedTxs {
        /// Most transactions listed.
        limit: usize,
    },
    /// `check_tx`: the application's CheckTx, without admitting the transaction.
    CheckTx(Vec<u8>),
    /// `tx`: a committed transaction by its SHA-256.
    Tx {
        /// Its hash.
        hash: Vec<u8>,
        /// Whether a Merkle proof is asked for.
        prove: bool,
    },
    /// `tx_search`: committed transactions whose events match a query.
    TxSearch {
        /// The query and the page asked for.
        search: bulwark_query::search::Search,
        /// Whether Merkle proofs are asked for.
        prove: bool,
    },
    /// `block_search`: committed blocks whose events match a query.
    BlockSearch(bulwark_query::search::Search),
    /// `consensus_state`: the height in progress, its rounds and votes.
    ConsensusState,
    /// `dump_consensus_state`: the same in CometBFT's full shape, and the peers' heights.
    DumpConsensusState,
}

/// The methods served, in the order `GET /` lists them.
pub const METHODS: &[&str] = &[
    "health",
    "status",
    "net_info",
    "genesis",
    "block",
    "block_results",
    "commit",
    "validators",
    "broadcast_tx_async",
    "broadcast_tx_sync",
    "broadcast_tx_commit",
    "abci_query",
    "abci_info",
    "num_unconfirmed_txs",
    "broadcast_evidence",
    "block_by_hash",
    "header",
    "header_by_hash",
    "blockchain",
    "consensus_params",
    "unconfirmed_txs",
    "check_tx",
    "tx",
    "tx_search",
    "block_search",
    "consensus_state",
    "dump_consensus_state",
];

/// Positional parameter names of each method (CometBFT's order).
fn positional_names(method: &str) -> &'static [&'static str] {
    match method {
        "block" | "block_results" | "commit" | "header" | "consensus_params" => &["height"],
        "block_by_hash" | "header_by_hash" => &["hash"],
        "tx" => &["hash", "prove"],
        "tx_search" => &["query", "prove", "page", "per_page", "order_by"],
        "block_search" => &["query", "page", "per_page", "order_by"],
        "blockchain" => &["minHeight", "maxHeight"],
        "unconfirmed_txs" => &["limit"],
        "check_tx" => &["tx"],
        "validators" => &["height", "page", "per_page"],
        "broadcast_tx_async" | "broadcast_tx_sync" | "broadcast_tx_commit" => &["tx"],
        "abci_query" => &["path", "data", "height", "prove"],
        "broadcast_evidence" => &["evidence"],
        _ => &[],
    }
}

fn invalid(message: impl Into<String>) -> ResponseError {
    ResponseError::new(Code::InvalidParams, Some(message.into()))
}

/// Named parameters from `params` (an object, an array by position, or absent).
fn named<'a>(
    method: &str,
    params: &'a Value,
) -> Result<Cow<'a, Map<String, Value>>, ResponseError> {
    match params {
        Value::Null => Ok(Cow::Owned(Map::new())),
        Value::Object(m) => Ok(Cow::Borrowed(m)),
        Value::Array(values) => {
            let names = positional_names(method);
            if values.len() > names.len() {
                return Err(invalid(format!(
                    "{method} takes at most {} parameters, got {}",
                    names.len(),
                    values.len()
                )));
            }
            Ok(Cow::Owned(
                names
                    .iter()
                    .zip(values)
                    .map(|(n, v)| ((*n).to_string(), v.clone()))
                    .collect(),
            ))
        }
        _ => Err(invalid("params must be an object or an array")),
    }
}

/// An optional unsigned integer given as a JSON number or a decimal string.
fn opt_u64(params: &Map<String, Value>, name: &str) -> Result<Option<u64>, ResponseError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| invalid(format!("{name} must be a non-negative integer"))),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => s
            .parse::<u64>()
            .map(Some)
            .map_err(|_| invalid(format!("{name} must be a non-negative integer, got {s:?}"))),
        Some(_) => Err(invalid(format!("{name} must be an integer"))),
    }
}

/// A height: absent means latest; 0 is refused as in CometBFT.
fn height(params: &Map<String, Value>) -> Result<Option<u64>, ResponseError> {
    match opt_u64(params, "height")? {
        Some(0) => Err(invalid("height must be greater than 0")),
        h => Ok(h),
    }
}

fn string(params: &Map<String, Value>, name: &str) -> Result<Option<String>, ResponseError> {
    Ok(str_in(params, name)?.map(str::to_owned))
}

fn str_in<'a>(
    params: &'a Map<String, Value>,
    name: &str,
) -> Result<Option<&'a str>, ResponseError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(invalid(format!("{name} must be a string"))),
    }
}

fn boolean(params: &Map<String, Value>, name: &str) -> Result<bool, ResponseError> {
    match params.get(name) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(Value::String(s)) if s == "true" => Ok(true),
        Some(Value::String(s)) if s == "false" || s.is_empty() => Ok(false),
        Some(_) => Err(invalid(format!("{name} must be true or false"))),
    }
}

/// A transaction, base64 in JSON as CometBFT takes it.
fn tx(params: &Map<String, Value>) -> Result<Vec<u8>, ResponseError> {
    // Read in place: a transaction's base64 is most of a broadcast.
    let encoded = str_in(params, "tx")?.ok_or_else(|| invalid("missing tx"))?;
    base64::engine::general_purpose::STANDARD
        .decode(encoded.as_bytes())
        .map_err(|e| invalid(format!("tx is not base64: {e}")))
}

/// A block hash: 64 hex digits (`header_by_hash`'s form, and `0x`-prefixed from a URI) or
/// base64 (`block_by_hash`'s, as CometBFT's JSON takes `[]byte`); the two cannot be confused.
fn hash(params: &Map<String, Value>) -> Result<Vec<u8>, ResponseError> {
    let given = string(params, "hash")?.ok_or_else(|| invalid("missing hash"))?;
    // Only a 66-character string loses a `0x`: base64 may start with those two characters.
    let hex_digits = match given.strip_prefix("0x") {
        Some(rest) if given.len() == 66 => Some(rest),
        _ if given.len() == 64 => Some(given.as_str()),
        _ => None,
    };
    let bytes = if let Some(digits) = hex_digits {
        hex::decode(digits).map_err(|e| invalid(format!("hash is not hex: {e}")))?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(given.as_bytes())
            .map_err(|e| invalid(format!("hash is neither hex nor base64: {e}")))?
    };
    if bytes.len() != 32 {
        return Err(invalid(format!("a hash has 32 bytes, not {}", bytes.len())));
    }
    Ok(bytes)
}

/// A 1-based page (1 if none) and a page size clamped to CometBFT's 1..=100 (30 if none).
fn page(params: &Map<String, Value>) -> Result<(usize, usize), ResponseError> {
    let page = opt_u64(params, "page")?.unwrap_or(1);
    if page == 0 {
        return Err(invalid("page must be greater than 0"));
    }
    let per_page = opt_u64(params, "per_page")?
        .filter(|p| *p > 0)
        .unwrap_or(DEFAULT_PER_PAGE as u64);
    Ok((
        usize::try_from(page).map_err(|_| invalid("page is too large"))?,
        usize::try_from(per_page)
            .unwrap_or(MAX_PER_PAGE)
            .clamp(1, MAX_PER_PAGE),
    ))
}

/// A search's query, page and order (`asc` or `desc`; none means `default_descending`).
fn search(
    params: &Map<String, Value>,
    default_descending: bool,
) -> Result<bulwark_query::search::Search, ResponseError> {
    let text = string(params, "query")?.ok_or_else(|| invalid("missing query"))?;
    let query = bulwark_query::Query::parse(&text)
        // CometBFT answers a query it cannot parse with an internal error, as here.
        .map_err(|e| {
            ResponseError::new(
                Code::InternalError,
                Some(format!("failed to parse query: {e}")),
            )
        })?;
    let descending = match string(params, "order_by")?.as_deref() {
        None | Some("") => default_descending,
        Some("asc") => false,
        Some("desc") => true,
        Some(other) => {
            return Err(invalid(format!(
                "order_by must be \"asc\" or \"desc\", got {other:?}"
            )))
        }
    };
    let (page, per_page) = page(params)?;
    Ok(bulwark_query::search::Search {
        query,
        page,
        per_page,
        descending,
    })
}

/// Parses a JSON-RPC call. `params` is as POSTed (or as [`uri_params`] made it).
pub fn parse(method: &str, params: &Value) -> Result<Call, ResponseError> {
    if !METHODS.contains(&method) {
        return Err(ResponseError::method_not_found(method));
    }
    let p = named(method, params)?;
    let call = match method {
        "health" => Call::Health,
        "status" => Call::Status,
        "net_info" => Call::NetInfo,
        "genesis" => Call::Genesis,
        "abci_info" => Call::AbciInfo,
        "num_unconfirmed_txs" => Call::NumUnconfirmedTxs,
        "consensus_state" => Call::ConsensusState,
        "dump_consensus_state" => Call::DumpConsensusState,
        "block" => Call::Block(height(&p)?),
        "block_results" => Call::BlockResults(height(&p)?),
        "commit" => Call::Commit(height(&p)?),
        "validators" => {
            let (page, per_page) = page(&p)?;
            Call::Validators {
                height: height(&p)?,
                page,
                per_page,
            }
        }
        "block_by_hash" => Call::BlockByHash(hash(&p)?),
        "header" => Call::Header(height(&p)?),
        "header_by_hash" => Call::HeaderByHash(hash(&p)?),
        "blockchain" => Call::Blockchain {
            min: opt_u64(&p, "minHeight")?.filter(|h| *h > 0),
            max: opt_u64(&p, "maxHeight")?.filter(|h| *h > 0),
        },
        "consensus_params" => Call::ConsensusParams(height(&p)?),
        "unconfirmed_txs" => Call::UnconfirmedTxs {
            // CometBFT's default and cap (30, 100); 0 means the default.
            limit: opt_u64(&p, "limit")?
                .filter(|l| *l > 0)
                .map_or(DEFAULT_PER_PAGE, |l| {
                    usize::try_from(l).unwrap_or(MAX_PER_PAGE).min(MAX_PER_PAGE)
                }),
        },
        "check_tx" => Call::CheckTx(tx(&p)?),
        "tx" => Call::Tx {
            hash: hash(&p)?,
            prove: boolean(&p, "prove")?,
        },
        // CometBFT lists transactions oldest first and blocks newest first by default.
        "tx_search" => Call::TxSearch {
            search: search(&p, false)?,
            prove: boolean(&p, "prove")?,
        },
        "block_search" => Call::BlockSearch(search(&p, true)?),
        "broadcast_tx_async" | "broadcast_tx_sync" | "broadcast_tx_commit" => {
            let tx = tx(&p)?;
            let mode = match method {
                "broadcast_tx_async" => BroadcastMode::Async,
                "broadcast_tx_sync" => BroadcastMode::Sync,
                _ => BroadcastMode::Commit,
            };
            Call::BroadcastTx { tx, mode }
        }
        "abci_query" => {
            let data = string(&p, "data")?.unwrap_or_default();
            let data = hex::decode(data.trim_start_matches("0x"))
                .map_err(|e| invalid(format!("data is not hex: {e}")))?;
            Call::AbciQuery {
                path: string(&p, "path")?.unwrap_or_default(),
                data,
                height: opt_u64(&p, "height")?.filter(|h| *h > 0),
                prove: boolean(&p, "prove")?,
            }
        }
        "broadcast_evidence" => {
            let value = p
                .get("evidence")
                .filter(|v| !v.is_null())
                .ok_or_else(|| invalid("missing evidence"))?;
            let evidence: pb::types::Evidence = serde_json::from_value(value.clone())
                .map_err(|e| invalid(format!("evidence: {e}")))?;
            Call::BroadcastEvidence(Box::new(evidence))
        }
        _ => return Err(ResponseError::method_not_found(method)),
    };
    Ok(call)
}

/// Decodes one URI argument: `0x`-hex or a `"quoted"` string gives bytes; anything else is
/// taken as it is.
fn uri_bytes(value: &str) -> Result<Vec<u8>, ResponseError> {
    if let Some(h) = value.strip_prefix("0x") {
        return hex::decode(h).map_err(|e| invalid(format!("bad hex {value:?}: {e}")));
    }
    if let Some(q) = value
        .strip_prefix('"')
        .and_then(|rest| rest.strip_suffix('"'))
    {
        return Ok(q.as_bytes().to_vec());
    }
    Ok(value.as_bytes().to_vec())
}

fn percent_decode(s: &str) -> Result<String, ResponseError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let pair = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| invalid(format!("bad percent-encoding in {s:?}")))?;
                out.push(pair);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| invalid(format!("{s:?} is not UTF-8 once decoded")))
}

/// Turns a GET query string into the params a POST would carry, so [`parse`] serves both.
pub fn uri_params(query: &str) -> Result<Value, ResponseError> {
    let mut params = Map::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name)?;
        let raw = percent_decode(raw)?;
        let value = match name.as_str() {
            "tx" => {
                Value::String(base64::engine::general_purpose::STANDARD.encode(uri_bytes(&raw)?))
            }
            "data" => Value::String(hex::encode(uri_bytes(&raw)?)),
            // Evidence is JSON in the URI, as CometBFT's URI form takes it.
            "evidence" => serde_json::from_str(&raw)
                .map_err(|e| invalid(format!("evidence is not JSON: {e}")))?,
            _ => Value::String(
                raw.strip_prefix('"')
                    .and_then(|r| r.strip_suffix('"'))
                    .unwrap_or(&raw)
                    .to_string(),
            ),
        };
        params.insert(name, value);
    }
    Ok(Value::Object(params))
}
