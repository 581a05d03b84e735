// SPDX-License-Identifier: GPL-2.0

//! Guest memory the device is pointed at, as `virtio_media_sg_entry`
//! lists: the pages of USERPTR buffers (pinned) and of guest-backed MMAP
//! buffers (the driver's), mapped for the device from QBUF until the
//! buffer comes back.

#![forbid(unsafe_code)]

use crate::{
    device::MediaDevice,
    kernel_ext::{
        alloc::LeanVec,
        dma_buf::ImportedDmaBuf,
        mm::{OwnedPages, PinnedPages},
        virtio::virtqueue::{Mapper, Segments},
    },
    protocol::{sg_entry, SG_ENTRY_SIZE},
    stream::QueueKind,
};
use kernel::{prelude::*, sync::Arc};

/// Whose pages a plane is; they live as long as its mapping.
enum Pages {
    User(PinnedPages),
    Driver(Arc<OwnedPages>),
    /// Mapped by its exporter for the device, not by the virtqueue.
    DmaBuf(ImportedDmaBuf),
}

/// One plane of a buffer as the device sees it.
struct Plane {
    pages: Pages,
    /// Device address and length of each page or segment, in order.
    mapped: Segments,
    /// Whether handing the pages between CPU and device needs a sync (a
    /// bounce buffer, caches the device does not see): without, the syncs
    /// of every page of a kept buffer at each QBUF and DQBUF are skipped,
    /// as the DMA API asks.
    needs_sync: bool,
}

/// The memory of one buffer while the device may use it.
///
/// Dropping it unmaps the pages for the device and unpins user pages; so it
/// must only be dropped once the device is done with the buffer (it
/// returned it, the queue was stopped or freed, or the device was reset).
pub(crate) struct GuestBuffer {
    mapper: Mapper,
    device_writes: bool,
    planes: KVec<Plane>,
    /// The SG entries of every plane, once computed: a kept buffer is
    /// queued again with the same ones (a 1080p frame has about a thousand).
    sg_entries: Option<Arc<KVec<u8>>>,
}

impl GuestBuffer {
    fn empty(dev: &MediaDevice, planes: usize, device_writes: bool) -> Result<Self> {
        let mapper = dev.commandq().mapper().ok_or(ENODEV)?;
        Ok(Self {
            mapper,
            device_writes,
            planes: KVec::with_capacity(planes, GFP_KERNEL_ACCOUNT)?,
            sg_entries: None,
        })
    }

    /// Pins and maps the user planes `(address, length)`; zero-length
    /// planes carry no memory, as the device expects.
    pub(crate) fn pin_user(
        dev: &MediaDevice,
        planes: &[(u64, u32)],
        device_writes: bool,
    ) -> Result<Self> {
        let mut this = Self::empty(dev, planes.len(), device_writes)?;
        for &(addr, len) in planes.iter().filter(|(_, len)| *len > 0) {
            let pinned =
                PinnedPages::pin(addr, usize::try_from(len)?, device_writes).inspect_err(|e| {
                    pr_debug!("USERPTR {:#x}+{:#x} cannot be pinned: {:?}\n", addr, len, e);
                })?;
            let mapped = this.mapper.map_pages(&pinned, device_writes)?;
            let plane = Plane {
                needs_sync: this.mapper.needs_sync(&mapped),
                pages: Pages::User(pinned),
                mapped,
            };
            this.push(plane)?;
        }
        Ok(this)
    }

