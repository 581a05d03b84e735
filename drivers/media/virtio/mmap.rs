// SPDX-License-Identifier: GPL-2.0

//! MMAP buffers mapped into user space through the shared-memory region.
//!
//! A `Mapping` is one MMAP command's result. All VMAs made from it (fork,
//! splits) share it; when the last one goes, the MUNMAP is put on the
//! commandq at once, so that it reaches the device before an MMAP of the
//! same buffer that may follow (a device may map a buffer once at a time),
//! but its answer is waited for on the driver's workqueue: VMAs are closed
//! under `mmap_lock`, and waiting for the device there would stall every
//! other thread of the process. Pages are mapped at fault time, only while
//! the device works (see `MediaDevice::stop`).

#![forbid(unsafe_code)]

use crate::{
    command::{PendingCommand, Wait},
    device::{Abandon, MediaDevice},
    kernel_ext::mm::DeviceMemory,
    protocol,
};
use kernel::{
    new_mutex,
    prelude::*,
    sync::{Arc, Mutex},
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
    /// The MUNMAP sent when the mapping went, whose answer the work waits
    /// for; `None` if it could not be sent then (the work sends it).
    #[pin]
    munmap: Mutex<Option<PendingCommand>>,
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
                munmap <- new_mutex!(None, "virtio_media::Mapping::munmap"),
                work <- new_work!("virtio_media::Mapping::work"),
            }),
            GFP_KERNEL,
        )
    }

    /// Sends the MUNMAP now and waits for its answer on the workqueue (see
    /// the module comment). Sent from the workqueue instead when it cannot
    /// be sent now: no memory, or a full ring and a signal pending.
    pub(crate) fn unmap_later(this: Arc<Self>) {
        if this.dev.generation() == this.generation {
            let sent = this.dev.send(
                |buf| protocol::munmap_request(buf, this.shm_offset),
                protocol::HEADER_RESPONSE_SIZE,
                KVec::new(),
                0,
            );
            if let Ok(pending) = sent {
                *this.munmap.lock() = Some(pending);
            }
        }
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
        let sent = this.munmap.lock().take();
        let result = match sent {
            Some(pending) => this
                .dev
                .answer(pending, Wait::Uninterruptible, Abandon::Drop)
                .and_then(|response| response.status()),
            None => this.dev.unmap(this.shm_offset),
        };
        match result {
            Ok(()) => {}
            // The device is gone or was reset: nothing is mapped any more.
            Err(e) if e == ENODEV || this.dev.is_broken() => {}
            Err(e) => pr_warn!("MUNMAP of {:#x} failed: {:?}\n", this.shm_offset, e),
        }
    }
}
