//! The contract's float32 Gaussian: Box–Muller from two 24-bit uniforms with a logarithm and a
//! sine/cosine that are part of the contract (fixed polynomials, one IEEE float32 operation at a
//! time, no fused multiply-add), so every platform — CPU, GPU, the Python oracle — computes the
//! same bits, and the loops over many pairs vectorize (no library calls, no branches).
//!
//! See docs/CONTRACT.md §5.

/// `ln 2` split so that `e · LN2_HI` is exact for `|e| < 2⁸`.
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const SQRT_2: f32 = std::f32::consts::SQRT_2;
const FRAC_PI_2: f32 = std::f32::consts::FRAC_PI_2;

/// `ln u` for a positive normal `u` (the contract's: about 1 ulp).
///
/// `u = m·2ᵉ` with `m ∈ (√½, √2]`, `f = m − 1` (exact), `s = f/(2 + f)`, `z = s²`,
/// `ln m = 2s + 2s·z·(⅓ + z(⅕ + z(⅐ + z/9)))` (the atanh series, `|s| < 0.172`), and
/// `ln u = e·LN2_HI + (e·LN2_LO + ln m)`.
#[inline(always)]
pub fn ln(u: f32) -> f32 {
    let bits = u.to_bits();
    let e0 = ((bits >> 23) & 0xFF) as i32 - 127;
    let m0 = f32::from_bits((bits & 0x007F_FFFF) | 0x3F80_0000);
    let big = m0 > SQRT_2;
    let m = if big { m0 * 0.5 } else { m0 };
    let e = (e0 + i32::from(big)) as f32;
    let f = m - 1.0;
    let s = f / (2.0 + f);
    let z = s * s;
    let p = 1.0 / 3.0 + z * (1.0 / 5.0 + z * (1.0 / 7.0 + z * (1.0 / 9.0)));
    let two_s = s + s;
    let ln_m = two_s + two_s * z * p;
    e * LN2_HI + (e * LN2_LO + ln_m)
}

/// `(cos 2πu, sin 2πu)` for `u ∈ [0, 1)` (the contract's: about 1 ulp).
///
/// `t = 4u`, `q = ⌊t + ½⌋`, `x = (t − q)·π/2 ∈ [−π/4, π/4]` (`t − q` exact), Taylor polynomials
/// of `sin x` (to `x⁹`) and `cos x` (to `x¹⁰`) in Horner form, then the quadrant `q mod 4`.
#[inline(always)]
pub fn cos_sin_turn(u: f32) -> (f32, f32) {
    let t = u * 4.0;
    let q = (t + 0.5).floor();
    let x = (t - q) * FRAC_PI_2;
    let x2 = x * x;
    let s = x + x
        * x2
        * (-1.0 / 6.0 + x2 * (1.0 / 120.0 + x2 * (-1.0 / 5040.0 + x2 * (1.0 / 362_880.0))));
    let c = 1.0
        + x2 * (-0.5
            + x2 * (1.0 / 24.0
                + x2 * (-1.0 / 720.0 + x2 * (1.0 / 40_320.0 + x2 * (-1.0 / 3_628_800.0)))));
    // quadrant q mod 4 → (c, s), (−s, c), (−c, −s), (s, −c), branch-free (sign-bit flips)
    // q ∈ {0, …, 4} is an integer-valued float: adding 2²³ puts it in the low mantissa bits (exact;
    // a float → int conversion would not vectorize here)
    let qi = (q + 8_388_608.0).to_bits();
    let (a, b) = if qi & 1 == 0 { (c, s) } else { (s, c) };
    (
        f32::from_bits(a.to_bits() ^ (((qi + 1) & 2) << 30)),
        f32::from_bits(b.to_bits() ^ ((qi & 2) << 30)),
    )
}

/// The Box–Muller pair `(z₀, z₁)` of the 64-bit hash `h`, times `inv`: `u₁ = ((h >> 40) + ½)·2⁻²⁴`,
/// `u₂ = ((h >> 16) & 0xFFFFFF)·2⁻²⁴`, `ρ = √(−2 ln u₁)`, `z₀ = ρ·cos 2πu₂·inv`, `z₁ = ρ·sin 2πu₂·inv`.
#[inline(always)]
pub fn pair(h: u64, inv: f32) -> (f32, f32) {
    let u1 = ((h >> 40) as f32 + 0.5) * (1.0 / 16_777_216.0);
    let u2 = ((h >> 16) & 0x00FF_FFFF) as f32 * (1.0 / 16_777_216.0);
    let r = (-2.0 * ln(u1)).sqrt();
    let (c, s) = cos_sin_turn(u2);
    (r * c * inv, r * s * inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_is_accurate_on_the_uniforms_box_muller_uses() {
        let mut worst = 0f64;
        for i in (0u32..1 << 24).step_by(7).chain([0, 1, 2, (1 << 24) - 1]) {
            let u = (i as f32 + 0.5) * (1.0 / 16_777_216.0);
            let want = f64::from(u).ln();
            let err = (f64::from(ln(u)) - want).abs() / want.abs().max(1e-30);
            worst = worst.max(err);
        }
        assert!(
            worst < 3.0 * f64::from(f32::EPSILON),
            "relative error {worst:e}"
        );
        assert_eq!(ln(1.0), 0.0);
    }

    #[test]
    fn cos_sin_are_accurate_over_the_turn() {
        let mut worst = 0f64;
        for i in (0u32..1 << 24)
            .step_by(5)
            .chain([0, 1 << 22, 1 << 23, 3 << 22, (1 << 24) - 1])
        {
            let u = i as f32 * (1.0 / 16_777_216.0);
            let a = 2.0 * std::f64::consts::PI * f64::from(u);
            let (c, s) = cos_sin_turn(u);
            worst = worst
                .max((f64::from(c) - a.cos()).abs())
                .max((f64::from(s) - a.sin()).abs());
        }
        assert!(
            worst < 2.0 * f64::from(f32::EPSILON),
            "absolute error {worst:e}"
        );
        assert_eq!(cos_sin_turn(0.0), (1.0, 0.0));
    }

    #[test]
    fn pair_matches_libm_box_muller_closely() {
        for q in 0..10_000u64 {
            let h = crate::hash::hash(12345, q);
            let (z0, z1) = pair(h, 1.0);
            // the uniforms as the contract rounds them to f32, then exact math in f64
            let u1 = f64::from(((h >> 40) as f32 + 0.5) * (1.0 / 16_777_216.0));
            let u2 = f64::from(((h >> 16) & 0x00FF_FFFF) as f32 * (1.0 / 16_777_216.0));
            let r = (-2.0 * u1.ln()).sqrt();
            let a = 2.0 * std::f64::consts::PI * u2;
            assert!(
                (f64::from(z0) - r * a.cos()).abs() < 1e-5 * (1.0 + r),
                "{q}"
            );
            assert!((f64::from(z1) - r * a.sin()).abs() < 1e-5 * (1.0 + r));
        }
    }
}
