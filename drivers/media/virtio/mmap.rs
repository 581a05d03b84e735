// SPDX-License-Identifier: GPL-2.0

//! MMAP buffers mapped into user space through the shared-memory region.
//!
//! A `Mapping` is one MMAP command's result. All VMAs made from it (fork,
//! splits) share it; when the last one goes, the MUNMAP is sent from the
//! driver's workqueue, because VMAs are closed under `mmap_lock` and
//! waiting for the device there could stall every other thread of the
//! process (or deadlock with a fault on the same lock). Pages are mapped at
//! fault time, only while the device works (see `MediaDevice::stop`).

#![forbid(unsafe_code)]

use crate::{device::MediaDevice, kernel_ext::mm::DeviceMemory};
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
    /// The device's generation when it made the mapping: after a reset
    /// the offset means nothing, or another mapping.
    generation: u64,
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
        let generation = dev.generation();
        Arc::pin_init(
            pin_init!(Self {
                generation,
                dev,
                shm_offset,
                phys,
                len,
                pgoff,
                work <- new_work!("virtio_media::Mapping::work"),
            }),
            GFP_KERNEL,
        )
    }

    /// Sends the MUNMAP from a workqueue (see the module comment).
    pub(crate) fn unmap_later(this: Arc<Self>) {
        // The work item is embedded and only queued once (when the last
        // VMA goes, or when the mapping is refused), so enqueueing cannot
        // fail.
        let _ = this.dev.workqueue().enqueue(this.clone());
    }
}

impl DeviceMemory for Mapping {
    fn extent(&self) -> (u64, usize, u64) {
        (self.phys, self.pgoff, self.len)
    }

    fn while_mappable<R>(&self, insert: impl FnOnce() -> R) -> Option<R> {
        self.dev.while_mappable(self.generation, insert)
    }

    fn released(this: Arc<Self>) {
        Mapping::unmap_later(this);
    }
}

impl WorkItem for Mapping {
    type Pointer = Arc<Mapping>;

    fn run(this: Arc<Mapping>) {
        // The device was reset since (system sleep): it forgot the
        // mapping, and the offset may be another one's now.
        if this.dev.generation() != this.generation {
            return;
        }
        match this.dev.unmap(this.shm_offset) {
            Ok(()) => {}
            // The device is gone or was reset: nothing is mapped any more.
            Err(e) if e == ENODEV || this.dev.is_broken() => {}
            Err(e) => pr_warn!("MUNMAP of {:#x} failed: {:?}\n", this.shm_offset, e),
        }
    }
}
