// SPDX-License-Identifier: GPL-2.0
//! End-to-end tests of the PCI function: a tiny virtio driver written
//! against test guest memory sets up both queues through BAR0, sends
//! virtio-media commands and reads responses and events back.

use std::sync::Arc;

use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::device::VirtioMediaPci;
use crate::devices;
use crate::media::EventQueueHandle;
use crate::pci;
use crate::shm::{Shm, PAGE_SIZE};
use crate::transport::{reg, *};

const MEM_SIZE: usize = 4 << 20;
const QSIZE: u16 = 16;
const VIRTQ_DESC_F_NEXT: u16 = 1;
const VIRTQ_DESC_F_WRITE: u16 = 2;

const CMD_OPEN: u32 = 1;
const CMD_CLOSE: u32 = 2;
const CMD_IOCTL: u32 = 3;
const CMD_MMAP: u32 = 4;
const CMD_MUNMAP: u32 = 5;

const VIDIOC_ENUM_FMT: u32 = 2;
const VIDIOC_G_FMT: u32 = 4;
const VIDIOC_REQBUFS: u32 = 8;
const VIDIOC_QUERYBUF: u32 = 9;
const VIDIOC_QBUF: u32 = 15;
const VIDIOC_STREAMON: u32 = 18;

const V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE: u32 = 9;
const V4L2_MEMORY_MMAP: u32 = 1;
const V4L2_BUFFER_SIZE: usize = 88;
const V4L2_PLANE_SIZE: usize = 64;
const V4L2_FORMAT_SIZE: usize = 208;

struct Vq {
    desc: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
    used_seen: u16,
}

pub(crate) struct Harness {
    pub(crate) dev: VirtioMediaPci,
    pub(crate) mem: GuestMemoryMmap,
    vqs: [Vq; 2],
    /// Bump allocator for data buffers in guest memory.
    next_buf: u64,
    pub(crate) shm: Arc<Shm>,
}

pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
pub(crate) fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

pub(crate) fn cmd_hdr(cmd: u32) -> Vec<u8> {
    let mut v = cmd.to_le_bytes().to_vec();
    v.extend_from_slice(&[0; 4]);
    v
}

