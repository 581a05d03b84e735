// SPDX-License-Identifier: GPL-2.0

//! The stream state of a session's queue: which buffers came back and in
//! what order, what DQBUF may take, and what the device must not send.

#![forbid(unsafe_code)]

use super::*;

/// Which of a session's two queues a buffer type belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum QueueKind {
    Capture = 0,
    Output = 1,
}

/// `V4L2_TYPE_IS_OUTPUT` for the buffer types a queue can have, or `None`
/// for a value that is no buffer type.
pub(crate) fn queue_of(buf_type: u32) -> Option<QueueKind> {
    match buf_type {
        1 | 3 | 4 | 6 | 9 | 11 | 13 => Some(QueueKind::Capture),
        2 | 5 | 7 | 8 | 10 | 12 | 14 => Some(QueueKind::Output),
        _ => None,
    }
}

pub(super) fn is_multiplanar(buf_type: u32) -> bool {
    buf_type == ffi::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE
        || buf_type == ffi::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE
}

/// Most buffers a queue may have: a device that reports more is broken.
/// (vb2 allows 32 per queue by default; CREATE_BUFS may add more.)
pub(crate) const MAX_BUFFERS: u32 = 1024;

/// Buffer indexes, as a bit set sized to the queue's buffers.
#[derive(Default)]
pub(crate) struct IndexSet {
    words: KVec<u64>,
}

impl IndexSet {
    fn word(index: u32) -> (usize, u64) {
        ((index / 64) as usize, 1 << (index % 64))
    }

    /// Adds `index`; `false` if it was there already. Indexes of
    /// [`MAX_BUFFERS`] and above are refused (`EINVAL`).
    pub(crate) fn insert(&mut self, index: u32) -> Result<bool> {
        if index >= MAX_BUFFERS {
            return Err(EINVAL);
        }
        let (at, bit) = Self::word(index);
        if self.words.len() <= at {
            self.words.resize(at + 1, 0, GFP_KERNEL)?;
        }
        let word = self.words.get_mut(at).ok_or(EINVAL)?;
        let added = *word & bit == 0;
        *word |= bit;
        Ok(added)
    }

    /// Removes `index`; whether it was there.
    pub(crate) fn remove(&mut self, index: u32) -> bool {
        let (at, bit) = Self::word(index);
        match self.words.get_mut(at) {
            Some(word) if *word & bit != 0 => {
                *word &= !bit;
                true
            }
            _ => false,
        }
    }

    pub(crate) fn clear(&mut self) {
        self.words.clear();
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.words.iter().all(|word| *word == 0)
    }
}

/// A buffer the device returned, waiting for DQBUF.
pub(crate) struct DoneBuffer {
    pub(super) buffer: [u8; BUFFER_SIZE],
    pub(super) planes: [u8; PLANE_SIZE * MAX_PLANES],
}

/// Stream state of one queue, as far as the driver needs it.
#[derive(Default)]
pub(crate) struct QueueState {
    pub(super) streaming: bool,
    /// Buffers allocated by REQBUFS and CREATE_BUFS.
    pub(super) num_buffers: u32,
    /// Buffers queued to the device and not returned yet: the only ones a
    /// DQBUF event may bring back.
    pub(super) queued: IndexSet,
    /// Returned buffers, oldest first.
    pub(super) done: KVec<KBox<DoneBuffer>>,
    /// A buffer flagged LAST was dequeued: DQBUF says EPIPE until restart.
    pub(super) last_dequeued: bool,
    /// What the program's buffers are, if the device knows them as USERPTR.
    pub(super) presented: Presented,
    /// The memory of guest-backed MMAP buffers.
    pub(super) mmap: GuestMmapQueue,
}

impl QueueState {
    /// Buffers queued and not dequeued yet, with the device or returned:
    /// vb2's `queued_list`, which mem2mem poll looks at.
    pub(super) fn holds_buffers(&self) -> bool {
        !self.queued.is_empty() || !self.done.is_empty()
    }

    /// The stream stopped (STREAMOFF, REQBUFS(0)): the device holds none of
    /// the queue's buffers any more.
    pub(super) fn stop(&mut self) {
        self.streaming = false;
        self.done.clear();
        self.queued.clear();
        self.last_dequeued = false;
    }

