// SPDX-License-Identifier: GPL-2.0

//! The virtio-media wire format, as pure functions over bytes.
//!
//! Nothing here touches a device or a pointer, so all of it is covered by
//! the KUnit suite at the bottom. Layouts come from
//! `include/uapi/linux/virtio_media.h` through the generated bindings.

use crate::ffi;
use kernel::prelude::*;

/// Largest errno a device may report; anything above is a protocol error.
const MAX_ERRNO: u32 = 4095;

/// `_IOC` field layout of the ioctl codes on every Linux architecture we
/// support (asm-generic/ioctl.h; x86 uses the generic one).
const IOC_NRBITS: u32 = 8;
const IOC_TYPEBITS: u32 = 8;
const IOC_SIZEBITS: u32 = 14;
const IOC_NRSHIFT: u32 = 0;
const IOC_TYPESHIFT: u32 = IOC_NRSHIFT + IOC_NRBITS;
const IOC_SIZESHIFT: u32 = IOC_TYPESHIFT + IOC_TYPEBITS;
const IOC_DIRSHIFT: u32 = IOC_SIZESHIFT + IOC_SIZEBITS;
const IOC_WRITE: u32 = 1;
const IOC_READ: u32 = 2;

/// Which side of the descriptor chain an ioctl's payload goes in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// `_IO`: no payload.
    None,
    /// `_IOW`: user space writes, so only the device reads the payload.
    ToDevice,
    /// `_IOR`: only the device writes the payload.
    FromDevice,
    /// `_IOWR`: the payload goes both ways.
    Both,
}

/// Builds an ioctl code like the C `_IOC` macro.
pub(crate) const fn ioc(dir: Direction, ty: u8, nr: u8, size: usize) -> u32 {
    let dir_bits = match dir {
        Direction::None => 0,
        Direction::ToDevice => IOC_WRITE,
        Direction::FromDevice => IOC_READ,
        Direction::Both => IOC_READ | IOC_WRITE,
    };
    (dir_bits << IOC_DIRSHIFT)
        | ((ty as u32) << IOC_TYPESHIFT)
        | ((nr as u32) << IOC_NRSHIFT)
        | ((size as u32) << IOC_SIZESHIFT)
}

/// The command number (`_IOC_NR`), which is what the protocol sends.
pub(crate) const fn ioctl_nr(code: u32) -> u32 {
    (code >> IOC_NRSHIFT) & ((1 << IOC_NRBITS) - 1)
}

/// The payload size encoded in the code (`_IOC_SIZE`).
pub(crate) const fn ioctl_size(code: u32) -> usize {
    ((code >> IOC_SIZESHIFT) & ((1 << IOC_SIZEBITS) - 1)) as usize
}

/// The payload direction encoded in the code (`_IOC_DIR`).
pub(crate) const fn ioctl_direction(code: u32) -> Direction {
    match code >> IOC_DIRSHIFT {
        0 => Direction::None,
        IOC_WRITE => Direction::ToDevice,
        IOC_READ => Direction::FromDevice,
        _ => Direction::Both,
    }
}

fn read_le32(bytes: &[u8], offset: usize) -> Option<u32> {
    let end = offset.checked_add(4)?;
    let field = bytes.get(offset..end)?;
    Some(u32::from_le_bytes(field.try_into().ok()?))
}

/// Device configuration (`struct virtio_media_config`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct DeviceConfig {
    /// `V4L2_CAP_*` flags of the video device.
    pub(crate) device_caps: u32,
    /// `enum vfl_devnode_type` of the video device.
    pub(crate) device_type: u32,
    /// Card name, NUL-terminated unless all 32 bytes are used.
    pub(crate) card: [u8; 32],
}

impl DeviceConfig {
    /// Size of the config structure on the wire.
    pub(crate) const SIZE: usize = core::mem::size_of::<ffi::virtio_media_config>();

    /// Parses the config space bytes.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self> {
        let card_bytes = bytes.get(8..8 + 32).ok_or(EINVAL)?;
        let mut card = [0u8; 32];
        card.copy_from_slice(card_bytes);
        Ok(Self {
            device_caps: read_le32(bytes, 0).ok_or(EINVAL)?,
            device_type: read_le32(bytes, 4).ok_or(EINVAL)?,
            card,
        })
    }

    /// The card name up to its first NUL, if it is valid UTF-8.
    pub(crate) fn card_name(&self) -> Option<&str> {
        let len = self.card.iter().position(|&b| b == 0).unwrap_or(self.card.len());
        core::str::from_utf8(self.card.get(..len)?).ok()
    }
}

/// Why a device response could not be accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResponseError {
    /// The device reported this errno (positive, within the errno range).
    Device(u32),
    /// The response is shorter than its header.
    Short(usize),
    /// The status is not a valid errno.
    BadStatus(u32),
}

/// Checks a response's `virtio_media_resp_header`: `Ok` on status 0.
pub(crate) fn response_status(resp: &[u8]) -> Result<(), ResponseError> {
    let status = read_le32(resp, 0).ok_or(ResponseError::Short(resp.len()))?;
    match status {
        0 => Ok(()),
        1..=MAX_ERRNO => Err(ResponseError::Device(status)),
        _ => Err(ResponseError::BadStatus(status)),
    }
}

