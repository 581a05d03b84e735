// SPDX-License-Identifier: GPL-2.0
//! What the `decoder` and `encoder` backends share: the coded and raw
//! formats, how a decoded picture is laid out in a CAPTURE buffer, the
//! timestamp tokens that follow a frame through the codec, and the
//! controls both have.

use std::collections::VecDeque;

use v4l2r::bindings;

use super::common::*;
use crate::avcodec::{Coded, Picture, MAX_PIXELS};

pub const FMT_H264: u32 = fourcc(b"H264");
pub const FMT_HEVC: u32 = fourcc(b"HEVC");
pub const FMT_VP8: u32 = fourcc(b"VP80");
pub const FMT_VP9: u32 = fourcc(b"VP90");

/// Raw formats on the decoder's CAPTURE and the encoder's OUTPUT queue,
/// the default first. NM12 and YM12 (one memory plane per colour plane)
/// only on the decoder.
pub const RAW_FORMATS: &[u32] = &[FMT_NV12, FMT_YUV420, FMT_NV12M, FMT_YUV420M];

/// Smallest and largest frame sizes, and the size step (4:2:0 needs even
/// sizes).
pub const MIN_SIZE: u32 = 16;
pub const MAX_SIZE: u32 = 4096;
pub const SIZE_STEP: u32 = 2;

pub fn coded_fourcc(c: Coded) -> u32 {
    match c {
        Coded::H264 => FMT_H264,
        Coded::Hevc => FMT_HEVC,
        Coded::Vp8 => FMT_VP8,
        Coded::Vp9 => FMT_VP9,
    }
}

pub fn coded_from_fourcc(f: u32) -> Option<Coded> {
    Coded::ALL.into_iter().find(|&c| coded_fourcc(c) == f)
}

pub fn description(f: u32) -> &'static str {
    match f {
        FMT_H264 => "H.264",
        FMT_HEVC => "HEVC",
        FMT_VP8 => "VP8",
        FMT_VP9 => "VP9",
        _ => format_description(f),
    }
}

pub fn fmtdesc(
    queue: v4l2r::QueueType,
    index: u32,
    fourcc: u32,
    flags: u32,
) -> bindings::v4l2_fmtdesc {
    let mut d = bindings::v4l2_fmtdesc {
        index,
        type_: queue as u32,
        pixelformat: fourcc,
        flags,
        ..Default::default()
    };
    for (i, b) in description(fourcc).bytes().take(31).enumerate() {
        d.description[i] = b;
    }
    d
}

/// A frame size clamped into [MIN_SIZE, MAX_SIZE] and rounded up to even.
pub fn clamp_size(w: u32, h: u32) -> (u32, u32) {
    let fix = |v: u32| {
        v.clamp(MIN_SIZE, MAX_SIZE)
            .next_multiple_of(SIZE_STEP)
            .min(MAX_SIZE)
    };
    (fix(w), fix(h))
}

/// Layout of a raw frame of `fourcc` at a frame-buffer size made from
/// `width`x`height` by `clamp_size`.
pub fn raw_layout(fourcc: u32, width: u32, height: u32) -> Format {
    let (w, h) = clamp_size(width, height);
    let fourcc = if RAW_FORMATS.contains(&fourcc) {
        fourcc
    } else {
        RAW_FORMATS[0]
    };
    layout(fourcc, w, h).unwrap_or(Format {
        fourcc,
        width: w,
        height: h,
        planes: vec![],
    })
}

/// Format of a queue carrying a coded format: one plane of `sizeimage`.
pub fn coded_layout(fourcc: u32, width: u32, height: u32, sizeimage: u32) -> Format {
    Format {
        fourcc,
        width,
        height,
        planes: vec![PlaneLayout {
            bytesperline: 0,
            sizeimage,
        }],
    }
}

/// Default size of a coded buffer for frames of `width`x`height`: half a
/// raw 4:2:0 frame, at least 1 MiB, rounded up to 4 KiB. A request is
/// taken if it is between 4 KiB and 32 MiB.
pub fn coded_sizeimage(width: u32, height: u32, requested: u32) -> u32 {
    const MIN: u32 = 4 << 10;
    const MAX: u32 = 32 << 20;
    if (MIN..=MAX).contains(&requested) {
        return requested.next_multiple_of(MIN);
    }
    let raw = u64::from(width) * u64::from(height) * 3 / 2;
    let size = (raw / 2).clamp(1 << 20, u64::from(MAX));
    u32::try_from(size).unwrap_or(MAX).next_multiple_of(MIN)
}

