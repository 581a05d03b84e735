// SPDX-License-Identifier: GPL-2.0
//! `--backend decoder`: a V4L2 stateful video decoder
//! (`Documentation/userspace-api/media/v4l/dev-decoder.rst`) on the
//! multi-planar mem2mem API, decoding with libavcodec (`crate::avcodec`).
//!
//! OUTPUT takes H.264, HEVC, VP8 and VP9 (those this libavcodec decodes);
//! CAPTURE gives NV12, YU12, NM12 or YM12. Decoding runs inside the ioctl
//! that makes it possible (QBUF, STREAMON, DECODER_CMD), like the `m2m`
//! backend's conversions.
//!
//! Decoded pictures wait in the session's `ready` list, in display order,
//! with markers between them: a `Change` where the picture size changes
//! (the first picture of a stream included) and an `Eos` where a drain
//! ends. CAPTURE buffers take pictures from its front; a marker ends the
//! run of pictures before it with a `V4L2_BUF_FLAG_LAST` buffer (the last
//! picture itself when the marker is already known, else an empty buffer)
//! and sends its event before that buffer (SOURCE_CHANGE or EOS: a client
//! that sees LAST finds the event pending, as with kernel drivers).
//! Only a few pictures are decoded ahead of the CAPTURE queue: past that,
//! OUTPUT buffers stay queued, as with hardware that decodes into CAPTURE
//! buffers.

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
use crate::avcodec::{Coded, Decoder, Picture, Unit};

pub const SRC: QueueType = QueueType::VideoOutputMplane;
pub const DST: QueueType = QueueType::VideoCaptureMplane;

pub const DEC_CMD_START: u32 = 0;
pub const DEC_CMD_STOP: u32 = 1;

/// Pictures decoded ahead of the CAPTURE queue at most.
const READY_LIMIT: usize = 2;

/// `V4L2_CID_MIN_BUFFERS_FOR_CAPTURE`: pictures are copied out of
/// libavcodec, so no CAPTURE buffer is ever held as a reference; two let a
/// client overlap its work with the decoding.
const MIN_CAPTURE_BUFFERS: i64 = 2;

const FMT_FLAG_COMPRESSED: u32 = 0x0001;
const FMT_FLAG_CONTINUOUS_BYTESTREAM: u32 = 0x0004;
const FMT_FLAG_DYN_RESOLUTION: u32 = 0x0008;

/// Geometry of the decoded stream: the frame buffer (`width`x`height`,
/// the picture size rounded up to even) and the visible picture in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamInfo {
    pub width: u32,
    pub height: u32,
    pub visible_width: u32,
    pub visible_height: u32,
}

impl StreamInfo {
    fn of_size(w: u32, h: u32) -> StreamInfo {
        let (width, height) = clamp_size(w, h);
        StreamInfo {
            width,
            height,
            visible_width: w.min(width),
            visible_height: h.min(height),
        }
    }
}

enum Item {
    Picture(Picture),
    Change(StreamInfo),
    Eos,
}

/// Where a drain (DECODER_CMD STOP) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drain {
    None,
    /// This many OUTPUT buffers (those queued before STOP) are still to be
    /// decoded before the decoder is flushed.
    Inputs(usize),
    /// Flushed: the `Eos` marker is in `ready`.
    Flushed,
}

pub struct DecSession {
    pub id: u32,
    /// OUTPUT format (coded; width and height as the client set them).
    pub coded: Format,
    /// CAPTURE pixel format.
    pub raw_fourcc: u32,
    /// What G_FMT(CAPTURE) and G_SELECTION report.
    pub stream: StreamInfo,
    /// Colorimetry set on OUTPUT, reported on both queues.
    pub col: Colorimetry,
    pub src: BufQueue,
    pub dst: BufQueue,
    pub ctrls: Controls,
    dec: Option<Decoder>,
    /// Access units of the OUTPUT buffer being decoded, not yet decoded.
    units: VecDeque<Unit>,
    /// The OUTPUT buffer being decoded, and whether all went well so far;
    /// returned once its last unit is decoded.
    input: Option<(usize, bool)>,
    ready: VecDeque<Item>,
    /// Geometry of the last picture put in `ready` (a different one gets
    /// a `Change` marker before it).
    decoded: Option<(u32, u32)>,
    /// A `Change` reached the client (initial header parsing done).
    parsed: bool,
    /// CAPTURE may receive pictures: its buffers were set up for `stream`.
    configured: bool,
    /// A drain finished: nothing is decoded or returned until START or a
    /// restart of a queue.
    stopped: bool,
    drain: Drain,
    timestamps: Timestamps,
}

