// SPDX-License-Identifier: GPL-2.0

//! Virtio-media guest driver: the V4L2 UAPI carried over virtio.
//!
//! The host plays the kernel and the guest plays user space: each open file
//! is a session on the device, V4L2 ioctls become commands on the commandq,
//! and the eventq brings back dequeued buffers, V4L2 events and errors.
//! See Documentation/virtio-media-driver.rst for the design.

use core::sync::atomic::{AtomicBool, Ordering};
use kernel::{
    new_mutex,
    prelude::*,
    rbtree::{RBTree, RBTreeNode},
    sync::{Arc, ArcBorrow, Mutex},
    workqueue::{impl_has_work, new_work, Work, WorkItem},
};

mod command;
mod dmabuf;
mod events;
mod ffi;
mod guest_mmap;
mod guestmem;
mod ioctl;
mod mmap;
mod pages;
mod protocol;
mod session;
mod v4l2;
mod virtio;

mod virtqueue;

use command::{CommandQueue, Wait};
use events::EventQueue;
use protocol::DeviceConfig;
use session::Session;
use v4l2::VideoNode;
use virtio::ShmRegion;

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
    event_work: Work<MediaDevice>,
    /// Set when the device is removed: every call then fails with ENODEV.
    gone: AtomicBool,
}

impl_has_work! {
    impl HasWork<Self> for MediaDevice { self.event_work }
}

impl WorkItem for MediaDevice {
    type Pointer = Arc<MediaDevice>;

    fn run(this: Arc<MediaDevice>) {
        this.eventq.drain(&this);
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

    /// Handles the events the device has returned so far.
    pub(crate) fn drain_events(&self) {
        self.eventq.drain(self);
    }

    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
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

    /// Opens a session on the device and returns its id.
    pub(crate) fn open_session(&self) -> Result<u32> {
        let resp = self.commandq.send(
            protocol::open_request()?,
            protocol::OPEN_RESPONSE_SIZE,
            Wait::Interruptible,
        )?;
        resp.status()?;
        protocol::open_response_session(resp.written()).ok_or_else(|| {
            pr_err!("OPEN response of {} bytes has no session id\n", resp.written);
            EIO
        })
    }

    /// Closes `session`. The spec requires no response to CLOSE: an empty
    /// one is success, a header is checked.
    pub(crate) fn close_session(&self, session: u32) -> Result {
        let resp = self.commandq.send(
            protocol::close_request(session)?,
            protocol::HEADER_RESPONSE_SIZE,
            Wait::Uninterruptible,
        )?;
        if resp.written == 0 {
            return Ok(());
        }
        resp.status()
    }

    /// Enters a new session in the map; the device must not reuse an id
    /// that is still open.
    pub(crate) fn add_session(&self, session: Arc<Session>) -> Result {
        let id = session.id();
        let node = RBTreeNode::new(id, session, GFP_KERNEL)?;
        let mut sessions = self.sessions.lock();
        if sessions.get(&id).is_some() {
            pr_err!("device opened session {} twice\n", id);
            return Err(EIO);
        }
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

impl virtio::QueueHandler for MediaDevice {
    fn commandq_done(&self) {
        self.commandq.complete_returned();
    }

    /// Events are handled on the driver's workqueue, not in the interrupt.
    fn eventq_done(this: ArcBorrow<'_, Self>) {
        // Already queued: the running or pending work sees these events.
        let _ = ffi::driver_workqueue().enqueue(Arc::from(this));
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
            pin_init!(MediaDevice {
                config,
                shm,
                guest_mmap,
                commandq <- CommandQueue::new(),
                eventq <- EventQueue::new(),
                sessions <- new_mutex!(RBTree::new(), "virtio_media_sessions"),
                node <- VideoNode::new(),
                event_work <- new_work!("virtio_media::MediaDevice::event_work"),
                gone: AtomicBool::new(false),
            }),
            GFP_KERNEL,
        )?;
        let (commandq, eventq) = vdev.find_vqs(dev.clone())?;
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
        for session in dev.sessions.lock().values() {
            session.device_gone();
        }
        pr_info!("removed \"{}\"\n", dev.config.card_name().unwrap_or("<invalid>"));
    }
}

impl VirtioMediaDriver {
    /// A device that cannot open a session is of no use: check it answers,
    /// and ask it which optional ioctls it lacks (returned, to be disabled
    /// on the node so the V4L2 core answers ENOTTY for every buffer type).
    fn check_answers(dev: &MediaDevice) -> Result<KVec<u32>> {
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
    fn missing_ioctls(dev: &MediaDevice, session: u32) -> Result<KVec<u32>> {
        let mut missing = KVec::new();
        if !dev.guest_mmap() {
            missing.push(ioctl::VIDIOC_EXPBUF, GFP_KERNEL)?;
        }
        let Some(buf_type) = main_buffer_type(dev.config.device_caps) else {
            return Ok(missing);
        };
        let mut parm = KVec::new();
        parm.resize(core::mem::size_of::<ffi::v4l2_streamparm>(), 0u8, GFP_KERNEL)?;
        protocol::set_u32(&mut parm, 0, buf_type);
        let code = ioctl::VIDIOC_G_PARM;
        let request = protocol::ioctl_request(session, code, &parm, &[])?;
        let response_len = protocol::ioctl_response_size(code, parm.len())?;
        let response = dev.commandq.send(request, response_len, Wait::Interruptible)?;
        if response.status() == Err(ENOTTY) {
            missing.push(ioctl::VIDIOC_G_PARM, GFP_KERNEL)?;
            missing.push(ioctl::VIDIOC_S_PARM, GFP_KERNEL)?;
        }
        Ok(missing)
    }

    /// Stops the device and fails what is still in flight, in the order
    /// that keeps the callbacks' data valid: reset (no more interrupts),
    /// reclaim buffers, delete the queues.
    fn teardown(vdev: &virtio::Device, dev: &MediaDevice) {
        vdev.reset();
        // The device holds no buffer any more: release the guest memory of
        // held buffers while the commandq can still unmap it.
        for session in dev.sessions.lock().values() {
            session.device_reset();
        }
        dev.commandq.shut_down();
        dev.eventq.shut_down();
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
