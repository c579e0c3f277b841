//! grass-rs's own rayon pool: sized by `GRASS_NUM_THREADS` (default: available cores),
//! resizable with [`set_num_threads`], and fork-safe (a child process builds a fresh pool
//! instead of waiting on threads that did not survive `fork`).
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::sync::{Arc, LazyLock, RwLock};

struct PoolState {
    pool: Arc<ThreadPool>,
    threads: usize,
    pid: u32,
}

static POOL: LazyLock<RwLock<PoolState>> = LazyLock::new(|| RwLock::new(build(default_threads())));

fn default_threads() -> usize {
    std::env::var("GRASS_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        })
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

/// Sets the number of worker threads (≥ 1).
///
/// # Errors
/// `InvalidArgument` when `n == 0`.
pub fn set_num_threads(n: usize) -> crate::Result<()> {
    if n == 0 {
        return Err(crate::error::invalid(
            "n",
            "the number of threads must be at least 1",
        ));
    }
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
