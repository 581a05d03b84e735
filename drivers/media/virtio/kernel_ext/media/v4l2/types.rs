// SPDX-License-Identifier: GPL-2.0

//! Typed views of the V4L2 structures drivers read and write.
//!
//! C header: [`include/uapi/linux/videodev2.h`](srctree/include/uapi/linux/videodev2.h)
//!
//! Each view is a transparent wrapper of the C structure kept as
//! `MaybeUninit`, so that a copy keeps every byte, padding included: the
//! structures go to devices as bytes ([`AsBytes`]), and some have implicit
//! padding (`v4l2_buffer` before its timestamp). A view is only ever made
//! from initialised bytes: the V4L2 core's copy of an ioctl argument (copied
//! from user space, or zeroed for arguments user space does not write), a
//! device's bytes ([`FromBytes`]) or [`zeroed`](Buffer::zeroed).
//!
//! The accessors read and write the fields the driver needs by name; union
//! members are read through their integer representation. Pointers the V4L2
//! core owns (`v4l2_buffer.m.planes` of multi-planar buffers,
//! `v4l2_ext_controls.controls`) are not reachable from here: the ioctl
//! layer hands their arrays over as slices and clears the pointers while a
//! driver has the structure, so no kernel address reaches a device.

use crate::kernel_ext::bindings;
use core::mem::MaybeUninit;
use kernel::{
    prelude::*,
    transmute::{AsBytes, FromBytes},
};