    /// Imports the dma-buf planes `(fd, length)` (length 0: the whole
    /// dma-buf); returns the lengths the device is given.
    pub(crate) fn import_dmabufs(
        dev: &MediaDevice,
        planes: &[(i32, u32)],
        device_writes: bool,
    ) -> Result<(Self, KVec<u32>)> {
        let mut this = Self::empty(dev, planes.len(), device_writes)?;
        let mut lengths = KVec::with_capacity(planes.len(), GFP_KERNEL)?;
        for &(fd, length) in planes {
            let device = this.mapper.dmabuf_device().ok_or(EINVAL)?;
            let imported = ImportedDmaBuf::import(device, fd, device_writes).inspect_err(|e| {
                pr_debug!("DMABUF fd {} cannot be imported: {:?}\n", fd, e);
            })?;
            let size = u32::try_from(imported.size()).map_err(|_| EINVAL)?;
            let length = if length == 0 { size } else { length };
            if length > size {
                return Err(EINVAL);
            }
            let mapped = truncate(imported.segments()?, length)?;
            this.push(Plane {
                pages: Pages::DmaBuf(imported),
                mapped,
                // The exporter syncs for its attachment.
                needs_sync: false,
            })?;
            lengths.push(length, GFP_KERNEL)?;
        }
        Ok((this, lengths))
    }

    /// Maps the driver's pages of a guest-backed MMAP buffer.
    pub(crate) fn map_driver(
        dev: &MediaDevice,
        planes: &[Arc<OwnedPages>],
        device_writes: bool,
    ) -> Result<Self> {
        let mut this = Self::empty(dev, planes.len(), device_writes)?;
        for plane in planes {
            let mapped = this.mapper.map_pages(&**plane, device_writes)?;
            this.push(Plane {
                needs_sync: this.mapper.needs_sync(&mapped),
                pages: Pages::Driver(plane.clone()),
                mapped,
            })?;
        }
        Ok(this)
    }

    /// Adds a mapped plane; on failure it is unmapped, not leaked.
    fn push(&mut self, plane: Plane) -> Result {
        // Room was reserved for every plane (`empty`).
        if let Err(refused) = self.planes.push_within_capacity(plane) {
            self.release(refused.0);
            return Err(ENOMEM);
        }
        Ok(())
    }

    /// Unmaps a plane for the device, then unpins or lets go of its pages.
    fn release(&self, plane: Plane) {
        match plane.pages {
            Pages::User(pinned) => {
                self.mapper.unmap_pages(self.device_writes, &plane.mapped);
                drop(pinned);
            }
            Pages::Driver(owned) => {
                self.mapper.unmap_pages(self.device_writes, &plane.mapped);
                drop(owned);
            }
            Pages::DmaBuf(imported) => drop(imported),
        }
    }

    /// Hands a kept buffer to the device again: what the program wrote
    /// reaches the device (a no-op unless the transport bounces or caches).
    pub(crate) fn sync_for_device(&self) {
        for plane in self.planes.iter() {
            if plane.needs_sync {
                self.mapper
                    .sync_for_device(self.device_writes, &plane.mapped);
            }
        }
    }

    /// Hands a buffer the device returned back to the program, mapping
    /// kept: what the device wrote reaches the pages.
    pub(crate) fn sync_for_cpu(&self) {
        for plane in self.planes.iter() {
            if plane.needs_sync {
                self.mapper.sync_for_cpu(self.device_writes, &plane.mapped);
            }
        }
    }

    /// The SG entries of every plane, in order, contiguous pages merged.
    pub(crate) fn sg_entries(&mut self) -> Result<Arc<KVec<u8>>> {
        if let Some(entries) = &self.sg_entries {
            return Ok(entries.clone());
        }
        let mut entries = KVec::new();
        for plane in self.planes.iter() {
            let merged = merge(&plane.mapped)?;
            entries.reserve(merged.len().saturating_mul(SG_ENTRY_SIZE), GFP_KERNEL)?;
            for (addr, len) in merged {
                entries.extend_from_slice(&sg_entry(addr, len), GFP_KERNEL)?;
            }
        }
        let entries = Arc::new(entries, GFP_KERNEL)?;
        self.sg_entries = Some(entries.clone());
        Ok(entries)
    }
}

