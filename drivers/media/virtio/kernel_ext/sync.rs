// SPDX-License-Identifier: GPL-2.0

//! A completion with bounded waits, and a lock-free slot for a box.
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
use kernel::{
    prelude::*,
    sync::atomic::{Acquire, Atomic, Release},
    time::Jiffies,
    types::Opaque,
};

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

/// One slot for a boxed value, exchanged without a lock: [`BoxSlot::take`]
/// and [`BoxSlot::put`] are one atomic operation each, so an interrupt
/// handler may put what a thread takes. (A spinlock around an `Option`
/// did the same with interrupts off and two calls into C per side.)
///
/// # Invariants
///
/// `ptr` is null or comes from [`KBox::into_raw`], and the slot owns that
/// box: nothing else frees or uses it until an atomic exchange takes it.
pub(crate) struct BoxSlot<T> {
    ptr: Atomic<*mut T>,
}

// SAFETY: The slot owns at most one `KBox<T>`, handed from one thread to
// another whole: `Send` of `T` is all a move between threads needs.
unsafe impl<T: Send> Send for BoxSlot<T> {}

// SAFETY: Through a shared reference a box can only be moved in or out
// whole by an atomic operation, never reached in place: as for `Send`.
unsafe impl<T: Send> Sync for BoxSlot<T> {}

impl<T> BoxSlot<T> {
    /// An empty slot.
    pub(crate) const fn new() -> Self {
        // INVARIANT: Null.
        Self {
            ptr: Atomic::new(core::ptr::null_mut()),
        }
    }

    /// The box in the slot, if any; the slot is empty after.
    pub(crate) fn take(&self) -> Option<KBox<T>> {
        // Acquire: pairs with `put`'s release, so the box's contents are
        // the putter's.
        let ptr = self.ptr.xchg(core::ptr::null_mut(), Acquire);
        if ptr.is_null() {
            return None;
        }
        // SAFETY: By the invariant the pointer came from `KBox::into_raw`
        // and the slot owned it; the exchange took it out, so this is its
        // only owner now.
        Some(unsafe { KBox::from_raw(ptr) })
    }

    /// Whether the slot holds a box (KUnit counts kept boxes with it).
    #[cfg(CONFIG_KUNIT)]
    pub(crate) fn is_occupied(&self) -> bool {
        !self.ptr.load(Acquire).is_null()
    }

    /// Puts `value` in the slot if it is empty; gives it back otherwise.
    pub(crate) fn put(&self, value: KBox<T>) -> Result<(), KBox<T>> {
        let ptr = KBox::into_raw(value);
        // INVARIANT: On success the slot holds a pointer from `into_raw`.
        match self.ptr.cmpxchg(core::ptr::null_mut(), ptr, Release) {
            Ok(_) => Ok(()),
            // SAFETY: The exchange failed, so the slot did not take `ptr`,
            // which `into_raw` just gave this function alone.
            Err(_) => Err(unsafe { KBox::from_raw(ptr) }),
        }
    }
}

impl<T> Drop for BoxSlot<T> {
    fn drop(&mut self) {
        drop(self.take());
    }
}
