// SPDX-License-Identifier: GPL-2.0

//! Video4Linux2: registration of a video node for a driver, its open files
//! and their events, ioctl dispatch, and typed views of the V4L2
//! structures.
//!
//! C headers: [`include/media/v4l2-dev.h`](srctree/include/media/v4l2-dev.h),
//! [`include/uapi/linux/videodev2.h`](srctree/include/uapi/linux/videodev2.h)
//!
//! A driver implements [`Driver`] and registers a node with
//! [`Registration::new`]; the V4L2 core then calls the driver for each open
//! file, with every ioctl argument already copied in (and 32-bit ones
//! converted). Drivers see no raw pointer: arguments come as typed views
//! or bytes, arrays as slices.

pub(crate) mod device;
pub(crate) mod file;
pub(crate) mod ioctl;
pub(crate) mod types;

pub(crate) use device::{Options, Registration};
pub(crate) use file::{Driver, EventSink, OpenFile, Poll};
pub(crate) use ioctl::Ioctl;

// The layout of the V4L2 structures drivers pass on is the 64-bit one
// (that is what virtio-media carries): the driver builds only for 64-bit
// kernels, where the core's copies have that layout.
kernel::static_assert!(core::mem::size_of::<usize>() == 8);

/// The `videodev2.h` constants drivers use, by their C names, so that
/// drivers need no bindings.
pub(crate) mod uapi {
    pub(crate) use crate::kernel_ext::bindings::{
        V4L2_BUF_CAP_SUPPORTS_DMABUF, V4L2_BUF_CAP_SUPPORTS_MMAP, V4L2_BUF_CAP_SUPPORTS_USERPTR,
        V4L2_BUF_FLAG_LAST, V4L2_CAP_META_OUTPUT, V4L2_CAP_SDR_OUTPUT, V4L2_CAP_SLICED_VBI_OUTPUT,
        V4L2_CAP_STREAMING, V4L2_CAP_VBI_OUTPUT, V4L2_CAP_VIDEO_CAPTURE,
        V4L2_CAP_VIDEO_CAPTURE_MPLANE, V4L2_CAP_VIDEO_M2M, V4L2_CAP_VIDEO_M2M_MPLANE,
        V4L2_CAP_VIDEO_OUTPUT, V4L2_CAP_VIDEO_OUTPUT_MPLANE, V4L2_DEC_CMD_START,
    };
}

/// `poll()` bits (uapi/linux/eventpoll.h; bindgen cannot evaluate their
/// `__force` casts).
pub(crate) mod poll {
    pub(crate) const EPOLLIN: u32 = 0x0001;
    pub(crate) const EPOLLPRI: u32 = 0x0002;
    pub(crate) const EPOLLOUT: u32 = 0x0004;
    pub(crate) const EPOLLERR: u32 = 0x0008;
    pub(crate) const EPOLLRDNORM: u32 = 0x0040;
    pub(crate) const EPOLLWRNORM: u32 = 0x0100;
}
