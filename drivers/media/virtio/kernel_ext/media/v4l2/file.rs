// SPDX-License-Identifier: GPL-2.0

//! Open files of a V4L2 video node: the driver's trait, the file handle
//! and its events, and the file operations the V4L2 core calls.
//!
//! C headers: [`include/media/v4l2-fh.h`](srctree/include/media/v4l2-fh.h),
//! [`include/media/v4l2-event.h`](srctree/include/media/v4l2-event.h),
//! [`include/media/v4l2-dev.h`](srctree/include/media/v4l2-dev.h)

use super::{device::Device, ioctl::Ioctl, types::Event};
use crate::kernel_ext::{
    bindings,
    mm::{NewVma, UserInode},
};
use core::ptr::NonNull;
use kernel::{
    fs::File,
    new_spinlock,
    prelude::*,
    sync::{
        poll::{PollCondVar, PollTable},
        Arc, SpinLock,
    },
    transmute::AsBytes,
    types::Opaque,
};

/// A V4L2 video driver: what the V4L2 core calls for the files of its
/// nodes.
///
/// The methods run in process context, for any number of files at once
/// (the node has no `video_device.lock`), so [`Driver::File`] is `Sync`.
pub(crate) trait Driver: Sized + 'static {
    /// What the node keeps for the driver, from registration until the
    /// V4L2 core releases the node (after its unregistration and the last
    /// file's release).
    type Data: Send + Sync;
    /// What the driver keeps for an open file, from `open` to `release`.
    type File: Send + Sync;

    /// A program opened the node.
    fn open(data: &Self::Data, file: &OpenFile<'_>) -> Result<Self::File>;

    /// The file's last reference went. Its events are no longer delivered
    /// once this returns.
    fn release(file: Self::File);

    /// An ioctl of the file (see [`Ioctl`]); the V4L2 core copied its
    /// argument in and copies it back out.
    fn ioctl(file: &Self::File, nonblocking: bool, ioctl: Ioctl<'_>) -> Result;

    /// `poll()`: registers the file's wait queues with `poll` and returns
    /// the `EPOLL*` mask of what is ready, `EPOLLPRI` included when
    /// [`Poll::events_pending`] says so (the driver reads it under the
    /// lock that orders its events with its buffers).
    fn poll(file: &Self::File, poll: &Poll<'_>) -> u32;

    /// `mmap()` of a range of the file.
    fn mmap(file: &Self::File, vma: &NewVma) -> Result;
}

/// Delivers V4L2 events to one open file; a no-op once the file is
/// released.
///
/// Clonable, and usable from any context that may take a spinlock.
#[derive(Clone)]
pub(crate) struct EventSink(Arc<SinkInner>);

/// # Invariants
///
/// While `fh` is `Some`, it is the initialised file handle of an open file:
/// `release` takes it out before it tears the handle down.
#[pin_data]
struct SinkInner {
    #[pin]
    fh: SpinLock<Option<NonNull<bindings::v4l2_fh>>>,
}

// SAFETY: The handle is only used under the lock, and V4L2 allows queueing
// events on it from any thread.
unsafe impl Send for SinkInner {}
// SAFETY: As above.
unsafe impl Sync for SinkInner {}

impl EventSink {
    /// Queues `event` (a `struct v4l2_event`, or its first bytes) on the
    /// file; the core drops it unless the file subscribed to its type and
    /// id.
    pub(crate) fn queue(&self, event: &[u8]) {
        let mut ev = Event::zeroed();
        let dst = ev.as_bytes_mut();
        let len = dst.len().min(event.len());
        if let (Some(d), Some(s)) = (dst.get_mut(..len), event.get(..len)) {
            d.copy_from_slice(s);
        }
        let fh = self.0.fh.lock();
        if let Some(fh) = *fh {
            // SAFETY: `fh` is live while it is in the lock (invariant) and
            // `ev` is a whole `v4l2_event`, which the core copies.
            unsafe { bindings::v4l2_event_queue_fh(fh.as_ptr(), core::ptr::from_ref(&ev).cast()) };
        }
    }

    fn revoke(&self) {
        *self.0.fh.lock() = None;
    }
}

/// What the V4L2 core gives a driver about a file it opens.
pub(crate) struct OpenFile<'a> {
    file: *mut bindings::file,
    events: &'a EventSink,
}

impl OpenFile<'_> {
    /// Where the driver sends the file's V4L2 events.
    pub(crate) fn events(&self) -> EventSink {
        self.events.clone()
    }

    /// The inode the file was opened through (to remove every mapping of
    /// it later); `None` if it cannot be referenced.
    pub(crate) fn inode(&self) -> Option<UserInode> {
        // SAFETY: `file` is the file being opened, valid for the call.
        unsafe { UserInode::of_file(self.file) }
    }
}

