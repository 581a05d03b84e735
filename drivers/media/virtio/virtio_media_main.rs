// SPDX-License-Identifier: GPL-2.0

//! Virtio-media guest driver: the V4L2 UAPI carried over virtio.
//!
//! The host plays the kernel and the guest plays user space: each open file
//! is a session on the device, and V4L2 ioctls become commands on the
//! commandq.

use kernel::prelude::*;

mod ffi;
mod protocol;
mod virtio;

use protocol::DeviceConfig;

module! {
    type: VirtioMediaModule,
    name: "virtio_media",
    authors: ["virtio-media-rs developers"],
    description: "Virtio-media driver: V4L2 devices provided by the host",
    license: "GPL",
}

/// The protocol draft's device ID; the virtio spec assigns 48.
const VIRTIO_ID_MEDIA_DRAFT: u32 = ffi::VIRTIO_ID_MEDIA_DRAFT;
const VIRTIO_ID_MEDIA_SPEC: u32 = ffi::VIRTIO_ID_MEDIA_SPEC;

/// Per-device state.
struct MediaDevice {
    config: DeviceConfig,
}

struct VirtioMediaDriver;

impl virtio::Driver for VirtioMediaDriver {
    type Data = KBox<MediaDevice>;
    const NAME: &'static CStr = c"virtio_media";
    const ID_TABLE: &'static [ffi::virtio_device_id] = &[
        virtio::device_id(VIRTIO_ID_MEDIA_DRAFT),
        virtio::device_id(VIRTIO_ID_MEDIA_SPEC),
        virtio::device_id(0),
    ];

    fn probe(vdev: &virtio::Device) -> Result<Self::Data> {
        let mut raw = [0u8; DeviceConfig::SIZE];
        vdev.read_config(0, &mut raw)?;
        let config = DeviceConfig::parse(&raw)?;
        let shm = vdev.shm_region(ffi::VIRTIO_MEDIA_SHM_MMAP as u8);
        pr_info!(
            "device id {}: caps {:#x}, type {}, card \"{}\", shm {:?}\n",
            vdev.device_id(),
            config.device_caps,
            config.device_type,
            config.card_name().unwrap_or("<invalid>"),
            shm
        );
        Ok(KBox::new(MediaDevice { config }, GFP_KERNEL)?)
    }

    fn remove(_vdev: &virtio::Device, data: Self::Data) {
        pr_info!(
            "removing \"{}\"\n",
            data.config.card_name().unwrap_or("<invalid>")
        );
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
