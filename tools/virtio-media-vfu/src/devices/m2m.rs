// SPDX-License-Identifier: GPL-2.0
//! `--backend m2m`: a mem2mem pixel-format converter on the multi-planar
//! API. OUTPUT (source) and CAPTURE (destination) formats are any of YUYV,
//! RGB3, NV12, NM12, YM12, GREY at the same frame size (no scaling); the
//! conversion goes through planar 4:2:0 with integer BT.601 (full range)
//! colour maths.
//!
//! Drain (VIDIOC_DECODER_CMD): STOP converts what is queued on OUTPUT, marks
//! the last CAPTURE buffer with V4L2_BUF_FLAG_LAST (an empty one if no
//! source buffer was pending), sends V4L2_EVENT_EOS and stops; START (or a
//! STREAMOFF of either queue) restarts.

use std::io::Result as IoResult;

use v4l2r::bindings;
use v4l2r::ioctl::{BufferFlags, EventType, MemoryConsistency, SubscribeEventFlags, V4l2Buffer};
use v4l2r::memory::MemoryType;
use v4l2r::QueueType;
use virtio_media::io::{ReadFromDescriptorChain, WriteToDescriptorChain};
use virtio_media::ioctl::{virtio_media_dispatch_ioctl, VirtioMediaIoctlHandler};
use virtio_media::protocol::{DequeueBufferEvent, SgEntry, V4l2Event, V4l2Ioctl};
use virtio_media::{VirtioMediaDevice, VirtioMediaDeviceSession, VirtioMediaEventQueue};

use super::capture::{query_ioctls, subscribe, unsupported_ioctls, which_raw, SIZES};
use super::common::*;

pub const SRC: QueueType = QueueType::VideoOutputMplane;
pub const DST: QueueType = QueueType::VideoCaptureMplane;
pub const FORMATS: &[u32] = &[
    FMT_YUYV,
    FMT_RGB24,
    FMT_NV12,
    FMT_NV12M,
    FMT_YUV420M,
    FMT_GREY,
];

pub const DEC_CMD_START: u32 = 0;
pub const DEC_CMD_STOP: u32 = 1;

/// Planar 4:2:0 picture.
pub struct I420 {
    pub w: usize,
    pub h: usize,
    pub y: Vec<u8>,
    pub u: Vec<u8>,
    pub v: Vec<u8>,
}

fn clamp8(v: i32) -> u8 {
    v.clamp(0, 255) as u8
}

pub fn rgb_to_yuv(r: u8, g: u8, b: u8) -> (u8, u8, u8) {
    let (r, g, b) = (r as i32, g as i32, b as i32);
    let y = (77 * r + 150 * g + 29 * b + 128) >> 8;
    let u = ((-43 * r - 85 * g + 128 * b + 128) >> 8) + 128;
    let v = ((128 * r - 107 * g - 21 * b + 128) >> 8) + 128;
    (clamp8(y), clamp8(u), clamp8(v))
}

pub fn yuv_to_rgb(y: u8, u: u8, v: u8) -> (u8, u8, u8) {
    let (y, u, v) = (y as i32, u as i32 - 128, v as i32 - 128);
    let r = y + ((359 * v + 128) >> 8);
    let g = y - ((88 * u + 183 * v + 128) >> 8);
    let b = y + ((454 * u + 128) >> 8);
    (clamp8(r), clamp8(g), clamp8(b))
}