macro_rules! views {
    ($($(#[$meta:meta])* $name:ident = $c:ident;)*) => { $(
        $(#[$meta])*
        ///
        /// # Invariants
        ///
        /// Every byte is initialised (see the module documentation).
        #[repr(transparent)]
        pub(crate) struct $name(MaybeUninit<bindings::$c>);

        // SAFETY: The C structure is plain data (integers, arrays and unions
        // of integers, raw pointers only read as integers): every bit
        // pattern is valid, and there is no interior mutability.
        unsafe impl FromBytes for $name {}
        // SAFETY: Every byte is initialised (invariant).
        unsafe impl AsBytes for $name {}
        // SAFETY: Plain data; the pointers some of these structures hold
        // are never dereferenced through a view.
        unsafe impl Send for $name {}
        // SAFETY: As above; shared references only read.
        unsafe impl Sync for $name {}

        // Every view gets the same constructors and accessors; not every
        // view needs each (generated code, so `allow`, not `expect`).
        #[allow(dead_code)]
        impl $name {
            /// All zero.
            pub(crate) fn zeroed() -> Self {
                // INVARIANT: Zeroed bytes are initialised.
                Self(MaybeUninit::zeroed())
            }

            /// A view of the C structure at `ptr`.
            ///
            /// # Safety
            ///
            /// `ptr` must point to an initialised structure, valid for
            /// reads and writes and not otherwise accessed for `'a`.
            pub(crate) unsafe fn from_raw<'a>(ptr: *mut bindings::$c) -> &'a mut Self {
                // SAFETY: Per the caller; the view is transparent.
                unsafe { &mut *ptr.cast::<Self>() }
            }

            fn raw(&self) -> &bindings::$c {
                // SAFETY: Initialised (invariant).
                unsafe { self.0.assume_init_ref() }
            }

            fn raw_mut(&mut self) -> &mut bindings::$c {
                // SAFETY: Initialised (invariant); writes through the
                // typed reference keep every byte initialised.
                unsafe { self.0.assume_init_mut() }
            }
        }
    )* };
}

views! {
    /// `struct v4l2_buffer`.
    Buffer = v4l2_buffer;
    /// `struct v4l2_plane`.
    Plane = v4l2_plane;
    /// `struct v4l2_format`.
    Format = v4l2_format;
    /// `struct v4l2_requestbuffers`.
    RequestBuffers = v4l2_requestbuffers;
    /// `struct v4l2_create_buffers`.
    CreateBuffers = v4l2_create_buffers;
    /// `struct v4l2_remove_buffers`.
    RemoveBuffers = v4l2_remove_buffers;
    /// `struct v4l2_exportbuffer`.
    ExportBuffer = v4l2_exportbuffer;
    /// `struct v4l2_ext_controls`.
    ExtControls = v4l2_ext_controls;
    /// `struct v4l2_ext_control`.
    ExtControl = v4l2_ext_control;
    /// `struct v4l2_capability`.
    Capability = v4l2_capability;
    /// `struct v4l2_event_subscription`.
    EventSubscription = v4l2_event_subscription;
    /// `struct v4l2_streamparm`.
    StreamParm = v4l2_streamparm;
    /// `struct v4l2_event`.
    Event = v4l2_event;
}

/// Most planes a buffer can have (`VIDEO_MAX_PLANES`).
pub(crate) const MAX_PLANES: usize = bindings::VIDEO_MAX_PLANES as usize;

/// `enum v4l2_buf_type` values, with what drivers ask of them.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct BufType(pub(crate) u32);

impl BufType {
    pub(crate) const VIDEO_CAPTURE: Self =
        Self(bindings::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE);
    pub(crate) const VIDEO_OUTPUT: Self = Self(bindings::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT);
    pub(crate) const VIDEO_CAPTURE_MPLANE: Self =
        Self(bindings::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE);
    pub(crate) const VIDEO_OUTPUT_MPLANE: Self =
        Self(bindings::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE);
    pub(crate) const META_OUTPUT: Self = Self(bindings::v4l2_buf_type_V4L2_BUF_TYPE_META_OUTPUT);

    /// Whether this is a buffer type at all (`V4L2_BUF_TYPE_*` from
    /// VIDEO_CAPTURE to META_OUTPUT).
    pub(crate) fn is_valid(self) -> bool {
        (bindings::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE
            ..=bindings::v4l2_buf_type_V4L2_BUF_TYPE_META_OUTPUT)
            .contains(&self.0)
    }

    /// `V4L2_TYPE_IS_OUTPUT`: the program writes the buffers.
    pub(crate) fn is_output(self) -> bool {
        matches!(
            self.0,
            bindings::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT
                | bindings::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OVERLAY
                | bindings::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT_OVERLAY
                | bindings::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE
                | bindings::v4l2_buf_type_V4L2_BUF_TYPE_VBI_OUTPUT
                | bindings::v4l2_buf_type_V4L2_BUF_TYPE_SLICED_VBI_OUTPUT
                | bindings::v4l2_buf_type_V4L2_BUF_TYPE_SDR_OUTPUT
                | bindings::v4l2_buf_type_V4L2_BUF_TYPE_META_OUTPUT
        )
    }

    /// `V4L2_TYPE_IS_MULTIPLANAR`: the buffer's planes are an array.
    pub(crate) fn is_multiplanar(self) -> bool {
        self == Self::VIDEO_CAPTURE_MPLANE || self == Self::VIDEO_OUTPUT_MPLANE
    }
}

/// `enum v4l2_memory` values.
pub(crate) mod memory {
    use super::bindings;

    pub(crate) const MMAP: u32 = bindings::v4l2_memory_V4L2_MEMORY_MMAP;
    pub(crate) const USERPTR: u32 = bindings::v4l2_memory_V4L2_MEMORY_USERPTR;
    pub(crate) const DMABUF: u32 = bindings::v4l2_memory_V4L2_MEMORY_DMABUF;
}

impl Buffer {
    pub(crate) fn buf_type(&self) -> BufType {
        BufType(self.raw().type_)
    }

    pub(crate) fn index(&self) -> u32 {
        self.raw().index
    }

    pub(crate) fn set_index(&mut self, index: u32) {
        self.raw_mut().index = index;
    }

    pub(crate) fn memory(&self) -> u32 {
        self.raw().memory
    }

    pub(crate) fn set_memory(&mut self, memory: u32) {
        self.raw_mut().memory = memory;
    }

    pub(crate) fn flags(&self) -> u32 {
        self.raw().flags
    }

    pub(crate) fn set_flags(&mut self, flags: u32) {
        self.raw_mut().flags = flags;
    }

    /// For single-planar types the plane's length; for multi-planar ones
    /// the number of planes.
    pub(crate) fn length(&self) -> u32 {
        self.raw().length
    }

    pub(crate) fn set_length(&mut self, length: u32) {
        self.raw_mut().length = length;
    }

    /// Bytes of data in a single-planar buffer.
    pub(crate) fn bytesused(&self) -> u32 {
        self.raw().bytesused
    }

    pub(crate) fn set_bytesused(&mut self, bytesused: u32) {
        self.raw_mut().bytesused = bytesused;
    }

    /// The `m` union as an integer: the mmap offset, user pointer or
    /// dma-buf fd (low 32 bits) of a single-planar buffer.
    pub(crate) fn m(&self) -> u64 {
        self.raw().m.bindgen_union_field
    }

    pub(crate) fn set_m(&mut self, value: u64) {
        self.raw_mut().m.bindgen_union_field = value;
    }
}

impl Plane {
    pub(crate) fn length(&self) -> u32 {
        self.raw().length
    }

    pub(crate) fn set_length(&mut self, length: u32) {
        self.raw_mut().length = length;
    }

    /// Bytes of data in the plane, `data_offset` included.
    pub(crate) fn bytesused(&self) -> u32 {
        self.raw().bytesused
    }

    pub(crate) fn set_bytesused(&mut self, bytesused: u32) {
        self.raw_mut().bytesused = bytesused;
    }

    /// Where the data starts in the plane.
    pub(crate) fn data_offset(&self) -> u32 {
        self.raw().data_offset
    }

    pub(crate) fn set_data_offset(&mut self, data_offset: u32) {
        self.raw_mut().data_offset = data_offset;
    }

    /// The `m` union as an integer: mmap offset, user pointer or dma-buf
    /// fd (low 32 bits).
    pub(crate) fn m(&self) -> u64 {
        self.raw().m.bindgen_union_field
    }

    pub(crate) fn set_m(&mut self, value: u64) {
        self.raw_mut().m.bindgen_union_field = value;
    }
}

impl Format {
    pub(crate) fn buf_type(&self) -> BufType {
        BufType(self.raw().type_)
    }

    pub(crate) fn set_buf_type(&mut self, buf_type: BufType) {
        self.raw_mut().type_ = buf_type.0;
    }

    /// The `sizeimage` of each plane of a video format; `None` for other
    /// buffer types or a plane count out of range.
    pub(crate) fn plane_sizes(&self) -> Option<KVec<u32>> {
        let fmt = &self.raw().fmt;
        let mut sizes = KVec::new();
        match self.buf_type() {
            BufType::VIDEO_CAPTURE | BufType::VIDEO_OUTPUT => {
                // SAFETY: Every member of the union is plain data, and all
                // its bytes are initialised (invariant).
                let pix = unsafe { fmt.pix.as_ref() };
                sizes.push(pix.sizeimage, GFP_KERNEL).ok()?;
            }
            BufType::VIDEO_CAPTURE_MPLANE | BufType::VIDEO_OUTPUT_MPLANE => {
                // SAFETY: As above.
                let pix_mp = unsafe { fmt.pix_mp.as_ref() };
                let count = usize::from(pix_mp.num_planes);
                for plane in pix_mp.plane_fmt.get(..count)? {
                    sizes.push(plane.sizeimage, GFP_KERNEL).ok()?;
                }
            }
            _ => return None,
        }
        Some(sizes)
    }

    /// Sets the `sizeimage` of each plane (the plane count follows for a
    /// multi-planar format).
    #[cfg(CONFIG_KUNIT)]
    pub(crate) fn set_plane_sizes(&mut self, sizes: &[u32]) {
        let buf_type = self.buf_type();
        let fmt = &mut self.raw_mut().fmt;
        if buf_type.is_multiplanar() {
            // SAFETY: As in `plane_sizes`.
            let pix_mp = unsafe { fmt.pix_mp.as_mut() };
            pix_mp.num_planes = u8::try_from(sizes.len()).unwrap_or(u8::MAX);
            for (plane, &size) in pix_mp.plane_fmt.iter_mut().zip(sizes) {
                plane.sizeimage = size;
            }
        } else if let Some(&size) = sizes.first() {
            // SAFETY: As in `plane_sizes`.
            unsafe { fmt.pix.as_mut() }.sizeimage = size;
        }
    }
}

impl RequestBuffers {
    pub(crate) fn count(&self) -> u32 {
        self.raw().count
    }

    pub(crate) fn buf_type(&self) -> BufType {
        BufType(self.raw().type_)
    }

    pub(crate) fn set_buf_type(&mut self, buf_type: BufType) {
        self.raw_mut().type_ = buf_type.0;
    }

    pub(crate) fn memory(&self) -> u32 {
        self.raw().memory
    }

    pub(crate) fn set_memory(&mut self, memory: u32) {
        self.raw_mut().memory = memory;
    }

    pub(crate) fn capabilities(&self) -> u32 {
        self.raw().capabilities
    }

    pub(crate) fn set_capabilities(&mut self, caps: u32) {
        self.raw_mut().capabilities = caps;
    }
}

impl CreateBuffers {
    pub(crate) fn index(&self) -> u32 {
        self.raw().index
    }

    pub(crate) fn count(&self) -> u32 {
        self.raw().count
    }

    pub(crate) fn memory(&self) -> u32 {
        self.raw().memory
    }

    pub(crate) fn set_memory(&mut self, memory: u32) {
        self.raw_mut().memory = memory;
    }

    pub(crate) fn capabilities(&self) -> u32 {
        self.raw().capabilities
    }

    pub(crate) fn set_capabilities(&mut self, caps: u32) {
        self.raw_mut().capabilities = caps;
    }

    pub(crate) fn format(&self) -> &Format {
        // SAFETY: `Format` is a transparent view of the `format` field,
        // initialised as the whole is (invariant).
        unsafe { &*core::ptr::from_ref(&self.raw().format).cast::<Format>() }
    }
}

impl RemoveBuffers {
    pub(crate) fn index(&self) -> u32 {
        self.raw().index
    }

    pub(crate) fn count(&self) -> u32 {
        self.raw().count
    }

    pub(crate) fn buf_type(&self) -> BufType {
        BufType(self.raw().type_)
    }
}

impl ExportBuffer {
    pub(crate) fn buf_type(&self) -> BufType {
        BufType(self.raw().type_)
    }

    pub(crate) fn index(&self) -> u32 {
        self.raw().index
    }

    pub(crate) fn plane(&self) -> u32 {
        self.raw().plane
    }

    pub(crate) fn flags(&self) -> u32 {
        self.raw().flags
    }

    pub(crate) fn set_fd(&mut self, fd: i32) {
        self.raw_mut().fd = fd;
    }
}

impl ExtControls {
    pub(crate) fn count(&self) -> u32 {
        self.raw().count
    }

    pub(crate) fn set_count(&mut self, count: u32) {
        self.raw_mut().count = count;
    }

    pub(crate) fn error_idx(&self) -> u32 {
        self.raw().error_idx
    }

    pub(crate) fn set_error_idx(&mut self, index: u32) {
        self.raw_mut().error_idx = index;
    }

    /// The `controls` pointer, which the ioctl layer owns.
    pub(super) fn controls_ptr(&self) -> *mut bindings::v4l2_ext_control {
        self.raw().controls
    }

    pub(super) fn set_controls_ptr(&mut self, controls: *mut bindings::v4l2_ext_control) {
        self.raw_mut().controls = controls;
    }
}

impl ExtControl {
    /// The payload size: non-zero for the compound and array controls,
    /// whose value is behind a user pointer.
    pub(crate) fn size(&self) -> u32 {
        self.raw().size
    }

    /// The value union as an integer: the user pointer of a payload.
    pub(crate) fn ptr(&self) -> u64 {
        // The structure is packed: the union is its bytes.
        u64::from_ne_bytes(self.raw().__bindgen_anon_1.bindgen_union_field)
    }

    pub(crate) fn set_ptr(&mut self, ptr: u64) {
        self.raw_mut().__bindgen_anon_1.bindgen_union_field = ptr.to_ne_bytes();
    }
}

impl Capability {
    /// Fills in the identity of the device, the strings cut to fit with a
    /// terminating NUL.
    pub(crate) fn set(&mut self, driver: &[u8], card: &[u8], bus_info: &[u8], device_caps: u32) {
        let raw = self.raw_mut();
        copy_cstr(&mut raw.driver, driver);
        copy_cstr(&mut raw.card, card);
        copy_cstr(&mut raw.bus_info, bus_info);
        raw.device_caps = device_caps;
        raw.capabilities = device_caps | bindings::V4L2_CAP_DEVICE_CAPS;
    }
}

impl StreamParm {
    pub(crate) fn set_buf_type(&mut self, buf_type: BufType) {
        self.raw_mut().type_ = buf_type.0;
    }
}

/// Copies `src` into `dst` as a C string: cut to leave room for the NUL,
/// the rest zeroed.
pub(crate) fn copy_cstr(dst: &mut [u8], src: &[u8]) {
    let len = src.len().min(dst.len().saturating_sub(1));
    if let (Some(d), Some(s)) = (dst.get_mut(..len), src.get(..len)) {
        d.copy_from_slice(s);
    }
    if let Some(rest) = dst.get_mut(len..) {
        rest.fill(0);
    }
}

#[kunit_tests(virtio_media_v4l2_types)]
mod tests {
    use super::*;

    #[test]
    fn views_read_and_write_the_c_fields() -> Result {
        let mut buf = Buffer::zeroed();
        buf.set_m(0x1234_5678_9abc);
        buf.set_length(3);
        let bytes = buf.as_bytes();
        let m = core::mem::offset_of!(bindings::v4l2_buffer, m);
        assert_eq!(
            bytes.get(m..m + 8),
            Some(&0x1234_5678_9abcu64.to_ne_bytes()[..])
        );
        let again = Buffer::from_bytes_copy(bytes).ok_or(EINVAL)?;
        assert_eq!((again.m(), again.length()), (0x1234_5678_9abc, 3));
        Ok(())
    }

    #[test]
    fn formats_give_their_plane_sizes() -> Result {
        let mut format = Format::zeroed();
        format.set_buf_type(BufType::VIDEO_OUTPUT_MPLANE);
        format.set_plane_sizes(&[100, 50]);
        assert_eq!(format.plane_sizes().as_deref(), Some(&[100u32, 50][..]));
        format.set_buf_type(BufType::VIDEO_CAPTURE);
        format.set_plane_sizes(&[614400]);
        assert_eq!(format.plane_sizes().as_deref(), Some(&[614400u32][..]));
        format.set_buf_type(BufType(bindings::v4l2_buf_type_V4L2_BUF_TYPE_META_CAPTURE));
        assert!(format.plane_sizes().is_none());
        Ok(())
    }

    #[test]
    fn buffer_types() {
        assert!(
            BufType::VIDEO_OUTPUT_MPLANE.is_output()
                && BufType::VIDEO_OUTPUT_MPLANE.is_multiplanar()
        );
        assert!(!BufType::VIDEO_CAPTURE.is_output() && !BufType::VIDEO_CAPTURE.is_multiplanar());
        assert!(BufType(bindings::v4l2_buf_type_V4L2_BUF_TYPE_META_OUTPUT).is_output());
        assert!(!BufType(0).is_valid() && !BufType(0x80).is_valid());
    }
}
