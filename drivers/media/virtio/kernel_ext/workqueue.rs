// SPDX-License-Identifier: GPL-2.0

//! A workqueue the module owns.
//!
//! C header: [`include/linux/workqueue.h`](srctree/include/linux/workqueue.h)
//!
//! `kernel::workqueue` can use the system queues but not allocate one
//! (Linux 7.3); [`ModuleQueue`] fills that gap: allocated at module init,
//! destroyed at module exit, which waits for every item queued on it, so no
//! work of the module runs after the module is gone.

use super::bindings;
use core::ptr::NonNull;
use kernel::{
    prelude::*,
    sync::atomic::{Acquire, Atomic, Release},
    workqueue::Queue,
};

/// The module's queue while it exists.
static MODULE_QUEUE: Atomic<*mut bindings::workqueue_struct> = Atomic::new(core::ptr::null_mut());

/// The workqueue of the module: create it at module init, before anything
/// that queues work (the drivers) is registered, and drop it last.
///
/// # Invariants
///
/// `0` is a live workqueue, stored in `MODULE_QUEUE` until dropped.
pub(crate) struct ModuleQueue(NonNull<bindings::workqueue_struct>);

impl ModuleQueue {
    /// Creates the queue and makes it the one [`module_queue`] returns.
    pub(crate) fn new() -> Result<Self> {
        // SAFETY: Plain allocation; NULL on failure.
        let wq = unsafe { bindings::virtio_media_alloc_workqueue() };
        let wq = NonNull::new(wq).ok_or(ENOMEM)?;
        MODULE_QUEUE.store(wq.as_ptr(), Release);
        // INVARIANT: Created and stored just above.
        Ok(Self(wq))
    }
}

impl Drop for ModuleQueue {
    fn drop(&mut self) {
        MODULE_QUEUE.store(core::ptr::null_mut(), Release);
        // SAFETY: Created in `new`, destroyed once; every user (the
        // drivers' devices) is gone by now (the registrations are dropped
        // before the queue), and destroying it waits for queued items.
        unsafe { bindings::destroy_workqueue(self.0.as_ptr()) };
    }
}

// SAFETY: A workqueue may be used and destroyed from any thread.
unsafe impl Send for ModuleQueue {}
// SAFETY: As above.
unsafe impl Sync for ModuleQueue {}

/// The queue of the module.
///
/// Only for code that runs while the module's drivers are registered (their
/// devices, files and work items), which the module's init and exit order
/// guarantees to be between [`ModuleQueue::new`] and its drop.
pub(crate) fn module_queue() -> &'static Queue {
    let wq = MODULE_QUEUE.load(Acquire);
    // SAFETY: Per the documentation, the queue is live for every caller;
    // `Queue` is a transparent wrapper of `workqueue_struct`.
    unsafe { Queue::from_raw(wq) }
}
