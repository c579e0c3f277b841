//! The one place where the GIL is released, and where Ctrl-C reaches long calls.
//!
//! Small calls run detached on the calling thread. Calls with at least [`WATCH_WORK`] elements of
//! work run on a helper thread inside [`grass_core::cancel::with_flag`] while the calling thread
//! waits without the GIL, waking every [`POLL`] to run `PyErr_CheckSignals` (which handles
//! signals on the main thread only). On `KeyboardInterrupt` (or any exception a signal handler
//! raises) it sets the call's flag, waits for the core to stop at its next chunk (milliseconds)
//! and raises; the output buffer is then unspecified.
use crate::errors::PyGrassError;
use pyo3::prelude::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

/// Work (elements read or written) from which a call watches for signals.
pub const WATCH_WORK: usize = 1 << 22;
/// How often a watched call checks for signals.
pub const POLL: Duration = Duration::from_millis(50);

/// Runs `f` with the GIL released and maps a core error to a Python exception; `work` (the
/// number of elements the call touches, roughly) decides whether it can be interrupted.
pub fn run_detached<R: Send>(
    py: Python<'_>,
    work: usize,
    f: impl FnOnce() -> grass_core::Result<R> + Send,
) -> PyResult<R> {
    if work < WATCH_WORK {
        return py.detach(f).map_err(|e| PyGrassError(e).into());
    }
    let flag = Arc::new(AtomicBool::new(false));
    let (tx, mut rx) = mpsc::channel();
    std::thread::scope(|s| {
        let worker_flag = Arc::clone(&flag);
        s.spawn(move || {
            let _ = tx.send(grass_core::cancel::with_flag(&worker_flag, f));
        });
        loop {
            let (back, got) = py.detach(move || {
                let got = rx.recv_timeout(POLL);
                (rx, got)
            });
            rx = back;
            match got {
                Ok(r) => return r.map_err(|e| PyGrassError(e).into()),
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(e) = py.check_signals() {
                        flag.store(true, Ordering::Relaxed);
                        let _ = py.detach(move || rx.recv());
                        return Err(e);
                    }
                }
                // The worker panicked; leaving the scope re-raises its panic.
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(crate::errors::GrassError::new_err("internal error"))
                }
            }
        }
    })
}