impl Drop for GuestBuffer {
    fn drop(&mut self) {
        let planes = core::mem::take(&mut self.planes);
        for plane in planes {
            self.release(plane);
        }
    }
}

/// A buffer in guest memory the device holds (queued) or has prepared, or
/// one it returned whose memory is kept for the program to queue again.
pub(crate) struct Held<M> {
    kind: QueueKind,
    index: u32,
    serial: u64,
    prepared_only: bool,
    /// Returned by the device and kept, pinned and mapped, for a QBUF of
    /// the same memory (see [`HeldBuffers::take_kept`]).
    kept: bool,
    /// What the program queued each plane with (user pointer, dma-buf fd
    /// or mmap offset), given back on DQBUF.
    pub(crate) pointers: KVec<u64>,
    /// The (address, length) of each plane that names the same memory on
    /// the next QBUF; `None` if the memory is not kept once returned.
    reuse_key: Option<KVec<(u64, u32)>>,
    memory: M,
}

impl<M> Held<M> {
    /// The memory, if the buffer was kept with the same `key`.
    pub(crate) fn reuse(self, key: &[(u64, u32)]) -> Option<M> {
        match &self.reuse_key {
            Some(kept) if self.kept && kept.as_slice() == key => Some(self.memory),
            _ => None,
        }
    }

    /// The memory (to sync it for the CPU before it is kept).
    pub(crate) fn memory(&self) -> &M {
        &self.memory
    }

    /// Whether the device returned it and its memory was kept.
    pub(crate) fn is_kept(&self) -> bool {
        self.kept
    }
}

/// The guest-memory buffers of one session the device may be using, at
/// most one entry per queue and index, and the memory of returned buffers
/// kept for the next QBUF. `M` is their memory ([`GuestBuffer`]).
///
/// Keeping a USERPTR buffer's pages pinned and mapped from one QBUF to the
/// next, as vb2 does, saves pinning and mapping every page of every frame.
/// Like vb2, a QBUF with the same address and length reuses the pages
/// pinned first, even if the program mapped other memory there since: the
/// device only ever sees pages the driver has pinned.
pub(crate) struct HeldBuffers<M> {
    held: LeanVec<Held<M>>,
    next_serial: u64,
}

impl<M> Default for HeldBuffers<M> {
    fn default() -> Self {
        Self {
            held: LeanVec::new(),
            next_serial: 0,
        }
    }
}

impl<M> HeldBuffers<M> {
    fn position(&self, kind: QueueKind, index: u32) -> Option<usize> {
        self.held
            .iter()
            .position(|h| h.kind == kind && h.index == index)
    }

    /// Records a buffer handed to the device by QBUF, or by PREPARE_BUF
    /// (`prepared_only`). A buffer the device holds already cannot be
    /// queued again (`EINVAL`, as vb2 says); a prepared or kept one is
    /// replaced and given back. `reuse_key` names memory to keep once the
    /// device returns it. Returns a serial that names the new entry.
    pub(crate) fn insert(
        &mut self,
        kind: QueueKind,
        index: u32,
        prepared_only: bool,
        pointers: KVec<u64>,
        reuse_key: Option<KVec<(u64, u32)>>,
        memory: M,
    ) -> Result<(u64, Option<Held<M>>)> {
        let replaced = match self.position(kind, index) {
            Some(i) if self.held.get(i).is_some_and(|h| h.prepared_only || h.kept) => {
                self.held.remove(i).ok()
            }
            Some(_) => return Err(EINVAL),
            None => None,
        };
        let serial = self.next_serial;
        self.next_serial = self.next_serial.wrapping_add(1);
        self.held.push(
            Held {
                kind,
                index,
                serial,
                prepared_only,
                kept: false,
                pointers,
                reuse_key,
                memory,
            },
            GFP_KERNEL,
        )?;
        Ok((serial, replaced))
    }