pub(crate) fn ioctl_cmd(session: u32, code: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = cmd_hdr(CMD_IOCTL);
    v.extend_from_slice(&session.to_le_bytes());
    v.extend_from_slice(&code.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

pub(crate) fn v4l2_buffer(index: u32, num_planes: u32) -> Vec<u8> {
    let mut b = vec![0u8; V4L2_BUFFER_SIZE];
    b[0..4].copy_from_slice(&index.to_le_bytes());
    b[4..8].copy_from_slice(&V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE.to_le_bytes());
    b[60..64].copy_from_slice(&V4L2_MEMORY_MMAP.to_le_bytes());
    b[72..76].copy_from_slice(&num_planes.to_le_bytes()); // length = planes
    b
}

impl Harness {
    fn new(msix: bool) -> Harness {
        Harness::with_backend("simple", msix)
    }

    pub(crate) fn with_backend(backend: &str, msix: bool) -> Harness {
        Harness::with_frame_log(backend, msix, crate::framelog::FrameLog::default())
    }

    pub(crate) fn with_frame_log(
        backend: &str,
        msix: bool,
        frame_log: crate::framelog::FrameLog,
    ) -> Harness {
        Harness::with_opts(
            backend,
            msix,
            devices::BackendOpts {
                frame_log,
                ..Default::default()
            },
        )
    }

    pub(crate) fn with_opts(backend: &str, msix: bool, opts: devices::BackendOpts) -> Harness {
        Harness::with_shm(backend, msix, opts, Shm::new(16 << 20).unwrap())
    }

    /// A device started with `--no-shm`.
    pub(crate) fn without_shm(backend: &str) -> Harness {
        Harness::with_shm(backend, true, Default::default(), Shm::absent())
    }

    pub(crate) fn with_shm(
        backend: &str,
        msix: bool,
        opts: devices::BackendOpts,
        shm: Arc<Shm>,
    ) -> Harness {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let shared = VirtioMediaPci::new_guest_memory();
        *shared.write().unwrap() = mem.clone();
        let events = EventQueueHandle::default();
        let backend =
            devices::make_backend(backend, events.clone(), shm.clone(), shared.clone(), opts)
                .unwrap();
        let dev = VirtioMediaPci::new(42, shm.clone(), backend, events, shared);
        let mut h = Harness {
            dev,
            mem,
            vqs: [0x1000u64, 0x4000].map(|base| Vq {
                desc: base,
                avail: base + 0x1000,
                used: base + 0x2000,
                next_desc: 0,
                avail_idx: 0,
                used_seen: 0,
            }),
            next_buf: 0x10000,
            shm,
        };
        if msix {
            let ctrl = (pci::CAP_MSIX + 3) as u64;
            h.dev.config_write(ctrl, &[0x80]);
        }
        h.init_driver(msix);
        h
    }

    pub(crate) fn w(&mut self, off: u64, data: &[u8]) {
        self.dev.bar0_write(pci::COMMON_OFF + off, data);
    }
    fn r(&mut self, off: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0; len];
        self.dev.bar0_read(pci::COMMON_OFF + off, &mut b);
        b
    }

    pub(crate) fn init_driver(&mut self, msix: bool) {
        self.w(reg::DEVICE_STATUS, &[0]);
        self.w(reg::DEVICE_STATUS, &[STATUS_ACKNOWLEDGE]);
        self.w(reg::DEVICE_STATUS, &[STATUS_ACKNOWLEDGE | STATUS_DRIVER]);
        self.w(reg::DRIVER_FEATURE_SELECT, &1u32.to_le_bytes());
        self.w(reg::DRIVER_FEATURE, &1u32.to_le_bytes());
        let s = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK;
        self.w(reg::DEVICE_STATUS, &[s]);
        assert_eq!(self.r(reg::DEVICE_STATUS, 1)[0], s);
        if msix {
            self.w(reg::MSIX_CONFIG, &0u16.to_le_bytes());
        }
        for q in 0..2u16 {
            self.w(reg::QUEUE_SELECT, &q.to_le_bytes());
            self.w(reg::QUEUE_SIZE, &QSIZE.to_le_bytes());
            let vq = &self.vqs[q as usize];
            let (d, a, u) = (vq.desc, vq.avail, vq.used);
            self.w(reg::QUEUE_DESC_LO, &d.to_le_bytes());
            self.w(reg::QUEUE_DRIVER_LO, &(a as u32).to_le_bytes());
            self.w(reg::QUEUE_DRIVER_HI, &0u32.to_le_bytes());
            self.w(reg::QUEUE_DEVICE_LO, &(u as u32).to_le_bytes());
            self.w(reg::QUEUE_DEVICE_HI, &0u32.to_le_bytes());
            if msix {
                self.w(reg::QUEUE_MSIX_VECTOR, &(q + 1).to_le_bytes());
            }
            self.w(reg::QUEUE_ENABLE, &1u16.to_le_bytes());
        }
        // Fresh rings, like a driver that (re)allocates them zeroed.
        for vq in self.vqs.iter() {
            for a in [vq.desc, vq.avail, vq.used] {
                self.mem
                    .write_slice(&[0u8; 0x1000], GuestAddress(a))
                    .unwrap();
            }
        }
        self.w(reg::DEVICE_STATUS, &[s | STATUS_DRIVER_OK]);
        for vq in self.vqs.iter_mut() {
            vq.next_desc = 0;
            vq.avail_idx = 0;
            vq.used_seen = 0;
        }
    }

    pub(crate) fn alloc(&mut self, len: usize) -> u64 {
        let a = self.next_buf;
        self.next_buf += (len as u64).div_ceil(64) * 64 + 64;
        assert!(self.next_buf < MEM_SIZE as u64);
        a
    }

    /// Adds a chain of (addr, len, device-writable) descriptors.
    pub(crate) fn add_chain(&mut self, q: usize, bufs: &[(u64, u32, bool)]) -> u16 {
        let vq = &mut self.vqs[q];
        let head = vq.next_desc;
        for (i, &(addr, len, write)) in bufs.iter().enumerate() {
            let idx = (vq.next_desc % QSIZE) as u64;
            let next = (vq.next_desc + 1) % QSIZE;
            let mut flags = if write { VIRTQ_DESC_F_WRITE } else { 0 };
            if i + 1 < bufs.len() {
                flags |= VIRTQ_DESC_F_NEXT;
            }
            let d = vq.desc + idx * 16;
            self.mem.write_obj(addr, GuestAddress(d)).unwrap();
            self.mem.write_obj(len, GuestAddress(d + 8)).unwrap();
            self.mem.write_obj(flags, GuestAddress(d + 12)).unwrap();
            self.mem.write_obj(next, GuestAddress(d + 14)).unwrap();
            vq.next_desc = next;
        }
        let slot = vq.avail + 4 + 2 * (vq.avail_idx % QSIZE) as u64;
        self.mem
            .write_obj(head % QSIZE, GuestAddress(slot))
            .unwrap();
        vq.avail_idx = vq.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(vq.avail_idx, GuestAddress(vq.avail + 2))
            .unwrap();
        head % QSIZE
    }

    pub(crate) fn notify(&mut self, q: u16) {
        let off = pci::NOTIFY_OFF + q as u64 * pci::NOTIFY_OFF_MULTIPLIER as u64;
        self.dev.bar0_write(off, &q.to_le_bytes());
    }

    /// New used-ring entries (id, len).
    pub(crate) fn used(&mut self, q: usize) -> Vec<(u32, u32)> {
        let vq = &mut self.vqs[q];
        let idx: u16 = self.mem.read_obj(GuestAddress(vq.used + 2)).unwrap();
        let mut out = vec![];
        while vq.used_seen != idx {
            let e = vq.used + 4 + 8 * (vq.used_seen % QSIZE) as u64;
            let id: u32 = self.mem.read_obj(GuestAddress(e)).unwrap();
            let len: u32 = self.mem.read_obj(GuestAddress(e + 4)).unwrap();
            out.push((id, len));
            vq.used_seen = vq.used_seen.wrapping_add(1);
        }
        out
    }

    /// Sends one command with a response buffer of `resp_len`; returns the
    /// response bytes actually written by the device.
    pub(crate) fn command(&mut self, cmd: &[u8], resp_len: u32) -> Vec<u8> {
        let c = self.alloc(cmd.len());
        self.mem.write_slice(cmd, GuestAddress(c)).unwrap();
        let r = self.alloc(resp_len as usize);
        self.mem
            .write_slice(&vec![0xaa; resp_len as usize], GuestAddress(r))
            .unwrap();
        let head = self.add_chain(0, &[(c, cmd.len() as u32, false), (r, resp_len, true)]);
        self.notify(0);
        let used = self.used(0);
        assert_eq!(used.len(), 1, "exactly one chain used");
        assert_eq!(used[0].0, head as u32);
        let mut out = vec![0; used[0].1 as usize];
        self.mem.read_slice(&mut out, GuestAddress(r)).unwrap();
        out
    }

    pub(crate) fn open(&mut self) -> u32 {
        let resp = self.command(&cmd_hdr(CMD_OPEN), 16);
        assert_eq!(resp.len(), 16);
        assert_eq!(le32(&resp, 0), 0, "OPEN status");
        le32(&resp, 8)
    }

    /// Makes one eventq buffer of `len` bytes available; returns its address.
    pub(crate) fn add_event_buffer(&mut self, len: u32) -> (u16, u64) {
        let a = self.alloc(len as usize);
        let head = self.add_chain(1, &[(a, len, true)]);
        (head, a)
    }
}

fn g_fmt_payload() -> Vec<u8> {
    let mut f = vec![0u8; V4L2_FORMAT_SIZE];
    f[0..4].copy_from_slice(&V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE.to_le_bytes());
    f
}

#[test]
fn device_config_through_bar0() {
    let mut h = Harness::new(true);
    let mut cfg = vec![0u8; 40];
    h.dev.bar0_read(pci::DEVICE_OFF, &mut cfg);
    assert_eq!(
        le32(&cfg, 0),
        devices::V4L2_CAP_VIDEO_CAPTURE_MPLANE | devices::V4L2_CAP_STREAMING
    );
    assert_eq!(le32(&cfg, 4), devices::VFL_TYPE_VIDEO);
    assert_eq!(&cfg[8..22], b"simple_device\0");
    // Single-byte access in the middle of the card name.
    let mut b = [0u8];
    h.dev.bar0_read(pci::DEVICE_OFF + 9, &mut b);
    assert_eq!(b[0], b'i');
}

#[test]
fn open_and_ioctl_over_commandq() {
    let mut h = Harness::new(true);
    let before = h.dev.irqs.msix_count.clone();
    let session = h.open();
    assert_eq!(session, 0);
    assert_eq!(
        h.dev.irqs.msix_count[1],
        before[1] + 1,
        "commandq vector 1 raised"
    );
    assert_eq!(h.dev.backend.num_sessions(), 1);

    // VIDIOC_G_FMT: status 0 followed by the format.
    let resp = h.command(
        &ioctl_cmd(session, VIDIOC_G_FMT, &g_fmt_payload()),
        8 + V4L2_FORMAT_SIZE as u32,
    );
    assert_eq!(
        resp.len(),
        8 + V4L2_FORMAT_SIZE,
        "used length = bytes written"
    );
    assert_eq!(le32(&resp, 0), 0);
    let fmt = &resp[8..];
    assert_eq!(le32(fmt, 0), V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE);
    assert_eq!(le32(fmt, 8), 640);
    assert_eq!(le32(fmt, 12), 480);
    assert_eq!(&fmt[16..20], b"YU12");

    // VIDIOC_ENUM_FMT index 0 ok, index 1 EINVAL.
    let mut desc = vec![0u8; 64];
    desc[4..8].copy_from_slice(&V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE.to_le_bytes());
    let resp = h.command(&ioctl_cmd(session, VIDIOC_ENUM_FMT, &desc), 8 + 64);
    assert_eq!(le32(&resp, 0), 0);
    assert_eq!(&resp[8 + 44..8 + 48], b"YU12");
    desc[0] = 1;
    let resp = h.command(&ioctl_cmd(session, VIDIOC_ENUM_FMT, &desc), 8 + 64);
    assert_eq!(resp.len(), 8);
    assert_eq!(le32(&resp, 0) as i32, libc::EINVAL);

    // CLOSE: no response, session gone.
    let mut close = cmd_hdr(CMD_CLOSE);
    close.extend_from_slice(&session.to_le_bytes());
    close.extend_from_slice(&[0; 4]);
    let resp = h.command(&close, 8);
    assert!(resp.is_empty());
    assert_eq!(h.dev.backend.num_sessions(), 0);
}

/// REQBUFS + QUERYBUF + MMAP + QBUF + STREAMON: frames land in the shared
/// memory region at the offset MMAP returned, and DQBUF events wait for
/// eventq buffers that are made available only later.
#[test]
fn capture_frames_in_shm_and_late_event_buffers() {
    let mut h = Harness::new(true);
    let s = h.open();

    let mut req = vec![0u8; 20];
    req[0..4].copy_from_slice(&2u32.to_le_bytes());
    req[4..8].copy_from_slice(&V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE.to_le_bytes());
    req[8..12].copy_from_slice(&V4L2_MEMORY_MMAP.to_le_bytes());
    let resp = h.command(&ioctl_cmd(s, VIDIOC_REQBUFS, &req), 8 + 20);
    assert_eq!(le32(&resp, 0), 0, "REQBUFS status");
    assert_eq!(le32(&resp, 8), 2, "count");
    assert_eq!(h.shm.usage().0, 2, "two buffers carved out of the BAR");

    let mut addrs = vec![];
    for i in 0..2 {
        let resp = h.command(
            &ioctl_cmd(s, VIDIOC_QUERYBUF, &v4l2_buffer(i, 1)),
            (8 + V4L2_BUFFER_SIZE + V4L2_PLANE_SIZE) as u32,
        );
        assert_eq!(le32(&resp, 0), 0, "QUERYBUF status");
        let plane = &resp[8 + V4L2_BUFFER_SIZE..];
        let length = le32(plane, 4);
        let mem_offset = le32(plane, 8);
        assert_eq!(length, devices::simple::BUFFER_SIZE);
        assert_eq!(mem_offset as u64 % PAGE_SIZE, 0);

        let mut mmap = cmd_hdr(CMD_MMAP);
        mmap.extend_from_slice(&s.to_le_bytes());
        mmap.extend_from_slice(&1u32.to_le_bytes()); // RW
        mmap.extend_from_slice(&(mem_offset as u64).to_le_bytes());
        let resp = h.command(&mmap, 24);
        assert_eq!(le32(&resp, 0), 0, "MMAP status");
        let addr = le64(&resp, 8);
        assert_eq!(le64(&resp, 16), length as u64);
        assert!(addr + length as u64 <= h.shm.size());
        addrs.push(addr);
    }
    assert_ne!(addrs[0], addrs[1]);

    // No eventq buffers yet.
    for i in 0..2 {
        let resp = h.command(
            &ioctl_cmd(
                s,
                VIDIOC_QBUF,
                &[v4l2_buffer(i, 1), vec![0; V4L2_PLANE_SIZE]].concat(),
            ),
            (8 + V4L2_BUFFER_SIZE + V4L2_PLANE_SIZE) as u32,
        );
        assert_eq!(le32(&resp, 0), 0, "QBUF status");
    }
    let resp = h.command(
        &ioctl_cmd(
            s,
            VIDIOC_STREAMON,
            &V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE.to_le_bytes(),
        ),
        8,
    );
    assert_eq!(le32(&resp, 0), 0, "STREAMON status");
    assert_eq!(h.dev.events.len(), 2, "two DQBUF events pending");
    assert!(h.used(1).is_empty());

    // Frame 1 (sequence 1) is in buffer 1: Y=1, U=65, V=129, straight in shm.
    let (w, hgt) = (
        devices::simple::WIDTH as u64,
        devices::simple::HEIGHT as u64,
    );
    let mut px = [0u8; 1];
    h.shm.read_at(addrs[1], &mut px).unwrap();
    assert_eq!(px[0], 1);
    h.shm.read_at(addrs[1] + w * hgt, &mut px).unwrap();
    assert_eq!(px[0], 65);
    h.shm.read_at(addrs[1] + w * hgt * 5 / 4, &mut px).unwrap();
    assert_eq!(px[0], 129);

    // One event buffer becomes available: exactly one event delivered.
    let ev_len = 8 + V4L2_BUFFER_SIZE + 8 * V4L2_PLANE_SIZE;
    let before = h.dev.irqs.msix_count[2];
    let (head, a) = h.add_event_buffer(ev_len as u32);
    h.notify(1);
    let used = h.used(1);
    assert_eq!(used, vec![(head as u32, ev_len as u32)]);
    assert_eq!(
        h.dev.irqs.msix_count[2],
        before + 1,
        "eventq vector 2 raised"
    );
    assert_eq!(h.dev.events.len(), 1);
    let mut ev = vec![0u8; ev_len];
    h.mem.read_slice(&mut ev, GuestAddress(a)).unwrap();
    assert_eq!(le32(&ev, 0), 1, "VIRTIO_MEDIA_EVT_DQBUF");
    assert_eq!(le32(&ev, 4), s);
    let buf = &ev[8..];
    assert_eq!(le32(buf, 0), 0, "buffer index 0 first");
    assert_eq!(le32(buf, 4), V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE);
    assert_eq!(le64(buf, 64), 0, "planes pointer not leaked");
    let plane0 = &buf[V4L2_BUFFER_SIZE..];
    assert_eq!(le32(plane0, 0), devices::simple::BUFFER_SIZE, "bytesused");

    // Second buffer arrives later still.
    let (_, a2) = h.add_event_buffer(ev_len as u32);
    h.notify(1);
    assert_eq!(h.used(1).len(), 1);
    assert_eq!(h.dev.events.len(), 0);
    let mut ev = vec![0u8; 16];
    h.mem.read_slice(&mut ev, GuestAddress(a2)).unwrap();
    assert_eq!(le32(&ev, 8), 1, "then buffer index 1");

    // Too-small event buffer: returned with 0 bytes, event dropped, no panic.
    let resp = h.command(
        &ioctl_cmd(
            s,
            VIDIOC_QBUF,
            &[v4l2_buffer(0, 1), vec![0; V4L2_PLANE_SIZE]].concat(),
        ),
        (8 + V4L2_BUFFER_SIZE + V4L2_PLANE_SIZE) as u32,
    );
    assert_eq!(le32(&resp, 0), 0);
    let (head, _) = h.add_event_buffer(16);
    h.notify(1);
    assert_eq!(h.used(1), vec![(head as u32, 0)]);

    // MUNMAP of both mappings, then of an unknown address.
    for addr in addrs {
        let mut unmap = cmd_hdr(CMD_MUNMAP);
        unmap.extend_from_slice(&addr.to_le_bytes());
        let resp = h.command(&unmap, 8);
        assert_eq!(le32(&resp, 0), 0, "MUNMAP status");
    }
    let mut unmap = cmd_hdr(CMD_MUNMAP);
    unmap.extend_from_slice(&0xdead000u64.to_le_bytes());
    assert_eq!(le32(&h.command(&unmap, 8), 0) as i32, libc::EINVAL);
}

#[test]
fn mappings_outlive_sessions() {
    let mut h = Harness::new(true);
    let s = h.open();
    let mut req = vec![0u8; 20];
    req[0..4].copy_from_slice(&1u32.to_le_bytes());
    req[4..8].copy_from_slice(&V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE.to_le_bytes());
    req[8..12].copy_from_slice(&V4L2_MEMORY_MMAP.to_le_bytes());
    assert_eq!(
        le32(&h.command(&ioctl_cmd(s, VIDIOC_REQBUFS, &req), 28), 0),
        0
    );
    let mut mmap = cmd_hdr(CMD_MMAP);
    mmap.extend_from_slice(&s.to_le_bytes());
    mmap.extend_from_slice(&1u32.to_le_bytes());
    mmap.extend_from_slice(&0u64.to_le_bytes());
    let resp = h.command(&mmap, 24);
    assert_eq!(le32(&resp, 0), 0);
    let addr = le64(&resp, 8);

    let mut close = cmd_hdr(CMD_CLOSE);
    close.extend_from_slice(&s.to_le_bytes());
    close.extend_from_slice(&[0; 4]);
    h.command(&close, 8);
    assert_eq!(h.shm.usage().0, 1, "mapping keeps the range after CLOSE");
    let mut unmap = cmd_hdr(CMD_MUNMAP);
    unmap.extend_from_slice(&addr.to_le_bytes());
    assert_eq!(le32(&h.command(&unmap, 8), 0), 0);
    assert_eq!(h.shm.usage().0, 0, "MUNMAP frees it");
}

#[test]
fn malformed_commands_get_error_status() {
    let mut h = Harness::new(true);
    let s = h.open();

    // Unknown command.
    let resp = h.command(&cmd_hdr(99), 8);
    assert_eq!(le32(&resp, 0) as i32, libc::ENOTTY);
    // Short command (4 bytes, header is 8).
    let resp = h.command(&1u32.to_le_bytes(), 8);
    assert_eq!(le32(&resp, 0) as i32, libc::EINVAL);
    // IOCTL on an unknown session.
    let resp = h.command(&ioctl_cmd(77, VIDIOC_G_FMT, &g_fmt_payload()), 8 + 208);
    assert_eq!(le32(&resp, 0) as i32, libc::EINVAL);
    // Unknown ioctl code.
    let resp = h.command(&ioctl_cmd(s, 1000, &[]), 8);
    assert_eq!(le32(&resp, 0) as i32, libc::ENOTTY);
    // IOCTL with truncated payload.
    let resp = h.command(&ioctl_cmd(s, VIDIOC_G_FMT, &[9, 0, 0, 0]), 8 + 208);
    assert_eq!(le32(&resp, 0) as i32, libc::EINVAL);
    // MMAP of an offset that is no buffer.
    let mut mmap = cmd_hdr(CMD_MMAP);
    mmap.extend_from_slice(&s.to_le_bytes());
    mmap.extend_from_slice(&1u32.to_le_bytes());
    mmap.extend_from_slice(&0x123000u64.to_le_bytes());
    assert_eq!(le32(&h.command(&mmap, 24), 0) as i32, libc::EINVAL);
    // Response buffer too small for the G_FMT payload.
    let resp = h.command(&ioctl_cmd(s, VIDIOC_G_FMT, &g_fmt_payload()), 16);
    assert_eq!(resp.len(), 8);
    assert_eq!(le32(&resp, 0) as i32, libc::ENOSPC);

    // VIDIOC_SUBSCRIBE_EVENT with an unknown type or flags (the crate
    // would unwrap() on it) and a valid one the simple device lacks.
    for (ty, flags, errno) in [
        (0x1234u32, 0u32, libc::EINVAL),
        (3, 0x80, libc::EINVAL),
        (3, 1, libc::ENOTTY),
    ] {
        let mut sub = vec![0u8; 32];
        sub[0..4].copy_from_slice(&ty.to_le_bytes());
        sub[8..12].copy_from_slice(&flags.to_le_bytes());
        let resp = h.command(&ioctl_cmd(s, 90, &sub), 8);
        assert_eq!(
            le32(&resp, 0) as i32,
            errno,
            "SUBSCRIBE_EVENT type {ty:#x} flags {flags:#x}"
        );
    }

    // Descriptor pointing outside guest memory: chain returned, no write.
    let r = h.alloc(8);
    h.mem.write_slice(&[0xaa; 8], GuestAddress(r)).unwrap();
    let head = h.add_chain(0, &[(0xffff_0000_0000, 8, false), (r, 8, true)]);
    h.notify(0);
    let used = h.used(0);
    // virtio-queue ends the chain at the bad descriptor, so the device sees
    // an empty chain: it is returned unused and nothing is written.
    assert_eq!(used, vec![(head as u32, 0)]);
    let mut st = [0u8; 4];
    h.mem.read_slice(&mut st, GuestAddress(r)).unwrap();
    assert_eq!(st, [0xaa; 4]);

    // Writable descriptor outside guest memory: nothing written, len 0.
    let c = h.alloc(8);
    h.mem
        .write_slice(&cmd_hdr(CMD_OPEN), GuestAddress(c))
        .unwrap();
    h.add_chain(0, &[(c, 8, false), (MEM_SIZE as u64 + 0x1000, 16, true)]);
    h.notify(0);
    assert_eq!(h.used(0)[0].1, 0);

    // Readable descriptor after a writable one.
    let c = h.alloc(8);
    let r = h.alloc(8);
    h.mem
        .write_slice(&cmd_hdr(CMD_OPEN), GuestAddress(c))
        .unwrap();
    h.add_chain(0, &[(r, 8, true), (c, 8, false)]);
    h.notify(0);
    assert_eq!(h.used(0)[0].1, 8);
    h.mem.read_slice(&mut st, GuestAddress(r)).unwrap();
    assert_eq!(i32::from_le_bytes(st), libc::EINVAL);

    // Chain without any writable descriptor: returned with len 0.
    let c = h.alloc(8);
    h.mem
        .write_slice(&cmd_hdr(CMD_OPEN), GuestAddress(c))
        .unwrap();
    h.add_chain(0, &[(c, 8, false)]);
    h.notify(0);
    assert_eq!(h.used(0)[0].1, 0);

    // Bogus notify offsets and BAR0 accesses out of range are ignored.
    h.dev.bar0_write(pci::NOTIFY_OFF + 40, &[0, 0]);
    h.dev.bar0_write(pci::BAR0_SIZE - 1, &[0, 0, 0, 0]);
    let mut b = [0u8; 8];
    h.dev.bar0_read(u64::MAX - 2, &mut b);

    // Still alive: a new session works.
    assert_eq!(
        h.open(),
        s + 1,
        "no orphan sessions from commands without response room"
    );
}

#[test]
fn reset_clears_sessions_mappings_and_events() {
    let mut h = Harness::new(true);
    let s = h.open();
    let mut req = vec![0u8; 20];
    req[0..4].copy_from_slice(&1u32.to_le_bytes());
    req[4..8].copy_from_slice(&V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE.to_le_bytes());
    req[8..12].copy_from_slice(&V4L2_MEMORY_MMAP.to_le_bytes());
    assert_eq!(
        le32(&h.command(&ioctl_cmd(s, VIDIOC_REQBUFS, &req), 28), 0),
        0
    );
    let resp = h.command(
        &ioctl_cmd(
            s,
            VIDIOC_QBUF,
            &[v4l2_buffer(0, 1), vec![0; V4L2_PLANE_SIZE]].concat(),
        ),
        (8 + V4L2_BUFFER_SIZE + V4L2_PLANE_SIZE) as u32,
    );
    assert_eq!(le32(&resp, 0), 0);
    let resp = h.command(
        &ioctl_cmd(
            s,
            VIDIOC_STREAMON,
            &V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE.to_le_bytes(),
        ),
        8,
    );
    assert_eq!(le32(&resp, 0), 0);
    assert_eq!(h.dev.events.len(), 1);
    assert_eq!(h.shm.usage().0, 1);

    h.w(reg::DEVICE_STATUS, &[0]);
    assert_eq!(h.r(reg::DEVICE_STATUS, 1)[0], 0);
    assert_eq!(h.dev.backend.num_sessions(), 0);
    assert_eq!(h.shm.usage().0, 0);
    assert_eq!(h.dev.events.len(), 0);
    for q in 0..2u16 {
        h.w(reg::QUEUE_SELECT, &q.to_le_bytes());
        assert_eq!(h.r(reg::QUEUE_ENABLE, 2), vec![0, 0]);
    }
    // Notifies while reset do nothing.
    h.notify(0);

    // Device usable again after re-initialisation.
    h.init_driver(true);
    assert_eq!(h.open(), 0, "fresh session numbering");
    assert_eq!(h.dev.backend.num_sessions(), 1);
}

#[test]
fn intx_fallback_sets_isr() {
    let mut h = Harness::new(false);
    assert_eq!(h.dev.irqs.intx_count, 0);
    h.open();
    assert_eq!(h.dev.irqs.intx_count, 1);
    let mut isr = [0u8];
    h.dev.bar0_read(pci::ISR_OFF, &mut isr);
    assert_eq!(isr[0], ISR_QUEUE);
    h.dev.bar0_read(pci::ISR_OFF, &mut isr);
    assert_eq!(isr[0], 0, "read clears");
}

#[test]
fn dma_map_memfd_regions_and_unmap() {
    use std::os::fd::FromRawFd;
    use std::os::unix::fs::FileExt;
    let shm = Shm::new(1 << 20).unwrap();
    let events = EventQueueHandle::default();
    let shared = VirtioMediaPci::new_guest_memory();
    let backend = devices::make_backend(
        "simple",
        events.clone(),
        shm.clone(),
        shared.clone(),
        Default::default(),
    )
    .unwrap();
    let mut dev = VirtioMediaPci::new(48, shm, backend, events, shared);
    let fd = unsafe { libc::memfd_create(c"ram".as_ptr(), 0) };
    assert!(fd >= 0);
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.set_len(3 << 20).unwrap();
    // Two regions from one memfd, like QEMU's RAM split below/above a hole.
    dev.dma_map(0, 0, 1 << 20, Some(file.try_clone().unwrap()))
        .unwrap();
    dev.dma_map(
        1 << 20,
        0x1_0000_0000,
        2 << 20,
        Some(file.try_clone().unwrap()),
    )
    .unwrap();
    // Overlap is refused.
    assert!(dev
        .dma_map(0, 0x8000, 0x1000, Some(file.try_clone().unwrap()))
        .is_err());
    // Without fd: ignored.
    dev.dma_map(0, 0x2000_0000, 0x1000, None).unwrap();
    {
        let mem = dev.mem.read().unwrap();
        mem.write_slice(b"hello", GuestAddress(0x1_0000_0010))
            .unwrap();
        assert!(mem.write_slice(b"x", GuestAddress(0x2000_0000)).is_err());
    }
    let mut out = [0u8; 5];
    file.read_exact_at(&mut out, (1 << 20) + 0x10).unwrap();
    assert_eq!(&out, b"hello");
    dev.dma_unmap(0x1_0000_0000, 2 << 20, false).unwrap();
    {
        let mem = dev.mem.read().unwrap();
        assert!(mem.write_slice(b"x", GuestAddress(0x1_0000_0010)).is_err());
        assert!(mem.write_slice(b"x", GuestAddress(0x10)).is_ok());
    }
    dev.dma_unmap(0, 0, true).unwrap();
    assert!(dev
        .mem
        .read()
        .unwrap()
        .write_slice(b"x", GuestAddress(0x10))
        .is_err());
}

#[test]
fn msix_eventfds_from_set_irqs() {
    use crate::device::*;
    let mut h = Harness::new(true);
    let efds: Vec<std::fs::File> = (0..pci::MSIX_VECTORS)
        .map(|_| {
            let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK) };
            assert!(fd >= 0);
            unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) }
        })
        .collect();
    let dup: Vec<std::fs::File> = efds.iter().map(|f| f.try_clone().unwrap()).collect();
    h.dev.set_irqs(
        VFIO_PCI_MSIX_IRQ_INDEX,
        VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
        0,
        pci::MSIX_VECTORS as u32,
        dup,
    );
    h.open();
    let read = |f: &std::fs::File| {
        use std::io::Read;
        let mut b = [0u8; 8];
        match (&*f).read(&mut b) {
            Ok(8) => u64::from_ne_bytes(b),
            _ => 0,
        }
    };
    assert_eq!(read(&efds[1]), 1, "commandq vector eventfd signalled");
    assert_eq!(read(&efds[2]), 0);
    assert_eq!(read(&efds[0]), 0);
}

