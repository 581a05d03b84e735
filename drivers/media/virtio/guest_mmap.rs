// SPDX-License-Identifier: GPL-2.0

//! Guest-backed MMAP buffers, for devices without a shared-memory region
//! (or when the `guest_mmap` module parameter asks for them).
//!
//! The driver allocates MMAP buffers in guest memory, programs map them
//! from the driver, and the device sees them as USERPTR buffers, pointed at
//! the driver's pages by SG entries. So a program that only knows MMAP
//! works unchanged on a device that cannot share its memory.

#![forbid(unsafe_code)]

use crate::{
    kernel_ext::{alloc::LeanVec, media::v4l2::types::Format, mm::OwnedPages},
    stream::{QueueKind, MAX_PLANES},
};
use kernel::{page::PAGE_SIZE, prelude::*, sync::Arc};

/// The plane sizes (`sizeimage`) of a video format; `None` for other
/// buffer types, no plane, too many or an empty one.
pub(crate) fn plane_sizes(format: &Format) -> Option<KVec<u32>> {
    let sizes = format.plane_sizes()?;
    if sizes.is_empty() || sizes.len() > MAX_PLANES || sizes.contains(&0) {
        return None;
    }
    Some(sizes)
}

/// What the device gets in `m.userptr` for a guest-backed buffer: it must
/// echo the value and never dereference it; the mmap offset it carries
/// helps reading device logs.
pub(crate) const USERPTR_TOKEN: u64 = 1 << 63;

const PLANE_BITS: u32 = 3;
const INDEX_BITS: u32 = 16;
/// The capture queue's offsets have this bit set (in pages).
const CAPTURE_BIT: u32 = 1 << (PLANE_BITS + INDEX_BITS);

/// The `mmap` offset of a plane: one page-aligned cookie per plane of each
/// buffer of each queue, as vb2 does.
pub(crate) fn plane_offset(kind: QueueKind, index: u32, plane: usize) -> Option<u32> {
    if index >= 1 << INDEX_BITS || plane >= MAX_PLANES {
        return None;
    }
    let queue = if kind == QueueKind::Capture {
        CAPTURE_BIT
    } else {
        0
    };
    let cookie = queue | index << PLANE_BITS | plane as u32;
    cookie.checked_mul(PAGE_SIZE as u32)
}

/// The plane an `mmap` offset names: (queue, buffer index, plane).
pub(crate) fn decode_offset(offset: u64) -> Option<(QueueKind, u32, usize)> {
    let page = PAGE_SIZE as u64;
    if offset % page != 0 {
        return None;
    }
    let cookie = u32::try_from(offset / page).ok()?;
    if cookie >= CAPTURE_BIT << 1 {
        return None;
    }
    let kind = if cookie & CAPTURE_BIT != 0 {
        QueueKind::Capture
    } else {
        QueueKind::Output
    };
    let index = (cookie & !CAPTURE_BIT) >> PLANE_BITS;
    let plane = (cookie & ((1 << PLANE_BITS) - 1)) as usize;
    Some((kind, index, plane))
}

/// Most guest memory the MMAP buffers of one queue may take: the device
/// chooses the plane sizes and the program the count, and each plane may
/// be up to 64 MiB (`pages::MAX_PINNED_LEN`).
pub(crate) const MAX_QUEUE_BYTES: u64 = 256 << 20;

/// The planes of one buffer.
type Planes = KVec<Arc<OwnedPages>>;

/// The buffers of one queue: their planes' pages, by buffer index (REMOVE_BUFS
/// leaves holes, which CREATE_BUFS may fill again).
#[derive(Default)]
pub(crate) struct GuestMmapQueue {
    buffers: LeanVec<Option<Planes>>,
}

impl GuestMmapQueue {
    /// Forgets every buffer; returned to be freed outside the session's
    /// lock (pages a program still maps live on in its mapping).
    pub(crate) fn take(&mut self) -> KVec<Option<Planes>> {
        self.buffers.take()
    }

    /// Forgets buffers `first..end` (REMOVE_BUFS), returned to be freed
    /// outside the session's lock.
    pub(crate) fn remove(&mut self, first: u32, end: u32) -> KVec<Option<Planes>> {
        let mut removed = KVec::new();
        let first = usize::try_from(first).unwrap_or(usize::MAX);
        let end = usize::try_from(end)
            .unwrap_or(usize::MAX)
            .min(self.buffers.len());
        for slot in self.buffers.iter_mut().take(end).skip(first) {
            if let Some(planes) = slot.take() {
                // On failure the planes are freed here, under the lock:
                // correct, only slower.
                let _ = removed.push(Some(planes), GFP_KERNEL);
            }
        }
        while self.buffers.last().is_some_and(|slot| slot.is_none()) {
            self.buffers.pop();
        }
        removed
    }

