//! Seeded randomness: xorshift64 (the generator `gms_sim` uses), and keyed draws.
//!
//! A plan is drawn from one sequential stream, before anything runs, so that the same seed
//! gives the same schedule whatever the protocol does. Network and final-check decisions
//! are keyed instead: each one seeds a short-lived generator from the run's seed and the
//! decision's identity (link, per-link count; checker, suspect, per-pair count). `Gms` keeps
//! hash maps whose iteration order differs from process to process, so the order of its
//! outputs within one call may differ; keyed draws make every decision independent of that
//! order, and a seed replays exactly.

use std::ops::Range;
use std::time::Duration;

/// A xorshift64 generator.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator whose state is `seed` (made odd: xorshift never leaves zero).
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    /// A generator for one decision, from the run's seed and the decision's identity.
    pub fn keyed(seed: u64, key: &[u64]) -> Self {
        let mut state = splitmix(seed);
        for part in key {
            state = splitmix(state ^ part);
        }
        Rng::new(state)
    }

    /// The next number of the sequence.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// An index into a slice of `len` (> 0) elements.
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// True with probability `p` (0..=1).
    pub fn chance(&mut self, p: f64) -> bool {
        // 53 bits: the precision of an f64 in 0..1.
        ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// A duration in `range` (its start if empty), to the nanosecond.
    pub fn within(&mut self, range: &Range<Duration>) -> Duration {
        let span = range.end.saturating_sub(range.start).as_nanos() as u64;
        if span == 0 {
            return range.start;
        }
        range.start + Duration::from_nanos(self.below(span))
    }

    /// `count` distinct indices of `0..len`, in random order.
    pub fn sample(&mut self, len: usize, count: usize) -> Vec<usize> {
        let mut pool: Vec<usize> = (0..len).collect();
        let mut out = Vec::new();
        while out.len() < count && !pool.is_empty() {
            let pick = self.index(pool.len());
            out.push(pool.swap_remove(pick));
        }
        out
    }
}

/// SplitMix64's finaliser: spreads the seeds of neighbouring runs (1, 2, 3, ...) apart.
fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