// ---- --backend capture --------------------------------------------------

mod capture {
    use super::*;
    use crate::devices::capture::{frame_byte, FORMATS};
    use crate::devices::common::*;
    use v4l2r::bindings;

    const VIDIOC_S_FMT: u32 = 5;
    const VIDIOC_G_CTRL: u32 = 27;
    const VIDIOC_S_CTRL: u32 = 28;
    const VIDIOC_QUERYCTRL: u32 = 36;
    const VIDIOC_G_EXT_CTRLS: u32 = 71;
    const VIDIOC_S_EXT_CTRLS: u32 = 72;
    const VIDIOC_ENUM_FRAMESIZES: u32 = 74;
    const VIDIOC_ENUM_FRAMEINTERVALS: u32 = 75;
    const VIDIOC_SUBSCRIBE_EVENT: u32 = 90;
    const VIDIOC_QUERY_EXT_CTRL: u32 = 103;
    const VIDIOC_STREAMOFF: u32 = 19;

    pub(super) fn s_fmt_mp(h: &mut Harness, s: u32, fourcc: u32, w: u32, ht: u32) -> Vec<u8> {
        let mut f = g_fmt_payload();
        f[8..12].copy_from_slice(&w.to_le_bytes());
        f[12..16].copy_from_slice(&ht.to_le_bytes());
        f[16..20].copy_from_slice(&fourcc.to_le_bytes());
        let resp = h.command(&ioctl_cmd(s, VIDIOC_S_FMT, &f), 8 + 208);
        assert_eq!(le32(&resp, 0), 0, "S_FMT status");
        resp[8..].to_vec()
    }

    pub(super) fn drain_events(h: &mut Harness) -> Vec<Vec<u8>> {
        let mut out = vec![];
        while h.dev.events.len() > 0 {
            let (_, a) = h.add_event_buffer(1024);
            h.notify(1);
            let used = h.used(1);
            assert_eq!(used.len(), 1);
            let mut ev = vec![0u8; used[0].1 as usize];
            h.mem.read_slice(&mut ev, GuestAddress(a)).unwrap();
            out.push(ev);
        }
        out
    }

    #[test]
    fn formats_sizes_intervals() {
        let mut h = Harness::with_backend("capture", true);
        let s = h.open();
        let mut fourccs = vec![];
        for i in 0..6u32 {
            let mut d = vec![0u8; 64];
            d[0..4].copy_from_slice(&i.to_le_bytes());
            d[4..8].copy_from_slice(&V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE.to_le_bytes());
            let resp = h.command(&ioctl_cmd(s, VIDIOC_ENUM_FMT, &d), 8 + 64);
            if le32(&resp, 0) != 0 {
                assert_eq!(i, 5, "five formats");
                break;
            }
            fourccs.push(le32(&resp, 8 + 44));
        }
        assert_eq!(fourccs, FORMATS.to_vec());

        // Multi-planar NM12 at 1280x720: two memory planes.
        let f = s_fmt_mp(&mut h, s, FMT_NV12M, 1280, 720);
        assert_eq!((le32(&f, 8), le32(&f, 12)), (1280, 720));
        assert_eq!(le32(&f, 16), FMT_NV12M);
        let pix_mp_planes = 8 + 20 + 4 + 4; // type pad, width..field, colorspace -> plane_fmt
        let _ = pix_mp_planes;
        let num_planes_off = 8 + std::mem::offset_of!(bindings::v4l2_pix_format_mplane, num_planes);
        let plane_fmt_off = 8 + std::mem::offset_of!(bindings::v4l2_pix_format_mplane, plane_fmt);
        assert_eq!(f[num_planes_off], 2);
        assert_eq!(le32(&f, plane_fmt_off), 1280 * 720, "plane 0 sizeimage");
        assert_eq!(le32(&f, plane_fmt_off + 4), 1280, "plane 0 bytesperline");
        assert_eq!(
            le32(&f, plane_fmt_off + 20),
            1280 * 720 / 2,
            "plane 1 sizeimage"
        );
        // Unsupported size snaps to the closest discrete one.
        let f = s_fmt_mp(&mut h, s, FMT_YUYV, 700, 500);
        assert_eq!(
            (le32(&f, 8), le32(&f, 12), f[num_planes_off]),
            (640, 480, 1)
        );

        // Frame sizes and intervals.
        let mut fs = vec![0u8; 44];
        fs[4..8].copy_from_slice(&FMT_YUV420M.to_le_bytes());
        for (i, (w, ht)) in [(320u32, 240u32), (640, 480), (1280, 720), (1920, 1080)]
            .into_iter()
            .enumerate()
        {
            fs[0..4].copy_from_slice(&(i as u32).to_le_bytes());
            let resp = h.command(&ioctl_cmd(s, VIDIOC_ENUM_FRAMESIZES, &fs), 8 + 44);
            assert_eq!(le32(&resp, 0), 0);
            assert_eq!((le32(&resp, 8 + 12), le32(&resp, 8 + 16)), (w, ht));
        }
        fs[0] = 4;
        assert_eq!(
            le32(
                &h.command(&ioctl_cmd(s, VIDIOC_ENUM_FRAMESIZES, &fs), 52),
                0
            ) as i32,
            libc::EINVAL
        );
        let mut fi = vec![0u8; 52];
        fi[0..4].copy_from_slice(&1u32.to_le_bytes());
        fi[4..8].copy_from_slice(&FMT_YUYV.to_le_bytes());
        fi[8..12].copy_from_slice(&640u32.to_le_bytes());
        fi[12..16].copy_from_slice(&480u32.to_le_bytes());
        let resp = h.command(&ioctl_cmd(s, VIDIOC_ENUM_FRAMEINTERVALS, &fi), 8 + 52);
        assert_eq!(le32(&resp, 0), 0);
        assert_eq!((le32(&resp, 8 + 20), le32(&resp, 8 + 24)), (1, 15));
        fi[8] = 1; // 641x480: not a frame size
        let resp = h.command(&ioctl_cmd(s, VIDIOC_ENUM_FRAMEINTERVALS, &fi), 8 + 52);
        assert_eq!(le32(&resp, 0) as i32, libc::EINVAL);
    }