/// Decodes `planes` (memory planes of `f`) into I420. Short planes are an
/// error (EINVAL), never a panic.
pub fn to_i420(f: &Format, planes: &[Vec<u8>]) -> IoctlResult<I420> {
    let (w, h) = (f.width as usize, f.height as usize);
    let (cw, ch) = (w / 2, h / 2);
    let need = |p: usize, n: usize| -> IoctlResult<&[u8]> {
        planes
            .get(p)
            .filter(|d| d.len() >= n)
            .map(|d| &d[..n])
            .ok_or(libc::EINVAL)
    };
    let mut y = vec![0u8; w * h];
    let mut u = vec![128u8; cw * ch];
    let mut v = vec![128u8; cw * ch];
    match f.fourcc {
        FMT_GREY => y.copy_from_slice(need(0, w * h)?),
        FMT_YUYV => {
            let s = need(0, w * h * 2)?;
            for r in 0..h {
                for c in 0..w {
                    y[r * w + c] = s[r * w * 2 + c * 2];
                }
            }
            for r in 0..ch {
                for c in 0..cw {
                    u[r * cw + c] = s[2 * r * w * 2 + c * 4 + 1];
                    v[r * cw + c] = s[2 * r * w * 2 + c * 4 + 3];
                }
            }
        }
        FMT_RGB24 => {
            let s = need(0, w * h * 3)?;
            for r in 0..h {
                for c in 0..w {
                    let i = (r * w + c) * 3;
                    let (yy, uu, vv) = rgb_to_yuv(s[i], s[i + 1], s[i + 2]);
                    y[r * w + c] = yy;
                    if r % 2 == 0 && c % 2 == 0 && r / 2 < ch && c / 2 < cw {
                        u[(r / 2) * cw + c / 2] = uu;
                        v[(r / 2) * cw + c / 2] = vv;
                    }
                }
            }
        }
        FMT_NV12 | FMT_NV12M => {
            let (ys, uv) = if f.fourcc == FMT_NV12 {
                let s = need(0, w * h * 3 / 2)?;
                (&s[..w * h], &s[w * h..])
            } else {
                (need(0, w * h)?, need(1, w * h / 2)?)
            };
            y.copy_from_slice(ys);
            for r in 0..ch {
                for c in 0..cw {
                    u[r * cw + c] = uv[r * w + 2 * c];
                    v[r * cw + c] = uv[r * w + 2 * c + 1];
                }
            }
        }
        FMT_YUV420M => {
            y.copy_from_slice(need(0, w * h)?);
            u.copy_from_slice(need(1, cw * ch)?);
            v.copy_from_slice(need(2, cw * ch)?);
        }
        _ => return Err(libc::EINVAL),
    }
    Ok(I420 { w, h, y, u, v })
}

/// Encodes I420 into the memory planes of `fourcc`.
pub fn from_i420(p: &I420, fourcc: u32) -> IoctlResult<Vec<Vec<u8>>> {
    let (w, h) = (p.w, p.h);
    let cw = w / 2;
    let uvat = |r: usize, c: usize| -> (u8, u8) {
        let i = (r / 2) * cw + c / 2;
        (
            p.u.get(i).copied().unwrap_or(128),
            p.v.get(i).copied().unwrap_or(128),
        )
    };
    Ok(match fourcc {
        FMT_GREY => vec![p.y.clone()],
        FMT_YUYV => {
            let mut o = vec![0u8; w * h * 2];
            for r in 0..h {
                for c in 0..w {
                    let (uu, vv) = uvat(r, c);
                    o[r * w * 2 + c * 2] = p.y[r * w + c];
                    o[r * w * 2 + c * 2 + 1] = if c % 2 == 0 { uu } else { vv };
                }
            }
            vec![o]
        }
        FMT_RGB24 => {
            let mut o = vec![0u8; w * h * 3];
            for r in 0..h {
                for c in 0..w {
                    let (uu, vv) = uvat(r, c);
                    let (rr, gg, bb) = yuv_to_rgb(p.y[r * w + c], uu, vv);
                    let i = (r * w + c) * 3;
                    o[i] = rr;
                    o[i + 1] = gg;
                    o[i + 2] = bb;
                }
            }
            vec![o]
        }
        FMT_NV12 | FMT_NV12M => {
            let mut uv = vec![0u8; w * h / 2];
            for i in 0..p.u.len().min(uv.len() / 2) {
                uv[2 * i] = p.u[i];
                uv[2 * i + 1] = p.v[i];
            }
            if fourcc == FMT_NV12 {
                let mut o = p.y.clone();
                o.extend_from_slice(&uv);
                vec![o]
            } else {
                vec![p.y.clone(), uv]
            }
        }
        FMT_YUV420M => vec![p.y.clone(), p.u.clone(), p.v.clone()],
        _ => return Err(libc::EINVAL),
    })
}

/// Colour description of the stream: colorspace, transfer function, Y'CbCr
/// encoding, quantization. Set on OUTPUT, passed on to CAPTURE (like every
/// mem2mem converter that does not convert colorspaces).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Colorimetry {
    pub colorspace: u32,
    pub xfer_func: u8,
    pub ycbcr_enc: u8,
    pub quantization: u8,
}

impl Default for Colorimetry {
    fn default() -> Self {
        Colorimetry {
            colorspace: bindings::v4l2_colorspace_V4L2_COLORSPACE_SRGB,
            xfer_func: 0,
            ycbcr_enc: 0,
            quantization: 0,
        }
    }
}

