//! grass-rs's own rayon pool: sized by `GRASS_NUM_THREADS` (default: available cores),
//! resizable with [`set_num_threads`] (between 1 and [`max_threads`]), and fork-safe (a child
//! process builds a fresh pool instead of waiting on threads that did not survive `fork`); and
//! [`SyncPtr`], the shared output of workers writing disjoint elements.
use crate::error::{invalid, Result};
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::sync::{Arc, LazyLock, RwLock};

struct PoolState {
    pool: Arc<ThreadPool>,
    threads: usize,
    pid: u32,
}

static POOL: LazyLock<RwLock<PoolState>> = LazyLock::new(|| RwLock::new(build(default_threads())));

fn available() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The most threads the pool may have: `min(4 × available cores, 1024)` (more only adds
/// scheduling overhead, and each thread costs a stack).
pub fn max_threads() -> usize {
    (4 * available()).min(1024)
}

/// `GRASS_NUM_THREADS` when it is an integer in `1..=max_threads()` (clamped above), else the
/// number of available cores.
fn default_threads() -> usize {
    std::env::var("GRASS_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .map_or_else(available, |n| n.min(max_threads()))
}

fn build(threads: usize) -> PoolState {
    let pool = ThreadPoolBuilder::new()
        .num_threads(threads)
        .thread_name(|i| format!("grass-rs-{i}"))
        .build()
        .expect("building a rayon thread pool");
    PoolState {
        pool: Arc::new(pool),
        threads,
        pid: std::process::id(),
    }
}

/// The pool to run work on, rebuilt if this process was forked from the one that built it.
fn pool() -> Arc<ThreadPool> {
    {
        let state = POOL
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.pid == std::process::id() {
            return Arc::clone(&state.pool);
        }
    }
    let mut state = POOL
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if state.pid != std::process::id() {
        // The old pool's threads do not exist in this (forked) process: leak it rather than
        // join threads that will never answer.
        let threads = state.threads;
        std::mem::forget(std::mem::replace(&mut *state, build(threads)));
    }
    Arc::clone(&state.pool)
}

/// Runs `f` inside grass-rs's pool.
pub fn install<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    pool().install(f)
}

/// Checks a thread count: `1 ≤ n ≤ max_threads()`.
///
/// # Errors
/// `InvalidArgument` naming `n` otherwise.
pub fn check_num_threads(n: i128) -> Result<usize> {
    let max = max_threads();
    if n < 1 {
        return Err(invalid("n", format!("must be ≥ 1, got {n}")));
    }
    if n > max as i128 {
        return Err(invalid(
            "n",
            format!(
                "must be ≤ {max} (4 × the {} available cores, at most 1024), got {n}",
                available()
            ),
        ));
    }
    Ok(n as usize)
}

/// Sets the number of worker threads, `1 ≤ n ≤ max_threads()`; the old pool's threads exit
/// once their current work is done.
///
/// # Errors
/// `InvalidArgument` when `n` is out of range.
pub fn set_num_threads(n: usize) -> Result<()> {
    let n = check_num_threads(n as i128)?;
    let mut state = POOL
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    *state = build(n);
    Ok(())
}

/// The number of worker threads.
pub fn get_num_threads() -> usize {
    let state = POOL
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    state.threads
}

/// A mutable output shared by parallel workers that write disjoint elements.
pub(crate) struct SyncPtr<A> {
    ptr: *mut A,
    len: usize,
}

// SAFETY: `SyncPtr` is only built from a `&mut [A]` that outlives the parallel region using it,
// and its users write each index from exactly one worker (they own disjoint blocks), so sharing
// the pointer across threads creates no data race.
unsafe impl<A: Send> Sync for SyncPtr<A> {}
// SAFETY: as above.
unsafe impl<A: Send> Send for SyncPtr<A> {}

impl<A> SyncPtr<A> {
    pub(crate) fn new(out: &mut [A]) -> Self {
        Self {
            ptr: out.as_mut_ptr(),
            len: out.len(),
        }
    }

    /// Writes element `i` (each index by exactly one worker; see the `Sync` impl).
    #[inline(always)]
    pub(crate) fn write(&self, i: usize, v: A) {
        assert!(i < self.len);
        // SAFETY: `i < len` (checked), the slice is alive for the region, and no other worker
        // writes or reads index `i` concurrently.
        unsafe { self.ptr.add(i).write(v) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_counts_are_bounded() {
        assert!(check_num_threads(0).is_err());
        let e = check_num_threads(-1).unwrap_err().to_string();
        assert!(e.contains("`n`") && e.contains("≥ 1, got -1"), "{e}");
        assert!(check_num_threads(max_threads() as i128 + 1).is_err());
        assert!(check_num_threads(100_000).is_err());
        assert_eq!(check_num_threads(1), Ok(1));
        assert!(max_threads() >= 4 && max_threads() <= 1024);
    }
}
