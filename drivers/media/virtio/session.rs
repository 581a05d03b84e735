// SPDX-License-Identifier: GPL-2.0

//! Sessions: one per open file, the unit of state and of locking.
//!
//! A session forwards its file's ioctls to the device, keeps the buffers the
//! eventq returned until DQBUF takes them, and mirrors the stream state the
//! device cannot tell us synchronously (streaming, last buffer, failure).

#![forbid(unsafe_code)]

use crate::{
    command::{Mapped, Response, Wait},
    ffi,
    guest_mmap::{self, GuestMmapQueue},
    guestmem::{GuestBuffer, HeldBuffers},
    ioctl,
    mmap::Mapping,
    pages::OwnedPages,
    protocol::{self, get_u32, set_u32, BUFFER_SIZE, MAX_PLANES, PLANE_SIZE, SG_ENTRY_SIZE},
    v4l2::FileHandle,
    Abandon, AddSessionError, MediaDevice,
};
use core::mem::offset_of;
use kernel::{
    new_mutex,
    prelude::*,
    sync::{poll::PollCondVar, Arc, Mutex},
};

mod controls;
mod memory;
mod queue;

use memory::{Presented, MEMORY_USERPTR};
use queue::{is_multiplanar, DoneBuffer, QueueState, MAX_BUFFERS};
pub(crate) use queue::{queue_of, BadEvent, QueueKind};

/// An ioctl argument as its handler received it, as bytes.
pub(crate) enum Arg<'a> {
    /// A struct the ioctl reads and may write back.
    Plain(&'a mut [u8]),
    /// A struct or value the ioctl only reads.
    ReadOnly(&'a [u8]),
    /// A `v4l2_buffer` and, for multi-planar types, its planes.
    Buffer {
        buf: &'a mut [u8],
        planes: &'a mut [u8],
    },
    /// A `v4l2_ext_controls` and its controls array.
    Controls {
        ctrls: &'a mut [u8],
        array: &'a mut [u8],
    },
}

const BUF_TYPE: usize = offset_of!(ffi::v4l2_buffer, type_);
const BUF_INDEX: usize = offset_of!(ffi::v4l2_buffer, index);
const BUF_FLAGS: usize = offset_of!(ffi::v4l2_buffer, flags);
const BUF_MEMORY: usize = offset_of!(ffi::v4l2_buffer, memory);
const BUF_M: usize = offset_of!(ffi::v4l2_buffer, m);
const BUF_LENGTH: usize = offset_of!(ffi::v4l2_buffer, length);
const PLANE_M: usize = offset_of!(ffi::v4l2_plane, m);
const PLANE_LENGTH: usize = offset_of!(ffi::v4l2_plane, length);
const REQBUFS_COUNT: usize = offset_of!(ffi::v4l2_requestbuffers, count);
const REQBUFS_TYPE: usize = offset_of!(ffi::v4l2_requestbuffers, type_);
const REQBUFS_MEMORY: usize = offset_of!(ffi::v4l2_requestbuffers, memory);
const REQBUFS_CAPS: usize = offset_of!(ffi::v4l2_requestbuffers, capabilities);
const CREATE_MEMORY: usize = offset_of!(ffi::v4l2_create_buffers, memory);
const CREATE_CAPS: usize = offset_of!(ffi::v4l2_create_buffers, capabilities);
const CREATE_INDEX: usize = offset_of!(ffi::v4l2_create_buffers, index);
const CREATE_COUNT: usize = offset_of!(ffi::v4l2_create_buffers, count);
const CREATE_FORMAT: usize = offset_of!(ffi::v4l2_create_buffers, format);
const CREATE_TYPE: usize = CREATE_FORMAT + offset_of!(ffi::v4l2_format, type_);
const DECODER_CMD: usize = offset_of!(ffi::v4l2_decoder_cmd, cmd);
const REMOVE_INDEX: usize = offset_of!(ffi::v4l2_remove_buffers, index);
const REMOVE_COUNT: usize = offset_of!(ffi::v4l2_remove_buffers, count);
const REMOVE_TYPE: usize = offset_of!(ffi::v4l2_remove_buffers, type_);
/// Size of the pointer fields the driver restores after the device wrote.
const POINTER_SIZE: usize = 8;

fn get_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let low = u64::from(get_u32(bytes, offset)?);
    let high = u64::from(get_u32(bytes, offset.checked_add(4)?)?);
    Some(low | (high << 32))
}

