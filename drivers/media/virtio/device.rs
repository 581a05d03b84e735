// SPDX-License-Identifier: GPL-2.0

//! The device: its configuration, queues and sessions, the commands sent
//! on it, and what happens when it stops (removal, or a reset after it
//! stopped answering).

#![forbid(unsafe_code)]

use crate::{
    command::{CommandQueue, PendingCommand, Response, Wait, WaitError},
    events::{AddTargetError, EventQueue, EventTarget, EVENT_BATCH, EVENT_BUFFERS},
    kernel_ext::{
        media::v4l2::uapi,
        mm::UserInode,
        virtio::{self, BoundDevice, ShmRegion},
        workqueue,
    },
    protocol::{self, DeviceConfig},
};
use kernel::{
    new_mutex, new_srcu,
    prelude::*,
    sync::{
        atomic::{Acquire, Atomic, AtomicFlag, Full, Release},
        Arc, ArcBorrow, Mutex, Srcu,
    },
    workqueue::{impl_has_work, new_work, Queue, Work, WorkItem},
};

/// The module parameters, as probe read them for a device.
#[derive(Clone, Copy)]
pub(crate) struct Params {
    /// Pass USERPTR buffers to the device.
    pub(crate) userptr: bool,
    /// Allocate MMAP buffers in guest memory even when the device has
    /// shared memory.
    pub(crate) guest_mmap: bool,
}

/// Per-device state, shared by the bus binding, the video node (until the
/// V4L2 core releases it), every session and the queue callbacks.
#[pin_data]
pub(crate) struct MediaDevice {
    config: DeviceConfig,
    shm: Option<ShmRegion>,
    params: Params,
    /// MMAP buffers live in guest memory (see `guest_mmap`).
    guest_mmap: bool,
    #[pin]
    commandq: CommandQueue,
    /// The eventq, and the open sessions by id.
    #[pin]
    eventq: EventQueue,
    #[pin]
    event_work: Work<MediaDevice, 0>,
    /// Stops a device that stopped answering (see `declare_broken`).
    #[pin]
    reset_work: Work<MediaDevice, 1>,
    /// The virtio device while bound: set by probe, taken by remove. The
    /// reset work uses it under this lock, so it never outlives the binding.
    #[pin]
    binding: Mutex<Option<BoundDevice>>,
    /// Set when the device is removed: every call then fails with ENODEV.
    gone: Atomic<bool>,
    /// How many times the system slept: each time the device was reset
    /// and forgot its sessions and mappings, whose ids and offsets may be
    /// given out again. What was made before must not be used after.
    generation: Atomic<u64>,
    /// Set when the device stopped answering or broke the protocol in a
    /// way that leaves commands unanswered: it is reset and every call then
    /// fails with EIO.
    broken: AtomicFlag,
    /// Faults that map shared memory into programs run in its read side;
    /// stopping the device waits for them before it unmaps everything
    /// (`stop`), so no mapping of a stopped device survives.
    #[pin]
    mappings: Srcu,
    /// The inodes programs opened the node through; their mappings of the
    /// device's memory are zapped when it stops.
    #[pin]
    user_inodes: Mutex<KVec<UserInode>>,
    /// Guest memory the device may still write into though its owner let
    /// go of it (a session whose CLOSE failed): pinned and mapped until the
    /// device is reset, then released.
    #[pin]
    orphans: Mutex<KVec<Orphan>>,
}

/// Memory kept for the device until its reset (see `keep_until_reset`);
/// only ever dropped.
pub(crate) type Orphan = KBox<dyn Send>;

impl_has_work! {
    impl HasWork<Self, 0> for MediaDevice { self.event_work }
    impl HasWork<Self, 1> for MediaDevice { self.reset_work }
}

impl WorkItem<0> for MediaDevice {
    type Pointer = Arc<MediaDevice>;

    fn run(this: Arc<MediaDevice>) {
        // Bounded: a device that floods events must not keep the worker
        // (or a STREAMOFF waiting for the lock) forever.
        if this.eventq.drain(EVENT_BATCH) {
            let _ = this.workqueue().enqueue::<_, 0>(this.clone());
        }
    }
}

impl WorkItem<1> for MediaDevice {
    type Pointer = Arc<MediaDevice>;

