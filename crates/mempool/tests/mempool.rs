//! The mempool with the real kvstore behind it.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use bulwark_app::kvstore::KvStore;
use bulwark_app::{AppError, Application};
use bulwark_mempool::{tx_hash, AddError, Mempool, MempoolConfig};
use bulwark_types::tendermint::abci::{request, response, types::CommitInfo};
use bulwark_types::tendermint::{account, block, Hash, Time};
use bytes::Bytes;

fn tx(s: &str) -> Bytes {
    Bytes::from(s.to_string())
}

fn app() -> (tempfile::TempDir, KvStore) {
    let dir = tempfile::tempdir().unwrap();
    let app = KvStore::open(dir.path()).unwrap();
    (dir, app)
}

#[test]
fn admits_valid_new_txs_in_order_and_refuses_the_rest_by_name() {
    let (_d, app) = app();
    let mut m = Mempool::new(MempoolConfig {
        max_tx_bytes: 10,
        ..MempoolConfig::default()
    });
    let h = m.add(tx("a=1"), &app).unwrap();
    assert_eq!(h, tx_hash(b"a=1"));
    m.add(tx("b=2"), &app).unwrap();
    assert_eq!(m.add(tx("a=1"), &app), Err(AddError::AlreadySeen));
    assert!(matches!(
        m.add(tx("broken"), &app),
        Err(AddError::Rejected { code: 1, .. })
    ));
    // A rejected tx is remembered too: relaying peers do not make us check it again.
    assert_eq!(m.add(tx("broken"), &app), Err(AddError::AlreadySeen));
    assert_eq!(
        m.add(tx("k=0123456789"), &app),
        Err(AddError::TooLarge { size: 12, max: 10 })
    );
    assert_eq!(m.add(Bytes::new(), &app), Err(AddError::Empty));
    assert_eq!(m.reap(-1), vec![tx("a=1"), tx("b=2")]);
    assert_eq!(m.reap(4), vec![tx("a=1")]);
    assert_eq!((m.len(), m.size_bytes()), (2, 6));
}

#[test]
fn full_by_count_or_bytes() {
    let (_d, app) = app();
    let mut m = Mempool::new(MempoolConfig {
        max_txs: 2,
        max_bytes: 100,
        ..MempoolConfig::default()
    });
    m.add(tx("a=1"), &app).unwrap();
    m.add(tx("b=2"), &app).unwrap();
    assert!(matches!(
        m.add(tx("c=3"), &app),
        Err(AddError::Full { txs: 2, .. })
    ));
    let mut m = Mempool::new(MempoolConfig {
        max_bytes: 5,
        ..MempoolConfig::default()
    });
    m.add(tx("a=1"), &app).unwrap();
    assert!(matches!(
        m.add(tx("b=2"), &app),
        Err(AddError::Full { bytes: 3, .. })
    ));
}

#[test]
fn committed_txs_leave_and_stay_refused_and_the_rest_wait() {
    let (_d, mut app) = app();
    let mut m = Mempool::new(MempoolConfig::default());
    for t in ["a=1", "b=2", "c=3"] {
        m.add(tx(t), &app).unwrap();
    }
    let block_txs = vec![tx("a=1"), tx("c=3")];
    app.finalize_block(request::FinalizeBlock {
        txs: block_txs.clone(),
        decided_last_commit: CommitInfo {
            round: 0u16.into(),
            votes: vec![],
        },
        misbehavior: vec![],
        hash: Hash::Sha256([1; 32]),
        height: block::Height::try_from(1u64).unwrap(),
        time: Time::from_unix_timestamp(1_700_000_000, 0).unwrap(),
        next_validators_hash: Hash::None,
        proposer_address: account::Id::new([0; 20]),
    })
    .unwrap();
    app.commit().unwrap();
    let hashes: Vec<[u8; 32]> = block_txs.iter().map(|t| tx_hash(t)).collect();
    m.update(&hashes, &app).unwrap();
    assert_eq!(m.reap(-1), vec![tx("b=2")]);
    assert_eq!(m.add(tx("a=1"), &app), Err(AddError::AlreadySeen));
    assert_eq!((m.len(), m.size_bytes()), (1, 3));
}