fn set_u64(bytes: &mut [u8], offset: usize, value: u64) {
    if let Some(high) = offset.checked_add(4) {
        set_u32(bytes, offset, value as u32);
        set_u32(bytes, high, (value >> 32) as u32);
    }
}

/// Copies back what the device wrote of an ioctl's payload and trailer and
/// returns its status with how many trailer bytes it wrote (the device
/// sizes the trailer from the payload it returns: QUERYBUF may shrink the
/// plane count) and the guest memory the command pointed at. The payload is
/// copied back even on error when the device wrote it (an ioctl may update
/// its argument and fail, e.g. the error index of S_EXT_CTRLS).
fn read_response(
    code: u32,
    mut response: Response,
    payload: &mut [u8],
    trailer: &mut [u8],
) -> Result<(usize, KVec<Mapped>)> {
    let memory = core::mem::take(&mut response.memory);
    let status = response.status();
    let mut trailer_written = 0;
    if response.bytes.len() > protocol::IOCTL_RESP_SIZE {
        let written = response.written();
        match written.get(protocol::IOCTL_RESP_SIZE..) {
            Some(body) if body.len() >= payload.len() => {
                let (main, rest) = body.split_at(payload.len());
                payload.copy_from_slice(main);
                trailer_written = rest.len().min(trailer.len());
                if let (Some(dst), Some(src)) = (
                    trailer.get_mut(..trailer_written),
                    rest.get(..trailer_written),
                ) {
                    dst.copy_from_slice(src);
                }
            }
            _ if status.is_ok() => {
                pr_err!(
                    "ioctl {:#x}: device wrote {} bytes, at least {} expected\n",
                    code,
                    written.len(),
                    protocol::IOCTL_RESP_SIZE + payload.len()
                );
                return Err(EIO);
            }
            _ => {}
        }
    }
    status.map(|()| (trailer_written, memory))
}

#[derive(Default)]
struct State {
    queues: [QueueState; 2],
    /// Buffers in guest memory the device holds.
    held: HeldBuffers<GuestBuffer>,
    /// The device was reset: it holds no buffer any more.
    device_reset: bool,
    /// The device reported an ERROR: it closed the session.
    failed: Option<u32>,
    /// The file handle is set up: events may be queued on it.
    ready: bool,
    /// The file was released.
    closed: bool,
}

impl State {
    fn queue_ref(&self, kind: QueueKind) -> &QueueState {
        match kind {
            QueueKind::Capture => &self.queues[0],
            QueueKind::Output => &self.queues[1],
        }
    }

    fn queue(&mut self, kind: QueueKind) -> &mut QueueState {
        match kind {
            QueueKind::Capture => &mut self.queues[0],
            QueueKind::Output => &mut self.queues[1],
        }
    }
}

/// How long the caller of an ioctl waits for the device: the ioctls whose
/// effect the driver mirrors (buffers, streams, subscriptions) must see the
/// answer; any other may be interrupted and asked again.
fn wait_for(code: u32) -> Wait {
    match code {
        ioctl::VIDIOC_REQBUFS
        | ioctl::VIDIOC_CREATE_BUFS
        | ioctl::VIDIOC_REMOVE_BUFS
        | ioctl::VIDIOC_QBUF
        | ioctl::VIDIOC_PREPARE_BUF
        | ioctl::VIDIOC_STREAMON
        | ioctl::VIDIOC_STREAMOFF
        | ioctl::VIDIOC_DECODER_CMD
        | ioctl::VIDIOC_ENCODER_CMD
        | ioctl::VIDIOC_SUBSCRIBE_EVENT
        | ioctl::VIDIOC_UNSUBSCRIBE_EVENT => Wait::Uninterruptible,
        _ => Wait::Interruptible,
    }
}

