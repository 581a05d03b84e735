// SPDX-License-Identifier: GPL-2.0
//! Tests of the `decoder` and `encoder` backends, driven through their
//! ioctl handlers the way the virtio-media runner calls them, with real
//! streams made in the test by libavcodec's encoders and compared with a
//! plain libavcodec decode of the same units.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use v4l2r::bindings;
use v4l2r::ioctl::{
    EventType, MemoryConsistency, SubscribeEventFlags, UncheckedV4l2Buffer, V4l2Buffer,
};
use v4l2r::memory::MemoryType;
use v4l2r::QueueType;
use virtio_media::ioctl::VirtioMediaIoctlHandler;
use virtio_media::protocol::SgEntry;
use virtio_media::VirtioMediaDevice;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::avcodec::testing::{encode, reference_decode};
use crate::avcodec::{Coded, Picture};
use crate::devices::codec::*;
use crate::devices::common::*;
use crate::media::{CmdReader, EventQueueHandle, GuestMemMapper, RespWriter};
use crate::shm::Shm;

pub const OUT: QueueType = QueueType::VideoOutputMplane;
pub const CAP: QueueType = QueueType::VideoCaptureMplane;
const FLAG_ERROR: u32 = 0x40;
const FLAG_LAST: u32 = 0x0010_0000;

/// A DQBUF or session event as the driver would see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ev {
    Dq {
        session: u32,
        queue: u32,
        index: u32,
        flags: u32,
        bytesused: Vec<u32>,
        ts: (i64, i64),
        sequence: u32,
    },
    Event(u32),
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn le64(b: &[u8], o: usize) -> i64 {
    i64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

pub fn parse_event(b: &[u8]) -> Ev {
    match le32(b, 0) {
        1 => {
            let buf = &b[8..];
            let nplanes = le32(buf, 72) as usize;
            Ev::Dq {
                session: le32(b, 4),
                queue: le32(buf, 4),
                index: le32(buf, 0),
                flags: le32(buf, 12),
                bytesused: (0..nplanes).map(|p| le32(buf, 88 + 64 * p)).collect(),
                ts: (le64(buf, 24), le64(buf, 32)),
                sequence: le32(buf, 56),
            }
        }
        2 => Ev::Event(le32(b, 8)),
        t => panic!("unexpected event type {t}"),
    }
}

fn sg(start: u64, len: u32) -> SgEntry {
    let mut bytes = [0u8; 16];
    bytes[0..8].copy_from_slice(&start.to_le_bytes());
    bytes[8..12].copy_from_slice(&len.to_le_bytes());
    <SgEntry as zerocopy::FromBytes>::read_from_bytes(&bytes[..]).unwrap()
}

/// A codec backend with one session, guest memory for USERPTR buffers
/// and the event queue the backend writes to.
pub struct Rig<D: VirtioMediaDevice<CmdReader, RespWriter>> {
    pub dev: D,
    pub s: <D as VirtioMediaDevice<CmdReader, RespWriter>>::Session,
    pub events: EventQueueHandle,
    pub shm: Arc<Shm>,
    pub mem: GuestMemoryMmap,
    /// (queue, index) -> per plane: guest address (USERPTR) and length.
    pub planes: HashMap<(u32, u32), Vec<(u64, u32)>>,
    next_guest: u64,
    pub memory: MemoryType,
}

pub const GUEST_MEM: usize = 96 << 20;

impl<D> Rig<D>
where
    D: VirtioMediaDevice<CmdReader, RespWriter>
        + VirtioMediaIoctlHandler<Session = <D as VirtioMediaDevice<CmdReader, RespWriter>>::Session>,
{
    pub fn new(make: impl FnOnce(DevCtx) -> D) -> Self {
        Self::with_shm(Shm::new(256 << 20).unwrap(), make)
    }

    pub fn with_shm(shm: Arc<Shm>, make: impl FnOnce(DevCtx) -> D) -> Self {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), GUEST_MEM)]).unwrap();
        let events = EventQueueHandle::default();
        let ctx = DevCtx::new(
            shm.clone(),
            GuestMemMapper {
                mem: Arc::new(RwLock::new(mem.clone())),
            },
            events.clone(),
        );
        let mut dev = make(ctx);
        let s = dev.new_session(1).unwrap();
        Rig {
            dev,
            s,
            events,
            shm,
            mem,
            planes: HashMap::new(),
            next_guest: 0x1000,
            memory: MemoryType::Mmap,
        }
    }

    pub fn events(&mut self) -> Vec<Ev> {
        let mut out = vec![];
        while let Some(b) = self.events.pop() {
            out.push(parse_event(&b));
        }
        out
    }

    pub fn subscribe(&mut self, ev: EventType) {
        self.dev
            .subscribe_event(&mut self.s, ev, SubscribeEventFlags::empty())
            .unwrap();
    }

    pub fn s_fmt(
        &mut self,
        queue: QueueType,
        fourcc: u32,
        w: u32,
        h: u32,
    ) -> Result<bindings::v4l2_format, i32> {
        let mut f = bindings::v4l2_format {
            type_: queue as u32,
            ..Default::default()
        };
        f.fmt.pix_mp = bindings::v4l2_pix_format_mplane {
            width: w,
            height: h,
            pixelformat: fourcc,
            ..Default::default()
        };
        self.dev.s_fmt(&mut self.s, queue, f)
    }

    pub fn g_fmt(&mut self, queue: QueueType) -> (u32, u32, u32, Vec<u32>) {
        let f = self.dev.g_fmt(&self.s, queue).unwrap();
        // SAFETY: the codec queues are multi-planar.
        let mp = unsafe { f.fmt.pix_mp };
        let sizes = (0..mp.num_planes as usize)
            .map(|p| mp.plane_fmt[p].sizeimage)
            .collect();
        (mp.pixelformat, mp.width, mp.height, sizes)
    }

    /// REQBUFS; for USERPTR also carves the planes out of guest memory.
    pub fn reqbufs(&mut self, queue: QueueType, count: u32) -> u32 {
        let n = self
            .dev
            .reqbufs(
                &mut self.s,
                queue,
                self.memory,
                count,
                MemoryConsistency::empty(),
            )
            .unwrap()
            .count;
        let (_, _, _, sizes) = self.g_fmt(queue);
        for i in 0..n {
            let planes = sizes
                .iter()
                .map(|&len| {
                    if self.memory != MemoryType::UserPtr {
                        return (0, len);
                    }
                    let a = self.next_guest;
                    self.next_guest += u64::from(len).next_multiple_of(4096);
                    assert!(
                        self.next_guest < GUEST_MEM as u64,
                        "test guest memory exhausted"
                    );
                    (a, len)
                })
                .collect();
            self.planes.insert((queue as u32, i), planes);
        }
        n
    }

    fn buffer(
        &self,
        queue: QueueType,
        index: u32,
        bytesused: &[u32],
        ts: (i64, i64),
    ) -> (V4l2Buffer, Vec<Vec<SgEntry>>) {
        let mut raw = bindings::v4l2_buffer {
            index,
            type_: queue as u32,
            memory: self.memory as u32,
            length: bytesused.len() as u32,
            ..Default::default()
        };
        raw.timestamp.tv_sec = ts.0;
        raw.timestamp.tv_usec = ts.1;
        let mut planes = [bindings::v4l2_plane::default(); bindings::VIDEO_MAX_PLANES as usize];
        let mut regions = vec![];
        for (p, &u) in bytesused.iter().enumerate() {
            planes[p].bytesused = u;
            let (addr, len) = self
                .planes
                .get(&(queue as u32, index))
                .map(|v| v[p])
                .unwrap_or((0, 0));
            planes[p].length = len;
            if self.memory == MemoryType::UserPtr {
                planes[p].m.userptr = addr as _;
                // Two SG entries per plane, as pinned pages would give.
                let half = (len / 2) & !0xfff;
                regions.push(vec![sg(addr, half), sg(addr + u64::from(half), len - half)]);
            }
        }
        (
            V4l2Buffer::try_from(UncheckedV4l2Buffer(raw, Some(planes))).unwrap(),
            regions,
        )
    }

    pub fn qbuf(
        &mut self,
        queue: QueueType,
        index: u32,
        bytesused: &[u32],
        ts: (i64, i64),
    ) -> Result<(), i32> {
        let (b, regions) = self.buffer(queue, index, bytesused, ts);
        self.dev.qbuf(&mut self.s, b, regions).map(|_| ())
    }

    pub fn streamon(&mut self, queue: QueueType) {
        self.dev.streamon(&mut self.s, queue).unwrap();
    }

    pub fn streamoff(&mut self, queue: QueueType) {
        self.dev.streamoff(&mut self.s, queue).unwrap();
    }
}

// ---- decoder --------------------------------------------------------------

