// SPDX-License-Identifier: GPL-2.0

//! Safe wrapper of a C `virtqueue` whose buffers are owned by the queue.
//!
//! A chain is added as a `KBox<T>`: the queue keeps the box (as the C
//! token) until the device returns the chain, and only then gives it back.
//! So whatever happens to the caller that queued it (timeout, signal, file
//! closed), the memory the device writes into stays allocated until the
//! device is done with it.

use crate::{dmabuf::DeviceRef, ffi, pages::PageRange};
use core::{
    marker::PhantomData,
    ptr::NonNull,
    sync::atomic::{AtomicUsize, Ordering},
};
use kernel::{prelude::*, sync::Arc};

/// A buffer chain: one device-readable and one device-writable buffer,
/// either of which may be empty.
///
/// The buffers are `KVec`s, so they are kmalloc'd (in the kernel's linear
/// mapping, as scatterlists need) and their heap storage does not move when
/// the chain does; while the queue owns the chain nobody else can reach
/// them, so the device is their only user until the chain comes back.
pub(crate) trait Chain {
    /// The (device-readable, device-writable) buffers.
    fn buffers(&mut self) -> (&KVec<u8>, &mut KVec<u8>);
}

/// A virtqueue carrying chains of type `T`.
///
/// # Invariants
///
/// `vq` is a live virtqueue of the device until `del_vqs`, which only
/// happens after this wrapper is dropped, and every token in it is a leaked
/// `KBox<T>`. `kicks` counts the [`PendingKick`]s alive; dropping the
/// wrapper waits until there are none.
pub(crate) struct Virtqueue<T: Chain> {
    vq: NonNull<ffi::virtqueue>,
    kicks: Arc<AtomicUsize>,
    _chain: PhantomData<KBox<T>>,
}

/// A notification of the device prepared under the queue's lock, to be
/// sent after it: with vfio-user (and many hypervisors) the notification
/// traps, and the device may run the whole command before it returns.
///
/// # Invariants
///
/// `vq` is live while `kicks` counts this kick (the wrapper's drop waits).
pub(crate) struct PendingKick {
    vq: NonNull<ffi::virtqueue>,
    kicks: Arc<AtomicUsize>,
}

// SAFETY: Notifying a live virtqueue needs no lock and may be done from any
// thread.
unsafe impl Send for PendingKick {}

impl PendingKick {
    /// Tells the device about the chains added before the kick was prepared.
    pub(crate) fn notify(self) {
        // SAFETY: `vq` is live while this kick is counted (invariant).
        unsafe { ffi::virtqueue_notify(self.vq.as_ptr()) };
    }
}

impl Drop for PendingKick {
    fn drop(&mut self) {
        self.kicks.fetch_sub(1, Ordering::Release);
    }
}

// SAFETY: The C virtqueue may be used from any thread provided accesses are
// serialised, which `&mut self` on every mutating method ensures; the tokens
// are `KBox<T>`, which may move between threads when `T: Send`.
unsafe impl<T: Chain + Send> Send for Virtqueue<T> {}

impl<T: Chain> Virtqueue<T> {
    /// # Safety
    ///
    /// `vq` must be a live virtqueue that outlives the wrapper and that no
    /// other code adds buffers to.
    pub(crate) unsafe fn from_raw(vq: NonNull<ffi::virtqueue>) -> Result<Self> {
        Ok(Self {
            vq,
            kicks: Arc::new(AtomicUsize::new(0), GFP_KERNEL)?,
            _chain: PhantomData,
        })
    }