    /// A buffer the device returned: kept for DQBUF while streaming,
    /// dropped after STREAMOFF (as V4L2 does), refused if never allocated
    /// or not queued (so the buffers waiting for DQBUF are at most the
    /// queue's buffers, whatever the device sends).
    pub(super) fn accept(&mut self, done: KBox<DoneBuffer>) -> Result<(), BadEvent> {
        self.claim(get_u32(&done.buffer, BUF_INDEX).unwrap_or(u32::MAX))?;
        self.keep(done)
    }

    /// The device returned buffer `index`: it must be one it holds.
    pub(super) fn claim(&mut self, index: u32) -> Result<(), BadEvent> {
        if index >= self.num_buffers {
            return Err(BadEvent::BufferIndex {
                index,
                allocated: self.num_buffers,
            });
        }
        if !self.queued.remove(index) {
            return Err(BadEvent::NotQueued(index));
        }
        Ok(())
    }

    /// Keeps a claimed buffer for DQBUF while streaming.
    pub(super) fn keep(&mut self, done: KBox<DoneBuffer>) -> Result<(), BadEvent> {
        if self.streaming {
            self.done
                .push(done, GFP_KERNEL)
                .map_err(|_| BadEvent::NotReady)?;
        }
        Ok(())
    }

    /// What DQBUF can do now: take the oldest returned buffer (`Some`),
    /// fail, or wait (`None`). `plane_capacity` is the caller's planes array
    /// length for multi-planar types.
    pub(super) fn dequeue(
        &mut self,
        kind: QueueKind,
        plane_capacity: Option<u32>,
    ) -> Result<Option<KBox<DoneBuffer>>> {
        if !self.streaming {
            return Err(EINVAL);
        }
        if let Some(front) = self.done.first() {
            let count = get_u32(&front.buffer, BUF_LENGTH).unwrap_or(0);
            if plane_capacity.is_some_and(|capacity| count > capacity) {
                return Err(EINVAL);
            }
            let done = self.done.remove(0)?;
            let flags = get_u32(&done.buffer, BUF_FLAGS).unwrap_or(0);
            if kind == QueueKind::Capture && flags & ffi::V4L2_BUF_FLAG_LAST != 0 {
                self.last_dequeued = true;
            }
            return Ok(Some(done));
        }
        if self.last_dequeued {
            return Err(EPIPE);
        }
        Ok(None)
    }
}

/// Why an event for a session was dropped.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BadEvent {
    BufferType(u32),
    BufferIndex {
        index: u32,
        allocated: u32,
    },
    PlaneCount(u32),
    /// A buffer the session has not queued (or the device already
    /// returned).
    NotQueued(u32),
    /// A USERPTR buffer whose memory the driver does not hold.
    NotHeld(u32),
    NotReady,
}

#[kunit_tests(virtio_media_session)]
mod tests {
    use super::*;

    fn returned(index: u32, flags: u32, planes: u32) -> KBox<DoneBuffer> {
        let mut done = KBox::new(
            DoneBuffer {
                buffer: [0; BUFFER_SIZE],
                planes: [0; PLANE_SIZE * MAX_PLANES],
            },
            GFP_KERNEL,
        )
        .expect("allocation");
        set_u32(&mut done.buffer, BUF_INDEX, index);
        set_u32(&mut done.buffer, BUF_FLAGS, flags);
        set_u32(&mut done.buffer, BUF_LENGTH, planes);
        done
    }

    fn index_of(done: &DoneBuffer) -> Option<u32> {
        get_u32(&done.buffer, BUF_INDEX)
    }

    fn queued(q: &mut QueueState, indexes: &[u32]) {
        for &i in indexes {
            assert_eq!(q.queued.insert(i), Ok(true));
        }
    }

    #[test]
    fn buffers_come_back_in_order_while_streaming() {
        let mut q = QueueState {
            num_buffers: 4,
            streaming: true,
            ..Default::default()
        };
        queued(&mut q, &[2, 0]);
        assert_eq!(q.accept(returned(2, 0, 1)), Ok(()));
        assert_eq!(q.accept(returned(0, 0, 1)), Ok(()));
        let first = q.dequeue(QueueKind::Capture, Some(8)).expect("dequeue");
        assert_eq!(first.as_deref().and_then(index_of), Some(2));
        let second = q.dequeue(QueueKind::Capture, Some(8)).expect("dequeue");
        assert_eq!(second.as_deref().and_then(index_of), Some(0));
        // Nothing left: the caller waits (or gets EAGAIN).
        assert!(matches!(q.dequeue(QueueKind::Capture, Some(8)), Ok(None)));
    }