/// Lays out `pic` (I420) as the memory planes of `fmt`, whose frame size
/// is at least the picture's. Rows and columns of `fmt` beyond the picture
/// are left black. None if `fmt` cannot hold the picture.
pub fn picture_planes(pic: &Picture, fmt: &Format) -> Option<Vec<Vec<u8>>> {
    let (pw, ph) = (pic.width() as usize, pic.height() as usize);
    let (fw, fh) = (fmt.width as usize, fmt.height as usize);
    if pw > fw
        || ph > fh
        || u64::from(pic.width()) * u64::from(pic.height()) > u64::from(MAX_PIXELS)
    {
        return None;
    }
    let (pcw, pch) = (pw.div_ceil(2), ph.div_ceil(2));
    let (fcw, fch) = (fw / 2, fh / 2);
    let bpl = fmt.planes.first()?.bytesperline as usize;
    if bpl < fw {
        return None;
    }
    let mut y = vec![0u8; bpl * fh];
    let mut u = vec![128u8; fcw * fch];
    let mut v = vec![128u8; fcw * fch];
    for r in 0..ph {
        y.get_mut(r * bpl..r * bpl + pw)?
            .copy_from_slice(pic.row(0, r, pw)?);
    }
    for r in 0..pch.min(fch) {
        u.get_mut(r * fcw..r * fcw + pcw)?
            .copy_from_slice(pic.row(1, r, pcw)?);
        v.get_mut(r * fcw..r * fcw + pcw)?
            .copy_from_slice(pic.row(2, r, pcw)?);
    }
    let interleave = || {
        let mut uv = vec![128u8; fcw * 2 * fch];
        for (i, pair) in uv.chunks_exact_mut(2).enumerate() {
            pair[0] = u[i];
            pair[1] = v[i];
        }
        uv
    };
    let planes = match fmt.fourcc {
        FMT_NV12 => {
            let mut p = y;
            p.extend_from_slice(&interleave());
            vec![p]
        }
        FMT_NV12M => {
            let uv = interleave();
            vec![y, uv]
        }
        FMT_YUV420 => {
            let mut p = y;
            p.extend_from_slice(&u);
            p.extend_from_slice(&v);
            vec![p]
        }
        FMT_YUV420M => vec![y, u, v],
        _ => return None,
    };
    let fits = planes.len() == fmt.planes.len()
        && planes
            .iter()
            .zip(&fmt.planes)
            .all(|(p, l)| p.len() <= l.sizeimage as usize);
    fits.then_some(planes)
}

/// Stands for OUTPUT buffer timestamps inside the codec: libavcodec gets
/// a counter as pts, and the timestamp the guest gave comes back through
/// this table, whatever values the guest used.
#[derive(Default)]
pub struct Timestamps {
    next: i64,
    table: VecDeque<(i64, bindings::timeval)>,
}

impl Timestamps {
    /// How many timestamps are remembered; a codec delays frames by far
    /// fewer than this.
    const KEEP: usize = 256;

    pub fn token(&mut self, ts: bindings::timeval) -> i64 {
        let t = self.next;
        self.next = self.next.wrapping_add(1);
        if self.table.len() == Self::KEEP {
            self.table.pop_front();
        }
        self.table.push_back((t, ts));
        t
    }

    /// The timestamp of `token`; for a frame the codec could not tie to
    /// its input, and for empty LAST buffers, the latest one given (a
    /// TIMESTAMP_COPY buffer must not come back with no timestamp).
    pub fn lookup(&self, token: Option<i64>) -> bindings::timeval {
        token
            .and_then(|t| self.table.iter().rev().find(|(k, _)| *k == t))
            .map(|(_, ts)| *ts)
            .unwrap_or_else(|| self.latest())
    }

    pub fn latest(&self) -> bindings::timeval {
        self.table.back().map(|(_, ts)| *ts).unwrap_or_default()
    }
}