impl VirtioMediaDeviceSession for DecSession {
    fn poll_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        None
    }
}

impl DecSession {
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

    /// The CAPTURE format for the current stream geometry.
    pub fn raw_format(&self) -> Format {
        raw_layout(self.raw_fourcc, self.stream.width, self.stream.height)
    }

    fn visible(&self) -> bindings::v4l2_rect {
        bindings::v4l2_rect {
            left: 0,
            top: 0,
            width: self.stream.visible_width,
            height: self.stream.visible_height,
        }
    }

    /// CAPTURE is not set up for the stream yet: the initial source
    /// change, or a resolution change, waits for the client.
    fn capture_waiting(&self) -> bool {
        !self.configured && (self.parsed || self.ready.iter().any(|i| matches!(i, Item::Change(_))))
    }

    pub fn pictures_ready(&self) -> usize {
        self.ready
            .iter()
            .filter(|i| matches!(i, Item::Picture(_)))
            .count()
    }

    /// Back to the Initialization state (new OUTPUT format, or OUTPUT
    /// buffers freed): the next stream is parsed from scratch.
    fn reset_stream(&mut self) {
        self.dec = None;
        self.units.clear();
        self.input = None;
        self.ready.clear();
        self.decoded = None;
        self.parsed = false;
        self.stopped = false;
        self.drain = Drain::None;
    }

    /// True if CAPTURE buffers set up for the current format can take
    /// pictures of `info` unchanged.
    fn capture_fits(&self, info: &StreamInfo) -> bool {
        let new = raw_layout(self.raw_fourcc, info.width, info.height);
        let old = self.raw_format();
        self.dst.streaming
            && (new.width, new.height) == (old.width, old.height)
            && new.planes.len() == self.dst.plane_sizes.len()
            && new
                .planes
                .iter()
                .zip(&self.dst.plane_sizes)
                .all(|(l, &have)| l.sizeimage <= have)
    }
}

pub struct DecoderDevice {
    pub ctx: DevCtx,
    /// Coded formats this libavcodec decodes, in ENUM_FMT order.
    pub coded_formats: Vec<u32>,
    /// libavcodec threads per session.
    pub threads: usize,
}

impl DecoderDevice {
    pub fn new(ctx: DevCtx, threads: usize) -> Self {
        let coded_formats = Coded::ALL
            .into_iter()
            .filter(|c| c.decodable())
            .map(coded_fourcc)
            .collect();
        DecoderDevice {
            ctx,
            coded_formats,
            threads,
        }
    }

    fn controls() -> Controls {
        Controls::new(vec![
            class_control(CID_USER_CLASS, "User Controls"),
            read_only_int(
                CID_MIN_BUFFERS_FOR_CAPTURE,
                "Min Number of Capture Buffers",
                1,
                32,
                MIN_CAPTURE_BUFFERS,
            ),
        ])
    }

    fn emit(&mut self, session: u32, buf: V4l2Buffer) {
        self.ctx
            .events
            .send_event(V4l2Event::DequeueBuffer(DequeueBufferEvent::new(
                session, buf,
            )));
    }

    fn send(&mut self, s: &DecSession, type_: u32) {
        if self.ctx.subscribed(s.id, type_, 0).is_some() {
            self.ctx.send_event(s.id, event(type_));
        }
    }

    fn process(&mut self, s: &mut DecSession) -> IoctlResult<()> {
        self.decode(s)?;
        self.output(s)
    }

