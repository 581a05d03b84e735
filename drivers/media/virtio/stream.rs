// SPDX-License-Identifier: GPL-2.0

//! The stream state of a session's queue: which buffers came back and in
//! what order, what DQBUF may take, and what the device must not send.

#![forbid(unsafe_code)]

use crate::kernel_ext::{
    alloc::LeanVec,
    media::v4l2::{
        poll::{EPOLLERR, EPOLLIN, EPOLLOUT, EPOLLRDNORM, EPOLLWRNORM},
        types::{BufType, Buffer, Plane},
        uapi::V4L2_BUF_FLAG_LAST,
    },
};
use kernel::{prelude::*, transmute::FromBytes};

pub(crate) use crate::kernel_ext::media::v4l2::types::MAX_PLANES;

/// Which of a session's two queues a buffer type belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum QueueKind {
    Capture = 0,
    Output = 1,
}

impl QueueKind {
    /// The queue of a buffer type (`V4L2_TYPE_IS_OUTPUT`), or `None` for a
    /// value that is no buffer type.
    pub(crate) fn of(buf_type: BufType) -> Option<Self> {
        if !buf_type.is_valid() {
            None
        } else if buf_type.is_output() {
            Some(Self::Output)
        } else {
            Some(Self::Capture)
        }
    }
}

/// Most buffers a queue may have: a device that reports more is broken.
/// (vb2 allows 32 per queue by default; CREATE_BUFS may add more.)
pub(crate) const MAX_BUFFERS: u32 = 1024;

/// Buffer indexes, as a bit set sized to the queue's buffers.
#[derive(Default)]
pub(crate) struct IndexSet {
    words: LeanVec<u64>,
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
        self.words.iter().all(|&word| word == 0)
    }
}

/// A buffer the device returned, waiting for DQBUF: its `v4l2_buffer` and
/// planes as the device wrote them (the program's view of them once
/// `memory.rs` rewrote them).
pub(crate) struct DoneBuffer {
    pub(crate) buffer: Buffer,
    /// A multi-planar buffer's `MAX_PLANES` planes; none for the other
    /// types, whose memory is described in `buffer` itself.
    pub(crate) planes: LeanVec<Plane>,
}

impl DoneBuffer {
    /// The buffer of a DQBUF event: a `v4l2_buffer` and `VIDEO_MAX_PLANES`
    /// planes.
    ///
    /// The planes are copied for a multi-planar buffer only: a frame of a
    /// single-planar stream then costs an allocation of 112 bytes and no
    /// 512-byte copies, where every frame built, moved and copied all eight
    /// planes before (the largest `memcpy` of a 1080p stream's profile).
    pub(crate) fn from_event(buffer: &[u8], planes: &[u8]) -> Result<KBox<Self>> {
        let buffer = Buffer::from_bytes_copy(buffer).ok_or(EINVAL)?;
        let multiplanar = buffer.buf_type().is_multiplanar();
        let mut done = KBox::new(
            Self {
                buffer,
                planes: LeanVec::new(),
            },
            GFP_KERNEL,
        )?;
        if multiplanar {
            done.planes.reserve(MAX_PLANES, GFP_KERNEL)?;
            let mut chunks = planes.chunks_exact(core::mem::size_of::<Plane>());
            for _ in 0..MAX_PLANES {
                let plane = chunks
                    .next()
                    .and_then(Plane::from_bytes_copy)
                    .unwrap_or_else(Plane::zeroed);
                // Cannot fail: the capacity is reserved.
                let _ = done.planes.push_within_capacity(plane);
            }
        }
        Ok(done)
    }

    /// Makes the sizes the device reported what V4L2 promises programs,
    /// which size their reads by them: no plane has more bytes used than
    /// its length, nor its data starting beyond them (`data_offset` is
    /// part of `bytesused`). Each is cut to the bound it broke; the first
    /// plane cut and its reported (bytesused, data_offset, length) are
    /// returned. The plane count must have been checked.
    pub(crate) fn clamp_sizes(&mut self) -> Option<(usize, u32, u32, u32)> {
        if !self.buffer.buf_type().is_multiplanar() {
            let (used, length) = (self.buffer.bytesused(), self.buffer.length());
            if used <= length {
                return None;
            }
            self.buffer.set_bytesused(length);
            return Some((0, used, 0, length));
        }
        let mut first = None;
        let count = usize::try_from(self.buffer.length()).unwrap_or(usize::MAX);
        for (i, plane) in self.planes.iter_mut().take(count).enumerate() {
            let (used, offset, length) = (plane.bytesused(), plane.data_offset(), plane.length());
            if used <= length && offset <= used {
                continue;
            }
            let fitting = used.min(length);
            plane.set_bytesused(fitting);
            plane.set_data_offset(offset.min(fitting));
            first = first.or(Some((i, used, offset, length)));
        }
        first
    }
}