    /// Allocates buffers `first..first + count` with planes of
    /// `plane_sizes` bytes; those indexes must be free.
    pub(crate) fn allocate(&mut self, first: u32, count: u32, plane_sizes: &[u32]) -> Result {
        if plane_sizes.is_empty() || plane_sizes.len() > MAX_PLANES {
            return Err(EINVAL);
        }
        let end = first.checked_add(count).ok_or(EINVAL)?;
        if end > 1 << INDEX_BITS {
            return Err(EINVAL);
        }
        let (first, end) = (usize::try_from(first)?, usize::try_from(end)?);
        if self
            .buffers
            .iter()
            .take(end)
            .skip(first)
            .any(|slot| slot.is_some())
        {
            return Err(EINVAL);
        }
        let mut added = KVec::with_capacity(end - first, GFP_KERNEL_ACCOUNT)?;
        for _ in first..end {
            let mut planes = KVec::with_capacity(plane_sizes.len(), GFP_KERNEL_ACCOUNT)?;
            for &size in plane_sizes {
                planes.push(
                    Arc::new(OwnedPages::new(usize::try_from(size)?)?, GFP_KERNEL_ACCOUNT)?,
                    GFP_KERNEL_ACCOUNT,
                )?;
            }
            added.push(planes, GFP_KERNEL_ACCOUNT)?;
        }
        let missing = end.saturating_sub(self.buffers.len());
        self.buffers.reserve(missing, GFP_KERNEL_ACCOUNT)?;
        while self.buffers.len() < end {
            self.buffers.push(None, GFP_KERNEL_ACCOUNT)?;
        }
        for (slot, planes) in self.buffers.iter_mut().skip(first).zip(added.drain_all()) {
            *slot = Some(planes);
        }
        Ok(())
    }

    /// The planes of buffer `index`.
    pub(crate) fn planes(&self, index: u32) -> Option<&[Arc<OwnedPages>]> {
        self.buffers
            .get(usize::try_from(index).ok()?)?
            .as_ref()
            .map(|p| p.as_slice())
    }

    /// Number of buffers.
    pub(crate) fn len(&self) -> usize {
        self.buffers.iter().filter(|slot| slot.is_some()).count()
    }

    /// Bytes the buffers take.
    pub(crate) fn bytes(&self) -> u64 {
        self.buffers
            .iter()
            .flatten()
            .flat_map(|planes| planes.iter())
            .map(|pages| pages.len() as u64)
            .sum()
    }
}

#[kunit_tests(virtio_media_guest_mmap)]
mod tests {
    use super::*;

    #[test]
    fn offsets_name_one_plane_each() {
        let a = plane_offset(QueueKind::Capture, 0, 0).expect("offset");
        let b = plane_offset(QueueKind::Output, 0, 0).expect("offset");
        let c = plane_offset(QueueKind::Capture, 5, 2).expect("offset");
        assert!(a != b && a != c && b != c);
        assert_eq!(decode_offset(a.into()), Some((QueueKind::Capture, 0, 0)));
        assert_eq!(decode_offset(b.into()), Some((QueueKind::Output, 0, 0)));
        assert_eq!(decode_offset(c.into()), Some((QueueKind::Capture, 5, 2)));
        let last = plane_offset(QueueKind::Capture, (1 << INDEX_BITS) - 1, MAX_PLANES - 1)
            .expect("offset");
        assert_eq!(
            decode_offset(last.into()),
            Some((QueueKind::Capture, (1 << INDEX_BITS) - 1, MAX_PLANES - 1))
        );
    }

    #[test]
    fn bad_offsets_and_indexes_are_refused() {
        assert_eq!(plane_offset(QueueKind::Capture, 1 << INDEX_BITS, 0), None);
        assert_eq!(plane_offset(QueueKind::Capture, 0, MAX_PLANES), None);
        assert_eq!(decode_offset(1), None);
        assert_eq!(
            decode_offset(u64::from(CAPTURE_BIT << 1) * PAGE_SIZE as u64),
            None
        );
        assert_eq!(decode_offset(u64::MAX - (PAGE_SIZE as u64 - 1)), None);
    }

    #[test]
    fn formats_give_their_plane_sizes() {
        use crate::kernel_ext::media::v4l2::types::BufType;
        let mut format = Format::zeroed();
        format.set_buf_type(BufType::VIDEO_CAPTURE);
        // A zero sizeimage.
        assert!(plane_sizes(&format).is_none());
        format.set_plane_sizes(&[614400]);
        assert_eq!(plane_sizes(&format).as_deref(), Some(&[614400u32][..]));
        format.set_buf_type(BufType::VIDEO_OUTPUT_MPLANE);
        format.set_plane_sizes(&[100, 50]);
        assert_eq!(plane_sizes(&format).as_deref(), Some(&[100u32, 50][..]));
        format.set_plane_sizes(&[]);
        assert!(plane_sizes(&format).is_none());
    }

    #[test]
    fn buffers_are_allocated_in_free_slots() {
        let mut q = GuestMmapQueue::default();
        assert_eq!(q.allocate(0, 2, &[5000, 100]), Ok(()));
        assert_eq!(q.len(), 2);
        assert_eq!(q.bytes(), 2 * 5100);
        let planes = q.planes(1).expect("buffer 1");
        assert_eq!(
            (planes.len(), planes[0].len(), planes[1].len()),
            (2, 5000, 100)
        );
        // CREATE_BUFS adds where there is no buffer, never over one.
        assert_eq!(q.allocate(1, 1, &[10]), Err(EINVAL));
        assert_eq!(q.allocate(2, 1, &[10]), Ok(()));
        assert!(q.planes(3).is_none());
        assert_eq!(q.allocate(3, 1, &[]), Err(EINVAL));
        assert_eq!(q.allocate(3, 1, &[0]), Err(EINVAL));
        assert_eq!(q.len(), 3);
        // REMOVE_BUFS leaves a hole that CREATE_BUFS may fill again.
        assert_eq!(q.remove(1, 2).len(), 1);
        assert!(q.planes(1).is_none() && q.planes(2).is_some());
        assert_eq!(q.allocate(1, 1, &[20]), Ok(()));
        assert_eq!(q.planes(1).map(|p| p[0].len()), Some(20));
        // Removing the last buffers shrinks the table.
        assert_eq!(q.remove(1, 3).len(), 2);
        assert_eq!(q.len(), 1);
        assert_eq!(q.take().len(), 1);
        assert_eq!(q.len(), 0);
    }
}