use crate::devices::decoder::{DecSession, DecoderDevice, DST, SRC};

pub type DecRig = Rig<DecoderDevice>;

pub fn decoder() -> DecRig {
    Rig::new(|ctx| DecoderDevice::new(ctx, 1))
}

impl DecRig {
    fn plane_mem(s: &DecSession, queue: QueueType, index: u32, plane: usize) -> &PlaneMem {
        let q = if queue == SRC { &s.src } else { &s.dst };
        &q.bufs[index as usize].mem[plane]
    }

    /// Writes `data` at the start of OUTPUT buffer `index`.
    pub fn fill(&mut self, index: u32, data: &[u8]) {
        if self.memory == MemoryType::UserPtr {
            let (a, _) = self.planes[&(SRC as u32, index)][0];
            self.mem.write_slice(data, GuestAddress(a)).unwrap();
        } else {
            match Self::plane_mem(&self.s, SRC, index, 0) {
                PlaneMem::Mmap(b) => b.write_at(0, data).unwrap(),
                PlaneMem::UserPtr(_) => unreachable!(),
            }
        }
    }

    /// Reads `len` bytes of plane `plane` of CAPTURE buffer `index`.
    pub fn read(&mut self, index: u32, plane: usize, len: u32) -> Vec<u8> {
        let mut out = vec![0u8; len as usize];
        if self.memory == MemoryType::UserPtr {
            let (a, _) = self.planes[&(DST as u32, index)][plane];
            self.mem.read_slice(&mut out, GuestAddress(a)).unwrap();
        } else {
            match Self::plane_mem(&self.s, DST, index, plane) {
                PlaneMem::Mmap(b) => b.read_at(0, &mut out).unwrap(),
                PlaneMem::UserPtr(_) => unreachable!(),
            }
        }
        out
    }

    pub fn stop(&mut self) -> Result<(), i32> {
        let cmd = bindings::v4l2_decoder_cmd {
            cmd: 1,
            ..Default::default()
        };
        self.dev.decoder_cmd(&mut self.s, cmd).map(|_| ())
    }

    pub fn start(&mut self) -> Result<(), i32> {
        let cmd = bindings::v4l2_decoder_cmd {
            cmd: 0,
            ..Default::default()
        };
        self.dev.decoder_cmd(&mut self.s, cmd).map(|_| ())
    }
}

/// A decoded frame as a client got it.
#[derive(Debug, Clone)]
pub struct Got {
    pub ts: (i64, i64),
    pub size: (u32, u32),
    pub data: Vec<u8>,
}

/// What a client following dev-decoder.rst saw.
#[derive(Default, Debug)]
pub struct Session {
    pub frames: Vec<Got>,
    pub source_changes: usize,
    pub eos_events: usize,
    pub lasts: usize,
    pub errors: usize,
    pub output_errors: usize,
}

/// A client as dev-decoder.rst describes it: OUTPUT set up first, CAPTURE
/// after the first SOURCE_CHANGE, a new CAPTURE buffer set after each
/// LAST that follows a SOURCE_CHANGE, DECODER_CMD STOP once every chunk is
/// queued, done at the LAST buffer after that. Panics if the decoder
/// stops making progress.
pub struct Client {
    pub fourcc: u32,
    pub raw: u32,
    pub out_bufs: u32,
    pub cap_bufs: u32,
    /// OUTPUT size given in S_FMT (0x0: from the stream).
    pub size: (u32, u32),
    pub memory: MemoryType,
}

impl Client {
    pub fn new(fourcc: u32) -> Client {
        Client {
            fourcc,
            raw: FMT_NV12,
            out_bufs: 4,
            cap_bufs: 4,
            size: (0, 0),
            memory: MemoryType::Mmap,
        }
    }

    pub fn run(&self, rig: &mut DecRig, chunks: &[Vec<u8>]) -> Session {
        rig.memory = self.memory;
        rig.subscribe(EventType::SourceChange(0));
        rig.subscribe(EventType::Eos);
        rig.s_fmt(OUT, self.fourcc, self.size.0, self.size.1)
            .unwrap();
        assert_eq!(rig.reqbufs(OUT, self.out_bufs), self.out_bufs);
        rig.streamon(OUT);
        let mut out = Session::default();
        let mut free_out: Vec<u32> = (0..self.out_bufs).collect();
        let mut next = 0usize;
        let mut capture_on = false;
        let mut change_pending = false;
        let mut stop_sent = false;
        let mut cap_size = (0, 0);
        let mut idle = 0;
        loop {
            let mut progress = false;
            while let (Some(&i), true) = (free_out.first(), next < chunks.len()) {
                free_out.remove(0);
                rig.fill(i, &chunks[next]);
                // Timestamps: chunk n is n+1 seconds, like GStreamer's frame
                // numbers.
                rig.qbuf(OUT, i, &[chunks[next].len() as u32], (next as i64 + 1, 0))
                    .unwrap();
                next += 1;
                progress = true;
            }
            if next == chunks.len() && capture_on && !stop_sent {
                rig.stop().unwrap();
                stop_sent = true;
                progress = true;
            }
            let mut setup = false;
            let mut done = false;
            for ev in rig.events() {
                progress = true;
                match ev {
                    Ev::Dq {
                        queue,
                        index,
                        flags,
                        ..
                    } if queue == OUT as u32 => {
                        if flags & FLAG_ERROR != 0 {
                            out.output_errors += 1;
                        }
                        free_out.push(index);
                    }
                    Ev::Dq {
                        index,
                        flags,
                        bytesused,
                        ts,
                        ..
                    } => {
                        if flags & FLAG_ERROR != 0 {
                            out.errors += 1;
                        } else if bytesused.iter().any(|&b| b > 0) {
                            let data = bytesused
                                .iter()
                                .enumerate()
                                .flat_map(|(p, &n)| rig.read(index, p, n))
                                .collect();
                            out.frames.push(Got {
                                ts,
                                size: cap_size,
                                data,
                            });
                        }
                        if flags & FLAG_LAST != 0 {
                            out.lasts += 1;
                            if change_pending {
                                setup = true;
                            } else {
                                done = true;
                            }
                        } else {
                            rig.qbuf(CAP, index, &vec![0; bytesused.len()], (0, 0))
                                .unwrap();
                        }
                    }
                    Ev::Event(t) if t == bindings::V4L2_EVENT_SOURCE_CHANGE => {
                        out.source_changes += 1;
                        if capture_on {
                            change_pending = true;
                        } else {
                            setup = true;
                        }
                    }
                    Ev::Event(t) if t == bindings::V4L2_EVENT_EOS => out.eos_events += 1,
                    Ev::Event(t) => panic!("unexpected event {t}"),
                }
            }
            if done {
                return out;
            }
            if next == chunks.len() && !capture_on && free_out.len() + 1 >= self.out_bufs as usize {
                // Every chunk was consumed without a stream header: there
                // is nothing to drain (STOP needs both queues streaming).
                // Before its first picture the device keeps the last
                // OUTPUT buffer, as a queued one keeps m2m poll from
                // failing.
                return out;
            }
            if setup {
                if capture_on {
                    rig.streamoff(CAP);
                    assert_eq!(rig.reqbufs(CAP, 0), 0);
                }
                rig.s_fmt(CAP, self.raw, 0, 0).unwrap();
                let (fourcc, w, h, sizes) = rig.g_fmt(CAP);
                assert_eq!(fourcc, self.raw);
                cap_size = (w, h);
                let n = rig.reqbufs(CAP, self.cap_bufs);
                for i in 0..n {
                    rig.qbuf(CAP, i, &vec![0; sizes.len()], (0, 0)).unwrap();
                }
                rig.streamon(CAP);
                capture_on = true;
                change_pending = false;
                progress = true;
            }
            idle = if progress { 0 } else { idle + 1 };
            assert!(
                idle < 3,
                "decoder stalled: {} of {} chunks queued, {:?}",
                next,
                chunks.len(),
                out
            );
        }
    }
}

/// NV12 bytes (planes at the frame-buffer size `fw`x`fh`) of a picture.
pub fn nv12(p: &Picture, fw: u32, fh: u32) -> Vec<u8> {
    let (w, h, fw, fh) = (
        p.width() as usize,
        p.height() as usize,
        fw as usize,
        fh as usize,
    );
    let mut out = vec![0u8; fw * fh * 3 / 2];
    for r in 0..h {
        out[r * fw..r * fw + w].copy_from_slice(p.row(0, r, w).unwrap());
    }
    let uv = &mut out[fw * fh..];
    uv.fill(128);
    for r in 0..h.div_ceil(2) {
        let (u, v) = (
            p.row(1, r, w.div_ceil(2)).unwrap(),
            p.row(2, r, w.div_ceil(2)).unwrap(),
        );
        for c in 0..w.div_ceil(2) {
            uv[r * fw + 2 * c] = u[c];
            uv[r * fw + 2 * c + 1] = v[c];
        }
    }
    out
}

