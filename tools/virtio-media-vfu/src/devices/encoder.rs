// SPDX-License-Identifier: GPL-2.0
//! `--backend encoder`: a V4L2 stateful video encoder
//! (`Documentation/userspace-api/media/v4l/dev-encoder.rst`) on the
//! multi-planar mem2mem API: raw NV12, YU12, NM12 or YM12 frames on
//! OUTPUT, H.264 on CAPTURE, encoded by libx264 through libavcodec
//! (`crate::avcodec::Encoder`).
//!
//! Encoding runs inside the ioctl that makes it possible, once both queues
//! stream. Each frame gives one access unit (no B-frames, x264's
//! `zerolatency`), which waits in `ready` for a CAPTURE buffer; an `Eos`
//! marker there ends a drain with a LAST buffer and V4L2_EVENT_EOS.

use std::collections::VecDeque;
use std::io::Result as IoResult;

use v4l2r::bindings;
use v4l2r::ioctl::{
    BufferFlags, EventType, MemoryConsistency, SelectionFlags, SelectionTarget, SelectionType,
};
use v4l2r::ioctl::{SubscribeEventFlags, V4l2Buffer};
use v4l2r::memory::MemoryType;
use v4l2r::QueueType;
use virtio_media::io::{ReadFromDescriptorChain, WriteToDescriptorChain};
use virtio_media::ioctl::{virtio_media_dispatch_ioctl, VirtioMediaIoctlHandler};
use virtio_media::protocol::{DequeueBufferEvent, SgEntry, V4l2Event, V4l2Ioctl};
use virtio_media::{VirtioMediaDevice, VirtioMediaDeviceSession, VirtioMediaEventQueue};

use super::capture::{query_ioctls, subscribe, unsupported_ioctls, which_raw};
use super::codec::*;
use super::common::*;
use super::m2m::Colorimetry;
use crate::avcodec::{EncodedUnit, Encoder, EncoderParams, H264Profile, RateControl};

pub const SRC: QueueType = QueueType::VideoOutputMplane;
pub const DST: QueueType = QueueType::VideoCaptureMplane;

pub const ENC_CMD_START: u32 = 0;
pub const ENC_CMD_STOP: u32 = 1;

/// Access units encoded ahead of the CAPTURE queue at most.
const READY_LIMIT: usize = 2;

const FMT_FLAG_COMPRESSED: u32 = 0x0001;

pub const CID_CODEC_CLASS: u32 = 0x0099_0001;
pub const CID_GOP_SIZE: u32 = 0x0099_09cb;
pub const CID_BITRATE_MODE: u32 = 0x0099_09ce;
pub const CID_BITRATE: u32 = 0x0099_09cf;
pub const CID_FRAME_RC_ENABLE: u32 = 0x0099_09d7;
pub const CID_HEADER_MODE: u32 = 0x0099_09d8;
pub const CID_FORCE_KEY_FRAME: u32 = 0x0099_09e5;
pub const CID_H264_I_FRAME_QP: u32 = 0x0099_0a5e;
pub const CID_H264_LEVEL: u32 = 0x0099_0a67;
pub const CID_H264_PROFILE: u32 = 0x0099_0a6b;

/// Controls that shape the stream from its first frame: refused (EBUSY)
/// while CAPTURE streams, like controls a V4L2 driver grabs.
const STREAM_CONTROLS: &[u32] = &[
    CID_GOP_SIZE,
    CID_BITRATE_MODE,
    CID_FRAME_RC_ENABLE,
    CID_H264_I_FRAME_QP,
    CID_H264_LEVEL,
    CID_H264_PROFILE,
];

/// `level_idc` of the V4L2 H.264 level menu items 1.0 ... 5.1.
const LEVEL_IDC: [i32; 16] = [
    10, 9, 11, 12, 13, 20, 21, 22, 30, 31, 32, 40, 41, 42, 50, 51,
];

pub const DEFAULT_BITRATE: i64 = 10_000_000;