/// Stream state of one queue, as far as the driver needs it.
#[derive(Default)]
pub(crate) struct QueueState {
    pub(crate) streaming: bool,
    /// Buffers allocated by REQBUFS and CREATE_BUFS.
    pub(crate) num_buffers: u32,
    /// Buffers queued to the device and not returned yet: the only ones a
    /// DQBUF event may bring back.
    pub(crate) queued: IndexSet,
    /// Returned buffers DQBUF and poll() see, oldest first.
    pub(crate) done: LeanVec<KBox<DoneBuffer>>,
    /// Buffers returned in the eventq batch being handled, not yet seen by
    /// DQBUF and poll(): [`Self::publish`] shows a batch at once, so a
    /// program never sees an m2m job's OUTPUT buffer without its CAPTURE
    /// buffer (the device returns them as two events).
    arriving: LeanVec<KBox<DoneBuffer>>,
    /// A buffer flagged LAST was dequeued: DQBUF says EPIPE until restart.
    pub(crate) last_dequeued: bool,
}

impl QueueState {
    /// The program queued a buffer it has not dequeued yet (vb2's
    /// `queued_list` is not empty).
    fn holds_buffers(&self) -> bool {
        !self.queued.is_empty() || !self.done.is_empty() || !self.arriving.is_empty()
    }

    /// DQBUF has something to give: a buffer, or EPIPE after LAST.
    fn dequeue_ready(&self) -> bool {
        !self.done.is_empty() || self.last_dequeued
    }

    /// `poll()` of a session with only this queue, as `vb2_core_poll`
    /// answers it: `bits` when DQBUF has something, an error when the
    /// queue is not streaming.
    pub(crate) fn poll(&self, bits: u32) -> u32 {
        if !self.streaming {
            EPOLLERR
        } else if self.dequeue_ready() {
            bits
        } else {
            0
        }
    }
    /// The stream stopped (STREAMOFF, REQBUFS(0)): the device holds none of
    /// the queue's buffers any more.
    pub(crate) fn stop(&mut self) {
        self.streaming = false;
        self.done.clear();
        self.arriving.clear();
        self.queued.clear();
        self.last_dequeued = false;
    }

    /// A buffer the device returned: kept for DQBUF while streaming,
    /// dropped after STREAMOFF (as V4L2 does), refused if never allocated
    /// or not queued (so the buffers waiting for DQBUF are at most the
    /// queue's buffers, whatever the device sends).
    pub(crate) fn accept(&mut self, done: KBox<DoneBuffer>) -> Result<(), BadEvent> {
        self.claim(done.buffer.index())?;
        self.keep(done)
    }