/// Checks `got` against libavcodec's own decode of `units`: same count,
/// same bytes, and (if `by_unit`) each frame timestamped with its unit.
pub fn assert_matches_reference(coded: Coded, units: &[Vec<u8>], got: &[Got], by_unit: bool) {
    let reference = reference_decode(coded, units);
    assert_eq!(got.len(), reference.len(), "frame count");
    for (i, (g, r)) in got.iter().zip(&reference).enumerate() {
        let (fw, fh) = clamp_size(r.width(), r.height());
        assert_eq!(g.size, (fw, fh), "frame {i} size");
        assert!(
            g.data == nv12(r, fw, fh),
            "frame {i} differs from the reference decode"
        );
        if by_unit {
            assert_eq!(g.ts, (r.token.unwrap() + 1, 0), "frame {i} timestamp");
        }
    }
}

/// The drain's EOS event comes right before its LAST buffer, as kernel
/// drivers queue them (a client that sees LAST finds it).
fn eos_then_last(evs: &[Ev]) -> bool {
    evs.iter()
        .position(|e| matches!(e, Ev::Dq { queue: 9, flags, .. } if flags & FLAG_LAST != 0))
        .and_then(|i| i.checked_sub(1))
        .and_then(|i| evs.get(i))
        == Some(&Ev::Event(bindings::V4L2_EVENT_EOS))
}

mod decoder_tests {
    use super::*;

    fn h264(w: u32, h: u32, n: u32) -> Vec<Vec<u8>> {
        encode("libx264", w, h, n, 0)
    }

    /// Encoder name and coded kind of every format this libavcodec can
    /// both make and decode.
    fn formats() -> Vec<(&'static str, Coded, u32)> {
        [
            ("libx264", Coded::H264, FMT_H264),
            ("libx265", Coded::Hevc, FMT_HEVC),
            ("libvpx", Coded::Vp8, FMT_VP8),
            ("libvpx-vp9", Coded::Vp9, FMT_VP9),
        ]
        .into_iter()
        .filter(|(name, c, _)| c.decodable() && crate::avcodec::testing::has_encoder(name))
        .collect()
    }

    #[test]
    fn every_codec_decodes_like_libavcodec() {
        let all = formats();
        assert!(
            all.len() >= 3,
            "Debian's libavcodec makes and decodes H.264, HEVC, VP8, VP9: {all:?}"
        );
        for (name, coded, fourcc) in all {
            let units = encode(name, 176, 144, 12, 0);
            let mut rig = decoder();
            let got = Client::new(fourcc).run(&mut rig, &units);
            assert_eq!(
                (got.source_changes, got.lasts, got.errors),
                (1, 1, 0),
                "{name}"
            );
            assert_matches_reference(coded, &units, &got.frames, true);
        }
    }

    #[test]
    fn odd_sizes_and_frame_threads() {
        // An odd picture size: the frame buffer is one column and row
        // larger (black luma, neutral chroma), the compose rectangle is
        // the picture.
        let units = encode("libvpx", 175, 143, 6, 0);
        let mut rig = decoder();
        let got = Client::new(FMT_VP8).run(&mut rig, &units);
        assert_matches_reference(Coded::Vp8, &units, &got.frames, true);
        let sel = rig
            .dev
            .g_selection(
                &rig.s,
                v4l2r::ioctl::SelectionType::Capture,
                v4l2r::ioctl::SelectionTarget::Compose,
            )
            .unwrap();
        assert_eq!(
            (sel.width, sel.height, rig.g_fmt(CAP).1, rig.g_fmt(CAP).2),
            (175, 143, 176, 144)
        );
        // Two frame threads (--codec-threads 2): same frames, same order.
        let units = h264(320, 240, 16);
        let mut rig = Rig::new(|ctx| DecoderDevice::new(ctx, 2));
        let got = Client::new(FMT_H264).run(&mut rig, &units);
        assert_matches_reference(Coded::H264, &units, &got.frames, true);
    }

    #[test]
    fn enum_fmt_lists_the_decodable_formats_with_flags() {
        let mut rig = decoder();
        let mut coded = vec![];
        for i in 0.. {
            let Ok(d) = rig.dev.enum_fmt(&rig.s, OUT, i) else {
                break;
            };
            assert_ne!(d.flags & 0x1, 0, "COMPRESSED");
            assert_ne!(d.flags & 0x8, 0, "DYN_RESOLUTION");
            coded.push(d.pixelformat);
        }
        assert_eq!(coded[0], FMT_H264);
        assert!(
            coded.contains(&FMT_VP8) && coded.contains(&FMT_VP9) && coded.contains(&FMT_HEVC),
            "{coded:x?}"
        );
        let raw: Vec<u32> = (0..)
            .map_while(|i| rig.dev.enum_fmt(&rig.s, CAP, i).ok())
            .map(|d| d.pixelformat)
            .collect();
        assert_eq!(raw, RAW_FORMATS);
        assert_eq!(
            rig.dev.enum_fmt(&rig.s, QueueType::VideoCapture, 0).err(),
            Some(libc::EINVAL)
        );
        let ctrl =
            crate::devices::common::g_ctrl(&rig.s.ctrls, CID_MIN_BUFFERS_FOR_CAPTURE).unwrap();
        assert_eq!(ctrl.value, 2);
    }

    #[test]
    fn h264_any_split_of_the_byte_stream() {
        let units = h264(320, 240, 20);
        let stream: Vec<u8> = units.concat();
        // Chunks that cut NAL units anywhere, and some that hold several
        // access units.
        for size in [997usize, 20000] {
            let chunks: Vec<Vec<u8>> = stream.chunks(size).map(|c| c.to_vec()).collect();
            let mut rig = decoder();
            let got = Client::new(FMT_H264).run(&mut rig, &chunks);
            assert_eq!((got.errors, got.output_errors), (0, 0), "chunks of {size}");
            assert_matches_reference(Coded::H264, &units, &got.frames, false);
        }
    }

    #[test]
    fn every_capture_format_and_userptr() {
        let units = h264(160, 120, 6);
        let reference = reference_decode(Coded::H264, &units);
        for memory in [MemoryType::Mmap, MemoryType::UserPtr] {
            for raw in RAW_FORMATS.iter().copied() {
                let mut rig = decoder();
                let client = Client {
                    raw,
                    memory,
                    ..Client::new(FMT_H264)
                };
                let got = client.run(&mut rig, &units);
                assert_eq!(got.frames.len(), reference.len());
                for (g, r) in got.frames.iter().zip(&reference) {
                    // Back to NV12 to compare.
                    let (w, h) = (160usize, 120usize);
                    let y = &g.data[..w * h];
                    let (u, v): (Vec<u8>, Vec<u8>) = match raw {
                        FMT_NV12 | FMT_NV12M => (
                            g.data[w * h..].iter().step_by(2).copied().collect(),
                            g.data[w * h + 1..].iter().step_by(2).copied().collect(),
                        ),
                        _ => (
                            g.data[w * h..w * h * 5 / 4].to_vec(),
                            g.data[w * h * 5 / 4..].to_vec(),
                        ),
                    };
                    let want = nv12(r, 160, 120);
                    assert!(y == &want[..w * h], "{} {memory:?} luma", fourcc_str(raw));
                    let want_u: Vec<u8> = want[w * h..].iter().step_by(2).copied().collect();
                    assert!(
                        u == want_u && v.len() == want_u.len(),
                        "{} {memory:?} chroma",
                        fourcc_str(raw)
                    );
                }
            }
        }
    }

    #[test]
    fn resolution_change_mid_stream() {
        // Two streams back to back: the second has a new SPS and size.
        for (name, coded, fourcc) in formats() {
            let mut units = encode(name, 320, 240, 10, 0);
            units.extend(encode(name, 176, 144, 10, 10));
            let mut rig = decoder();
            let got = Client::new(fourcc).run(&mut rig, &units);
            assert_eq!(got.source_changes, 2, "{name}: initial and mid-stream");
            assert_eq!(
                got.lasts, 2,
                "{name}: one LAST ends the old size, one the drain"
            );
            assert_eq!(got.errors, 0);
            assert_eq!(got.frames[9].size, (320, 240));
            assert_eq!(got.frames[10].size, (176, 144));
            assert_matches_reference(coded, &units, &got.frames, true);
            assert_eq!(rig.g_fmt(CAP).1, 176);
        }
    }

