//! Cooperative cancellation of long calls.
//!
//! A caller that wants to be able to stop a call runs it inside [`with_flag`]; the core's loops
//! capture the calling thread's flag ([`Stop::current`]) before they fan out onto the pool and
//! poll it once per chunk of work (a relaxed atomic load), returning [`Error::Cancelled`] once it
//! is set. A cancelled call leaves its output buffer unspecified (partly written).
//!
//! Calls made outside [`with_flag`] cannot be cancelled and pay nothing beyond a null check.
use crate::error::{Error, Result};
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

thread_local! {
    static CURRENT: RefCell<Option<Arc<AtomicBool>>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread with `flag` as its cancellation flag: once `flag` is set, the core
/// calls `f` makes return [`Error::Cancelled`] at their next poll. Nests (the inner flag wins).
pub fn with_flag<R>(flag: &Arc<AtomicBool>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<AtomicBool>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| *c.borrow_mut() = self.0.take());
        }
    }
    let previous = CURRENT.with(|c| c.borrow_mut().replace(Arc::clone(flag)));
    let _restore = Restore(previous);
    f()
}

/// The cancellation flag of one call, shared by the workers it fans out to.
#[derive(Debug, Clone, Default)]
pub struct Stop(Option<Arc<AtomicBool>>);

impl Stop {
    /// The calling thread's flag (none outside [`with_flag`]).
    pub fn current() -> Self {
        Self(CURRENT.with(|c| c.borrow().clone()))
    }

    /// Whether cancellation was requested.
    #[inline]
    pub fn requested(&self) -> bool {
        self.0.as_ref().is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// `Err(Cancelled)` once cancellation was requested.
    ///
    /// # Errors
    /// `Cancelled` when the flag is set.
    #[inline]
    pub fn check(&self) -> Result<()> {
        if self.requested() {
            Err(Error::Cancelled)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_is_scoped_to_the_call() {
        assert!(Stop::current().check().is_ok());
        let flag = Arc::new(AtomicBool::new(true));
        with_flag(&flag, || {
            assert_eq!(Stop::current().check(), Err(Error::Cancelled));
            let inner = Arc::new(AtomicBool::new(false));
            with_flag(&inner, || assert!(Stop::current().check().is_ok()));
            assert!(Stop::current().requested());
        });
        assert!(!Stop::current().requested());
    }
}