const CMD_HEADER_SIZE: usize = core::mem::size_of::<ffi::virtio_media_cmd_header>();

/// Appends a command header for `cmd` to `buf`.
fn push_header(buf: &mut KVec<u8>, cmd: u32) -> Result {
    buf.extend_from_slice(&cmd.to_le_bytes(), GFP_KERNEL)?;
    buf.extend_from_slice(&0u32.to_le_bytes(), GFP_KERNEL)?;
    Ok(())
}

/// `VIRTIO_MEDIA_CMD_OPEN`.
pub(crate) fn open_request() -> Result<KVec<u8>> {
    let mut buf = KVec::with_capacity(CMD_HEADER_SIZE, GFP_KERNEL)?;
    push_header(&mut buf, ffi::VIRTIO_MEDIA_CMD_OPEN)?;
    Ok(buf)
}

/// Size of the OPEN response.
pub(crate) const OPEN_RESPONSE_SIZE: usize = core::mem::size_of::<ffi::virtio_media_resp_open>();

/// The session id of a successful OPEN response.
pub(crate) fn open_response_session(resp: &[u8]) -> Option<u32> {
    read_le32(resp, 8)
}

/// `VIRTIO_MEDIA_CMD_CLOSE` for `session`.
pub(crate) fn close_request(session: u32) -> Result<KVec<u8>> {
    let mut buf = KVec::with_capacity(core::mem::size_of::<ffi::virtio_media_cmd_close>(), GFP_KERNEL)?;
    push_header(&mut buf, ffi::VIRTIO_MEDIA_CMD_CLOSE)?;
    buf.extend_from_slice(&session.to_le_bytes(), GFP_KERNEL)?;
    buf.extend_from_slice(&0u32.to_le_bytes(), GFP_KERNEL)?;
    Ok(buf)
}

/// Size of a response that is only a header.
pub(crate) const HEADER_RESPONSE_SIZE: usize =
    core::mem::size_of::<ffi::virtio_media_resp_header>();

#[kunit_tests(virtio_media_protocol)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_code_fields() {
        // VIDIOC_G_FMT is _IOWR('V', 4, struct v4l2_format): 0xc0d05604.
        let code = ioc(Direction::Both, b'V', 4, 208);
        assert_eq!(code, 0xc0d0_5604);
        assert_eq!(ioctl_nr(code), 4);
        assert_eq!(ioctl_size(code), 208);
        assert_eq!(ioctl_direction(code), Direction::Both);
        // VIDIOC_STREAMON is _IOW('V', 18, int).
        let code = ioc(Direction::ToDevice, b'V', 18, 4);
        assert_eq!(code, 0x4004_5612);
        assert_eq!(ioctl_direction(code), Direction::ToDevice);
        assert_eq!(ioctl_direction(ioc(Direction::FromDevice, b'V', 0, 104)), Direction::FromDevice);
    }

    #[test]
    fn config_parsing() {
        assert_eq!(DeviceConfig::SIZE, 40);
        let mut bytes = [0u8; 40];
        bytes[0..4].copy_from_slice(&0x0420_1000u32.to_le_bytes());
        bytes[4..8].copy_from_slice(&0u32.to_le_bytes());
        bytes[8..14].copy_from_slice(b"camera");
        let config = DeviceConfig::parse(&bytes).expect("40 bytes parse");
        assert_eq!(config.device_caps, 0x0420_1000);
        assert_eq!(config.card_name(), Some("camera"));
        // A card name filling all 32 bytes needs no NUL.
        bytes[8..40].copy_from_slice(&[b'x'; 32]);
        let config = DeviceConfig::parse(&bytes).expect("40 bytes parse");
        assert_eq!(config.card_name().map(str::len), Some(32));
        assert!(DeviceConfig::parse(&bytes[..39]).is_err());
    }

    #[test]
    fn session_commands() {
        let open = open_request().expect("allocation");
        assert_eq!(open.as_slice(), &[1, 0, 0, 0, 0, 0, 0, 0]);
        let close = close_request(0x0102_0304).expect("allocation");
        assert_eq!(close.as_slice(), &[2, 0, 0, 0, 0, 0, 0, 0, 4, 3, 2, 1, 0, 0, 0, 0]);
        assert_eq!(OPEN_RESPONSE_SIZE, 16);
        assert_eq!(open_response_session(&[0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]), Some(7));
        assert_eq!(open_response_session(&[0; 10]), None);
    }

    #[test]
    fn response_header_status() {
        assert_eq!(response_status(&[0; 8]), Ok(()));
        assert_eq!(response_status(&[22, 0, 0, 0, 0, 0, 0, 0]), Err(ResponseError::Device(22)));
        assert_eq!(response_status(&[1, 2]), Err(ResponseError::Short(2)));
        assert_eq!(
            response_status(&[0, 0x10, 0, 0, 0, 0, 0, 0]),
            Err(ResponseError::BadStatus(4096))
        );
    }
}