    /// Queues `units` one per OUTPUT buffer on a session set up by hand
    /// (both queues streaming, CAPTURE buffers all queued), handing
    /// CAPTURE buffers back as they come; returns the events.
    fn feed(rig: &mut DecRig, units: &[Vec<u8>], first_ts: i64) -> Vec<Ev> {
        let mut evs = vec![];
        for (n, u) in units.iter().enumerate() {
            let i = (n % 4) as u32;
            rig.fill(i, u);
            rig.qbuf(OUT, i, &[u.len() as u32], (first_ts + n as i64, 0))
                .unwrap();
            for e in rig.events() {
                if let Ev::Dq {
                    queue: 9,
                    index,
                    flags,
                    ..
                } = e
                {
                    if flags & FLAG_LAST == 0 {
                        rig.qbuf(CAP, index, &[0], (0, 0)).unwrap();
                    }
                }
                evs.push(e);
            }
        }
        evs
    }

    /// Sends STOP and hands CAPTURE buffers back until the LAST one.
    fn finish(rig: &mut DecRig) -> Vec<Ev> {
        rig.stop().unwrap();
        let mut evs = vec![];
        for _ in 0..100 {
            let new = rig.events();
            let mut last = false;
            for e in &new {
                if let Ev::Dq {
                    queue: 9,
                    index,
                    flags,
                    ..
                } = e
                {
                    if flags & FLAG_LAST != 0 {
                        last = true;
                    } else {
                        rig.qbuf(CAP, *index, &[0], (0, 0)).unwrap();
                    }
                }
            }
            evs.extend(new);
            if last {
                evs.extend(rig.events());
                return evs;
            }
        }
        panic!("no LAST buffer: {evs:?}");
    }

    /// A session set up for 320x240 H.264 with `cap` CAPTURE buffers.
    fn streaming(cap: u32) -> DecRig {
        let mut rig = decoder();
        rig.subscribe(EventType::SourceChange(0));
        rig.subscribe(EventType::Eos);
        rig.s_fmt(OUT, FMT_H264, 320, 240).unwrap();
        rig.reqbufs(OUT, 4);
        rig.reqbufs(CAP, cap);
        for i in 0..cap {
            rig.qbuf(CAP, i, &[0], (0, 0)).unwrap();
        }
        rig.streamon(OUT);
        rig.streamon(CAP);
        rig
    }

    /// Timestamps of the frames of `units` (timestamped from `first`) in
    /// display order.
    fn display_order(units: &[Vec<u8>], first: i64) -> Vec<i64> {
        reference_decode(Coded::H264, units)
            .iter()
            .map(|p| p.token.unwrap() + first)
            .collect()
    }