/// One open file of the video node.
#[repr(C)]
#[pin_data]
pub(crate) struct Session {
    /// The V4L2 file handle: `file->private_data` points here.
    #[pin]
    pub(crate) fh: FileHandle,
    id: u32,
    dev: Arc<MediaDevice>,
    /// Orders the ioctls that change a queue's buffers or stream (QBUF,
    /// PREPARE_BUF, REQBUFS, CREATE_BUFS, REMOVE_BUFS, STREAMON, STREAMOFF)
    /// from their sending to the driver's update after the answer, as
    /// vb2's queue lock does: so memory a QBUF hands to the device cannot
    /// be released by a STREAMOFF that overtakes it. Taken before `state`.
    #[pin]
    capture_lock: Mutex<()>,
    #[pin]
    output_lock: Mutex<()>,
    /// A mutex, not a spinlock: event handling allocates under it, and
    /// nothing in interrupt context takes it.
    #[pin]
    state: Mutex<State>,
    /// DQBUF waiters and pollers.
    #[pin]
    waiters: PollCondVar,
}

impl Session {
    /// Opens a session on the device and enters it in the device's map.
    pub(crate) fn open(dev: Arc<MediaDevice>) -> Result<Arc<Self>> {
        if dev.is_gone() {
            return Err(ENODEV);
        }
        let id = dev.open_session()?;
        let session_dev = dev.clone();
        let session = Arc::pin_init(
            pin_init!(Self {
                fh <- FileHandle::zeroed(),
                id,
                dev: session_dev,
                capture_lock <- new_mutex!((), "virtio_media_session_capture"),
                output_lock <- new_mutex!((), "virtio_media_session_output"),
                state <- new_mutex!(State::default(), "virtio_media_session"),
                waiters <- kernel::new_poll_condvar!("virtio_media_session_waiters"),
            }),
            GFP_KERNEL,
        );
        let session = match session {
            Ok(session) => session,
            Err(e) => {
                let _ = dev.close_session(id);
                return Err(e);
            }
        };
        match dev.add_session(session.clone()) {
            Ok(()) => Ok(session),
            // The id is another open session's: closing it would close
            // that one on the device.
            Err(AddSessionError::Duplicate) => Err(EIO),
            Err(AddSessionError::NoMemory) => {
                let _ = dev.close_session(id);
                Err(ENOMEM)
            }
        }
    }

    /// The file handle is set up: events may reach it from now on.
    pub(crate) fn publish(&self) {
        self.state.lock().ready = true;
    }

    /// The file is being released: close the session on the device (unless
    /// the device already did, with an ERROR) and forget it.
    pub(crate) fn release(self: &Arc<Self>) {
        self.dev.remove_session(self);
        let failed = {
            let mut state = self.state.lock();
            state.closed = true;
            state.ready = false;
            state.failed
        };
        self.waiters.notify_all();
        if failed.is_none() && !self.dev.is_gone() {
            if let Err(e) = self.dev.close_session(self.id) {
                // The device may keep state for it; ours is released anyway,
                // but for pages it may still write into.
                let mut held = KVec::new();
                self.state.lock().held.take_where(|_, _| true, &mut held);
                pr_warn!(
                    "CLOSE of session {} failed ({:?}); its memory is freed, but for {} buffers in guest memory left to the device\n",
                    self.id,
                    e,
                    held.len()
                );
                for buffer in held.drain_all() {
                    buffer.abandon();
                }
                return;
            }
        }
        // Closed (or failed, or reset): the device holds none of its buffers.
        self.release_held();
    }

    pub(crate) fn file_handle(&self) -> &FileHandle {
        &self.fh
    }

    pub(crate) fn id(&self) -> u32 {
        self.id
    }

    pub(crate) fn device(&self) -> &MediaDevice {
        &self.dev
    }

    pub(crate) fn waiters(&self) -> &PollCondVar {
        &self.waiters
    }

    fn check_usable(&self) -> Result {
        self.dev.check_usable()?;
        if self.state.lock().failed.is_some() {
            return Err(EIO);
        }
        Ok(())
    }

