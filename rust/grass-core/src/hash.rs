//! The single source of randomness: a counter-based SplitMix64 hash.
//!
//! Every projector derives a 64-bit *stream key* from `(seed, stream)` with [`stream_key`] and
//! draws its `n`-th random word as [`hash`]`(key, n)`. The same functions exist in CUDA C
//! (`kernels/hash.cuh`); see `docs/CONTRACT.md` for the full seed → matrix contract.

/// The SplitMix64 increment, ⌊2⁶⁴/φ⌋.
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Independent random streams: one per kind of random choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u64)]
pub enum Stream {
    /// SJLT buckets and signs.
    Sjlt = 1,
    /// Mask coordinates.
    Mask = 2,
    /// Dense Gaussian entries.
    Gaussian = 3,
    /// Dense Rademacher entries.
    Rademacher = 4,
    /// SRHT signs and rows.
    Srht = 5,
}

/// SplitMix64's finalizer (Stafford's Mix13): a bijection on `u64` with full avalanche.
#[inline(always)]
pub const fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The key of one random stream of a seed: `mix64(seed ^ (stream · GOLDEN))`.
#[inline]
pub const fn stream_key(seed: u64, stream: Stream) -> u64 {
    mix64(seed ^ (stream as u64).wrapping_mul(GOLDEN))
}

/// The `counter`-th random word of a stream: `mix64(key + (counter + 1) · GOLDEN)`,
/// i.e. the `counter`-th output of a SplitMix64 generator started at `key`.
#[inline(always)]
pub const fn hash(key: u64, counter: u64) -> u64 {
    mix64(key.wrapping_add(counter.wrapping_add(1).wrapping_mul(GOLDEN)))
}

/// Maps a random word to `0..n` by the high 64 bits of the 128-bit product `h · n`
/// (Lemire's multiply-shift; bias below `n / 2⁶⁴`).
#[inline(always)]
pub const fn below(h: u64, n: u64) -> u64 {
    ((h as u128 * n as u128) >> 64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_known_answers() {
        // SplitMix64 seeded with 0: the published first outputs.
        assert_eq!(hash(0, 0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(hash(0, 1), 0x6E78_9E6A_A1B9_65F4);
        assert_eq!(hash(0, 2), 0x06C4_5D18_8009_454F);
    }

    #[test]
    fn below_is_in_range() {
        for n in [1u64, 2, 3, 1000, u64::MAX] {
            for c in 0..100 {
                assert!(below(hash(7, c), n) < n);
            }
        }
    }
}