    /// The device returned buffer `index`: it must be one it holds.
    pub(crate) fn claim(&mut self, index: u32) -> Result<(), BadEvent> {
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

    /// Keeps a claimed buffer for DQBUF while streaming; DQBUF and poll()
    /// see it once [`Self::publish`]ed.
    pub(crate) fn keep(&mut self, done: KBox<DoneBuffer>) -> Result<(), BadEvent> {
        if self.streaming {
            // Room in `done` now, so that publishing cannot fail.
            let arriving = self.arriving.len();
            self.done
                .reserve(arriving.saturating_add(1), GFP_KERNEL)
                .map_err(|_| BadEvent::NoMemory)?;
            self.arriving
                .push(done, GFP_KERNEL)
                .map_err(|_| BadEvent::NoMemory)?;
        }
        Ok(())
    }

    /// Shows DQBUF and poll() the buffers kept since the last call.
    pub(crate) fn publish(&mut self) {
        for done in self.arriving.drain_all() {
            // Cannot fail: `keep` reserved the room.
            let _ = self.done.push_within_capacity(done);
        }
    }

    /// Forgets the returned buffers `removed` says (REMOVE_BUFS, REQBUFS).
    pub(crate) fn forget_returned(&mut self, removed: impl Fn(u32) -> bool) {
        self.done.retain(|done| !removed(done.buffer.index()));
        self.arriving.retain(|done| !removed(done.buffer.index()));
    }

    /// What DQBUF can do now: take the oldest returned buffer (`Some`),
    /// fail, or wait (`None`). `plane_capacity` is the caller's planes array
    /// length for multi-planar types.
    pub(crate) fn dequeue(
        &mut self,
        kind: QueueKind,
        plane_capacity: Option<u32>,
    ) -> Result<Option<KBox<DoneBuffer>>> {
        if !self.streaming {
            return Err(EINVAL);
        }
        if let Some(front) = self.done.first() {
            let count = front.buffer.length();
            if plane_capacity.is_some_and(|capacity| count > capacity) {
                return Err(EINVAL);
            }
            let done = self.done.remove(0)?;
            if kind == QueueKind::Capture && done.buffer.flags() & V4L2_BUF_FLAG_LAST != 0 {
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
    /// No memory to keep the buffer.
    NoMemory,
}

/// `poll()` of a memory-to-memory session, as `v4l2_m2m_poll` answers it:
/// `EPOLLERR` only when neither queue can make progress (not streaming, or
/// streaming without a buffer), so a decoder's program can wait for the
/// first SOURCE_CHANGE with only OUTPUT streaming; then OUTPUT's done
/// buffers make it writable and CAPTURE's (or LAST) readable.
pub(crate) fn m2m_poll(capture: &QueueState, output: &QueueState) -> u32 {
    let output_active = output.streaming && output.holds_buffers();
    let capture_active = capture.streaming && (capture.holds_buffers() || capture.last_dequeued);
    if !output_active && !capture_active {
        return EPOLLERR;
    }
    let mut mask = 0;
    if !output.done.is_empty() {
        mask |= EPOLLOUT | EPOLLWRNORM;
    }
    if capture.dequeue_ready() {
        mask |= EPOLLIN | EPOLLRDNORM;
    }
    mask
}

#[kunit_tests(virtio_media_stream)]
mod tests {
    use super::*;
    use kernel::transmute::AsBytes;

    fn returned(index: u32, flags: u32, planes: u32) -> KBox<DoneBuffer> {
        let mut buffer = Buffer::zeroed();
        buffer.set_index(index);
        buffer.set_flags(flags);
        buffer.set_length(planes);
        // A test that cannot allocate a few hundred bytes fails anyway.
        let mut planes = LeanVec::new();
        for _ in 0..MAX_PLANES {
            planes
                .push(Plane::zeroed(), GFP_KERNEL)
                .expect("allocation");
        }
        KBox::new(DoneBuffer { buffer, planes }, GFP_KERNEL).expect("allocation")
    }

    /// A DQBUF event's buffer (index 3, type `buf_type`) and planes (each
    /// plane's `m` its position plus one), as bytes.
    fn event_bytes(buf_type: BufType) -> (KVec<u8>, KVec<u8>) {
        let mut buffer = Buffer::zeroed();
        buffer.set_index(3);
        let mut buffer_bytes = KVec::new();
        // A test that cannot allocate a few hundred bytes fails anyway.
        buffer_bytes
            .extend_from_slice(buffer.as_bytes(), GFP_KERNEL)
            .expect("allocation");
        // `type` follows `index` in `struct v4l2_buffer`.
        buffer_bytes[4..8].copy_from_slice(&buf_type.0.to_ne_bytes());
        let mut planes = KVec::new();
        for i in 0..MAX_PLANES {
            let mut plane = Plane::zeroed();
            plane.set_m(i as u64 + 1);
            planes
                .extend_from_slice(plane.as_bytes(), GFP_KERNEL)
                .expect("allocation");
        }
        (buffer_bytes, planes)
    }

    #[test]
    fn a_single_planar_buffer_keeps_no_planes() {
        let (buffer, planes) = event_bytes(BufType::VIDEO_CAPTURE);
        let done = DoneBuffer::from_event(&buffer, &planes).expect("allocation");
        assert_eq!(done.buffer.buf_type(), BufType::VIDEO_CAPTURE);
        assert_eq!(done.buffer.index(), 3);
        assert_eq!(done.planes.capacity(), 0);
    }

    #[test]
    fn a_multiplanar_buffer_keeps_every_plane() {
        let (buffer, planes) = event_bytes(BufType::VIDEO_CAPTURE_MPLANE);
        let done = DoneBuffer::from_event(&buffer, &planes).expect("allocation");
        assert_eq!(done.planes.len(), MAX_PLANES);
        for (i, plane) in done.planes.iter().enumerate() {
            assert_eq!(plane.m(), i as u64 + 1);
        }
    }

    fn index_of(done: &DoneBuffer) -> Option<u32> {
        Some(done.buffer.index())
    }

    fn queued(q: &mut QueueState, indexes: &[u32]) {
        for &i in indexes {
            assert_eq!(q.queued.insert(i), Ok(true));
        }
    }

    #[test]
    fn m2m_poll_waits_for_source_change_with_only_output_streaming() {
        let mut capture = QueueState::default();
        let mut output = QueueState {
            num_buffers: 2,
            ..Default::default()
        };
        // Neither queue streams: an error, as v4l2_m2m_poll says.
        assert_eq!(m2m_poll(&capture, &output), EPOLLERR);
        // A decoder before its first SOURCE_CHANGE: only OUTPUT streams,
        // with a buffer queued. No error: the program waits for the event.
        output.streaming = true;
        queued(&mut output, &[0]);
        assert_eq!(m2m_poll(&capture, &output), 0);
        // The device returned it: writable.
        assert_eq!(output.accept(returned(0, 0, 1)), Ok(()));
        output.publish();
        assert_eq!(m2m_poll(&capture, &output), EPOLLOUT | EPOLLWRNORM);
        // CAPTURE set up and a frame returned: readable too.
        capture.num_buffers = 1;
        capture.streaming = true;
        queued(&mut capture, &[0]);
        assert_eq!(capture.accept(returned(0, 0, 1)), Ok(()));
        capture.publish();
        assert_eq!(
            m2m_poll(&capture, &output),
            EPOLLOUT | EPOLLWRNORM | EPOLLIN | EPOLLRDNORM
        );
        // Both streaming but holding nothing: an error again.
        output.done.clear();
        capture.done.clear();
        assert_eq!(m2m_poll(&capture, &output), EPOLLERR);
        // After LAST, CAPTURE is readable (DQBUF says EPIPE).
        capture.last_dequeued = true;
        assert_eq!(m2m_poll(&capture, &output), EPOLLIN | EPOLLRDNORM);
    }

    #[test]
    fn an_m2m_job_shows_its_two_buffers_at_once() {
        let mut capture = QueueState {
            num_buffers: 1,
            streaming: true,
            ..Default::default()
        };
        let mut output = QueueState {
            num_buffers: 1,
            streaming: true,
            ..Default::default()
        };
        queued(&mut capture, &[0]);
        queued(&mut output, &[0]);
        // The OUTPUT half of the job came back, the CAPTURE half is the
        // next event: nothing shows yet, and the session still counts as
        // holding buffers (no EPOLLERR).
        assert_eq!(output.accept(returned(0, 0, 1)), Ok(()));
        assert_eq!(m2m_poll(&capture, &output), 0);
        assert!(matches!(output.dequeue(QueueKind::Output, None), Ok(None)));
        assert_eq!(capture.accept(returned(0, 0, 1)), Ok(()));
        // The batch is handled: both show.
        output.publish();
        capture.publish();
        assert_eq!(
            m2m_poll(&capture, &output),
            EPOLLOUT | EPOLLWRNORM | EPOLLIN | EPOLLRDNORM
        );
        // REMOVE_BUFS of a buffer not yet shown forgets it too.
        assert!(matches!(
            output.dequeue(QueueKind::Output, None),
            Ok(Some(_))
        ));
        queued(&mut output, &[0]);
        assert_eq!(output.accept(returned(0, 0, 1)), Ok(()));
        output.forget_returned(|index| index == 0);
        output.publish();
        assert!(output.done.is_empty());
    }

    #[test]
    fn single_queue_poll_errs_unless_streaming() {
        let mut q = QueueState {
            num_buffers: 1,
            ..Default::default()
        };
        assert_eq!(q.poll(EPOLLIN), EPOLLERR);
        q.streaming = true;
        assert_eq!(q.poll(EPOLLIN), 0);
        queued(&mut q, &[0]);
        assert_eq!(q.accept(returned(0, 0, 1)), Ok(()));
        q.publish();
        assert_eq!(q.poll(EPOLLIN), EPOLLIN);
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
        q.publish();
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
        q.publish();
        assert!(q.done.is_empty() && q.arriving.is_empty());
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
        q.publish();
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
        assert_eq!(q.accept(returned(0, V4L2_BUF_FLAG_LAST, 1)), Ok(()));
        q.publish();
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
        assert_eq!(out.accept(returned(0, V4L2_BUF_FLAG_LAST, 1)), Ok(()));
        out.publish();
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
        q.publish();
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
            QueueKind::of(BufType::VIDEO_CAPTURE_MPLANE),
            Some(QueueKind::Capture)
        );
        assert_eq!(
            QueueKind::of(BufType::VIDEO_OUTPUT),
            Some(QueueKind::Output)
        );
        assert_eq!(QueueKind::of(BufType::META_OUTPUT), Some(QueueKind::Output));
        assert_eq!(QueueKind::of(BufType(0)), None);
        assert_eq!(QueueKind::of(BufType(0x80)), None);
    }
}