    /// The lock that orders the buffer-changing ioctls of queue `kind`.
    fn buffer_lock(&self, kind: QueueKind) -> &Mutex<()> {
        match kind {
            QueueKind::Capture => &self.capture_lock,
            QueueKind::Output => &self.output_lock,
        }
    }

    /// Forwards ioctl `code` with its argument; see [`Arg`].
    pub(crate) fn ioctl(&self, code: u32, arg: Arg<'_>) -> Result {
        self.check_usable()?;
        match arg {
            Arg::Plain(payload) => self.plain_ioctl(code, payload),
            Arg::ReadOnly(payload) => {
                // The device may write the payload back (S_INPUT is WR);
                // the caller's value is const, so the copy is dropped.
                let mut copy = KVec::new();
                copy.extend_from_slice(payload, GFP_KERNEL)?;
                self.plain_ioctl(code, &mut copy)
            }
            Arg::Buffer { buf, planes } => self.buffer_ioctl(code, buf, planes),
            Arg::Controls { ctrls, array } => self.controls_ioctl(code, ctrls, array),
        }
    }

    /// An ioctl whose payload is one struct or value (no trailer).
    fn plain_ioctl(&self, code: u32, payload: &mut [u8]) -> Result {
        match code {
            ioctl::VIDIOC_REQBUFS => {
                return self.allocate_buffers(code, payload, REQBUFS_MEMORY, REQBUFS_CAPS)
            }
            ioctl::VIDIOC_CREATE_BUFS => {
                return self.allocate_buffers(code, payload, CREATE_MEMORY, CREATE_CAPS)
            }
            _ => {}
        }
        let ordered = match code {
            ioctl::VIDIOC_STREAMON | ioctl::VIDIOC_STREAMOFF => {
                get_u32(payload, 0).and_then(queue_of)
            }
            ioctl::VIDIOC_REMOVE_BUFS => get_u32(payload, REMOVE_TYPE).and_then(queue_of),
            _ => None,
        };
        let _ordered = ordered.map(|kind| self.buffer_lock(kind).lock());
        // The device may return buffers while it handles STREAMON, before
        // its response: the queue must already count as streaming then, or
        // those buffers would be dropped (an m2m device runs its first jobs
        // right there).
        let starting = if code == ioctl::VIDIOC_STREAMON {
            self.mark_streaming(payload)
        } else {
            None
        };
        let result = self.transact(code, payload, &mut []).map(|_| ());
        if let (Some(kind), Err(_)) = (starting, &result) {
            self.state.lock().queue(kind).stop();
        }
        result?;
        self.after_success(code, payload);
        Ok(())
    }

    /// Sends the ioctl and copies back what the device wrote (see
    /// [`read_response`]); returns how many trailer bytes it wrote.
    fn transact(&self, code: u32, payload: &mut [u8], trailer: &mut [u8]) -> Result<usize> {
        self.exchange(code, payload, trailer, KVec::new())
            .map(|(written, _)| written)
    }

    /// [`Session::transact`] for an ioctl that also points the device at
    /// guest memory (`memory`, one SG entry each after the trailer in the
    /// request only); gives the memory back once the device is done.
    fn exchange(
        &self,
        code: u32,
        payload: &mut [u8],
        trailer: &mut [u8],
        memory: KVec<KVec<u8>>,
    ) -> Result<(usize, KVec<Mapped>)> {
        let response = self.send_ioctl(code, payload, trailer, &[], memory, wait_for(code))?;
        read_response(code, response, payload, trailer)
    }

