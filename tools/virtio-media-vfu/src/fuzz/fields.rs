// SPDX-License-Identifier: GPL-2.0
//! Where the fields a driver trusts sit in responses and events (64-bit
//! V4L2 layouts, as on the wire), and the values worth putting there.

use super::rng::Rng;

/// Command codes (`VIRTIO_MEDIA_CMD_*`).
pub const CMD_OPEN: u32 = 1;
pub const CMD_CLOSE: u32 = 2;
pub const CMD_IOCTL: u32 = 3;
pub const CMD_MMAP: u32 = 4;

/// Event types (`VIRTIO_MEDIA_EVT_*`).
pub const EVT_ERROR: u32 = 0;
pub const EVT_DQBUF: u32 = 1;
pub const EVT_EVENT: u32 = 2;

/// Response and event headers.
pub const HEADER: usize = 8;
/// `struct v4l2_buffer` and `struct v4l2_plane`.
pub const BUFFER_SIZE: usize = 88;
pub const PLANE_SIZE: usize = 64;
pub const MAX_PLANES: usize = 8;
/// A DQBUF event: header, buffer, 8 planes.
pub const DQBUF_EVENT_SIZE: usize = HEADER + BUFFER_SIZE + MAX_PLANES * PLANE_SIZE;
/// An EVENT event: header, `struct v4l2_event`.
pub const V4L2_EVENT_SIZE: usize = 136;
pub const EVENT_EVENT_SIZE: usize = HEADER + V4L2_EVENT_SIZE;
pub const ERROR_EVENT_SIZE: usize = 16;

/// A field: byte offset and width (1, 4 or 8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field(pub usize, pub usize);

/// `struct v4l2_buffer` fields, then plane `p`'s, relative to the buffer.
const BUFFER_FIELDS: &[Field] = &[
    Field(0, 4),  // index
    Field(4, 4),  // type
    Field(8, 4),  // bytesused
    Field(12, 4), // flags
    Field(16, 4), // field
    Field(56, 4), // sequence
    Field(60, 4), // memory
    Field(64, 8), // m (offset, userptr, planes, fd)
    Field(72, 4), // length (plane count for multi-planar)
    Field(80, 4), // request_fd
];
const PLANE_FIELDS: &[Field] = &[
    Field(0, 4),  // bytesused
    Field(4, 4),  // length
    Field(8, 8),  // m (mem_offset, userptr, fd)
    Field(16, 4), // data_offset
];

/// `struct v4l2_format` (either pix or pix_mp), relative to the format.
fn format_fields(out: &mut Vec<Field>, base: usize) {
    for f in [0, 8, 12, 16, 20, 24, 28] {
        out.push(Field(base + f, 4)); // type, width, height, pixelformat, field, ...
    }
    for p in 0..MAX_PLANES {
        out.push(Field(base + 28 + 20 * p, 4)); // plane_fmt[p].sizeimage
        out.push(Field(base + 32 + 20 * p, 4)); // plane_fmt[p].bytesperline
    }
    out.push(Field(base + 188, 1)); // num_planes
}

/// The fields of an ioctl's response payload (after the header) that the
/// driver reads back, by ioctl number; empty for "anywhere".
pub fn ioctl_fields(nr: u32, payload_len: usize) -> Vec<Field> {
    let mut out = Vec::new();
    match nr {
        // G_FMT, S_FMT, TRY_FMT
        4 | 5 | 64 => format_fields(&mut out, 0),
        // REQBUFS: count, type, memory, capabilities, flags
        8 => out.extend([
            Field(0, 4),
            Field(4, 4),
            Field(8, 4),
            Field(12, 4),
            Field(16, 1),
        ]),
        // QUERYBUF, QBUF, PREPARE_BUF: the buffer and its planes
        9 | 15 | 93 => {
            out.extend_from_slice(BUFFER_FIELDS);
            for p in 0..MAX_PLANES {
                out.extend(
                    PLANE_FIELDS
                        .iter()
                        .map(|f| Field(BUFFER_SIZE + p * PLANE_SIZE + f.0, f.1)),
                );
            }
        }
        // CREATE_BUFS: index, count, memory, format, capabilities, flags, max
        92 => {
            out.extend([
                Field(0, 4),
                Field(4, 4),
                Field(8, 4),
                Field(224, 4),
                Field(228, 4),
                Field(232, 4),
            ]);
            format_fields(&mut out, 16);
        }
        // G/S/TRY_EXT_CTRLS: which, count, error_idx, request_fd, then the
        // controls (id, size, value or ptr), 20 bytes each
        71..=73 => {
            out.extend([
                Field(0, 4),
                Field(4, 4),
                Field(8, 4),
                Field(12, 4),
                Field(24, 8),
            ]);
            let mut c = 32;
            while c + 20 <= payload_len {
                out.extend([Field(c, 4), Field(c + 4, 4), Field(c + 12, 8)]);
                c += 20;
            }
        }
        // QUERY_EXT_CTRL: id, type, min, max, step, default, flags, elem_size,
        // elems, nr_of_dims, dims
        103 => out.extend(
            [0, 4, 40, 48, 56, 64, 72, 76, 80, 84, 88, 92]
                .iter()
                .map(|&o| Field(o, if (40..72).contains(&o) { 8 } else { 4 })),
        ),
        // REMOVE_BUFS: index, count, type
        104 => out.extend([Field(0, 4), Field(4, 4), Field(8, 4)]),
        // G/S_SELECTION: type, target, flags, rectangle
        94 | 95 => out.extend((0..7).map(|i| Field(4 * i, 4))),
        _ => {}
    }
    out.retain(|f| f.0 + f.1 <= payload_len);
    out
}

