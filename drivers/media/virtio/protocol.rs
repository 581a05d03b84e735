// SPDX-License-Identifier: GPL-2.0

//! The virtio-media wire format: building commands and parsing responses
//! and events, through the typed wire structures of `kernel_ext::uapi`.
//!
//! Nothing here touches a device or a pointer, so all of it is covered by
//! the KUnit suite at the bottom.

#![forbid(unsafe_code)]

use crate::kernel_ext::media::v4l2::types::{Buffer, Event as V4l2Event, Plane, MAX_PLANES};
use crate::kernel_ext::uapi::{
    self, CmdClose, CmdHeader, CmdIoctl, CmdMmap, CmdMunmap, CmdOpen, Config,
    EventError as WireError, EventHeader, Le32, Le64, RespHeader, RespMmap, RespOpen, SgEntry,
};
use core::mem::size_of;
use kernel::{
    ioctl::{_IOC_DIR, _IOC_NR, _IOC_SIZE, _IOR, _IOW},
    prelude::*,
    transmute::{AsBytes, FromBytes},
};

/// The direction bits of an ioctl code (`_IOC_WRITE`, `_IOC_READ`, which
/// the kernel crate does not export), as its own macros set them.
const IOC_WRITE: u32 = _IOC_DIR(_IOW::<u8>(0, 0));
const IOC_READ: u32 = _IOC_DIR(_IOR::<u8>(0, 0));

/// Largest errno a device may report: the last of
/// `include/uapi/asm-generic/errno.h` (`EFTYPE` in Linux 7.3). Above it
/// are no errnos, then from 512 the kernel's internal codes
/// (`ERESTARTSYS`, `ERESTARTNOINTR`, `ENOIOCTLCMD`, ...), which must never
/// reach a program: passed on, a device's `ERESTARTNOINTR` came back from
/// the ioctl as errno 513, or restarted it when a signal was pending.
/// Anything above is a protocol error.
const MAX_ERRNO: u32 = 134;

/// The numbers below [`MAX_ERRNO`] that `errno.h` leaves unassigned: a
/// program sees them as "Unknown error 41", so they are protocol errors too.
const UNASSIGNED_ERRNOS: [u32; 2] = [41, 58];

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

/// The command number (`_IOC_NR`), which is what the protocol sends.
pub(crate) const fn ioctl_nr(code: u32) -> u32 {
    _IOC_NR(code)
}

/// The payload size encoded in the code (`_IOC_SIZE`).
pub(crate) const fn ioctl_size(code: u32) -> usize {
    _IOC_SIZE(code)
}

/// The payload direction encoded in the code (`_IOC_DIR`).
pub(crate) const fn ioctl_direction(code: u32) -> Direction {
    let dir = _IOC_DIR(code);
    match (dir & IOC_WRITE != 0, dir & IOC_READ != 0) {
        (false, false) => Direction::None,
        (true, false) => Direction::ToDevice,
        (false, true) => Direction::FromDevice,
        (true, true) => Direction::Both,
    }
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
    pub(crate) const SIZE: usize = size_of::<Config>();

    /// Parses the config space bytes.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self> {
        let (config, _) = Config::from_bytes_copy_prefix(bytes).ok_or(EINVAL)?;
        Ok(Self {
            device_caps: config.device_caps.get(),
            device_type: config.device_type.get(),
            card: config.card,
        })
    }

    /// The card name up to its first NUL, if it is valid UTF-8.
    pub(crate) fn card_name(&self) -> Option<&str> {
        let len = self
            .card
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.card.len());
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
    let (header, _) =
        RespHeader::from_bytes_copy_prefix(resp).ok_or(ResponseError::Short(resp.len()))?;
    match header.status.get() {
        0 => Ok(()),
        status @ 1..=MAX_ERRNO if !UNASSIGNED_ERRNOS.contains(&status) => {
            Err(ResponseError::Device(status))
        }
        status => Err(ResponseError::BadStatus(status)),
    }
}

