// SPDX-License-Identifier: GPL-2.0

//! Virtio-media guest driver: the V4L2 UAPI carried over virtio.
//!
//! The host plays the kernel and the guest plays user space: each open file
//! is a session on the device, V4L2 ioctls become commands on the commandq,
//! and the eventq brings back dequeued buffers, V4L2 events and errors.
//! See Documentation/virtio-media-driver.rst for the design.

use core::sync::atomic::{AtomicBool, Ordering};
use kernel::{
    new_mutex, new_srcu,
    prelude::*,
    rbtree::{RBTree, RBTreeNode},
    sync::{Arc, ArcBorrow, Mutex, Srcu},
    workqueue::{impl_has_work, new_work, Work, WorkItem},
};

mod command;
mod events;
mod guest_mmap;
mod guestmem;
mod ioctl;
mod kernel_ext;
mod log;
mod mmap;
mod protocol;
mod session;

// Old paths of the abstraction layer's modules, while the driver moves to
// the new ones.
pub(crate) use kernel_ext::{
    bindings as ffi, dma_buf as dmabuf, media::v4l2, mm as pages, virtio, virtio::virtqueue,
};

use command::{CommandQueue, PendingCommand, Response, Wait, WaitError};
use events::EventQueue;
use protocol::DeviceConfig;
use session::Session;
use v4l2::{UserInode, VideoNode};
use virtio::{BoundDevice, ShmRegion};

module! {
    type: VirtioMediaModule,
    name: "virtio_media",
    authors: ["virtio-media-rs developers"],
    description: "Virtio-media driver: V4L2 devices provided by the host",
    license: "GPL",
    imports_ns: ["DMA_BUF"],
    params: {
        userptr: bool {
            default: true,
            description: "Pass USERPTR buffers to devices that support them (pins their pages)",
        },
        guest_mmap: bool {
            default: false,
            description: "Allocate MMAP buffers in guest memory even when the device has shared memory",
        },
    },
}

/// Why a new session could not be entered in the device's map.
pub(crate) enum AddSessionError {
    /// The device gave an id that another open session has.
    Duplicate,
    NoMemory,
}

/// Per-device state, shared by the bus binding, the video node (until the
/// V4L2 core releases it), every session and the queue callbacks.
#[pin_data]
pub(crate) struct MediaDevice {
    config: DeviceConfig,
    shm: Option<ShmRegion>,
    /// MMAP buffers live in guest memory (see `guest_mmap`).
    guest_mmap: bool,
    #[pin]
    commandq: CommandQueue,
    #[pin]
    eventq: EventQueue,
    /// Open sessions by id, for event dispatch.
    #[pin]
    sessions: Mutex<RBTree<u32, Arc<Session>>>,
    #[pin]
    node: VideoNode,
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
    gone: AtomicBool,
    /// Set when the device stopped answering or broke the protocol in a
    /// way that leaves commands unanswered: it is reset and every call then
    /// fails with EIO.
    broken: AtomicBool,
    /// Faults that map shared memory into programs run in its read side;
    /// stopping the device waits for them before it unmaps everything
    /// (`stop`), so no mapping of a stopped device survives.
    #[pin]
    mappings: Srcu,
    /// The inodes programs opened the node through; their mappings of the
    /// device's memory are zapped when it stops.
    #[pin]
    user_inodes: Mutex<KVec<UserInode>>,
}

impl_has_work! {
    impl HasWork<Self, 0> for MediaDevice { self.event_work }
    impl HasWork<Self, 1> for MediaDevice { self.reset_work }
}

impl WorkItem<0> for MediaDevice {
    type Pointer = Arc<MediaDevice>;

    fn run(this: Arc<MediaDevice>) {
        // Bounded: a device that floods events must not keep the worker
        // (or a STREAMOFF waiting for the lock) forever.
        if this.eventq.drain(&this, events::EVENT_BATCH) {
            let _ = ffi::driver_workqueue().enqueue::<_, 0>(this);
        }
    }
}

impl WorkItem<1> for MediaDevice {
    type Pointer = Arc<MediaDevice>;