    /// Decodes queued OUTPUT buffers while few enough pictures wait.
    /// Decodes queued OUTPUT buffers, one access unit at a time, while
    /// few enough pictures wait: a buffer that holds many frames is not
    /// decoded (nor returned) all at once, so memory stays bounded
    /// whatever the guest queues.
    fn decode(&mut self, s: &mut DecSession) -> IoctlResult<()> {
        while s.src.streaming && !s.stopped && s.pictures_ready() < READY_LIMIT {
            if let Some(unit) = s.units.pop_front() {
                let ok = self.decode_unit(s, &unit);
                if let Some((_, all_ok)) = s.input.as_mut() {
                    *all_ok &= ok;
                }
                continue;
            }
            if s.capture_waiting() {
                // dev-decoder.rst: the buffer whose data made the source
                // change is returned once CAPTURE is set up. (A client
                // polling for the event then still has a queued OUTPUT
                // buffer, which keeps vb2's m2m poll from saying EPOLLERR.)
                break;
            }
            if s.input.is_some() && s.decoded.is_none() {
                // The parser holds the buffer's last unit until the next
                // starts: its headers may give the size now.
                let size = s.dec.as_ref().and_then(|d| d.probe_size());
                Self::headers_parsed(s, size);
                if s.capture_waiting() {
                    continue;
                }
            }
            if let Some((idx, ok)) = s.input.take() {
                // Every unit of the buffer went through: it is done.
                let used = s.src.bytesused(idx, 0);
                let flags = if ok {
                    BufferFlags::empty()
                } else {
                    BufferFlags::ERROR
                };
                let b = s.src.complete(idx, &[used], flags)?;
                self.emit(s.id, b);
                if let Drain::Inputs(n) = s.drain {
                    s.drain = Drain::Inputs(n.saturating_sub(1));
                }
                continue;
            }
            match s.drain {
                Drain::Inputs(0) | Drain::Flushed => break,
                Drain::None | Drain::Inputs(_) => {}
            }
            let Some(idx) = s.src.queued.pop_front() else {
                break;
            };
            let ok = self.split_buffer(s, idx);
            s.input = Some((idx, ok));
        }
        if s.drain == Drain::Inputs(0) && s.input.is_none() && s.units.is_empty() && !s.stopped {
            self.flush(s);
        }
        Ok(())
    }

    /// Reads OUTPUT buffer `idx` and splits it into access units
    /// (`s.units`); false if something in it failed.
    fn split_buffer(&mut self, s: &mut DecSession, idx: usize) -> bool {
        let used = s.src.bytesused(idx, 0) as usize;
        let data = match s.src.read_plane(&self.ctx, idx, 0, used) {
            Ok(d) => d,
            Err(e) => {
                log::warn!(
                    "decoder session {}: cannot read OUTPUT buffer {idx} (errno {e})",
                    s.id
                );
                return false;
            }
        };
        let ts = s
            .src
            .bufs
            .get(idx)
            .map(|b| b.raw.timestamp)
            .unwrap_or_default();
        let token = s.timestamps.token(ts);
        if s.dec.is_none() {
            let Some(coded) = coded_from_fourcc(s.coded.fourcc) else {
                return false;
            };
            match Decoder::new(coded, self.threads) {
                Ok(d) => s.dec = Some(d),
                Err(e) => {
                    log::error!(
                        "decoder session {}: cannot open a {coded:?} decoder: {}",
                        s.id,
                        e.0
                    );
                    return false;
                }
            }
        }
        let Some(dec) = s.dec.as_mut() else {
            return false;
        };
        let (units, res) = dec.split(&data, token);
        s.units.extend(units);
        if let Err(e) = &res {
            log::debug!("decoder session {}: OUTPUT buffer {idx}: {}", s.id, e.0);
        }
        res.is_ok()
    }

    /// Decodes one access unit; false if libavcodec rejected it.
    fn decode_unit(&mut self, s: &mut DecSession, unit: &Unit) -> bool {
        let Some(dec) = s.dec.as_mut() else {
            return false;
        };
        let mut pics = VecDeque::new();
        let res = dec.decode_unit(unit, &mut pics);
        if let Err(e) = &res {
            log::debug!(
                "decoder session {}: {} bytes not decoded: {}",
                s.id,
                unit.data.len(),
                e.0
            );
        }
        for p in pics {
            Self::accept(s, p);
        }
        if s.decoded.is_none() {
            let size = s.dec.as_ref().and_then(|d| d.stream_size());
            Self::headers_parsed(s, size);
        }
        res.is_ok()
    }