    fn run(this: Arc<MediaDevice>) {
        let binding = this.binding.lock();
        // Removed meanwhile: the removal stopped it. Resumed from sleep
        // meanwhile: the restore set it up afresh.
        if let (Some(vdev), true) = (binding.as_ref(), this.is_broken()) {
            pr_err!("device reset: it stopped answering; its sessions now fail with EIO\n");
            this.stop(vdev);
        }
    }
}

/// What to do with the answer to a command whose caller gave up (a signal),
/// so the device keeps nothing the guest no longer knows about.
#[derive(Clone, Copy)]
pub(crate) enum Abandon {
    /// Nothing: the caller may ask again.
    Drop,
    /// CLOSE the session an OPEN created.
    CloseSession,
    /// MUNMAP the mapping an MMAP created.
    Unmap,
}

/// Waits, on the driver's workqueue, for the answer to a command its caller
/// gave up on, and undoes what it created.
#[pin_data]
struct Abandoned {
    dev: Arc<MediaDevice>,
    #[pin]
    pending: Mutex<Option<PendingCommand>>,
    then: Abandon,
    #[pin]
    work: Work<Abandoned>,
}

impl_has_work! {
    impl HasWork<Self> for Abandoned { self.work }
}

impl WorkItem for Abandoned {
    type Pointer = Arc<Abandoned>;

    fn run(this: Arc<Abandoned>) {
        if let Some(pending) = this.pending.lock().take() {
            this.dev.finish_abandoned(pending, this.then);
        }
    }
}

impl MediaDevice {
    /// A device of configuration `config`, its queues not attached yet.
    pub(crate) fn new(
        config: DeviceConfig,
        shm: Option<ShmRegion>,
        params: Params,
    ) -> impl PinInit<Self, Error> {
        let guest_mmap = shm.is_none() || params.guest_mmap;
        try_pin_init!(MediaDevice {
            config,
            shm,
            params,
            guest_mmap,
            commandq <- CommandQueue::new(),
            eventq <- EventQueue::new(),
            event_work <- new_work!("virtio_media::MediaDevice::event_work"),
            reset_work <- new_work!("virtio_media::MediaDevice::reset_work"),
            binding <- new_mutex!(None, "virtio_media_binding"),
            gone: Atomic::new(false),
            generation: Atomic::new(0),
            broken: AtomicFlag::new(false),
            mappings <- new_srcu!("virtio_media_mappings"),
            user_inodes <- new_mutex!(KVec::new(), "virtio_media_user_inodes"),
            orphans <- new_mutex!(KVec::new(), "virtio_media_orphans"),
        }? Error)
    }

    /// Starts using the queues `find_vqs` created for the bound device.
    pub(crate) fn attach(
        &self,
        vdev: BoundDevice,
        commandq: virtio::virtqueue::Virtqueue<crate::command::InFlight>,
        eventq: virtio::virtqueue::Virtqueue<crate::events::EventBuffer>,
    ) -> Result {
        *self.binding.lock() = Some(vdev);
        self.commandq.attach(commandq);
        self.eventq.attach(eventq)
    }

    /// The device is being removed: every call fails with ENODEV from now
    /// on.
    pub(crate) fn mark_gone(&self) {
        self.gone.store(true, Release);
    }

    /// Takes the bound device back, for removal: the reset work finds none
    /// afterwards.
    pub(crate) fn take_binding(&self) -> Option<BoundDevice> {
        self.binding.lock().take()
    }

    pub(crate) fn config(&self) -> &DeviceConfig {
        &self.config
    }

    pub(crate) fn shm(&self) -> Option<ShmRegion> {
        self.shm
    }

    /// Whether the driver allocates MMAP buffers itself.
    pub(crate) fn guest_mmap(&self) -> bool {
        self.guest_mmap
    }

    pub(crate) fn commandq(&self) -> &CommandQueue {
        &self.commandq
    }

    /// Handles the events the device returned before the call (at most a
    /// ring's worth: more are new, and the worker handles them).
    pub(crate) fn drain_events(&self) {
        self.eventq.drain(EVENT_BUFFERS);
    }

    pub(crate) fn params(&self) -> Params {
        self.params
    }