    fn run(this: Arc<MediaDevice>) {
        let binding = this.binding.lock();
        // Removed meanwhile: the removal stopped it.
        if let Some(vdev) = binding.as_ref() {
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
        self.eventq.drain(self, events::EVENT_BUFFERS);
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken.load(Ordering::Acquire)
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
        request: KVec<u8>,
        response_len: usize,
        wait: Wait,
        memory: KVec<KVec<u8>>,
        sg_offset: usize,
        abandon: Abandon,
    ) -> Result<Response> {
        self.check_usable()?;
        let pending = match self
            .commandq
            .submit(request, response_len, memory, sg_offset)
        {
            Ok(pending) => pending,
            Err(e) if e == ETIMEDOUT => {
                self.declare_broken("the commandq stayed full");
                return Err(EIO);
            }
            Err(e) if e == ENODEV => return Err(self.check_usable().err().unwrap_or(ENODEV)),
            Err(e) => return Err(e),
        };
        match pending.wait(wait) {
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
                let _ = ffi::driver_workqueue().enqueue(work);
            }
            // No memory for the work: wait here instead.
            Err(_) => self.finish_abandoned(pending, then),
        }
    }

    fn finish_abandoned(self: &Arc<Self>, pending: PendingCommand, then: Abandon) {
        let response = match pending.wait(Wait::Uninterruptible) {
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
        if self.broken.swap(true, Ordering::AcqRel) {
            return;
        }
        pr_err!("device broken: {}; resetting it\n", why);
        let _ = ffi::driver_workqueue().enqueue::<_, 1>(self.clone());
    }

    /// Sends MUNMAP for the mapping at shared-memory offset `offset`.
    pub(crate) fn unmap(self: &Arc<Self>, offset: u64) -> Result {
        let response = self.command(
            protocol::munmap_request(offset)?,
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
        let m2m = ffi::V4L2_CAP_VIDEO_M2M | ffi::V4L2_CAP_VIDEO_M2M_MPLANE;
        let output = ffi::V4L2_CAP_VIDEO_OUTPUT
            | ffi::V4L2_CAP_VIDEO_OUTPUT_MPLANE
            | ffi::V4L2_CAP_VBI_OUTPUT
            | ffi::V4L2_CAP_SLICED_VBI_OUTPUT
            | ffi::V4L2_CAP_SDR_OUTPUT
            | ffi::V4L2_CAP_META_OUTPUT;
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
            protocol::open_request()?,
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
                resp.written
            );
            EIO
        })
    }

    /// Closes `session`. The spec requires no response to CLOSE: an empty
    /// one is success, a header is checked.
    pub(crate) fn close_session(self: &Arc<Self>, session: u32) -> Result {
        let resp = self.command(
            protocol::close_request(session)?,
            protocol::HEADER_RESPONSE_SIZE,
            Wait::Uninterruptible,
            KVec::new(),
            0,
            Abandon::Drop,
        )?;
        if resp.written == 0 {
            return Ok(());
        }
        resp.status()
    }

    /// Enters a new session in the map; the device must not reuse an id
    /// that is still open.
    pub(crate) fn add_session(&self, session: Arc<Session>) -> Result<(), AddSessionError> {
        let id = session.id();
        let mut sessions = self.sessions.lock();
        if sessions.get(&id).is_some() {
            pr_err!(
                "device opened session {} while it is still open; the open fails\n",
                id
            );
            return Err(AddSessionError::Duplicate);
        }
        let node =
            RBTreeNode::new(id, session, GFP_KERNEL).map_err(|_| AddSessionError::NoMemory)?;
        sessions.insert(node);
        Ok(())
    }

    /// Removes `session` from the map, if it is still the one under its id.
    pub(crate) fn remove_session(&self, session: &Arc<Session>) {
        let mut sessions = self.sessions.lock();
        let ours = sessions
            .get(&session.id())
            .is_some_and(|s| core::ptr::eq(&**s, &**session));
        if ours {
            sessions.remove(&session.id());
        }
    }

    pub(crate) fn session(&self, id: u32) -> Option<Arc<Session>> {
        self.sessions.lock().get(&id).cloned()
    }

    pub(crate) fn take_session(&self, id: u32) -> Option<Arc<Session>> {
        self.sessions.lock().remove(&id)
    }
}

