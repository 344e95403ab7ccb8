//! Seeded pseudo-random kill points: the same sequence on every machine, replayed by NODEOPS_FAULT_SEED.

use super::*;

/// xorshift64: small, seeded, the same sequence on every machine.
pub(crate) struct XorShift64(pub(crate) u64);

impl XorShift64 {
    /// `NODEOPS_FAULT_SEED` (decimal or 0x-hex), else the fixed default.
    pub(crate) fn from_env() -> (u64, Self) {
        let seed = std::env::var("NODEOPS_FAULT_SEED")
            .ok()
            .and_then(|s| match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16).ok(),
                None => s.parse().ok(),
            })
            .filter(|s| *s != 0)
            .unwrap_or(DEFAULT_SEED);
        (seed, Self(seed))
    }

    pub(crate) fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A duration uniformly in [lo, hi] milliseconds.
    pub(crate) fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo + 1))
    }
}