    fn frames(evs: &[Ev]) -> Vec<(i64, u32)> {
        evs.iter()
            .filter_map(|e| match e {
                Ev::Dq {
                    queue: 9,
                    ts,
                    flags,
                    bytesused,
                    ..
                } if bytesused[0] > 0 => Some((ts.0, *flags)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn capture_set_up_from_the_output_size_goes_on_without_restart() {
        // FFmpeg's way: CAPTURE streams before the stream is parsed; the
        // stream has the size given, so SOURCE_CHANGE changes nothing and
        // no LAST buffer interrupts the decoding.
        let units = h264(320, 240, 10);
        let mut rig = streaming(4);
        let mut evs = feed(&mut rig, &units, 1);
        rig.stop().unwrap();
        evs.extend(rig.events());
        let changes = evs
            .iter()
            .filter(|e| **e == Ev::Event(bindings::V4L2_EVENT_SOURCE_CHANGE))
            .count();
        assert_eq!(changes, 1);
        let f = frames(&evs);
        assert_eq!(f.len(), 10);
        let lasts: Vec<usize> = f
            .iter()
            .enumerate()
            .filter(|(_, (_, fl))| fl & FLAG_LAST != 0)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(lasts, vec![9], "only the drain's last frame carries LAST");
        assert!(eos_then_last(&evs), "{evs:?}");
    }

    #[test]
    fn drain_then_start_then_seek() {
        let units = h264(320, 240, 30); // GOP of 10: IDR at 0, 10, 20
        let mut rig = streaming(4);
        let evs = feed(&mut rig, &units[..10], 1);
        let before = frames(&evs).len();
        rig.stop().unwrap();
        assert_eq!(
            rig.stop().err(),
            None,
            "STOP once the drain ended is accepted"
        );
        let evs = rig.events();
        let f = frames(&evs);
        assert_eq!(before + f.len(), 10, "every frame of the first GOP");
        assert_ne!(f.last().unwrap().1 & FLAG_LAST, 0);
        assert!(eos_then_last(&evs), "{evs:?}");

        // Stopped: OUTPUT buffers are taken but not decoded until START.
        for e in &evs {
            if let Ev::Dq {
                queue: 9, index, ..
            } = e
            {
                rig.qbuf(CAP, *index, &[0], (0, 0)).unwrap();
            }
        }
        rig.fill(0, &units[10]);
        rig.qbuf(OUT, 0, &[units[10].len() as u32], (11, 0))
            .unwrap();
        assert!(rig.events().is_empty(), "nothing decoded while stopped");
        rig.start().unwrap();
        let mut evs = rig.events();
        evs.extend(feed(&mut rig, &units[11..20], 12));
        evs.extend(finish(&mut rig));
        assert_eq!(rig.start().err(), None);
        let got: Vec<i64> = frames(&evs).iter().map(|f| f.0).collect();
        assert_eq!(
            got,
            display_order(&units[10..20], 11),
            "the second GOP after START"
        );

        // Seek: STREAMOFF/STREAMON(OUTPUT), then the third GOP. What was
        // queued before is dropped; what comes after decodes normally.
        let _ = feed(&mut rig, &units[20..23], 21);
        rig.streamoff(OUT);
        rig.streamon(OUT);
        for e in rig.events() {
            if let Ev::Dq {
                queue: 9, index, ..
            } = e
            {
                rig.qbuf(CAP, index, &[0], (0, 0)).unwrap();
            }
        }
        let mut all = feed(&mut rig, &units[20..30], 100);
        all.extend(finish(&mut rig));
        let after: Vec<i64> = frames(&all)
            .iter()
            .map(|f| f.0)
            .filter(|&t| t >= 100)
            .collect();
        assert_eq!(
            after,
            display_order(&units[20..30], 100),
            "the GOP after the seek, complete"
        );
    }

    #[test]
    fn empty_last_buffers_and_capture_carry_timestamps_and_colorimetry() {
        // v4l2-compliance fails a dequeued TIMESTAMP_COPY buffer whose
        // timestamp is 0, the empty LAST buffer of a drain included.
        let units = h264(320, 240, 4);
        let mut rig = streaming(4);
        let _ = feed(&mut rig, &units, 7);
        let _ = finish(&mut rig);
        rig.start().unwrap();
        rig.stop().unwrap();
        let evs = rig.events();
        assert!(
            evs.iter().any(
                |e| matches!(e, Ev::Dq { queue: 9, flags, bytesused, ts: (10, 0), .. }
                if flags & FLAG_LAST != 0 && bytesused[0] == 0)
            ),
            "{evs:?}"
        );
        // The colorimetry set on OUTPUT is CAPTURE's too.
        let mut rig = decoder();
        let mut f = bindings::v4l2_format {
            type_: OUT as u32,
            ..Default::default()
        };
        f.fmt.pix_mp = bindings::v4l2_pix_format_mplane {
            pixelformat: FMT_H264,
            colorspace: bindings::v4l2_colorspace_V4L2_COLORSPACE_REC709,
            quantization: 2,
            xfer_func: 1,
            ..Default::default()
        };
        rig.dev.s_fmt(&mut rig.s, OUT, f).unwrap();
        let cap = rig.dev.g_fmt(&rig.s, CAP).unwrap();
        // SAFETY: multi-planar format.
        let mp = unsafe { cap.fmt.pix_mp };
        assert_eq!((mp.colorspace, mp.quantization, mp.xfer_func), (3, 2, 1));
    }

    #[test]
    fn without_shared_memory_userptr_only() {
        let units = h264(160, 120, 5);
        let mut rig = Rig::with_shm(Shm::absent(), |ctx| DecoderDevice::new(ctx, 1));
        let r = rig.dev.reqbufs(
            &mut rig.s,
            OUT,
            MemoryType::Mmap,
            2,
            MemoryConsistency::empty(),
        );
        assert_eq!(r.err(), Some(libc::EINVAL));
        let got = Client {
            memory: MemoryType::UserPtr,
            ..Client::new(FMT_H264)
        }
        .run(&mut rig, &units);
        assert_matches_reference(Coded::H264, &units, &got.frames, true);
        let mut rig = Rig::with_shm(Shm::absent(), EncoderDevice::new);
        let r = rig.dev.reqbufs(
            &mut rig.s,
            CAP,
            MemoryType::Mmap,
            2,
            MemoryConsistency::empty(),
        );
        assert_eq!(r.err(), Some(libc::EINVAL));
        rig.memory = MemoryType::UserPtr;
        let (units, _) = encode_frames(&mut rig, FMT_NV12, (160, 120), 4, |_, _| {});
        assert_eq!(units.len(), 4);
    }

    #[test]
    fn two_sessions_decode_at_once() {
        // One device, two sessions (two programs), their commands
        // interleaved: each gets its own stream's frames.
        let a = h264(320, 240, 12);
        let b = encode("libvpx", 176, 144, 12, 5);
        let mut rig = streaming(4);
        let mut second = {
            let mut other =
                <DecoderDevice as VirtioMediaDevice<CmdReader, RespWriter>>::new_session(
                    &mut rig.dev,
                    2,
                )
                .unwrap();
            std::mem::swap(&mut rig.s, &mut other);
            rig.subscribe(EventType::Eos);
            // CAPTURE set up from the OUTPUT size before the stream starts
            // (FFmpeg's way): events carry no session here, and the first
            // session's SOURCE_CHANGE must not be taken for this one's.
            rig.s_fmt(OUT, FMT_VP8, 176, 144).unwrap();
            rig.reqbufs(OUT, 4);
            rig.reqbufs(CAP, 4);
            for i in 0..4 {
                rig.qbuf(CAP, i, &[0], (0, 0)).unwrap();
            }
            rig.streamon(OUT);
            rig.streamon(CAP);
            std::mem::swap(&mut rig.s, &mut other);
            other
        };
        let mut frames: [Vec<(i64, Vec<u8>)>; 2] = [vec![], vec![]];
        let handle =
            |rig: &mut DecRig, second: &mut DecSession, frames: &mut [Vec<(i64, Vec<u8>)>; 2]| {
                for e in rig.events() {
                    let Ev::Dq {
                        session,
                        queue: 9,
                        index,
                        flags,
                        bytesused,
                        ts,
                        ..
                    } = e
                    else {
                        continue;
                    };
                    let own = session == rig.s.id;
                    if !own {
                        std::mem::swap(&mut rig.s, second);
                    }
                    if bytesused[0] > 0 {
                        frames[usize::from(!own)].push((ts.0, rig.read(index, 0, bytesused[0])));
                    }
                    if flags & FLAG_LAST == 0 {
                        rig.qbuf(CAP, index, &[0], (0, 0)).unwrap();
                    }
                    if !own {
                        std::mem::swap(&mut rig.s, second);
                    }
                }
            };
        for n in 0..12 {
            let i = (n % 4) as u32;
            rig.fill(i, &a[n]);
            rig.qbuf(OUT, i, &[a[n].len() as u32], (n as i64 + 1, 0))
                .unwrap();
            handle(&mut rig, &mut second, &mut frames);
            std::mem::swap(&mut rig.s, &mut second);
            rig.fill(i, &b[n]);
            rig.qbuf(OUT, i, &[b[n].len() as u32], (n as i64 + 1, 0))
                .unwrap();
            std::mem::swap(&mut rig.s, &mut second);
            handle(&mut rig, &mut second, &mut frames);
        }
        for _ in 0..2 {
            rig.stop().unwrap();
            handle(&mut rig, &mut second, &mut frames);
            std::mem::swap(&mut rig.s, &mut second);
        }
        for _ in 0..4 {
            handle(&mut rig, &mut second, &mut frames);
        }
        for (got, (coded, units, size)) in frames
            .iter()
            .zip([(Coded::H264, &a, (320, 240)), (Coded::Vp8, &b, (176, 144))])
        {
            let reference = reference_decode(coded, units);
            assert_eq!(got.len(), reference.len(), "{coded:?} frame count");
            for ((ts, data), r) in got.iter().zip(&reference) {
                assert_eq!(*ts, r.token.unwrap() + 1, "{coded:?}");
                assert!(*data == nv12(r, size.0, size.1), "{coded:?} frame {ts}");
            }
        }
    }

    #[test]
    fn a_buffer_of_many_frames_is_decoded_as_capture_buffers_come() {
        // One OUTPUT buffer with the whole stream, one CAPTURE buffer: at
        // most READY_LIMIT pictures are decoded ahead (a guest could
        // otherwise pack thousands of tiny frames of a huge size into one
        // buffer), and the OUTPUT buffer comes back once it is all decoded.
        let units = h264(320, 240, 30);
        let mut rig = streaming(1);
        let all = units.concat();
        rig.fill(0, &all);
        rig.qbuf(OUT, 0, &[all.len() as u32], (1, 0)).unwrap();
        let mut evs = rig.events();
        assert!(
            rig.s.pictures_ready() <= 2,
            "{} pictures decoded ahead",
            rig.s.pictures_ready()
        );
        assert!(
            !evs.iter().any(|e| matches!(e, Ev::Dq { queue: 10, .. })),
            "OUTPUT buffer still in use"
        );
        let (mut returned, mut frames) = (false, 0);
        for _ in 0..100 {
            for e in std::mem::take(&mut evs) {
                match e {
                    Ev::Dq { queue: 10, .. } => returned = true,
                    Ev::Dq {
                        queue: 9,
                        index,
                        bytesused,
                        ..
                    } => {
                        frames += usize::from(bytesused[0] > 0);
                        rig.qbuf(CAP, index, &[0], (0, 0)).unwrap();
                    }
                    _ => {}
                }
            }
            if returned {
                break;
            }
            evs = rig.events();
            assert!(rig.s.pictures_ready() <= 2);
        }
        assert!(returned);
        let done = finish(&mut rig);
        frames += done
            .iter()
            .filter(|e| matches!(e, Ev::Dq { queue: 9, bytesused, .. } if bytesused[0] > 0))
            .count();
        assert_eq!(frames, 30);
    }

    /// A session with only OUTPUT streaming (H.264, 320x240, 4 buffers)
    /// that waits for its first SOURCE_CHANGE: GStreamer's way.
    fn output_only() -> DecRig {
        let mut rig = decoder();
        rig.subscribe(EventType::SourceChange(0));
        rig.s_fmt(OUT, FMT_H264, 320, 240).unwrap();
        rig.reqbufs(OUT, 4);
        rig.streamon(OUT);
        rig
    }

    /// Queues unit `n` in OUTPUT buffer `n % 4`; adds the OUTPUT buffers
    /// that came back to `returned` and says whether SOURCE_CHANGE came.
    fn queue_unit(rig: &mut DecRig, units: &[Vec<u8>], n: usize, returned: &mut Vec<u32>) -> bool {
        let i = n as u32 % 4;
        rig.fill(i, &units[n]);
        rig.qbuf(OUT, i, &[units[n].len() as u32], (n as i64 + 1, 0))
            .unwrap();
        let mut changed = false;
        for e in rig.events() {
            match e {
                Ev::Dq {
                    queue: 10, index, ..
                } => returned.push(index),
                Ev::Event(t) => changed |= t == bindings::V4L2_EVENT_SOURCE_CHANGE,
                _ => {}
            }
        }
        changed
    }

    #[test]
    fn the_buffer_that_made_the_source_change_waits_for_capture() {
        // GStreamer's way: OUTPUT only, then a wait (poll) for the event.
        let units = h264(320, 240, 8);
        let mut rig = output_only();
        let (mut returned, mut changed, mut next) = (vec![], false, 0);
        while !changed {
            assert!(next < 4, "no SOURCE_CHANGE after 4 buffers");
            changed = queue_unit(&mut rig, &units, next, &mut returned);
            next += 1;
        }
        // The buffer whose headers gave the size stays queued, with those
        // queued after it.
        let held = next - returned.len();
        assert!(held >= 1, "{next} queued, {returned:?} returned");
        rig.reqbufs(CAP, 2);
        rig.qbuf(CAP, 0, &[0], (0, 0)).unwrap();
        rig.qbuf(CAP, 1, &[0], (0, 0)).unwrap();
        rig.streamon(CAP);
        let evs = rig.events();
        let more = evs
            .iter()
            .filter(|e| matches!(e, Ev::Dq { queue: 10, .. }))
            .count();
        assert!(more >= 1, "returned once CAPTURE streams: {evs:?}");
        // The rest of the stream gives pictures.
        let mut evs = vec![];
        for (k, unit) in units.iter().enumerate().skip(next) {
            let i = k as u32 % 4;
            rig.fill(i, unit);
            rig.qbuf(OUT, i, &[unit.len() as u32], (k as i64 + 1, 0))
                .unwrap();
            evs.extend(rig.events());
            if evs
                .iter()
                .any(|e| matches!(e, Ev::Dq { queue: 9, bytesused, .. } if bytesused[0] > 0))
            {
                return;
            }
        }
        panic!("no picture: {evs:?}");
    }

    #[test]
    fn source_change_comes_with_the_headers_not_the_first_picture() {
        // B-frames: libavcodec gives the first picture only after several
        // units. The SOURCE_CHANGE must not wait for it: a client that
        // polls for the event must still have an OUTPUT buffer queued (m2m
        // poll says EPOLLERR with none, and GStreamer stops there). The
        // parser completes a unit only when the next one starts, yet the
        // event comes with the first buffer, which stays queued.
        let units = h264(320, 240, 8);
        let mut rig = output_only();
        let (mut returned, mut changed, mut next) = (vec![], false, 0);
        while !changed {
            assert!(
                next < 1,
                "no SOURCE_CHANGE after the first unit: {returned:?}"
            );
            changed = queue_unit(&mut rig, &units, next, &mut returned);
            next += 1;
            // FFmpeg's way: one unit, then wait for its buffer or an event.
            assert!(
                changed || returned.contains(&(next as u32 - 1)),
                "buffer {} kept without an event",
                next - 1
            );
        }
        assert!(
            returned.len() < next,
            "every OUTPUT buffer came back with the event"
        );
    }

    #[test]
    fn stop_edge_cases() {
        let mut rig = decoder();
        // Not streaming: accepted, nothing happens.
        rig.stop().unwrap();
        assert!(rig.events().is_empty());
        let mut rig = streaming(2);
        // Nothing queued on OUTPUT: EOS, then the next CAPTURE buffer
        // comes back empty with LAST.
        rig.stop().unwrap();
        let evs = rig.events();
        assert_eq!(evs[0], Ev::Event(bindings::V4L2_EVENT_EOS));
        assert!(
            matches!(&evs[1], Ev::Dq { queue: 9, flags, bytesused, .. } if flags & FLAG_LAST != 0 && bytesused[0] == 0)
        );
        // A drain that waits for CAPTURE buffers refuses a second STOP or START.
        let mut rig = streaming(1);
        rig.streamoff(CAP);
        rig.streamon(CAP); // no buffer queued
        let units = h264(320, 240, 3);
        let _ = feed(&mut rig, &units, 1);
        rig.stop().unwrap();
        assert_eq!(rig.stop().err(), Some(libc::EBUSY));
        assert_eq!(rig.start().err(), Some(libc::EBUSY));
        rig.streamoff(CAP);
        assert_eq!(
            rig.start().err(),
            None,
            "STREAMOFF(CAPTURE) cancelled the drain"
        );
    }

    #[test]
    fn garbage_never_panics_or_hangs() {
        // A deterministic byte soup, raw and after a valid stream start.
        let mut x: u32 = 12345;
        let mut soup = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    (x >> 16) as u8
                })
                .collect()
        };
        let h264 = h264(176, 144, 4);
        for (_, coded, fourcc) in formats() {
            let _ = coded;
            let mut chunks: Vec<Vec<u8>> = (0..6).map(|i| soup(100 + i * 3000)).collect();
            // Start codes in the soup.
            chunks.push(
                [
                    &[0u8, 0, 0, 1, 0x67][..],
                    &soup(50),
                    &[0, 0, 1, 0x65],
                    &soup(5000),
                ]
                .concat(),
            );
            chunks.insert(0, h264[0].clone());
            chunks.push(h264[1].clone());
            let mut rig = decoder();
            let got = Client::new(fourcc).run(&mut rig, &chunks);
            // Each size change after the first, and the drain, end with
            // LAST; nothing to drain if no header was ever found.
            assert_eq!(got.lasts, got.source_changes, "{}", fourcc_str(fourcc));
        }
        // Empty and one-byte buffers.
        let mut rig = decoder();
        let got = Client::new(FMT_H264).run(&mut rig, &[vec![], vec![0], vec![0, 0, 0, 1]]);
        assert_eq!(got.frames.len(), 0);
    }

    #[test]
    fn h264_one_unit_per_buffer_matches_libavcodec() {
        let units = h264(320, 240, 24);
        let mut rig = decoder();
        let got = Client::new(FMT_H264).run(&mut rig, &units);
        assert_eq!(got.source_changes, 1);
        assert_eq!(
            (got.lasts, got.eos_events, got.errors, got.output_errors),
            (1, 1, 0, 0)
        );
        assert_matches_reference(Coded::H264, &units, &got.frames, true);
        let mut sel = rig.dev.g_selection(
            &rig.s,
            v4l2r::ioctl::SelectionType::Capture,
            v4l2r::ioctl::SelectionTarget::Compose,
        );
        assert_eq!(sel.as_mut().map(|r| (r.width, r.height)), Ok((320, 240)));
    }
}

// ---- encoder --------------------------------------------------------------

use crate::avcodec::testing::pattern;
use crate::devices::encoder::{self as enc, EncoderDevice};

pub type EncRig = Rig<EncoderDevice>;

pub fn encoder() -> EncRig {
    Rig::new(EncoderDevice::new)
}

impl EncRig {
    fn queue_mem(&self, queue: QueueType, index: u32, plane: usize) -> &PlaneMem {
        let q = if queue == OUT {
            &self.s.src
        } else {
            &self.s.dst
        };
        &q.bufs[index as usize].mem[plane]
    }

