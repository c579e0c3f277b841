//! Where grass-rs's parallel work runs, and how many threads it uses.
//!
//! Every kernel fans out through [`try_for_each`] (or its slice helpers [`try_chunks_mut`] and
//! [`try_parts_mut`]): tasks `0..n` whose results depend only on their index. They run on
//! - **the OpenMP team of torch's libgomp** once the Python layer has called
//!   [`crate::openmp::attach`] (the default under torch): torch's spinning OpenMP workers take
//!   grass-rs's tasks instead of competing with a second pool for the cores; or
//! - **grass-rs's own rayon pool** otherwise (pure Rust, no OpenMP runtime loaded, a forked child,
//!   or `set_thread_backend("rayon")`). The pool is fork-safe: a child process builds a fresh one
//!   instead of waiting on threads that did not survive `fork`.
//!
//! The thread count is `GRASS_NUM_THREADS` or [`set_num_threads`] when given; otherwise torch's
//! (`omp_get_max_threads()`) on the OpenMP team, so that both libraries use one team of one size,
//! and the number of available cores on the rayon pool. One thread runs tasks on the caller.
//!
//! [`SyncPtr`] is the shared output of workers writing disjoint elements.
use crate::error::{invalid, Result};
use crate::openmp;
use rayon::prelude::*;
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, RwLock};

struct PoolState {
    pool: Arc<ThreadPool>,
    threads: usize,
    pid: u32,
}

