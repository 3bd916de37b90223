//! The open-files limit, shared between connections and storage. Each connection the node
//! holds (a peer, a handshake in progress, a dial, an RPC or metrics client) takes one
//! descriptor from a pool sized at start, and one that finds the pool empty is closed at once.
//! What the pool leaves out stays with the databases, whose flushes and compactions open files
//! at moments no client chooses: without the pool, idle connections could hold the last
//! descriptor when a flush needs one, and a failed flush poisons the database (the node stops).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Descriptors kept out of the pool, beyond those open when it is sized and those the
/// databases' file caches may come to hold: 16 for the listeners and runtimes started after
/// the count, 32 in each database for the files a compaction opens outside the cache (its
/// input tables, up to 20 level-0 runs and the overlapping tables below, and its outputs), and
/// 16 for flushes, journal rotations and the file an `accept()` takes before it is refused.
pub const KEPT_FOR_MOMENTS: u64 = 96;
/// The smallest pool a node starts with: its peers and a few RPC clients.
pub const MIN_CONNECTIONS: u64 = 16;

/// The open-files limit cannot hold the node's files and a useful number of connections.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "the open-files limit {limit} leaves {available} descriptors for connections once the \
     {open} open files and {kept} kept for storage are set aside; at least {MIN_CONNECTIONS} \
     are needed: raise the limit to {needed} or more"
)]
pub struct TooFewDescriptors {
    /// `RLIMIT_NOFILE` in force.
    pub limit: u64,
    /// Descriptors open when the pool was sized.
    pub open: u64,
    /// Kept for storage (file caches and [`KEPT_FOR_MOMENTS`]).
    pub kept: u64,
    /// What was left for connections.
    pub available: u64,
    /// The smallest limit that would do.
    pub needed: u64,
}

/// Why this process's pool could not be sized.
#[derive(Debug, thiserror::Error)]
pub enum DescriptorsError {
    /// The limit is too small.
    #[error(transparent)]
    TooFew(#[from] TooFewDescriptors),
    /// The open descriptors could not be counted.
    #[error("counting the open descriptors in /proc/self/fd: {0}")]
    Count(std::io::Error),
}

/// The pool of descriptors connections may hold (cheap to clone: one pool).
#[derive(Clone, Debug)]
pub struct Descriptors {
    pool: Arc<Semaphore>,
    size: usize,
    /// Who takes from it, for the refusals' log line.
    name: &'static str,
    refusals: Arc<Refusals>,
}

/// Connections a pool refused, and when that was last logged.
#[derive(Debug, Default)]
struct Refusals {
    count: AtomicU64,
    logged: Mutex<Option<Instant>>,
}

impl PartialEq for Descriptors {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.pool, &other.pool)
    }
}

impl Default for Descriptors {
    /// A pool that never runs dry (for code whose process sizes no pool, such as tests).
    fn default() -> Self {
        Descriptors::pool(Semaphore::MAX_PERMITS, "connections")
    }
}

impl Descriptors {
    /// A pool of `size` descriptors for `name` (the log's word for who takes from it).
    pub fn pool(size: usize, name: &'static str) -> Self {
        let size = size.min(Semaphore::MAX_PERMITS);
        Descriptors {
            pool: Arc::new(Semaphore::new(size)),
            size,
            name,
            refusals: Arc::default(),
        }
    }

    /// The pool under the open-files `limit` with `open` descriptors open now and the
    /// databases' file caches holding at most `cached` more: all the rest, less
    /// [`KEPT_FOR_MOMENTS`].
    pub fn within_limit(limit: u64, open: u64, cached: u64) -> Result<Self, TooFewDescriptors> {
        let kept = cached.saturating_add(KEPT_FOR_MOMENTS);
        let available = limit.saturating_sub(open).saturating_sub(kept);
        if available < MIN_CONNECTIONS {
            return Err(TooFewDescriptors {
                limit,
                open,
                kept,
                available,
                needed: open.saturating_add(kept).saturating_add(MIN_CONNECTIONS),
            });
        }
        let size = usize::try_from(available).unwrap_or(usize::MAX);
        Ok(Descriptors::pool(size, "connections"))
    }

    /// Two pools out of this one's descriptors: `peers` of them (at most half) for validators'
    /// connections, the rest for the node's servers, so that clients of the servers, who
    /// need no key, can never hold the descriptors a validator needs to connect.
    pub fn split(&self, peers: usize) -> (Descriptors, Descriptors) {
        let peers = peers.min(self.size / 2);
        (
            Descriptors::pool(peers, "peer connections"),
            Descriptors::pool(self.size - peers, "RPC and metrics clients"),
        )
    }