fn header(cmd: u32) -> CmdHeader {
    CmdHeader {
        cmd: Le32::new(cmd),
        padding: Le32::new(0),
    }
}

/// Writes the request made of `command`, then `tail`, then `room` zero
/// bytes into `buf`, in place of what it held.
fn request(buf: &mut KVec<u8>, command: &impl AsBytes, tail: &[&[u8]], room: usize) -> Result {
    let len = tail
        .iter()
        .try_fold(command.as_bytes().len(), |len, part| {
            len.checked_add(part.len())
        })
        .and_then(|len| len.checked_add(room))
        .ok_or(EINVAL)?;
    buf.clear();
    buf.reserve(len, GFP_KERNEL)?;
    buf.extend_from_slice(command.as_bytes(), GFP_KERNEL)?;
    for part in tail {
        buf.extend_from_slice(part, GFP_KERNEL)?;
    }
    buf.resize(len, 0, GFP_KERNEL)?;
    Ok(())
}

/// `VIRTIO_MEDIA_CMD_OPEN`.
pub(crate) fn open_request(buf: &mut KVec<u8>) -> Result {
    request(
        buf,
        &CmdOpen {
            hdr: header(uapi::VIRTIO_MEDIA_CMD_OPEN),
        },
        &[],
        0,
    )
}

/// Size of the OPEN response.
pub(crate) const OPEN_RESPONSE_SIZE: usize = size_of::<RespOpen>();

/// The session id of a successful OPEN response.
pub(crate) fn open_response_session(resp: &[u8]) -> Option<u32> {
    let (open, _) = RespOpen::from_bytes_copy_prefix(resp)?;
    Some(open.session_id.get())
}

/// `VIRTIO_MEDIA_CMD_CLOSE` for `session`.
pub(crate) fn close_request(buf: &mut KVec<u8>, session: u32) -> Result {
    request(
        buf,
        &CmdClose {
            hdr: header(uapi::VIRTIO_MEDIA_CMD_CLOSE),
            session_id: Le32::new(session),
            padding: Le32::new(0),
        },
        &[],
        0,
    )
}

/// Size of a response that is only a header.
pub(crate) const HEADER_RESPONSE_SIZE: usize = size_of::<RespHeader>();

/// Size of an IOCTL command's header (before the payload).
pub(crate) const IOCTL_CMD_SIZE: usize = size_of::<CmdIoctl>();
/// Size of an IOCTL response's header (before the payload).
pub(crate) const IOCTL_RESP_SIZE: usize = size_of::<uapi::RespIoctl>();

/// `VIRTIO_MEDIA_CMD_IOCTL`: the header, then `payload`, `trailer` (the
/// pointed-to arrays that follow the main struct), `sg_entries` and
/// `sg_room` zero bytes (SG entries written once their memory is mapped)
/// when the device reads them.
pub(crate) fn ioctl_request(
    buf: &mut KVec<u8>,
    session: u32,
    code: u32,
    payload: &[u8],
    trailer: &[u8],
    (sg_entries, sg_room): (&[u8], usize),
) -> Result {
    let command = CmdIoctl {
        hdr: header(uapi::VIRTIO_MEDIA_CMD_IOCTL),
        session_id: Le32::new(session),
        code: Le32::new(ioctl_nr(code)),
    };
    match ioctl_direction(code) {
        Direction::ToDevice | Direction::Both => {
            request(buf, &command, &[payload, trailer, sg_entries], sg_room)
        }
        Direction::None | Direction::FromDevice => request(buf, &command, &[], 0),
    }
}

/// Size of the response to an ioctl whose payload and trailer are
/// `payload_len` bytes together.
pub(crate) fn ioctl_response_size(code: u32, payload_len: usize) -> Result<usize> {
    match ioctl_direction(code) {
        Direction::FromDevice | Direction::Both => {
            IOCTL_RESP_SIZE.checked_add(payload_len).ok_or(EINVAL)
        }
        Direction::None | Direction::ToDevice => Ok(IOCTL_RESP_SIZE),
    }
}

