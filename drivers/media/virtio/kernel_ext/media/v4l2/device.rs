// SPDX-License-Identifier: GPL-2.0

//! A V4L2 device with one video node, registered for a driver.
//!
//! C headers: [`include/media/v4l2-device.h`](srctree/include/media/v4l2-device.h),
//! [`include/media/v4l2-dev.h`](srctree/include/media/v4l2-dev.h)

use super::{
    file::{Driver, FileOps},
    ioctl::IoctlOps,
    types::copy_cstr,
};
use crate::kernel_ext::bindings;
use core::ptr::NonNull;
use kernel::{prelude::*, types::Opaque};

/// How a node is registered.
pub(crate) struct Options<'a> {
    /// Name of the node (shown in sysfs), cut to fit.
    pub(crate) name: &'a [u8],
    /// `enum vfl_devnode_type`.
    pub(crate) node_type: u32,
    /// `V4L2_CAP_*` of the node.
    pub(crate) device_caps: u32,
    /// Ioctls the core answers with `ENOTTY` on this node, whatever their
    /// handler.
    pub(crate) disabled: &'a [u32],
}

impl Options<'_> {
    /// Why these options cannot be registered, if they cannot: the V4L2
    /// core `WARN`s at a node with no capabilities and refuses an unknown
    /// type, and a subdevice node needs file operations this module does
    /// not give.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        match self.node_type {
            bindings::vfl_devnode_type_VFL_TYPE_SUBDEV => Some("a subdevice node is not supported"),
            t if t >= bindings::vfl_devnode_type_VFL_TYPE_MAX => Some("unknown node type"),
            _ if self.device_caps == 0 => Some("a node needs capabilities"),
            _ => None,
        }
    }
}

/// The `v4l2_device`, its `video_device` and the driver's data, in one
/// allocation that lives until the V4L2 core releases the `v4l2_device`:
/// after [`Registration`] is dropped and the last file of the node is
/// released.
///
/// # Invariants
///
/// `v4l2` and `vdev` are registered, or being registered or released by
/// this module; the allocation is a leaked `KBox` that `release` takes
/// back.
#[repr(C)]
#[pin_data]
pub(crate) struct Device<T: Driver> {
    #[pin]
    v4l2: Opaque<bindings::v4l2_device>,
    #[pin]
    vdev: Opaque<bindings::video_device>,
    data: T::Data,
}

impl<T: Driver> Device<T> {
    /// The driver's data of the node.
    pub(crate) fn data(&self) -> &T::Data {
        &self.data
    }

    /// The node a file of it belongs to.
    ///
    /// # Safety
    ///
    /// `file` must be a file of a node registered for `T`, in a file
    /// operation (the file keeps the node, and so the device, alive).
    pub(super) unsafe fn of_file<'a>(file: *mut bindings::file) -> &'a Self {
        // SAFETY: Per the caller, the file's video_device is the `vdev`
        // field of a `Device<T>`, alive while the file is.
        unsafe {
            let vdev = bindings::video_devdata(file).cast::<Opaque<bindings::video_device>>();
            &*kernel::container_of!(vdev, Self, vdev)
        }
    }

    /// # Safety
    ///
    /// Only the V4L2 core calls this, once, when the last reference to a
    /// registered `v4l2_device` of a `Device<T>` goes.
    unsafe extern "C" fn release(v4l2: *mut bindings::v4l2_device) {
        let v4l2 = v4l2.cast::<Opaque<bindings::v4l2_device>>();
        // SAFETY: `v4l2` is the field of a `Device<T>`, leaked by
        // `Registration::new`; this is where it is taken back, once.
        drop(unsafe { KBox::from_raw(kernel::container_of!(v4l2, Self, v4l2)) });
    }
}

/// A registered node; dropping it unregisters the node (files still open
/// keep working until the driver refuses them).
///
/// # Invariants
///
/// `0` points to a registered `Device<T>` and holds the initial reference
/// of its `v4l2_device`.
pub(crate) struct Registration<T: Driver>(NonNull<Device<T>>);

// SAFETY: The registration only unregisters on drop, which may happen on
// any thread; `T::Data` is `Send + Sync`.
unsafe impl<T: Driver> Send for Registration<T> {}
// SAFETY: Shared references only read the node number.
unsafe impl<T: Driver> Sync for Registration<T> {}