/// The rayon pool, built on first use (never when work runs on the OpenMP team).
static POOL: RwLock<Option<PoolState>> = RwLock::new(None);
/// The thread count set by [`set_num_threads`] (0: none).
static SET_THREADS: AtomicUsize = AtomicUsize::new(0);
/// `GRASS_NUM_THREADS` when it is a positive integer (clamped to [`max_threads`]).
static ENV_THREADS: LazyLock<Option<usize>> = LazyLock::new(|| {
    std::env::var("GRASS_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .map(|n| n.min(max_threads()))
});

fn available() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The most threads the pool may have: `min(4 × available cores, 1024)` (more only adds
/// scheduling overhead, and each thread costs a stack).
pub fn max_threads() -> usize {
    (4 * available()).min(1024)
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

/// The rayon pool with `threads` workers, (re)built when missing, of another size, or inherited
/// through `fork` from the process that built it.
fn pool(threads: usize) -> Arc<ThreadPool> {
    let fits = |s: &Option<PoolState>| {
        s.as_ref()
            .filter(|s| s.pid == std::process::id() && s.threads == threads)
            .map(|s| Arc::clone(&s.pool))
    };
    if let Some(p) = fits(
        &POOL
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    ) {
        return p;
    }
    let mut state = POOL
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(p) = fits(&state) {
        return p;
    }
    if let Some(old) = state.take() {
        if old.pid != std::process::id() {
            // The old pool's threads do not exist in this (forked) process: leak it rather
            // than join threads that will never answer.
            std::mem::forget(old);
        }
        // Otherwise dropping it lets its threads exit once their current work is done.
    }
    let new = build(threads);
    let p = Arc::clone(&new.pool);
    *state = Some(new);
    p
}

/// Runs `task(i)` for every `i < n`, in parallel on the current backend (see the module docs),
/// and returns the first error (of the lowest failing index on the OpenMP team). Tasks must not
/// depend on which thread runs them or in which order.
///
/// # Errors
/// The error a task returned.
pub(crate) fn try_for_each(n: usize, task: impl Fn(usize) -> Result<()> + Sync) -> Result<()> {
    let threads = get_num_threads();
    if threads.min(n) <= 1 {
        return (0..n).try_for_each(task);
    }
    if let Some(rt) = openmp::active() {
        return rt.run(threads.min(n), n, &task);
    }
    // The pool keeps the configured size whatever `n` is (a pool per task count would be
    // rebuilt, threads and all, whenever calls with fewer tasks alternate with larger ones).
    pool(threads).install(|| (0..n).into_par_iter().try_for_each(&task))
}

/// [`try_for_each`] over `out` cut into consecutive chunks of `len` elements (the last may be
/// shorter): `task(i, chunk_i)`.
///
/// # Errors
/// The error a task returned.
pub(crate) fn try_chunks_mut<A: Send>(
    out: &mut [A],
    len: usize,
    task: impl Fn(usize, &mut [A]) -> Result<()> + Sync,
) -> Result<()> {
    assert!(len > 0, "chunk length must be positive");
    let total = out.len();
    let dst = SyncPtr::new(out);
    try_for_each(total.div_ceil(len), |i| {
        let start = i * len;
        // SAFETY: chunk `i` is `start..min(start + len, total)`; chunks of distinct indices are
        // disjoint and `try_for_each` runs every index exactly once.
        task(i, unsafe { dst.slice_mut(start, len.min(total - start)) })
    })
}

/// [`try_for_each`] over `out` cut at the increasing offsets `ends` (part `i` is
/// `ends[i-1]..ends[i]`, part 0 starts at 0; the last end must be `out.len()`).
///
/// # Errors
/// The error a task returned.
pub(crate) fn try_parts_mut<A: Send>(
    out: &mut [A],
    ends: &[usize],
    task: impl Fn(usize, &mut [A]) -> Result<()> + Sync,
) -> Result<()> {
    assert!(
        ends.last() == Some(&out.len()) && ends.windows(2).all(|w| w[0] <= w[1]),
        "part ends must increase up to the slice length"
    );
    let dst = SyncPtr::new(out);
    try_for_each(ends.len(), |i| {
        let start = if i == 0 { 0 } else { ends[i - 1] };
        // SAFETY: the parts `ends[i-1]..ends[i]` are disjoint and inside `out` (the ends increase
        // up to its length, checked above) and `try_for_each` runs every index exactly once.
        task(i, unsafe { dst.slice_mut(start, ends[i] - start) })
    })
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

/// Sets the number of threads grass-rs uses, `1 ≤ n ≤ max_threads()` (on either backend);
/// a rayon pool of another size is rebuilt on its next use.
///
/// # Errors
/// `InvalidArgument` when `n` is out of range.
pub fn set_num_threads(n: usize) -> Result<()> {
    let n = check_num_threads(n as i128)?;
    SET_THREADS.store(n, Ordering::Relaxed);
    Ok(())
}

/// Forgets a count given to [`set_num_threads`]: back to `GRASS_NUM_THREADS` or the default.
pub fn reset_num_threads() {
    SET_THREADS.store(0, Ordering::Relaxed);
}

/// The number of threads grass-rs's parallel calls use now (see the module docs).
pub fn get_num_threads() -> usize {
    match SET_THREADS.load(Ordering::Relaxed) {
        0 => ENV_THREADS.unwrap_or_else(|| {
            openmp::active().map_or_else(available, openmp::Runtime::max_threads)
        }),
        n => n,
    }
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

    /// The elements `start..start + len` as a slice.
    ///
    /// # Safety
    /// The range must lie inside the slice `self` was built from, which must still be alive,
    /// and no other reference to those elements may exist while the result is used.
    #[inline]
    #[allow(clippy::mut_from_ref)] // the point of the type: disjoint parts handed to workers
    pub(crate) unsafe fn slice_mut(&self, start: usize, len: usize) -> &mut [A] {
        assert!(start <= self.len && len <= self.len - start);
        // SAFETY: in bounds (checked), alive and unaliased (the caller's contract).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
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
    fn few_tasks_do_not_resize_the_pool() {
        set_num_threads(4).unwrap();
        let size = || POOL.read().unwrap().as_ref().map(|s| s.threads);
        try_for_each(8, |_| Ok(())).unwrap();
        assert_eq!(size(), Some(4));
        try_for_each(2, |_| Ok(())).unwrap(); // fewer tasks than threads
        assert_eq!(
            size(),
            Some(4),
            "the pool was rebuilt for a call with 2 tasks"
        );
        reset_num_threads();
    }

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
