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

struct Harness {
    dev: VirtioMediaPci,
    mem: GuestMemoryMmap,
    vqs: [Vq; 2],
    /// Bump allocator for data buffers in guest memory.
    next_buf: u64,
    shm: Arc<Shm>,
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

fn cmd_hdr(cmd: u32) -> Vec<u8> {
    let mut v = cmd.to_le_bytes().to_vec();
    v.extend_from_slice(&[0; 4]);
    v
}

fn ioctl_cmd(session: u32, code: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = cmd_hdr(CMD_IOCTL);
    v.extend_from_slice(&session.to_le_bytes());
    v.extend_from_slice(&code.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

fn v4l2_buffer(index: u32, num_planes: u32) -> Vec<u8> {
    let mut b = vec![0u8; V4L2_BUFFER_SIZE];
    b[0..4].copy_from_slice(&index.to_le_bytes());
    b[4..8].copy_from_slice(&V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE.to_le_bytes());
    b[60..64].copy_from_slice(&V4L2_MEMORY_MMAP.to_le_bytes());
    b[72..76].copy_from_slice(&num_planes.to_le_bytes()); // length = planes
    b
}

impl Harness {
    fn new(msix: bool) -> Harness {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap();
        let shared = VirtioMediaPci::new_guest_memory();
        *shared.write().unwrap() = mem.clone();
        let shm = Shm::new(16 << 20).unwrap();
        let events = EventQueueHandle::default();
        let backend = devices::make_backend("simple", events.clone(), shm.clone()).unwrap();
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

    fn w(&mut self, off: u64, data: &[u8]) {
        self.dev.bar0_write(pci::COMMON_OFF + off, data);
    }
    fn r(&mut self, off: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0; len];
        self.dev.bar0_read(pci::COMMON_OFF + off, &mut b);
        b
    }

    fn init_driver(&mut self, msix: bool) {
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
                self.mem.write_slice(&[0u8; 0x1000], GuestAddress(a)).unwrap();
            }
        }
        self.w(reg::DEVICE_STATUS, &[s | STATUS_DRIVER_OK]);
        for vq in self.vqs.iter_mut() {
            vq.next_desc = 0;
            vq.avail_idx = 0;
            vq.used_seen = 0;
        }
    }

    fn alloc(&mut self, len: usize) -> u64 {
        let a = self.next_buf;
        self.next_buf += (len as u64).div_ceil(64) * 64 + 64;
        assert!(self.next_buf < MEM_SIZE as u64);
        a
    }

    /// Adds a chain of (addr, len, device-writable) descriptors.
    fn add_chain(&mut self, q: usize, bufs: &[(u64, u32, bool)]) -> u16 {
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
        self.mem.write_obj(head % QSIZE, GuestAddress(slot)).unwrap();
        vq.avail_idx = vq.avail_idx.wrapping_add(1);
        self.mem.write_obj(vq.avail_idx, GuestAddress(vq.avail + 2)).unwrap();
        head % QSIZE
    }

    fn notify(&mut self, q: u16) {
        let off = pci::NOTIFY_OFF + q as u64 * pci::NOTIFY_OFF_MULTIPLIER as u64;
        self.dev.bar0_write(off, &q.to_le_bytes());
    }

    /// New used-ring entries (id, len).
    fn used(&mut self, q: usize) -> Vec<(u32, u32)> {
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
    fn command(&mut self, cmd: &[u8], resp_len: u32) -> Vec<u8> {
        let c = self.alloc(cmd.len());
        self.mem.write_slice(cmd, GuestAddress(c)).unwrap();
        let r = self.alloc(resp_len as usize);
        self.mem.write_slice(&vec![0xaa; resp_len as usize], GuestAddress(r)).unwrap();
        let head = self.add_chain(0, &[(c, cmd.len() as u32, false), (r, resp_len, true)]);
        self.notify(0);
        let used = self.used(0);
        assert_eq!(used.len(), 1, "exactly one chain used");
        assert_eq!(used[0].0, head as u32);
        let mut out = vec![0; used[0].1 as usize];
        self.mem.read_slice(&mut out, GuestAddress(r)).unwrap();
        out
    }

    fn open(&mut self) -> u32 {
        let resp = self.command(&cmd_hdr(CMD_OPEN), 16);
        assert_eq!(resp.len(), 16);
        assert_eq!(le32(&resp, 0), 0, "OPEN status");
        le32(&resp, 8)
    }

    /// Makes one eventq buffer of `len` bytes available; returns its address.
    fn add_event_buffer(&mut self, len: u32) -> (u16, u64) {
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
    assert_eq!(le32(&cfg, 0), devices::V4L2_CAP_VIDEO_CAPTURE_MPLANE | devices::V4L2_CAP_STREAMING);
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
    assert_eq!(h.dev.irqs.msix_count[1], before[1] + 1, "commandq vector 1 raised");
    assert_eq!(h.dev.backend.num_sessions(), 1);

    // VIDIOC_G_FMT: status 0 followed by the format.
    let resp = h.command(&ioctl_cmd(session, VIDIOC_G_FMT, &g_fmt_payload()), 8 + V4L2_FORMAT_SIZE as u32);
    assert_eq!(resp.len(), 8 + V4L2_FORMAT_SIZE, "used length = bytes written");
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
            &ioctl_cmd(s, VIDIOC_QBUF, &[v4l2_buffer(i, 1), vec![0; V4L2_PLANE_SIZE]].concat()),
            (8 + V4L2_BUFFER_SIZE + V4L2_PLANE_SIZE) as u32,
        );
        assert_eq!(le32(&resp, 0), 0, "QBUF status");
    }
    let resp = h.command(&ioctl_cmd(s, VIDIOC_STREAMON, &V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE.to_le_bytes()), 8);
    assert_eq!(le32(&resp, 0), 0, "STREAMON status");
    assert_eq!(h.dev.events.len(), 2, "two DQBUF events pending");
    assert!(h.used(1).is_empty());

    // Frame 1 (sequence 1) is in buffer 1: Y=1, U=65, V=129, straight in shm.
    let (w, hgt) = (devices::simple::WIDTH as u64, devices::simple::HEIGHT as u64);
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
    assert_eq!(h.dev.irqs.msix_count[2], before + 1, "eventq vector 2 raised");
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
        &ioctl_cmd(s, VIDIOC_QBUF, &[v4l2_buffer(0, 1), vec![0; V4L2_PLANE_SIZE]].concat()),
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
    assert_eq!(le32(&h.command(&ioctl_cmd(s, VIDIOC_REQBUFS, &req), 28), 0), 0);
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
    for (ty, flags, errno) in [(0x1234u32, 0u32, libc::EINVAL), (3, 0x80, libc::EINVAL), (3, 1, libc::ENOTTY)] {
        let mut sub = vec![0u8; 32];
        sub[0..4].copy_from_slice(&ty.to_le_bytes());
        sub[8..12].copy_from_slice(&flags.to_le_bytes());
        let resp = h.command(&ioctl_cmd(s, 90, &sub), 8);
        assert_eq!(le32(&resp, 0) as i32, errno, "SUBSCRIBE_EVENT type {ty:#x} flags {flags:#x}");
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
    h.mem.write_slice(&cmd_hdr(CMD_OPEN), GuestAddress(c)).unwrap();
    h.add_chain(0, &[(c, 8, false), (MEM_SIZE as u64 + 0x1000, 16, true)]);
    h.notify(0);
    assert_eq!(h.used(0)[0].1, 0);

    // Readable descriptor after a writable one.
    let c = h.alloc(8);
    let r = h.alloc(8);
    h.mem.write_slice(&cmd_hdr(CMD_OPEN), GuestAddress(c)).unwrap();
    h.add_chain(0, &[(r, 8, true), (c, 8, false)]);
    h.notify(0);
    assert_eq!(h.used(0)[0].1, 8);
    h.mem.read_slice(&mut st, GuestAddress(r)).unwrap();
    assert_eq!(i32::from_le_bytes(st), libc::EINVAL);

    // Chain without any writable descriptor: returned with len 0.
    let c = h.alloc(8);
    h.mem.write_slice(&cmd_hdr(CMD_OPEN), GuestAddress(c)).unwrap();
    h.add_chain(0, &[(c, 8, false)]);
    h.notify(0);
    assert_eq!(h.used(0)[0].1, 0);

    // Bogus notify offsets and BAR0 accesses out of range are ignored.
    h.dev.bar0_write(pci::NOTIFY_OFF + 40, &[0, 0]);
    h.dev.bar0_write(pci::BAR0_SIZE - 1, &[0, 0, 0, 0]);
    let mut b = [0u8; 8];
    h.dev.bar0_read(u64::MAX - 2, &mut b);

    // Still alive: a new session works.
    assert_eq!(h.open(), s + 1, "no orphan sessions from commands without response room");
}

#[test]
fn reset_clears_sessions_mappings_and_events() {
    let mut h = Harness::new(true);
    let s = h.open();
    let mut req = vec![0u8; 20];
    req[0..4].copy_from_slice(&1u32.to_le_bytes());
    req[4..8].copy_from_slice(&V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE.to_le_bytes());
    req[8..12].copy_from_slice(&V4L2_MEMORY_MMAP.to_le_bytes());
    assert_eq!(le32(&h.command(&ioctl_cmd(s, VIDIOC_REQBUFS, &req), 28), 0), 0);
    let resp = h.command(
        &ioctl_cmd(s, VIDIOC_QBUF, &[v4l2_buffer(0, 1), vec![0; V4L2_PLANE_SIZE]].concat()),
        (8 + V4L2_BUFFER_SIZE + V4L2_PLANE_SIZE) as u32,
    );
    assert_eq!(le32(&resp, 0), 0);
    let resp = h.command(&ioctl_cmd(s, VIDIOC_STREAMON, &V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE.to_le_bytes()), 8);
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
    let backend = devices::make_backend("simple", events.clone(), shm.clone()).unwrap();
    let mut dev = VirtioMediaPci::new(48, shm, backend, events, VirtioMediaPci::new_guest_memory());
    let fd = unsafe { libc::memfd_create(c"ram".as_ptr(), 0) };
    assert!(fd >= 0);
    let file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.set_len(3 << 20).unwrap();
    // Two regions from one memfd, like QEMU's RAM split below/above a hole.
    dev.dma_map(0, 0, 1 << 20, Some(file.try_clone().unwrap())).unwrap();
    dev.dma_map(1 << 20, 0x1_0000_0000, 2 << 20, Some(file.try_clone().unwrap())).unwrap();
    // Overlap is refused.
    assert!(dev.dma_map(0, 0x8000, 0x1000, Some(file.try_clone().unwrap())).is_err());
    // Without fd: ignored.
    dev.dma_map(0, 0x2000_0000, 0x1000, None).unwrap();
    {
        let mem = dev.mem.read().unwrap();
        mem.write_slice(b"hello", GuestAddress(0x1_0000_0010)).unwrap();
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
    assert!(dev.mem.read().unwrap().write_slice(b"x", GuestAddress(0x10)).is_err());
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
