//! What the attested edge counts for the node's metrics: handshakes refused by the check that
//! failed, and how long the admitted ones took. Connection tasks record into it from the edge
//! runtime; the driver reads a copy when it is scraped.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// A Prometheus-style histogram: observations counted per upper bound (not cumulative), their
/// sum and number.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Upper bounds, ascending; an observation above the last is counted in `+Inf` only.
    pub bounds: Vec<f64>,
    /// Observations per bucket (`counts[i]`: at most `bounds[i]`, above `bounds[i-1]`), then
    /// one more for those above every bound.
    pub counts: Vec<u64>,
    /// Sum of the observations.
    pub sum: f64,
    /// Number of observations.
    pub count: u64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &[f64]) -> Self {
        Histogram {
            bounds: bounds.to_vec(),
            counts: vec![0; bounds.len() + 1],
            sum: 0.0,
            count: 0,
        }
    }

    /// Counts one observation.
    pub fn observe(&mut self, value: f64) {
        let bucket = self
            .bounds
            .iter()
            .position(|b| value <= *b)
            .unwrap_or(self.bounds.len());
        if let Some(c) = self.counts.get_mut(bucket) {
            *c += 1;
        }
        self.sum += value;
        self.count += 1;
    }
}

/// Bounds of the handshake-time histogram, seconds: a loopback handshake with simulated
/// evidence takes milliseconds; one with AMD certificates over a WAN tens to hundreds.
pub const HANDSHAKE_SECONDS: [f64; 9] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// The label of a handshake abandoned after [`crate::transport::HANDSHAKE_TIMEOUT`].
pub const TIMED_OUT: &str = "timed_out";
/// The label of a handshake that failed below the attestation checks (TLS, I/O).
pub const TLS: &str = "tls";

/// Handshake counts shared by the connection tasks.
#[derive(Debug)]
pub struct HandshakeStats {
    inner: Mutex<Inner>,
}

/// Which side began a handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    /// A peer connected to us (where an attacker on the network knocks).
    Inbound,
    /// We dialled a peer.
    Outbound,
}

impl Direction {
    /// Its metric label.
    pub fn label(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

#[derive(Debug)]
struct Inner {
    refused: BTreeMap<(Direction, &'static str), u64>,
    admitted: Histogram,
}

/// A copy of what [`HandshakeStats`] counted.
#[derive(Clone, Debug, PartialEq)]
pub struct HandshakeSnapshot {
    /// Handshakes refused, by direction and the check that failed (`bulwark_net`'s check
    /// names, or [`TIMED_OUT`] or [`TLS`]).
    pub refused: BTreeMap<(Direction, &'static str), u64>,
    /// Times of the handshakes that admitted a peer, seconds.
    pub admitted: Histogram,
}

impl Default for HandshakeStats {
    fn default() -> Self {
        HandshakeStats {
            inner: Mutex::new(Inner {
                refused: BTreeMap::new(),
                admitted: Histogram::new(&HANDSHAKE_SECONDS),
            }),
        }
    }
}

impl HandshakeStats {
    /// Counts a refusal of a `direction` handshake by `check`.
    pub fn refused(&self, direction: Direction, check: &'static str) {
        // A poisoned lock (a panic in another task mid-update) only costs a count.
        if let Ok(mut inner) = self.inner.lock() {
            *inner.refused.entry((direction, check)).or_default() += 1;
        }
    }

    /// Counts a handshake that admitted its peer after `took`.
    pub fn admitted(&self, took: Duration) {
        if let Ok(mut inner) = self.inner.lock() {
            inner.admitted.observe(took.as_secs_f64());
        }
    }

    /// What was counted so far.
    pub fn snapshot(&self) -> HandshakeSnapshot {
        match self.inner.lock() {
            Ok(inner) => HandshakeSnapshot {
                refused: inner.refused.clone(),
                admitted: inner.admitted.clone(),
            },
            Err(_) => HandshakeSnapshot {
                refused: BTreeMap::new(),
                admitted: Histogram::new(&HANDSHAKE_SECONDS),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        let mut h = Histogram::new(&[1.0, 2.0]);
        for v in [0.5, 1.0, 1.5, 2.0, 7.0] {
            h.observe(v);
        }
        assert_eq!(h.counts, vec![2, 2, 1]);
        assert_eq!(h.count, 5);
        assert!((h.sum - 12.0).abs() < 1e-9);
    }

    #[test]
    fn refusals_are_counted_by_check() {
        let s = HandshakeStats::default();
        s.refused(Direction::Inbound, "measurement");
        s.refused(Direction::Inbound, "measurement");
        s.refused(Direction::Outbound, TIMED_OUT);
        s.admitted(Duration::from_millis(7));
        let snap = s.snapshot();
        assert_eq!(
            snap.refused.get(&(Direction::Inbound, "measurement")),
            Some(&2)
        );
        assert_eq!(
            snap.refused.get(&(Direction::Outbound, TIMED_OUT)),
            Some(&1)
        );
        assert_eq!(snap.refused.get(&(Direction::Inbound, TIMED_OUT)), None);
        assert_eq!(snap.admitted.count, 1);
        assert_eq!(snap.admitted.counts[1], 1);
    }
}
