// SPDX-License-Identifier: GPL-2.0
//! `--backend capture` and `--backend output`: streaming devices on the
//! multi-planar API with several pixel formats (single memory plane: YUYV,
//! RGB3, NV12; several memory planes: NM12, YM12), four discrete frame
//! sizes with two frame intervals each, user controls including a U8 array
//! control, control and frame-sync events, MMAP and USERPTR memory.
//!
//! Capture: every byte of memory plane `p` of the frame with sequence
//! number `s` is `frame_byte(s, p, brightness)`.
//!
//! Output: every queued buffer is consumed at once (while streaming); the
//! read-only control "Last Frame Checksum" holds the wrapping sum of all
//! `bytesused` bytes of its planes, masked to 31 bits.

use std::io::Result as IoResult;

use v4l2r::bindings;
use v4l2r::ioctl::{
    BufferFlags, EventType, MemoryConsistency, SelectionFlags, SelectionTarget, SelectionType,
    SubscribeEventFlags, V4l2Buffer,
};
use v4l2r::memory::MemoryType;
use v4l2r::QueueType;
use virtio_media::io::{ReadFromDescriptorChain, WriteToDescriptorChain};
use virtio_media::ioctl::{virtio_media_dispatch_ioctl, VirtioMediaIoctlHandler};
use virtio_media::protocol::{DequeueBufferEvent, RespHeader, SgEntry, V4l2Event, V4l2Ioctl};
use virtio_media::{VirtioMediaDevice, VirtioMediaDeviceSession, VirtioMediaEventQueue};

use super::common::*;
use crate::framelog::FrameLog;

pub const CAPTURE_QUEUE: QueueType = QueueType::VideoCaptureMplane;
pub const OUTPUT_QUEUE: QueueType = QueueType::VideoOutputMplane;
/// Read-only control of the output device: checksum of the last frame.
pub const CID_LAST_FRAME_CHECKSUM: u32 = 0x0098_1981;
pub const FORMATS: &[u32] = &[FMT_YUYV, FMT_RGB24, FMT_NV12, FMT_NV12M, FMT_YUV420M];
pub const SIZES: &[(u32, u32)] = &[(320, 240), (640, 480), (1280, 720), (1920, 1080)];
/// With `--crop`: the one frame size (v4l2-compliance refuses selection on
/// a device whose current pixel format has more than one discrete size).
pub const CROP_SIZES: &[(u32, u32)] = &[(640, 480)];
/// Frame intervals (numerator, denominator).
pub const INTERVALS: &[(u32, u32)] = &[(1, 30), (1, 15)];

pub fn frame_byte(sequence: u32, plane: usize, brightness: i64) -> u8 {
    ((sequence as i64 + 40 * plane as i64 + brightness) & 0xff) as u8
}

pub struct CaptureSession {
    pub id: u32,
    pub q: BufQueue,
}

impl VirtioMediaDeviceSession for CaptureSession {
    fn poll_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

pub struct CaptureDevice {
    /// CAPTURE_QUEUE or OUTPUT_QUEUE.
    pub queue: QueueType,
    pub ctx: DevCtx,
    pub ctrls: Controls,
    /// Session that owns buffers (only one at a time, like real hardware).
    active: Option<u32>,
    /// The format and frame interval belong to the device, not to a
    /// session: S_FMT on one file is seen by G_FMT on every other.
    pub fmt: Format,
    pub interval: (u32, u32),
    /// `--frame-log` (capture only).
    pub frame_log: FrameLog,
    /// `--source-change-every N` (capture only; 0 = off): every N frames
    /// produced while streaming the simulated input signal toggles between
    /// two resolutions and V4L2_EVENT_SOURCE_CHANGE is sent.
    pub source_change_every: u32,
    /// Frames produced since STREAMON or the last source change.
    frames_since_change: u32,
    /// The simulated input signal is in its alternate resolution.
    pub signal_alternate: bool,
    /// `--crop` (capture only): one frame size and a cropper
    /// (VIDIOC_G/S_SELECTION).
    pub crop_mode: bool,
    /// The crop rectangle, inside the full frame of the current format.
    pub crop: bindings::v4l2_rect,
}

impl CaptureDevice {
    pub fn new(ctx: DevCtx) -> Self {
        CaptureDevice {
            queue: CAPTURE_QUEUE,
            ctx,
            ctrls: Controls::new(user_controls()),
            active: None,
            fmt: Self::default_format(),
            interval: INTERVALS[0],
            frame_log: FrameLog::default(),
            source_change_every: 0,
            frames_since_change: 0,
            signal_alternate: false,
            crop_mode: false,
            crop: Self::full_rect(&Self::default_format()),
        }
    }