#[test]
fn the_seen_cache_is_bounded() {
    let (_d, app) = app();
    let mut m = Mempool::new(MempoolConfig {
        cache_size: 3,
        ..MempoolConfig::default()
    });
    for i in 0..10 {
        let _ = m.add(tx(&format!("bad{i}")), &app);
    }
    // The oldest rejected tx has aged out of the cache: it is checked (and rejected) again.
    assert!(matches!(
        m.add(tx("bad0"), &app),
        Err(AddError::Rejected { .. })
    ));
    assert_eq!(m.add(tx("bad9"), &app), Err(AddError::AlreadySeen));
}

/// The kvstore, but refusing the txs in `refuse` (state-dependent validity, as in a real app).
struct Picky {
    inner: KvStore,
    refuse: Vec<Bytes>,
    down: bool,
}

impl Application for Picky {
    fn info(&self, r: request::Info) -> Result<response::Info, AppError> {
        self.inner.info(r)
    }
    fn init_chain(&mut self, r: request::InitChain) -> Result<response::InitChain, AppError> {
        self.inner.init_chain(r)
    }
    fn check_tx(&self, r: request::CheckTx) -> Result<response::CheckTx, AppError> {
        if self.down {
            return Err(AppError::Connection(
                "the application closed the connection".into(),
            ));
        }
        if self.refuse.contains(&r.tx) {
            let mut answer = self.inner.check_tx(request::CheckTx {
                tx: tx("="),
                kind: r.kind,
            })?;
            answer.log = "no longer valid".into();
            return Ok(answer);
        }
        self.inner.check_tx(r)
    }
    fn prepare_proposal(
        &mut self,
        r: request::PrepareProposal,
    ) -> Result<response::PrepareProposal, AppError> {
        self.inner.prepare_proposal(r)
    }
    fn process_proposal(
        &mut self,
        r: request::ProcessProposal,
    ) -> Result<response::ProcessProposal, AppError> {
        self.inner.process_proposal(r)
    }
    fn finalize_block(
        &mut self,
        r: request::FinalizeBlock,
    ) -> Result<response::FinalizeBlock, AppError> {
        self.inner.finalize_block(r)
    }
    fn extend_vote(&mut self, r: request::ExtendVote) -> Result<response::ExtendVote, AppError> {
        self.inner.extend_vote(r)
    }
    fn verify_vote_extension(
        &mut self,
        r: request::VerifyVoteExtension,
    ) -> Result<response::VerifyVoteExtension, AppError> {
        self.inner.verify_vote_extension(r)
    }
    fn commit(&mut self) -> Result<response::Commit, AppError> {
        self.inner.commit()
    }
    fn query(&self, r: request::Query) -> Result<response::Query, AppError> {
        self.inner.query(r)
    }
    fn consensus_params_are(&mut self, p: &bulwark_types::tendermint::consensus::Params) {
        self.inner.consensus_params_are(p)
    }
}

#[test]
fn an_application_that_fails_check_tx_is_an_error_not_a_refusal() {
    let (_d, inner) = app();
    let mut app = Picky {
        inner,
        refuse: vec![],
        down: false,
    };
    let mut m = Mempool::new(MempoolConfig::default());
    m.add(tx("a=1"), &app).unwrap();
    app.down = true;
    assert!(matches!(m.add(tx("b=2"), &app), Err(AddError::App(_))));
    // Not remembered as refused: once the application answers again it is checked again.
    app.down = false;
    m.add(tx("b=2"), &app).unwrap();
    app.down = true;
    assert!(m.update(&[], &app).is_err());
}

#[test]
fn recheck_after_commit_drops_txs_the_new_state_refuses_and_lets_them_back_later() {
    let (_d, inner) = app();
    let mut picky = Picky {
        inner,
        refuse: vec![],
        down: false,
    };
    let mut m = Mempool::new(MempoolConfig::default());
    for t in ["a=1", "b=2", "c=3"] {
        m.add(tx(t), &picky).unwrap();
    }
    picky.refuse = vec![tx("b=2")];
    m.update(&[], &picky).unwrap();
    assert_eq!(m.reap(-1), vec![tx("a=1"), tx("c=3")]);
    assert_eq!(m.size_bytes(), 6);
    // Valid again later: it may be resubmitted (not stuck in the seen cache).
    picky.refuse.clear();
    m.add(tx("b=2"), &picky).unwrap();
    assert_eq!(m.len(), 3);
}