    /// Initial header parsing ends when the headers give the size, as
    /// with hardware, not when the first picture comes out (with B-frames,
    /// several units later): the client that waits for SOURCE_CHANGE still
    /// has the OUTPUT buffer of those headers queued (m2m poll would say
    /// EPOLLERR with none; GStreamer stops there), and one that feeds a
    /// unit at a time and waits for it back (FFmpeg) gets the event.
    fn headers_parsed(s: &mut DecSession, size: Option<(u32, u32)>) {
        if let Some((w, h)) = size {
            s.decoded = Some((w, h));
            s.ready.push_back(Item::Change(StreamInfo::of_size(w, h)));
            if let Some(dec) = s.dec.as_mut() {
                dec.size_known();
            }
        }
    }

    /// End of a drain: everything libavcodec holds comes out, then `Eos`.
    fn flush(&mut self, s: &mut DecSession) {
        if let Some(dec) = s.dec.as_mut() {
            let mut pics = VecDeque::new();
            if let Err(e) = dec.drain(&mut pics) {
                log::debug!("decoder session {}: drain: {}", s.id, e.0);
            }
            for p in pics {
                Self::accept(s, p);
            }
        }
        s.ready.push_back(Item::Eos);
        s.drain = Drain::Flushed;
    }

    fn accept(s: &mut DecSession, pic: Picture) {
        let size = (pic.width(), pic.height());
        if s.decoded != Some(size) {
            s.decoded = Some(size);
            s.ready
                .push_back(Item::Change(StreamInfo::of_size(size.0, size.1)));
        }
        s.ready.push_back(Item::Picture(pic));
    }

    /// Moves pictures and markers from `ready` to CAPTURE buffers.
    fn output(&mut self, s: &mut DecSession) -> IoctlResult<()> {
        loop {
            match s.ready.front() {
                None => return Ok(()),
                Some(Item::Change(info)) if !s.parsed => {
                    // Initial header parsing: no LAST buffer. A client that
                    // already streams CAPTURE buffers of the right format
                    // (set up from the OUTPUT size) goes on without a
                    // restart; otherwise CAPTURE waits for one.
                    let info = *info;
                    s.ready.pop_front();
                    let fits = s.capture_fits(&info);
                    s.stream = info;
                    s.parsed = true;
                    s.configured = fits;
                    log::debug!("decoder session {}: stream is {info:?}", s.id);
                    self.send(s, bindings::V4L2_EVENT_SOURCE_CHANGE);
                }
                Some(Item::Change(_)) | Some(Item::Eos) => {
                    // The picture before the marker went out without LAST:
                    // an empty buffer carries it.
                    if !s.dst.streaming || !s.configured {
                        return Ok(());
                    }
                    let Some(idx) = s.dst.queued.pop_front() else {
                        return Ok(());
                    };
                    self.end_run(s, |dev, s| dev.return_empty_last(s, idx))?;
                }
                Some(Item::Picture(_)) => {
                    if !s.dst.streaming || !s.configured || s.stopped {
                        return Ok(());
                    }
                    let Some(idx) = s.dst.queued.pop_front() else {
                        return Ok(());
                    };
                    let Some(Item::Picture(pic)) = s.ready.pop_front() else {
                        return Ok(());
                    };
                    // The last picture before a marker carries LAST itself.
                    let last = match s.ready.front() {
                        Some(Item::Eos) => true,
                        Some(Item::Change(_)) => s.parsed,
                        _ => false,
                    };
                    if last {
                        self.end_run(s, |dev, s| dev.return_picture(s, idx, &pic, true))?;
                    } else {
                        self.return_picture(s, idx, &pic, false)?;
                    }
                }
            }
        }
    }