    pub fn new_output(ctx: DevCtx) -> Self {
        let mut defs = user_controls();
        defs.push(CtrlDef {
            id: CID_LAST_FRAME_CHECKSUM,
            name: "Last Frame Checksum",
            type_: CTRL_TYPE_INTEGER,
            min: 0,
            max: i32::MAX as i64,
            step: 1,
            def: 0,
            flags: CTRL_FLAG_READ_ONLY | CTRL_FLAG_VOLATILE,
            elems: 0,
            menu: &[],
        });
        defs.sort_by_key(|d| d.id);
        CaptureDevice {
            queue: OUTPUT_QUEUE,
            ctx,
            ctrls: Controls::new(defs),
            active: None,
            fmt: Self::default_format(),
            interval: INTERVALS[0],
            frame_log: FrameLog::default(),
            source_change_every: 0,
            frames_since_change: 0,
            signal_alternate: false,
            crop_mode: false,
            crop: Self::full_rect(&Self::default_format()),
        }
    }

    fn is_output(&self) -> bool {
        self.queue == OUTPUT_QUEUE
    }

    /// Output: consume every queued buffer.
    fn consume(&mut self, s: &mut CaptureSession) -> IoctlResult<()> {
        while let Some(idx) = s.q.queued.pop_front() {
            let mut sum: u32 = 0;
            let mut used = vec![];
            for p in 0..s.q.plane_sizes.len() {
                let n = s.q.bytesused(idx, p);
                let data = s.q.read_plane(&self.ctx, idx, p, n as usize)?;
                sum = data.iter().fold(sum, |a, &b| a.wrapping_add(b as u32));
                used.push(n);
            }
            let sum = (sum & 0x7fff_ffff) as i64;
            if let Some(i) = self.ctrls.find(CID_LAST_FRAME_CHECKSUM) {
                self.ctrls.vals[i] = CtrlVal::Int(sum);
            }
            log::debug!("output: frame {} consumed, checksum {sum:#x}", s.q.sequence);
            let buf = s.q.complete(idx, &used, BufferFlags::empty())?;
            if self.frame_log.enabled() {
                // What the guest reads: each plane's first bytesused bytes.
                let planes = (0..used.len())
                    .map(|p| {
                        s.q.read_plane(&self.ctx, idx, p, s.q.bytesused(idx, p) as usize)
                    })
                    .collect::<IoctlResult<Vec<_>>>()?;
                self.frame_log
                    .record(buf.sequence(), s.id, planes.iter().map(|v| &v[..]));
            }
            self.ctx
                .events
                .send_event(V4l2Event::DequeueBuffer(DequeueBufferEvent::new(s.id, buf)));
        }
        Ok(())
    }

    fn default_format() -> Format {
        layout(FORMATS[0], SIZES[1].0, SIZES[1].1).unwrap_or_else(|| Format {
            fourcc: FORMATS[0],
            width: 0,
            height: 0,
            planes: vec![],
        })
    }

    /// The discrete frame sizes offered.
    pub fn sizes(&self) -> &'static [(u32, u32)] {
        if self.crop_mode {
            CROP_SIZES
        } else {
            SIZES
        }
    }