    fn write(&mut self, index: u32, plane: usize, data: &[u8]) {
        if self.memory == MemoryType::UserPtr {
            let (a, _) = self.planes[&(OUT as u32, index)][plane];
            self.mem.write_slice(data, GuestAddress(a)).unwrap();
        } else if let PlaneMem::Mmap(b) = self.queue_mem(OUT, index, plane) {
            b.write_at(0, data).unwrap();
        }
    }

    fn read_unit(&mut self, index: u32, len: u32) -> Vec<u8> {
        let mut out = vec![0u8; len as usize];
        if self.memory == MemoryType::UserPtr {
            let (a, _) = self.planes[&(CAP as u32, index)][0];
            self.mem.read_slice(&mut out, GuestAddress(a)).unwrap();
        } else if let PlaneMem::Mmap(b) = self.queue_mem(CAP, index, 0) {
            b.read_at(0, &mut out).unwrap();
        }
        out
    }

    fn cmd(&mut self, cmd: u32) -> Result<(), i32> {
        let c = bindings::v4l2_encoder_cmd {
            cmd,
            ..Default::default()
        };
        self.dev.encoder_cmd(&mut self.s, c).map(|_| ())
    }

    fn set_ctrl(&mut self, id: u32, value: i32) -> Result<i32, i32> {
        self.dev.s_ctrl(&mut self.s, id, value).map(|c| c.value)
    }
}

/// Memory planes of pattern frame `i` in raw format `fourcc`.
fn source_planes(fourcc: u32, i: u32, w: u32, h: u32) -> Vec<Vec<u8>> {
    let [y, u, v] = pattern(i, w, h);
    let uv: Vec<u8> = u.iter().zip(&v).flat_map(|(a, b)| [*a, *b]).collect();
    match fourcc {
        FMT_NV12 => vec![[y, uv].concat()],
        FMT_NV12M => vec![y, uv],
        FMT_YUV420 => vec![[y, u, v].concat()],
        _ => vec![y, u, v],
    }
}

/// An encoded access unit as the client got it.
#[derive(Debug)]
struct Unit {
    ts: (i64, i64),
    flags: u32,
    data: Vec<u8>,
}

const FLAG_KEYFRAME: u32 = 0x8;

/// A dev-encoder.rst client: CAPTURE format first, then OUTPUT, both
/// queues streaming, `n` pattern frames (timestamp = frame + 1 s), STOP,
/// done at LAST. `before_frame(rig, i)` runs before frame i is queued.
fn encode_frames(
    rig: &mut EncRig,
    fourcc: u32,
    (w, h): (u32, u32),
    n: u32,
    mut before_frame: impl FnMut(&mut EncRig, u32),
) -> (Vec<Unit>, usize) {
    rig.subscribe(EventType::Eos);
    rig.s_fmt(CAP, FMT_H264, 0, 0).unwrap();
    rig.s_fmt(OUT, fourcc, w, h).unwrap();
    let (_, cw, ch, _) = rig.g_fmt(CAP);
    assert_eq!((cw, ch), (w, h), "CAPTURE size follows OUTPUT");
    assert_eq!(rig.reqbufs(OUT, 3), 3);
    assert_eq!(rig.reqbufs(CAP, 3), 3);
    for i in 0..3 {
        rig.qbuf(CAP, i, &[0], (0, 0)).unwrap();
    }
    rig.streamon(OUT);
    rig.streamon(CAP);
    let nplanes = rig.s.raw.planes.len();
    let mut free: Vec<u32> = (0..3).collect();
    let (mut next, mut units, mut eos, mut stop_sent) = (0u32, vec![], 0, false);
    for _ in 0..10 * n + 20 {
        while let (Some(&i), true) = (free.first(), next < n) {
            free.remove(0);
            before_frame(rig, next);
            let planes = source_planes(fourcc, next, w, h);
            for (p, d) in planes.iter().enumerate() {
                rig.write(i, p, d);
            }
            let used: Vec<u32> = planes.iter().map(|p| p.len() as u32).collect();
            assert_eq!(used.len(), nplanes);
            rig.qbuf(OUT, i, &used, (i64::from(next) + 1, 0)).unwrap();
            next += 1;
        }
        if next == n && !stop_sent {
            rig.cmd(enc::ENC_CMD_STOP).unwrap();
            stop_sent = true;
        }
        let mut last = false;
        for ev in rig.events() {
            match ev {
                Ev::Dq { queue, index, .. } if queue == OUT as u32 => free.push(index),
                Ev::Dq {
                    index,
                    flags,
                    bytesused,
                    ts,
                    ..
                } => {
                    if bytesused[0] > 0 {
                        let data = rig.read_unit(index, bytesused[0]);
                        units.push(Unit { ts, flags, data });
                    }
                    if flags & FLAG_LAST != 0 {
                        last = true;
                    } else {
                        rig.qbuf(CAP, index, &[0], (0, 0)).unwrap();
                    }
                }
                Ev::Event(t) if t == bindings::V4L2_EVENT_EOS => eos += 1,
                Ev::Event(t) => panic!("unexpected event {t}"),
            }
        }
        if last {
            return (units, eos);
        }
    }
    panic!("the encoder stalled after {} units", units.len());
}

/// PSNR (dB) of a decoded picture against the pattern frame it encodes,
/// over all three planes.
fn psnr(p: &Picture, i: u32) -> f64 {
    let (w, h) = (p.width(), p.height());
    let src = pattern(i, w, h);
    let (mut se, mut count) = (0f64, 0f64);
    for (plane, s) in src.iter().enumerate() {
        let pw = if plane == 0 {
            w as usize
        } else {
            (w as usize).div_ceil(2)
        };
        for (r, row) in s.chunks(pw).enumerate() {
            let got = p.row(plane, r, pw).unwrap();
            for (a, b) in row.iter().zip(got) {
                let d = f64::from(*a) - f64::from(*b);
                se += d * d;
                count += 1.0;
            }
        }
    }
    if se == 0.0 {
        return 99.0;
    }
    10.0 * (255.0f64 * 255.0 / (se / count)).log10()
}

mod encoder_tests {
    use super::*;