    #[test]
    fn multiplanar_frames_in_shm() {
        let mut h = Harness::with_backend("capture", true);
        let s = h.open();
        s_fmt_mp(&mut h, s, FMT_YUV420M, 320, 240);
        let mut req = vec![0u8; 20];
        req[0] = 2;
        req[4] = 9;
        req[8] = 1;
        let resp = h.command(&ioctl_cmd(s, VIDIOC_REQBUFS, &req), 28);
        assert_eq!(le32(&resp, 0), 0);
        assert_eq!(le32(&resp, 8), 2);
        assert_eq!(h.shm.usage().0, 6, "2 buffers x 3 planes in the BAR");
        let sizes = [320 * 240, 320 * 240 / 4, 320 * 240 / 4];
        let mut offsets = vec![];
        for i in 0..2 {
            let resp = h.command(
                &ioctl_cmd(s, VIDIOC_QUERYBUF, &v4l2_buffer(i, 3)),
                (8 + V4L2_BUFFER_SIZE + 3 * V4L2_PLANE_SIZE) as u32,
            );
            assert_eq!(le32(&resp, 0), 0);
            assert_eq!(le32(&resp, 8 + 72), 3, "num planes in length");
            for p in 0..3 {
                let pl = &resp[8 + V4L2_BUFFER_SIZE + p * V4L2_PLANE_SIZE..];
                assert_eq!(le32(pl, 4), sizes[p]);
                offsets.push(le32(pl, 8) as u64);
            }
        }
        let mut sorted = offsets.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 6, "distinct mem_offsets");
        for i in 0..2 {
            let resp = h.command(
                &ioctl_cmd(
                    s,
                    VIDIOC_QBUF,
                    &[v4l2_buffer(i, 3), vec![0; 3 * V4L2_PLANE_SIZE]].concat(),
                ),
                (8 + V4L2_BUFFER_SIZE + 3 * V4L2_PLANE_SIZE) as u32,
            );
            assert_eq!(le32(&resp, 0), 0);
        }
        let resp = h.command(&ioctl_cmd(s, VIDIOC_STREAMON, &9u32.to_le_bytes()), 8);
        assert_eq!(le32(&resp, 0), 0);
        let evs = drain_events(&mut h);
        assert_eq!(evs.len(), 2);
        for (i, ev) in evs.iter().enumerate() {
            assert_eq!(le32(ev, 0), 1, "DQBUF");
            assert_eq!(le32(&ev[8..], 0), i as u32, "index");
            assert_eq!(le32(&ev[8..], 56), i as u32, "sequence");
            for p in 0..3 {
                let pl = &ev[8 + V4L2_BUFFER_SIZE + p * V4L2_PLANE_SIZE..];
                assert_eq!(le32(pl, 0), sizes[p], "bytesused");
                let mut b = [0u8; 1];
                h.shm
                    .read_at(offsets[i * 3 + p] + sizes[p] as u64 - 1, &mut b)
                    .unwrap();
                assert_eq!(
                    b[0],
                    frame_byte(i as u32, p, 128),
                    "frame {i} plane {p} content"
                );
            }
        }
    }

    #[test]
    fn controls_events_and_array_control() {
        let mut h = Harness::with_backend("capture", true);
        let s = h.open();

        // Enumerate with NEXT_CTRL: scalar controls only, in id order.
        let mut ids = vec![];
        let mut id = CTRL_FLAG_NEXT_CTRL;
        loop {
            let mut q = vec![0u8; 68];
            q[0..4].copy_from_slice(&id.to_le_bytes());
            let resp = h.command(&ioctl_cmd(s, VIDIOC_QUERYCTRL, &q), 8 + 68);
            if le32(&resp, 0) != 0 {
                assert_eq!(le32(&resp, 0) as i32, libc::EINVAL);
                break;
            }
            let got = le32(&resp, 8);
            ids.push(got);
            id = got | CTRL_FLAG_NEXT_CTRL;
        }
        assert_eq!(
            ids,
            vec![
                CID_USER_CLASS,
                CID_BRIGHTNESS,
                CID_CONTRAST,
                CID_HFLIP,
                CID_POWER_LINE_FREQUENCY
            ]
        );
        // QUERY_EXT_CTRL finds the array control with NEXT_COMPOUND.
        let qsz = std::mem::size_of::<bindings::v4l2_query_ext_ctrl>();
        let mut q = vec![0u8; qsz];
        q[0..4].copy_from_slice(
            &(CID_POWER_LINE_FREQUENCY | CTRL_FLAG_NEXT_CTRL | CTRL_FLAG_NEXT_COMPOUND)
                .to_le_bytes(),
        );
        let resp = h.command(&ioctl_cmd(s, VIDIOC_QUERY_EXT_CTRL, &q), (8 + qsz) as u32);
        assert_eq!(le32(&resp, 0), 0);
        let r = &resp[8..];
        assert_eq!(le32(r, 0), CID_TEST_U8_ARRAY);
        assert_eq!(le32(r, 4), CTRL_TYPE_U8);
        let elems_off = std::mem::offset_of!(bindings::v4l2_query_ext_ctrl, elems);
        assert_eq!(le32(r, elems_off), TEST_ARRAY_LEN);
        assert_eq!(le32(r, elems_off + 4), 1, "nr_of_dims");

        // Control event subscription with SEND_INITIAL.
        let mut sub = vec![0u8; 32];
        sub[0..4].copy_from_slice(&bindings::V4L2_EVENT_CTRL.to_le_bytes());
        sub[4..8].copy_from_slice(&CID_BRIGHTNESS.to_le_bytes());
        sub[8..12].copy_from_slice(
            &(bindings::V4L2_EVENT_SUB_FL_SEND_INITIAL
                | bindings::V4L2_EVENT_SUB_FL_ALLOW_FEEDBACK)
                .to_le_bytes(),
        );
        assert_eq!(
            le32(
                &h.command(&ioctl_cmd(s, VIDIOC_SUBSCRIBE_EVENT, &sub), 8),
                0
            ),
            0
        );

        // S_CTRL out of range is clamped; menu out of range is ERANGE.
        let ctrl = |id: u32, v: i32| [id.to_le_bytes(), v.to_le_bytes()].concat();
        let resp = h.command(&ioctl_cmd(s, VIDIOC_S_CTRL, &ctrl(CID_BRIGHTNESS, 300)), 16);
        assert_eq!((le32(&resp, 0), le32(&resp, 12)), (0, 255));
        let resp = h.command(&ioctl_cmd(s, VIDIOC_G_CTRL, &ctrl(CID_BRIGHTNESS, 0)), 16);
        assert_eq!(le32(&resp, 12), 255);
        let resp = h.command(
            &ioctl_cmd(s, VIDIOC_S_CTRL, &ctrl(CID_POWER_LINE_FREQUENCY, 7)),
            16,
        );
        assert_eq!(le32(&resp, 0) as i32, libc::ERANGE);
        let resp = h.command(&ioctl_cmd(s, VIDIOC_S_CTRL, &ctrl(0x00981234, 1)), 16);
        assert_eq!(le32(&resp, 0) as i32, libc::EINVAL);

        let evs = drain_events(&mut h);
        assert_eq!(evs.len(), 2, "initial + change");
        for ev in &evs {
            assert_eq!(le32(ev, 0), 2, "VIRTIO_MEDIA_EVT_EVENT");
            assert_eq!(le32(ev, 8), bindings::V4L2_EVENT_CTRL);
        }
        let id_off = 8 + std::mem::offset_of!(bindings::v4l2_event, id);
        assert_eq!(le32(&evs[1], id_off), CID_BRIGHTNESS);
        let value_off = 8 + 8 + 8; // type, union start (8-aligned), changes+type
        assert_eq!(le32(&evs[0], value_off), 128, "initial value");
        assert_eq!(le32(&evs[1], value_off), 255, "new value");

        // Array control through S/G_EXT_CTRLS with SG payloads.
        let hdr_sz = std::mem::size_of::<bindings::v4l2_ext_controls>();
        let ctl_sz = std::mem::size_of::<bindings::v4l2_ext_control>();
        let ext = |h: &mut Harness, code: u32, payload_addr: u64| {
            let mut hdr = vec![0u8; hdr_sz];
            hdr[4..8].copy_from_slice(&1u32.to_le_bytes()); // count
            let mut c = vec![0u8; ctl_sz];
            c[0..4].copy_from_slice(&CID_TEST_U8_ARRAY.to_le_bytes());
            c[4..8].copy_from_slice(&TEST_ARRAY_LEN.to_le_bytes());
            let mut sg = payload_addr.to_le_bytes().to_vec();
            sg.extend_from_slice(&TEST_ARRAY_LEN.to_le_bytes());
            sg.extend_from_slice(&[0; 4]);
            let resp = h.command(
                &ioctl_cmd(s, code, &[hdr, c, sg].concat()),
                (8 + hdr_sz + ctl_sz) as u32,
            );
            le32(&resp, 0)
        };
        let src = h.alloc(8);
        h.mem
            .write_slice(&[1, 2, 3, 4, 5, 6, 7, 8], GuestAddress(src))
            .unwrap();
        assert_eq!(ext(&mut h, VIDIOC_S_EXT_CTRLS, src), 0);
        let dst = h.alloc(8);
        assert_eq!(ext(&mut h, VIDIOC_G_EXT_CTRLS, dst), 0);
        let mut got = [0u8; 8];
        h.mem.read_slice(&mut got, GuestAddress(dst)).unwrap();
        assert_eq!(got, [1, 2, 3, 4, 5, 6, 7, 8]);
        // Payload pointing outside guest memory: EFAULT, no panic.
        assert_eq!(
            ext(&mut h, VIDIOC_G_EXT_CTRLS, 0xdead_0000_0000) as i32,
            libc::EFAULT
        );
    }

    #[test]
    fn userptr_capture_writes_guest_memory() {
        let mut h = Harness::with_backend("capture", true);
        let s = h.open();
        s_fmt_mp(&mut h, s, FMT_YUYV, 320, 240);
        let mut req = vec![0u8; 20];
        req[0] = 1;
        req[4] = 9;
        req[8] = 2; // USERPTR
        assert_eq!(
            le32(&h.command(&ioctl_cmd(s, VIDIOC_REQBUFS, &req), 28), 0),
            0
        );
        assert_eq!(h.shm.usage().0, 0, "USERPTR uses no shared memory");
        let size = 320 * 240 * 2u32;
        // Two SG entries for one plane.
        let a = h.alloc(size as usize / 2);
        let b = h.alloc(size as usize / 2);
        let mut buf = v4l2_buffer(0, 1);
        buf[60..64].copy_from_slice(&2u32.to_le_bytes());
        let mut plane = vec![0u8; V4L2_PLANE_SIZE];
        plane[4..8].copy_from_slice(&size.to_le_bytes());
        plane[8..16].copy_from_slice(&0x7f00_1234_5000u64.to_le_bytes()); // guest userspace ptr
        let mut sgs = vec![];
        for (addr, len) in [(a, size / 2), (b, size / 2)] {
            sgs.extend_from_slice(&addr.to_le_bytes());
            sgs.extend_from_slice(&len.to_le_bytes());
            sgs.extend_from_slice(&[0; 4]);
        }
        let resp = h.command(
            &ioctl_cmd(s, VIDIOC_QBUF, &[buf, plane, sgs].concat()),
            (8 + 88 + 64) as u32,
        );
        assert_eq!(le32(&resp, 0), 0, "QBUF USERPTR");
        assert_eq!(
            le64(&resp, 8 + 88 + 8),
            0x7f00_1234_5000,
            "userptr returned unchanged"
        );
        assert_eq!(
            le32(
                &h.command(&ioctl_cmd(s, VIDIOC_STREAMON, &9u32.to_le_bytes()), 8),
                0
            ),
            0
        );
        let want = frame_byte(0, 0, 128);
        for addr in [a, b + size as u64 / 2 - 1] {
            let mut x = [0u8; 1];
            h.mem.read_slice(&mut x, GuestAddress(addr)).unwrap();
            assert_eq!(x[0], want);
        }
        let evs = drain_events(&mut h);
        assert_eq!(evs.len(), 1);
        assert_eq!(le64(&evs[0][8..], 64), 0, "planes pointer scrubbed");
    }

    #[test]
    fn output_consumes_guest_frames() {
        use crate::devices::capture::CID_LAST_FRAME_CHECKSUM;
        const OUT_MPLANE: u32 = 10;
        let mut h = Harness::with_backend("output", true);
        let s = h.open();
        let mut f = vec![0u8; 208];
        f[0..4].copy_from_slice(&OUT_MPLANE.to_le_bytes());
        f[8..12].copy_from_slice(&320u32.to_le_bytes());
        f[12..16].copy_from_slice(&240u32.to_le_bytes());
        f[16..20].copy_from_slice(&FMT_GREY.to_le_bytes());
        let resp = h.command(&ioctl_cmd(s, VIDIOC_S_FMT, &f), 8 + 208);
        assert_eq!(le32(&resp, 0), 0);
        assert_eq!(
            le32(&resp, 16 + 8),
            FMT_YUYV,
            "GREY is not an output format: default"
        );
        let size = 320 * 240 * 2u32;
        let mut req = vec![0u8; 20];
        req[0] = 1;
        req[4..8].copy_from_slice(&OUT_MPLANE.to_le_bytes());
        req[8] = 1;
        assert_eq!(
            le32(&h.command(&ioctl_cmd(s, VIDIOC_REQBUFS, &req), 28), 0),
            0
        );
        let mut qb = v4l2_buffer(0, 1);
        qb[4..8].copy_from_slice(&OUT_MPLANE.to_le_bytes());
        let resp = h.command(&ioctl_cmd(s, VIDIOC_QUERYBUF, &qb), (8 + 88 + 64) as u32);
        let off = le32(&resp, 8 + 88 + 8) as u64;
        // The "guest" writes 100 bytes of 3 through its mapping of the BAR.
        h.shm.write_at(off, &[3u8; 100]).unwrap();
        let mut plane = vec![0u8; V4L2_PLANE_SIZE];
        plane[0..4].copy_from_slice(&100u32.to_le_bytes()); // bytesused
        plane[4..8].copy_from_slice(&size.to_le_bytes());
        let resp = h.command(
            &ioctl_cmd(s, VIDIOC_QBUF, &[qb.clone(), plane].concat()),
            (8 + 88 + 64) as u32,
        );
        assert_eq!(le32(&resp, 0), 0);
        assert_eq!(
            le32(
                &h.command(&ioctl_cmd(s, VIDIOC_STREAMON, &OUT_MPLANE.to_le_bytes()), 8),
                0
            ),
            0
        );
        let evs = drain_events(&mut h);
        assert_eq!(evs.len(), 1);
        assert_eq!(le32(&evs[0][8 + 88..], 0), 100, "bytesused echoed");
        let ctrl = [CID_LAST_FRAME_CHECKSUM.to_le_bytes(), [0; 4]].concat();
        let resp = h.command(&ioctl_cmd(s, VIDIOC_G_CTRL, &ctrl), 16);
        assert_eq!(le32(&resp, 0), 0);
        assert_eq!(le32(&resp, 12), 300, "checksum of 100 bytes of 3");
        // Output devices have no inputs.
        assert_eq!(
            le32(&h.command(&ioctl_cmd(s, 38, &[]), 12), 0) as i32,
            libc::ENOTTY
        );
    }

    #[test]
    fn m2m_create_bufs_per_queue() {
        const OUT_MPLANE: u32 = 10;
        const VIDIOC_CREATE_BUFS: u32 = 92;
        const V4L2_MEMORY_USERPTR: u32 = 2;
        let mut h = Harness::with_backend("m2m", true);
        let s = h.open();
        let dst_fmt = s_fmt_mp(&mut h, s, FMT_YUV420M, 320, 240);
        let mut g = vec![0u8; 208];
        g[0..4].copy_from_slice(&OUT_MPLANE.to_le_bytes());
        let resp = h.command(&ioctl_cmd(s, VIDIOC_G_FMT, &g), 8 + 208);
        assert_eq!(le32(&resp, 0), 0);
        let src_fmt = resp[8..].to_vec();
        // sizeimage of plane p inside a v4l2_format (pix_mp at offset 8).
        let sizeimage = |f: &[u8], p: usize| le32(f, 8 + 20 + 20 * p);
        let set_sizeimage = |f: &mut Vec<u8>, p: usize, v: u32| {
            f[28 + 20 * p..32 + 20 * p].copy_from_slice(&v.to_le_bytes())
        };
        let cb_size = std::mem::size_of::<bindings::v4l2_create_buffers>();
        let fmt_off = std::mem::offset_of!(bindings::v4l2_create_buffers, format);
        let create = |h: &mut Harness, count: u32, memory: u32, f: &[u8]| {
            let mut cb = vec![0u8; cb_size];
            cb[4..8].copy_from_slice(&count.to_le_bytes());
            cb[8..12].copy_from_slice(&memory.to_le_bytes());
            cb[fmt_off..fmt_off + 208].copy_from_slice(f);
            let resp = h.command(&ioctl_cmd(s, VIDIOC_CREATE_BUFS, &cb), (8 + cb_size) as u32);
            if le32(&resp, 0) != 0 {
                return (le32(&resp, 0), 0, 0);
            }
            (0, le32(&resp, 8), le32(&resp, 12))
        };
        assert_eq!(create(&mut h, 2, V4L2_MEMORY_MMAP, &dst_fmt), (0, 0, 2));
        // A larger first plane is allocated as asked.
        let mut big = dst_fmt.clone();
        let big0 = sizeimage(&dst_fmt, 0) + 4096;
        set_sizeimage(&mut big, 0, big0);
        assert_eq!(create(&mut h, 1, V4L2_MEMORY_MMAP, &big), (0, 2, 1));
        let resp = h.command(
            &ioctl_cmd(s, VIDIOC_QUERYBUF, &v4l2_buffer(2, 3)),
            (8 + V4L2_BUFFER_SIZE + 3 * V4L2_PLANE_SIZE) as u32,
        );
        assert_eq!(le32(&resp, 0), 0, "QUERYBUF");
        assert_eq!(
            le32(&resp, 8 + V4L2_BUFFER_SIZE + 4),
            big0,
            "plane 0 length"
        );
        // Too small a plane, or the wrong number of planes: EINVAL.
        let mut small = dst_fmt.clone();
        set_sizeimage(&mut small, 2, sizeimage(&dst_fmt, 2) - 1);
        assert_eq!(
            create(&mut h, 1, V4L2_MEMORY_MMAP, &small).0 as i32,
            libc::EINVAL
        );
        let mut one_plane = dst_fmt.clone();
        one_plane[8 + 180] = 1;
        assert_eq!(
            create(&mut h, 1, V4L2_MEMORY_MMAP, &one_plane).0 as i32,
            libc::EINVAL
        );
        // Another memory type than the queue's buffers: EINVAL.
        assert_eq!(
            create(&mut h, 1, V4L2_MEMORY_USERPTR, &dst_fmt).0 as i32,
            libc::EINVAL
        );
        // count 0 reports where the next buffer would go, also with a
        // format zeroed but for its type (v4l2-ctl's has_create_bufs).
        assert_eq!(create(&mut h, 0, V4L2_MEMORY_MMAP, &dst_fmt), (0, 3, 0));
        let mut zeroed = vec![0u8; 208];
        zeroed[0..4].copy_from_slice(&9u32.to_le_bytes());
        assert_eq!(create(&mut h, 0, V4L2_MEMORY_USERPTR, &zeroed), (0, 3, 0));
        zeroed[0..4].copy_from_slice(&OUT_MPLANE.to_le_bytes());
        assert_eq!(create(&mut h, 0, V4L2_MEMORY_MMAP, &zeroed), (0, 0, 0));
        // The OUTPUT queue is separate: its own format, indexes from 0.
        assert_eq!(create(&mut h, 2, V4L2_MEMORY_USERPTR, &src_fmt), (0, 0, 2));
        assert_eq!(create(&mut h, 1, V4L2_MEMORY_USERPTR, &src_fmt), (0, 2, 1));
    }

    #[test]
    fn m2m_converts_and_drains_with_last_buffer() {
        const OUT_MPLANE: u32 = 10;
        const VIDIOC_DECODER_CMD: u32 = 96;
        const VIDIOC_TRY_DECODER_CMD: u32 = 97;
        const FLAG_LAST: u32 = 0x0010_0000;
        const FLAG_TIMESTAMP_COPY: u32 = 0x4000;
        let mut h = Harness::with_backend("m2m", true);
        let s = h.open();
        let fmt = |h: &mut Harness, ty: u32, fourcc: u32| {
            let mut f = vec![0u8; 208];
            f[0..4].copy_from_slice(&ty.to_le_bytes());
            f[8..12].copy_from_slice(&320u32.to_le_bytes());
            f[12..16].copy_from_slice(&240u32.to_le_bytes());
            f[16..20].copy_from_slice(&fourcc.to_le_bytes());
            let resp = h.command(&ioctl_cmd(s, VIDIOC_S_FMT, &f), 8 + 208);
            assert_eq!(le32(&resp, 0), 0);
            resp[8..].to_vec()
        };
        fmt(&mut h, OUT_MPLANE, FMT_YUYV);
        let f = fmt(&mut h, 9, FMT_YUV420M);
        assert_eq!(
            (le32(&f, 8), le32(&f, 12), le32(&f, 16)),
            (320, 240, FMT_YUV420M)
        );

        let mut sub = vec![0u8; 32];
        sub[0..4].copy_from_slice(&bindings::V4L2_EVENT_EOS.to_le_bytes());
        assert_eq!(
            le32(
                &h.command(&ioctl_cmd(s, VIDIOC_SUBSCRIBE_EVENT, &sub), 8),
                0
            ),
            0
        );

        let mut offs: std::collections::HashMap<(u32, u32), Vec<u64>> = Default::default();
        for (ty, np) in [(OUT_MPLANE, 1u32), (9, 3)] {
            let mut req = vec![0u8; 20];
            req[0] = 2;
            req[4..8].copy_from_slice(&ty.to_le_bytes());
            req[8] = 1;
            assert_eq!(
                le32(&h.command(&ioctl_cmd(s, VIDIOC_REQBUFS, &req), 28), 0),
                0
            );
            for i in 0..2 {
                let mut b = v4l2_buffer(i, np);
                b[4..8].copy_from_slice(&ty.to_le_bytes());
                let resp = h.command(&ioctl_cmd(s, VIDIOC_QUERYBUF, &b), 8 + 88 + 64 * np);
                assert_eq!(le32(&resp, 0), 0);
                assert_ne!(
                    le32(&resp, 8 + 12) & FLAG_TIMESTAMP_COPY,
                    0,
                    "TIMESTAMP_COPY"
                );
                let v = (0..np as usize)
                    .map(|p| le32(&resp, 8 + 88 + 64 * p + 8) as u64)
                    .collect();
                offs.insert((ty, i), v);
            }
        }
        let (w, ht) = (320u64, 240u64);
        let src_size = (w * ht * 2) as u32;
        // Source frame: Y=50, U=60, V=70.
        let frame: Vec<u8> = (0..w * ht / 2).flat_map(|_| [50u8, 60, 50, 70]).collect();
        h.shm.write_at(offs[&(OUT_MPLANE, 0)][0], &frame).unwrap();
        let qbuf = |h: &mut Harness, ty: u32, i: u32, np: u32, used: u32, sec: u64| {
            let mut b = v4l2_buffer(i, np);
            b[4..8].copy_from_slice(&ty.to_le_bytes());
            b[24..32].copy_from_slice(&sec.to_le_bytes());
            let mut planes = vec![0u8; 64 * np as usize];
            planes[0..4].copy_from_slice(&used.to_le_bytes());
            if ty == OUT_MPLANE {
                planes[4..8].copy_from_slice(&src_size.to_le_bytes()); // length
            }
            let resp = h.command(
                &ioctl_cmd(s, VIDIOC_QBUF, &[b, planes].concat()),
                8 + 88 + 64 * np,
            );
            assert_eq!(le32(&resp, 0), 0, "QBUF type {ty} index {i}");
        };
        qbuf(&mut h, OUT_MPLANE, 0, 1, src_size, 1234);
        qbuf(&mut h, 9, 0, 3, 0, 0);
        qbuf(&mut h, 9, 1, 3, 0, 0);
        for ty in [OUT_MPLANE, 9] {
            assert_eq!(
                le32(
                    &h.command(&ioctl_cmd(s, VIDIOC_STREAMON, &ty.to_le_bytes()), 8),
                    0
                ),
                0
            );
        }
        let evs = drain_events(&mut h);
        assert_eq!(evs.len(), 2, "source and destination returned");
        assert_eq!(le32(&evs[0][8..], 4), OUT_MPLANE);
        let dst = &evs[1][8..];
        assert_eq!((le32(dst, 4), le32(dst, 0)), (9, 0));
        assert_eq!(le64(dst, 24), 1234, "timestamp copied from the source");
        assert_eq!(le32(dst, 12) & FLAG_LAST, 0);
        let sizes = [w * ht, w * ht / 4, w * ht / 4];
        for (p, want) in [50u8, 60, 70].into_iter().enumerate() {
            assert_eq!(
                le32(&dst[88 + 64 * p..], 0) as u64,
                sizes[p],
                "bytesused plane {p}"
            );
            let mut b = [0u8; 1];
            h.shm
                .read_at(offs[&(9, 0)][p] + sizes[p] - 1, &mut b)
                .unwrap();
            assert_eq!(b[0], want, "converted plane {p}");
        }

        // STOP with nothing pending: the queued CAPTURE buffer comes back
        // empty with LAST, then EOS.
        let mut cmd = vec![0u8; 72];
        cmd[0] = 1; // STOP
        assert_eq!(
            le32(
                &h.command(&ioctl_cmd(s, VIDIOC_DECODER_CMD, &cmd), 8 + 72),
                0
            ),
            0
        );
        let evs = drain_events(&mut h);
        assert_eq!(evs.len(), 2);
        let last = &evs[0][8..];
        assert_eq!((le32(last, 0), le32(last, 4)), (1, 9));
        assert_ne!(le32(last, 12) & FLAG_LAST, 0, "LAST flag");
        assert_eq!(le32(&last[88..], 0), 0, "empty");
        assert_eq!(le32(&evs[1], 0), 2, "session event");
        assert_eq!(le32(&evs[1], 8), bindings::V4L2_EVENT_EOS);

        // Stopped: a new source buffer waits until START.
        qbuf(&mut h, OUT_MPLANE, 1, 1, src_size, 99);
        qbuf(&mut h, 9, 0, 3, 0, 0);
        assert_eq!(h.dev.events.len(), 0, "nothing converted while stopped");
        cmd[0] = 0; // START
        assert_eq!(
            le32(
                &h.command(&ioctl_cmd(s, VIDIOC_DECODER_CMD, &cmd), 8 + 72),
                0
            ),
            0
        );
        assert_eq!(drain_events(&mut h).len(), 2, "converted after START");

        // STOP with a pending source: its destination carries LAST.
        qbuf(&mut h, 9, 1, 3, 0, 0);
        cmd[0] = 1;
        // Hold the source back by stopping CAPTURE availability: queue the
        // source only now, after STOP is requested with both streaming.
        qbuf(&mut h, OUT_MPLANE, 0, 1, src_size, 7);
        let evs = drain_events(&mut h);
        assert_eq!(evs.len(), 2, "converted immediately");
        assert_eq!(
            le32(
                &h.command(&ioctl_cmd(s, VIDIOC_DECODER_CMD, &cmd), 8 + 72),
                0
            ),
            0
        );
        let evs = drain_events(&mut h);
        assert_eq!(evs.len(), 1, "no CAPTURE buffer queued: only EOS now");
        assert_eq!(le32(&evs[0], 8), bindings::V4L2_EVENT_EOS);
        qbuf(&mut h, 9, 0, 3, 0, 0);
        let evs = drain_events(&mut h);
        assert_eq!(evs.len(), 1, "next CAPTURE buffer returned as LAST");
        assert_ne!(le32(&evs[0][8..], 12) & FLAG_LAST, 0);

        // Bad decoder commands.
        cmd[0] = 2; // PAUSE: unsupported
        assert_eq!(
            le32(
                &h.command(&ioctl_cmd(s, VIDIOC_DECODER_CMD, &cmd), 8 + 72),
                0
            ) as i32,
            libc::EINVAL
        );
        // Unsupported flags (STOP_IMMEDIATELY) and START parameters are
        // cleared, as v4l2_m2m_ioctl_try_decoder_cmd does.
        cmd[0] = 1;
        cmd[4] = 2;
        cmd[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let r = h.command(&ioctl_cmd(s, VIDIOC_TRY_DECODER_CMD, &cmd), 8 + 72);
        assert_eq!(le32(&r, 0), 0);
        assert_eq!(
            (le32(&r, 12), le32(&r, 16), le32(&r, 20)),
            (0, 0, 0),
            "flags and pts cleared"
        );
        cmd[0] = 0;
        let r = h.command(&ioctl_cmd(s, VIDIOC_TRY_DECODER_CMD, &cmd), 8 + 72);
        assert_eq!(le32(&r, 0), 0);
        assert_eq!(
            (le32(&r, 12), le32(&r, 16), le32(&r, 20)),
            (0, 0, 0),
            "flags, speed, format cleared"
        );
        cmd[4..16].fill(0);
        // A source whose bytesused is too small to hold a frame: ERROR on
        // the destination, no panic.
        assert_eq!(
            le32(
                &h.command(&ioctl_cmd(s, VIDIOC_STREAMOFF, &9u32.to_le_bytes()), 8),
                0
            ),
            0
        );
        assert_eq!(
            le32(
                &h.command(&ioctl_cmd(s, VIDIOC_STREAMON, &9u32.to_le_bytes()), 8),
                0
            ),
            0
        );
        qbuf(&mut h, 9, 0, 3, 0, 0);
        qbuf(&mut h, OUT_MPLANE, 1, 1, 10, 8);
        let evs = drain_events(&mut h);
        assert_eq!(evs.len(), 2);
        assert_ne!(le32(&evs[1][8..], 12) & 0x40, 0, "V4L2_BUF_FLAG_ERROR");

        // STOP while a source waits for a CAPTURE buffer: the drain ends
        // with that conversion, whose destination carries LAST, then EOS.
        qbuf(&mut h, OUT_MPLANE, 0, 1, src_size, 5);
        cmd[0] = 1;
        cmd[4] = 0;
        assert_eq!(
            le32(
                &h.command(&ioctl_cmd(s, VIDIOC_DECODER_CMD, &cmd), 8 + 72),
                0
            ),
            0
        );
        assert_eq!(
            h.dev.events.len(),
            0,
            "draining, waiting for a CAPTURE buffer"
        );
        qbuf(&mut h, 9, 1, 3, 0, 0);
        let evs = drain_events(&mut h);
        assert_eq!(evs.len(), 3);
        let dst = &evs[1][8..];
        assert_eq!((le32(dst, 4), le32(dst, 0)), (9, 1));
        assert_ne!(
            le32(dst, 12) & FLAG_LAST,
            0,
            "converted buffer carries LAST"
        );
        assert_eq!(le32(&dst[88..], 0) as u64, w * ht, "and real data");
        assert_eq!(le32(&evs[2], 8), bindings::V4L2_EVENT_EOS);
    }

    /// VIDIOC_CREATE_BUFS (index, count, capabilities) or its error, for a
    /// request of `count` buffers of `memory` with format `f`.
    pub(super) fn create_bufs(
        h: &mut Harness,
        s: u32,
        count: u32,
        memory: u32,
        f: &[u8],
    ) -> Result<(u32, u32, u32), i32> {
        const VIDIOC_CREATE_BUFS: u32 = 92;
        let cb_size = std::mem::size_of::<bindings::v4l2_create_buffers>();
        let fmt_off = std::mem::offset_of!(bindings::v4l2_create_buffers, format);
        let caps_off = std::mem::offset_of!(bindings::v4l2_create_buffers, capabilities);
        let mut cb = vec![0u8; cb_size];
        cb[4..8].copy_from_slice(&count.to_le_bytes());
        cb[8..12].copy_from_slice(&memory.to_le_bytes());
        cb[fmt_off..fmt_off + V4L2_FORMAT_SIZE].copy_from_slice(f);
        let resp = h.command(&ioctl_cmd(s, VIDIOC_CREATE_BUFS, &cb), (8 + cb_size) as u32);
        match le32(&resp, 0) {
            0 => Ok((le32(&resp, 8), le32(&resp, 12), le32(&resp, 8 + caps_off))),
            e => Err(e as i32),
        }
    }

    /// CREATE_BUFS with count 0 is a query, as v4l2-ctl's has_create_bufs()
    /// sends it (format zeroed but for its type): like vb2 it succeeds
    /// whenever the type and memory are valid, never says EBUSY, creates
    /// nothing and reports the capabilities and the next index.
    #[test]
    fn create_bufs_count_zero_only_queries() {
        const V4L2_MEMORY_USERPTR: u32 = 2;
        const V4L2_MEMORY_DMABUF: u32 = 4;
        const CAPS: u32 =
            bindings::V4L2_BUF_CAP_SUPPORTS_MMAP | bindings::V4L2_BUF_CAP_SUPPORTS_USERPTR;
        for (backend, ty, other_ty) in [("capture", 9u32, 10u32), ("output", 10, 9)] {
            let mut h = Harness::with_backend(backend, true);
            let s = h.open();
            let mut zeroed = vec![0u8; V4L2_FORMAT_SIZE];
            zeroed[0..4].copy_from_slice(&ty.to_le_bytes());
            for memory in [V4L2_MEMORY_MMAP, V4L2_MEMORY_USERPTR] {
                let (index, count, caps) =
                    create_bufs(&mut h, s, 0, memory, &zeroed).expect(backend);
                assert_eq!((index, count), (0, 0), "{backend} memory {memory}");
                assert_eq!(caps & CAPS, CAPS, "{backend}: caps {caps:#x}");
            }
            // The same zeroed format with a count is refused (no planes).
            assert_eq!(
                create_bufs(&mut h, s, 1, V4L2_MEMORY_MMAP, &zeroed),
                Err(libc::EINVAL),
                "{backend}"
            );
            // Invalid memory or a queue type the device does not have.
            assert_eq!(
                create_bufs(&mut h, s, 0, V4L2_MEMORY_DMABUF, &zeroed),
                Err(libc::EINVAL),
                "{backend}"
            );
            let mut other = zeroed.clone();
            other[0..4].copy_from_slice(&other_ty.to_le_bytes());
            assert_eq!(
                create_bufs(&mut h, s, 0, V4L2_MEMORY_MMAP, &other),
                Err(libc::EINVAL),
                "{backend}"
            );
            // Nothing was created: REQBUFS(2) starts at index 0 and gives 2.
            let mut req = vec![0u8; 20];
            req[0..4].copy_from_slice(&2u32.to_le_bytes());
            req[4..8].copy_from_slice(&ty.to_le_bytes());
            req[8..12].copy_from_slice(&V4L2_MEMORY_MMAP.to_le_bytes());
            let resp = h.command(&ioctl_cmd(s, VIDIOC_REQBUFS, &req), 8 + 20);
            assert_eq!(
                (le32(&resp, 0), le32(&resp, 8)),
                (0, 2),
                "{backend}: REQBUFS"
            );
            let mut qb = v4l2_buffer(2, 3);
            qb[4..8].copy_from_slice(&ty.to_le_bytes());
            let resp = h.command(
                &ioctl_cmd(s, VIDIOC_QUERYBUF, &qb),
                (8 + V4L2_BUFFER_SIZE + 3 * V4L2_PLANE_SIZE) as u32,
            );
            assert_eq!(
                le32(&resp, 0) as i32,
                libc::EINVAL,
                "{backend}: no buffer 2"
            );
            // With buffers: index is where the next one would go, also for
            // another memory type than the buffers'.
            for memory in [V4L2_MEMORY_MMAP, V4L2_MEMORY_USERPTR] {
                assert_eq!(
                    create_bufs(&mut h, s, 0, memory, &zeroed).map(|r| (r.0, r.1)),
                    Ok((2, 0)),
                    "{backend}"
                );
            }
            // Another session while s owns the buffers: a real request is
            // EBUSY, the query is not.
            let s2 = h.open();
            let mut g = vec![0u8; V4L2_FORMAT_SIZE];
            g[0..4].copy_from_slice(&ty.to_le_bytes());
            let resp = h.command(
                &ioctl_cmd(s2, VIDIOC_G_FMT, &g),
                8 + V4L2_FORMAT_SIZE as u32,
            );
            assert_eq!(le32(&resp, 0), 0);
            assert_eq!(
                create_bufs(&mut h, s2, 1, V4L2_MEMORY_MMAP, &resp[8..]),
                Err(libc::EBUSY),
                "{backend}"
            );
            assert!(
                create_bufs(&mut h, s2, 0, V4L2_MEMORY_MMAP, &zeroed).is_ok(),
                "{backend}: query from s2"
            );
        }
    }
}