    /// The driver's workqueue: events, resets, unmaps and abandoned
    /// commands run there.
    pub(crate) fn workqueue(&self) -> &'static Queue {
        workqueue::module_queue()
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Acquire)
    }

    /// See the `generation` field.
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Acquire)
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Acquire)
    }

    /// `Ok` while commands can be sent: `ENODEV` once the device is
    /// removed, `EIO` once it is broken.
    pub(crate) fn check_usable(&self) -> Result {
        if self.is_gone() {
            return Err(ENODEV);
        }
        if self.is_broken() {
            return Err(EIO);
        }
        Ok(())
    }

    /// Sends a command (see [`CommandQueue::submit`]) and waits for its
    /// answer. A caller interrupted by a signal gets `ERESTARTSYS` and the
    /// answer is handled as `abandon` says; a device that does not answer
    /// in time is declared broken (`EIO`).
    pub(crate) fn command(
        self: &Arc<Self>,
        request: impl FnOnce(&mut KVec<u8>) -> Result,
        response_len: usize,
        wait: Wait,
        memory: KVec<KVec<u8>>,
        sg_offset: usize,
        abandon: Abandon,
    ) -> Result<Response<'_>> {
        let pending = self.send(request, response_len, memory, sg_offset)?;
        self.answer(pending, wait, abandon)
    }

    /// The first half of [`Self::command`]: puts the command on the
    /// commandq, in order with every command sent before it.
    pub(crate) fn send(
        self: &Arc<Self>,
        request: impl FnOnce(&mut KVec<u8>) -> Result,
        response_len: usize,
        memory: KVec<KVec<u8>>,
        sg_offset: usize,
    ) -> Result<PendingCommand> {
        self.check_usable()?;
        match self
            .commandq
            .submit(request, response_len, memory, sg_offset)
        {
            Ok(pending) => Ok(pending),
            Err(e) if e == ETIMEDOUT => {
                self.declare_broken("the commandq stayed full");
                Err(EIO)
            }
            Err(e) if e == ENODEV => Err(self.check_usable().err().unwrap_or(ENODEV)),
            Err(e) => Err(e),
        }
    }

    /// The second half of [`Self::command`]: waits for the answer.
    pub(crate) fn answer(
        self: &Arc<Self>,
        pending: PendingCommand,
        wait: Wait,
        abandon: Abandon,
    ) -> Result<Response<'_>> {
        match pending.wait(&self.commandq, wait) {
            Ok(response) => Ok(response),
            Err(WaitError::Interrupted(pending)) => {
                self.abandon(pending, abandon);
                Err(ERESTARTSYS)
            }
            Err(WaitError::TimedOut) => {
                self.declare_broken("a command was not answered in time");
                Err(EIO)
            }
            Err(WaitError::Gone) => Err(self.check_usable().err().unwrap_or(ENODEV)),
        }
    }

    /// Hands a command whose caller gave up to the workqueue, which waits
    /// for its answer and undoes what it created.
    fn abandon(self: &Arc<Self>, pending: PendingCommand, then: Abandon) {
        let work = Arc::pin_init(
            pin_init!(Abandoned {
                dev: self.clone(),
                pending <- new_mutex!(None, "virtio_media_abandoned"),
                then,
                work <- new_work!("virtio_media::Abandoned::work"),
            }),
            GFP_KERNEL,
        );
        match work {
            Ok(work) => {
                *work.pending.lock() = Some(pending);
                let _ = self.workqueue().enqueue(work);
            }
            // No memory for the work: wait here instead.
            Err(_) => self.finish_abandoned(pending, then),
        }
    }

    fn finish_abandoned(self: &Arc<Self>, pending: PendingCommand, then: Abandon) {
        let response = match pending.wait(&self.commandq, Wait::Uninterruptible) {
            Ok(response) => response,
            Err(WaitError::TimedOut) => {
                self.declare_broken("a command was not answered in time");
                return;
            }
            Err(_) => return,
        };
        if response.status().is_err() {
            return;
        }
        match then {
            Abandon::Drop => {}
            Abandon::CloseSession => {
                if let Some(id) = protocol::open_response_session(response.written()) {
                    pr_debug!("closing session {}, whose opener was interrupted\n", id);
                    let _ = self.close_session(id);
                }
            }
            Abandon::Unmap => {
                if let Some((offset, _)) = protocol::mmap_response(response.written()) {
                    pr_debug!("unmapping {:#x}, whose mapper was interrupted\n", offset);
                    let _ = self.unmap(offset);
                }
            }
        }
    }

    /// The device cannot be trusted to answer any more: reset it (on the
    /// workqueue), which fails every command in flight and every session.
    pub(crate) fn declare_broken(self: &Arc<Self>, why: &str) {
        if self.broken.xchg(true, Full) {
            return;
        }
        pr_err!("device broken: {}; resetting it\n", why);
        let _ = self.workqueue().enqueue::<_, 1>(self.clone());
    }

    /// Sends MUNMAP for the mapping at shared-memory offset `offset`.
    pub(crate) fn unmap(self: &Arc<Self>, offset: u64) -> Result {
        let response = self.command(
            |buf| protocol::munmap_request(buf, offset),
            protocol::HEADER_RESPONSE_SIZE,
            Wait::Uninterruptible,
            KVec::new(),
            0,
            Abandon::Drop,
        )?;
        response.status()
    }

    /// Which queues a session of this device has: (capture, output).
    pub(crate) fn queue_kinds(&self) -> (bool, bool) {
        let caps = self.config.device_caps;
        let m2m = uapi::V4L2_CAP_VIDEO_M2M | uapi::V4L2_CAP_VIDEO_M2M_MPLANE;
        let output = uapi::V4L2_CAP_VIDEO_OUTPUT
            | uapi::V4L2_CAP_VIDEO_OUTPUT_MPLANE
            | uapi::V4L2_CAP_VBI_OUTPUT
            | uapi::V4L2_CAP_SLICED_VBI_OUTPUT
            | uapi::V4L2_CAP_SDR_OUTPUT
            | uapi::V4L2_CAP_META_OUTPUT;
        if caps & m2m != 0 {
            (true, true)
        } else if caps & output != 0 {
            (false, true)
        } else {
            (true, false)
        }
    }

    /// Opens a session on the device and returns its id. An opener
    /// interrupted by a signal leaves the session to be closed when the
    /// device answers.
    pub(crate) fn open_session(self: &Arc<Self>) -> Result<u32> {
        let resp = self.command(
            protocol::open_request,
            protocol::OPEN_RESPONSE_SIZE,
            Wait::Interruptible,
            KVec::new(),
            0,
            Abandon::CloseSession,
        )?;
        resp.status()?;
        protocol::open_response_session(resp.written()).ok_or_else(|| {
            pr_err!(
                "OPEN response of {} bytes has no session id\n",
                resp.written().len()
            );
            EIO
        })
    }

    /// Closes `session`: `Err` when the CLOSE got no answer (not sent,
    /// or the device stopped answering), else the device's answer. The
    /// spec requires no response to CLOSE: an empty one is success, a
    /// header is checked.
    pub(crate) fn close_session(self: &Arc<Self>, session: u32) -> Result<Result> {
        let resp = self.command(
            |buf| protocol::close_request(buf, session),
            protocol::HEADER_RESPONSE_SIZE,
            Wait::Uninterruptible,
            KVec::new(),
            0,
            Abandon::Drop,
        )?;
        if resp.written().is_empty() {
            return Ok(Ok(()));
        }
        Ok(resp.status())
    }

    /// Enters a new session under `id` (see [`EventQueue::add_target`]).
    pub(crate) fn add_session(
        &self,
        id: u32,
        session: Arc<dyn EventTarget>,
    ) -> Result<(), AddTargetError> {
        self.eventq.add_target(id, session)
    }

    /// Removes the session under `id`, if it is still `session`.
    pub(crate) fn remove_session(&self, id: u32, session: &dyn EventTarget) {
        self.eventq.remove_target(id, session);
    }
}

