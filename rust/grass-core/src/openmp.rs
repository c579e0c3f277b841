//! Running grass-rs's parallel work on the team of the process's GNU OpenMP runtime (libgomp).
//!
//! torch's CPU ops run on libgomp's team, whose workers keep spinning for a while after each op
//! (GNU OpenMP's default wait policy). A separate pool started right after a torch op fights
//! those spinning workers for the cores: on 2 cores a projection took twice its time. Running
//! grass-rs's tasks *on the same team* (the spinning workers pick them up at once) removes the
//! contention both ways without the user setting `OMP_WAIT_POLICY`.
//!
//! [`attach`] binds to a libgomp that is **already loaded** in this process (`RTLD_NOLOAD`: it
//! never loads a second OpenMP runtime); the Python layer passes the one torch loaded. Work is
//! handed out by an atomic counter (dynamic schedule), so which thread runs which task does not
//! matter: every kernel's result depends only on the task index (bit-identical to the rayon
//! path). The team is used only by the process that attached (a forked child falls back to
//! rayon: libgomp's threads do not survive `fork`).
use crate::error::{invalid, Error, Result};
use std::any::Any;
use std::ffi::{c_int, c_uint, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

/// `GOMP_parallel(fn, data, num_threads, flags)`: runs `fn(data)` on a team of `num_threads`
/// (the caller is thread 0) and returns when every member has returned.
type ParallelFn = unsafe extern "C" fn(extern "C" fn(*mut c_void), *mut c_void, c_uint, c_uint);
/// `omp_get_max_threads()`: the team size the runtime would use (torch's `set_num_threads`).
type MaxThreadsFn = unsafe extern "C" fn() -> c_int;

/// The attached runtime.
#[derive(Debug)]
pub(crate) struct Runtime {
    parallel: ParallelFn,
    max_threads: MaxThreadsFn,
    pid: u32,
    path: String,
}

static RUNTIME: OnceLock<Runtime> = OnceLock::new();
static ENABLED: AtomicBool = AtomicBool::new(false);

/// A handle to the library at `path` if it is already loaded in this process (never loads it).
#[cfg(unix)]
fn open_loaded(path: &CStr) -> Option<*mut c_void> {
    // SAFETY: `path` is NUL-terminated; RTLD_NOLOAD only returns a handle to a library that is
    // already loaded (its initializers have run) and never loads one.
    let handle = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    (!handle.is_null()).then_some(handle)
}

#[cfg(not(unix))]
fn open_loaded(_path: &CStr) -> Option<*mut c_void> {
    None
}

#[cfg(unix)]
fn symbol(handle: *mut c_void, name: &CStr) -> Option<*mut c_void> {
    // SAFETY: `handle` is a live handle returned by `dlopen` (never closed), `name` is a
    // NUL-terminated string; dlsym only reads both.
    let p = unsafe { libc::dlsym(handle, name.as_ptr()) };
    (!p.is_null()).then_some(p)
}

#[cfg(not(unix))]
fn symbol(_handle: *mut c_void, _name: &CStr) -> Option<*mut c_void> {
    None
}

/// Runs grass-rs's parallel work on the team of the libgomp at `path`, which must already be
/// loaded in this process. Attaching again (any path) keeps the first runtime and re-enables it.
///
/// # Errors
/// `InvalidArgument` naming `path` when it is not a loaded library exporting `GOMP_parallel`.
pub fn attach(path: &str) -> Result<()> {
    if RUNTIME.get().is_none() {
        let _ = RUNTIME.set(Runtime::load(path)?);
    }
    ENABLED.store(true, Ordering::Release);
    Ok(())
}

/// Stops running work on the OpenMP team (back to the rayon pool; [`attach`] resumes).
pub fn detach() {
    ENABLED.store(false, Ordering::Release);
}

/// The path of the attached runtime when work runs on it in this process.
pub fn active_path() -> Option<&'static str> {
    active().map(|rt| rt.path.as_str())
}

/// The runtime to run work on: attached, enabled, and in the process that attached it.
pub(crate) fn active() -> Option<&'static Runtime> {
    let rt = RUNTIME.get()?;
    (ENABLED.load(Ordering::Acquire) && rt.pid == std::process::id()).then_some(rt)
}

/// What stopped a task: its error, or its panic (re-raised on the calling thread).
enum Failure {
    Error(Error),
    Panic(Box<dyn Any + Send>),
}

/// One parallel call: tasks `0..n` claimed from `next`; the failure of the lowest failing task
/// is kept, and once one fails the others stop claiming.
struct Job<'a> {
    next: AtomicUsize,
    n: usize,
    task: &'a (dyn Fn(usize) -> Result<()> + Sync),
    failed: AtomicBool,
    failure: Mutex<Option<(usize, Failure)>>,
}

impl Job<'_> {
    fn work(&self) {
        while !self.failed.load(Ordering::Relaxed) {
            let i = self.next.fetch_add(1, Ordering::Relaxed);
            if i >= self.n {
                return;
            }
            let failure = match catch_unwind(AssertUnwindSafe(|| (self.task)(i))) {
                Ok(Ok(())) => continue,
                Ok(Err(e)) => Failure::Error(e),
                Err(p) => Failure::Panic(p),
            };
            self.failed.store(true, Ordering::Relaxed);
            let mut slot = self
                .failure
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if slot.as_ref().is_none_or(|(j, _)| i < *j) {
                *slot = Some((i, failure));
            }
        }
    }
}