/// `VIRTIO_MEDIA_CMD_MMAP` of the buffer plane at `offset`.
pub(crate) fn mmap_request(
    buf: &mut KVec<u8>,
    session: u32,
    writable: bool,
    offset: u64,
) -> Result {
    let flags = if writable {
        uapi::VIRTIO_MEDIA_MMAP_FLAG_RW
    } else {
        0
    };
    request(
        buf,
        &CmdMmap {
            hdr: header(uapi::VIRTIO_MEDIA_CMD_MMAP),
            session_id: Le32::new(session),
            flags: Le32::new(flags),
            offset: Le64::new(offset),
        },
        &[],
        0,
    )
}

/// Size of the MMAP response.
pub(crate) const MMAP_RESPONSE_SIZE: usize = size_of::<RespMmap>();

/// (offset in the shared-memory region, length) of an MMAP response.
pub(crate) fn mmap_response(resp: &[u8]) -> Option<(u64, u64)> {
    let (mmap, _) = RespMmap::from_bytes_copy_prefix(resp)?;
    Some((mmap.addr.get(), mmap.len.get()))
}

/// `VIRTIO_MEDIA_CMD_MUNMAP` of the mapping at shared-memory offset `addr`.
pub(crate) fn munmap_request(buf: &mut KVec<u8>, addr: u64) -> Result {
    request(
        buf,
        &CmdMunmap {
            hdr: header(uapi::VIRTIO_MEDIA_CMD_MUNMAP),
            guest_addr: Le64::new(addr),
        },
        &[],
        0,
    )
}

/// Size of `struct v4l2_buffer` in the 64-bit wire layout.
pub(crate) const BUFFER_SIZE: usize = size_of::<Buffer>();
/// Size of `struct v4l2_plane` in the 64-bit wire layout.
pub(crate) const PLANE_SIZE: usize = size_of::<Plane>();
/// Size of a `virtio_media_sg_entry`.
pub(crate) const SG_ENTRY_SIZE: usize = size_of::<SgEntry>();

/// A `virtio_media_sg_entry` on the wire: device address, length, padding.
pub(crate) fn sg_entry(addr: u64, len: u32) -> [u8; SG_ENTRY_SIZE] {
    let mut entry = [0u8; SG_ENTRY_SIZE];
    entry.copy_from_slice(
        SgEntry {
            start: Le64::new(addr),
            len: Le32::new(len),
            padding: Le32::new(0),
        }
        .as_bytes(),
    );
    entry
}
/// Size of `struct v4l2_event`.
pub(crate) const EVENT_SIZE: usize = size_of::<V4l2Event>();
const EVENT_HEADER_SIZE: usize = size_of::<EventHeader>();
/// Size of the largest event: DQBUF.
pub(crate) const MAX_EVENT_SIZE: usize = EVENT_HEADER_SIZE + BUFFER_SIZE + PLANE_SIZE * MAX_PLANES;

/// An event from the eventq, borrowing the event buffer.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Event<'a> {
    /// The session is broken and closed on the device side.
    Error { session: u32, errno: u32 },
    /// A buffer is done: `struct v4l2_buffer`, then `VIDEO_MAX_PLANES` planes.
    Dqbuf {
        session: u32,
        buffer: &'a [u8],
        planes: &'a [u8],
    },
    /// A V4L2 event: `struct v4l2_event`.
    V4l2 { session: u32, event: &'a [u8] },
}

/// Why an event was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EventError {
    /// Shorter than its type requires.
    Short { kind: u32, len: usize },
    /// Unknown event type.
    UnknownKind(u32),
}