impl Colorimetry {
    /// What the application asked for in an OUTPUT format: values out of
    /// the ranges videodev2.h defines become "default" (0), a default
    /// colorspace becomes sRGB.
    pub fn from_request(f: &bindings::v4l2_format) -> Self {
        // SAFETY: the m2m queues are multi-planar.
        let mp = unsafe { &f.fmt.pix_mp };
        // SAFETY: both union members are a u8.
        let enc = unsafe { mp.__bindgen_anon_1.ycbcr_enc };
        let colorspace = match mp.colorspace {
            0 => bindings::v4l2_colorspace_V4L2_COLORSPACE_SRGB,
            c @ 1..=12 => c,
            _ => bindings::v4l2_colorspace_V4L2_COLORSPACE_SRGB,
        };
        Colorimetry {
            colorspace,
            xfer_func: if mp.xfer_func <= 6 { mp.xfer_func } else { 0 },
            ycbcr_enc: if enc <= 8 { enc } else { 0 },
            quantization: if mp.quantization <= 2 {
                mp.quantization
            } else {
                0
            },
        }
    }

    pub fn apply(&self, f: &mut bindings::v4l2_format) {
        // SAFETY: the m2m queues are multi-planar.
        let mp = unsafe { &mut f.fmt.pix_mp };
        mp.colorspace = self.colorspace;
        mp.xfer_func = self.xfer_func;
        mp.__bindgen_anon_1.ycbcr_enc = self.ycbcr_enc;
        mp.quantization = self.quantization;
    }
}

pub struct M2mSession {
    pub id: u32,
    pub src_fmt: Format,
    pub dst_fmt: Format,
    /// Colorimetry of both queues (set through OUTPUT).
    pub col: Colorimetry,
    pub src: BufQueue,
    pub dst: BufQueue,
    /// STOP received, source buffers still to convert.
    pub draining: bool,
    /// Drain finished: no conversion until START.
    pub stopped: bool,
    /// Drain finished without a CAPTURE buffer to mark: mark the next one.
    pub last_pending: bool,
}

impl VirtioMediaDeviceSession for M2mSession {
    fn poll_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

impl M2mSession {
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
    fn fmt(&self, queue: QueueType) -> &Format {
        if queue == SRC {
            &self.src_fmt
        } else {
            &self.dst_fmt
        }
    }
    fn reset_drain(&mut self) {
        self.draining = false;
        self.stopped = false;
        self.last_pending = false;
    }
}

pub struct M2mDevice {
    pub ctx: DevCtx,
    pub ctrls: Controls,
}

impl M2mDevice {
    pub fn new(ctx: DevCtx) -> Self {
        M2mDevice {
            ctx,
            ctrls: Controls::new(user_controls()),
        }
    }

    fn closest(fourcc: u32, width: u32, height: u32) -> Format {
        let fourcc = if FORMATS.contains(&fourcc) {
            fourcc
        } else {
            FORMATS[0]
        };
        let target = width as i64 * height as i64;
        let &(w, h) = SIZES
            .iter()
            .min_by_key(|(w, h)| ((*w as i64 * *h as i64) - target).abs())
            .unwrap_or(&SIZES[0]);
        layout(fourcc, w, h).unwrap_or_else(|| Format {
            fourcc,
            width: w,
            height: h,
            planes: vec![],
        })
    }

    fn emit(&mut self, session: u32, buf: V4l2Buffer) {
        self.ctx
            .events
            .send_event(V4l2Event::DequeueBuffer(DequeueBufferEvent::new(
                session, buf,
            )));
    }

    fn finish_drain(&mut self, s: &mut M2mSession, marked: bool) -> IoctlResult<()> {
        s.draining = false;
        s.stopped = true;
        if !marked {
            if let Some(idx) = s.dst.queued.pop_front() {
                let zeros = vec![0; s.dst.plane_sizes.len()];
                let b = s.dst.complete(idx, &zeros, BufferFlags::LAST)?;
                self.emit(s.id, b);
            } else {
                s.last_pending = true;
            }
        }
        if self
            .ctx
            .subscribed(s.id, bindings::V4L2_EVENT_EOS, 0)
            .is_some()
        {
            let ev = bindings::v4l2_event {
                type_: bindings::V4L2_EVENT_EOS,
                ..Default::default()
            };
            self.ctx.send_event(s.id, ev);
        }
        log::debug!("m2m session {}: drain complete", s.id);
        Ok(())
    }