extern "C" fn team_body(data: *mut c_void) {
    // SAFETY: `data` is the `&Job` that `Runtime::run` passed to GOMP_parallel, which returns
    // only after every team member has returned from this function, so the job outlives every
    // use; `Job` is `Sync` (atomics, a mutex and a `Sync` closure). `work` never unwinds (each
    // task runs under `catch_unwind`).
    let job = unsafe { &*data.cast::<Job<'_>>() };
    job.work();
}

impl Runtime {
    /// The entry points of the OpenMP runtime at `path`, already loaded in this process.
    ///
    /// # Errors
    /// `InvalidArgument` naming `path` when it is not loaded or lacks the entry points.
    pub(crate) fn load(path: &str) -> Result<Self> {
        let c = CString::new(path).map_err(|_| invalid("path", "contains a NUL byte"))?;
        let Some(handle) = open_loaded(&c) else {
            return Err(invalid(
                "path",
                format!("{path} is not loaded in this process"),
            ));
        };
        let (Some(par), Some(max)) = (
            symbol(handle, c"GOMP_parallel"),
            symbol(handle, c"omp_get_max_threads"),
        ) else {
            return Err(invalid(
                "path",
                format!("{path} does not export GOMP_parallel and omp_get_max_threads"),
            ));
        };
        // SAFETY: both symbols are libgomp's public entry points, whose C signatures are the
        // two function types (libgomp's ABI, stable since GCC 4.9).
        Ok(unsafe {
            Runtime {
                parallel: std::mem::transmute::<*mut c_void, ParallelFn>(par),
                max_threads: std::mem::transmute::<*mut c_void, MaxThreadsFn>(max),
                pid: std::process::id(),
                path: path.to_owned(),
            }
        })
    }

    /// The team size torch would use (`torch.get_num_threads()`), at least 1.
    pub(crate) fn max_threads(&self) -> usize {
        // SAFETY: omp_get_max_threads takes no arguments and only reads the calling thread's
        // OpenMP state.
        let n = unsafe { (self.max_threads)() };
        usize::try_from(n).unwrap_or(1).max(1)
    }

    /// Runs `task(i)` for every `i < n` on a team of `threads`, returning the error of the
    /// lowest failing task (a panic is re-raised here).
    pub(crate) fn run(
        &self,
        threads: usize,
        n: usize,
        task: &(dyn Fn(usize) -> Result<()> + Sync),
    ) -> Result<()> {
        let job = Job {
            next: AtomicUsize::new(0),
            n,
            task,
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
        };
        let threads = c_uint::try_from(threads).unwrap_or(c_uint::MAX);
        // SAFETY: `team_body` matches the callback type, never unwinds, and only reads the job
        // through the pointer, which stays valid until GOMP_parallel returns (it joins the team).
        unsafe {
            (self.parallel)(
                team_body,
                std::ptr::from_ref(&job).cast_mut().cast(),
                threads,
                0,
            );
        }
        match job
            .failure
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            None => Ok(()),
            Some((_, Failure::Error(e))) => Err(e),
            Some((_, Failure::Panic(p))) => std::panic::resume_unwind(p),
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The system's libgomp (gcc's runtime library, present wherever gcc is), loaded for the test.
    fn system_runtime() -> Runtime {
        let path = "libgomp.so.1";
        let c = CString::new(path).unwrap();
        // SAFETY: loading a shared library by name; libgomp's initializers are safe to run.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        assert!(
            !h.is_null(),
            "libgomp.so.1 (gcc's OpenMP runtime) must be installed"
        );
        Runtime::load(path).unwrap()
    }

    #[test]
    fn every_task_runs_once_on_several_threads() {
        let rt = system_runtime();
        let hits: Vec<AtomicUsize> = (0..1000).map(|_| AtomicUsize::new(0)).collect();
        let threads = Mutex::new(std::collections::HashSet::new());
        rt.run(4, hits.len(), &|i| {
            hits[i].fetch_add(1, Ordering::Relaxed);
            threads.lock().unwrap().insert(std::thread::current().id());
            std::thread::sleep(std::time::Duration::from_micros(50));
            Ok(())
        })
        .unwrap();
        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        assert!(
            threads.into_inner().unwrap().len() > 1,
            "the team ran the tasks"
        );
        assert!(rt.max_threads() >= 1);
    }

    #[test]
    fn the_lowest_failing_task_is_reported_and_panics_reach_the_caller() {
        let rt = system_runtime();
        let e = rt
            .run(3, 100, &|i| {
                if i % 10 == 7 {
                    Err(invalid("task", format!("{i}")))
                } else {
                    Ok(())
                }
            })
            .unwrap_err();
        // Tasks are claimed in order and every claimed failing task is recorded: the lowest
        // failing index claimed is 7 (later claims stop once one fails).
        assert!(e.to_string().contains("`task`: 7"), "{e}");
        let p = catch_unwind(AssertUnwindSafe(|| {
            rt.run(3, 100, &|i| {
                assert!(i != 42, "task 42 fails");
                Ok(())
            })
        }))
        .unwrap_err();
        let msg = p
            .downcast_ref::<&str>()
            .map(ToString::to_string)
            .or_else(|| p.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        assert!(msg.contains("task 42 fails"), "{msg}");
    }

    #[test]
    fn only_loaded_runtimes_with_the_entry_points_attach() {
        let e = Runtime::load("/nonexistent/libgomp.so.1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`path`") && e.contains("not loaded"), "{e}");
        let e = Runtime::load("libc.so.6").unwrap_err().to_string();
        assert!(e.contains("does not export GOMP_parallel"), "{e}");
    }
}