mod faults {
    use super::*;
    use crate::device::{Delayed, Faults};
    use std::time::Duration;

    fn raw_cmd(h: &mut Harness, cmd: &[u8], resp_len: u32) -> (u16, u64) {
        let c = h.alloc(cmd.len());
        h.mem.write_slice(cmd, GuestAddress(c)).unwrap();
        let r = h.alloc(resp_len as usize);
        let head = h.add_chain(0, &[(c, cmd.len() as u32, false), (r, resp_len, true)]);
        h.notify(0);
        (head, r)
    }

    #[test]
    fn delayed_responses_complete_later_and_not_after_reset() {
        let mut h = Harness::new(true);
        let (tx, rx) = std::sync::mpsc::channel::<Delayed>();
        h.dev.delayed_tx = Some(tx);
        h.dev.response_delay = Duration::from_millis(20);
        let (head, r) = raw_cmd(&mut h, &cmd_hdr(CMD_OPEN), 16);
        assert!(h.used(0).is_empty(), "no response yet");
        assert_eq!(h.dev.backend.num_sessions(), 1, "the command itself ran");
        let d = rx.try_recv().expect("delayed response queued");
        assert!(d.due > std::time::Instant::now() - Duration::from_millis(1));
        let before = h.dev.irqs.msix_count[1];
        h.dev.complete_delayed(d);
        assert_eq!(h.used(0), vec![(head as u32, 16)]);
        assert_eq!(h.dev.irqs.msix_count[1], before + 1);
        let mut st = [0u8; 4];
        h.mem.read_slice(&mut st, GuestAddress(r)).unwrap();
        assert_eq!(st, [0; 4]);

        // A response still pending at reset is dropped.
        raw_cmd(&mut h, &cmd_hdr(CMD_OPEN), 16);
        let d = rx.try_recv().unwrap();
        h.w(reg::DEVICE_STATUS, &[0]);
        h.init_driver(true);
        h.dev.complete_delayed(d);
        assert!(h.used(0).is_empty());
    }

    /// `--stats` counts how many delayed responses wait at each enqueue and
    /// times every command.
    #[test]
    fn stats_count_delayed_responses_in_flight() {
        let mut h = Harness::new(true);
        let (tx, rx) = std::sync::mpsc::channel::<Delayed>();
        h.dev.delayed_tx = Some(tx);
        h.dev.response_delay = Duration::from_millis(20);
        h.dev.stats = Some(crate::stats::CmdStats::default());
        for _ in 0..3 {
            raw_cmd(&mut h, &cmd_hdr(CMD_OPEN), 16);
        }
        assert_eq!(h.dev.delayed_pending, 3);
        h.dev.complete_delayed(rx.try_recv().unwrap());
        assert_eq!(h.dev.delayed_pending, 2);
        raw_cmd(&mut h, &cmd_hdr(CMD_OPEN), 16);
        let st = h.dev.stats.as_ref().unwrap();
        assert_eq!(st.count("OPEN"), 4);
        let j = st.to_json();
        assert!(j.contains("\"delayed_in_flight\": {\"max\": 3, \"at_enqueue\": {\"1\": 1, \"2\": 1, \"3\": 2}}"), "{j}");
    }