/// Parses the first `len` bytes the device wrote into an event buffer.
pub(crate) fn parse_event(bytes: &[u8]) -> Result<Event<'_>, EventError> {
    let short = |kind| EventError::Short {
        kind,
        len: bytes.len(),
    };
    let (header, body) = EventHeader::from_bytes_copy_prefix(bytes).ok_or(short(u32::MAX))?;
    let (kind, session) = (header.event.get(), header.session_id.get());
    match kind {
        uapi::VIRTIO_MEDIA_EVT_ERROR => {
            let (error, _) = WireError::from_bytes_copy_prefix(bytes).ok_or(short(kind))?;
            Ok(Event::Error {
                session,
                errno: error.errno.get(),
            })
        }
        uapi::VIRTIO_MEDIA_EVT_DQBUF => {
            let buffer = body.get(..BUFFER_SIZE).ok_or(short(kind))?;
            let planes = body
                .get(BUFFER_SIZE..BUFFER_SIZE + PLANE_SIZE * MAX_PLANES)
                .ok_or(short(kind))?;
            Ok(Event::Dqbuf {
                session,
                buffer,
                planes,
            })
        }
        uapi::VIRTIO_MEDIA_EVT_EVENT => Ok(Event::V4l2 {
            session,
            event: body.get(..EVENT_SIZE).ok_or(short(kind))?,
        }),
        other => Err(EventError::UnknownKind(other)),
    }
}

/// Reads the little-endian `u32` at `offset`, if `bytes` holds it.
pub(crate) fn get_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let end = offset.checked_add(4)?;
    Le32::from_bytes_copy(bytes.get(offset..end)?).map(Le32::get)
}

/// Writes `value` at `offset`; `false` if `bytes` is too short.
pub(crate) fn set_u32(bytes: &mut [u8], offset: usize, value: u32) -> bool {
    let Some(end) = offset.checked_add(4) else {
        return false;
    };
    match bytes.get_mut(offset..end) {
        Some(field) => {
            field.copy_from_slice(Le32::new(value).as_bytes());
            true
        }
        None => false,
    }
}

#[kunit_tests(virtio_media_protocol)]
mod tests {
    use super::*;
    use kernel::ioctl::{_IOR, _IOW, _IOWR};

    const V: u32 = b'V' as u32;

    #[test]
    fn sg_entry_layout() {
        let entry = sg_entry(0x1122_3344_5566_7788, 0x99aa_bbcc);
        let start = core::mem::offset_of!(SgEntry, start);
        let len = core::mem::offset_of!(SgEntry, len);
        assert_eq!(
            &entry[start..start + 8],
            &0x1122_3344_5566_7788u64.to_le_bytes()
        );
        assert_eq!(&entry[len..len + 4], &0x99aa_bbccu32.to_le_bytes());
        assert_eq!(&entry[len + 4..], &[0u8; 4]);
    }