    #[test]
    fn bad_and_stale_buffers_are_refused_or_dropped() {
        let mut q = QueueState {
            num_buffers: 2,
            ..Default::default()
        };
        queued(&mut q, &[1, 0]);
        // Not streaming: a late buffer is dropped, DQBUF says EINVAL.
        assert_eq!(q.accept(returned(1, 0, 1)), Ok(()));
        assert!(q.done.is_empty());
        assert_eq!(q.dequeue(QueueKind::Capture, None).err(), Some(EINVAL));
        // An index that was never allocated is a device error.
        q.streaming = true;
        assert_eq!(
            q.accept(returned(2, 0, 1)),
            Err(BadEvent::BufferIndex {
                index: 2,
                allocated: 2
            })
        );
        // A plane array too small for the buffer: EINVAL, buffer kept.
        assert_eq!(q.accept(returned(0, 0, 3)), Ok(()));
        assert_eq!(q.dequeue(QueueKind::Capture, Some(2)).err(), Some(EINVAL));
        assert_eq!(q.done.len(), 1);
    }

    #[test]
    fn last_buffer_then_epipe_until_restart() {
        let mut q = QueueState {
            num_buffers: 2,
            streaming: true,
            ..Default::default()
        };
        queued(&mut q, &[0]);
        assert_eq!(q.accept(returned(0, ffi::V4L2_BUF_FLAG_LAST, 1)), Ok(()));
        assert!(matches!(q.dequeue(QueueKind::Capture, None), Ok(Some(_))));
        assert_eq!(q.dequeue(QueueKind::Capture, None).err(), Some(EPIPE));
        // STREAMOFF clears it; streaming again waits normally.
        q.stop();
        q.streaming = true;
        assert!(matches!(q.dequeue(QueueKind::Capture, None), Ok(None)));
        // LAST on an output queue means nothing special.
        let mut out = QueueState {
            num_buffers: 1,
            streaming: true,
            ..Default::default()
        };
        queued(&mut out, &[0]);
        assert_eq!(out.accept(returned(0, ffi::V4L2_BUF_FLAG_LAST, 1)), Ok(()));
        assert!(matches!(out.dequeue(QueueKind::Output, None), Ok(Some(_))));
        assert!(matches!(out.dequeue(QueueKind::Output, None), Ok(None)));
    }

    #[test]
    fn only_queued_buffers_come_back_and_only_once() {
        let mut q = QueueState {
            num_buffers: 4,
            streaming: true,
            ..Default::default()
        };
        // Never queued: refused, nothing kept.
        assert_eq!(q.accept(returned(1, 0, 1)), Err(BadEvent::NotQueued(1)));
        assert!(q.done.is_empty());
        // Queued once, returned twice: the second is refused, so a device
        // repeating an index cannot grow the done list.
        queued(&mut q, &[1]);
        assert_eq!(q.accept(returned(1, 0, 1)), Ok(()));
        assert_eq!(q.accept(returned(1, 0, 1)), Err(BadEvent::NotQueued(1)));
        assert_eq!(q.done.len(), 1);
        // STREAMOFF: the device holds nothing any more.
        queued(&mut q, &[2, 3]);
        q.stop();
        q.streaming = true;
        assert_eq!(q.accept(returned(2, 0, 1)), Err(BadEvent::NotQueued(2)));
    }

    #[test]
    fn index_sets_grow_and_refuse_out_of_range() -> Result {
        let mut set = IndexSet::default();
        assert_eq!(set.insert(0), Ok(true));
        assert_eq!(set.insert(0), Ok(false));
        assert_eq!(set.insert(MAX_BUFFERS - 1), Ok(true));
        assert_eq!(set.insert(MAX_BUFFERS), Err(EINVAL));
        assert!(set.remove(MAX_BUFFERS - 1));
        assert!(!set.remove(MAX_BUFFERS - 1));
        assert!(!set.remove(u32::MAX));
        set.clear();
        assert!(!set.remove(0));
        Ok(())
    }

    #[test]
    fn buffer_types_map_to_queues() {
        assert_eq!(
            queue_of(ffi::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE),
            Some(QueueKind::Capture)
        );
        assert_eq!(
            queue_of(ffi::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT),
            Some(QueueKind::Output)
        );
        assert_eq!(
            queue_of(ffi::v4l2_buf_type_V4L2_BUF_TYPE_META_OUTPUT),
            Some(QueueKind::Output)
        );
        assert_eq!(queue_of(0), None);
        assert_eq!(queue_of(0x80), None);
    }
}