    #[test]
    fn fault_delay_reorders_responses() {
        let mut h = Harness::new(true);
        let (tx, rx) = std::sync::mpsc::channel::<Delayed>();
        h.dev.delayed_tx = Some(tx);
        h.dev.faults = Faults {
            delay: true,
            every: 2,
            ..Default::default()
        };
        let (a, _) = raw_cmd(&mut h, &cmd_hdr(CMD_OPEN), 16); // 1st: immediate
        let (b, _) = raw_cmd(&mut h, &cmd_hdr(CMD_OPEN), 16); // 2nd: delayed
        let (c, _) = raw_cmd(&mut h, &cmd_hdr(CMD_OPEN), 16); // 3rd: immediate
        let d = rx.try_recv().unwrap();
        assert!(d.due >= std::time::Instant::now() + Duration::from_millis(400));
        h.dev.complete_delayed(d);
        let ids: Vec<u32> = h.used(0).iter().map(|u| u.0).collect();
        assert_eq!(
            ids,
            vec![a as u32, c as u32, b as u32],
            "out-of-order completion"
        );
    }

    #[test]
    fn fault_unknown_format_blanks_enum_fmt() {
        let mut h = Harness::with_backend("capture", true);
        h.dev.faults = Faults {
            unknown_format: true,
            ..Default::default()
        };
        let s = h.open();
        let mut desc = vec![0u8; 64];
        desc[4..8].copy_from_slice(&V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE.to_le_bytes());
        let resp = h.command(&ioctl_cmd(s, VIDIOC_ENUM_FMT, &desc), 8 + 64);
        assert_eq!(le32(&resp, 0), 0);
        assert!(resp[20..52].iter().all(|&b| b == 0), "description empty");
        assert_eq!(le32(&resp, 52), crate::device::UNKNOWN_FOURCC);
    }

    #[test]
    fn fault_kernel_status_answers_ioctls_with_erestartnointr() {
        let mut h = Harness::with_backend("capture", true);
        let s = h.open();
        h.dev.faults = Faults {
            kernel_status: true,
            every: 1,
            ..Default::default()
        };
        let mut desc = vec![0u8; 64];
        desc[4..8].copy_from_slice(&V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE.to_le_bytes());
        let resp = h.command(&ioctl_cmd(s, VIDIOC_ENUM_FMT, &desc), 8 + 64);
        assert_eq!(resp.len(), 8, "the header alone");
        assert_eq!(le32(&resp, 0), crate::device::ERESTARTNOINTR as u32);
        // Other commands are answered as usual.
        let resp = h.command(&cmd_hdr(CMD_OPEN), 16);
        assert_eq!(le32(&resp, 0), 0);
    }

    #[test]
    fn fault_no_caps_zeroes_device_caps() {
        let mut h = Harness::with_backend("capture", true);
        let mut before = [0u8; 8];
        h.dev.bar0_read(pci::DEVICE_OFF, &mut before);
        assert_ne!(le32(&before, 0), 0, "the capture backend has capabilities");
        h.dev.faults = Faults {
            no_caps: true,
            ..Default::default()
        };
        let mut after = [0u8; 8];
        h.dev.bar0_read(pci::DEVICE_OFF, &mut after);
        assert_eq!(le32(&after, 0), 0, "device_caps");
        assert_eq!(after[4..], before[4..], "device_type unchanged");
        let mut byte = [0xffu8; 1];
        h.dev.bar0_read(pci::DEVICE_OFF + 2, &mut byte);
        assert_eq!(byte[0], 0, "a byte of device_caps read alone");
    }

    #[test]
    fn fault_malformed_cuts_responses() {
        let mut h = Harness::new(true);
        h.dev.faults = Faults {
            malformed: true,
            every: 1,
            ..Default::default()
        };
        let resp = h.command(&cmd_hdr(CMD_OPEN), 16);
        assert_eq!(resp.len(), 8, "status 0 without the session id");
        assert_eq!(le32(&resp, 0), 0);
        let resp = h.command(&cmd_hdr(99), 16);
        assert_eq!(resp.len(), 4, "half a header");
    }

    #[test]
    fn fault_error_event_closes_session() {
        let mut h = Harness::new(true);
        h.dev.faults = Faults {
            error_event: true,
            every: 2,
            ..Default::default()
        };
        let s = h.open(); // command 1
        let resp = h.command(&ioctl_cmd(s, VIDIOC_G_FMT, &g_fmt_payload()), 8 + 208); // command 2: hit
        assert_eq!(le32(&resp, 0), 0, "the ioctl itself succeeded");
        assert_eq!(
            h.dev.backend.num_sessions(),
            0,
            "session closed by the device"
        );
        let (_, a) = h.add_event_buffer(64);
        h.notify(1);
        assert_eq!(h.used(1)[0].1, 16, "error event size");
        let mut ev = [0u8; 16];
        h.mem.read_slice(&mut ev, GuestAddress(a)).unwrap();
        assert_eq!(
            (le32(&ev, 0), le32(&ev, 4), le32(&ev, 8)),
            (0, s, libc::EIO as u32)
        );
        let resp = h.command(&ioctl_cmd(s, VIDIOC_G_FMT, &g_fmt_payload()), 8 + 208);
        assert_eq!(le32(&resp, 0) as i32, libc::EINVAL, "session is gone");
    }
}

/// `--frame-log`: the line logged for each frame carries the sequence of its
/// DQBUF event and the MD5 of the bytes the guest reads from the shared
/// memory (each plane's first bytesused bytes), computed here independently.
mod frame_log {
    use super::capture::{drain_events, s_fmt_mp};
    use super::*;
    use crate::devices::common::FMT_YUV420M;
    use crate::framelog::FrameLog;
    use md5::{Digest, Md5};

    fn temp_log(name: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!(
            "virtio-media-vfu-{}-{name}.log",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&p);
        p
    }