    /// Sends an ioctl: `payload` and `trailer` go both ways, `sg_entries`
    /// and the SG entries of `memory` only to the device. `Err` when the
    /// device did not answer; its answer may still be an error.
    fn send_ioctl(
        &self,
        code: u32,
        payload: &[u8],
        trailer: &[u8],
        sg_entries: &[u8],
        memory: KVec<KVec<u8>>,
        wait: Wait,
    ) -> Result<Response> {
        let sg_len = memory.len().checked_mul(SG_ENTRY_SIZE).ok_or(EINVAL)?;
        let body = payload.len().checked_add(trailer.len()).ok_or(EINVAL)?;
        let extra = sg_entries.len().checked_add(sg_len).ok_or(EINVAL)?;
        let mut request_trailer =
            KVec::with_capacity(trailer.len().checked_add(extra).ok_or(EINVAL)?, GFP_KERNEL)?;
        request_trailer.extend_from_slice(trailer, GFP_KERNEL)?;
        request_trailer.extend_from_slice(sg_entries, GFP_KERNEL)?;
        request_trailer.resize(trailer.len() + extra, 0, GFP_KERNEL)?;
        let request = protocol::ioctl_request(self.id, code, payload, &request_trailer)?;
        let sg_offset = protocol::IOCTL_CMD_SIZE + body + sg_entries.len();
        let response_len = protocol::ioctl_response_size(code, body)?;
        self.dev.command(
            request,
            response_len,
            wait,
            memory,
            sg_offset,
            Abandon::Drop,
        )
    }

    fn buffer_ioctl(&self, code: u32, buf: &mut [u8], planes: &mut [u8]) -> Result {
        let buf_type = get_u32(buf, BUF_TYPE).ok_or(EINVAL)?;
        let kind = queue_of(buf_type).ok_or(EINVAL)?;
        let mut pointer = [0u8; POINTER_SIZE];
        pointer.copy_from_slice(buf.get(BUF_M..BUF_M + POINTER_SIZE).ok_or(EINVAL)?);
        let length = get_u32(buf, BUF_LENGTH).ok_or(EINVAL)?;
        let result = match code {
            ioctl::VIDIOC_QUERYBUF => self.transact(code, buf, planes),
            _ => self.queue_buffer(code, kind, buf, planes),
        };
        if is_multiplanar(buf_type) {
            // Whatever the device wrote, the planes pointer is the kernel's
            // copy, the array cannot grow, and the planes it reports must be
            // the ones it wrote.
            if let Some(m) = buf.get_mut(BUF_M..BUF_M + POINTER_SIZE) {
                m.copy_from_slice(&pointer);
            }
            let count = get_u32(buf, BUF_LENGTH).unwrap_or(u32::MAX);
            let written = result.as_ref().map_or(usize::MAX, |w| *w);
            if count > length || (result.is_ok() && count as usize * PLANE_SIZE > written) {
                set_u32(buf, BUF_LENGTH, length);
                pr_err!(
                    "device reports {} planes (array of {}, {} bytes written)\n",
                    count,
                    length,
                    written
                );
                return Err(EIO);
            }
        }
        if get_u32(buf, BUF_MEMORY) == Some(MEMORY_USERPTR) {
            let index = get_u32(buf, BUF_INDEX).unwrap_or(u32::MAX);
            let state = self.state.lock();
            state.present_to_program(kind, buf, planes, state.held.pointers(kind, index));
        }
        result.map(|_| ())
    }

    /// Marks the queue of a STREAMON payload streaming; returns it unless it
    /// already was.
    fn mark_streaming(&self, payload: &[u8]) -> Option<QueueKind> {
        let kind = get_u32(payload, 0).and_then(queue_of)?;
        let mut state = self.state.lock();
        let queue = state.queue(kind);
        if queue.streaming {
            return None;
        }
        queue.streaming = true;
        queue.last_dequeued = false;
        Some(kind)
    }

    /// Handles the events the device returned so far (after SUBSCRIBE with
    /// SEND_INITIAL, the initial events are there before the response).
    pub(crate) fn drain_events(&self) {
        self.dev.drain_events();
    }

