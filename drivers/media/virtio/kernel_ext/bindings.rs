// SPDX-License-Identifier: GPL-2.0

//! Raw bindings to the virtio and V4L2 C APIs and to our C helpers.
//!
//! Generated at build time for the running kernel's configuration. Only the
//! items of virtio, media and our own headers are emitted here; every other C
//! type they use is the kernel crate's own, re-exported below, so a
//! `struct device` from here and one from `kernel` are the same type.

#![allow(
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    dead_code,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    improper_ctypes,
    unreachable_pub,
    unsafe_op_in_unsafe_fn
)]

pub(crate) use kernel::bindings::*;

/// `poll()` bits (uapi/linux/eventpoll.h: bindgen cannot evaluate their
/// `__force` casts).
pub(crate) const EPOLLIN: u32 = 0x0001;
pub(crate) const EPOLLPRI: u32 = 0x0002;
pub(crate) const EPOLLOUT: u32 = 0x0004;
pub(crate) const EPOLLERR: u32 = 0x0008;
pub(crate) const EPOLLRDNORM: u32 = 0x0040;
pub(crate) const EPOLLWRNORM: u32 = 0x0100;

// The generated code names C scalar types as `ffi::c_int` and so on.
use kernel::ffi;

include!("bindings_generated.rs");

/// The driver's workqueue: event processing and deferred MUNMAPs run on it.
/// Destroying it at module exit waits for every queued item, so no work of
/// this module runs after the module is gone.
pub(crate) struct DriverWorkqueue(core::ptr::NonNull<workqueue_struct>);

static DRIVER_WORKQUEUE: core::sync::atomic::AtomicPtr<workqueue_struct> =
    core::sync::atomic::AtomicPtr::new(core::ptr::null_mut());

impl DriverWorkqueue {
    /// Creates the queue and makes it the one [`driver_workqueue`] returns.
    pub(crate) fn new() -> kernel::error::Result<Self> {
        // SAFETY: Plain allocation; NULL on failure.
        let wq = unsafe { virtio_media_alloc_workqueue() };
        let wq = core::ptr::NonNull::new(wq).ok_or(kernel::error::code::ENOMEM)?;
        DRIVER_WORKQUEUE.store(wq.as_ptr(), core::sync::atomic::Ordering::Release);
        Ok(Self(wq))
    }
}

impl Drop for DriverWorkqueue {
    fn drop(&mut self) {
        // SAFETY: Created in `new`; destroyed once, after every device is
        // removed (the driver registration is dropped first).
        unsafe { destroy_workqueue(self.0.as_ptr()) };
    }
}

// SAFETY: A workqueue may be used and destroyed from any thread.
unsafe impl Send for DriverWorkqueue {}
// SAFETY: As above.
unsafe impl Sync for DriverWorkqueue {}

/// The queue created at module init.
pub(crate) fn driver_workqueue() -> &'static kernel::workqueue::Queue {
    let wq = DRIVER_WORKQUEUE.load(core::sync::atomic::Ordering::Acquire);
    // SAFETY: Set at module init before the driver is registered, and
    // destroyed only at module exit after every device is gone, so every
    // caller (device code) sees a live queue.
    unsafe { kernel::workqueue::Queue::from_raw(wq) }
}