/// Control ids shared by the codec backends.
pub const CID_MIN_BUFFERS_FOR_CAPTURE: u32 = 0x0098_0927;
pub const CID_MIN_BUFFERS_FOR_OUTPUT: u32 = 0x0098_0928;

pub fn class_control(id: u32, name: &'static str) -> CtrlDef {
    CtrlDef {
        id,
        name,
        type_: CTRL_TYPE_CTRL_CLASS,
        min: 0,
        max: 0,
        step: 0,
        def: 0,
        flags: CTRL_FLAG_READ_ONLY | CTRL_FLAG_WRITE_ONLY,
        elems: 0,
        menu: &[],
    }
}

pub fn read_only_int(id: u32, name: &'static str, min: i64, max: i64, def: i64) -> CtrlDef {
    CtrlDef {
        id,
        name,
        type_: CTRL_TYPE_INTEGER,
        min,
        max,
        step: 1,
        def,
        flags: CTRL_FLAG_READ_ONLY | CTRL_FLAG_VOLATILE,
        elems: 0,
        menu: &[],
    }
}

/// A `v4l2_event` of `type_` (EOS, SOURCE_CHANGE with RESOLUTION).
pub fn event(type_: u32) -> bindings::v4l2_event {
    let mut ev = bindings::v4l2_event {
        type_,
        ..Default::default()
    };
    if type_ == bindings::V4L2_EVENT_SOURCE_CHANGE {
        ev.u.src_change.changes = bindings::V4L2_EVENT_SRC_CH_RESOLUTION;
    }
    ev
}

/// Stepwise frame sizes for every format of the codec backends.
pub fn framesizes(index: u32, pixel_format: u32) -> IoctlResult<bindings::v4l2_frmsizeenum> {
    if index != 0 {
        return Err(libc::EINVAL);
    }
    Ok(bindings::v4l2_frmsizeenum {
        index,
        pixel_format,
        type_: bindings::v4l2_frmsizetypes_V4L2_FRMSIZE_TYPE_STEPWISE,
        __bindgen_anon_1: bindings::v4l2_frmsizeenum__bindgen_ty_1 {
            stepwise: bindings::v4l2_frmsize_stepwise {
                min_width: MIN_SIZE,
                max_width: MAX_SIZE,
                step_width: SIZE_STEP,
                min_height: MIN_SIZE,
                max_height: MAX_SIZE,
                step_height: SIZE_STEP,
            },
        },
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_clamped_and_even() {
        assert_eq!(clamp_size(0, 0), (16, 16));
        assert_eq!(clamp_size(1919, 1081), (1920, 1082));
        assert_eq!(clamp_size(u32::MAX, 5000), (4096, 4096));
        let f = raw_layout(FMT_NV12, 1920, 1080);
        assert_eq!(f.planes[0].sizeimage, 1920 * 1080 * 3 / 2);
        assert_eq!(raw_layout(fourcc(b"XXXX"), 64, 64).fourcc, FMT_NV12);
    }

    #[test]
    fn coded_sizes() {
        assert_eq!(coded_sizeimage(1920, 1080, 0), 1_556_480);
        assert_eq!(coded_sizeimage(320, 240, 0), 1 << 20);
        assert_eq!(coded_sizeimage(320, 240, 5000), 8192);
        assert_eq!(coded_sizeimage(320, 240, u32::MAX), 1 << 20);
    }

    #[test]
    fn timestamps_come_back_by_token() {
        let mut t = Timestamps::default();
        let a = t.token(bindings::timeval {
            tv_sec: -5,
            tv_usec: 7,
        });
        let b = t.token(bindings::timeval {
            tv_sec: i64::MAX,
            tv_usec: 0,
        });
        assert_eq!(t.lookup(Some(b)).tv_sec, i64::MAX);
        assert_eq!(t.lookup(Some(a)).tv_usec, 7);
        assert_eq!(t.lookup(None).tv_sec, i64::MAX, "unknown: the latest");
        for _ in 0..300 {
            t.token(Default::default());
        }
        assert_eq!(t.lookup(Some(a)).tv_usec, 0, "forgotten after KEEP tokens");
        assert_eq!(Timestamps::default().lookup(Some(0)).tv_sec, 0);
    }
}