    /// `--crop`: one frame size, and VIDIOC_G/S_SELECTION.
    pub fn enable_crop(&mut self) {
        self.crop_mode = true;
        self.fmt = self.closest(self.fmt.fourcc, self.fmt.width, self.fmt.height);
        self.crop = Self::full_rect(&self.fmt);
    }

    /// The S_FMT result becomes the device format; a new frame size resets
    /// the crop rectangle to the full frame.
    pub fn set_format(&mut self, new: Format) {
        if (new.width, new.height) != (self.fmt.width, self.fmt.height) {
            self.crop = Self::full_rect(&new);
        }
        self.fmt = new;
    }

    pub fn full_rect(f: &Format) -> bindings::v4l2_rect {
        bindings::v4l2_rect {
            left: 0,
            top: 0,
            width: f.width,
            height: f.height,
        }
    }

    /// S_SELECTION(CROP): the rectangle clamped into the full frame. With
    /// V4L2_SEL_FLAG_GE (LE) the result must contain (lie inside) the one
    /// asked for, else ERANGE.
    fn adjust_crop(
        &self,
        r: bindings::v4l2_rect,
        flags: SelectionFlags,
    ) -> IoctlResult<bindings::v4l2_rect> {
        let (fw, fh) = (self.fmt.width, self.fmt.height);
        let width = r.width.clamp(1, fw);
        let height = r.height.clamp(1, fh);
        let left = (r.left.max(0) as u32).min(fw - width) as i32;
        let top = (r.top.max(0) as u32).min(fh - height) as i32;
        let out = bindings::v4l2_rect {
            left,
            top,
            width,
            height,
        };
        let inside = |a: &bindings::v4l2_rect, b: &bindings::v4l2_rect| {
            a.left >= b.left
                && a.top >= b.top
                && a.left as i64 + a.width as i64 <= b.left as i64 + b.width as i64
                && a.top as i64 + a.height as i64 <= b.top as i64 + b.height as i64
        };
        if flags.contains(SelectionFlags::GE) && !inside(&r, &out) {
            return Err(libc::ERANGE);
        }
        if flags.contains(SelectionFlags::LE) && !inside(&out, &r) {
            return Err(libc::ERANGE);
        }
        Ok(out)
    }

    fn closest(&self, fourcc: u32, width: u32, height: u32) -> Format {
        let fourcc = if FORMATS.contains(&fourcc) {
            fourcc
        } else {
            FORMATS[0]
        };
        let target = width as i64 * height as i64;
        let sizes = self.sizes();
        let &(w, h) = sizes
            .iter()
            .min_by_key(|(w, h)| ((*w as i64 * *h as i64) - target).abs())
            .unwrap_or(&sizes[0]);
        layout(fourcc, w, h).unwrap_or_else(Self::default_format)
    }

    fn process(&mut self, s: &mut CaptureSession) -> IoctlResult<()> {
        if !s.q.streaming {
            return Ok(());
        }
        if self.is_output() {
            return self.consume(s);
        }
        let brightness = self.ctrls.int(CID_BRIGHTNESS);
        while let Some(idx) = s.q.queued.pop_front() {
            let seq = s.q.sequence;
            let mut used = vec![];
            for (p, &size) in s.q.plane_sizes.clone().iter().enumerate() {
                let b = frame_byte(seq, p, brightness);
                let fill = self
                    .fmt
                    .planes
                    .get(p)
                    .map(|l| l.sizeimage)
                    .unwrap_or(size)
                    .min(size);
                if s.q.bufs.get(idx).and_then(|buf| buf.mem.get(p)).is_none() {
                    return Err(libc::EIO);
                }
                s.q.fill_plane(&self.ctx, idx, p, fill as usize, b)?;
                used.push(fill);
            }
            let buf = s.q.complete(idx, &used, BufferFlags::empty())?;
            if self.frame_log.enabled() {
                // What the guest reads: each plane's first bytesused bytes.
                let planes = (0..used.len())
                    .map(|p| {
                        s.q.read_plane(&self.ctx, idx, p, s.q.bytesused(idx, p) as usize)
                    })
                    .collect::<IoctlResult<Vec<_>>>()?;
                self.frame_log
                    .record(buf.sequence(), s.id, planes.iter().map(|v| &v[..]));
            }
            if self
                .ctx
                .subscribed(s.id, bindings::V4L2_EVENT_FRAME_SYNC, 0)
                .is_some()
            {
                let mut ev = bindings::v4l2_event {
                    type_: bindings::V4L2_EVENT_FRAME_SYNC,
                    ..Default::default()
                };
                ev.u.frame_sync.frame_sequence = seq;
                self.ctx.send_event(s.id, ev);
            }
            self.ctx
                .events
                .send_event(V4l2Event::DequeueBuffer(DequeueBufferEvent::new(s.id, buf)));
            self.count_source_frame();
        }
        Ok(())
    }