    fn check_stream(units: &[Unit], n: u32, size: (u32, u32)) -> f64 {
        assert_eq!(units.len() as u32, n, "one unit per frame");
        let data: Vec<Vec<u8>> = units.iter().map(|u| u.data.clone()).collect();
        let pictures = reference_decode(Coded::H264, &data);
        assert_eq!(pictures.len() as u32, n, "every frame decodes");
        let mut worst = f64::MAX;
        for (i, (u, p)) in units.iter().zip(&pictures).enumerate() {
            assert_eq!(u.ts, (i as i64 + 1, 0), "timestamp of unit {i}");
            assert_eq!((p.width(), p.height()), size);
            worst = worst.min(psnr(p, i as u32));
        }
        assert_ne!(units[0].flags & FLAG_KEYFRAME, 0, "starts with a key frame");
        worst
    }

    #[test]
    fn h264_from_every_raw_format_reaches_35_db() {
        for memory in [MemoryType::Mmap, MemoryType::UserPtr] {
            for fourcc in RAW_FORMATS.iter().copied() {
                let mut rig = encoder();
                rig.memory = memory;
                let (units, eos) = encode_frames(&mut rig, fourcc, (320, 240), 12, |_, _| {});
                assert_eq!(eos, 1);
                let worst = check_stream(&units, 12, (320, 240));
                assert!(
                    worst >= 35.0,
                    "{} {memory:?}: worst frame {worst:.1} dB",
                    fourcc_str(fourcc)
                );
            }
        }
    }

    #[test]
    fn default_bitrate_gives_35_db_from_vga_to_1080p() {
        for size in [(640, 480), (1280, 720), (1920, 1080)] {
            let mut rig = encoder();
            let (units, _) = encode_frames(&mut rig, FMT_NV12, size, 4, |_, _| {});
            let worst = check_stream(&units, 4, size);
            assert!(worst >= 35.0, "{size:?}: worst frame {worst:.1} dB");
        }
    }

    #[test]
    fn controls_shape_the_stream() {
        // GOP size 5: key frames at 0 and 5; a forced one at 7, from which
        // the next GOP counts (the next would be 12).
        let mut rig = encoder();
        rig.set_ctrl(enc::CID_GOP_SIZE, 5).unwrap();
        assert_eq!(
            rig.set_ctrl(enc::CID_H264_PROFILE, 3).err(),
            Some(libc::EINVAL),
            "no Extended profile"
        );
        assert_eq!(
            rig.dev.querymenu(&rig.s, enc::CID_H264_PROFILE, 3).err(),
            Some(libc::EINVAL)
        );
        assert!(rig.dev.querymenu(&rig.s, enc::CID_H264_PROFILE, 4).is_ok());
        rig.set_ctrl(enc::CID_H264_PROFILE, 0).unwrap();
        rig.set_ctrl(enc::CID_H264_LEVEL, 8).unwrap(); // 3.0
        let (units, _) = encode_frames(&mut rig, FMT_NV12, (320, 240), 12, |rig, i| {
            if i == 7 {
                rig.set_ctrl(enc::CID_FORCE_KEY_FRAME, 0).unwrap();
                assert_eq!(
                    rig.set_ctrl(enc::CID_GOP_SIZE, 9).err(),
                    Some(libc::EBUSY),
                    "fixed while streaming"
                );
                assert_eq!(
                    rig.set_ctrl(enc::CID_BITRATE, 500_000),
                    Ok(500_000),
                    "bitrate changes any time"
                );
            }
        });
        let keys: Vec<usize> = units
            .iter()
            .enumerate()
            .filter(|(_, u)| u.flags & FLAG_KEYFRAME != 0)
            .map(|(i, _)| i)
            .collect();
        for (i, u) in units.iter().enumerate() {
            // An IDR (NAL type 5) exactly where the flag says.
            let idr = u
                .data
                .windows(4)
                .any(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == 5);
            assert_eq!(idr, keys.contains(&i), "unit {i}");
        }
        assert_eq!(keys, vec![0, 5, 7]);
        check_stream(&units, 12, (320, 240));
        // SPS: profile_idc 66 (Baseline), level_idc 30.
        let sps = units[0]
            .data
            .windows(4)
            .position(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == 7)
            .unwrap();
        assert_eq!((units[0].data[sps + 4], units[0].data[sps + 6]), (66, 30));
        assert_eq!(
            crate::devices::common::g_ctrl(&rig.s.ctrls, enc::CID_FORCE_KEY_FRAME).err(),
            Some(libc::EACCES)
        );
    }

    #[test]
    fn constant_qp_cbr_and_bitrate_follow_the_controls() {
        let size_of = |setup: &dyn Fn(&mut EncRig)| {
            let mut rig = encoder();
            setup(&mut rig);
            let (units, _) = encode_frames(&mut rig, FMT_NV12, (320, 240), 10, |_, _| {});
            check_stream(&units, 10, (320, 240));
            units.iter().map(|u| u.data.len()).sum::<usize>()
        };
        let low = size_of(&|r| {
            r.set_ctrl(enc::CID_BITRATE, 100_000).unwrap();
        });
        let high = size_of(&|r| {
            r.set_ctrl(enc::CID_BITRATE, 8_000_000).unwrap();
            r.set_ctrl(enc::CID_BITRATE_MODE, 1).unwrap();
        });
        let qp10 = size_of(&|r| {
            r.set_ctrl(enc::CID_FRAME_RC_ENABLE, 0).unwrap();
            r.set_ctrl(enc::CID_H264_I_FRAME_QP, 10).unwrap();
        });
        let qp45 = size_of(&|r| {
            r.set_ctrl(enc::CID_FRAME_RC_ENABLE, 0).unwrap();
            r.set_ctrl(enc::CID_H264_I_FRAME_QP, 45).unwrap();
        });
        assert!(low < high, "100 kb/s {low} B < 8 Mb/s CBR {high} B");
        assert!(qp45 < qp10, "QP 45 {qp45} B < QP 10 {qp10} B");
    }