fn controls() -> Controls {
    let int = |id, name, min, max, def| CtrlDef {
        id,
        name,
        type_: CTRL_TYPE_INTEGER,
        min,
        max,
        step: 1,
        def,
        flags: 0,
        elems: 0,
        menu: &[],
    };
    let menu = |id, name, max, def, menu| CtrlDef {
        id,
        name,
        type_: CTRL_TYPE_MENU,
        min: 0,
        max,
        step: 1,
        def,
        flags: 0,
        elems: 0,
        menu,
    };
    Controls::new(vec![
        class_control(CID_USER_CLASS, "User Controls"),
        read_only_int(
            CID_MIN_BUFFERS_FOR_OUTPUT,
            "Min Number of Output Buffers",
            1,
            32,
            1,
        ),
        class_control(CID_CODEC_CLASS, "Codec Controls"),
        int(CID_GOP_SIZE, "Video GOP Size", 1, 1000, 30),
        menu(
            CID_BITRATE_MODE,
            "Video Bitrate Mode",
            1,
            0,
            &["Variable Bitrate", "Constant Bitrate"],
        ),
        int(
            CID_BITRATE,
            "Video Bitrate",
            10_000,
            100_000_000,
            DEFAULT_BITRATE,
        ),
        CtrlDef {
            type_: CTRL_TYPE_BOOLEAN,
            ..int(
                CID_FRAME_RC_ENABLE,
                "Frame Level Rate Control Enable",
                0,
                1,
                1,
            )
        },
        // SPS and PPS always come with the first frame (and every IDR).
        menu(
            CID_HEADER_MODE,
            "Sequence Header Mode",
            1,
            1,
            &["", "Joined With 1st Frame"],
        ),
        CtrlDef {
            type_: CTRL_TYPE_BUTTON,
            flags: CTRL_FLAG_WRITE_ONLY | CTRL_FLAG_EXECUTE_ON_WRITE,
            step: 0,
            ..int(CID_FORCE_KEY_FRAME, "Force Key Frame", 0, 0, 0)
        },
        int(CID_H264_I_FRAME_QP, "H264 I-Frame QP Value", 0, 51, 23),
        menu(
            CID_H264_LEVEL,
            "H264 Level",
            15,
            12,
            &[
                "1", "1b", "1.1", "1.2", "1.3", "2", "2.1", "2.2", "3", "3.1", "3.2", "4", "4.1",
                "4.2", "5", "5.1",
            ],
        ),
        // No Extended profile: x264 has none.
        menu(
            CID_H264_PROFILE,
            "H264 Profile",
            4,
            4,
            &["Baseline", "Constrained Baseline", "Main", "", "High"],
        ),
    ])
}

enum Item {
    Unit(EncodedUnit),
    Eos,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    None,
    /// OUTPUT buffers queued before STOP still to encode.
    Inputs(usize),
    /// The encoder was flushed: `Eos` is in `ready`.
    Flushed,
}

pub struct EncSession {
    pub id: u32,
    /// OUTPUT format (raw source frames).
    pub raw: Format,
    /// CAPTURE format (H.264); its size is the crop rectangle's.
    pub coded: Format,
    /// The part of the source frames that is encoded (OUTPUT CROP).
    pub crop: bindings::v4l2_rect,
    /// Frame interval (numerator, denominator), for rate control.
    pub interval: (u32, u32),
    /// Colorimetry set on OUTPUT, reported on both queues.
    pub col: Colorimetry,
    pub src: BufQueue,
    pub dst: BufQueue,
    pub ctrls: Controls,
    enc: Option<Encoder>,
    ready: VecDeque<Item>,
    drain: Drain,
    stopped: bool,
    force_key: bool,
    timestamps: Timestamps,
}

impl VirtioMediaDeviceSession for EncSession {
    fn poll_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

impl EncSession {
    fn q(&self, queue: QueueType) -> IoctlResult<&BufQueue> {
        match queue {
            SRC => Ok(&self.src),
            DST => Ok(&self.dst),
            _ => Err(libc::EINVAL),
        }
    }

    fn q_mut(&mut self, queue: QueueType) -> IoctlResult<&mut BufQueue> {
        match queue {
            SRC => Ok(&mut self.src),
            DST => Ok(&mut self.dst),
            _ => Err(libc::EINVAL),
        }
    }

    fn full_rect(&self) -> bindings::v4l2_rect {
        bindings::v4l2_rect {
            left: 0,
            top: 0,
            width: self.raw.width,
            height: self.raw.height,
        }
    }

    /// The CAPTURE format follows the crop rectangle.
    fn update_coded(&mut self, requested_size: u32) {
        let (w, h) = (self.crop.width, self.crop.height);
        let size = coded_sizeimage(w, h, requested_size);
        self.coded = coded_layout(FMT_H264, w, h, size);
    }