    /// Adds `chain`; on failure (queue full: `ENOSPC`) gives it back.
    pub(crate) fn add(&mut self, mut chain: KBox<T>) -> Result<(), (Error, KBox<T>)> {
        let (readable, writable) = chain.buffers();
        let (readable, writable) = (
            core::ptr::from_ref(readable.as_slice()),
            core::ptr::from_mut(writable.as_mut_slice()),
        );
        let mut sgs = [ffi::scatterlist::default(), ffi::scatterlist::default()];
        let mut list: [*mut ffi::scatterlist; 2] = [core::ptr::null_mut(); 2];
        let mut count = 0usize;
        let mut add_sg = |sgs: &mut [ffi::scatterlist; 2], ptr: *const u8, len: usize| {
            let Ok(len) = u32::try_from(len) else {
                return Err(EINVAL);
            };
            if len == 0 {
                return Ok(0u32);
            }
            let slot = sgs.get_mut(count).ok_or(EINVAL)?;
            // SAFETY: `slot` is a valid scatterlist entry and `ptr` points to
            // `len` bytes of a `KVec`, kmalloc'd and so linear-mapped.
            unsafe { ffi::sg_init_one(slot, ptr.cast(), len) };
            if let Some(entry) = list.get_mut(count) {
                *entry = slot;
            }
            count += 1;
            Ok(1)
        };
        let out = match add_sg(&mut sgs, readable.cast(), readable.len()) {
            Ok(n) => n,
            Err(e) => return Err((e, chain)),
        };
        let inp = match add_sg(&mut sgs, writable.cast(), writable.len()) {
            Ok(n) => n,
            Err(e) => return Err((e, chain)),
        };
        let token = KBox::into_raw(chain);
        // SAFETY: `self.vq` is live (invariant); `list` holds `out + inp`
        // initialised scatterlists; the token is a leaked box that the queue
        // now owns until `get_buf` or `detach_unused` returns it.
        let ret = unsafe {
            ffi::virtqueue_add_sgs(
                self.vq.as_ptr(),
                list.as_mut_ptr(),
                out,
                inp,
                token.cast(),
                ffi::GFP_ATOMIC,
            )
        };
        if ret < 0 {
            // SAFETY: The queue rejected the token, so we own it again.
            return Err((Error::from_errno(ret), unsafe { KBox::from_raw(token) }));
        }
        Ok(())
    }

    /// Prepares telling the device about added chains, if it wants to be
    /// told; the returned kick is sent after the caller's lock is dropped.
    pub(crate) fn prepare_kick(&mut self) -> Option<PendingKick> {
        // SAFETY: `self.vq` is live.
        if !unsafe { ffi::virtqueue_kick_prepare(self.vq.as_ptr()) } {
            return None;
        }
        self.kicks.fetch_add(1, Ordering::Acquire);
        // INVARIANT: Counted above; the wrapper's drop waits for it.
        Some(PendingKick {
            vq: self.vq,
            kicks: self.kicks.clone(),
        })
    }

    /// Takes back one chain the device is done with, and how many bytes it
    /// wrote into its writable buffer.
    pub(crate) fn get_buf(&mut self) -> Option<(KBox<T>, u32)> {
        let mut len = 0u32;
        // SAFETY: `self.vq` is live and `len` a valid out-pointer.
        let token = unsafe { ffi::virtqueue_get_buf(self.vq.as_ptr(), &mut len) };
        let token = NonNull::new(token.cast::<T>())?;
        // SAFETY: Every token is a leaked `KBox<T>` (invariant), returned
        // once by the queue.
        Some((unsafe { KBox::from_raw(token.as_ptr()) }, len))
    }

    /// Takes back a chain the device never used; only valid once the device
    /// is reset.
    pub(crate) fn detach_unused(&mut self) -> Option<KBox<T>> {
        // SAFETY: `self.vq` is live.
        let token = unsafe { ffi::virtqueue_detach_unused_buf(self.vq.as_ptr()) };
        let token = NonNull::new(token.cast::<T>())?;
        // SAFETY: As in `get_buf`.
        Some(unsafe { KBox::from_raw(token.as_ptr()) })
    }

    /// Maps `buf` for the device to read and write, the way this queue's
    /// transport needs (DMA API behind an IOMMU or with ACCESS_PLATFORM,
    /// physical addresses otherwise). The caller must keep `buf` alive and
    /// untouched until [`Virtqueue::unmap`].
    pub(crate) fn map(&mut self, buf: &mut [u8]) -> Result<u64> {
        // SAFETY: `self.vq` is live and `buf` is valid for its length.
        let addr = unsafe {
            ffi::virtqueue_map_single_attrs(
                self.vq.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                ffi::dma_data_direction::DMA_BIDIRECTIONAL,
                0,
            )
        };
        // SAFETY: `self.vq` is live; `addr` came from it.
        if unsafe { ffi::virtqueue_map_mapping_error(self.vq.as_ptr(), addr) } != 0 {
            return Err(ENOMEM);
        }
        Ok(addr)
    }

