// SPDX-License-Identifier: GPL-2.0

//! Virtio-media guest driver: the V4L2 UAPI carried over virtio.
//!
//! The host plays the kernel and the guest plays user space: each open file
//! is a session on the device, V4L2 ioctls become commands on the commandq,
//! and the eventq brings back dequeued buffers, V4L2 events and errors.
//! See Documentation/virtio-media-driver.rst for the design.
//!
//! Two layers: `kernel_ext` holds the abstractions of the C APIs (virtio,
//! V4L2, memory, dma-buf) and every `unsafe` block; the driver modules
//! beside it are safe Rust.

#![deny(unsafe_code)]

use kernel::prelude::*;

mod command;
mod device;
mod driver;
mod events;
mod guest_mmap;
mod guestmem;
#[allow(unsafe_code)]
mod kernel_ext;
mod log;
mod mmap;
mod protocol;
mod session;
mod stream;
mod video;

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
            description: "MMAP buffers in guest memory even with device shared memory",
        },
    },
}

/// This module, which owns what its drivers register.
fn module() -> &'static ThisModule {
    &<VirtioMediaModule as kernel::ModuleMetadata>::THIS_MODULE
}

#[pin_data]
struct VirtioMediaModule {
    // Dropped first: every device is removed before the workqueue goes.
    #[pin]
    driver: kernel_ext::virtio::DriverRegistration<driver::VirtioMediaDriver>,
    workqueue: kernel_ext::workqueue::ModuleQueue,
}

impl kernel::InPlaceModule for VirtioMediaModule {
    fn init(module: &'static ThisModule) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            workqueue: kernel_ext::workqueue::ModuleQueue::new()?,
            driver <- kernel_ext::virtio::DriverRegistration::new(module),
        })
    }
}
