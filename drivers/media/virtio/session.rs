// SPDX-License-Identifier: GPL-2.0

//! Sessions: one per open file, the unit of state and of locking.
//!
//! A session forwards its file's ioctls to the device, keeps the buffers the
//! eventq returned until DQBUF takes them, and mirrors the stream state the
//! device cannot tell us synchronously (streaming, last buffer, failure).

#![forbid(unsafe_code)]

use crate::{
    command::{Mapped, Response, Wait},
    device::{Abandon, MediaDevice},
    events::{AddTargetError, EventTarget},
    guestmem::{GuestBuffer, HeldBuffers},
    kernel_ext::{
        alloc::{drop_unallocated, LeanVec},
        media::v4l2::{
            ioctl::{self as codes, Ioctl},
            poll::{EPOLLERR, EPOLLIN, EPOLLOUT, EPOLLPRI, EPOLLRDNORM, EPOLLWRNORM},
            types::{memory as buffer_memory, BufType, Buffer, Plane},
            EventSink,
        },
    },
    mmap::Mapping,
    protocol::{self, SG_ENTRY_SIZE},
    stream::{BadEvent, DoneBuffer, QueueKind, QueueState, MAX_BUFFERS},
};
use kernel::{
    new_mutex,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, Release},
        poll::{PollCondVar, PollCondVarBox},
        Arc, Mutex,
    },
    transmute::AsBytes,
    workqueue::{impl_has_work, new_work, Work, WorkItem},
};

mod controls;
mod memory;

use memory::{Presented, QueueMemory};