/// A `poll()` call on a file.
///
/// # Invariants
///
/// `fh` is the file's initialised handle for as long as the call lasts.
pub(crate) struct Poll<'a> {
    file: &'a File,
    fh: *mut bindings::v4l2_fh,
    table: PollTable<'a>,
    requested: u32,
}

impl Poll<'_> {
    /// Wakes the poller when `cv` is notified.
    pub(crate) fn wait_on(&self, cv: &PollCondVar) {
        self.table.register_wait(self.file, cv);
    }

    /// The `EPOLL*` events the caller asked about.
    pub(crate) fn requested(&self) -> u32 {
        self.requested
    }

    /// Whether the file has V4L2 events to dequeue (`EPOLLPRI`).
    pub(crate) fn events_pending(&self) -> bool {
        // SAFETY: `fh` is valid for the call (invariant).
        unsafe { bindings::v4l2_event_pending(self.fh) != 0 }
    }
}

/// The V4L2 core's file handle and the driver's file, allocated together
/// at `open`; `file->private_data` points to `fh`.
///
/// # Invariants
///
/// `fh` is initialised and added to the node from `open` until `release`.
#[repr(C)]
#[pin_data]
pub(super) struct FileData<T: Driver> {
    #[pin]
    fh: Opaque<bindings::v4l2_fh>,
    events: EventSink,
    file: T::File,
}

impl<T: Driver> FileData<T> {
    /// The driver's file of an open file of a node of `T`.
    ///
    /// # Safety
    ///
    /// `file` must be an open file of a node registered for `T`, between
    /// `open` and `release`, and the reference not outlive that.
    pub(super) unsafe fn of_file<'a>(file: *mut bindings::file) -> &'a T::File {
        // SAFETY: Per the caller, `private_data` is the `fh` of a
        // `FileData<T>` (set by `open`), whose first field it is.
        let data = unsafe { &*(*file).private_data.cast::<FileData<T>>() };
        &data.file
    }

    /// The driver's file of a file handle of a node of `T`.
    ///
    /// # Safety
    ///
    /// `fh` must be the file handle of an open file of a node registered
    /// for `T`, and the reference not outlive the file.
    pub(super) unsafe fn of_fh<'a>(fh: *mut bindings::v4l2_fh) -> &'a T::File {
        // SAFETY: Per the caller, `fh` is the first field of a `FileData<T>`.
        let data = unsafe { &*fh.cast::<FileData<T>>() };
        &data.file
    }

    /// # Safety
    ///
    /// As for [`FileData::of_file`].
    pub(super) unsafe fn fh_of_file(file: *mut bindings::file) -> *mut bindings::v4l2_fh {
        // SAFETY: As in `of_file`.
        unsafe { (*file).private_data.cast() }
    }
}

/// Whether the file was opened non-blocking.
///
/// # Safety
///
/// `file` must be valid for the call.
pub(super) unsafe fn nonblocking(file: *mut bindings::file) -> bool {
    // SAFETY: Per the caller.
    unsafe { (*file).f_flags & bindings::O_NONBLOCK != 0 }
}

/// The file operations of a node of driver `T`.
pub(super) struct FileOps<T>(core::marker::PhantomData<T>);

impl<T: Driver> FileOps<T> {
    pub(super) const TABLE: bindings::v4l2_file_operations = bindings::v4l2_file_operations {
        owner: core::ptr::null_mut(),
        read: None,
        write: None,
        poll: Some(Self::poll),
        unlocked_ioctl: Some(bindings::video_ioctl2),
        compat_ioctl32: None,
        get_unmapped_area: None,
        mmap: Some(Self::mmap),
        open: Some(Self::open),
        release: Some(Self::release),
    };