    /// Handles the marker at the front of `ready` around `ret`, which
    /// returns the LAST buffer: its event (SOURCE_CHANGE or EOS) goes
    /// before it, so a client that sees LAST finds the event pending.
    fn end_run(
        &mut self,
        s: &mut DecSession,
        ret: impl FnOnce(&mut Self, &mut DecSession) -> IoctlResult<()>,
    ) -> IoctlResult<()> {
        match s.ready.pop_front() {
            Some(Item::Change(info)) => {
                s.stream = info;
                s.configured = false;
                log::debug!("decoder session {}: resolution change to {info:?}", s.id);
                self.send(s, bindings::V4L2_EVENT_SOURCE_CHANGE);
                ret(self, s)?;
            }
            Some(Item::Eos) => {
                self.send(s, bindings::V4L2_EVENT_EOS);
                ret(self, s)?;
                s.stopped = true;
                s.drain = Drain::None;
                log::debug!("decoder session {}: drain complete", s.id);
            }
            other => {
                // Not a marker: put it back, nothing to end.
                if let Some(item) = other {
                    s.ready.push_front(item);
                }
                ret(self, s)?;
            }
        }
        Ok(())
    }

    fn return_empty_last(&mut self, s: &mut DecSession, idx: usize) -> IoctlResult<()> {
        let zeros = vec![0; s.dst.plane_sizes.len()];
        let ts = Some(s.timestamps.latest());
        let b = s.dst.complete_ts(idx, &zeros, BufferFlags::LAST, ts)?;
        self.emit(s.id, b);
        Ok(())
    }

    fn return_picture(
        &mut self,
        s: &mut DecSession,
        idx: usize,
        pic: &Picture,
        last: bool,
    ) -> IoctlResult<()> {
        // Pictures before a resolution change still have the old size,
        // which the buffers were allocated for.
        let fmt = raw_layout(s.raw_fourcc, pic.width(), pic.height());
        let mut flags = if last {
            BufferFlags::LAST
        } else {
            BufferFlags::empty()
        };
        let mut used = vec![0; s.dst.plane_sizes.len()];
        match picture_planes(pic, &fmt) {
            Some(planes) if planes.len() == used.len() => {
                for (p, data) in planes.iter().enumerate() {
                    if s.dst.write_plane(&self.ctx, idx, p, data).is_err()
                        || data.len() > s.dst.plane_len(idx, p) as usize
                    {
                        flags |= BufferFlags::ERROR;
                        break;
                    }
                    used[p] = data.len() as u32;
                }
            }
            _ => flags |= BufferFlags::ERROR,
        }
        if flags.contains(BufferFlags::ERROR) {
            log::warn!(
                "decoder session {}: a {}x{} picture does not fit CAPTURE buffer {idx}",
                s.id,
                pic.width(),
                pic.height()
            );
            used.iter_mut().for_each(|u| *u = 0);
        } else if pic.corrupt {
            flags |= BufferFlags::ERROR;
        }
        let ts = s.timestamps.lookup(pic.token);
        let b = s.dst.complete_ts(idx, &used, flags, Some(ts))?;
        self.emit(s.id, b);
        Ok(())
    }

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

    fn coded_format(&self, f: &bindings::v4l2_format) -> Format {
        let (fourcc, w, h) = fmt_request(SRC, f);
        let fourcc = if self.coded_formats.contains(&fourcc) {
            fourcc
        } else {
            self.coded_formats.first().copied().unwrap_or(FMT_H264)
        };
        // 0x0 is allowed: the size comes from the stream.
        let (w, h) = if w == 0 || h == 0 {
            (0, 0)
        } else {
            clamp_size(w, h)
        };
        // SAFETY: the decoder queues are multi-planar.
        let requested = unsafe { f.fmt.pix_mp.plane_fmt[0].sizeimage };
        coded_layout(fourcc, w, h, coded_sizeimage(w, h, requested))
    }
}