/// Copies back what the device wrote of an ioctl's payload and trailer and
/// returns its status with how many trailer bytes it wrote (the device
/// sizes the trailer from the payload it returns: QUERYBUF may shrink the
/// plane count) and the guest memory the command pointed at. The payload is
/// copied back even on error when the device wrote it (an ioctl may update
/// its argument and fail, e.g. the error index of S_EXT_CTRLS).
fn read_response(
    code: u32,
    mut response: Response<'_>,
    payload: &mut [u8],
    trailer: &mut [u8],
) -> Result<(usize, KVec<Mapped>)> {
    let memory = response.take_memory();
    let status = response.status();
    let mut trailer_written = 0;
    if response.capacity() > protocol::IOCTL_RESP_SIZE {
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
    /// What each queue's buffers are in memory.
    memory: [QueueMemory; 2],
    /// Buffers in guest memory the device holds.
    held: HeldBuffers<GuestBuffer>,
    /// The file was released.
    closed: bool,
    /// V4L2 events of the eventq batch being handled, queued on the file
    /// together with the batch's buffers (see [`Session::publish`]).
    arriving_events: LeanVec<KVec<u8>>,
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

    fn memory_ref(&self, kind: QueueKind) -> &QueueMemory {
        match kind {
            QueueKind::Capture => &self.memory[0],
            QueueKind::Output => &self.memory[1],
        }
    }

    fn memory(&mut self, kind: QueueKind) -> &mut QueueMemory {
        match kind {
            QueueKind::Capture => &mut self.memory[0],
            QueueKind::Output => &mut self.memory[1],
        }
    }
}

/// How long the caller of an ioctl waits for the device: the ioctls whose
/// effect the driver mirrors (buffers, streams, subscriptions) must see the
/// answer; any other may be interrupted and asked again.
fn wait_for(code: u32) -> Wait {
    match code {
        codes::VIDIOC_REQBUFS
        | codes::VIDIOC_CREATE_BUFS
        | codes::VIDIOC_REMOVE_BUFS
        | codes::VIDIOC_QBUF
        | codes::VIDIOC_PREPARE_BUF
        | codes::VIDIOC_STREAMON
        | codes::VIDIOC_STREAMOFF
        | codes::VIDIOC_DECODER_CMD
        | codes::VIDIOC_ENCODER_CMD
        | codes::VIDIOC_SUBSCRIBE_EVENT
        | codes::VIDIOC_UNSUBSCRIBE_EVENT => Wait::Uninterruptible,
        _ => Wait::Interruptible,
    }
}

/// One open file of the video node.
#[pin_data]
pub(crate) struct Session {
    id: u32,
    dev: Arc<MediaDevice>,
    /// Where the file's V4L2 events go.
    events: EventSink,
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
    /// The device has no session for this file any more: it was reset (it
    /// stopped answering, or the system slept) and forgot the session, or
    /// it closed it with an ERROR. Ioctls then fail with EIO and nothing is
    /// sent under the id again (it may be another session's now). Set under
    /// `state`'s lock, so that what is read under it sees it in order with
    /// the rest of the state; read without the lock by every forwarded
    /// ioctl (`check_usable`). Never cleared.
    lost: Atomic<bool>,
    /// DQBUF waiters and pollers. Boxed: dropping a `PollCondVar` waits
    /// for an RCU grace period (epoll may still reach it), which made
    /// every close() take milliseconds; the box is freed after one instead.
    waiters: PollCondVarBox,
    /// Sends a CLOSE that `release` could not send (see there).
    #[pin]
    close_work: Work<Session>,
}

impl_has_work! {
    impl HasWork<Self> for Session { self.close_work }
}

impl WorkItem for Session {
    type Pointer = Arc<Session>;

    fn run(this: Arc<Session>) {
        let result = this.close_on_device().and_then(|answer| answer);
        this.after_close(result);
    }
}

impl Session {
    /// Opens a session on the device and enters it in the device's map.
    pub(crate) fn open(dev: Arc<MediaDevice>, events: EventSink) -> Result<Arc<Self>> {
        dev.check_usable()?;
        // Allocated first: once the device opened a session, a failure
        // must close it again.
        let waiters = PollCondVarBox::new(
            c"virtio_media_session_waiters",
            kernel::static_lock_class!(),
        )?;
        let id = dev.open_session()?;
        let session_dev = dev.clone();
        let session = Arc::pin_init(
            pin_init!(Self {
                id,
                dev: session_dev,
                events,
                capture_lock <- new_mutex!((), "virtio_media_session_capture"),
                output_lock <- new_mutex!((), "virtio_media_session_output"),
                state <- new_mutex!(State::default(), "virtio_media_session"),
                lost: Atomic::new(false),
                waiters,
                close_work <- new_work!("virtio_media::Session::close_work"),
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
        match dev.add_session(id, session.clone()) {
            Ok(()) => Ok(session),
            // The id is another open session's: closing it would close
            // that one on the device.
            Err(AddTargetError::Duplicate) => Err(EIO),
            Err(AddTargetError::NoMemory) => {
                let _ = dev.close_session(id);
                Err(ENOMEM)
            }
        }
    }

    /// The file is being released: close the session on the device (unless
    /// the device already did, with an ERROR) and forget it.
    pub(crate) fn release(self: &Arc<Self>) {
        self.dev.remove_session(self.id, &**self);
        // Nobody waits on `waiters` any more: DQBUF and poll() hold the
        // file, and epoll let go of it before its release.
        self.state.lock().closed = true;
        match self.close_on_device() {
            // Not sent: no memory for the command, or a signal (a killed
            // program's close) while the ring was full. The driver's
            // workqueue has neither signals nor, usually, the allocation
            // failure: try once more there, so that the buffers are given
            // back now and not at the device's next reset. (A device that
            // answered with one of these errnos was sent its CLOSE: sending
            // another could close a new session the device gave the id.)
            Err(e) if e == ENOMEM || e == ERESTARTSYS => {
                pr_warn!(
                    "CLOSE of session {} not sent ({:?}); retrying from the workqueue\n",
                    self.id,
                    e
                );
                // Queued once, at release: it cannot be queued already.
                let _ = self.dev.workqueue().enqueue(self.clone());
            }
            result => self.after_close(result.and_then(|answer| answer)),
        }
    }

    /// Sends CLOSE unless the device holds nothing of the session any more
    /// (an ERROR closed it, or the device was reset or is unusable); as
    /// [`MediaDevice::close_session`].
    fn close_on_device(&self) -> Result<Result> {
        if self.is_lost() || self.dev.check_usable().is_err() {
            return Ok(Ok(()));
        }
        self.dev.close_session(self.id)
    }

    /// Gives back the buffers' guest memory once CLOSE succeeded; after a
    /// failed one, keeps what the device may still write into until its
    /// reset.
    fn after_close(&self, result: Result) {
        let Err(e) = result else {
            // Closed (or failed, or reset): the device holds none of them.
            self.release_held();
            return;
        };
        let mut held = KVec::new();
        self.state.lock().held.take_where(|_, _| true, &mut held);
        // Kept memory is the driver's alone; the rest may be in use.
        let mut i = 0;
        while let Some(entry) = held.get(i) {
            if entry.is_kept() {
                drop(held.remove(i));
            } else {
                i += 1;
            }
        }
        pr_warn!(
            "CLOSE of session {} failed ({:?}); {} buffers stay with the device until its reset\n",
            self.id,
            e,
            held.len()
        );
        self.dev.keep_until_reset(held);
    }

    pub(crate) fn device(&self) -> &MediaDevice {
        &self.dev
    }

    pub(crate) fn waiters(&self) -> &PollCondVar {
        &self.waiters
    }

    fn check_usable(&self) -> Result {
        self.dev.check_usable()?;
        if self.is_lost() {
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

    /// An ioctl of the file (see [`Ioctl`]).
    pub(crate) fn ioctl(&self, nonblocking: bool, ioctl: Ioctl<'_>) -> Result {
        match ioctl {
            // Answered from the configuration space, whatever the device.
            Ioctl::QueryCap(cap) => {
                let config = self.dev.config();
                let card = config.card_name().unwrap_or("virtio-media");
                cap.set(
                    b"virtio-media",
                    card.as_bytes(),
                    b"platform:virtio-media",
                    config.device_caps,
                );
                return Ok(());
            }
            Ioctl::Dqbuf { buf, planes } => return self.dqbuf(buf, planes, nonblocking),
            Ioctl::ExpBuf(exp) => return self.export_buffer(exp),
            _ => {}
        }
        self.check_usable()?;
        match ioctl {
            Ioctl::Bytes { code, arg } => self.forward(code, arg),
            Ioctl::ReadOnly { code, arg } => self.forward_copy(code, arg),
            Ioctl::ReqBufs(req) => self.request_buffers(req),
            Ioctl::CreateBufs(create) => self.create_buffers(create),
            Ioctl::RemoveBufs(remove) => self.remove_buffers(remove),
            Ioctl::Stream { code, buf_type } => self.stream(code, BufType(buf_type)),
            Ioctl::Buffer { code, buf, planes } => self.buffer_ioctl(code, buf, planes),
            Ioctl::ExtCtrls { code, ctrls, array } => self.controls_ioctl(code, ctrls, array),
            Ioctl::Command { code, cmd, arg } => {
                self.forward(code, arg)?;
                // START resumes a stream that ended with a LAST buffer.
                if (code == codes::VIDIOC_DECODER_CMD || code == codes::VIDIOC_ENCODER_CMD)
                    && cmd == crate::kernel_ext::media::v4l2::uapi::V4L2_DEC_CMD_START
                {
                    self.state.lock().queue(QueueKind::Capture).last_dequeued = false;
                    self.waiters.notify_all();
                }
                Ok(())
            }
            Ioctl::Subscribe(sub) => {
                self.forward_copy(codes::VIDIOC_SUBSCRIBE_EVENT, sub.as_bytes())?;
                // The initial events (V4L2_EVENT_SUB_FL_SEND_INITIAL) came
                // before the answer: they are queued before this returns.
                self.dev.drain_events();
                Ok(())
            }
            Ioctl::Unsubscribe(sub) => {
                self.forward_copy(codes::VIDIOC_UNSUBSCRIBE_EVENT, sub.as_bytes())
            }
            Ioctl::QueryCap(_) | Ioctl::Dqbuf { .. } | Ioctl::ExpBuf(_) => Ok(()),
        }
    }

    /// An ioctl whose argument is const: the device may write the payload
    /// back (S_INPUT is WR), into a copy that is then dropped.
    fn forward_copy(&self, code: u32, arg: &[u8]) -> Result {
        let mut copy = KVec::new();
        copy.extend_from_slice(arg, GFP_KERNEL)?;
        self.forward(code, &mut copy)
    }

    /// Forwards an ioctl whose argument is one struct or value.
    fn forward(&self, code: u32, arg: &mut [u8]) -> Result {
        self.transact(code, arg, &mut []).map(|_| ())
    }

    /// STREAMON or STREAMOFF of a queue, ordered with its buffer changes.
    fn stream(&self, code: u32, buf_type: BufType) -> Result {
        let kind = QueueKind::of(buf_type);
        let _ordered = kind.map(|kind| self.buffer_lock(kind).lock());
        let mut arg = buf_type.0.to_ne_bytes();
        let Some(kind) = kind else {
            // Not a buffer type: the device says what it thinks of it.
            return self.forward(code, &mut arg);
        };
        if code == codes::VIDIOC_STREAMON {
            // The device may return buffers while it handles STREAMON,
            // before its response: the queue must already count as
            // streaming then, or those buffers would be dropped (an m2m
            // device runs its first jobs right there).
            let started = {
                let mut state = self.state.lock();
                let queue = state.queue(kind);
                let started = !queue.streaming;
                queue.streaming = true;
                queue.last_dequeued = false;
                started
            };
            let result = self.forward(code, &mut arg);
            if started && result.is_err() {
                self.state.lock().queue(kind).stop();
            }
            return result;
        }
        self.forward(code, &mut arg)?;
        // Events and responses travel on different queues: handle the
        // buffers the device returned before it answered, so none of them
        // survives into the next stream.
        self.dev.drain_events();
        let mut released = KVec::new();
        {
            let mut state = self.state.lock();
            // The device gave every buffer of the queue back.
            state.held.take_where(|k, _| k == kind, &mut released);
            state.queue(kind).stop();
        }
        drop(released);
        // A blocked DQBUF ends (EINVAL, as vb2 says).
        self.waiters.notify_all();
        Ok(())
    }

    /// Sends the ioctl and copies back what the device wrote (see
    /// [`read_response`]); returns how many trailer bytes it wrote.
    fn transact(&self, code: u32, payload: &mut [u8], trailer: &mut [u8]) -> Result<usize> {
        self.exchange(code, payload, trailer, KVec::new())
            .map(|(written, memory)| {
                drop_unallocated(memory);
                written
            })
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
    ) -> Result<Response<'_>> {
        let sg_room = memory.len().checked_mul(SG_ENTRY_SIZE).ok_or(EINVAL)?;
        let body = payload.len().checked_add(trailer.len()).ok_or(EINVAL)?;
        let sg_offset = protocol::IOCTL_CMD_SIZE + body + sg_entries.len();
        let response_len = protocol::ioctl_response_size(code, body)?;
        self.dev.command(
            |buf| {
                let sg = (sg_entries, sg_room);
                protocol::ioctl_request(buf, self.id, code, payload, trailer, sg)
            },
            response_len,
            wait,
            memory,
            sg_offset,
            Abandon::Drop,
        )
    }

    /// QUERYBUF, QBUF and PREPARE_BUF.
    fn buffer_ioctl(&self, code: u32, buf: &mut Buffer, planes: &mut [Plane]) -> Result {
        let buf_type = buf.buf_type();
        let kind = QueueKind::of(buf_type).ok_or(EINVAL)?;
        let length = buf.length();
        let result = match code {
            codes::VIDIOC_QUERYBUF => {
                self.transact(code, buf.as_bytes_mut(), planes.as_bytes_mut())
            }
            _ => self.queue_buffer(code, kind, buf, planes),
        };
        if buf_type.is_multiplanar() {
            // Whatever the device wrote, the array cannot grow, and the
            // planes it reports must be the ones it wrote.
            let count = buf.length();
            let written = result.as_ref().map_or(usize::MAX, |w| *w);
            let needed = usize::try_from(count)
                .ok()
                .and_then(|count| count.checked_mul(core::mem::size_of::<Plane>()));
            if count > length || (result.is_ok() && needed.is_none_or(|needed| needed > written)) {
                buf.set_length(length);
                pr_err!(
                    "device reports {} planes (array of {}, {} bytes written)\n",
                    count,
                    length,
                    written
                );
                return Err(EIO);
            }
        }
        if buf.memory() == buffer_memory::USERPTR {
            let index = buf.index();
            let state = self.state.lock();
            state.present_to_program(kind, buf, planes, state.held.pointers(kind, index));
        }
        result.map(|_| ())
    }

    /// VIDIOC_DQBUF: the oldest buffer the device returned on this queue.
    fn dqbuf(&self, buf: &mut Buffer, planes: &mut [Plane], nonblocking: bool) -> Result {
        let buf_type = buf.buf_type();
        let kind = QueueKind::of(buf_type).ok_or(EINVAL)?;
        let capacity = u32::try_from(planes.len())?;
        let capacity = buf_type.is_multiplanar().then_some(capacity);
        let mut state = self.state.lock();
        let done = loop {
            self.dev.check_usable()?;
            if self.is_lost() {
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
        let DoneBuffer {
            buffer,
            planes: mut done_planes,
        } = KBox::into_inner(done);
        *buf = buffer;
        if buf_type.is_multiplanar() {
            let count = usize::try_from(buf.length()).unwrap_or(0);
            for (dst, src) in planes.iter_mut().zip(done_planes.take()).take(count) {
                *dst = src;
            }
        }
        Ok(())
    }

    /// A DQBUF event for this session: keep the buffer for DQBUF; the
    /// caller wakes the waiters.
    pub(crate) fn buffer_done(&self, mut done: KBox<DoneBuffer>) -> Result<(), BadEvent> {
        let buf_type = done.buffer.buf_type();
        let kind = QueueKind::of(buf_type).ok_or(BadEvent::BufferType(buf_type.0))?;
        let count = done.buffer.length();
        if buf_type.is_multiplanar()
            && usize::try_from(count).map_or(true, |c| c > done.planes.len())
        {
            return Err(BadEvent::PlaneCount(count));
        }
        let index = done.buffer.index();
        let mut state = self.state.lock();
        state.queue(kind).claim(index)?;
        let mut released = None;
        if done.buffer.memory() == buffer_memory::USERPTR {
            let held = state
                .held
                .take(kind, index)
                .ok_or(BadEvent::NotHeld(index))?;
            let DoneBuffer { buffer, planes } = &mut *done;
            state.present_to_program(kind, buffer, planes, Some(&held.pointers));
            // Kept for the next QBUF of the same memory; the sync is a
            // no-op unless the transport bounces, as an unmap would be.
            held.memory().sync_for_cpu();
            released = state.held.keep(held);
        }
        // Against the lengths the program sees (the driver's own for guest
        // MMAP memory, rewritten just above).
        if let Some((plane, used, offset, length)) = done.clamp_sizes() {
            crate::log::warn_limited!(
                "buffer {} plane {}: device reports {} bytes used from offset {} in {}; cut to fit",
                index,
                plane,
                used,
                offset,
                length
            );
        }
        let accepted = state.queue(kind).keep(done);
        drop(state);
        // The device is done with the pages: memory not kept is unmapped
        // and unpinned here, outside the session's lock.
        drop(released);
        accepted
    }

    /// Shows DQBUF, DQEVENT and poll() what the device returned since the
    /// last call, all at once under the state lock (poll reads under it),
    /// and wakes the waiters: called once per batch of eventq events (see
    /// `EventQueue::drain`).
    ///
    /// At once, because programs read an order into what they see: an m2m
    /// job's OUTPUT buffer without its CAPTURE buffer makes
    /// v4l2-compliance's streaming loop lose count; a drain's LAST buffer
    /// without the EOS the device sent before it fails v4l2-compliance; the
    /// EOS without the LAST buffer makes FFmpeg end the stream early.
    pub(crate) fn publish(&self) {
        let mut state = self.state.lock();
        self.publish_locked(&mut state);
        drop(state);
        self.waiters.notify_all();
    }

    fn publish_locked(&self, state: &mut State) {
        for queue in state.queues.iter_mut() {
            queue.publish();
        }
        // Queueing the event wakes its file's waiters.
        for event in state.arriving_events.drain_all() {
            self.events.queue(&event);
        }
    }

    /// An EVENT event for this session (dropped once the file is released):
    /// shown with the rest of its batch (see [`Self::publish`]).
    pub(crate) fn event(&self, event: &[u8]) {
        let mut state = self.state.lock();
        let mut copy = KVec::new();
        if copy.extend_from_slice(event, GFP_KERNEL).is_ok()
            && state.arriving_events.push(copy, GFP_KERNEL).is_ok()
        {
            return;
        }
        // No memory to hold it back: show it now, after what came before.
        self.publish_locked(&mut state);
        self.events.queue(event);
        drop(state);
        self.waiters.notify_all();
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
        self.mark_lost();
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
        self.mark_lost();
        self.release_held();
    }

    /// Sets `lost`, under the state lock (see there).
    fn mark_lost(&self) {
        let _state = self.state.lock();
        self.lost.store(true, Release);
    }

    /// See the `lost` field.
    fn is_lost(&self) -> bool {
        self.lost.load(Acquire)
    }

    fn release_held(&self) {
        let mut released = KVec::new();
        self.state
            .lock()
            .held
            .take_where(|_, _| true, &mut released);
        drop_unallocated(released);
    }

    /// `poll()`, as vb2 answers it (`vb2_core_poll` for one queue,
    /// `v4l2_m2m_poll` for both; see `stream.rs`), ERR for a lost session,
    /// and PRI when `events_pending()`.
    ///
    /// Buffers and events are read under the state lock, under which
    /// [`Self::publish`] shows a batch's buffers and events together: so
    /// poll never sees part of what the device returned at once.
    pub(crate) fn poll_mask(&self, requested: u32, events_pending: impl FnOnce() -> bool) -> u32 {
        let state = self.state.lock();
        let event_bits = if events_pending() { EPOLLPRI } else { 0 };
        if self.is_lost() || self.dev.check_usable().is_err() {
            return EPOLLERR | event_bits;
        }
        let [capture, output] = &state.queues;
        let read_bits = EPOLLIN | EPOLLRDNORM;
        let write_bits = EPOLLOUT | EPOLLWRNORM;
        let buffer_bits = match self.dev.queue_kinds() {
            (true, true) if requested & (read_bits | write_bits) != 0 => {
                crate::stream::m2m_poll(capture, output)
            }
            (true, false) if requested & read_bits != 0 => capture.poll(read_bits),
            (false, true) if requested & write_bits != 0 => output.poll(write_bits),
            _ => 0,
        };
        buffer_bits | event_bits
    }
}

/// The buffers of a REQBUFS or REMOVE_BUFS must go, whatever else happened.
fn take_buffers(
    state: &mut State,
    kind: QueueKind,
    first: u32,
    end: u32,
) -> KVec<crate::guestmem::Held<GuestBuffer>> {
    let mut released = KVec::new();
    let removed = |index: u32| (first..end).contains(&index);
    state
        .held
        .take_where(|k, index| k == kind && removed(index), &mut released);
    let queue = state.queue(kind);
    for index in first..end.min(MAX_BUFFERS) {
        queue.queued.remove(index);
    }
    queue.forget_returned(removed);
    released
}

/// The guest-backed MMAP memory a queue lost, to be freed outside the lock.
type Freed = KVec<Option<KVec<Arc<crate::kernel_ext::mm::OwnedPages>>>>;

impl Session {
    /// Mirrors REQBUFS: the device freed the queue's buffers and allocated
    /// `count` new ones.
    fn after_reqbufs(&self, kind: QueueKind, count: u32) {
        // Events and responses travel on different queues: handle the
        // buffers the device returned before it answered.
        self.dev.drain_events();
        let (released, freed): (_, Freed);
        {
            let mut state = self.state.lock();
            released = take_buffers(&mut state, kind, 0, u32::MAX);
            let memory = state.memory(kind);
            freed = memory.mmap.take();
            memory.presented = Presented::AsIs;
            let queue = state.queue(kind);
            queue.num_buffers = count;
            if count == 0 {
                queue.stop();
            }
        }
        drop(released);
        drop(freed);
        // REQBUFS(0) ends blocked DQBUFs.
        self.waiters.notify_all();
    }

    /// Mirrors REMOVE_BUFS: the device freed buffers `first..end`.
    fn after_remove(&self, kind: QueueKind, first: u32, end: u32) {
        let (released, freed): (_, Freed);
        {
            let mut state = self.state.lock();
            released = take_buffers(&mut state, kind, first, end);
            freed = state.memory(kind).mmap.remove(first, end);
        }
        drop(released);
        drop(freed);
    }

    /// VIDIOC_REMOVE_BUFS, ordered with the queue's other buffer changes.
    fn remove_buffers(
        &self,
        remove: &mut crate::kernel_ext::media::v4l2::types::RemoveBuffers,
    ) -> Result {
        let kind = QueueKind::of(remove.buf_type());
        let _ordered = kind.map(|kind| self.buffer_lock(kind).lock());
        self.forward(codes::VIDIOC_REMOVE_BUFS, remove.as_bytes_mut())?;
        let (first, count) = (remove.index(), remove.count());
        if let (Some(kind), Some(end)) = (kind, first.checked_add(count)) {
            self.after_remove(kind, first, end);
        }
        Ok(())
    }

    /// `mmap()` of the buffer plane at `offset`: MMAP on the device.
    pub(crate) fn map(&self, offset: u64, len: u64, writable: bool) -> Result<Arc<Mapping>> {
        self.check_usable()?;
        let response = self.dev.command(
            |buf| protocol::mmap_request(buf, self.id, writable, offset),
            protocol::MMAP_RESPONSE_SIZE,
            Wait::Interruptible,
            KVec::new(),
            0,
            Abandon::Unmap,
        )?;
        response.status()?;
        let (shm_offset, mapped_len) =
            protocol::mmap_response(response.written()).ok_or_else(|| {
                pr_err!(
                    "MMAP response of {} bytes is too short\n",
                    response.written().len()
                );
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

impl EventTarget for Session {
    fn buffer_done(&self, done: KBox<DoneBuffer>) -> Result<(), BadEvent> {
        Session::buffer_done(self, done)
    }

    fn publish(&self) {
        Session::publish(self)
    }

    fn v4l2_event(&self, event: &[u8]) {
        self.event(event)
    }

    fn failed(&self, errno: u32) {
        Session::failed(self, errno)
    }

    fn device_reset(&self) {
        Session::device_reset(self)
    }

    fn device_gone(&self) {
        Session::device_gone(self)
    }
}
