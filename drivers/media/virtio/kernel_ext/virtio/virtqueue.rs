// SPDX-License-Identifier: GPL-2.0

//! Safe wrapper of a C `virtqueue` whose buffers are owned by the queue.
//!
//! A chain is added as a `KBox<T>`: the queue keeps the box (as the C
//! token) until the device returns the chain, and only then gives it back.
//! So whatever happens to the caller that queued it (timeout, signal, file
//! closed), the memory the device writes into stays allocated until the
//! device is done with it.
//!
//! Adding and taking back chains needs the queue exclusively (`&mut`, under
//! the owner's lock). Mapping memory for the device and notifying it do
//! not: they go through a [`Mapper`], a shared handle that stays usable
//! without the queue's lock until the queue is dropped, so that mapping a
//! large buffer (which may copy it through swiotlb) and the notification
//! (which traps to the hypervisor) never run with interrupts off.

use crate::kernel_ext::{bindings as ffi, dma_buf::DeviceRef, mm::PageRange};
use core::{marker::PhantomData, ptr::NonNull};
use kernel::{
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Full, Relaxed, Release},
        Arc,
    },
};

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

/// The C virtqueue as the [`Mapper`]s see it: usable until revoked.
///
/// # Invariants
///
/// `vq` is a live virtqueue while `live` is set or `users` is not zero;
/// the [`Virtqueue`] that owns it clears `live` and waits for `users` to
/// drop to zero before the queue may be deleted.
struct Shared {
    vq: NonNull<ffi::virtqueue>,
    live: Atomic<bool>,
    users: Atomic<usize>,
}

// SAFETY: Mapping, unmapping and notifying a live virtqueue need no lock
// and may be done from any thread; liveness is tracked with atomics.
unsafe impl Send for Shared {}
// SAFETY: As above.
unsafe impl Sync for Shared {}

/// Proof that a [`Shared`] queue is live: it counts as a user until
/// dropped.
struct Use<'a>(&'a Shared);

impl Shared {
    // Each side stores, then loads the other's variable: `enter` counts,
    // then checks `live`; `revoke` clears `live`, then checks the count.
    // Fully ordered read-modify-writes (a store alone cannot be `Full`)
    // keep them from both missing the other's store.
    fn enter(&self) -> Option<Use<'_>> {
        self.users.fetch_add(1, Full);
        if self.live.load(Relaxed) {
            // INVARIANT: Counted while live: the owner's revocation waits.
            Some(Use(self))
        } else {
            self.users.fetch_sub(1, Release);
            None
        }
    }

    /// Stops new users and waits for the current ones. Users are short
    /// (one mapping or one notification), and this only runs when the
    /// device goes away, in process context.
    fn revoke(&self) {
        self.live.xchg(false, Full);
        while self.users.load(Acquire) != 0 {
            kernel::time::delay::fsleep(kernel::time::Delta::from_micros(50));
        }
    }
}

impl Use<'_> {
    fn vq(&self) -> *mut ffi::virtqueue {
        self.0.vq.as_ptr()
    }
}

impl Drop for Use<'_> {
    fn drop(&mut self) {
        self.0.users.fetch_sub(1, Release);
    }
}

/// A virtqueue carrying chains of type `T`.
///
/// # Invariants
///
/// `shared.vq` is a live virtqueue until `del_vqs`, which only happens
/// after this wrapper is dropped (the drop revokes every [`Mapper`]), and
/// every token in it is a leaked `KBox<T>`.
pub(crate) struct Virtqueue<T: Chain> {
    shared: Arc<Shared>,
    _chain: PhantomData<KBox<T>>,
}

/// A notification of the device prepared under the queue's lock, to be
/// sent after it: with vfio-user (and many hypervisors) the notification
/// traps, and the device may run the whole command before it returns.
pub(crate) struct PendingKick {
    mapper: Mapper,
}