    /// `--source-change-every`: counts a produced frame; every N frames the
    /// signal toggles and every session subscribed to
    /// V4L2_EVENT_SOURCE_CHANGE for input 0 gets the event.
    fn count_source_frame(&mut self) {
        if self.source_change_every == 0 {
            return;
        }
        self.frames_since_change += 1;
        if self.frames_since_change < self.source_change_every {
            return;
        }
        self.frames_since_change = 0;
        self.signal_alternate = !self.signal_alternate;
        log::debug!(
            "capture: input signal changes resolution (alternate: {})",
            self.signal_alternate
        );
        self.send_source_change();
    }

    /// Sends V4L2_EVENT_SOURCE_CHANGE (input 0, resolution changed) to every
    /// subscribed session.
    pub fn send_source_change(&mut self) {
        let sessions: Vec<u32> = self
            .ctx
            .subs
            .iter()
            .filter(|(_, l)| {
                l.iter()
                    .any(|s| s.type_ == bindings::V4L2_EVENT_SOURCE_CHANGE && s.id == 0)
            })
            .map(|(&id, _)| id)
            .collect();
        for id in sessions {
            let mut ev = bindings::v4l2_event {
                type_: bindings::V4L2_EVENT_SOURCE_CHANGE,
                ..Default::default()
            };
            ev.u.src_change.changes = bindings::V4L2_EVENT_SRC_CH_RESOLUTION;
            self.ctx.send_event(id, ev);
        }
    }
}

/// Answers VIDIOC_QUERYCTRL / VIDIOC_QUERY_EXT_CTRL (the crate hands the
/// handler an opaque control id, so these are handled before dispatch).
pub fn query_ioctls<R: ReadFromDescriptorChain, W: WriteToDescriptorChain>(
    ctrls: &Controls,
    ioctl: V4l2Ioctl,
    reader: &mut R,
    writer: &mut W,
) -> Option<IoResult<()>> {
    match ioctl {
        V4l2Ioctl::VIDIOC_QUERYCTRL => Some(match reader.read_obj::<bindings::v4l2_queryctrl>() {
            Err(_) => writer.write_err_response(libc::EINVAL),
            Ok(q) => match ctrls.lookup(q.id, false).map(|i| ctrls.queryctrl(i)) {
                Some(Ok(mut r)) => {
                    if q.id >= CID_PRIVATE_BASE && q.id & !CTRL_ID_MASK == 0 {
                        r.id = q.id;
                    }
                    writer
                        .write_response(RespHeader::ok())
                        .and_then(|()| writer.write_obj(r))
                }
                Some(Err(e)) => writer.write_err_response(e),
                None => writer.write_err_response(libc::EINVAL),
            },
        }),
        V4l2Ioctl::VIDIOC_QUERY_EXT_CTRL => {
            Some(match reader.read_obj::<bindings::v4l2_query_ext_ctrl>() {
                Err(_) => writer.write_err_response(libc::EINVAL),
                Ok(q) => match ctrls.lookup(q.id, true) {
                    Some(i) => {
                        let mut r = ctrls.query_ext(i);
                        if q.id >= CID_PRIVATE_BASE && q.id & !CTRL_ID_MASK == 0 {
                            r.id = q.id;
                        }
                        writer
                            .write_response(RespHeader::ok())
                            .and_then(|()| writer.write_obj(r))
                    }
                    None => writer.write_err_response(libc::EINVAL),
                },
            })
        }
        _ => None,
    }
}