    #[test]
    fn crop_encodes_the_visible_rectangle() {
        let mut rig = encoder();
        rig.s_fmt(OUT, FMT_YUV420, 320, 240).unwrap();
        let r = rig
            .dev
            .s_selection(
                &mut rig.s,
                v4l2r::ioctl::SelectionType::Output,
                v4l2r::ioctl::SelectionTarget::Crop,
                bindings::v4l2_rect {
                    left: 0,
                    top: 0,
                    width: 300,
                    height: 201,
                },
                v4l2r::ioctl::SelectionFlags::empty(),
            )
            .unwrap();
        assert_eq!((r.width, r.height), (300, 200));
        assert_eq!(rig.g_fmt(CAP).1, 300);
        // encode_frames sets the OUTPUT format again, which resets the
        // crop: drive this one by hand.
        rig.subscribe(EventType::Eos);
        rig.reqbufs(OUT, 2);
        rig.reqbufs(CAP, 2);
        rig.qbuf(CAP, 0, &[0], (0, 0)).unwrap();
        rig.qbuf(CAP, 1, &[0], (0, 0)).unwrap();
        rig.streamon(OUT);
        rig.streamon(CAP);
        let planes = source_planes(FMT_YUV420, 0, 320, 240);
        rig.write(0, 0, &planes[0]);
        rig.qbuf(OUT, 0, &[planes[0].len() as u32], (5, 0)).unwrap();
        rig.cmd(enc::ENC_CMD_STOP).unwrap();
        let evs = rig.events();
        let (index, used) = evs
            .iter()
            .find_map(|e| match e {
                Ev::Dq {
                    queue: 9,
                    index,
                    bytesused,
                    ..
                } if bytesused[0] > 0 => Some((*index, bytesused[0])),
                _ => None,
            })
            .unwrap();
        let unit = rig.read_unit(index, used);
        let pics = reference_decode(Coded::H264, &[unit]);
        assert_eq!((pics[0].width(), pics[0].height()), (300, 200));
        assert!(eos_then_last(&evs), "{evs:?}");
    }

    #[test]
    fn parm_on_output_only_and_button_events() {
        let mut rig = encoder();
        assert_eq!(rig.dev.g_parm(&rig.s, CAP).err(), Some(libc::EINVAL));
        let mut parm = bindings::v4l2_streamparm {
            type_: OUT as u32,
            ..Default::default()
        };
        parm.parm.output.timeperframe = bindings::v4l2_fract {
            numerator: 1,
            denominator: 60,
        };
        let got = rig.dev.s_parm(&mut rig.s, parm).unwrap();
        // SAFETY: an OUTPUT queue's parameters.
        let tpf = unsafe { got.parm.output.timeperframe };
        assert_eq!((tpf.numerator, tpf.denominator), (1, 60));
        assert_eq!(rig.s.params().interval, (1, 60));
        // The control framework sends an initial event for a button too
        // (v4l2-compliance waits for it); none for a control class.
        let flags = SubscribeEventFlags::SEND_INITIAL;
        rig.dev
            .subscribe_event(&mut rig.s, EventType::Ctrl(enc::CID_FORCE_KEY_FRAME), flags)
            .unwrap();
        assert_eq!(rig.events(), vec![Ev::Event(bindings::V4L2_EVENT_CTRL)]);
        rig.dev
            .subscribe_event(&mut rig.s, EventType::Ctrl(enc::CID_CODEC_CLASS), flags)
            .unwrap();
        assert!(rig.events().is_empty());
    }

    #[test]
    fn drain_edge_cases_and_restart() {
        let mut rig = encoder();
        rig.cmd(enc::ENC_CMD_STOP).unwrap(); // not streaming: nothing
        assert!(rig.events().is_empty());
        let (units, _) = encode_frames(&mut rig, FMT_NV12, (160, 120), 3, |_, _| {});
        assert_eq!(units.len(), 3);
        // Stopped: a new frame waits for START, then a new stream begins
        // with a key frame.
        let planes = source_planes(FMT_NV12, 0, 160, 120);
        rig.write(0, 0, &planes[0]);
        rig.qbuf(OUT, 0, &[planes[0].len() as u32], (9, 0)).unwrap();
        for i in 0..3 {
            let _ = rig.qbuf(CAP, i, &[0], (0, 0));
        }
        assert!(
            rig.events()
                .iter()
                .all(|e| !matches!(e, Ev::Dq { queue: 10, .. })),
            "not encoded while stopped"
        );
        rig.cmd(enc::ENC_CMD_START).unwrap();
        let evs = rig.events();
        assert!(evs.iter().any(|e| matches!(e, Ev::Dq { queue: 9, flags, ts: (9, 0), .. } if flags & FLAG_KEYFRAME != 0)));
        // STOP with nothing queued on OUTPUT: an empty LAST buffer at once.
        rig.cmd(enc::ENC_CMD_STOP).unwrap();
        let evs = rig.events();
        assert!(evs.iter().any(|e| matches!(e, Ev::Dq { queue: 9, flags, bytesused, .. } if flags & FLAG_LAST != 0 && bytesused[0] == 0)));
        assert!(evs.contains(&Ev::Event(bindings::V4L2_EVENT_EOS)));
        // A short OUTPUT buffer comes back with ERROR, nothing encoded.
        rig.cmd(enc::ENC_CMD_START).unwrap();
        rig.qbuf(OUT, 1, &[100], (1, 0)).unwrap();
        let evs = rig.events();
        assert!(evs
            .iter()
            .any(|e| matches!(e, Ev::Dq { queue: 10, flags, .. } if flags & FLAG_ERROR != 0)));
    }
}

/// The codec backends behind the transport: device configuration, and
/// ioctls through the commandq.
#[test]
fn codec_backends_through_the_commandq() {
    use crate::tests::{ioctl_cmd, Harness};
    for (backend, card, queue, fourcc) in [
        ("decoder", "virtio-media-vfu decoder", 10u32, FMT_H264),
        ("encoder", "virtio-media-vfu encoder", 9, FMT_H264),
    ] {
        let mut h = Harness::with_backend(backend, true);
        let mut cfg = vec![0u8; 40];
        h.dev.bar0_read(crate::pci::DEVICE_OFF, &mut cfg);
        let caps = crate::devices::V4L2_CAP_VIDEO_M2M_MPLANE | crate::devices::V4L2_CAP_STREAMING;
        assert_eq!(le32(&cfg, 0), caps);
        assert_eq!(&cfg[8..8 + card.len()], card.as_bytes());
        let s = h.open();
        // VIDIOC_ENUM_FMT (2) index 0 on the coded queue.
        let mut desc = vec![0u8; 64];
        desc[4..8].copy_from_slice(&queue.to_le_bytes());
        let resp = h.command(&ioctl_cmd(s, 2, &desc), 8 + 64);
        assert_eq!(le32(&resp, 0), 0, "{backend}");
        assert_eq!(le32(&resp, 8 + 8) & 1, 1, "{backend}: COMPRESSED");
        assert_eq!(le32(&resp, 8 + 44), fourcc, "{backend}");
    }
}

/// Decoding speed of a 1080p H.264 stream through the decoder backend
/// (parser, decode, copy into MMAP CAPTURE buffers), one session, one
/// libavcodec thread, against libavcodec alone, in CPU time of the
/// test's thread (wall time on a shared machine says little). Timing, so
/// not in the normal run: `./build.sh test --release -- --ignored
/// decode_speed --nocapture`.
#[test]
#[ignore = "timing; run with --release --ignored"]
fn decode_speed_1080p() {
    fn cpu_secs() -> f64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid out pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    }
    let units = encode("libx264", 1920, 1080, 60, 0);
    let start = cpu_secs();
    let pics = reference_decode(Coded::H264, &units);
    let lib = 60.0 / (cpu_secs() - start);
    assert_eq!(pics.len(), 60);
    let mut rig = decoder();
    rig.subscribe(EventType::Eos);
    rig.s_fmt(OUT, FMT_H264, 1920, 1080).unwrap();
    rig.reqbufs(OUT, 4);
    rig.reqbufs(CAP, 4);
    for i in 0..4 {
        rig.qbuf(CAP, i, &[0], (0, 0)).unwrap();
    }
    rig.streamon(OUT);
    rig.streamon(CAP);
    let start = cpu_secs();
    let mut frames = 0;
    let mut count = |rig: &mut DecRig| {
        for e in rig.events() {
            if let Ev::Dq {
                queue: 9,
                index,
                flags,
                bytesused,
                ..
            } = e
            {
                frames += usize::from(bytesused[0] > 0);
                if flags & FLAG_LAST == 0 {
                    rig.qbuf(CAP, index, &[0], (0, 0)).unwrap();
                }
            }
        }
    };
    for (n, u) in units.iter().enumerate() {
        rig.fill((n % 4) as u32, u);
        rig.qbuf(OUT, (n % 4) as u32, &[u.len() as u32], (n as i64 + 1, 0))
            .unwrap();
        count(&mut rig);
    }
    rig.stop().unwrap();
    for _ in 0..4 {
        count(&mut rig);
    }
    let dev = frames as f64 / (cpu_secs() - start);
    eprintln!("decode_speed_1080p: libavcodec alone {lib:.1} frames/s, through the decoder backend {dev:.1} frames/s");
    assert_eq!(frames, 60);
    assert!(dev >= 25.0, "{dev:.1} frames/s is below real time");
}