impl PendingKick {
    /// Tells the device about the chains added before the kick was prepared.
    pub(crate) fn notify(self) {
        if let Some(user) = self.mapper.0.enter() {
            // SAFETY: `user` proves the queue live.
            unsafe { ffi::virtqueue_notify(user.vq()) };
        }
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
            shared: Arc::new(
                Shared {
                    vq,
                    live: Atomic::new(true),
                    users: Atomic::new(0),
                },
                GFP_KERNEL,
            )?,
            _chain: PhantomData,
        })
    }

    fn vq(&self) -> *mut ffi::virtqueue {
        self.shared.vq.as_ptr()
    }

    /// A handle that maps memory for the device and notifies it without
    /// this queue's lock, until the queue is dropped.
    pub(crate) fn mapper(&self) -> Mapper {
        Mapper(self.shared.clone())
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
        // SAFETY: `self.vq()` is live (invariant); `list` holds `out + inp`
        // initialised scatterlists; the token is a leaked box that the queue
        // now owns until `get_buf` or `detach_unused` returns it.
        let ret = unsafe {
            ffi::virtqueue_add_sgs(
                self.vq(),
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
        // SAFETY: `self.vq()` is live.
        if !unsafe { ffi::virtqueue_kick_prepare(self.vq()) } {
            return None;
        }
        Some(PendingKick {
            mapper: self.mapper(),
        })
    }

    /// Takes back one chain the device is done with, and how many bytes it
    /// wrote into its writable buffer.
    pub(crate) fn get_buf(&mut self) -> Option<(KBox<T>, u32)> {
        let mut len = 0u32;
        // SAFETY: `self.vq()` is live and `len` a valid out-pointer.
        let token = unsafe { ffi::virtqueue_get_buf(self.vq(), &mut len) };
        let token = NonNull::new(token.cast::<T>())?;
        // SAFETY: Every token is a leaked `KBox<T>` (invariant), returned
        // once by the queue.
        Some((unsafe { KBox::from_raw(token.as_ptr()) }, len))
    }

    /// Takes back a chain the device never used; only valid once the device
    /// is reset.
    pub(crate) fn detach_unused(&mut self) -> Option<KBox<T>> {
        // SAFETY: `self.vq()` is live.
        let token = unsafe { ffi::virtqueue_detach_unused_buf(self.vq()) };
        let token = NonNull::new(token.cast::<T>())?;
        // SAFETY: As in `get_buf`.
        Some(unsafe { KBox::from_raw(token.as_ptr()) })
    }

    /// Whether the ring found the device misbehaving (a used entry for a
    /// descriptor it does not own, say) and stopped using the queue.
    pub(crate) fn is_broken(&self) -> bool {
        // SAFETY: `self.vq()` is live.
        unsafe { ffi::virtqueue_is_broken(self.vq()) }
    }
}

impl<T: Chain> Drop for Virtqueue<T> {
    fn drop(&mut self) {
        // Mappers and kicks still on their way must be done before the
        // queue may be deleted.
        self.shared.revoke();
    }
}

fn dma_direction(device_writes: bool) -> ffi::dma_data_direction {
    if device_writes {
        ffi::dma_data_direction::DMA_FROM_DEVICE
    } else {
        ffi::dma_data_direction::DMA_TO_DEVICE
    }
}

/// Maps memory for the device of one virtqueue, the way its transport
/// needs (DMA API behind an IOMMU or with ACCESS_PLATFORM, physical
/// addresses otherwise), without the queue's lock. Once the queue is gone
/// (the device was removed, after a reset), mapping fails with `ENODEV` and
/// unmapping does nothing: the teardown unmaps what the device held first.
#[derive(Clone)]
pub(crate) struct Mapper(Arc<Shared>);

/// Device address and length of each mapped piece of one range.
pub(crate) type Segments = KVec<(u64, u32)>;

impl Mapper {
    /// Maps `buf` for the device to read and write. The caller must keep
    /// `buf` alive and untouched until [`Mapper::unmap`].
    pub(crate) fn map(&self, buf: &mut [u8]) -> Result<u64> {
        let user = self.0.enter().ok_or(ENODEV)?;
        // SAFETY: `user` proves the queue live and `buf` is valid for its
        // length.
        let addr = unsafe {
            ffi::virtqueue_map_single_attrs(
                user.vq(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                ffi::dma_data_direction::DMA_BIDIRECTIONAL,
                0,
            )
        };
        // SAFETY: As above; `addr` came from this queue.
        if unsafe { ffi::virtqueue_map_mapping_error(user.vq(), addr) } != 0 {
            return Err(ENOMEM);
        }
        Ok(addr)
    }

    /// Undoes [`Mapper::map`] of `len` bytes at `addr`.
    pub(crate) fn unmap(&self, addr: u64, len: usize) {
        if let Some(user) = self.0.enter() {
            // SAFETY: `user` proves the queue live; `addr`/`len` describe
            // a mapping `map` made on it.
            unsafe {
                ffi::virtqueue_unmap_single_attrs(
                    user.vq(),
                    addr,
                    len,
                    ffi::dma_data_direction::DMA_BIDIRECTIONAL,
                    0,
                )
            };
        }
    }

    /// Maps guest pages for the device to read (or write, when
    /// `device_writes`), page by page. `pages` must live until
    /// [`Mapper::unmap_pages`] undoes this.
    pub(crate) fn map_pages(
        &self,
        pages: &impl PageRange,
        device_writes: bool,
    ) -> Result<Segments> {
        let mut mapped = KVec::with_capacity(pages.chunks().count(), GFP_KERNEL_ACCOUNT)?;
        let user = self.0.enter().ok_or(ENODEV)?;
        let dir = dma_direction(device_writes);
        for (page, offset, len) in pages.chunks() {
            // SAFETY: `user` proves the queue live; `page` is kept by
            // `pages` and `offset + len` is within it (`PageRange`).
            let addr =
                unsafe { ffi::virtio_media_map_page(user.vq(), page.as_ptr(), offset, len, dir) };
            // SAFETY: As above; `addr` came from this queue.
            let failed = unsafe { ffi::virtqueue_map_mapping_error(user.vq(), addr) } != 0;
            // A chunk is at most a page, so its length fits.
            let len32 = u32::try_from(len).unwrap_or(u32::MAX);
            if failed || mapped.push_within_capacity((addr, len32)).is_err() {
                if !failed {
                    // SAFETY: As above: `addr` is the mapping just made.
                    unsafe { ffi::virtqueue_unmap_single_attrs(user.vq(), addr, len, dir, 0) };
                }
                drop(user);
                self.unmap_pages(device_writes, &mapped);
                return Err(ENOMEM);
            }
        }
        Ok(mapped)
    }

    /// Undoes [`Mapper::map_pages`] once the device is done with them.
    pub(crate) fn unmap_pages(&self, device_writes: bool, mapped: &[(u64, u32)]) {
        let Some(user) = self.0.enter() else {
            return;
        };
        let dir = dma_direction(device_writes);
        for &(addr, len) in mapped {
            // SAFETY: `user` proves the queue live and `addr`/`len`
            // describe a mapping `map_pages` made on it.
            unsafe { ffi::virtqueue_unmap_single_attrs(user.vq(), addr, len as usize, dir, 0) };
        }
    }

    /// Whether any of `mapped` ([`Mapper::map_pages`]) needs the syncs
    /// below; when none does they may be skipped (the DMA API's
    /// `dma_need_sync`: a coherent device without bounce buffers).
    pub(crate) fn needs_sync(&self, mapped: &[(u64, u32)]) -> bool {
        let Some(user) = self.0.enter() else {
            return false;
        };
        mapped.iter().any(|&(addr, _)| {
            // SAFETY: `user` proves the queue live; `addr` is a mapping
            // made on it.
            unsafe { ffi::virtqueue_map_need_sync(user.vq(), addr) }
        })
    }

    /// Hands pages [`Mapper::map_pages`] mapped to the device again, after
    /// the CPU used them, without mapping them anew (a kept buffer).
    pub(crate) fn sync_for_device(&self, device_writes: bool, mapped: &[(u64, u32)]) {
        self.sync(true, device_writes, mapped);
    }

    /// Hands pages [`Mapper::map_pages`] mapped back to the CPU once the
    /// device is done with them, keeping the mapping (a kept buffer).
    pub(crate) fn sync_for_cpu(&self, device_writes: bool, mapped: &[(u64, u32)]) {
        self.sync(false, device_writes, mapped);
    }

    fn sync(&self, for_device: bool, device_writes: bool, mapped: &[(u64, u32)]) {
        let Some(user) = self.0.enter() else {
            return;
        };
        let dir = dma_direction(device_writes);
        for &(addr, len) in mapped {
            let (vq, len) = (user.vq(), len as usize);
            // SAFETY: `user` proves the queue live and `addr`/`len`
            // describe a mapping `map_pages` made on it.
            unsafe {
                if for_device {
                    ffi::virtqueue_map_sync_single_range_for_device(vq, addr, 0, len, dir)
                } else {
                    ffi::virtqueue_map_sync_single_range_for_cpu(vq, addr, 0, len, dir)
                }
            };
        }
    }

    /// The device to attach imported dma-bufs to, if the transport allows
    /// (see `virtio_media_dmabuf_device`).
    pub(crate) fn dmabuf_device(&self) -> Option<DeviceRef> {
        let user = self.0.enter()?;
        // SAFETY: `user` proves the queue live.
        let device = NonNull::new(unsafe { ffi::virtio_media_dmabuf_device(user.vq()) })?;
        // SAFETY: The device is the queue's DMA device or its transport's
        // parent, valid while the queue is.
        Some(unsafe { DeviceRef::get(device) })
    }
}