    /// Takes back the entry `insert` returned `serial` for, if still held.
    pub(crate) fn remove_serial(&mut self, serial: u64) -> Option<Held<M>> {
        let i = self.held.iter().position(|h| h.serial == serial)?;
        self.held.remove(i).ok()
    }

    /// The device returned buffer `index` of `kind`.
    pub(crate) fn take(&mut self, kind: QueueKind, index: u32) -> Option<Held<M>> {
        let i = self.position(kind, index)?;
        if self.held.get(i).is_some_and(|h| h.kept) {
            return None;
        }
        self.held.remove(i).ok()
    }

    /// Keeps the memory of a buffer `take` gave back, if it can be reused;
    /// otherwise (or without room) gives it back to be released.
    pub(crate) fn keep(&mut self, mut held: Held<M>) -> Option<Held<M>> {
        if held.reuse_key.is_none() || self.position(held.kind, held.index).is_some() {
            return Some(held);
        }
        held.kept = true;
        held.prepared_only = false;
        // `take` made room for it.
        self.held.push_within_capacity(held).err().map(|e| e.0)
    }

    /// Takes the kept memory of buffer `index` of `kind`, if any.
    pub(crate) fn take_kept(&mut self, kind: QueueKind, index: u32) -> Option<Held<M>> {
        let i = self.position(kind, index)?;
        if !self.held.get(i).is_some_and(|h| h.kept) {
            return None;
        }
        self.held.remove(i).ok()
    }

    /// The user pointers of a buffer the device holds (for QUERYBUF).
    pub(crate) fn pointers(&self, kind: QueueKind, index: u32) -> Option<&[u64]> {
        let i = self.position(kind, index)?;
        self.held
            .get(i)
            .filter(|h| !h.kept)
            .map(|h| h.pointers.as_slice())
    }

    /// Moves every entry `which` accepts (by queue and index), kept ones
    /// too, into `into` (to drop outside the session's lock); those `into`
    /// has no room for stay.
    pub(crate) fn take_where(
        &mut self,
        which: impl Fn(QueueKind, u32) -> bool,
        into: &mut KVec<Held<M>>,
    ) {
        let mut i = 0;
        while let Some(h) = self.held.get(i) {
            if which(h.kind, h.index) && into.reserve(1, GFP_KERNEL).is_ok() {
                if let Ok(h) = self.held.remove(i) {
                    let _ = into.push(h, GFP_KERNEL);
                }
            } else {
                i += 1;
            }
        }
    }

    /// Number of buffers the device holds or has prepared.
    pub(crate) fn len(&self) -> usize {
        self.held.iter().filter(|h| !h.kept).count()
    }
}

/// The first segments covering `length` bytes, the last one cut: the device
/// reads entries until they cover the plane, so none may be left over.
fn truncate(segments: KVec<(u64, u32)>, length: u32) -> Result<KVec<(u64, u32)>> {
    let mut kept = KVec::new();
    let mut remaining = length;
    for (addr, len) in segments {
        if remaining == 0 {
            break;
        }
        let take = len.min(remaining);
        kept.push((addr, take), GFP_KERNEL)?;
        remaining -= take;
    }
    if remaining > 0 {
        return Err(EINVAL);
    }
    Ok(kept)
}

/// Merges device ranges that follow each other into one SG entry each.
fn merge(ranges: &[(u64, u32)]) -> Result<KVec<(u64, u32)>> {
    let mut merged: KVec<(u64, u32)> = KVec::new();
    for &(addr, len) in ranges {
        if let Some(last) = merged.last_mut() {
            let follows = last.0.checked_add(u64::from(last.1)) == Some(addr);
            if let (true, Some(sum)) = (follows, last.1.checked_add(len)) {
                last.1 = sum;
                continue;
            }
        }
        merged.push((addr, len), GFP_KERNEL)?;
    }
    Ok(merged)
}

#[kunit_tests(virtio_media_guestmem)]
mod tests {
    use super::*;