    /// Runs conversion jobs while both queues stream and have buffers.
    fn process(&mut self, s: &mut M2mSession) -> IoctlResult<()> {
        if s.last_pending {
            if let Some(idx) = s.dst.queued.pop_front() {
                s.last_pending = false;
                let zeros = vec![0; s.dst.plane_sizes.len()];
                let b = s.dst.complete(idx, &zeros, BufferFlags::LAST)?;
                self.emit(s.id, b);
            }
        }
        while !s.stopped
            && s.src.streaming
            && s.dst.streaming
            && !s.src.queued.is_empty()
            && !s.dst.queued.is_empty()
        {
            let (Some(si), Some(di)) = (s.src.queued.pop_front(), s.dst.queued.pop_front()) else {
                break;
            };
            let mut planes = vec![];
            let mut src_used = vec![];
            for p in 0..s.src.plane_sizes.len() {
                let n = s.src.bytesused(si, p);
                planes.push(s.src.read_plane(&self.ctx, si, p, n as usize)?);
                src_used.push(n);
            }
            let ts = s.src.bufs.get(si).map(|b| b.raw.timestamp);
            let converted =
                to_i420(&s.src_fmt, &planes).and_then(|pic| from_i420(&pic, s.dst_fmt.fourcc));
            let last = s.draining && s.src.queued.is_empty();
            let (dst_used, flags) = match converted {
                Ok(out) => {
                    let mut used = vec![];
                    for (p, data) in out.iter().enumerate() {
                        let cap = s.dst.plane_sizes.get(p).copied().unwrap_or(0) as usize;
                        let n = data.len().min(cap);
                        s.dst.write_plane(&self.ctx, di, p, &data[..n])?;
                        used.push(n as u32);
                    }
                    (used, BufferFlags::empty())
                }
                Err(e) => {
                    // Too-short source (bytesused smaller than a frame).
                    log::warn!(
                        "m2m session {}: cannot convert source buffer {si} (errno {e})",
                        s.id
                    );
                    (vec![0; s.dst.plane_sizes.len()], BufferFlags::ERROR)
                }
            };
            let flags = if last {
                flags | BufferFlags::LAST
            } else {
                flags
            };
            let b = s.src.complete(si, &src_used, BufferFlags::empty())?;
            self.emit(s.id, b);
            let b = s.dst.complete_ts(di, &dst_used, flags, ts)?;
            self.emit(s.id, b);
            if last {
                self.finish_drain(s, true)?;
            }
        }
        if s.draining && s.src.queued.is_empty() {
            self.finish_drain(s, false)?;
        }
        Ok(())
    }