impl MediaDevice {
    /// Stops the device: reset (no more interrupts or DMA), release the
    /// guest memory of held buffers while the queues can still unmap it,
    /// remove programs' mappings of its shared memory, fail every command
    /// in flight and wake every waiter. The queues stay allocated until
    /// removal deletes them.
    fn stop(&self, vdev: &BoundDevice) {
        vdev.reset();
        for session in self.sessions.lock().values() {
            session.device_reset();
        }
        self.zap_user_mappings();
        self.commandq.shut_down();
        self.eventq.shut_down();
        for session in self.sessions.lock().values() {
            session.device_gone();
        }
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

    /// Runs `insert` unless the device stopped, so that no mapping of its
    /// memory is made after `zap_user_mappings`.
    pub(crate) fn while_mappable<R>(&self, insert: impl FnOnce() -> R) -> Option<R> {
        let _guard = self.mappings.read_lock();
        if self.check_usable().is_err() {
            return None;
        }
        Some(insert())
    }
}

impl virtio::QueueHandler for MediaDevice {
    fn commandq_done(this: ArcBorrow<'_, Self>) {
        this.commandq.complete_returned();
        // A ring the device corrupted (a used entry it does not own) is
        // stopped by virtio: nothing more completes on it.
        if this.commandq.is_broken() {
            Arc::from(this).declare_broken("it corrupted the commandq");
        }
    }

    /// Events are handled on the driver's workqueue, not in the interrupt.
    fn eventq_done(this: ArcBorrow<'_, Self>) {
        // Already queued: the running or pending work sees these events.
        let _ = ffi::driver_workqueue().enqueue::<_, 0>(Arc::from(this));
    }
}

struct VirtioMediaDriver;

/// The buffer type a device's node mainly streams, from its capabilities.
fn main_buffer_type(caps: u32) -> Option<u32> {
    if caps & (ffi::V4L2_CAP_VIDEO_CAPTURE_MPLANE | ffi::V4L2_CAP_VIDEO_M2M_MPLANE) != 0 {
        Some(ffi::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE)
    } else if caps & (ffi::V4L2_CAP_VIDEO_CAPTURE | ffi::V4L2_CAP_VIDEO_M2M) != 0 {
        Some(ffi::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE)
    } else if caps & ffi::V4L2_CAP_VIDEO_OUTPUT_MPLANE != 0 {
        Some(ffi::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE)
    } else if caps & ffi::V4L2_CAP_VIDEO_OUTPUT != 0 {
        Some(ffi::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT)
    } else {
        None
    }
}

impl virtio::Driver for VirtioMediaDriver {
    type Data = Arc<MediaDevice>;
    const NAME: &'static CStr = c"virtio_media";
    const ID_TABLE: &'static [ffi::virtio_device_id] = &[
        virtio::device_id(ffi::VIRTIO_ID_MEDIA_DRAFT),
        virtio::device_id(ffi::VIRTIO_ID_MEDIA_SPEC),
        virtio::device_id(0),
    ];

    fn probe(vdev: &virtio::Device) -> Result<Self::Data> {
        let mut raw = [0u8; DeviceConfig::SIZE];
        vdev.read_config(0, &mut raw)?;
        let config = DeviceConfig::parse(&raw)?;
        let shm = vdev.shm_region(ffi::VIRTIO_MEDIA_SHM_MMAP as u8);
        let (shm_addr, shm_len) = shm.map_or((0, 0), |r| (r.addr, r.len));
        pr_info!(
            "device id {}: caps {:#x}, type {}, card \"{}\", shm {:#x}+{:#x}\n",
            vdev.device_id(),
            config.device_caps,
            config.device_type,
            config.card_name().unwrap_or("<invalid>"),
            shm_addr,
            shm_len
        );
        let guest_mmap = shm.is_none() || module_parameters::guest_mmap.value();
        if guest_mmap && config.device_caps & ffi::V4L2_CAP_STREAMING != 0 {
            pr_info!("MMAP buffers are in guest memory, passed to the device as USERPTR buffers\n");
        }
        let dev = Arc::pin_init(
            try_pin_init!(MediaDevice {
                config,
                shm,
                guest_mmap,
                commandq <- CommandQueue::new(),
                eventq <- EventQueue::new(),
                sessions <- new_mutex!(RBTree::new(), "virtio_media_sessions"),
                node <- VideoNode::new(),
                event_work <- new_work!("virtio_media::MediaDevice::event_work"),
                reset_work <- new_work!("virtio_media::MediaDevice::reset_work"),
                binding <- new_mutex!(None, "virtio_media_binding"),
                gone: AtomicBool::new(false),
                broken: AtomicBool::new(false),
                mappings <- new_srcu!("virtio_media_mappings"),
                user_inodes <- new_mutex!(KVec::new(), "virtio_media_user_inodes"),
            }? Error),
            GFP_KERNEL,
        )?;
        let (commandq, eventq) = vdev.find_vqs(dev.clone())?;
        // SAFETY: Taken back by `remove` (or the failure path below) before
        // the device is unbound.
        *dev.binding.lock() = Some(unsafe { vdev.bound() });
        dev.commandq.attach(commandq);
        vdev.ready();
        let started = dev
            .eventq
            .attach(eventq)
            .and_then(|()| Self::check_answers(&dev))
            .and_then(|disabled| dev.node.register(vdev, &dev.config, &disabled, dev.clone()));
        if let Err(e) = started {
            Self::teardown(vdev, &dev);
            return Err(e);
        }
        pr_info!(
            "registered /dev/video{} for \"{}\"\n",
            dev.node.number(),
            dev.config.card_name().unwrap_or("")
        );
        Ok(dev)
    }