    /// Undoes [`Virtqueue::map`] of `len` bytes at `addr`, once the device
    /// is done with them.
    pub(crate) fn unmap(&mut self, addr: u64, len: usize) {
        // SAFETY: `self.vq` is live and `addr`/`len` describe a mapping
        // `map` made on it.
        unsafe {
            ffi::virtqueue_unmap_single_attrs(
                self.vq.as_ptr(),
                addr,
                len,
                ffi::dma_data_direction::DMA_BIDIRECTIONAL,
                0,
            )
        };
    }

    /// Maps guest pages for the device to read (or write, when
    /// `device_writes`), page by page, appending the device address and
    /// length of each to `mapped`, which must have room for them (this runs
    /// under the queue's spinlock: no allocation). `pages` must live until
    /// [`Virtqueue::unmap_pages`] undoes this.
    pub(crate) fn map_pages(
        &mut self,
        pages: &impl PageRange,
        device_writes: bool,
        mapped: &mut KVec<(u64, u32)>,
    ) -> Result {
        let dir = dma_direction(device_writes);
        for (page, offset, len) in pages.chunks() {
            // SAFETY: `self.vq` is live; `page` is kept by `pages` and
            // `offset + len` is within it (`PageRange`).
            let addr = unsafe { ffi::virtio_media_map_page(self.vq.as_ptr(), page.as_ptr(), offset, len, dir) };
            // SAFETY: `self.vq` is live; `addr` came from it.
            let failed = unsafe { ffi::virtqueue_map_mapping_error(self.vq.as_ptr(), addr) } != 0;
            // A chunk is at most a page, so its length fits.
            if failed || mapped.push_within_capacity((addr, len as u32)).is_err() {
                if !failed {
                    // SAFETY: As above: `addr` is the mapping just made.
                    unsafe { ffi::virtqueue_unmap_single_attrs(self.vq.as_ptr(), addr, len, dir, 0) };
                }
                self.unmap_pages(device_writes, mapped);
                mapped.clear();
                return Err(ENOMEM);
            }
        }
        Ok(())
    }

    /// The device to attach imported dma-bufs to, if the transport allows
    /// (see `virtio_media_dmabuf_device`).
    pub(crate) fn dmabuf_device(&self) -> Option<DeviceRef> {
        // SAFETY: `self.vq` is live.
        let device = NonNull::new(unsafe { ffi::virtio_media_dmabuf_device(self.vq.as_ptr()) })?;
        // SAFETY: The device is the queue's DMA device or its transport's
        // parent, valid while the queue is.
        Some(unsafe { DeviceRef::get(device) })
    }

    /// Undoes [`Virtqueue::map_pages`] once the device is done with them.
    pub(crate) fn unmap_pages(&mut self, device_writes: bool, mapped: &[(u64, u32)]) {
        let dir = dma_direction(device_writes);
        for &(addr, len) in mapped {
            // SAFETY: `self.vq` is live and `addr`/`len` describe a mapping
            // `map_pages` made on it.
            unsafe {
                ffi::virtqueue_unmap_single_attrs(self.vq.as_ptr(), addr, len as usize, dir, 0)
            };
        }
    }
}

fn dma_direction(device_writes: bool) -> ffi::dma_data_direction {
    if device_writes {
        ffi::dma_data_direction::DMA_FROM_DEVICE
    } else {
        ffi::dma_data_direction::DMA_TO_DEVICE
    }
}

impl<T: Chain> Drop for Virtqueue<T> {
    fn drop(&mut self) {
        // A kick prepared before the queue went may still be on its way:
        // the virtqueue must outlive it. Notifications are short, and this
        // only runs when the device goes away, in process context.
        while self.kicks.load(Ordering::Acquire) != 0 {
            kernel::time::delay::fsleep(kernel::time::Delta::from_micros(50));
        }
    }
}