    /// What libx264 is opened with, from the formats and controls.
    pub fn params(&self) -> EncoderParams {
        let c = &self.ctrls;
        let rate_control = if c.int(CID_FRAME_RC_ENABLE) == 0 {
            RateControl::ConstantQp(c.int(CID_H264_I_FRAME_QP).clamp(0, 51) as u32)
        } else if c.int(CID_BITRATE_MODE) == 1 {
            RateControl::Cbr
        } else {
            RateControl::Vbr
        };
        let profile = match c.int(CID_H264_PROFILE) {
            0 => H264Profile::Baseline,
            1 => H264Profile::ConstrainedBaseline,
            2 => H264Profile::Main,
            _ => H264Profile::High,
        };
        EncoderParams {
            width: self.crop.width,
            height: self.crop.height,
            nv12: matches!(self.raw.fourcc, FMT_NV12 | FMT_NV12M),
            interval: self.interval,
            bitrate: u32::try_from(c.int(CID_BITRATE)).unwrap_or(DEFAULT_BITRATE as u32),
            rate_control,
            gop: u32::try_from(c.int(CID_GOP_SIZE)).unwrap_or(30),
            profile,
            level_idc: usize::try_from(c.int(CID_H264_LEVEL))
                .ok()
                .and_then(|i| LEVEL_IDC.get(i))
                .copied()
                .unwrap_or(41),
        }
    }

    fn units_ready(&self) -> usize {
        self.ready
            .iter()
            .filter(|i| matches!(i, Item::Unit(_)))
            .count()
    }
}

pub struct EncoderDevice {
    pub ctx: DevCtx,
}

impl EncoderDevice {
    pub fn new(ctx: DevCtx) -> Self {
        EncoderDevice { ctx }
    }

    fn emit(&mut self, session: u32, buf: V4l2Buffer) {
        self.ctx
            .events
            .send_event(V4l2Event::DequeueBuffer(DequeueBufferEvent::new(
                session, buf,
            )));
    }

    fn process(&mut self, s: &mut EncSession) -> IoctlResult<()> {
        self.encode(s)?;
        self.output(s)
    }

    fn encode(&mut self, s: &mut EncSession) -> IoctlResult<()> {
        while s.src.streaming && s.dst.streaming && !s.stopped && s.units_ready() < READY_LIMIT {
            match s.drain {
                Drain::Inputs(0) | Drain::Flushed => break,
                Drain::None | Drain::Inputs(_) => {}
            }
            let Some(idx) = s.src.queued.pop_front() else {
                break;
            };
            let ok = self.encode_buffer(s, idx);
            let used: Vec<u32> = (0..s.src.plane_sizes.len())
                .map(|p| s.src.bytesused(idx, p))
                .collect();
            let flags = if ok {
                BufferFlags::empty()
            } else {
                BufferFlags::ERROR
            };
            let b = s.src.complete(idx, &used, flags)?;
            self.emit(s.id, b);
            if let Drain::Inputs(n) = s.drain {
                s.drain = Drain::Inputs(n.saturating_sub(1));
            }
        }
        if s.drain == Drain::Inputs(0) {
            self.flush(s);
        }
        Ok(())
    }

    /// Encodes OUTPUT buffer `idx`; false if it could not be.
    fn encode_buffer(&mut self, s: &mut EncSession, idx: usize) -> bool {
        let mut planes = vec![];
        for (p, layout) in s.raw.planes.iter().enumerate() {
            let used = s.src.bytesused(idx, p);
            if used < layout.sizeimage {
                log::warn!(
                    "encoder session {}: OUTPUT buffer {idx} plane {p} holds {used} of {} bytes",
                    s.id,
                    layout.sizeimage
                );
                return false;
            }
            match s
                .src
                .read_plane(&self.ctx, idx, p, layout.sizeimage as usize)
            {
                Ok(d) => planes.push(d),
                Err(e) => {
                    log::warn!(
                        "encoder session {}: cannot read OUTPUT buffer {idx} (errno {e})",
                        s.id
                    );
                    return false;
                }
            }
        }
        let Some(source) = crop_planes(&s.raw, &planes, &s.crop) else {
            return false;
        };
        let ts = s
            .src
            .bufs
            .get(idx)
            .map(|b| b.raw.timestamp)
            .unwrap_or_default();
        let token = s.timestamps.token(ts);
        if s.enc.is_none() {
            match Encoder::new(s.params()) {
                Ok(e) => s.enc = Some(e),
                Err(e) => {
                    log::error!("encoder session {}: cannot open libx264: {}", s.id, e.0);
                    return false;
                }
            }
        }
        let bitrate = u32::try_from(s.ctrls.int(CID_BITRATE)).unwrap_or(DEFAULT_BITRATE as u32);
        let Some(enc) = s.enc.as_mut() else {
            return false;
        };
        enc.set_bitrate(bitrate);
        let mut units = vec![];
        let key = std::mem::take(&mut s.force_key);
        let res = enc.encode(&source, token, key, &mut units);
        s.ready.extend(units.into_iter().map(Item::Unit));
        match res {
            Ok(()) => true,
            Err(e) => {
                log::warn!("encoder session {}: OUTPUT buffer {idx}: {}", s.id, e.0);
                false
            }
        }
    }