    /// Mirrors the stream state an ioctl changed.
    fn after_success(&self, code: u32, payload: &[u8]) {
        if code == ioctl::VIDIOC_STREAMOFF || code == ioctl::VIDIOC_REQBUFS {
            // Events and responses travel on different queues: handle the
            // buffers the device returned before it answered, so none of
            // them survives into the next stream.
            self.dev.drain_events();
        }
        let mut released = KVec::new();
        let mut freed = KVec::new();
        let mut state = self.state.lock();
        match code {
            ioctl::VIDIOC_REQBUFS => {
                let kind = get_u32(payload, REQBUFS_TYPE).and_then(queue_of);
                if let (Some(kind), Some(count)) = (kind, get_u32(payload, REQBUFS_COUNT)) {
                    // The device freed the queue's buffers.
                    state.held.take_where(|k, _| k == kind, &mut released);
                    let queue = state.queue(kind);
                    freed = queue.mmap.take();
                    queue.presented = Presented::AsIs;
                    queue.num_buffers = count;
                    queue.queued.clear();
                    if count == 0 {
                        queue.stop();
                    }
                }
            }
            ioctl::VIDIOC_REMOVE_BUFS => {
                let kind = get_u32(payload, REMOVE_TYPE).and_then(queue_of);
                let first = get_u32(payload, REMOVE_INDEX).unwrap_or(0);
                let end = get_u32(payload, REMOVE_COUNT).and_then(|count| first.checked_add(count));
                if let (Some(kind), Some(end)) = (kind, end) {
                    // The device freed these buffers: what the driver
                    // keeps for them goes too.
                    let removed = |index: u32| (first..end).contains(&index);
                    state
                        .held
                        .take_where(|k, index| k == kind && removed(index), &mut released);
                    let queue = state.queue(kind);
                    freed = queue.mmap.remove(first, end);
                    for index in first..end.min(MAX_BUFFERS) {
                        queue.queued.remove(index);
                    }
                    queue.done.retain(|done| {
                        !removed(get_u32(&done.buffer, BUF_INDEX).unwrap_or(u32::MAX))
                    });
                }
            }
            ioctl::VIDIOC_CREATE_BUFS => {
                let kind = get_u32(payload, CREATE_TYPE).and_then(queue_of);
                let end = get_u32(payload, CREATE_INDEX)
                    .zip(get_u32(payload, CREATE_COUNT))
                    .and_then(|(index, count)| index.checked_add(count));
                if let (Some(kind), Some(end)) = (kind, end) {
                    let queue = state.queue(kind);
                    queue.num_buffers = queue.num_buffers.max(end);
                }
            }
            ioctl::VIDIOC_STREAMON => {
                if let Some(kind) = get_u32(payload, 0).and_then(queue_of) {
                    let queue = state.queue(kind);
                    queue.streaming = true;
                    queue.last_dequeued = false;
                }
            }
            ioctl::VIDIOC_STREAMOFF => {
                if let Some(kind) = get_u32(payload, 0).and_then(queue_of) {
                    // The device gave every buffer of the queue back.
                    state.held.take_where(|k, _| k == kind, &mut released);
                    state.queue(kind).stop();
                }
            }
            ioctl::VIDIOC_DECODER_CMD | ioctl::VIDIOC_ENCODER_CMD => {
                // START resumes a stream that ended with a LAST buffer.
                if get_u32(payload, DECODER_CMD) == Some(ffi::V4L2_DEC_CMD_START) {
                    state.queue(QueueKind::Capture).last_dequeued = false;
                }
            }
            _ => return,
        }
        drop(state);
        drop(released);
        drop(freed);
        // STREAMOFF and REQBUFS(0) end blocked DQBUFs.
        self.waiters.notify_all();
    }

