//! How far the peers are, from what they say: each peer's heights in maps bounded by peer
//! count, and the lower median over them (a peer may lie; most do not).

use std::collections::BTreeMap;

/// Most peers whose heights are noted.
pub const MAX_NOTED_PEERS: usize = 1_024;

/// Notes `height` for `peer` in `heights`, merged with what was there by `merge` (the last
/// report, or the highest seen); peers past [`MAX_NOTED_PEERS`] are not noted.
pub fn note(heights: &mut BTreeMap<u64, u64>, peer: u64, height: u64, merge: fn(u64, u64) -> u64) {
    if heights.len() < MAX_NOTED_PEERS || heights.contains_key(&peer) {
        let noted = heights.entry(peer).or_insert(height);
        *noted = merge(*noted, height);
    }
}

/// The lower median of `heights` (`None` if there are none).
pub fn lower_median(mut heights: Vec<u64>) -> Option<u64> {
    heights.sort_unstable();
    heights.get(heights.len().saturating_sub(1) / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lower_median_is_not_moved_by_one_high_claim_among_three() {
        assert_eq!(lower_median(vec![]), None);
        assert_eq!(lower_median(vec![7]), Some(7));
        assert_eq!(lower_median(vec![5, u64::MAX, 5]), Some(5));
        assert_eq!(lower_median(vec![9, 5]), Some(5));
        assert_eq!(lower_median(vec![9, 5, 9, 1]), Some(5));
    }

    #[test]
    fn noting_merges_and_stops_at_the_peer_bound() {
        let mut m = BTreeMap::new();
        note(&mut m, 1, 10, u64::max);
        note(&mut m, 1, 4, u64::max);
        assert_eq!(m[&1], 10);
        note(&mut m, 1, 4, |_, new| new);
        assert_eq!(m[&1], 4);
        for p in 2..=MAX_NOTED_PEERS as u64 + 5 {
            note(&mut m, p, 1, u64::max);
        }
        assert_eq!(m.len(), MAX_NOTED_PEERS);
        note(&mut m, 1, 6, |_, new| new);
        assert_eq!(m[&1], 6, "a noted peer is still updated at the bound");
    }
}