    /// End of a drain: what x264 still holds comes out, then `Eos`. The
    /// next frame opens a new encoder (a new IDR with SPS and PPS).
    fn flush(&mut self, s: &mut EncSession) {
        if let Some(mut enc) = s.enc.take() {
            let mut units = vec![];
            if let Err(e) = enc.drain(&mut units) {
                log::warn!("encoder session {}: drain: {}", s.id, e.0);
            }
            s.ready.extend(units.into_iter().map(Item::Unit));
        }
        s.ready.push_back(Item::Eos);
        s.drain = Drain::Flushed;
    }

    fn output(&mut self, s: &mut EncSession) -> IoctlResult<()> {
        while s.dst.streaming && !s.ready.is_empty() {
            let Some(idx) = s.dst.queued.pop_front() else {
                break;
            };
            match s.ready.pop_front() {
                Some(Item::Unit(unit)) if matches!(s.ready.front(), Some(Item::Eos)) => {
                    s.ready.pop_front();
                    self.finish_drain(s, idx, Some(unit))?;
                }
                Some(Item::Unit(unit)) => self.return_unit(s, idx, &unit, BufferFlags::empty())?,
                // A drain with nothing left to return: an empty LAST buffer.
                Some(Item::Eos) | None => self.finish_drain(s, idx, None)?,
            }
        }
        Ok(())
    }

    fn finish_drain(
        &mut self,
        s: &mut EncSession,
        idx: usize,
        unit: Option<EncodedUnit>,
    ) -> IoctlResult<()> {
        // EOS goes before the LAST buffer, as kernel drivers queue it: a
        // client that sees LAST finds the event pending (v4l2-compliance
        // checks this).
        if self
            .ctx
            .subscribed(s.id, bindings::V4L2_EVENT_EOS, 0)
            .is_some()
        {
            self.ctx.send_event(s.id, event(bindings::V4L2_EVENT_EOS));
        }
        match unit {
            Some(u) => self.return_unit(s, idx, &u, BufferFlags::LAST)?,
            None => {
                let ts = Some(s.timestamps.latest());
                let b = s.dst.complete_ts(idx, &[0], BufferFlags::LAST, ts)?;
                self.emit(s.id, b);
            }
        }
        s.drain = Drain::None;
        s.stopped = true;
        log::debug!("encoder session {}: drain complete", s.id);
        Ok(())
    }

    fn return_unit(
        &mut self,
        s: &mut EncSession,
        idx: usize,
        unit: &EncodedUnit,
        extra: BufferFlags,
    ) -> IoctlResult<()> {
        let mut flags = extra;
        let mut used = 0;
        if unit.data.len() > s.dst.plane_len(idx, 0) as usize
            || s.dst.write_plane(&self.ctx, idx, 0, &unit.data).is_err()
        {
            log::warn!(
                "encoder session {}: a {}-byte unit does not fit CAPTURE buffer {idx}",
                s.id,
                unit.data.len()
            );
            flags |= BufferFlags::ERROR;
        } else {
            used = unit.data.len() as u32;
            flags |= if unit.keyframe {
                BufferFlags::KEYFRAME
            } else {
                BufferFlags::PFRAME
            };
        }
        let ts = s.timestamps.lookup(unit.token);
        let b = s.dst.complete_ts(idx, &[used], flags, Some(ts))?;
        self.emit(s.id, b);
        Ok(())
    }

    fn check_enc_cmd(cmd: &mut bindings::v4l2_encoder_cmd) -> IoctlResult<()> {
        match cmd.cmd {
            ENC_CMD_STOP | ENC_CMD_START => {
                cmd.flags = 0;
                Ok(())
            }
            _ => Err(libc::EINVAL),
        }
    }

    fn raw_format(f: &bindings::v4l2_format) -> Format {
        let (fourcc, w, h) = fmt_request(SRC, f);
        raw_layout(fourcc, w, h)
    }