    /// Like v4l2_m2m_ioctl_try_decoder_cmd: START and STOP only; no flag,
    /// STOP pts, START speed or format is supported, so they come back 0.
    fn check_dec_cmd(cmd: &mut bindings::v4l2_decoder_cmd) -> IoctlResult<()> {
        match cmd.cmd {
            DEC_CMD_STOP => {
                cmd.flags = 0;
                cmd.__bindgen_anon_1.stop.pts = 0;
                Ok(())
            }
            DEC_CMD_START => {
                cmd.flags = 0;
                cmd.__bindgen_anon_1.start.speed = 0;
                cmd.__bindgen_anon_1.start.format = 0;
                Ok(())
            }
            _ => Err(libc::EINVAL),
        }
    }
}

impl<R, W> VirtioMediaDevice<R, W> for M2mDevice
where
    R: ReadFromDescriptorChain,
    W: WriteToDescriptorChain,
{
    type Session = M2mSession;

    fn new_session(&mut self, session_id: u32) -> Result<Self::Session, i32> {
        let f = Self::closest(FORMATS[0], SIZES[1].0, SIZES[1].1);
        let mut src = BufQueue::new(SRC);
        let mut dst = BufQueue::new(DST);
        src.ts_copy = true;
        dst.ts_copy = true;
        Ok(M2mSession {
            id: session_id,
            src_fmt: f.clone(),
            dst_fmt: f,
            col: Colorimetry::default(),
            src,
            dst,
            draining: false,
            stopped: false,
            last_pending: false,
        })
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
        if let Some(r) = query_ioctls(&self.ctrls, ioctl, reader, writer) {
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

impl VirtioMediaIoctlHandler for M2mDevice {
    type Session = M2mSession;

    fn enum_fmt(
        &mut self,
        _s: &Self::Session,
        queue: QueueType,
        index: u32,
    ) -> IoctlResult<bindings::v4l2_fmtdesc> {
        if queue != SRC && queue != DST {
            return Err(libc::EINVAL);
        }
        let &f = FORMATS.get(index as usize).ok_or(libc::EINVAL)?;
        let mut d = bindings::v4l2_fmtdesc {
            index,
            type_: queue as u32,
            pixelformat: f,
            ..Default::default()
        };
        for (i, b) in format_description(f).bytes().take(31).enumerate() {
            d.description[i] = b;
        }
        Ok(d)
    }

    fn g_fmt(&mut self, s: &Self::Session, queue: QueueType) -> IoctlResult<bindings::v4l2_format> {
        s.q(queue)?;
        let mut out = fmt_to_v4l2(queue, s.fmt(queue));
        s.col.apply(&mut out);
        Ok(out)
    }

    fn try_fmt(
        &mut self,
        s: &Self::Session,
        queue: QueueType,
        f: bindings::v4l2_format,
    ) -> IoctlResult<bindings::v4l2_format> {
        s.q(queue)?;
        let (fourcc, w, h) = fmt_request(queue, &f);
        let mut out = Self::closest(fourcc, w, h);
        if queue == DST {
            // The destination size always follows the source.
            out = layout(out.fourcc, s.src_fmt.width, s.src_fmt.height).unwrap_or(out);
        }
        let col = if queue == SRC {
            Colorimetry::from_request(&f)
        } else {
            s.col
        };
        let mut out = fmt_to_v4l2(queue, &out);
        col.apply(&mut out);
        Ok(out)
    }

    fn s_fmt(
        &mut self,
        s: &mut Self::Session,
        queue: QueueType,
        f: bindings::v4l2_format,
    ) -> IoctlResult<bindings::v4l2_format> {
        if !s.q(queue)?.bufs.is_empty() {
            return Err(libc::EBUSY);
        }
        let (fourcc, w, h) = fmt_request(queue, &f);
        let new = Self::closest(fourcc, w, h);
        if queue == SRC {
            s.src_fmt = new;
            s.col = Colorimetry::from_request(&f);
            if s.dst.bufs.is_empty() {
                s.dst_fmt = layout(s.dst_fmt.fourcc, s.src_fmt.width, s.src_fmt.height)
                    .unwrap_or(s.dst_fmt.clone());
            }
        } else {
            s.dst_fmt = layout(new.fourcc, s.src_fmt.width, s.src_fmt.height).unwrap_or(new);
        }
        let mut out = fmt_to_v4l2(queue, s.fmt(queue));
        s.col.apply(&mut out);
        Ok(out)
    }

    fn enum_framesizes(
        &mut self,
        _s: &Self::Session,
        index: u32,
        pixel_format: u32,
    ) -> IoctlResult<bindings::v4l2_frmsizeenum> {
        if !FORMATS.contains(&pixel_format) {
            return Err(libc::EINVAL);
        }
        let &(width, height) = SIZES.get(index as usize).ok_or(libc::EINVAL)?;
        Ok(bindings::v4l2_frmsizeenum {
            index,
            pixel_format,
            type_: bindings::v4l2_frmsizetypes_V4L2_FRMSIZE_TYPE_DISCRETE,
            __bindgen_anon_1: bindings::v4l2_frmsizeenum__bindgen_ty_1 {
                discrete: bindings::v4l2_frmsize_discrete { width, height },
            },
            ..Default::default()
        })
    }

    fn reqbufs(
        &mut self,
        s: &mut Self::Session,
        queue: QueueType,
        memory: MemoryType,
        count: u32,
        _flags: MemoryConsistency,
    ) -> IoctlResult<bindings::v4l2_requestbuffers> {
        let sizes: Vec<u32> = s.fmt(queue).planes.iter().map(|p| p.sizeimage).collect();
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
        let needed: Vec<u32> = s
            .q(queue)
            .map(|_| s.fmt(queue).planes.iter().map(|p| p.sizeimage).collect())?;
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
        s.q_mut(queue)?.streamon()?;
        if queue == DST && s.stopped {
            // Restarting the CAPTURE queue after a drain resumes.
            s.reset_drain();
        }
        self.process(s)
    }

    fn streamoff(&mut self, s: &mut Self::Session, queue: QueueType) -> IoctlResult<()> {
        s.q_mut(queue)?.streamoff();
        s.reset_drain();
        Ok(())
    }

    fn try_decoder_cmd(
        &mut self,
        _s: &Self::Session,
        mut cmd: bindings::v4l2_decoder_cmd,
    ) -> IoctlResult<bindings::v4l2_decoder_cmd> {
        Self::check_dec_cmd(&mut cmd)?;
        Ok(cmd)
    }

    fn decoder_cmd(
        &mut self,
        s: &mut Self::Session,
        mut cmd: bindings::v4l2_decoder_cmd,
    ) -> IoctlResult<bindings::v4l2_decoder_cmd> {
        Self::check_dec_cmd(&mut cmd)?;
        match cmd.cmd {
            DEC_CMD_STOP => {
                if !(s.src.streaming && s.dst.streaming) || s.stopped {
                    // Nothing in flight: nothing to drain.
                    return Ok(cmd);
                }
                s.draining = true;
                self.process(s)?;
            }
            _ => {
                s.reset_drain();
                self.process(s)?;
            }
        }
        Ok(cmd)
    }

    fn querymenu(
        &mut self,
        _s: &Self::Session,
        id: u32,
        index: u32,
    ) -> IoctlResult<bindings::v4l2_querymenu> {
        self.ctrls.querymenu(id, index)
    }

    fn g_ctrl(&mut self, _s: &Self::Session, id: u32) -> IoctlResult<bindings::v4l2_control> {
        g_ctrl(&self.ctrls, id)
    }

    fn s_ctrl(
        &mut self,
        s: &mut Self::Session,
        id: u32,
        value: i32,
    ) -> IoctlResult<bindings::v4l2_control> {
        s_ctrl(&mut self.ctx, &mut self.ctrls, s.id, id, value)
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
        ext_ctrls(
            &mut self.ctx,
            &mut self.ctrls,
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
        let w = which_raw(&which)?;
        ext_ctrls(
            &mut self.ctx,
            &mut self.ctrls,
            s.id,
            ExtOp::Set,
            w,
            ctrls,
            arr,
            regions,
        )
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
        ext_ctrls(
            &mut self.ctx,
            &mut self.ctrls,
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
            &self.ctrls,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_round_trips() {
        for &(r, g, b) in &[
            (0u8, 0u8, 0u8),
            (255, 255, 255),
            (255, 0, 0),
            (0, 255, 0),
            (0, 0, 255),
            (12, 200, 99),
        ] {
            let (y, u, v) = rgb_to_yuv(r, g, b);
            let (r2, g2, b2) = yuv_to_rgb(y, u, v);
            for (a, b) in [(r, r2), (g, g2), (b, b2)] {
                assert!(
                    (a as i32 - b as i32).abs() <= 3,
                    "{r},{g},{b} -> {y},{u},{v} -> {r2},{g2},{b2}"
                );
            }
        }
    }

    #[test]
    fn every_format_round_trips_through_i420() {
        let (w, h) = (8u32, 4u32);
        let mut src = I420 {
            w: 8,
            h: 4,
            y: (0..32).map(|i| (i * 7) as u8).collect(),
            u: (0..8).map(|i| 100 + i as u8).collect(),
            v: (0..8).map(|i| 140 - i as u8).collect(),
        };
        for &f in FORMATS {
            let fmt = layout(f, w, h).unwrap();
            let planes = from_i420(&src, f).unwrap();
            assert_eq!(planes.len(), fmt.planes.len(), "{}", fourcc_str(f));
            for (p, l) in planes.iter().zip(&fmt.planes) {
                assert_eq!(p.len() as u32, l.sizeimage, "{}", fourcc_str(f));
            }
            let back = to_i420(&fmt, &planes).unwrap();
            if f == FMT_RGB24 {
                // Lossy (chroma subsampling, clipping): compare luma away
                // from the clipping range.
                for (a, b) in src
                    .y
                    .iter()
                    .zip(&back.y)
                    .filter(|(a, _)| (60..=190).contains(*a))
                {
                    assert!((*a as i32 - *b as i32).abs() <= 4, "{a} vs {b}");
                }
                continue;
            }
            assert_eq!(back.y, src.y, "{} luma", fourcc_str(f));
            if f != FMT_GREY {
                assert_eq!(back.u, src.u, "{} chroma", fourcc_str(f));
                assert_eq!(back.v, src.v, "{} chroma", fourcc_str(f));
            }
        }
        // Short input is an error, not a panic.
        src.y.truncate(3);
        let fmt = layout(FMT_YUV420M, w, h).unwrap();
        assert_eq!(
            to_i420(&fmt, &[vec![0; 3], vec![], vec![]]).err(),
            Some(libc::EINVAL)
        );
    }
}
