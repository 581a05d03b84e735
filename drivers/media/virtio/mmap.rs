// SPDX-License-Identifier: GPL-2.0

//! MMAP buffers mapped into user space through the shared-memory region.
//!
//! A `Mapping` is one MMAP command's result. All VMAs made from it (fork,
//! splits) share one reference, counted in `vmas`; when the last VMA goes,
//! the MUNMAP is sent from a workqueue, because VMAs are closed under
//! `mmap_lock` and waiting for the device there could stall every other
//! thread of the process (or deadlock with a fault on the same lock).

#![forbid(unsafe_code)]

use crate::MediaDevice;
use core::sync::atomic::{AtomicUsize, Ordering};
use kernel::{
    prelude::*,
    sync::Arc,
    workqueue::{impl_has_work, new_work, Work, WorkItem},
};

#[pin_data]
pub(crate) struct Mapping {
    dev: Arc<MediaDevice>,
    /// Offset of the mapping in the shared-memory region, as MMAP returned.
    shm_offset: u64,
    /// Guest physical address of the mapping.
    phys: u64,
    /// Bytes mapped, within the shared-memory region.
    len: u64,
    /// Page offset the program mapped the buffer at.
    pgoff: usize,
    /// VMAs using this mapping.
    vmas: AtomicUsize,
    #[pin]
    work: Work<Mapping>,
}

impl_has_work! {
    impl HasWork<Self> for Mapping { self.work }
}

impl Mapping {
    /// Records a mapping the device made at `shm_offset`, after checking
    /// that `len` bytes from there lie inside the shared-memory region.
    pub(crate) fn new(
        dev: Arc<MediaDevice>,
        shm_offset: u64,
        len: u64,
        pgoff: usize,
    ) -> Result<Arc<Self>> {
        let Some(shm) = dev.shm() else {
            return Err(ENODEV);
        };
        let end = shm_offset.checked_add(len).ok_or(EINVAL)?;
        if end > shm.len || shm_offset % (kernel::page::PAGE_SIZE as u64) != 0 {
            pr_err!(
                "MMAP gave {:#x}+{:#x}, outside the {:#x}-byte shared memory or unaligned\n",
                shm_offset,
                len,
                shm.len
            );
            return Err(EIO);
        }
        let phys = shm.addr.checked_add(shm_offset).ok_or(EIO)?;
        Arc::pin_init(
            pin_init!(Self {
                dev,
                shm_offset,
                phys,
                len,
                pgoff,
                vmas: AtomicUsize::new(1),
                work <- new_work!("virtio_media::Mapping::work"),
            }),
            GFP_KERNEL,
        )
    }

    /// (guest physical address, page offset the program mapped it at,
    /// length) of the mapping.
    pub(crate) fn extent(&self) -> (u64, usize, u64) {
        (self.phys, self.pgoff, self.len)
    }

    pub(crate) fn device(&self) -> &MediaDevice {
        &self.dev
    }

    /// One more VMA shares this mapping.
    pub(crate) fn vma_opened(&self) {
        self.vmas.fetch_add(1, Ordering::Relaxed);
    }

    /// One VMA went; `true` when it was the last one.
    pub(crate) fn vma_closed(&self) -> bool {
        self.vmas.fetch_sub(1, Ordering::AcqRel) == 1
    }

    /// Sends the MUNMAP from a workqueue (see the module comment).
    pub(crate) fn unmap_later(this: Arc<Self>) {
        // The work item is embedded and only queued once (from the last
        // VMA's close), so enqueueing cannot fail.
        let _ = crate::ffi::driver_workqueue().enqueue(this);
    }
}

impl WorkItem for Mapping {
    type Pointer = Arc<Mapping>;

    fn run(this: Arc<Mapping>) {
        match this.dev.unmap(this.shm_offset) {
            Ok(()) => {}
            // The device is gone or was reset: nothing is mapped any more.
            Err(e) if e == ENODEV || this.dev.is_broken() => {}
            Err(e) => pr_warn!("MUNMAP of {:#x} failed: {:?}\n", this.shm_offset, e),
        }
    }
}