    /// EBUSY for a stream-shaping control while CAPTURE streams.
    fn check_busy(s: &EncSession, ids: impl IntoIterator<Item = u32>) -> IoctlResult<()> {
        if s.dst.streaming && ids.into_iter().any(|id| STREAM_CONTROLS.contains(&id)) {
            return Err(libc::EBUSY);
        }
        Ok(())
    }
}

/// Planes of the crop rectangle of a source frame in `raw` (Y, then UV
/// or U and V), each with its stride, as `Encoder::encode` takes them.
fn crop_planes<'a>(
    raw: &Format,
    planes: &'a [Vec<u8>],
    crop: &bindings::v4l2_rect,
) -> Option<Vec<(&'a [u8], usize)>> {
    let bpl = raw.planes.first()?.bytesperline as usize;
    let (w, h) = (raw.width as usize, raw.height as usize);
    let (left, top) = (
        usize::try_from(crop.left).ok()?,
        usize::try_from(crop.top).ok()?,
    );
    let luma_at = top * bpl + left;
    let y_len = bpl * h;
    let (y, rest): (&[u8], Vec<(&[u8], usize)>) = match raw.fourcc {
        FMT_NV12 => {
            let p = planes.first()?;
            (p.get(..y_len)?, vec![(p.get(y_len..)?, bpl)])
        }
        FMT_NV12M => (
            planes.first()?.as_slice(),
            vec![(planes.get(1)?.as_slice(), bpl)],
        ),
        FMT_YUV420 => {
            let p = planes.first()?;
            let c = (w / 2) * (h / 2);
            (
                p.get(..y_len)?,
                vec![
                    (p.get(y_len..y_len + c)?, bpl / 2),
                    (p.get(y_len + c..)?, bpl / 2),
                ],
            )
        }
        FMT_YUV420M => (
            planes.first()?.as_slice(),
            vec![
                (planes.get(1)?.as_slice(), bpl / 2),
                (planes.get(2)?.as_slice(), bpl / 2),
            ],
        ),
        _ => return None,
    };
    let mut out = vec![(y.get(luma_at..)?, bpl)];
    let interleaved = rest.len() == 1;
    for (p, stride) in rest {
        let at = (top / 2) * stride + if interleaved { left } else { left / 2 };
        out.push((p.get(at..)?, stride));
    }
    Some(out)
}

impl<R, W> VirtioMediaDevice<R, W> for EncoderDevice
where
    R: ReadFromDescriptorChain,
    W: WriteToDescriptorChain,
{
    type Session = EncSession;

    fn new_session(&mut self, session_id: u32) -> Result<Self::Session, i32> {
        let mut src = BufQueue::new(SRC);
        let mut dst = BufQueue::new(DST);
        src.ts_copy = true;
        dst.ts_copy = true;
        let raw = raw_layout(RAW_FORMATS[0], 640, 480);
        let mut s = EncSession {
            id: session_id,
            crop: bindings::v4l2_rect {
                left: 0,
                top: 0,
                width: raw.width,
                height: raw.height,
            },
            raw,
            coded: coded_layout(FMT_H264, 0, 0, 0),
            interval: (1, 30),
            col: Colorimetry::default(),
            src,
            dst,
            ctrls: controls(),
            enc: None,
            ready: VecDeque::new(),
            drain: Drain::None,
            stopped: false,
            force_key: false,
            timestamps: Timestamps::default(),
        };
        s.update_coded(0);
        Ok(s)
    }

    fn close_session(&mut self, mut session: Self::Session) {
        session.src.release(&mut self.ctx);
        session.dst.release(&mut self.ctx);
        self.ctx.drop_session(session.id);
    }

    fn do_ioctl(
        &mut self,
        session: &mut Self::Session,
        ioctl: V4l2Ioctl,
        reader: &mut R,
        writer: &mut W,
    ) -> IoResult<()> {
        if let Some(r) = query_ioctls(&session.ctrls, ioctl, reader, writer) {
            return r;
        }
        if let Some(r) = unsupported_ioctls(ioctl, writer) {
            return r;
        }
        virtio_media_dispatch_ioctl(self, session, ioctl, reader, writer)
    }

    fn do_mmap(
        &mut self,
        session: &mut Self::Session,
        flags: u32,
        offset: u32,
    ) -> Result<(u64, u64), i32> {
        let mut owned = session.src.mmap_offsets();
        owned.extend(session.dst.mmap_offsets());
        self.ctx.do_mmap(&owned, flags, offset)
    }

    fn do_munmap(&mut self, guest_addr: u64) -> Result<(), i32> {
        self.ctx.do_munmap(guest_addr)
    }
}

impl VirtioMediaIoctlHandler for EncoderDevice {
    type Session = EncSession;

    fn enum_fmt(
        &mut self,
        _s: &Self::Session,
        queue: QueueType,
        index: u32,
    ) -> IoctlResult<bindings::v4l2_fmtdesc> {
        match (queue, index) {
            (DST, 0) => Ok(fmtdesc(queue, 0, FMT_H264, FMT_FLAG_COMPRESSED)),
            (SRC, i) => Ok(fmtdesc(
                queue,
                i,
                *RAW_FORMATS.get(i as usize).ok_or(libc::EINVAL)?,
                0,
            )),
            _ => Err(libc::EINVAL),
        }
    }

    fn g_fmt(&mut self, s: &Self::Session, queue: QueueType) -> IoctlResult<bindings::v4l2_format> {
        let mut f = match queue {
            SRC => fmt_to_v4l2(queue, &s.raw),
            DST => fmt_to_v4l2(queue, &s.coded),
            _ => return Err(libc::EINVAL),
        };
        s.col.apply(&mut f);
        Ok(f)
    }

