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
        let shm = Shm::new(256 << 20).unwrap();
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

mod decoder_tests {
    use super::*;

    fn h264(w: u32, h: u32, n: u32) -> Vec<Vec<u8>> {
        encode("libx264", w, h, n, 0)
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