impl MediaDevice {
    /// Stops the device: reset (no more interrupts or DMA), release the
    /// guest memory of held buffers while the queues can still unmap it,
    /// remove programs' mappings of its shared memory, fail every command
    /// in flight and wake every waiter. The queues stay allocated until
    /// removal deletes them.
    pub(crate) fn stop(&self, vdev: &BoundDevice) {
        vdev.reset();
        self.eventq
            .for_each_target(|session| session.device_reset());
        self.release_orphans();
        self.zap_user_mappings();
        self.commandq.shut_down();
        self.eventq.shut_down();
        self.eventq.for_each_target(|session| session.device_gone());
    }

    /// Keeps `memory` (pinned, mapped for the device) until the device is
    /// reset: stopped, suspended or removed. Without memory to note it, it
    /// is leaked rather than freed under the device.
    pub(crate) fn keep_until_reset<T: Send + 'static>(&self, memory: T) {
        let mut orphans = self.orphans.lock();
        match (
            KBox::<T>::new_uninit(GFP_KERNEL),
            orphans.reserve(1, GFP_KERNEL),
        ) {
            (Ok(slot), Ok(())) => {
                let kept: KBox<T> = KBox::write(slot, memory);
                // Room was reserved just above; were it not, leak it too.
                if let Err(refused) = orphans.push_within_capacity(kept as Orphan) {
                    core::mem::forget(refused);
                }
            }
            _ => {
                pr_err!("no memory to note buffers the device may use; they stay allocated\n");
                core::mem::forget(memory);
            }
        }
    }

    /// Releases what `keep_until_reset` kept, once the device is reset.
    fn release_orphans(&self) {
        let orphans = core::mem::take(&mut *self.orphans.lock());
        drop(orphans);
    }

    /// The system goes to sleep (the bus's freeze): stop the device as
    /// `stop` does, but for good only for what it had: its sessions fail
    /// with EIO from now on and are forgotten, programs' mappings of its
    /// memory are removed, its queues emptied. The caller deletes the
    /// queues; `resume` takes new ones. Tasks and the driver's workqueue
    /// are frozen by now, so no command is under way.
    pub(crate) fn suspend(&self) {
        let binding = self.binding.lock();
        let Some(vdev) = binding.as_ref() else {
            return;
        };
        // Before the zap: faults of older mappings see it and fail.
        self.generation.fetch_add(1, Full);
        vdev.reset();
        let sessions = self.eventq.take_targets();
        for session in sessions.values() {
            session.device_reset();
        }
        self.release_orphans();
        self.zap_user_mappings();
        self.commandq.shut_down();
        self.eventq.shut_down();
        for session in sessions.values() {
            session.device_gone();
        }
        pr_info!(
            "suspended: {} open sessions now fail with EIO\n",
            sessions.iter().count()
        );
    }

    /// The system woke up (the bus's restore): use the queues `find_vqs`
    /// made for the reset device. New sessions work as after probe; a
    /// device that had stopped answering gets a new chance, as everything
    /// it was broken with is forgotten.
    pub(crate) fn resume(
        &self,
        commandq: virtio::virtqueue::Virtqueue<crate::command::InFlight>,
        eventq: virtio::virtqueue::Virtqueue<crate::events::EventBuffer>,
    ) -> Result {
        self.commandq.attach(commandq);
        self.eventq.attach(eventq)?;
        self.broken.store(false, Release);
        Ok(())
    }

    /// Remembers the inode a program opened the node through, so that its
    /// mappings can be removed when the device stops.
    pub(crate) fn note_user_inode(&self, inode: UserInode) -> Result {
        let mut inodes = self.user_inodes.lock();
        if !inodes.iter().any(|known| known.same_as(&inode)) {
            inodes.push(inode, GFP_KERNEL)?;
        }
        Ok(())
    }

    /// Removes every program's mapping of the device's memory: a program
    /// that touches one afterwards gets SIGBUS, never stale memory or
    /// memory the region's addresses were given to since. The caller has
    /// set `gone` or `broken`, which new faults see.
    fn zap_user_mappings(&self) {
        // Faults that saw the device working are done inserting pages.
        self.mappings.synchronize();
        for inode in self.user_inodes.lock().iter() {
            inode.unmap_all();
        }
    }

    /// Runs `insert` unless the device stopped or was reset since
    /// `generation`, so that no mapping of its memory is made after
    /// `zap_user_mappings`.
    pub(crate) fn while_mappable<R>(
        &self,
        generation: u64,
        insert: impl FnOnce() -> R,
    ) -> Option<R> {
        let _guard = self.mappings.read_lock();
        if self.check_usable().is_err() || self.generation() != generation {
            return None;
        }
        Some(insert())
    }
}

impl virtio::QueueHandler for MediaDevice {
    fn commandq_done(this: ArcBorrow<'_, Self>) {
        // A ring the device corrupted (a used entry it does not own) is
        // stopped by virtio: nothing more completes on it.
        if this.commandq.complete_returned() {
            Arc::from(this).declare_broken("it corrupted the commandq");
        }
    }

    /// Events are handled on the driver's workqueue, not in the interrupt.
    fn eventq_done(this: ArcBorrow<'_, Self>) {
        // Already queued: the running or pending work sees these events.
        let _ = this.workqueue().enqueue::<_, 0>(Arc::from(this));
    }
}