    fn pointers(p: &[u64]) -> KVec<u64> {
        let mut v = KVec::new();
        v.extend_from_slice(p, GFP_KERNEL).expect("allocation");
        v
    }

    #[test]
    fn a_buffer_is_held_once_until_returned() {
        let mut held = HeldBuffers::<u32>::default();
        let (first, none) = held
            .insert(QueueKind::Capture, 1, false, pointers(&[0x1000]), None, 10)
            .expect("insert");
        assert!(none.is_none());
        // Queued again before it came back: refused, the first one kept.
        assert_eq!(
            held.insert(QueueKind::Capture, 1, false, pointers(&[0x2000]), None, 11)
                .err(),
            Some(EINVAL)
        );
        // The same index on the other queue is another buffer.
        let (other, _) = held
            .insert(QueueKind::Output, 1, false, pointers(&[0x3000]), None, 12)
            .expect("insert");
        assert_ne!(first, other);
        assert_eq!(held.pointers(QueueKind::Capture, 1), Some(&[0x1000u64][..]));
        let back = held.take(QueueKind::Capture, 1).expect("held");
        assert_eq!(
            (back.memory, back.pointers.as_slice()),
            (10, &[0x1000u64][..])
        );
        assert!(held.take(QueueKind::Capture, 1).is_none());
        assert!(held.remove_serial(first).is_none());
        assert_eq!(held.remove_serial(other).map(|h| h.memory), Some(12));
        assert_eq!(held.len(), 0);
    }

    #[test]
    fn prepared_buffers_are_replaced_and_queues_released_apart() {
        let mut held = HeldBuffers::<u32>::default();
        held.insert(QueueKind::Capture, 0, true, pointers(&[1]), None, 1)
            .expect("prepare");
        let (_, replaced) = held
            .insert(QueueKind::Capture, 0, false, pointers(&[2]), None, 2)
            .expect("queue");
        assert_eq!(replaced.map(|h| h.memory), Some(1));
        held.insert(QueueKind::Capture, 3, false, pointers(&[3]), None, 3)
            .expect("queue");
        held.insert(QueueKind::Output, 0, false, pointers(&[4]), None, 4)
            .expect("queue");
        let mut released = KVec::new();
        held.take_where(|kind, _| kind == QueueKind::Capture, &mut released);
        assert_eq!(released.len(), 2);
        assert_eq!(held.len(), 1);
        held.take_where(|_, _| true, &mut released);
        assert_eq!(released.len(), 3);
        assert_eq!(held.len(), 0);
    }

    fn key(k: &[(u64, u32)]) -> Option<KVec<(u64, u32)>> {
        let mut v = KVec::new();
        v.extend_from_slice(k, GFP_KERNEL).expect("allocation");
        Some(v)
    }

    /// Queues capture buffer `index` with memory `memory` named by `user`,
    /// has the device return it and keeps it; whether it was kept.
    fn queue_and_return(
        held: &mut HeldBuffers<u32>,
        index: u32,
        user: &[(u64, u32)],
        memory: u32,
    ) -> bool {
        held.insert(
            QueueKind::Capture,
            index,
            false,
            pointers(&[user[0].0]),
            key(user),
            memory,
        )
        .expect("queue");
        let back = held.take(QueueKind::Capture, index).expect("held");
        held.keep(back).is_none()
    }