    #[test]
    fn ioctl_code_fields() {
        // VIDIOC_G_FMT is _IOWR('V', 4, struct v4l2_format): 0xc0d05604.
        let code = _IOWR::<[u8; 208]>(V, 4);
        assert_eq!(code, 0xc0d0_5604);
        assert_eq!(ioctl_nr(code), 4);
        assert_eq!(ioctl_size(code), 208);
        assert_eq!(ioctl_direction(code), Direction::Both);
        // VIDIOC_STREAMON is _IOW('V', 18, int).
        let code = _IOW::<u32>(V, 18);
        assert_eq!(code, 0x4004_5612);
        assert_eq!(ioctl_direction(code), Direction::ToDevice);
        assert_eq!(
            ioctl_direction(_IOR::<[u8; 104]>(V, 0)),
            Direction::FromDevice
        );
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

    const NO_SG: (&[u8], usize) = (&[], 0);

    /// The request `build` writes into a new buffer.
    fn built(build: impl FnOnce(&mut KVec<u8>) -> Result) -> Result<KVec<u8>> {
        let mut buf = KVec::new();
        build(&mut buf)?;
        Ok(buf)
    }

    #[test]
    fn request_replaces_what_a_reused_buffer_held() {
        // Buffers are reused from command to command: a short request
        // written over a long one is only itself.
        let mut buf = KVec::new();
        ioctl_request(
            &mut buf,
            1,
            _IOWR::<[u8; 208]>(V, 4),
            &[0xaa; 208],
            &[],
            NO_SG,
        )
        .expect("allocation");
        close_request(&mut buf, 5).expect("allocation");
        assert_eq!(
            buf.as_slice(),
            &[2, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn session_commands() {
        let open = built(open_request).expect("allocation");
        assert_eq!(open.as_slice(), &[1, 0, 0, 0, 0, 0, 0, 0]);
        let close = built(|buf| close_request(buf, 0x0102_0304)).expect("allocation");
        assert_eq!(
            close.as_slice(),
            &[2, 0, 0, 0, 0, 0, 0, 0, 4, 3, 2, 1, 0, 0, 0, 0]
        );
        assert_eq!(OPEN_RESPONSE_SIZE, 16);
        assert_eq!(
            open_response_session(&[0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]),
            Some(7)
        );
        assert_eq!(open_response_session(&[0; 10]), None);
    }

    #[test]
    fn ioctl_layout_by_direction() {
        // G_FMT (WR): payload in the request and room for it in the response.
        let g_fmt = _IOWR::<[u8; 208]>(V, 4);
        let req = built(|buf| ioctl_request(buf, 9, g_fmt, &[0xaa; 208], &[], NO_SG))
            .expect("allocation");
        assert_eq!(req.len(), IOCTL_CMD_SIZE + 208);
        assert_eq!(
            &req[..16],
            &[3, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 4, 0, 0, 0]
        );
        assert_eq!(ioctl_response_size(g_fmt, 208), Ok(8 + 208));
        // QBUF (WR) with two planes following the buffer.
        let qbuf = _IOWR::<Buffer>(V, 15);
        let req = built(|buf| {
            ioctl_request(
                buf,
                1,
                qbuf,
                &[0; BUFFER_SIZE],
                &[1; 2 * PLANE_SIZE],
                (&[2; 16], 16),
            )
        })
        .expect("allocation");
        // Then one SG entry given and room for one more.
        let sg = 16 + BUFFER_SIZE + 2 * PLANE_SIZE;
        assert_eq!(req.len(), sg + 32);
        assert_eq!(req[16 + BUFFER_SIZE], 1);
        assert_eq!(
            (req[sg], req[sg + 15], req[sg + 16], req[sg + 31]),
            (2, 2, 0, 0)
        );
        // STREAMON (W): nothing comes back but the header.
        let streamon = _IOW::<u32>(V, 18);
        assert_eq!(
            built(|buf| ioctl_request(buf, 1, streamon, &[1, 0, 0, 0], &[], NO_SG))
                .map(|r| r.len()),
            Ok(20)
        );
        assert_eq!(ioctl_response_size(streamon, 4), Ok(8));
        // QUERYCAP-like R ioctl: no payload sent, all of it comes back.
        let r = _IOR::<[u8; 104]>(V, 0);
        assert_eq!(
            built(|buf| ioctl_request(buf, 1, r, &[0; 104], &[], (&[], 16))).map(|r| r.len()),
            Ok(16)
        );
        assert_eq!(ioctl_response_size(r, 104), Ok(112));
    }

    #[test]
    fn wire_sizes_are_64bit_layout() {
        assert_eq!(BUFFER_SIZE, 88);
        assert_eq!(PLANE_SIZE, 64);
        assert_eq!(EVENT_SIZE, 136);
        assert_eq!(MMAP_RESPONSE_SIZE, 24);
    }

    #[test]
    fn mmap_commands() {
        let req = built(|buf| mmap_request(buf, 3, true, 0x1000)).expect("allocation");
        assert_eq!(req.len(), 24);
        assert_eq!(&req[8..16], &[3, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(&req[16..24], &0x1000u64.to_le_bytes());
        let mut resp = [0u8; 24];
        resp[8..16].copy_from_slice(&0x20_0000u64.to_le_bytes());
        resp[16..24].copy_from_slice(&0x1_0000u64.to_le_bytes());
        assert_eq!(mmap_response(&resp), Some((0x20_0000, 0x1_0000)));
        assert_eq!(mmap_response(&resp[..20]), None);
        let req = built(|buf| munmap_request(buf, 0x20_0000)).expect("allocation");
        assert_eq!(
            &req[..],
            &[5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn event_parsing_and_validation() {
        let mut ev = [0u8; MAX_EVENT_SIZE];
        ev[0] = 1; // DQBUF
        ev[4] = 7;
        ev[8] = 2; // buffer index 2
        match parse_event(&ev) {
            Ok(Event::Dqbuf {
                session,
                buffer,
                planes,
            }) => {
                assert_eq!(session, 7);
                assert_eq!(get_u32(buffer, 0), Some(2));
                assert_eq!(planes.len(), PLANE_SIZE * MAX_PLANES);
            }
            other => panic!("unexpected {:?}", other),
        }
        // A DQBUF cut short is rejected, not read past its end.
        assert_eq!(
            parse_event(&ev[..100]),
            Err(EventError::Short { kind: 1, len: 100 })
        );
        ev[0] = 0; // ERROR
        ev[8] = 5;
        assert_eq!(
            parse_event(&ev[..16]),
            Ok(Event::Error {
                session: 7,
                errno: 5
            })
        );
        ev[0] = 2; // EVENT
        assert!(matches!(
            parse_event(&ev[..8 + EVENT_SIZE]),
            Ok(Event::V4l2 { session: 7, .. })
        ));
        assert!(parse_event(&ev[..8 + EVENT_SIZE - 1]).is_err());
        ev[0] = 9;
        assert_eq!(parse_event(&ev), Err(EventError::UnknownKind(9)));
        assert_eq!(
            parse_event(&ev[..3]),
            Err(EventError::Short {
                kind: u32::MAX,
                len: 3
            })
        );
    }

    #[test]
    fn field_access_is_bounds_checked() {
        let mut b = [0u8; 8];
        assert!(set_u32(&mut b, 4, 0xdead_beef));
        assert_eq!(get_u32(&b, 4), Some(0xdead_beef));
        assert!(!set_u32(&mut b, 5, 1));
        assert!(!set_u32(&mut b, usize::MAX, 1));
        assert_eq!(get_u32(&b, 6), None);
    }

    #[test]
    fn response_header_status() {
        assert_eq!(response_status(&[0; 8]), Ok(()));
        assert_eq!(
            response_status(&[22, 0, 0, 0, 0, 0, 0, 0]),
            Err(ResponseError::Device(22))
        );
        assert_eq!(response_status(&[1, 2]), Err(ResponseError::Short(2)));
        assert_eq!(
            response_status(&[0, 0x10, 0, 0, 0, 0, 0, 0]),
            Err(ResponseError::BadStatus(4096))
        );
        // EFTYPE, the last errno a program may see.
        assert_eq!(
            response_status(&[134, 0, 0, 0, 0, 0, 0, 0]),
            Err(ResponseError::Device(134))
        );
        // Numbers errno.h leaves unassigned.
        for status in [41u8, 58, 135] {
            assert_eq!(
                response_status(&[status, 0, 0, 0, 0, 0, 0, 0]),
                Err(ResponseError::BadStatus(u32::from(status)))
            );
        }
        // ERESTARTSYS, ERESTARTNOINTR, ENOIOCTLCMD: the kernel's own.
        for status in [512u16, 513, 515] {
            let [lo, hi] = status.to_le_bytes();
            assert_eq!(
                response_status(&[lo, hi, 0, 0, 0, 0, 0, 0]),
                Err(ResponseError::BadStatus(u32::from(status)))
            );
        }
    }
}