impl<R, W> VirtioMediaDevice<R, W> for CaptureDevice
where
    R: ReadFromDescriptorChain,
    W: WriteToDescriptorChain,
{
    type Session = CaptureSession;

    fn new_session(&mut self, session_id: u32) -> Result<Self::Session, i32> {
        Ok(CaptureSession {
            id: session_id,
            q: BufQueue::new(self.queue),
        })
    }

    fn close_session(&mut self, mut session: Self::Session) {
        session.q.release(&mut self.ctx);
        if self.active == Some(session.id) {
            self.active = None;
        }
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
        self.ctx.do_mmap(&session.q.mmap_offsets(), flags, offset)
    }

    fn do_munmap(&mut self, guest_addr: u64) -> Result<(), i32> {
        self.ctx.do_munmap(guest_addr)
    }
}

impl VirtioMediaIoctlHandler for CaptureDevice {
    type Session = CaptureSession;

    fn enum_fmt(
        &mut self,
        _s: &Self::Session,
        queue: QueueType,
        index: u32,
    ) -> IoctlResult<bindings::v4l2_fmtdesc> {
        if queue != self.queue {
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

    fn g_fmt(
        &mut self,
        _s: &Self::Session,
        queue: QueueType,
    ) -> IoctlResult<bindings::v4l2_format> {
        if queue != self.queue {
            return Err(libc::EINVAL);
        }
        Ok(fmt_to_v4l2(queue, &self.fmt))
    }

    fn try_fmt(
        &mut self,
        _s: &Self::Session,
        queue: QueueType,
        f: bindings::v4l2_format,
    ) -> IoctlResult<bindings::v4l2_format> {
        if queue != self.queue {
            return Err(libc::EINVAL);
        }
        let (fourcc, w, h) = fmt_request(queue, &f);
        Ok(fmt_to_v4l2(queue, &self.closest(fourcc, w, h)))
    }

    fn s_fmt(
        &mut self,
        s: &mut Self::Session,
        queue: QueueType,
        f: bindings::v4l2_format,
    ) -> IoctlResult<bindings::v4l2_format> {
        if queue != self.queue {
            return Err(libc::EINVAL);
        }
        // Busy while any session has buffers (vb2_is_busy).
        if self.active.is_some() || !s.q.bufs.is_empty() {
            return Err(libc::EBUSY);
        }
        let (fourcc, w, h) = fmt_request(queue, &f);
        let new = self.closest(fourcc, w, h);
        self.set_format(new);
        Ok(fmt_to_v4l2(queue, &self.fmt))
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
        let &(width, height) = self.sizes().get(index as usize).ok_or(libc::EINVAL)?;
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

    fn enum_frameintervals(
        &mut self,
        _s: &Self::Session,
        index: u32,
        pixel_format: u32,
        width: u32,
        height: u32,
    ) -> IoctlResult<bindings::v4l2_frmivalenum> {
        if !FORMATS.contains(&pixel_format) || !self.sizes().contains(&(width, height)) {
            return Err(libc::EINVAL);
        }
        let &(numerator, denominator) = INTERVALS.get(index as usize).ok_or(libc::EINVAL)?;
        Ok(bindings::v4l2_frmivalenum {
            index,
            pixel_format,
            width,
            height,
            type_: bindings::v4l2_frmivaltypes_V4L2_FRMIVAL_TYPE_DISCRETE,
            __bindgen_anon_1: bindings::v4l2_frmivalenum__bindgen_ty_1 {
                discrete: bindings::v4l2_fract {
                    numerator,
                    denominator,
                },
            },
            ..Default::default()
        })
    }

    fn g_parm(
        &mut self,
        _s: &Self::Session,
        queue: QueueType,
    ) -> IoctlResult<bindings::v4l2_streamparm> {
        if queue != self.queue {
            return Err(libc::EINVAL);
        }
        let mut parm = bindings::v4l2_streamparm {
            type_: queue as u32,
            ..Default::default()
        };
        let timeperframe = bindings::v4l2_fract {
            numerator: self.interval.0,
            denominator: self.interval.1,
        };
        if self.is_output() {
            parm.parm.output = bindings::v4l2_outputparm {
                capability: bindings::V4L2_CAP_TIMEPERFRAME,
                timeperframe,
                ..Default::default()
            };
        } else {
            parm.parm.capture = bindings::v4l2_captureparm {
                capability: bindings::V4L2_CAP_TIMEPERFRAME,
                timeperframe,
                ..Default::default()
            };
        }
        Ok(parm)
    }

    fn s_parm(
        &mut self,
        s: &mut Self::Session,
        parm: bindings::v4l2_streamparm,
    ) -> IoctlResult<bindings::v4l2_streamparm> {
        let queue = QueueType::n(parm.type_).ok_or(libc::EINVAL)?;
        if queue != self.queue {
            return Err(libc::EINVAL);
        }
        // SAFETY: the member read matches the queue direction.
        let tpf = unsafe {
            if self.is_output() {
                parm.parm.output.timeperframe
            } else {
                parm.parm.capture.timeperframe
            }
        };
        if tpf.numerator != 0 && tpf.denominator != 0 {
            let want = tpf.denominator as f64 / tpf.numerator as f64;
            self.interval = *INTERVALS
                .iter()
                .min_by(|a, b| {
                    let fa = (a.1 as f64 / a.0 as f64 - want).abs();
                    let fb = (b.1 as f64 / b.0 as f64 - want).abs();
                    fa.total_cmp(&fb)
                })
                .unwrap_or(&INTERVALS[0]);
        }
        self.g_parm(s, queue)
    }

    fn enuminput(&mut self, _s: &Self::Session, index: u32) -> IoctlResult<bindings::v4l2_input> {
        if self.is_output() {
            return Err(libc::ENOTTY);
        }
        if index != 0 {
            return Err(libc::EINVAL);
        }
        let mut input = bindings::v4l2_input {
            index: 0,
            type_: bindings::V4L2_INPUT_TYPE_CAMERA,
            ..Default::default()
        };
        for (i, b) in b"Camera 0".iter().enumerate() {
            input.name[i] = *b;
        }
        Ok(input)
    }

    fn g_input(&mut self, _s: &Self::Session) -> IoctlResult<i32> {
        if self.is_output() {
            return Err(libc::ENOTTY);
        }
        Ok(0)
    }

    fn s_input(&mut self, _s: &mut Self::Session, input: i32) -> IoctlResult<i32> {
        if self.is_output() {
            return Err(libc::ENOTTY);
        }
        if input == 0 {
            Ok(0)
        } else {
            Err(libc::EINVAL)
        }
    }

    fn enumoutput(&mut self, _s: &Self::Session, index: u32) -> IoctlResult<bindings::v4l2_output> {
        if !self.is_output() {
            return Err(libc::ENOTTY);
        }
        if index != 0 {
            return Err(libc::EINVAL);
        }
        let mut output = bindings::v4l2_output {
            index: 0,
            type_: bindings::V4L2_OUTPUT_TYPE_ANALOG,
            ..Default::default()
        };
        for (i, b) in b"Display 0".iter().enumerate() {
            output.name[i] = *b;
        }
        Ok(output)
    }

    fn g_output(&mut self, _s: &Self::Session) -> IoctlResult<i32> {
        if !self.is_output() {
            return Err(libc::ENOTTY);
        }
        Ok(0)
    }

    fn s_output(&mut self, _s: &mut Self::Session, output: i32) -> IoctlResult<i32> {
        if !self.is_output() {
            return Err(libc::ENOTTY);
        }
        if output == 0 {
            Ok(0)
        } else {
            Err(libc::EINVAL)
        }
    }

    fn reqbufs(
        &mut self,
        s: &mut Self::Session,
        queue: QueueType,
        memory: MemoryType,
        count: u32,
        _flags: MemoryConsistency,
    ) -> IoctlResult<bindings::v4l2_requestbuffers> {
        if queue != self.queue {
            return Err(libc::EINVAL);
        }
        if matches!(self.active, Some(id) if id != s.id) {
            return Err(libc::EBUSY);
        }
        let sizes: Vec<u32> = self.fmt.planes.iter().map(|p| p.sizeimage).collect();
        let count = s.q.reqbufs(&mut self.ctx, memory, count, &sizes)?;
        self.active = (count > 0).then_some(s.id);
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
        if queue != self.queue {
            return Err(libc::EINVAL);
        }
        // A query (count 0) never says EBUSY, as in vb2.
        if count > 0 && matches!(self.active, Some(id) if id != s.id) {
            return Err(libc::EBUSY);
        }
        let needed: Vec<u32> = self.fmt.planes.iter().map(|p| p.sizeimage).collect();
        let created =
            s.q.create_bufs(&mut self.ctx, count, memory, format, &needed)?;
        if !s.q.bufs.is_empty() {
            self.active = Some(s.id);
        }
        Ok(created)
    }

    fn querybuf(
        &mut self,
        s: &Self::Session,
        queue: QueueType,
        index: u32,
    ) -> IoctlResult<V4l2Buffer> {
        if queue != self.queue {
            return Err(libc::EINVAL);
        }
        s.q.querybuf(index)
    }

    fn qbuf(
        &mut self,
        s: &mut Self::Session,
        buffer: V4l2Buffer,
        regions: Vec<Vec<SgEntry>>,
    ) -> IoctlResult<V4l2Buffer> {
        let out = s.q.qbuf(&buffer, regions)?;
        self.process(s)?;
        Ok(out)
    }

    fn streamon(&mut self, s: &mut Self::Session, queue: QueueType) -> IoctlResult<()> {
        if queue != self.queue {
            return Err(libc::EINVAL);
        }
        s.q.streamon()?;
        self.frames_since_change = 0;
        self.process(s)
    }

    fn streamoff(&mut self, s: &mut Self::Session, queue: QueueType) -> IoctlResult<()> {
        if queue != self.queue {
            return Err(libc::EINVAL);
        }
        s.q.streamoff();
        Ok(())
    }

    fn g_selection(
        &mut self,
        _s: &Self::Session,
        sel_type: SelectionType,
        target: SelectionTarget,
    ) -> IoctlResult<bindings::v4l2_rect> {
        if !self.crop_mode || self.is_output() {
            return Err(libc::ENOTTY);
        }
        if sel_type != SelectionType::Capture {
            return Err(libc::EINVAL);
        }
        match target {
            SelectionTarget::Crop => Ok(self.crop),
            SelectionTarget::CropDefault
            | SelectionTarget::CropBounds
            | SelectionTarget::Compose
            | SelectionTarget::ComposeDefault
            | SelectionTarget::ComposeBounds => Ok(Self::full_rect(&self.fmt)),
            _ => Err(libc::EINVAL),
        }
    }

    fn s_selection(
        &mut self,
        _s: &mut Self::Session,
        sel_type: SelectionType,
        target: SelectionTarget,
        rect: bindings::v4l2_rect,
        flags: SelectionFlags,
    ) -> IoctlResult<bindings::v4l2_rect> {
        if !self.crop_mode || self.is_output() {
            return Err(libc::ENOTTY);
        }
        if sel_type != SelectionType::Capture {
            return Err(libc::EINVAL);
        }
        match target {
            SelectionTarget::Crop => {
                self.crop = self.adjust_crop(rect, flags)?;
                Ok(self.crop)
            }
            // No scaler: the crop is composed into the whole frame, so
            // COMPOSE can only be the full frame.
            SelectionTarget::Compose => Ok(Self::full_rect(&self.fmt)),
            _ => Err(libc::EINVAL),
        }
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
        let others: &[u32] = if self.is_output() {
            &[]
        } else {
            &[
                bindings::V4L2_EVENT_FRAME_SYNC,
                bindings::V4L2_EVENT_SOURCE_CHANGE,
            ]
        };
        subscribe(&mut self.ctx, &self.ctrls, s.id, event, flags, others)
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

/// Ioctls the project devices refuse with ENOTTY before the crate parses
/// them. VIDIOC_PREPARE_BUF: a prepared buffer must later be queued without
/// its bytesused and data_offset being looked at again, which the crate's
/// QBUF parsing (it rejects bytesused > length) cannot do.
pub fn unsupported_ioctls<W: WriteToDescriptorChain>(
    ioctl: V4l2Ioctl,
    writer: &mut W,
) -> Option<IoResult<()>> {
    match ioctl {
        V4l2Ioctl::VIDIOC_PREPARE_BUF => Some(writer.write_err_response(libc::ENOTTY)),
        _ => None,
    }
}

pub fn which_raw(which: &v4l2r::ioctl::CtrlWhich) -> IoctlResult<u32> {
    use v4l2r::ioctl::CtrlWhich;
    match which {
        CtrlWhich::Current => Ok(CTRL_WHICH_CUR_VAL),
        CtrlWhich::Default => Ok(CTRL_WHICH_DEF_VAL),
        CtrlWhich::Class(c) => Ok(*c),
        CtrlWhich::Request(_) => Err(libc::EINVAL),
    }
}

/// Shared SUBSCRIBE_EVENT: control events for existing controls, plus the
/// event types in `others`.
pub fn subscribe(
    ctx: &mut DevCtx,
    ctrls: &Controls,
    session: u32,
    event: EventType,
    flags: SubscribeEventFlags,
    others: &[u32],
) -> IoctlResult<()> {
    let (type_, id) = match event {
        EventType::Ctrl(id) => (bindings::V4L2_EVENT_CTRL, id),
        EventType::VSync => (bindings::V4L2_EVENT_VSYNC, 0),
        EventType::Eos => (bindings::V4L2_EVENT_EOS, 0),
        EventType::FrameSync => (bindings::V4L2_EVENT_FRAME_SYNC, 0),
        EventType::SourceChange(id) => (bindings::V4L2_EVENT_SOURCE_CHANGE, id),
        EventType::MotionDet => (bindings::V4L2_EVENT_MOTION_DET, 0),
    };
    if type_ == bindings::V4L2_EVENT_CTRL {
        let i = ctrls.find(id).ok_or(libc::EINVAL)?;
        ctx.subscribe(
            session,
            Subscription {
                type_,
                id,
                flags: flags.bits(),
            },
        );
        // Like the control framework (send_initial_event): an initial
        // event for every control but control classes, without
        // CH_VALUE for write-only ones (buttons); payload controls get
        // one too, with no value.
        let d = &ctrls.defs[i];
        if flags.contains(SubscribeEventFlags::SEND_INITIAL) && d.type_ != CTRL_TYPE_CTRL_CLASS {
            let changes = if d.flags & CTRL_FLAG_WRITE_ONLY == 0 {
                EVENT_CTRL_CH_VALUE | EVENT_CTRL_CH_FLAGS
            } else {
                EVENT_CTRL_CH_FLAGS
            };
            let ev = ctrls.ctrl_event(i, changes);
            ctx.send_event(session, ev);
        }
        return Ok(());
    }
    if !others.contains(&type_) {
        return Err(libc::EINVAL);
    }
    ctx.subscribe(
        session,
        Subscription {
            type_,
            id,
            flags: flags.bits(),
        },
    );
    Ok(())
}
