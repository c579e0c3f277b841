//! The one place where the GIL is released, and where Ctrl-C reaches long calls.
//!
//! Every call runs detached **on the calling thread**: that thread is the master of torch's
//! OpenMP team, so grass-rs's tasks run on the team torch's own ops use (see
//! `grass_core::parallel`); a helper thread per call would make libgomp build a team of its own.
//!
//! A call of at least [`WATCH_WORK`] elements made from Python's main thread can be interrupted:
//! for its duration a SIGINT handler is chained in front of Python's (only when Python's is a
//! real handler, not `SIG_DFL`/`SIG_IGN`). It sets the call's cancellation flag and then runs
//! Python's own handler, so Python records the signal as usual; the core stops at its next chunk
//! (milliseconds) and the call raises what the signal's Python handler raises
//! (`KeyboardInterrupt`). The output buffer is then unspecified. Other signals are left to Python
//! (they are handled when the call returns), and calls from other threads are not interruptible
//! (Python runs signal handlers on the main thread only). Windows: no interruption.
use crate::errors::PyGrassError;
use pyo3::prelude::*;

/// Work (elements read or written) from which a call can be interrupted.
pub const WATCH_WORK: usize = 1 << 22;

/// Runs `f` with the GIL released and maps a core error to a Python exception; `work` (the
/// number of elements the call touches, roughly) decides whether it can be interrupted.
pub fn run_detached<R: Send>(
    py: Python<'_>,
    work: usize,
    f: impl FnOnce() -> grass_core::Result<R> + Send,
) -> PyResult<R> {
    let watch = if work >= WATCH_WORK && is_main_thread(py) {
        sigint::Watch::install()
    } else {
        None
    };
    let Some(watch) = watch else {
        return py.detach(f).map_err(|e| PyGrassError(e).into());
    };
    let flag = watch.flag();
    let r = py.detach(move || grass_core::cancel::with_flag(&flag, f));
    let interrupted = watch.interrupted();
    drop(watch);
    if interrupted {
        // Python's handler recorded the signal: run its Python-level handler now.
        py.check_signals()?;
    }
    r.map_err(|e| PyGrassError(e).into())
}

/// Whether this is Python's main thread (the only one Python runs signal handlers on).
fn is_main_thread(py: Python<'_>) -> bool {
    let check = || -> PyResult<bool> {
        let threading = py.import("threading")?;
        let main = threading.call_method0("main_thread")?.getattr("ident")?;
        let me = threading.call_method0("get_ident")?;
        main.eq(me)
    };
    check().unwrap_or(false)
}

#[cfg(unix)]
mod sigint {
    use std::ffi::{c_int, c_void};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, LazyLock};

    /// The flag of the watched call (one at a time: only the main thread installs a watch).
    static FLAG: LazyLock<Arc<AtomicBool>> = LazyLock::new(|| Arc::new(AtomicBool::new(false)));
    /// Raw pointer to `FLAG`'s bool, for the signal handler (set before the handler is installed).
    static FLAG_PTR: AtomicUsize = AtomicUsize::new(0);
    /// Python's handler (address) and whether it takes `siginfo` (`SA_SIGINFO`).
    static PREVIOUS: AtomicUsize = AtomicUsize::new(0);
    static PREVIOUS_SIGINFO: AtomicBool = AtomicBool::new(false);

    extern "C" fn on_sigint(sig: c_int, info: *mut libc::siginfo_t, ctx: *mut c_void) {
        let flag = FLAG_PTR.load(Ordering::Acquire) as *const AtomicBool;
        // SAFETY: FLAG_PTR points into the `Arc` held by the static FLAG (never freed), set before
        // this handler was installed; an atomic store is async-signal-safe.
        if let Some(flag) = unsafe { flag.as_ref() } {
            flag.store(true, Ordering::Relaxed);
        }
        let prev = PREVIOUS.load(Ordering::Acquire);
        // SAFETY: `prev` is the address of the handler that was installed for SIGINT before ours
        // (a function, never SIG_DFL/SIG_IGN: `install` checks), called with the arguments the
        // kernel gave us, in the form its flags declare: what the kernel would have done.
        unsafe {
            if PREVIOUS_SIGINFO.load(Ordering::Acquire) {
                let h: extern "C" fn(c_int, *mut libc::siginfo_t, *mut c_void) =
                    std::mem::transmute(prev);
                h(sig, info, ctx);
            } else {
                let h: extern "C" fn(c_int) = std::mem::transmute(prev);
                h(sig);
            }
        }
    }

    /// SIGINT chained to the call's flag until dropped (then Python's handler is restored).
    pub(super) struct Watch {
        previous: libc::sigaction,
        flag: Arc<AtomicBool>,
    }

    impl Watch {
        /// Chains the handler, or `None` when SIGINT's handler is not a function.
        pub(super) fn install() -> Option<Self> {
            FLAG.store(false, Ordering::Relaxed);
            FLAG_PTR.store(Arc::as_ptr(&FLAG) as usize, Ordering::Release);
            // SAFETY: a zeroed sigaction is a valid value to be filled by the kernel.
            let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: reading the current disposition (null new action) into `previous`.
            if unsafe { libc::sigaction(libc::SIGINT, std::ptr::null(), &raw mut previous) } != 0 {
                return None;
            }
            let h = previous.sa_sigaction;
            if h == libc::SIG_DFL || h == libc::SIG_IGN {
                return None;
            }
            PREVIOUS.store(h, Ordering::Release);
            PREVIOUS_SIGINFO.store(previous.sa_flags & libc::SA_SIGINFO != 0, Ordering::Release);
            // SAFETY: `ours` is fully initialized from Python's action (same mask and flags, plus
            // SA_SIGINFO for our three-argument handler).
            let mut ours: libc::sigaction = previous;
            ours.sa_sigaction = on_sigint as *const () as usize;
            ours.sa_flags |= libc::SA_SIGINFO;
            // SAFETY: installing a valid action for SIGINT; the handler only does an atomic store
            // and calls the previous handler.
            if unsafe { libc::sigaction(libc::SIGINT, &raw const ours, std::ptr::null_mut()) } != 0
            {
                return None;
            }
            Some(Self {
                previous,
                flag: Arc::clone(&FLAG),
            })
        }

        /// The flag the call polls.
        pub(super) fn flag(&self) -> Arc<AtomicBool> {
            Arc::clone(&self.flag)
        }

        /// Whether SIGINT arrived during the call.
        pub(super) fn interrupted(&self) -> bool {
            self.flag.load(Ordering::Relaxed)
        }
    }

    impl Drop for Watch {
        fn drop(&mut self) {
            // SAFETY: restoring the action that was installed before ours.
            unsafe {
                libc::sigaction(libc::SIGINT, &raw const self.previous, std::ptr::null_mut())
            };
        }
    }
}

#[cfg(not(unix))]
mod sigint {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    /// No interruption on this platform: never installed.
    pub(super) struct Watch {
        flag: Arc<AtomicBool>,
    }

    impl Watch {
        pub(super) fn install() -> Option<Self> {
            None
        }
        pub(super) fn flag(&self) -> Arc<AtomicBool> {
            Arc::clone(&self.flag)
        }
        pub(super) fn interrupted(&self) -> bool {
            self.flag.load(std::sync::atomic::Ordering::Relaxed)
        }
    }
}