    /// This process's pools under the open-files `limit` ([`Descriptors::within_limit`],
    /// counting the descriptors open now), split ([`Descriptors::split`]) and logged.
    pub fn for_this_process(
        limit: u64,
        cached: u64,
        peers: usize,
    ) -> Result<(Descriptors, Descriptors), DescriptorsError> {
        let open = open_now().map_err(DescriptorsError::Count)?;
        let (peers, servers) = Descriptors::within_limit(limit, open, cached)?.split(peers);
        tracing::info!(
            limit,
            open,
            peers = peers.size(),
            servers = servers.size(),
            "descriptors for connections"
        );
        Ok((peers, servers))
    }

    /// One descriptor for a connection, to hold while it is open; none if the pool is empty
    /// (counted, and logged once a second at most).
    pub fn take(&self) -> Option<OwnedSemaphorePermit> {
        let taken = self.pool.clone().try_acquire_owned().ok();
        if taken.is_none() {
            let refused = self.refusals.count.fetch_add(1, Ordering::Relaxed) + 1;
            let mut logged = self
                .refusals
                .logged
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if logged.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
                *logged = Some(Instant::now());
                tracing::warn!(
                    refused,
                    pool = self.size,
                    "refused {}: every descriptor of their pool is held, the rest are kept for storage",
                    self.name
                );
            }
        }
        taken
    }

    /// Connections refused for want of a descriptor so far.
    pub fn refused(&self) -> u64 {
        self.refusals.count.load(Ordering::Relaxed)
    }

    /// Descriptors in the pool.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Descriptors not held now.
    pub fn available(&self) -> usize {
        self.pool.available_permits()
    }
}

/// Descriptors this process has open (those `/proc/self/fd` lists, less the one reading it).
pub fn open_now() -> std::io::Result<u64> {
    let listed = std::fs::read_dir("/proc/self/fd")?.count();
    Ok(u64::try_from(listed.saturating_sub(1)).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_what_the_limit_leaves_after_the_open_and_kept_files() {
        let pool = Descriptors::within_limit(4096, 40, 128).unwrap();
        assert_eq!(pool.size(), 4096 - 40 - 128 - KEPT_FOR_MOMENTS as usize);
        let held: Vec<_> = (0..pool.size()).map(|_| pool.take().unwrap()).collect();
        assert!(pool.take().is_none(), "a pool gives no more than its size");
        assert_eq!(pool.refused(), 1);
        drop(held);
        assert_eq!(pool.available(), pool.size());
    }

    #[test]
    fn the_servers_clients_cannot_take_the_peers_share() {
        let (peers, servers) = Descriptors::pool(100, "all").split(30);
        assert_eq!((peers.size(), servers.size()), (30, 70));
        let clients: Vec<_> = std::iter::from_fn(|| servers.take()).collect();
        assert_eq!(clients.len(), 70);
        assert_eq!(peers.available(), 30);
        let (peers, servers) = Descriptors::pool(100, "all").split(400);
        assert_eq!(
            (peers.size(), servers.size()),
            (50, 50),
            "peers get half at most"
        );
    }

    #[test]
    fn a_limit_too_small_for_the_node_is_an_error_naming_what_would_do() {
        let e = Descriptors::within_limit(64, 30, 16).unwrap_err();
        assert_eq!(e.needed, 30 + 16 + KEPT_FOR_MOMENTS + MIN_CONNECTIONS);
        assert_eq!(e.available, 0);
        assert!(Descriptors::within_limit(e.needed, 30, 16).is_ok());
        assert!(Descriptors::within_limit(e.needed - 1, 30, 16).is_err());
        assert!(Descriptors::within_limit(u64::MAX, u64::MAX, u64::MAX).is_err());
    }

    #[test]
    fn the_open_descriptors_are_counted() {
        // Other tests open and close descriptors meanwhile: a margin far below 200.
        let before = open_now().unwrap();
        let files: Vec<_> = (0..200)
            .map(|_| std::fs::File::open("/proc/self/status").unwrap())
            .collect();
        let during = open_now().unwrap();
        drop(files);
        assert!(during >= before + 150, "{before} then {during}");
        assert!(open_now().unwrap() + 150 <= during);
    }
}