    /// # Safety
    ///
    /// Only the V4L2 core calls this, for a file of a registered node of
    /// `T`.
    unsafe extern "C" fn open(file: *mut bindings::file) -> c_int {
        // SAFETY: The file is of a node of `T` (see the safety section),
        // which the core keeps registered or referenced for the call.
        let device = unsafe { Device::<T>::of_file(file) };
        let sink = Arc::pin_init(
            pin_init!(SinkInner {
                fh <- new_spinlock!(None, "v4l2_event_sink")
            }),
            GFP_KERNEL,
        );
        let events = match sink {
            Ok(sink) => EventSink(sink),
            Err(e) => return e.to_errno(),
        };
        // Allocated before the driver opens its file: past `T::open`
        // nothing may fail, or the driver's file would go without its
        // `release`.
        let slot = match KBox::<FileData<T>>::new_uninit(GFP_KERNEL) {
            Ok(slot) => slot,
            Err(e) => return Error::from(e).to_errno(),
        };
        let driver_file = match T::open(
            device.data(),
            &OpenFile {
                file,
                events: &events,
            },
        ) {
            Ok(driver_file) => driver_file,
            Err(e) => return e.to_errno(),
        };
        let file_events = events.clone();
        let Ok(data) = slot.write_pin_init(pin_init!(FileData::<T> {
            // SAFETY: Zeroed, as `v4l2_fh_init` expects (it leaves fields
            // such as `m2m_ctx` alone, and the core reads them).
            fh <- Opaque::ffi_init(|fh: *mut bindings::v4l2_fh| unsafe { fh.write_bytes(0, 1) }),
            events: file_events,
            file: driver_file,
        }));
        // SAFETY: The allocation stays where it is until `release` takes
        // it back: it is only used through the raw pointer.
        let data = KBox::into_raw(unsafe { Pin::into_inner_unchecked(data) });
        // SAFETY: `data` is live; `fh` is zeroed and pinned in it, and the
        // file owns it until `release`; `video_devdata(file)` is the node
        // being opened.
        // INVARIANT: Initialised and added here; `v4l2_fh_add` makes
        // `private_data` point to it.
        let fh = unsafe {
            let fh = (*data).fh.get();
            bindings::v4l2_fh_init(fh, bindings::video_devdata(file));
            bindings::v4l2_fh_add(fh, file);
            fh
        };
        // INVARIANT: The handle is initialised and stays so until
        // `release` revokes the sink.
        *events.0.fh.lock() = NonNull::new(fh);
        0
    }

    /// # Safety
    ///
    /// Only the V4L2 core calls this, for a file `open` succeeded on.
    unsafe extern "C" fn release(file: *mut bindings::file) -> c_int {
        // SAFETY: `open` made `private_data` point to the `fh` of the leaked
        // `FileData` (its first field); this takes it back, once.
        let data = unsafe { KBox::from_raw((*file).private_data.cast::<FileData<T>>()) };
        // Events stop before the handle goes.
        data.events.revoke();
        let fh = data.fh.get();
        // SAFETY: Initialised and added in `open`; no event reaches it any
        // more.
        unsafe {
            bindings::v4l2_fh_del(fh, file);
            bindings::v4l2_fh_exit(fh);
        }
        T::release(KBox::into_inner(data).file);
        0
    }

    /// # Safety
    ///
    /// Only the V4L2 core calls this, for an open file of a node of `T`.
    unsafe extern "C" fn poll(
        file: *mut bindings::file,
        table: *mut bindings::poll_table_struct,
    ) -> bindings::__poll_t {
        // SAFETY: See the safety section.
        let (driver_file, fh) = unsafe {
            (
                FileData::<T>::of_file(file),
                FileData::<T>::fh_of_file(file),
            )
        };
        // SAFETY: `file`, `fh` and `table` are valid for the call; the
        // event wait queue lives as long as the file.
        let requested = unsafe {
            bindings::virtio_media_poll_wait(file, &raw mut (*fh).wait, table);
            bindings::virtio_media_poll_requested(table)
        };
        let poll = Poll {
            // SAFETY: `file` is valid for the call.
            file: unsafe { File::from_raw_file(file) },
            fh,
            // SAFETY: `table` is the core's poll table for this call.
            table: unsafe { PollTable::from_raw(table) },
            requested,
        };
        T::poll(driver_file, &poll)
    }

    /// # Safety
    ///
    /// Only the V4L2 core calls this, for an open file of a node of `T`.
    unsafe extern "C" fn mmap(
        file: *mut bindings::file,
        vma: *mut bindings::vm_area_struct,
    ) -> c_int {
        // SAFETY: See the safety section; `vma` is being set up by this
        // call.
        let (driver_file, vma) = unsafe { (FileData::<T>::of_file(file), NewVma::from_raw(vma)) };
        match T::mmap(driver_file, vma) {
            Ok(()) => 0,
            Err(e) => e.to_errno(),
        }
    }
}