impl<T: Driver> Registration<T> {
    /// Registers `/dev/videoN` under `parent`, for `data`.
    pub(crate) fn new(
        parent: &kernel::device::Device,
        options: &Options<'_>,
        data: T::Data,
        module: &'static ThisModule,
    ) -> Result<Self> {
        if options.problem().is_some() {
            return Err(EINVAL);
        }
        let device = KBox::pin_init(
            pin_init!(Device::<T> {
                // SAFETY: All-zero is the state the C side expects before
                // registration.
                v4l2 <- Opaque::ffi_init(|p: *mut bindings::v4l2_device| unsafe {
                    p.write_bytes(0, 1)
                }),
                // SAFETY: As above.
                vdev <- Opaque::ffi_init(|p: *mut bindings::video_device| unsafe {
                    p.write_bytes(0, 1)
                }),
                data,
            }),
            GFP_KERNEL,
        )?;
        // SAFETY: The allocation is only used through the raw pointer from
        // here on, so it stays where it is.
        let device = KBox::into_raw(unsafe { Pin::into_inner_unchecked(device) });
        // SAFETY: `device` is live and not shared yet.
        let (v4l2, vdev) = unsafe { ((*device).v4l2.get(), (*device).vdev.get()) };
        // CAST: `kernel::device::Device` is a transparent wrapper of
        // `struct device`.
        let parent = core::ptr::from_ref(parent)
            .cast::<bindings::device>()
            .cast_mut();
        // SAFETY: `v4l2` is zeroed and pinned; `parent` is valid for the
        // call, and the V4L2 device takes its own reference to it.
        let registered = unsafe { bindings::v4l2_device_register(parent, v4l2) };
        if let Err(e) = kernel::error::to_result(registered) {
            // SAFETY: Nothing registered; leaked just above.
            drop(unsafe { KBox::from_raw(device) });
            return Err(e);
        }
        // SAFETY: Registered just above; nothing else uses it yet. From
        // here its release frees `device`.
        unsafe {
            (*v4l2).release = Some(Device::<T>::release);
            copy_cstr(&mut (*vdev).name, options.name);
            (*vdev).v4l2_dev = v4l2;
            (*vdev).fops = &FileOps::<T>::TABLE;
            (*vdev).ioctl_ops = &IoctlOps::<T>::TABLE;
            (*vdev).release = Some(bindings::video_device_release_empty);
            (*vdev).device_caps = options.device_caps;
            (*vdev).vfl_dir = direction_of(options.device_caps);
            // Before registration `valid_ioctls` lists the disabled ones
            // (what `v4l2_disable_ioctl` sets).
            for &code in options.disabled {
                let nr = kernel::ioctl::_IOC_NR(code) as usize;
                let bits = c_ulong::BITS as usize;
                if let Some(word) = (*vdev).valid_ioctls.get_mut(nr / bits) {
                    *word |= 1 << (nr % bits);
                }
            }
        }
        // SAFETY: `vdev` is fully set up; `module` owns the operations.
        let ret = unsafe {
            bindings::__video_register_device(vdev, options.node_type, -1, 1, module.as_ptr())
        };
        if ret < 0 {
            // SAFETY: The V4L2 device was registered above; dropping its
            // initial reference runs `Device::release`, which frees it.
            unsafe {
                bindings::v4l2_device_unregister(v4l2);
                bindings::v4l2_device_put(v4l2);
            }
            return Err(Error::from_errno(ret));
        }
        // INVARIANT: Registered, with the initial reference.
        // SAFETY: `device` is not null (it came from a box).
        Ok(Self(unsafe { NonNull::new_unchecked(device) }))
    }

    /// The node's device number, N in `/dev/videoN`.
    pub(crate) fn number(&self) -> u16 {
        // SAFETY: Registered (invariant); `num` is constant afterwards.
        unsafe { (*(*self.0.as_ptr()).vdev.get()).num }
    }
}

impl<T: Driver> Drop for Registration<T> {
    fn drop(&mut self) {
        // SAFETY: Registered (invariant). The final `v4l2_device_put` drops
        // the initial reference; the memory stays until the core's last
        // reference goes and `Device::release` runs.
        unsafe {
            let device = self.0.as_ptr();
            bindings::video_unregister_device((*device).vdev.get());
            bindings::v4l2_device_unregister((*device).v4l2.get());
            bindings::v4l2_device_put((*device).v4l2.get());
        }
    }
}

fn direction_of(caps: u32) -> u32 {
    const OUTPUT: u32 = bindings::V4L2_CAP_VIDEO_OUTPUT
        | bindings::V4L2_CAP_VIDEO_OUTPUT_MPLANE
        | bindings::V4L2_CAP_VBI_OUTPUT
        | bindings::V4L2_CAP_SLICED_VBI_OUTPUT
        | bindings::V4L2_CAP_SDR_OUTPUT
        | bindings::V4L2_CAP_META_OUTPUT
        | bindings::V4L2_CAP_MODULATOR;
    const CAPTURE: u32 = bindings::V4L2_CAP_VIDEO_CAPTURE
        | bindings::V4L2_CAP_VIDEO_CAPTURE_MPLANE
        | bindings::V4L2_CAP_VBI_CAPTURE
        | bindings::V4L2_CAP_SLICED_VBI_CAPTURE
        | bindings::V4L2_CAP_SDR_CAPTURE
        | bindings::V4L2_CAP_META_CAPTURE
        | bindings::V4L2_CAP_TUNER;
    if caps & (bindings::V4L2_CAP_VIDEO_M2M | bindings::V4L2_CAP_VIDEO_M2M_MPLANE) != 0 {
        bindings::vfl_devnode_direction_VFL_DIR_M2M
    } else if caps & OUTPUT != 0 && caps & CAPTURE == 0 {
        bindings::vfl_devnode_direction_VFL_DIR_TX
    } else {
        bindings::vfl_devnode_direction_VFL_DIR_RX
    }
}
