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
