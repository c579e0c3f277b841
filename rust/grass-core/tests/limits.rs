//! Resource limits: buffers sized by the arguments are allocated fallibly (an error naming the
//! buffer and its size, never an abort), and long calls stop when their cancellation flag is set.
use grass_core::{cancel, Dense, DenseKind, Error, Grass, Mask, Projection, Projector, Sjlt, Srht};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn is_oom<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(e @ Error::OutOfMemory { .. }) => e.to_string(),
        other => panic!("expected OutOfMemory, got {other:?}"),
    }
}

#[test]
fn huge_constructions_are_errors_not_aborts() {
    let m = is_oom(Mask::new(1 << 62, 1 << 58, 0, false));
    assert_eq!(m, "cannot allocate 2^58 mask indices (2 EiB)");
    let g = is_oom(Grass::new(1 << 62, 16, 1 << 50, 1, 0));
    assert!(g.contains("2^50 mask indices"), "{g}");
    let s = is_oom(Srht::new(1 << 62, 16, 0));
    assert!(s.contains("SRHT sign words"), "{s}");
    let s = is_oom(grass_core::mask::sample(usize::MAX, usize::MAX / 2, 0));
    assert!(s.contains("mask indices"), "{s}");
}

fn all_projectors() -> Vec<Projector> {
    vec![
        Sjlt::new(3000, 64, 2, 1).unwrap().into(),
        Mask::new(3000, 64, 1, true).unwrap().into(),
        Grass::new(3000, 64, 500, 2, 1).unwrap().into(),
        Dense::new(DenseKind::Gaussian, 3000, 64, 1).unwrap().into(),
        Srht::new(3000, 64, 1).unwrap().into(),
    ]
}

#[test]
fn a_set_flag_cancels_every_projector() {
    let flag = Arc::new(AtomicBool::new(true));
    for p in all_projectors() {
        for batch in [1, 2, 5, 40] {
            let x = vec![0.5f32; batch * p.in_dim()];
            let mut out = vec![0f32; batch * p.out_dim()];
            let r = cancel::with_flag(&flag, || p.project(&x, batch, &mut out));
            assert_eq!(
                r,
                Err(Error::Cancelled),
                "{} project, batch {batch}",
                p.kind_name()
            );
            let mut back = vec![0f32; batch * p.in_dim()];
            let r = cancel::with_flag(&flag, || p.transpose(&out, batch, &mut back));
            assert_eq!(
                r,
                Err(Error::Cancelled),
                "{} transpose, batch {batch}",
                p.kind_name()
            );
        }
        // Outside the scope (or with the flag clear) the same calls succeed.
        let x = vec![0.5f32; 3 * p.in_dim()];
        let mut out = vec![0f32; 3 * p.out_dim()];
        assert!(p.project(&x, 3, &mut out).is_ok());
    }
    let r = cancel::with_flag(&flag, || Mask::new(1 << 40, 1 << 17, 0, false));
    assert!(matches!(r, Err(Error::Cancelled)), "{r:?}");
}

#[test]
fn a_flag_set_mid_call_stops_it_quickly() {
    // Far more work than the test allows (about a minute even in release builds).
    let d = Dense::new(DenseKind::Gaussian, 1 << 20, 4096, 0).unwrap();
    let batch = 64;
    let x = vec![0.25f32; batch << 20];
    let mut out = vec![0f32; batch * 4096];
    let flag = Arc::new(AtomicBool::new(false));
    let setter = {
        let flag = Arc::clone(&flag);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            flag.store(true, Ordering::Relaxed);
            Instant::now()
        })
    };
    let r = cancel::with_flag(&flag, || d.project(&x, batch, &mut out));
    let set_at = setter.join().unwrap();
    assert_eq!(r, Err(Error::Cancelled));
    let late = set_at.elapsed();
    assert!(
        late < Duration::from_secs(2),
        "stopped {late:?} after the flag"
    );
}

mod fuzz {
    //! Property tests over the sizes users pass to the constructors: every combination either
    //! builds a projector that projects and transposes correctly-sized buffers, or returns an
    //! error; none panics or aborts. Sizes are either small (built and run) or beyond the address
    //! space, where any allocation fails whatever the overcommit policy (they must fail fallibly
    //! or build without allocating); never in between (a real multi-GiB allocation would only
    //! test the machine).
    use super::*;
    use proptest::prelude::*;

    fn build(
        kind: u8,
        in_dim: usize,
        out_dim: usize,
        mask_dim: usize,
        c: usize,
        seed: u64,
    ) -> grass_core::Result<Projector> {
        Ok(match kind % 5 {
            0 => Sjlt::new(in_dim, out_dim, c, seed)?.into(),
            1 => Mask::new(in_dim, out_dim, seed, c.is_multiple_of(2))?.into(),
            2 => Grass::new(in_dim, out_dim, mask_dim, c, seed)?.into(),
            3 => Dense::new(DenseKind::Rademacher, in_dim, out_dim, seed)?.into(),
            _ => Srht::new(in_dim, out_dim, seed)?.into(),
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn small_sizes_build_and_run_or_fail_cleanly(
            kind in 0u8..5, in_dim in 0usize..600, out_dim in 0usize..80, mask_dim in 0usize..700,
            c in 0usize..6, seed in any::<u64>(), batch in 1usize..4,
        ) {
            match build(kind, in_dim, out_dim, mask_dim, c, seed) {
                Ok(p) => {
                    prop_assert_eq!((p.in_dim(), p.out_dim()), (in_dim, out_dim));
                    let x = vec![1.0f32; batch * in_dim];
                    let mut out = vec![f32::NAN; batch * out_dim];
                    prop_assert!(p.project(&x, batch, &mut out).is_ok());
                    prop_assert!(out.iter().all(|v| v.is_finite()));
                    let mut back = vec![f32::NAN; batch * in_dim];
                    prop_assert!(p.transpose(&out, batch, &mut back).is_ok());
                    prop_assert!(back.iter().all(|v| v.is_finite()));
                    // a wrongly sized output is an error, not a panic
                    let mut short = vec![0f32; (batch * out_dim).saturating_sub(1)];
                    prop_assert!(p.project(&x, batch, &mut short).is_err() || out_dim == 0);
                }
                Err(e) => prop_assert!(
                    matches!(e, Error::InvalidArgument { .. } | Error::Shape { .. }),
                    "unexpected error {e:?}"
                ),
            }
        }

        #[test]
        fn sizes_beyond_memory_fail_fallibly(
            kind in 0u8..5, in_shift in 51u32..63, out_shift in 45u32..62, mask_shift in 45u32..62,
            c in 1usize..5, seed in any::<u64>(),
        ) {
            let in_dim = 1usize << in_shift;
            let (out_dim, mask_dim) = (1usize << out_shift.min(in_shift), 1usize << mask_shift.min(in_shift));
            // Ok is fine when nothing is allocated up front (SJLT/Dense generate on the fly);
            // an allocation beyond memory must come back as an error.
            if let Err(e) = build(kind, in_dim, out_dim, mask_dim, c, seed) {
                prop_assert!(
                    matches!(e, Error::OutOfMemory { .. } | Error::InvalidArgument { .. } | Error::TooLarge { .. }),
                    "unexpected error {e:?}"
                );
            }
        }
    }
}