    fn try_fmt(
        &mut self,
        s: &Self::Session,
        queue: QueueType,
        f: bindings::v4l2_format,
    ) -> IoctlResult<bindings::v4l2_format> {
        let (mut out, col) = match queue {
            SRC => (
                fmt_to_v4l2(queue, &Self::raw_format(&f)),
                Colorimetry::from_request(&f),
            ),
            DST => {
                // SAFETY: the encoder queues are multi-planar.
                let requested = unsafe { f.fmt.pix_mp.plane_fmt[0].sizeimage };
                let size = coded_sizeimage(s.coded.width, s.coded.height, requested);
                (
                    fmt_to_v4l2(
                        queue,
                        &coded_layout(FMT_H264, s.coded.width, s.coded.height, size),
                    ),
                    s.col,
                )
            }
            _ => return Err(libc::EINVAL),
        };
        col.apply(&mut out);
        Ok(out)
    }

    fn s_fmt(
        &mut self,
        s: &mut Self::Session,
        queue: QueueType,
        f: bindings::v4l2_format,
    ) -> IoctlResult<bindings::v4l2_format> {
        match queue {
            SRC => {
                if !s.src.bufs.is_empty() {
                    return Err(libc::EBUSY);
                }
                s.raw = Self::raw_format(&f);
                s.col = Colorimetry::from_request(&f);
                s.crop = s.full_rect();
                let size = s.coded.planes.first().map(|p| p.sizeimage).unwrap_or(0);
                s.update_coded(if s.dst.bufs.is_empty() { 0 } else { size });
                s.enc = None;
            }
            DST => {
                if !s.src.bufs.is_empty() || !s.dst.bufs.is_empty() {
                    return Err(libc::EBUSY);
                }
                // SAFETY: the encoder queues are multi-planar.
                let requested = unsafe { f.fmt.pix_mp.plane_fmt[0].sizeimage };
                s.update_coded(requested);
            }
            _ => return Err(libc::EINVAL),
        }
        self.g_fmt(s, queue)
    }

    fn enum_framesizes(
        &mut self,
        _s: &Self::Session,
        index: u32,
        pixel_format: u32,
    ) -> IoctlResult<bindings::v4l2_frmsizeenum> {
        if pixel_format != FMT_H264 && !RAW_FORMATS.contains(&pixel_format) {
            return Err(libc::EINVAL);
        }
        framesizes(index, pixel_format)
    }

    /// The frame interval on OUTPUT only: without
    /// V4L2_FMT_FLAG_ENC_CAP_FRAME_INTERVAL, G/S_PARM on CAPTURE are
    /// EINVAL (dev-encoder.rst; v4l2-compliance checks it).
    fn g_parm(
        &mut self,
        s: &Self::Session,
        queue: QueueType,
    ) -> IoctlResult<bindings::v4l2_streamparm> {
        if queue != SRC {
            return Err(libc::EINVAL);
        }
        let mut parm = bindings::v4l2_streamparm {
            type_: queue as u32,
            ..Default::default()
        };
        parm.parm.output = bindings::v4l2_outputparm {
            capability: bindings::V4L2_CAP_TIMEPERFRAME,
            timeperframe: bindings::v4l2_fract {
                numerator: s.interval.0,
                denominator: s.interval.1,
            },
            ..Default::default()
        };
        Ok(parm)
    }

    fn s_parm(
        &mut self,
        s: &mut Self::Session,
        parm: bindings::v4l2_streamparm,
    ) -> IoctlResult<bindings::v4l2_streamparm> {
        if QueueType::n(parm.type_) != Some(SRC) {
            return Err(libc::EINVAL);
        }
        // SAFETY: an OUTPUT queue's parameters are `parm.output`.
        let tpf = unsafe { parm.parm.output.timeperframe };
        // 0 keeps the interval; 1 to 240 frames per second are accepted.
        if tpf.numerator != 0 && tpf.denominator != 0 {
            let (n, d) = (u64::from(tpf.numerator), u64::from(tpf.denominator));
            s.interval = if d > 240 * n {
                (1, 240)
            } else if n > d {
                (1, 1)
            } else {
                (tpf.numerator, tpf.denominator)
            };
        }
        self.g_parm(s, SRC)
    }

    fn g_selection(
        &mut self,
        s: &Self::Session,
        sel_type: SelectionType,
        target: SelectionTarget,
    ) -> IoctlResult<bindings::v4l2_rect> {
        if sel_type != SelectionType::Output {
            return Err(libc::EINVAL);
        }
        match target {
            SelectionTarget::Crop => Ok(s.crop),
            SelectionTarget::CropDefault | SelectionTarget::CropBounds => Ok(s.full_rect()),
            _ => Err(libc::EINVAL),
        }
    }