    fn md5_hex(planes: &[Vec<u8>]) -> String {
        let mut h = Md5::new();
        for p in planes {
            h.update(p);
        }
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// REQBUFS + QUERYBUF + MMAP: shm offsets of every plane of every buffer.
    pub(super) fn mmap_buffers(
        h: &mut Harness,
        s: u32,
        count: u32,
        planes: usize,
    ) -> Vec<Vec<u64>> {
        let mut req = vec![0u8; 20];
        req[0..4].copy_from_slice(&count.to_le_bytes());
        req[4..8].copy_from_slice(&V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE.to_le_bytes());
        req[8..12].copy_from_slice(&V4L2_MEMORY_MMAP.to_le_bytes());
        let resp = h.command(&ioctl_cmd(s, VIDIOC_REQBUFS, &req), 28);
        assert_eq!((le32(&resp, 0), le32(&resp, 8)), (0, count), "REQBUFS");
        let mut out = vec![];
        for i in 0..count {
            let resp = h.command(
                &ioctl_cmd(s, VIDIOC_QUERYBUF, &v4l2_buffer(i, planes as u32)),
                (8 + V4L2_BUFFER_SIZE + planes * V4L2_PLANE_SIZE) as u32,
            );
            assert_eq!(le32(&resp, 0), 0, "QUERYBUF");
            let mut addrs = vec![];
            for p in 0..planes {
                let pl = &resp[8 + V4L2_BUFFER_SIZE + p * V4L2_PLANE_SIZE..];
                let mut mmap = cmd_hdr(CMD_MMAP);
                mmap.extend_from_slice(&s.to_le_bytes());
                mmap.extend_from_slice(&1u32.to_le_bytes());
                mmap.extend_from_slice(&(le32(pl, 8) as u64).to_le_bytes());
                let resp = h.command(&mmap, 24);
                assert_eq!(le32(&resp, 0), 0, "MMAP");
                addrs.push(le64(&resp, 8));
            }
            out.push(addrs);
        }
        out
    }

    pub(super) fn qbuf(h: &mut Harness, s: u32, i: u32, planes: usize) {
        let resp = h.command(
            &ioctl_cmd(
                s,
                VIDIOC_QBUF,
                &[
                    v4l2_buffer(i, planes as u32),
                    vec![0; planes * V4L2_PLANE_SIZE],
                ]
                .concat(),
            ),
            (8 + V4L2_BUFFER_SIZE + planes * V4L2_PLANE_SIZE) as u32,
        );
        assert_eq!(le32(&resp, 0), 0, "QBUF");
    }

    /// For each DQBUF event: (sequence, MD5 of the frame read from shm).
    fn frames_from_events(
        h: &mut Harness,
        bufs: &[Vec<u64>],
        planes: usize,
    ) -> Vec<(u32, String, u32)> {
        let mut out = vec![];
        for ev in drain_events(h) {
            assert_eq!(le32(&ev, 0), 1, "DQBUF event");
            let session = le32(&ev, 4);
            let b = &ev[8..];
            let (index, sequence) = (le32(b, 0) as usize, le32(b, 56));
            let data: Vec<Vec<u8>> = (0..planes)
                .map(|p| {
                    let used = le32(&ev[8 + V4L2_BUFFER_SIZE + p * V4L2_PLANE_SIZE..], 0) as usize;
                    assert!(used > 0);
                    let mut v = vec![0u8; used];
                    h.shm.read_at(bufs[index][p], &mut v).unwrap();
                    v
                })
                .collect();
            out.push((sequence, md5_hex(&data), session));
        }
        out
    }

    fn log_lines(path: &std::path::Path) -> Vec<(u32, String, u32)> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                assert_eq!(f.len(), 3, "SEQUENCE MD5 SESSION: {l:?}");
                assert_eq!(f[1].len(), 32);
                assert!(
                    f[1].bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
                    "lowercase hex: {l:?}"
                );
                (
                    f[0].parse().unwrap(),
                    f[1].to_string(),
                    f[2].parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn frame_log_md5_matches_simple_frames_in_shm() {
        let path = temp_log("simple");
        let mut h = Harness::with_frame_log("simple", true, FrameLog::open(&path).unwrap());
        let s = h.open();
        let bufs = mmap_buffers(&mut h, s, 2, 1);
        qbuf(&mut h, s, 0, 1);
        qbuf(&mut h, s, 1, 1);
        let resp = h.command(
            &ioctl_cmd(
                s,
                VIDIOC_STREAMON,
                &V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE.to_le_bytes(),
            ),
            8,
        );
        assert_eq!(le32(&resp, 0), 0, "STREAMON");
        // Logged before the events are sent.
        assert_eq!(log_lines(&path).len(), 2);
        let mut seen = frames_from_events(&mut h, &bufs, 1);
        // Buffers come back: frames 2 and 3 reuse them.
        qbuf(&mut h, s, 0, 1);
        qbuf(&mut h, s, 1, 1);
        seen.extend(frames_from_events(&mut h, &bufs, 1));
        assert_eq!(
            seen.iter().map(|f| f.0).collect::<Vec<_>>(),
            vec![0, 1, 2, 3]
        );
        // A uniform YU12 frame: Y, U and V planes of the frame's colours.
        let (y, u, v) = devices::simple::frame_colour(2);
        let luma = (devices::simple::WIDTH * devices::simple::HEIGHT) as usize;
        let frame2 = [vec![y; luma], vec![u; luma / 4], vec![v; luma / 4]].concat();
        assert_eq!(seen[2].1, md5_hex(&[frame2]));
        assert_eq!(log_lines(&path), seen);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn frame_log_md5_matches_multiplanar_capture() {
        let path = temp_log("capture");
        let mut h = Harness::with_frame_log("capture", true, FrameLog::open(&path).unwrap());
        let s = h.open();
        s_fmt_mp(&mut h, s, FMT_YUV420M, 320, 240);
        let bufs = mmap_buffers(&mut h, s, 2, 3);
        qbuf(&mut h, s, 0, 3);
        qbuf(&mut h, s, 1, 3);
        let resp = h.command(&ioctl_cmd(s, VIDIOC_STREAMON, &9u32.to_le_bytes()), 8);
        assert_eq!(le32(&resp, 0), 0, "STREAMON");
        let mut seen = frames_from_events(&mut h, &bufs, 3);
        qbuf(&mut h, s, 1, 3);
        seen.extend(frames_from_events(&mut h, &bufs, 3));
        assert_eq!(
            seen.iter().map(|f| (f.0, f.2)).collect::<Vec<_>>(),
            vec![(0, s), (1, s), (2, s)]
        );
        assert_ne!(seen[0].1, seen[1].1, "frames differ");
        assert_eq!(log_lines(&path), seen);
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn frame_log_off_by_default() {
        assert!(!FrameLog::default().enabled());
    }
}

/// `--source-change-every N`: the capture device toggles its simulated input
/// signal every N frames while streaming and sends V4L2_EVENT_SOURCE_CHANGE
/// to the sessions subscribed to it.
mod source_change {
    use super::capture::drain_events;
    use super::frame_log::{mmap_buffers, qbuf};
    use super::*;
    use v4l2r::bindings;

    const VIDIOC_SUBSCRIBE_EVENT: u32 = 90;

    fn subscribe(h: &mut Harness, s: u32, type_: u32, id: u32) -> u32 {
        let mut sub = vec![0u8; 32];
        sub[0..4].copy_from_slice(&type_.to_le_bytes());
        sub[4..8].copy_from_slice(&id.to_le_bytes());
        le32(
            &h.command(&ioctl_cmd(s, VIDIOC_SUBSCRIBE_EVENT, &sub), 8),
            0,
        )
    }

    /// (virtio-media event type, session, v4l2_event type) of each event.
    fn kinds(evs: &[Vec<u8>]) -> Vec<(u32, u32, u32)> {
        evs.iter()
            .map(|e| (le32(e, 0), le32(e, 4), le32(e, 8)))
            .collect()
    }

    #[test]
    fn source_change_event_every_n_frames() {
        let opts = devices::BackendOpts {
            source_change_every: 3,
            ..Default::default()
        };
        let mut h = Harness::with_opts("capture", true, opts);
        let s = h.open();
        let watcher = h.open();
        let other = h.open();
        let sc = bindings::V4L2_EVENT_SOURCE_CHANGE;
        assert_eq!(subscribe(&mut h, s, sc, 0), 0);
        assert_eq!(subscribe(&mut h, watcher, sc, 0), 0);
        // Subscribed to another input: sees nothing.
        assert_eq!(subscribe(&mut h, other, sc, 1), 0);
        let bufs = mmap_buffers(&mut h, s, 2, 1);
        assert_eq!(bufs.len(), 2);
        qbuf(&mut h, s, 0, 1);
        qbuf(&mut h, s, 1, 1);
        let resp = h.command(&ioctl_cmd(s, VIDIOC_STREAMON, &9u32.to_le_bytes()), 8);
        assert_eq!(le32(&resp, 0), 0, "STREAMON");
        // Frames 0 and 1: no source change yet.
        assert_eq!(kinds(&drain_events(&mut h)), vec![(1, s, 0), (1, s, 1)]);
        // Frame 2 is the third: DQBUF, then the event for both subscribers.
        qbuf(&mut h, s, 0, 1);
        let evs = drain_events(&mut h);
        assert_eq!(kinds(&evs), vec![(1, s, 0), (2, s, sc), (2, watcher, sc)]);
        let changes_off = 8 + std::mem::offset_of!(bindings::v4l2_event, u);
        let id_off = 8 + std::mem::offset_of!(bindings::v4l2_event, id);
        for ev in &evs[1..] {
            assert_eq!(
                le32(ev, changes_off),
                bindings::V4L2_EVENT_SRC_CH_RESOLUTION
            );
            assert_eq!(le32(ev, id_off), 0, "input 0");
        }
        // Three more frames: the signal toggles back, one more event each.
        qbuf(&mut h, s, 1, 1);
        qbuf(&mut h, s, 0, 1);
        assert_eq!(kinds(&drain_events(&mut h)), vec![(1, s, 1), (1, s, 0)]);
        qbuf(&mut h, s, 1, 1);
        let evs = drain_events(&mut h);
        assert_eq!(kinds(&evs), vec![(1, s, 1), (2, s, sc), (2, watcher, sc)]);
    }

    #[test]
    fn no_source_change_by_default() {
        let mut h = Harness::with_backend("capture", true);
        let s = h.open();
        assert_eq!(
            subscribe(&mut h, s, bindings::V4L2_EVENT_SOURCE_CHANGE, 0),
            0
        );
        mmap_buffers(&mut h, s, 2, 1);
        qbuf(&mut h, s, 0, 1);
        qbuf(&mut h, s, 1, 1);
        let resp = h.command(&ioctl_cmd(s, VIDIOC_STREAMON, &9u32.to_le_bytes()), 8);
        assert_eq!(le32(&resp, 0), 0, "STREAMON");
        for _ in 0..4 {
            let evs = drain_events(&mut h);
            assert!(kinds(&evs).iter().all(|k| k.0 == 1), "only DQBUF events");
            for ev in evs {
                qbuf(&mut h, s, le32(&ev, 8), 1);
            }
        }
    }
}

/// `--crop`: the capture device as a camera with a cropper.
mod crop {
    use super::capture::s_fmt_mp;
    use super::*;
    use crate::devices::common::FMT_NV12;
    use v4l2r::bindings;

    const VIDIOC_G_SELECTION: u32 = 94;
    const VIDIOC_S_SELECTION: u32 = 95;
    const VIDIOC_ENUM_FRAMESIZES: u32 = 74;
    const CAPTURE: u32 = 1;

    /// (status, left, top, width, height)
    fn sel(
        h: &mut Harness,
        s: u32,
        code: u32,
        ty: u32,
        target: u32,
        flags: u32,
        r: (i32, i32, u32, u32),
    ) -> (i32, i32, i32, u32, u32) {
        let mut p = vec![0u8; 64];
        p[0..4].copy_from_slice(&ty.to_le_bytes());
        p[4..8].copy_from_slice(&target.to_le_bytes());
        p[8..12].copy_from_slice(&flags.to_le_bytes());
        p[12..16].copy_from_slice(&r.0.to_le_bytes());
        p[16..20].copy_from_slice(&r.1.to_le_bytes());
        p[20..24].copy_from_slice(&r.2.to_le_bytes());
        p[24..28].copy_from_slice(&r.3.to_le_bytes());
        let resp = h.command(&ioctl_cmd(s, code, &p), 8 + 64);
        let st = le32(&resp, 0) as i32;
        if st != 0 {
            return (st, 0, 0, 0, 0);
        }
        let b = &resp[8..];
        (
            0,
            le32(b, 12) as i32,
            le32(b, 16) as i32,
            le32(b, 20),
            le32(b, 24),
        )
    }

    #[test]
    fn no_selection_without_crop() {
        let mut h = Harness::with_backend("capture", true);
        let s = h.open();
        let r = sel(
            &mut h,
            s,
            VIDIOC_G_SELECTION,
            CAPTURE,
            bindings::V4L2_SEL_TGT_CROP,
            0,
            (0, 0, 0, 0),
        );
        assert_eq!(r.0, libc::ENOTTY);
    }

    #[test]
    fn crop_targets_and_reset() {
        let opts = devices::BackendOpts {
            crop: true,
            ..Default::default()
        };
        let mut h = Harness::with_opts("capture", true, opts);
        let s = h.open();
        // One frame size.
        let mut fs = vec![0u8; 44];
        fs[4..8].copy_from_slice(&FMT_NV12.to_le_bytes());
        let resp = h.command(&ioctl_cmd(s, VIDIOC_ENUM_FRAMESIZES, &fs), 8 + 44);
        assert_eq!(
            (le32(&resp, 0), le32(&resp, 8 + 12), le32(&resp, 8 + 16)),
            (0, 640, 480)
        );
        fs[0] = 1;
        assert_eq!(
            le32(
                &h.command(&ioctl_cmd(s, VIDIOC_ENUM_FRAMESIZES, &fs), 52),
                0
            ) as i32,
            libc::EINVAL
        );
        let f = s_fmt_mp(&mut h, s, FMT_NV12, 1280, 720);
        assert_eq!(
            (le32(&f, 8), le32(&f, 12)),
            (640, 480),
            "S_FMT keeps the one size"
        );

        let full = (0, 0, 0, 640, 480);
        let g =
            |h: &mut Harness, t: u32| sel(h, s, VIDIOC_G_SELECTION, CAPTURE, t, 0, (0, 0, 0, 0));
        for t in [
            bindings::V4L2_SEL_TGT_CROP,
            bindings::V4L2_SEL_TGT_CROP_DEFAULT,
            bindings::V4L2_SEL_TGT_CROP_BOUNDS,
            bindings::V4L2_SEL_TGT_COMPOSE,
            bindings::V4L2_SEL_TGT_COMPOSE_DEFAULT,
            bindings::V4L2_SEL_TGT_COMPOSE_BOUNDS,
        ] {
            assert_eq!(g(&mut h, t), full, "target {t:#x}");
        }
        assert_eq!(
            g(&mut h, bindings::V4L2_SEL_TGT_COMPOSE_PADDED).0,
            libc::EINVAL
        );
        // MPLANE and bogus types, bogus targets: EINVAL.
        assert_eq!(
            sel(
                &mut h,
                s,
                VIDIOC_G_SELECTION,
                9,
                bindings::V4L2_SEL_TGT_CROP,
                0,
                (0, 0, 0, 0)
            )
            .0,
            libc::EINVAL
        );
        assert_eq!(
            sel(
                &mut h,
                s,
                VIDIOC_G_SELECTION,
                2,
                bindings::V4L2_SEL_TGT_CROP,
                0,
                (0, 0, 0, 0)
            )
            .0,
            libc::EINVAL
        );
        assert_eq!(g(&mut h, 0xffff).0, libc::EINVAL);

        // CROP is settable inside the bounds, clamped into them.
        let set = |h: &mut Harness, t: u32, flags: u32, r| {
            sel(h, s, VIDIOC_S_SELECTION, CAPTURE, t, flags, r)
        };
        assert_eq!(
            set(&mut h, bindings::V4L2_SEL_TGT_CROP, 0, (10, 20, 320, 240)),
            (0, 10, 20, 320, 240)
        );
        assert_eq!(
            g(&mut h, bindings::V4L2_SEL_TGT_CROP),
            (0, 10, 20, 320, 240)
        );
        assert_eq!(
            set(&mut h, bindings::V4L2_SEL_TGT_CROP, 0, (600, -5, 100, 100)),
            (0, 540, 0, 100, 100)
        );
        assert_eq!(
            set(
                &mut h,
                bindings::V4L2_SEL_TGT_CROP,
                0,
                (0, 0, 0x4000, 0x4000)
            ),
            full
        );
        // GE cannot be met beyond the bounds, LE cannot below 1 pixel.
        let ge = bindings::V4L2_SEL_FLAG_GE;
        let le = bindings::V4L2_SEL_FLAG_LE;
        assert_eq!(
            set(&mut h, bindings::V4L2_SEL_TGT_CROP, ge, (0, 0, 700, 100)).0,
            libc::ERANGE
        );
        assert_eq!(
            set(&mut h, bindings::V4L2_SEL_TGT_CROP, le, (0, 0, 0, 100)).0,
            libc::ERANGE
        );
        assert_eq!(
            set(&mut h, bindings::V4L2_SEL_TGT_CROP, ge | le, (2, 2, 64, 48)),
            (0, 2, 2, 64, 48)
        );
        // COMPOSE stays the full frame; the other targets are read-only.
        assert_eq!(
            set(&mut h, bindings::V4L2_SEL_TGT_COMPOSE, 0, (0, 0, 10, 10)),
            full
        );
        for t in [
            bindings::V4L2_SEL_TGT_CROP_DEFAULT,
            bindings::V4L2_SEL_TGT_CROP_BOUNDS,
            bindings::V4L2_SEL_TGT_COMPOSE_DEFAULT,
            bindings::V4L2_SEL_TGT_COMPOSE_BOUNDS,
            bindings::V4L2_SEL_TGT_COMPOSE_PADDED,
        ] {
            assert_eq!(
                set(&mut h, t, 0, (0, 0, 10, 10)).0,
                libc::EINVAL,
                "target {t:#x}"
            );
        }
        assert_eq!(g(&mut h, bindings::V4L2_SEL_TGT_CROP), (0, 2, 2, 64, 48));
        // S_FMT keeping the size keeps the crop.
        s_fmt_mp(&mut h, s, FMT_NV12, 640, 480);
        assert_eq!(g(&mut h, bindings::V4L2_SEL_TGT_CROP), (0, 2, 2, 64, 48));
    }

    #[test]
    fn crop_resets_when_the_frame_size_changes() {
        // Only one size is offered through S_FMT, so drive the device's
        // format setter (what S_FMT calls) directly.
        let shm = Shm::new(1 << 20).unwrap();
        let guest = crate::media::GuestMemMapper {
            mem: VirtioMediaPci::new_guest_memory(),
        };
        let ctx = crate::devices::common::DevCtx::new(shm, guest, EventQueueHandle::default());
        let mut dev = crate::devices::capture::CaptureDevice::new(ctx);
        dev.enable_crop();
        dev.crop = bindings::v4l2_rect {
            left: 8,
            top: 8,
            width: 64,
            height: 64,
        };
        dev.set_format(crate::devices::common::layout(FMT_NV12, 640, 480).unwrap());
        assert_eq!(
            (dev.crop.left, dev.crop.width),
            (8, 64),
            "same size: crop kept"
        );
        dev.set_format(crate::devices::common::layout(FMT_NV12, 320, 240).unwrap());
        let c = dev.crop;
        assert_eq!(
            (c.left, c.top, c.width, c.height),
            (0, 0, 320, 240),
            "new size: crop reset"
        );
    }
}

/// A device without a shared-memory region (`--no-shm`): no SHARED_MEMORY
/// capability, no BAR2, MMAP refused everywhere, USERPTR working.
mod no_shm {
    use super::capture::{drain_events, s_fmt_mp};
    use super::*;
    use crate::devices::capture::frame_byte;
    use crate::devices::common::{FMT_YUV420M, FMT_YUYV};
    use v4l2r::bindings;

    const CAP_MPLANE: u32 = 9;
    const OUT_MPLANE: u32 = 10;
    const MEMORY_USERPTR: u32 = 2;
    const VIDIOC_G_FMT: u32 = 4;
    const VIDIOC_S_FMT: u32 = 5;
    const VIDIOC_G_CTRL: u32 = 27;
    const VIDIOC_CREATE_BUFS: u32 = 92;
    const CAPS_MMAP: u32 = bindings::V4L2_BUF_CAP_SUPPORTS_MMAP;
    const CAPS_USERPTR: u32 = bindings::V4L2_BUF_CAP_SUPPORTS_USERPTR;
    /// The backends that must work without shared memory, with their queues.
    const BACKENDS: [(&str, &[u32]); 3] = [
        ("capture", &[CAP_MPLANE]),
        ("output", &[OUT_MPLANE]),
        ("m2m", &[OUT_MPLANE, CAP_MPLANE]),
    ];

    /// (cap id, virtio cfg_type) of every capability, walked through the
    /// device's config space accessors.
    fn caps(h: &Harness) -> Vec<(u8, u8)> {
        let mut out = vec![];
        let mut b = [0u8; 4];
        h.dev.config_read(0x34, &mut b[..1]);
        let mut pos = b[0] as u64;
        while pos != 0 {
            assert!(out.len() < 48, "capability loop");
            h.dev.config_read(pos, &mut b);
            out.push((b[0], b[3]));
            pos = b[1] as u64;
        }
        out
    }

    fn reqbufs(h: &mut Harness, s: u32, ty: u32, memory: u32, count: u32) -> Vec<u8> {
        let mut req = vec![0u8; 20];
        req[0..4].copy_from_slice(&count.to_le_bytes());
        req[4..8].copy_from_slice(&ty.to_le_bytes());
        req[8..12].copy_from_slice(&memory.to_le_bytes());
        h.command(&ioctl_cmd(s, VIDIOC_REQBUFS, &req), 8 + 20)
    }

    fn mmap_cmd(h: &mut Harness, s: u32, offset: u64) -> Vec<u8> {
        let mut mmap = cmd_hdr(CMD_MMAP);
        mmap.extend_from_slice(&s.to_le_bytes());
        mmap.extend_from_slice(&1u32.to_le_bytes()); // RW
        mmap.extend_from_slice(&offset.to_le_bytes());
        h.command(&mmap, 24)
    }

    fn set_fmt(h: &mut Harness, s: u32, ty: u32, fourcc: u32) {
        let mut f = vec![0u8; V4L2_FORMAT_SIZE];
        f[0..4].copy_from_slice(&ty.to_le_bytes());
        f[8..12].copy_from_slice(&320u32.to_le_bytes());
        f[12..16].copy_from_slice(&240u32.to_le_bytes());
        f[16..20].copy_from_slice(&fourcc.to_le_bytes());
        let resp = h.command(&ioctl_cmd(s, VIDIOC_S_FMT, &f), 8 + V4L2_FORMAT_SIZE as u32);
        assert_eq!(le32(&resp, 0), 0, "S_FMT type {ty}");
        assert_eq!(
            le32(&resp, 8 + 16),
            fourcc,
            "S_FMT type {ty} took the format"
        );
    }

    /// QBUF of USERPTR buffer `index`; `planes` = (guest address, length,
    /// bytesused), one SG entry per plane.
    fn qbuf_userptr(h: &mut Harness, s: u32, ty: u32, index: u32, planes: &[(u64, u32, u32)]) {
        let mut b = v4l2_buffer(index, planes.len() as u32);
        b[4..8].copy_from_slice(&ty.to_le_bytes());
        b[60..64].copy_from_slice(&MEMORY_USERPTR.to_le_bytes());
        let mut pl = vec![0u8; V4L2_PLANE_SIZE * planes.len()];
        let mut sgs = vec![];
        for (p, &(addr, len, used)) in planes.iter().enumerate() {
            let o = p * V4L2_PLANE_SIZE;
            pl[o..o + 4].copy_from_slice(&used.to_le_bytes());
            pl[o + 4..o + 8].copy_from_slice(&len.to_le_bytes());
            pl[o + 8..o + 16].copy_from_slice(&(0x7f00_0000_0000 + addr).to_le_bytes());
            sgs.extend_from_slice(&addr.to_le_bytes());
            sgs.extend_from_slice(&len.to_le_bytes());
            sgs.extend_from_slice(&[0; 4]);
        }
        let resp_len = (8 + V4L2_BUFFER_SIZE + pl.len()) as u32;
        let resp = h.command(&ioctl_cmd(s, VIDIOC_QBUF, &[b, pl, sgs].concat()), resp_len);
        assert_eq!(le32(&resp, 0), 0, "QBUF USERPTR type {ty} index {index}");
    }

    #[test]
    fn config_space_has_no_shm_capability_or_bar() {
        // Control: with shared memory the capability is there.
        let h = Harness::with_backend("capture", true);
        assert!(caps(&h).contains(&(pci::PCI_CAP_ID_VNDR, pci::VIRTIO_PCI_CAP_SHARED_MEMORY_CFG)));
        for (backend, _) in BACKENDS {
            let mut h = Harness::without_shm(backend);
            let vendor: Vec<u8> = caps(&h)
                .into_iter()
                .filter(|(id, _)| *id == pci::PCI_CAP_ID_VNDR)
                .map(|(_, t)| t)
                .collect();
            assert_eq!(
                vendor,
                vec![1, 2, 3, 4],
                "{backend}: COMMON, NOTIFY, ISR, DEVICE and nothing else"
            );
            for bar in [0x18u64, 0x1c] {
                h.dev.config_write(bar, &0xffff_ffffu32.to_le_bytes());
                let mut b = [0xaau8; 4];
                h.dev.config_read(bar, &mut b);
                assert_eq!(b, [0; 4], "{backend}: BAR at {bar:#x} not implemented");
            }
            assert_eq!(h.dev.shm.size(), 0);
        }
    }

    #[test]
    fn reqbufs_mmap_refused_and_not_advertised() {
        for (backend, queues) in BACKENDS {
            let mut h = Harness::without_shm(backend);
            let s = h.open();
            for &ty in queues {
                for count in [2, 0] {
                    let resp = reqbufs(&mut h, s, ty, V4L2_MEMORY_MMAP, count);
                    assert_eq!(resp.len(), 8, "{backend} type {ty}: error response only");
                    assert_eq!(
                        le32(&resp, 0) as i32,
                        libc::EINVAL,
                        "{backend} type {ty}: REQBUFS({count}, MMAP)"
                    );
                }
                let resp = reqbufs(&mut h, s, ty, MEMORY_USERPTR, 2);
                assert_eq!(le32(&resp, 0), 0, "{backend} type {ty}: REQBUFS(USERPTR)");
                assert_eq!(le32(&resp, 8), 2, "count");
                let caps = le32(&resp, 8 + 12);
                assert_eq!(
                    caps & (CAPS_MMAP | CAPS_USERPTR),
                    CAPS_USERPTR,
                    "{backend} type {ty}: caps {caps:#x}"
                );
                // A refused MMAP REQBUFS leaves the USERPTR buffers alone.
                let resp = reqbufs(&mut h, s, ty, V4L2_MEMORY_MMAP, 1);
                assert_eq!(le32(&resp, 0) as i32, libc::EINVAL);
                let mut qb = v4l2_buffer(1, 1);
                qb[4..8].copy_from_slice(&ty.to_le_bytes());
                let resp = h.command(&ioctl_cmd(s, VIDIOC_QUERYBUF, &qb), 8 + 88 + 64 * 8);
                assert_eq!(
                    le32(&resp, 0),
                    0,
                    "{backend} type {ty}: buffer 1 still there"
                );
                assert_eq!(le32(&resp, 8 + 60), MEMORY_USERPTR);
                let resp = reqbufs(&mut h, s, ty, MEMORY_USERPTR, 0);
                assert_eq!(
                    le32(&resp, 0),
                    0,
                    "{backend} type {ty}: REQBUFS(0, USERPTR)"
                );
                assert_eq!(le32(&resp, 8 + 12) & CAPS_MMAP, 0);
            }
            // Control: the same device with shared memory advertises MMAP.
            let mut h = Harness::with_backend(backend, true);
            let s = h.open();
            for &ty in queues {
                let resp = reqbufs(&mut h, s, ty, V4L2_MEMORY_MMAP, 1);
                assert_eq!(le32(&resp, 0), 0);
                assert_eq!(
                    le32(&resp, 8 + 12) & (CAPS_MMAP | CAPS_USERPTR),
                    CAPS_MMAP | CAPS_USERPTR
                );
            }
        }
    }

    #[test]
    fn create_bufs_mmap_refused() {
        use std::mem::{offset_of, size_of};
        let cb_size = size_of::<bindings::v4l2_create_buffers>();
        let fmt_off = offset_of!(bindings::v4l2_create_buffers, format);
        let caps_off = offset_of!(bindings::v4l2_create_buffers, capabilities);
        for (backend, queues) in BACKENDS {
            let mut h = Harness::without_shm(backend);
            let s = h.open();
            for &ty in queues {
                let mut f = vec![0u8; V4L2_FORMAT_SIZE];
                f[0..4].copy_from_slice(&ty.to_le_bytes());
                let resp = h.command(&ioctl_cmd(s, VIDIOC_G_FMT, &f), 8 + V4L2_FORMAT_SIZE as u32);
                assert_eq!(le32(&resp, 0), 0);
                let mut cb = vec![0u8; cb_size];
                cb[4..8].copy_from_slice(&1u32.to_le_bytes()); // count
                cb[8..12].copy_from_slice(&V4L2_MEMORY_MMAP.to_le_bytes());
                cb[fmt_off..fmt_off + V4L2_FORMAT_SIZE].copy_from_slice(&resp[8..]);
                let resp = h.command(&ioctl_cmd(s, VIDIOC_CREATE_BUFS, &cb), (8 + cb_size) as u32);
                assert_eq!(
                    le32(&resp, 0) as i32,
                    libc::EINVAL,
                    "{backend}: CREATE_BUFS(MMAP)"
                );
                cb[8..12].copy_from_slice(&MEMORY_USERPTR.to_le_bytes());
                let resp = h.command(&ioctl_cmd(s, VIDIOC_CREATE_BUFS, &cb), (8 + cb_size) as u32);
                assert_eq!(le32(&resp, 0), 0, "{backend}: CREATE_BUFS(USERPTR)");
                assert_eq!(
                    (le32(&resp, 8), le32(&resp, 12)),
                    (0, 1),
                    "index 0, count 1"
                );
                let caps = le32(&resp, 8 + caps_off);
                assert_eq!(
                    caps & (CAPS_MMAP | CAPS_USERPTR),
                    CAPS_USERPTR,
                    "{backend}: caps {caps:#x}"
                );
            }
        }
    }

    #[test]
    fn mmap_command_refused() {
        for (backend, queues) in BACKENDS {
            let mut h = Harness::without_shm(backend);
            let s = h.open();
            for &ty in queues {
                assert_eq!(le32(&reqbufs(&mut h, s, ty, MEMORY_USERPTR, 2), 0), 0);
            }
            for offset in [0u64, 0x1000, 0x10_0000] {
                let resp = mmap_cmd(&mut h, s, offset);
                assert_eq!(resp.len(), 8, "{backend}: no mapping returned");
                assert_eq!(
                    le32(&resp, 0) as i32,
                    libc::EINVAL,
                    "{backend}: MMAP of {offset:#x}"
                );
            }
            // MUNMAP of anything is refused too (nothing was ever mapped).
            let mut munmap = cmd_hdr(CMD_MUNMAP);
            munmap.extend_from_slice(&0u64.to_le_bytes());
            assert_eq!(le32(&h.command(&munmap, 8), 0) as i32, libc::EINVAL);
        }
    }

    #[test]
    fn simple_backend_refuses_to_start() {
        let events = EventQueueHandle::default();
        let mem = VirtioMediaPci::new_guest_memory();
        let err = devices::make_backend("simple", events, Shm::absent(), mem, Default::default())
            .err()
            .expect("simple without shm must fail");
        let msg = format!("{err:#}");
        assert!(
            msg.contains("simple") && msg.contains("--no-shm") && msg.contains("MMAP"),
            "{msg}"
        );
    }

    #[test]
    fn capture_streams_userptr() {
        let mut h = Harness::without_shm("capture");
        let s = h.open();
        s_fmt_mp(&mut h, s, FMT_YUYV, 320, 240);
        let size = 320 * 240 * 2u32;
        assert_eq!(
            le32(&reqbufs(&mut h, s, CAP_MPLANE, MEMORY_USERPTR, 2), 0),
            0
        );
        let bufs = [h.alloc(size as usize), h.alloc(size as usize)];
        for (i, &a) in bufs.iter().enumerate() {
            h.mem
                .write_slice(&vec![0xeeu8; size as usize], GuestAddress(a))
                .unwrap();
            qbuf_userptr(&mut h, s, CAP_MPLANE, i as u32, &[(a, size, 0)]);
        }
        let streamon = ioctl_cmd(s, VIDIOC_STREAMON, &CAP_MPLANE.to_le_bytes());
        assert_eq!(le32(&h.command(&streamon, 8), 0), 0);
        let evs = drain_events(&mut h);
        assert_eq!(evs.len(), 2, "both buffers filled");
        for (seq, &a) in bufs.iter().enumerate() {
            let ev = &evs[seq][8..];
            assert_eq!((le32(ev, 0), le32(ev, 4)), (seq as u32, CAP_MPLANE));
            assert_eq!(le32(&ev[V4L2_BUFFER_SIZE..], 0), size, "bytesused");
            let mut frame = vec![0u8; size as usize];
            h.mem.read_slice(&mut frame, GuestAddress(a)).unwrap();
            let want = frame_byte(seq as u32, 0, 128);
            assert!(
                frame.iter().all(|&b| b == want),
                "frame {seq} in guest memory"
            );
        }
    }

    #[test]
    fn output_consumes_userptr() {
        use crate::devices::capture::CID_LAST_FRAME_CHECKSUM;
        let mut h = Harness::without_shm("output");
        let s = h.open();
        set_fmt(&mut h, s, OUT_MPLANE, FMT_YUYV);
        let size = 320 * 240 * 2u32;
        assert_eq!(
            le32(&reqbufs(&mut h, s, OUT_MPLANE, MEMORY_USERPTR, 1), 0),
            0
        );
        let a = h.alloc(size as usize);
        h.mem.write_slice(&[3u8; 100], GuestAddress(a)).unwrap();
        qbuf_userptr(&mut h, s, OUT_MPLANE, 0, &[(a, size, 100)]);
        let streamon = ioctl_cmd(s, VIDIOC_STREAMON, &OUT_MPLANE.to_le_bytes());
        assert_eq!(le32(&h.command(&streamon, 8), 0), 0);
        let evs = drain_events(&mut h);
        assert_eq!(evs.len(), 1);
        assert_eq!(
            le32(&evs[0][8 + V4L2_BUFFER_SIZE..], 0),
            100,
            "bytesused echoed"
        );
        let ctrl = [CID_LAST_FRAME_CHECKSUM.to_le_bytes(), [0; 4]].concat();
        let resp = h.command(&ioctl_cmd(s, VIDIOC_G_CTRL, &ctrl), 16);
        assert_eq!(le32(&resp, 0), 0);
        assert_eq!(le32(&resp, 12), 300, "checksum of the 100 guest bytes of 3");
    }

    #[test]
    fn m2m_converts_userptr() {
        let mut h = Harness::without_shm("m2m");
        let s = h.open();
        set_fmt(&mut h, s, OUT_MPLANE, FMT_YUYV);
        set_fmt(&mut h, s, CAP_MPLANE, FMT_YUV420M);
        for ty in [OUT_MPLANE, CAP_MPLANE] {
            assert_eq!(le32(&reqbufs(&mut h, s, ty, MEMORY_USERPTR, 1), 0), 0);
        }
        let (w, ht) = (320u32, 240u32);
        let src_size = w * ht * 2;
        // Source frame: Y=50, U=60, V=70.
        let frame: Vec<u8> = (0..w * ht / 2).flat_map(|_| [50u8, 60, 50, 70]).collect();
        let src = h.alloc(src_size as usize);
        h.mem.write_slice(&frame, GuestAddress(src)).unwrap();
        let sizes = [w * ht, w * ht / 4, w * ht / 4];
        let dst: Vec<u64> = sizes.iter().map(|&n| h.alloc(n as usize)).collect();
        qbuf_userptr(&mut h, s, OUT_MPLANE, 0, &[(src, src_size, src_size)]);
        let planes: Vec<(u64, u32, u32)> = dst.iter().zip(sizes).map(|(&a, n)| (a, n, 0)).collect();
        qbuf_userptr(&mut h, s, CAP_MPLANE, 0, &planes);
        for ty in [OUT_MPLANE, CAP_MPLANE] {
            assert_eq!(
                le32(
                    &h.command(&ioctl_cmd(s, VIDIOC_STREAMON, &ty.to_le_bytes()), 8),
                    0
                ),
                0
            );
        }
        let evs = drain_events(&mut h);
        assert_eq!(evs.len(), 2, "source and destination returned");
        let d = &evs[1][8..];
        assert_eq!((le32(d, 4), le32(d, 0)), (CAP_MPLANE, 0));
        for (p, want) in [50u8, 60, 70].into_iter().enumerate() {
            assert_eq!(
                le32(&d[V4L2_BUFFER_SIZE + V4L2_PLANE_SIZE * p..], 0),
                sizes[p],
                "bytesused plane {p}"
            );
            let mut out = vec![0u8; sizes[p] as usize];
            h.mem.read_slice(&mut out, GuestAddress(dst[p])).unwrap();
            assert!(
                out.iter().all(|&b| b == want),
                "plane {p} converted into guest memory"
            );
        }
    }
}

/// A USERPTR SG entry, built from its wire form (its padding is private).
fn userptr_sg(start: u64, len: u32) -> virtio_media::protocol::SgEntry {
    let mut bytes = [0u8; 16];
    bytes[0..8].copy_from_slice(&start.to_le_bytes());
    bytes[8..12].copy_from_slice(&len.to_le_bytes());
    <virtio_media::protocol::SgEntry as zerocopy::FromBytes>::read_from_bytes(&bytes[..]).unwrap()
}

/// USERPTR planes are written straight into guest memory, piece by piece
/// across the SG entries and nowhere else; a list too short is refused.
#[test]
fn userptr_writes_reach_the_sg_ranges_only() {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
    let guest = crate::media::GuestMemMapper {
        mem: Arc::new(std::sync::RwLock::new(mem)),
    };
    let read = |addr: u64, len: usize| {
        let mut out = vec![0u8; len];
        guest
            .mem
            .read()
            .unwrap()
            .read_slice(&mut out, GuestAddress(addr))
            .unwrap();
        out
    };
    let sgs = [userptr_sg(0x1000, 0x100), userptr_sg(0x3000, 0x200)];
    let data: Vec<u8> = (0..0x180u32).map(|i| i as u8).collect();
    guest.write_sgs(&sgs, &data).unwrap();
    assert_eq!(read(0x1000, 0x100), data[..0x100]);
    assert_eq!(read(0x3000, 0x80), data[0x100..]);
    assert_eq!(read(0x3080, 0x180), vec![0; 0x180], "past the data");
    assert_eq!(read(0x1100, 0x100), vec![0; 0x100], "between the entries");

    // A fill larger than its 64 KiB pattern would need, over both entries.
    guest.fill_sgs(&sgs, 0x300, 0xab).unwrap();
    assert_eq!(read(0x1000, 0x100), vec![0xab; 0x100]);
    assert_eq!(read(0x3000, 0x200), vec![0xab; 0x200]);
    assert_eq!(read(0x0ff0, 0x10), vec![0; 0x10], "before the first entry");

    assert!(
        guest.write_sgs(&sgs, &[1; 0x301]).is_err(),
        "longer than the list"
    );
    assert!(
        guest.fill_sgs(&sgs, 0x301, 1).is_err(),
        "longer than the list"
    );
    // An entry outside guest memory.
    assert!(guest
        .fill_sgs(&[userptr_sg(0xff00, 0x1000)], 0x1000, 1)
        .is_err());
}

/// A chain returned twice gets two adjacent used entries for the same head
/// and a single index update covering both, wrapping around the ring.
#[test]
fn used_twice_publishes_both_entries_at_once() {
    use virtio_queue::{Queue, QueueT};
    const USED: u64 = 0x2000;
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
    let mut q = Queue::new(4).unwrap();
    q.set_used_ring_address(Some(USED as u32), Some(0));
    q.set_next_used(3);
    crate::device::add_used_twice(&mut q, &mem, 2, 264, 0).unwrap();
    let u16_at = |a: u64| mem.read_obj::<u16>(GuestAddress(a)).unwrap();
    let u32_at = |a: u64| mem.read_obj::<u32>(GuestAddress(a)).unwrap();
    assert_eq!(u16_at(USED + 2), 5, "index moves by two at once");
    assert_eq!(q.next_used(), 5);
    // Entry 3 is the last slot of the ring, entry 4 wraps to slot 0.
    assert_eq!(
        (u32_at(USED + 4 + 8 * 3), u32_at(USED + 8 + 8 * 3)),
        (2, 264)
    );
    assert_eq!((u32_at(USED + 4), u32_at(USED + 8)), (2, 0));
    assert_eq!(u32_at(USED + 4 + 8), 0, "no other entry written");
}