    fn remove(vdev: &virtio::Device, dev: Self::Data) {
        dev.gone.store(true, Ordering::Release);
        dev.node.unregister();
        Self::teardown(vdev, &dev);
        pr_info!(
            "removed \"{}\"\n",
            dev.config.card_name().unwrap_or("<invalid>")
        );
    }
}

impl VirtioMediaDriver {
    /// A device that cannot open a session is of no use: check it answers,
    /// and ask it which optional ioctls it lacks (returned, to be disabled
    /// on the node so the V4L2 core answers ENOTTY for every buffer type).
    fn check_answers(dev: &Arc<MediaDevice>) -> Result<KVec<u32>> {
        let session = dev.open_session().inspect_err(|e| {
            pr_err!("device does not answer OPEN ({:?}); not binding\n", e);
        })?;
        let disabled = Self::missing_ioctls(dev, session);
        if let Err(e) = dev.close_session(session) {
            pr_err!("device does not answer CLOSE ({:?}); not binding\n", e);
            return Err(e);
        }
        pr_info!("device answers: opened and closed session {}\n", session);
        disabled
    }

    /// G/S_PARM are optional (m2m devices other than encoders lack them); a
    /// device that answers ENOTTY for its main buffer type has neither.
    /// EXPBUF only exists for guest-backed MMAP buffers.
    fn missing_ioctls(dev: &Arc<MediaDevice>, session: u32) -> Result<KVec<u32>> {
        let mut missing = KVec::new();
        if !dev.guest_mmap() {
            missing.push(ioctl::VIDIOC_EXPBUF, GFP_KERNEL)?;
        }
        let Some(buf_type) = main_buffer_type(dev.config.device_caps) else {
            return Ok(missing);
        };
        let mut parm = KVec::new();
        parm.resize(
            core::mem::size_of::<ffi::v4l2_streamparm>(),
            0u8,
            GFP_KERNEL,
        )?;
        protocol::set_u32(&mut parm, 0, buf_type);
        let code = ioctl::VIDIOC_G_PARM;
        let request = protocol::ioctl_request(session, code, &parm, &[])?;
        let response_len = protocol::ioctl_response_size(code, parm.len())?;
        let response = dev.command(
            request,
            response_len,
            Wait::Interruptible,
            KVec::new(),
            0,
            Abandon::Drop,
        )?;
        if response.status() == Err(ENOTTY) {
            missing.push(ioctl::VIDIOC_G_PARM, GFP_KERNEL)?;
            missing.push(ioctl::VIDIOC_S_PARM, GFP_KERNEL)?;
        }
        Ok(missing)
    }

    /// Stops the device (see `MediaDevice::stop`, which the reset work
    /// may have run already: it does nothing twice), then deletes the
    /// queues: after that no callback runs.
    fn teardown(vdev: &virtio::Device, dev: &MediaDevice) {
        // The reset work holds the binding while it runs, and finds none
        // once it is taken.
        let bound = dev.binding.lock().take();
        if let Some(bound) = bound {
            dev.stop(&bound);
        }
        vdev.del_vqs::<MediaDevice>();
    }
}

#[pin_data]
struct VirtioMediaModule {
    // Dropped first: every device is removed before the workqueue goes.
    #[pin]
    driver: virtio::DriverRegistration<VirtioMediaDriver>,
    workqueue: ffi::DriverWorkqueue,
}

impl kernel::InPlaceModule for VirtioMediaModule {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            workqueue: ffi::DriverWorkqueue::new()?,
            driver <- virtio::DriverRegistration::new(module),
        })
    }
}