    fn s_selection(
        &mut self,
        s: &mut Self::Session,
        sel_type: SelectionType,
        target: SelectionTarget,
        rect: bindings::v4l2_rect,
        _flags: SelectionFlags,
    ) -> IoctlResult<bindings::v4l2_rect> {
        if sel_type != SelectionType::Output || target != SelectionTarget::Crop {
            return Err(libc::EINVAL);
        }
        if !s.src.bufs.is_empty() && s.src.streaming {
            return Err(libc::EBUSY);
        }
        // Even, at least MIN_SIZE, inside the frame.
        let even = |v: u32| v & !1;
        let (fw, fh) = (s.raw.width, s.raw.height);
        let width = even(rect.width.clamp(MIN_SIZE.min(fw), fw));
        let height = even(rect.height.clamp(MIN_SIZE.min(fh), fh));
        let left = even((rect.left.max(0) as u32).min(fw - width));
        let top = even((rect.top.max(0) as u32).min(fh - height));
        s.crop = bindings::v4l2_rect {
            left: left as i32,
            top: top as i32,
            width,
            height,
        };
        let size = s.coded.planes.first().map(|p| p.sizeimage).unwrap_or(0);
        s.update_coded(if s.dst.bufs.is_empty() { 0 } else { size });
        s.enc = None;
        Ok(s.crop)
    }

    fn reqbufs(
        &mut self,
        s: &mut Self::Session,
        queue: QueueType,
        memory: MemoryType,
        count: u32,
        _flags: MemoryConsistency,
    ) -> IoctlResult<bindings::v4l2_requestbuffers> {
        let sizes: Vec<u32> = match queue {
            SRC => s.raw.planes.iter().map(|p| p.sizeimage).collect(),
            _ => s.coded.planes.iter().map(|p| p.sizeimage).collect(),
        };
        let count = s
            .q_mut(queue)?
            .reqbufs(&mut self.ctx, memory, count, &sizes)?;
        Ok(bindings::v4l2_requestbuffers {
            count,
            type_: queue as u32,
            memory: memory as u32,
            capabilities: self.ctx.buf_caps(),
            ..Default::default()
        })
    }

    fn create_bufs(
        &mut self,
        s: &mut Self::Session,
        count: u32,
        queue: QueueType,
        memory: MemoryType,
        format: bindings::v4l2_format,
    ) -> IoctlResult<bindings::v4l2_create_buffers> {
        let needed: Vec<u32> = match queue {
            SRC => s.raw.planes.iter().map(|p| p.sizeimage).collect(),
            _ => s.coded.planes.iter().map(|p| p.sizeimage).collect(),
        };
        s.q_mut(queue)?
            .create_bufs(&mut self.ctx, count, memory, format, &needed)
    }

    fn querybuf(
        &mut self,
        s: &Self::Session,
        queue: QueueType,
        index: u32,
    ) -> IoctlResult<V4l2Buffer> {
        s.q(queue)?.querybuf(index)
    }

    fn qbuf(
        &mut self,
        s: &mut Self::Session,
        buffer: V4l2Buffer,
        regions: Vec<Vec<SgEntry>>,
    ) -> IoctlResult<V4l2Buffer> {
        let out = s.q_mut(buffer.queue())?.qbuf(&buffer, regions)?;
        self.process(s)?;
        Ok(out)
    }

    fn streamon(&mut self, s: &mut Self::Session, queue: QueueType) -> IoctlResult<()> {
        let was_streaming = s.q(queue)?.streaming;
        s.q_mut(queue)?.streamon()?;
        if !was_streaming && s.stopped {
            // dev-encoder.rst: a STREAMOFF/STREAMON pair on either queue
            // ends the stopped state.
            s.stopped = false;
        }
        self.process(s)
    }

    fn streamoff(&mut self, s: &mut Self::Session, queue: QueueType) -> IoctlResult<()> {
        s.q_mut(queue)?.streamoff();
        if queue == DST {
            // Reset: what was encoded and not returned is dropped, a drain
            // is cancelled, the next stream starts with an IDR.
            s.ready.clear();
            s.drain = Drain::None;
            s.enc = None;
        } else if let Drain::Inputs(_) = s.drain {
            // The drain ends at once: the next CAPTURE buffer is LAST.
            s.drain = Drain::Inputs(0);
            self.process(s)?;
        }
        Ok(())
    }