/// The fields of a DQBUF event's buffer and planes, relative to the event.
pub fn dqbuf_event_fields() -> Vec<Field> {
    let mut out: Vec<Field> = BUFFER_FIELDS
        .iter()
        .map(|f| Field(HEADER + f.0, f.1))
        .collect();
    for p in 0..MAX_PLANES {
        out.extend(
            PLANE_FIELDS
                .iter()
                .map(|f| Field(HEADER + BUFFER_SIZE + p * PLANE_SIZE + f.0, f.1)),
        );
    }
    out
}

/// `struct v4l2_event`: type, the first words of `u`, pending, sequence, id.
pub fn v4l2_event_fields() -> Vec<Field> {
    [0, 8, 12, 16, 72, 76, 96]
        .iter()
        .map(|&o| Field(HEADER + o, 4))
        .collect()
}

/// A value for `field`: a boundary, a neighbour of the old value, or noise.
pub fn boundary_value(rng: &mut Rng, width: usize, old: u64) -> u64 {
    const SMALL: &[u64] = &[
        0, 1, 2, 3, 7, 8, 9, 16, 31, 32, 33, 63, 64, 255, 256, 4095, 4096,
    ];
    const WIDE: &[u64] = &[
        0x7fff,
        0x8000,
        0xffff,
        0x1_0000,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_fffe,
        0xffff_ffff,
        0x1_0000_0000,
        0x7fff_ffff_ffff_ffff,
        0x8000_0000_0000_0000,
        u64::MAX,
    ];
    let v = match rng.below(6) {
        0 | 1 => rng.pick(SMALL),
        2 | 3 => rng.pick(WIDE),
        4 => old
            .wrapping_add(rng.pick(&[1, 2, 4096]) as u64)
            .wrapping_sub(if rng.below(2) == 0 { 0 } else { 2 }),
        _ => rng.next_u64(),
    };
    match width {
        1 => v & 0xff,
        4 => v & 0xffff_ffff,
        _ => v,
    }
}

pub fn read(bytes: &[u8], f: Field) -> Option<u64> {
    let b = bytes.get(f.0..f.0.checked_add(f.1)?)?;
    let mut w = [0u8; 8];
    w[..f.1].copy_from_slice(b);
    Some(u64::from_le_bytes(w))
}

pub fn write(bytes: &mut [u8], f: Field, v: u64) -> bool {
    match f.0.checked_add(f.1).and_then(|end| bytes.get_mut(f.0..end)) {
        Some(b) => {
            b.copy_from_slice(&v.to_le_bytes()[..f.1]);
            true
        }
        None => false,
    }
}

pub fn le32(b: &[u8], o: usize) -> Option<u32> {
    read(b, Field(o, 4)).map(|v| v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_round_trip_and_bounds() {
        let mut b = vec![0u8; 12];
        assert!(write(&mut b, Field(4, 8), 0x0102_0304_0506_0708));
        assert_eq!(read(&b, Field(4, 8)), Some(0x0102_0304_0506_0708));
        assert_eq!(read(&b, Field(4, 4)), Some(0x0506_0708));
        assert!(write(&mut b, Field(11, 1), 0xff));
        assert!(!write(&mut b, Field(10, 4), 1), "past the end");
        assert_eq!(read(&b, Field(9, 4)), None);
        assert_eq!(read(&b, Field(usize::MAX, 4)), None, "offset overflow");
    }

    #[test]
    fn layouts_fit_their_structs() {
        // v4l2_format is 208 bytes, v4l2_create_buffers 256, QUERY_EXT_CTRL 232.
        assert!(ioctl_fields(4, 208).iter().all(|f| f.0 + f.1 <= 208));
        assert_eq!(ioctl_fields(4, 208).len(), 7 + 16 + 1);
        assert!(
            ioctl_fields(92, 256).contains(&Field(16 + 188, 1)),
            "CREATE_BUFS num_planes"
        );
        assert!(ioctl_fields(103, 232).iter().all(|f| f.0 + f.1 <= 232));
        // Only what fits a short payload.
        assert!(ioctl_fields(15, BUFFER_SIZE)
            .iter()
            .all(|f| f.0 < BUFFER_SIZE));
        // Two controls after the 32-byte v4l2_ext_controls.
        assert_eq!(ioctl_fields(72, 72).len(), 5 + 6);
        assert!(dqbuf_event_fields()
            .iter()
            .all(|f| f.0 + f.1 <= DQBUF_EVENT_SIZE));
        assert!(v4l2_event_fields()
            .iter()
            .all(|f| f.0 + f.1 <= EVENT_EVENT_SIZE));
    }

    #[test]
    fn boundary_values_fit_their_width() {
        let mut r = Rng::new(3);
        for _ in 0..1000 {
            assert!(boundary_value(&mut r, 1, 5) <= 0xff);
            assert!(boundary_value(&mut r, 4, u64::MAX) <= 0xffff_ffff);
        }
    }
}