impl<R, W> VirtioMediaDevice<R, W> for DecoderDevice
where
    R: ReadFromDescriptorChain,
    W: WriteToDescriptorChain,
{
    type Session = DecSession;

    fn new_session(&mut self, session_id: u32) -> Result<Self::Session, i32> {
        let mut src = BufQueue::new(SRC);
        let mut dst = BufQueue::new(DST);
        src.ts_copy = true;
        dst.ts_copy = true;
        let fourcc = self.coded_formats.first().copied().unwrap_or(FMT_H264);
        let (w, h) = (640, 480);
        Ok(DecSession {
            id: session_id,
            coded: coded_layout(fourcc, w, h, coded_sizeimage(w, h, 0)),
            raw_fourcc: RAW_FORMATS[0],
            stream: StreamInfo::of_size(w, h),
            col: Colorimetry::default(),
            src,
            dst,
            ctrls: Self::controls(),
            dec: None,
            units: VecDeque::new(),
            input: None,
            ready: VecDeque::new(),
            decoded: None,
            parsed: false,
            configured: false,
            stopped: false,
            drain: Drain::None,
            timestamps: Timestamps::default(),
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

impl VirtioMediaIoctlHandler for DecoderDevice {
    type Session = DecSession;

    fn enum_fmt(
        &mut self,
        _s: &Self::Session,
        queue: QueueType,
        index: u32,
    ) -> IoctlResult<bindings::v4l2_fmtdesc> {
        let i = index as usize;
        match queue {
            SRC => {
                let &f = self.coded_formats.get(i).ok_or(libc::EINVAL)?;
                let mut flags = FMT_FLAG_COMPRESSED | FMT_FLAG_DYN_RESOLUTION;
                if matches!(f, FMT_H264 | FMT_HEVC) {
                    flags |= FMT_FLAG_CONTINUOUS_BYTESTREAM;
                }
                Ok(fmtdesc(queue, index, f, flags))
            }
            DST => Ok(fmtdesc(
                queue,
                index,
                *RAW_FORMATS.get(i).ok_or(libc::EINVAL)?,
                0,
            )),
            _ => Err(libc::EINVAL),
        }
    }

    fn g_fmt(&mut self, s: &Self::Session, queue: QueueType) -> IoctlResult<bindings::v4l2_format> {
        let mut f = match queue {
            SRC => fmt_to_v4l2(queue, &s.coded),
            DST => fmt_to_v4l2(queue, &s.raw_format()),
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
                fmt_to_v4l2(queue, &self.coded_format(&f)),
                Colorimetry::from_request(&f),
            ),
            DST => {
                // No scaler: the frame size is the stream's.
                let (fourcc, _, _) = fmt_request(queue, &f);
                let fmt = raw_layout(fourcc, s.stream.width, s.stream.height);
                (fmt_to_v4l2(queue, &fmt), s.col)
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
                if !s.src.bufs.is_empty() || !s.dst.bufs.is_empty() {
                    return Err(libc::EBUSY);
                }
                s.coded = self.coded_format(&f);
                if s.coded.width != 0 {
                    // A placeholder until the stream says otherwise.
                    s.stream = StreamInfo::of_size(s.coded.width, s.coded.height);
                }
                s.col = Colorimetry::from_request(&f);
                s.reset_stream();
                self.g_fmt(s, queue)
            }
            DST => {
                if !s.dst.bufs.is_empty() {
                    return Err(libc::EBUSY);
                }
                let (fourcc, _, _) = fmt_request(queue, &f);
                s.raw_fourcc = raw_layout(fourcc, 16, 16).fourcc;
                self.g_fmt(s, queue)
            }
            _ => Err(libc::EINVAL),
        }
    }

    fn enum_framesizes(
        &mut self,
        _s: &Self::Session,
        index: u32,
        pixel_format: u32,
    ) -> IoctlResult<bindings::v4l2_frmsizeenum> {
        if !self.coded_formats.contains(&pixel_format) && !RAW_FORMATS.contains(&pixel_format) {
            return Err(libc::EINVAL);
        }
        framesizes(index, pixel_format)
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
            SRC => s.coded.planes.iter().map(|p| p.sizeimage).collect(),
            _ => s.raw_format().planes.iter().map(|p| p.sizeimage).collect(),
        };
        let count = s
            .q_mut(queue)?
            .reqbufs(&mut self.ctx, memory, count, &sizes)?;
        if queue == SRC && count == 0 {
            // Seek -> Initialization (dev-decoder.rst).
            s.reset_stream();
        }
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
            SRC => s.coded.planes.iter().map(|p| p.sizeimage).collect(),
            _ => s.raw_format().planes.iter().map(|p| p.sizeimage).collect(),
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
        if was_streaming {
            // As in vb2: nothing happens.
        } else if queue == DST {
            // Capture setup done, or the restart that ends a drain or a
            // resolution change.
            s.configured = true;
            s.stopped = false;
        } else if s.stopped || s.drain != Drain::None {
            // The end of a seek: decoding goes on with new data.
            s.stopped = false;
            s.drain = Drain::None;
            s.ready.retain(|i| !matches!(i, Item::Eos));
        }
        self.process(s)
    }

    fn streamoff(&mut self, s: &mut Self::Session, queue: QueueType) -> IoctlResult<()> {
        s.q_mut(queue)?.streamoff();
        if queue == SRC {
            // Seek: the bitstream queued and buffered so far is dropped;
            // pictures already decoded may still come out.
            s.units.clear();
            s.input = None;
            if let Some(dec) = s.dec.as_mut() {
                if let Err(e) = dec.reset() {
                    log::warn!("decoder session {}: reset failed: {}", s.id, e.0);
                    s.dec = None;
                }
            }
            if s.drain != Drain::None {
                s.drain = Drain::None;
                s.ready.retain(|i| !matches!(i, Item::Eos));
            }
        } else {
            if s.configured {
                // Decoded pictures not yet returned are dropped (a fast
                // seek restarts CAPTURE too), up to the next marker: what
                // follows it belongs to the next configuration.
                while matches!(s.ready.front(), Some(Item::Picture(_))) {
                    s.ready.pop_front();
                }
                if matches!(s.ready.front(), Some(Item::Eos)) {
                    s.ready.pop_front();
                }
                if s.drain != Drain::None {
                    // The drain is cancelled; the decoder is stopped.
                    s.drain = Drain::None;
                    s.stopped = true;
                }
            }
        }
        Ok(())
    }

    fn g_selection(
        &mut self,
        s: &Self::Session,
        sel_type: SelectionType,
        target: SelectionTarget,
    ) -> IoctlResult<bindings::v4l2_rect> {
        if sel_type != SelectionType::Capture {
            return Err(libc::EINVAL);
        }
        match target {
            SelectionTarget::CropBounds => Ok(bindings::v4l2_rect {
                left: 0,
                top: 0,
                width: s.stream.width,
                height: s.stream.height,
            }),
            SelectionTarget::CropDefault
            | SelectionTarget::Crop
            | SelectionTarget::ComposeBounds
            | SelectionTarget::ComposeDefault
            | SelectionTarget::Compose
            | SelectionTarget::ComposePadded => Ok(s.visible()),
            _ => Err(libc::EINVAL),
        }
    }

    fn s_selection(
        &mut self,
        s: &mut Self::Session,
        sel_type: SelectionType,
        target: SelectionTarget,
        _rect: bindings::v4l2_rect,
        _flags: SelectionFlags,
    ) -> IoctlResult<bindings::v4l2_rect> {
        if sel_type != SelectionType::Capture {
            return Err(libc::EINVAL);
        }
        match target {
            // No cropper or scaler: the rectangles are the stream's.
            SelectionTarget::Crop | SelectionTarget::Compose => Ok(s.visible()),
            _ => Err(libc::EINVAL),
        }
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
        if s.drain != Drain::None {
            // dev-decoder.rst: no START or STOP while a drain runs.
            return Err(libc::EBUSY);
        }
        match cmd.cmd {
            DEC_CMD_STOP => {
                if !(s.src.streaming && s.dst.streaming) || s.stopped {
                    // Nothing to drain (not an error, for compatibility).
                    return Ok(cmd);
                }
                // The buffer being decoded was queued before STOP too.
                s.drain = Drain::Inputs(s.src.queued.len() + usize::from(s.input.is_some()));
            }
            _ => {
                s.stopped = false;
                s.configured = true;
            }
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
        s_ctrl(&mut self.ctx, &mut s.ctrls, s.id, id, value)
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
        if let EventType::SourceChange(id) = event {
            if id != 0 {
                return Err(libc::EINVAL);
            }
        }
        subscribe(
            &mut self.ctx,
            &s.ctrls,
            s.id,
            event,
            flags,
            &[bindings::V4L2_EVENT_EOS, bindings::V4L2_EVENT_SOURCE_CHANGE],
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