    fn try_encoder_cmd(
        &mut self,
        _s: &Self::Session,
        mut cmd: bindings::v4l2_encoder_cmd,
    ) -> IoctlResult<bindings::v4l2_encoder_cmd> {
        Self::check_enc_cmd(&mut cmd)?;
        Ok(cmd)
    }

    fn encoder_cmd(
        &mut self,
        s: &mut Self::Session,
        mut cmd: bindings::v4l2_encoder_cmd,
    ) -> IoctlResult<bindings::v4l2_encoder_cmd> {
        Self::check_enc_cmd(&mut cmd)?;
        if s.drain != Drain::None {
            return Err(libc::EBUSY);
        }
        match cmd.cmd {
            ENC_CMD_STOP => {
                if !(s.src.streaming && s.dst.streaming) || s.stopped {
                    return Ok(cmd);
                }
                s.drain = Drain::Inputs(s.src.queued.len());
            }
            _ => s.stopped = false,
        }
        self.process(s)?;
        Ok(cmd)
    }

    fn querymenu(
        &mut self,
        s: &Self::Session,
        id: u32,
        index: u32,
    ) -> IoctlResult<bindings::v4l2_querymenu> {
        s.ctrls.querymenu(id, index)
    }

    fn g_ctrl(&mut self, s: &Self::Session, id: u32) -> IoctlResult<bindings::v4l2_control> {
        g_ctrl(&s.ctrls, id)
    }

    fn s_ctrl(
        &mut self,
        s: &mut Self::Session,
        id: u32,
        value: i32,
    ) -> IoctlResult<bindings::v4l2_control> {
        Self::check_busy(s, [id])?;
        let r = s_ctrl(&mut self.ctx, &mut s.ctrls, s.id, id, value)?;
        if id == CID_FORCE_KEY_FRAME {
            s.force_key = true;
        }
        Ok(r)
    }

    fn g_ext_ctrls(
        &mut self,
        s: &Self::Session,
        which: v4l2r::ioctl::CtrlWhich,
        ctrls: &mut bindings::v4l2_ext_controls,
        arr: &mut Vec<bindings::v4l2_ext_control>,
        regions: Vec<Vec<SgEntry>>,
    ) -> IoctlResult<()> {
        let w = which_raw(&which)?;
        let mut c = Controls::new(s.ctrls.defs.clone());
        c.vals = s.ctrls.vals.clone();
        ext_ctrls(
            &mut self.ctx,
            &mut c,
            s.id,
            ExtOp::Get,
            w,
            ctrls,
            arr,
            regions,
        )
    }

    fn s_ext_ctrls(
        &mut self,
        s: &mut Self::Session,
        which: v4l2r::ioctl::CtrlWhich,
        ctrls: &mut bindings::v4l2_ext_controls,
        arr: &mut Vec<bindings::v4l2_ext_control>,
        regions: Vec<Vec<SgEntry>>,
    ) -> IoctlResult<()> {
        if let Err(e) = Self::check_busy(s, arr.iter().map(|c| c.id)) {
            ctrls.error_idx = arr.len() as u32;
            return Err(e);
        }
        let w = which_raw(&which)?;
        ext_ctrls(
            &mut self.ctx,
            &mut s.ctrls,
            s.id,
            ExtOp::Set,
            w,
            ctrls,
            arr,
            regions,
        )?;
        if arr.iter().any(|c| c.id == CID_FORCE_KEY_FRAME) {
            s.force_key = true;
        }
        Ok(())
    }

    fn try_ext_ctrls(
        &mut self,
        s: &Self::Session,
        which: v4l2r::ioctl::CtrlWhich,
        ctrls: &mut bindings::v4l2_ext_controls,
        arr: &mut Vec<bindings::v4l2_ext_control>,
        regions: Vec<Vec<SgEntry>>,
    ) -> IoctlResult<()> {
        let w = which_raw(&which)?;
        let mut c = Controls::new(s.ctrls.defs.clone());
        c.vals = s.ctrls.vals.clone();
        ext_ctrls(
            &mut self.ctx,
            &mut c,
            s.id,
            ExtOp::Try,
            w,
            ctrls,
            arr,
            regions,
        )
    }

    fn subscribe_event(
        &mut self,
        s: &mut Self::Session,
        event: EventType,
        flags: SubscribeEventFlags,
    ) -> IoctlResult<()> {
        subscribe(
            &mut self.ctx,
            &s.ctrls,
            s.id,
            event,
            flags,
            &[bindings::V4L2_EVENT_EOS],
        )
    }

    fn unsubscribe_event(
        &mut self,
        s: &mut Self::Session,
        event: bindings::v4l2_event_subscription,
    ) -> IoctlResult<()> {
        self.ctx.unsubscribe(s.id, event.type_, event.id);
        Ok(())
    }
}