    /// VIDIOC_DQBUF: the oldest buffer the device returned on this queue.
    pub(crate) fn dqbuf(&self, buf: &mut [u8], planes: &mut [u8], nonblocking: bool) -> Result {
        let buf_type = get_u32(buf, BUF_TYPE).ok_or(EINVAL)?;
        let kind = queue_of(buf_type).ok_or(EINVAL)?;
        let capacity = u32::try_from(planes.len() / PLANE_SIZE)?;
        let capacity = is_multiplanar(buf_type).then_some(capacity);
        let mut state = self.state.lock();
        let done = loop {
            self.dev.check_usable()?;
            if state.failed.is_some() {
                return Err(EIO);
            }
            if let Some(done) = state.queue(kind).dequeue(kind, capacity)? {
                break done;
            }
            if nonblocking {
                return Err(EAGAIN);
            }
            if self.waiters.wait_interruptible(&mut state) {
                return Err(ERESTARTSYS);
            }
        };
        drop(state);

        let mut pointer = [0u8; POINTER_SIZE];
        pointer.copy_from_slice(buf.get(BUF_M..BUF_M + POINTER_SIZE).ok_or(EINVAL)?);
        buf.copy_from_slice(&done.buffer);
        if is_multiplanar(buf_type) {
            if let Some(m) = buf.get_mut(BUF_M..BUF_M + POINTER_SIZE) {
                m.copy_from_slice(&pointer);
            }
            let count = get_u32(buf, BUF_LENGTH).unwrap_or(0) as usize;
            let bytes = count * PLANE_SIZE;
            if let (Some(dst), Some(src)) = (planes.get_mut(..bytes), done.planes.get(..bytes)) {
                dst.copy_from_slice(src);
            }
        }
        Ok(())
    }

    /// A DQBUF event for this session: keep the buffer for DQBUF; the
    /// caller wakes the waiters.
    pub(crate) fn buffer_done(&self, buffer: &[u8], planes: &[u8]) -> Result<(), BadEvent> {
        let buf_type = get_u32(buffer, BUF_TYPE).unwrap_or(u32::MAX);
        let kind = queue_of(buf_type).ok_or(BadEvent::BufferType(buf_type))?;
        if is_multiplanar(buf_type) {
            let count = get_u32(buffer, BUF_LENGTH).unwrap_or(u32::MAX);
            if count as usize > MAX_PLANES {
                return Err(BadEvent::PlaneCount(count));
            }
        }
        let mut done = KBox::new(
            DoneBuffer {
                buffer: [0; BUFFER_SIZE],
                planes: [0; PLANE_SIZE * MAX_PLANES],
            },
            GFP_KERNEL,
        )
        .map_err(|_| BadEvent::NotReady)?;
        done.buffer.copy_from_slice(
            buffer
                .get(..BUFFER_SIZE)
                .ok_or(BadEvent::BufferType(buf_type))?,
        );
        done.planes.copy_from_slice(
            planes
                .get(..PLANE_SIZE * MAX_PLANES)
                .ok_or(BadEvent::PlaneCount(0))?,
        );
        let index = get_u32(buffer, BUF_INDEX).unwrap_or(u32::MAX);
        let mut state = self.state.lock();
        state.queue(kind).claim(index)?;
        let mut released = None;
        if get_u32(buffer, BUF_MEMORY) == Some(MEMORY_USERPTR) {
            let held = state
                .held
                .take(kind, index)
                .ok_or(BadEvent::NotHeld(index))?;
            let DoneBuffer { buffer, planes } = &mut *done;
            state.present_to_program(kind, buffer, planes, Some(&held.pointers));
            released = Some(held);
        }
        let accepted = state.queue(kind).keep(done);
        drop(state);
        // The device is done with the pages: unmapped and unpinned here,
        // outside the session's lock.
        drop(released);
        accepted
    }

    /// Wakes DQBUF waiters and pollers once returned buffers are queued
    /// (the eventq wakes once per batch of events, see `EventQueue::drain`).
    pub(crate) fn wake_buffer_waiters(&self) {
        self.waiters.notify_all();
    }

    /// An EVENT event for this session.
    pub(crate) fn event(&self, event: &[u8]) -> Result<(), BadEvent> {
        // The lock is held while the event is queued: `release` clears
        // `ready` under it before the file handle is torn down
        // (`v4l2_fh_exit` clears its `vdev`), so the handle is live here.
        let state = self.state.lock();
        if !state.ready {
            return Err(BadEvent::NotReady);
        }
        self.fh.queue_event(event);
        drop(state);
        Ok(())
    }

    /// An ERROR event: the device closed the session, so it holds none of
    /// its buffers any more: their guest memory is released now, not at
    /// close.
    pub(crate) fn failed(&self, errno: u32) {
        pr_warn!(
            "device reports error {} on session {}: session closed\n",
            errno,
            self.id
        );
        self.state.lock().failed = Some(errno);
        self.release_held();
        self.waiters.notify_all();
    }

