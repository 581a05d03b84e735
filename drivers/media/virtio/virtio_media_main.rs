// SPDX-License-Identifier: GPL-2.0

//! Virtio-media guest driver: the V4L2 UAPI carried over virtio.
//!
//! The host plays the kernel and the guest plays user space: each open file
//! is a session on the device, and V4L2 ioctls become commands on the
//! commandq.

use kernel::{prelude::*, sync::Arc};

mod command;
mod ffi;
mod protocol;
mod virtio;
mod virtqueue;

use command::{CommandQueue, Wait};
use protocol::DeviceConfig;
use virtqueue::Virtqueue;

module! {
    type: VirtioMediaModule,
    name: "virtio_media",
    authors: ["virtio-media-rs developers"],
    description: "Virtio-media driver: V4L2 devices provided by the host",
    license: "GPL",
}

/// Per-device state, shared by the bus binding and the queue callbacks.
#[pin_data]
struct MediaDevice {
    config: DeviceConfig,
    #[pin]
    commandq: CommandQueue,
}

impl MediaDevice {
    /// Opens a session on the device and returns its id.
    fn open_session(&self) -> Result<u32> {
        let resp = self.commandq.send(
            protocol::open_request()?,
            protocol::OPEN_RESPONSE_SIZE,
            Wait::Interruptible,
        )?;
        protocol::open_response_session(resp.bytes.get(..resp.written).unwrap_or(&[])).ok_or_else(
            || {
                pr_err!("OPEN response of {} bytes has no session id\n", resp.written);
                EIO
            },
        )
    }

    /// Closes `session`; the device needs no answer but gets one chance.
    fn close_session(&self, session: u32) -> Result {
        self.commandq
            .send(
                protocol::close_request(session)?,
                protocol::HEADER_RESPONSE_SIZE,
                Wait::Uninterruptible,
            )
            .map(|_| ())
    }
}

/// Commandq interrupt callback.
///
/// # Safety
///
/// Only virtio calls this, with the commandq created in `probe`.
unsafe extern "C" fn commandq_done(vq: *mut ffi::virtqueue) {
    // SAFETY: `find_vqs` was given a pointer to the `MediaDevice` that owns
    // the queues, which lives until after `del_vqs` (see `remove`).
    let dev = unsafe { &*virtio::callback_data(vq).cast::<MediaDevice>() };
    dev.commandq.complete_returned();
}

/// Eventq interrupt callback: no events are consumed yet.
///
/// # Safety
///
/// Only virtio calls this, with the eventq created in `probe`.
unsafe extern "C" fn eventq_done(_vq: *mut ffi::virtqueue) {}

struct VirtioMediaDriver;

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
        let dev = Arc::pin_init(
            pin_init!(MediaDevice {
                config,
                commandq <- CommandQueue::new(),
            }),
            GFP_KERNEL,
        )?;
        // SAFETY: The callbacks use the pointer as a `MediaDevice`; `dev` is
        // kept alive by the bus binding until `remove`, which deletes the
        // queues before dropping it.
        let [commandq, _eventq] =
            unsafe { vdev.find_vqs(commandq_done, eventq_done, Arc::as_ptr(&dev).cast()) }?;
        // SAFETY: `find_vqs` returned a live queue that only this wrapper
        // adds buffers to.
        dev.commandq.attach(unsafe { Virtqueue::from_raw(commandq) });
        vdev.ready();

        // A device that cannot open a session is of no use: check it answers.
        let checked = dev
            .open_session()
            .and_then(|session| dev.close_session(session).map(|()| session));
        match checked {
            Ok(session) => pr_info!("device answers: opened and closed session {}\n", session),
            Err(e) => {
                pr_err!("device does not answer OPEN/CLOSE ({:?}); not binding\n", e);
                Self::teardown(vdev, &dev);
                return Err(e);
            }
        }
        Ok(dev)
    }

    fn remove(vdev: &virtio::Device, dev: Self::Data) {
        Self::teardown(vdev, &dev);
        pr_info!("removed \"{}\"\n", dev.config.card_name().unwrap_or("<invalid>"));
    }
}

impl VirtioMediaDriver {
    /// Stops the device and fails what is still in flight, in the order
    /// that keeps the callbacks' data valid: reset (no more interrupts),
    /// reclaim buffers, delete the queues.
    fn teardown(vdev: &virtio::Device, dev: &MediaDevice) {
        vdev.reset();
        dev.commandq.shut_down();
        vdev.del_vqs();
    }
}

#[pin_data]
struct VirtioMediaModule {
    #[pin]
    driver: virtio::DriverRegistration<VirtioMediaDriver>,
}

impl kernel::InPlaceModule for VirtioMediaModule {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            driver <- virtio::DriverRegistration::new(module),
        })
    }
}