    #[test]
    fn returned_memory_is_kept_for_the_same_key_only() {
        let mut held = HeldBuffers::<u32>::default();
        let user = [(0x1000, 0x3000)];
        assert!(queue_and_return(&mut held, 0, &user, 7));
        // Kept, not held: not the device's, not QUERYBUF's, not returnable.
        assert_eq!(held.len(), 0);
        assert!(held.pointers(QueueKind::Capture, 0).is_none());
        assert!(held.take(QueueKind::Capture, 0).is_none());
        // Same memory: reused; other memory (or length): not.
        let kept = held.take_kept(QueueKind::Capture, 0).expect("kept");
        assert_eq!(kept.reuse(&user), Some(7));
        assert!(queue_and_return(&mut held, 0, &user, 8));
        let kept = held.take_kept(QueueKind::Capture, 0).expect("kept");
        assert_eq!(kept.reuse(&[(0x1000, 0x2000)]), None);
        // A queued buffer is never taken as kept memory.
        held.insert(
            QueueKind::Capture,
            1,
            false,
            pointers(&[0x9000]),
            key(&user),
            9,
        )
        .expect("queue");
        assert!(held.take_kept(QueueKind::Capture, 1).is_none());
        // Memory without a key is given back, not kept.
        held.insert(QueueKind::Output, 0, false, pointers(&[3]), None, 10)
            .expect("queue");
        let back = held.take(QueueKind::Output, 0).expect("held");
        assert_eq!(held.keep(back).map(|h| h.memory), Some(10));
    }

    #[test]
    fn kept_memory_is_replaced_by_a_queue_and_released_with_the_rest() {
        let mut held = HeldBuffers::<u32>::default();
        let user = [(0x1000, 0x1000)];
        assert!(queue_and_return(&mut held, 2, &user, 1));
        // Queued with other memory: the kept memory is given back.
        let (_, replaced) = held
            .insert(QueueKind::Capture, 2, false, pointers(&[0x5000]), None, 2)
            .expect("queue");
        assert_eq!(replaced.map(|h| (h.is_kept(), h.memory)), Some((true, 1)));
        let back = held.take(QueueKind::Capture, 2).expect("held");
        assert!(held.keep(back).is_some());
        assert!(queue_and_return(&mut held, 3, &user, 3));
        let mut released = KVec::new();
        held.take_where(|_, _| true, &mut released);
        assert_eq!(released.len(), 1);
        assert!(released.iter().all(|h| h.is_kept()));
    }

    #[test]
    fn segments_are_cut_to_the_plane() {
        let mut segments = KVec::new();
        segments
            .extend_from_slice(
                &[(0x1000, 0x1000), (0x5000, 0x2000), (0x9000, 0x1000)],
                GFP_KERNEL,
            )
            .expect("alloc");
        let cut = truncate(segments, 0x2800).expect("covered");
        assert_eq!(cut.as_slice(), &[(0x1000, 0x1000), (0x5000, 0x1800)]);
        let mut short = KVec::new();
        short.push((0x1000, 0x1000), GFP_KERNEL).expect("alloc");
        assert_eq!(truncate(short, 0x1001).err(), Some(EINVAL));
    }

    #[test]
    fn contiguous_pages_become_one_entry() {
        let pages = [
            (0x1000, 0x800),
            (0x1800, 0x800),
            (0x2000, 0x1000),
            (0x8000, 0x1000),
            (0x9000, 0x10),
        ];
        let merged = merge(&pages).expect("merge");
        assert_eq!(merged.as_slice(), &[(0x1000, 0x2000), (0x8000, 0x1010)]);
    }

    #[test]
    fn nothing_merges_across_gaps_or_overflow() {
        assert_eq!(merge(&[]).expect("merge").len(), 0);
        let gaps = [(0x3000, 0x1000), (0x1000, 0x1000), (0x2000, 0x1000)];
        assert_eq!(
            merge(&gaps).expect("merge").as_slice(),
            &[(0x3000, 0x1000), (0x1000, 0x2000)]
        );
        // A length that would no longer fit an entry starts a new one.
        let big = [(0, u32::MAX), (u64::from(u32::MAX), 2)];
        assert_eq!(merge(&big).expect("merge").len(), 2);
        // An address at the top of the space does not wrap.
        let top = [(u64::MAX - 1, 1), (0, 1)];
        assert_eq!(merge(&top).expect("merge").len(), 2);
    }
}