    /// The device went away: wake everything that waits on it.
    pub(crate) fn device_gone(&self) {
        self.waiters.notify_all();
    }

    /// The device was reset and holds no buffer: release the guest memory
    /// of held buffers (while the commandq can still unmap it) and refuse
    /// new ones.
    pub(crate) fn device_reset(&self) {
        self.state.lock().device_reset = true;
        self.release_held();
    }

    fn release_held(&self) {
        let mut released = KVec::new();
        self.state
            .lock()
            .held
            .take_where(|_, _| true, &mut released);
        drop(released);
    }

    /// `poll()`, as vb2 answers it: for each queue the caller asked about,
    /// readable/writable when a buffer is done (or, on capture, after the
    /// LAST buffer), an error when it is not streaming; PRI for events; ERR
    /// for a failed session. A mem2mem device answers as `v4l2_m2m_poll()`
    /// does: an error only when neither queue has anything to wait for, so
    /// a decoder's CAPTURE queue may be polled (for SOURCE_CHANGE, PRI)
    /// before it streams, while OUTPUT holds the stream's first buffers.
    pub(crate) fn poll_mask(&self, requested: u32) -> u32 {
        let mut mask = 0;
        if self.fh.event_pending() {
            mask |= ffi::EPOLLPRI;
        }
        let state = self.state.lock();
        if state.failed.is_some() || self.dev.check_usable().is_err() {
            return mask | ffi::EPOLLERR;
        }
        let (has_capture, has_output) = self.dev.queue_kinds();
        let [capture, output] = &state.queues;
        let read_bits = ffi::EPOLLIN | ffi::EPOLLRDNORM;
        let write_bits = ffi::EPOLLOUT | ffi::EPOLLWRNORM;
        if has_capture && has_output {
            if requested & (read_bits | write_bits) == 0 {
                return mask;
            }
            let output_waits = output.streaming && output.holds_buffers();
            let capture_waits =
                capture.streaming && (capture.holds_buffers() || capture.last_dequeued);
            if !output_waits && !capture_waits {
                return mask | ffi::EPOLLERR;
            }
            if !output.done.is_empty() {
                mask |= write_bits;
            }
            if !capture.done.is_empty() || capture.last_dequeued {
                mask |= read_bits;
            }
            return mask;
        }
        for (present, queue, bits, ready) in [
            (
                has_capture,
                capture,
                read_bits,
                !capture.done.is_empty() || capture.last_dequeued,
            ),
            (has_output, output, write_bits, !output.done.is_empty()),
        ] {
            if !present || requested & bits == 0 {
                continue;
            }
            if !queue.streaming {
                mask |= ffi::EPOLLERR;
            } else if ready {
                mask |= bits;
            }
        }
        mask
    }

    /// `mmap()` of the buffer plane at `offset`: MMAP on the device.
    pub(crate) fn map(&self, offset: u64, len: u64, writable: bool) -> Result<Arc<Mapping>> {
        self.check_usable()?;
        let response = self.dev.command(
            protocol::mmap_request(self.id, writable, offset)?,
            protocol::MMAP_RESPONSE_SIZE,
            Wait::Interruptible,
            KVec::new(),
            0,
            Abandon::Unmap,
        )?;
        response.status()?;
        let (shm_offset, mapped_len) =
            protocol::mmap_response(response.written()).ok_or_else(|| {
                pr_err!("MMAP response of {} bytes is too short\n", response.written);
                EIO
            })?;
        let page = kernel::page::PAGE_SIZE as u64;
        let mapped_pages = mapped_len.checked_next_multiple_of(page).ok_or(EIO)?;
        let pgoff = usize::try_from(offset / page)?;
        let mapping = Mapping::new(self.dev.clone(), shm_offset, mapped_pages.max(len), pgoff)?;
        if len > mapped_pages {
            // Larger than the buffer: unmap on the device and refuse.
            Mapping::unmap_later(mapping);
            return Err(EINVAL);
        }
        Ok(mapping)
    }
}
