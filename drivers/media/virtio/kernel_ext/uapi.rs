// SPDX-License-Identifier: GPL-2.0

//! The virtio-media wire structures as Rust types.
//!
//! C header: [`include/uapi/linux/virtio_media.h`](srctree/include/uapi/linux/virtio_media.h)
//!
//! Every field is little-endian on the wire ([`Le32`], [`Le64`]), whatever
//! the CPU: the driver builds and parses commands, responses and events
//! through these types only. Their sizes are checked at build time against
//! the C header's, through the generated bindings.
//!
//! The kernel crate has no endian types yet; `Le32`/`Le64` are the minimum
//! this module needs (a transparent integer with conversions on access).

use super::bindings;
use core::mem::size_of;
use kernel::{
    prelude::*,
    static_assert,
    transmute::{AsBytes, FromBytes},
};

macro_rules! le_int {
    ($name:ident, $int:ty) => {
        #[doc = concat!("A little-endian `", stringify!($int), "` on the wire.")]
        #[repr(transparent)]
        #[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
        pub(crate) struct $name($int);

        impl $name {
            /// The wire form of `value`.
            pub(crate) const fn new(value: $int) -> Self {
                Self(value.to_le())
            }

            /// The value in CPU order.
            pub(crate) const fn get(self) -> $int {
                <$int>::from_le(self.0)
            }
        }

        // SAFETY: A transparent integer: no padding, every bit pattern is
        // valid, no interior mutability.
        unsafe impl FromBytes for $name {}
        // SAFETY: As above.
        unsafe impl AsBytes for $name {}
    };
}

le_int!(Le32, u32);
le_int!(Le64, u64);

/// Declares wire structs: `#[repr(C)]`, made only of fields that are
/// themselves wire types laid out without padding (the build asserts each
/// struct's size equals its C twin's, which has explicit padding fields),
/// so every bit pattern is valid and every byte initialised.
macro_rules! wire_structs {
    ($(
        $(#[$meta:meta])*
        $name:ident = $c:ident { $($(#[$fmeta:meta])* $field:ident: $ty:ty),* $(,)? }
    )*) => { $(
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Default, Debug)]
        pub(crate) struct $name {
            $($(#[$fmeta])* pub(crate) $field: $ty,)*
        }

        static_assert!(size_of::<$name>() == size_of::<bindings::$c>());

        // SAFETY: `#[repr(C)]` of wire types without padding (same size as
        // the C struct, whose padding is explicit): every bit pattern is
        // valid, there is no interior mutability.
        unsafe impl FromBytes for $name {}
        // SAFETY: As above: no uninitialised byte.
        unsafe impl AsBytes for $name {}
    )* };
}

wire_structs! {
    /// `struct virtio_media_config`: the device's configuration space.
    Config = virtio_media_config {
        /// `V4L2_CAP_*` flags of the video device.
        device_caps: Le32,
        /// `enum vfl_devnode_type` of the video device.
        device_type: Le32,
        /// Card name, NUL-terminated unless all 32 bytes are used.
        card: [u8; 32],
    }

    /// `struct virtio_media_cmd_header`: the start of every command.
    CmdHeader = virtio_media_cmd_header { cmd: Le32, padding: Le32 }

    /// `struct virtio_media_resp_header`: the start of every response.
    RespHeader = virtio_media_resp_header { status: Le32, padding: Le32 }

    /// `struct virtio_media_cmd_open`.
    CmdOpen = virtio_media_cmd_open { hdr: CmdHeader }

    /// `struct virtio_media_resp_open`.
    RespOpen = virtio_media_resp_open { hdr: RespHeader, session_id: Le32, padding: Le32 }

    /// `struct virtio_media_cmd_close`.
    CmdClose = virtio_media_cmd_close { hdr: CmdHeader, session_id: Le32, padding: Le32 }

    /// `struct virtio_media_cmd_ioctl`, followed by the ioctl's payload.
    CmdIoctl = virtio_media_cmd_ioctl { hdr: CmdHeader, session_id: Le32, code: Le32 }

    /// `struct virtio_media_resp_ioctl`, followed by the ioctl's payload.
    RespIoctl = virtio_media_resp_ioctl { hdr: RespHeader }

    /// `struct virtio_media_sg_entry`: one piece of guest memory.
    SgEntry = virtio_media_sg_entry { start: Le64, len: Le32, padding: Le32 }

    /// `struct virtio_media_cmd_mmap`.
    CmdMmap = virtio_media_cmd_mmap { hdr: CmdHeader, session_id: Le32, flags: Le32, offset: Le64 }

    /// `struct virtio_media_resp_mmap`.
    RespMmap = virtio_media_resp_mmap { hdr: RespHeader, addr: Le64, len: Le64 }

    /// `struct virtio_media_cmd_munmap`.
    CmdMunmap = virtio_media_cmd_munmap { hdr: CmdHeader, guest_addr: Le64 }

    /// `struct virtio_media_event_header`: the start of every event.
    EventHeader = virtio_media_event_header { event: Le32, session_id: Le32 }

    /// `struct virtio_media_event_error`.
    EventError = virtio_media_event_error { hdr: EventHeader, errno: Le32, padding: Le32 }
}

// The protocol's constants, re-exported so that the driver needs no
// bindings.
pub(crate) use bindings::{
    VIRTIO_MEDIA_CMD_CLOSE, VIRTIO_MEDIA_CMD_IOCTL, VIRTIO_MEDIA_CMD_MMAP, VIRTIO_MEDIA_CMD_MUNMAP,
    VIRTIO_MEDIA_CMD_OPEN, VIRTIO_MEDIA_EVT_DQBUF, VIRTIO_MEDIA_EVT_ERROR, VIRTIO_MEDIA_EVT_EVENT,
    VIRTIO_MEDIA_MMAP_FLAG_RW,
};

#[kunit_tests(virtio_media_uapi)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_little_endian_on_the_wire() -> Result {
        let entry = SgEntry {
            start: Le64::new(0x1122_3344_5566_7788),
            len: Le32::new(0x99aa_bbcc),
            padding: Le32::new(0),
        };
        assert_eq!(
            entry.as_bytes(),
            &[0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, 0xcc, 0xbb, 0xaa, 0x99, 0, 0, 0, 0]
        );
        let (header, rest) =
            EventHeader::from_bytes_copy_prefix(&[2, 0, 0, 0, 7, 0, 0, 0, 9]).ok_or(EINVAL)?;
        assert_eq!((header.event.get(), header.session_id.get(), rest), (2, 7, &[9u8][..]));
        Ok(())
    }
}
