// SPDX-License-Identifier: GPL-2.0

//! A completion with bounded waits.
//!
//! C header: [`include/linux/completion.h`](srctree/include/linux/completion.h)
//!
//! `kernel::sync::Completion` (Linux 7.3) has `complete_all` and an
//! unbounded uninterruptible wait only. A command's waiter needs a
//! timeout, an interruptible variant, and `complete` of its one waiter:
//! then a finished wait has consumed the completion and it can serve the
//! next command as is. A condition variable did the same job with two more
//! lock rounds and twice the calls per command (its waiter holds the
//! caller's lock before and after sleeping).

use super::bindings;
use kernel::{prelude::*, time::Jiffies, types::Opaque};

/// How a bounded wait ended without the completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitFailed {
    /// The time ran out.
    TimedOut,
    /// A signal is pending (interruptible waits only).
    Interrupted,
}

/// A `struct completion`: each [`Completion::complete`] lets one wait, past
/// or future, return.
#[pin_data]
pub(crate) struct Completion {
    #[pin]
    inner: Opaque<bindings::completion>,
}

// SAFETY: `struct completion` is meant to be completed and waited on from
// any thread; it serializes itself with its own lock.
unsafe impl Send for Completion {}

// SAFETY: As above: every operation on a shared reference is one of the C
// API's calls, each safe to run concurrently with the others.
unsafe impl Sync for Completion {}

impl Completion {
    /// A completion not done yet.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            inner <- Opaque::ffi_init(|slot: *mut bindings::completion| {
                // SAFETY: `slot` points to an uninitialised `struct
                // completion` that stays pinned.
                unsafe { bindings::init_completion(slot) };
            }),
        })
    }

    fn as_raw(&self) -> *mut bindings::completion {
        self.inner.get()
    }

    /// Lets one waiter (the next one, if none waits) return.
    pub(crate) fn complete(&self) {
        // SAFETY: `as_raw` is an initialised completion, pinned in `self`.
        unsafe { bindings::complete(self.as_raw()) };
    }

    /// Whether a wait would return at once (KUnit checks reuse with it).
    #[cfg(CONFIG_KUNIT)]
    pub(crate) fn is_done(&self) -> bool {
        // SAFETY: As in `complete`.
        unsafe { bindings::completion_done(self.as_raw()) }
    }

    /// Waits, interruptibly, at most `timeout`; `Ok` with the jiffies left
    /// once done (the wait consumed the completion).
    pub(crate) fn wait_interruptible_timeout(
        &self,
        timeout: Jiffies,
    ) -> Result<Jiffies, WaitFailed> {
        // Beyond `LONG_MAX` the C side would take it as negative; clamp it
        // (it is five seconds here).
        let timeout = timeout.min(Jiffies::MAX >> 1);
        // SAFETY: As in `complete`; process context, where this is called.
        let ret =
            unsafe { bindings::wait_for_completion_interruptible_timeout(self.as_raw(), timeout) };
        match ret {
            0 => Err(WaitFailed::TimedOut),
            left if left > 0 => Ok(left.unsigned_abs()),
            _ => Err(WaitFailed::Interrupted),
        }
    }

    /// Waits, uninterruptibly, at most `timeout`; `Ok` with the jiffies
    /// left once done (the wait consumed the completion).
    pub(crate) fn wait_timeout(&self, timeout: Jiffies) -> Result<Jiffies, WaitFailed> {
        let timeout = timeout.min(Jiffies::MAX >> 1);
        // SAFETY: As in `wait_interruptible_timeout`.
        match unsafe { bindings::wait_for_completion_timeout(self.as_raw(), timeout) } {
            0 => Err(WaitFailed::TimedOut),
            left => Ok(left),
        }
    }
}
