// SPDX-License-Identifier: GPL-2.0
//! Runs the real binary and talks to it over its vfio-user socket with the
//! `vfio_user` crate's client, the way QEMU would: region info (including
//! the mmapable shared-memory BAR fd), config space, DMA_MAP of memfd guest
//! RAM, MSI-X eventfds, BAR0 register writes, a command on the commandq,
//! and frames read through the client's own mapping of the BAR2 fd.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use vfio_user::Client;

const RAM: u64 = 2 << 20;
const SHM: u64 = 4 << 20;
const QSIZE: u16 = 16;
const CONFIG_REGION: u32 = 7;

struct Server(Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn memfd(name: &std::ffi::CStr, size: u64) -> File {
    let fd = unsafe { libc::memfd_create(name.as_ptr(), 0) };
    assert!(fd >= 0);
    let f = unsafe { File::from_raw_fd(fd) };
    f.set_len(size).unwrap();
    f
}

fn eventfd() -> File {
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK) };
    assert!(fd >= 0);
    unsafe { File::from_raw_fd(fd) }
}

fn eventfd_count(f: &File) -> u64 {
    let mut b = [0u8; 8];
    match (&*f).read(&mut b) {
        Ok(8) => u64::from_ne_bytes(b),
        _ => 0,
    }
}

struct Drv {
    c: Client,
    ram: File,
    next_desc: [u16; 2],
    avail_idx: [u16; 2],
    used_seen: [u16; 2],
    next_buf: u64,
}

const RINGS: [(u64, u64, u64); 2] = [(0x1000, 0x2000, 0x3000), (0x4000, 0x5000, 0x6000)];

impl Drv {
    fn w(&mut self, off: u64, data: &[u8]) {
        self.c.region_write(0, off, data).unwrap();
    }
    fn r(&mut self, off: u64, len: usize) -> Vec<u8> {
        let mut b = vec![0; len];
        self.c.region_read(0, off, &mut b).unwrap();
        b
    }
    fn put<const N: usize>(&self, addr: u64, b: [u8; N]) {
        self.ram.write_all_at(&b, addr).unwrap();
    }
    fn get32(&self, addr: u64) -> u32 {
        let mut b = [0u8; 4];
        self.ram.read_exact_at(&mut b, addr).unwrap();
        u32::from_le_bytes(b)
    }
    fn get16(&self, addr: u64) -> u16 {
        let mut b = [0u8; 2];
        self.ram.read_exact_at(&mut b, addr).unwrap();
        u16::from_le_bytes(b)
    }
    fn alloc(&mut self, len: usize) -> u64 {
        let a = self.next_buf;
        self.next_buf += (len as u64).div_ceil(64) * 64;
        a
    }
    /// Sends a command with a `resp_len` response buffer, returns response.
    fn command(&mut self, cmd: &[u8], resp_len: u32) -> Vec<u8> {
        let (d0, r) = self.submit(cmd, resp_len);
        let (head, len) = self
            .next_used(Duration::from_secs(5))
            .expect("one used entry");
        assert_eq!(head, d0 as u32);
        let mut out = vec![0; len as usize];
        self.ram.read_exact_at(&mut out, r).unwrap();
        out
    }

    /// Makes a command available and notifies the commandq without waiting
    /// for the response; returns the chain's head and the response address.
    fn submit(&mut self, cmd: &[u8], resp_len: u32) -> (u16, u64) {
        let c = self.alloc(cmd.len());
        self.ram.write_all_at(cmd, c).unwrap();
        let r = self.alloc(resp_len as usize);
        let (desc, avail, _) = RINGS[0];
        let d0 = self.next_desc[0];
        let d1 = (d0 + 1) % QSIZE;
        for (i, (addr, len, flags, next)) in
            [(c, cmd.len() as u32, 1u16, d1), (r, resp_len, 2u16, 0)]
                .into_iter()
                .enumerate()
        {
            let d = desc + 16 * if i == 0 { d0 } else { d1 } as u64;
            self.put(d, addr.to_le_bytes());
            self.put(d + 8, len.to_le_bytes());
            self.put(d + 12, flags.to_le_bytes());
            self.put(d + 14, next.to_le_bytes());
        }
        self.next_desc[0] = (d1 + 1) % QSIZE;
        self.put(
            avail + 4 + 2 * (self.avail_idx[0] % QSIZE) as u64,
            d0.to_le_bytes(),
        );
        self.avail_idx[0] += 1;
        self.put(avail + 2, self.avail_idx[0].to_le_bytes());
        self.w(0x1000, &0u16.to_le_bytes()); // notify queue 0
        (d0, r)
    }

    /// The next used entry (head, length) of the commandq, polled for at
    /// most `timeout` (responses may be delayed).
    fn next_used(&mut self, timeout: Duration) -> Option<(u32, u32)> {
        let (_, _, used) = RINGS[0];
        let t0 = Instant::now();
        while self.get16(used + 2) == self.used_seen[0] {
            if t0.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let e = used + 4 + 8 * (self.used_seen[0] % QSIZE) as u64;
        self.used_seen[0] = self.used_seen[0].wrapping_add(1);
        Some((self.get32(e), self.get32(e + 4)))
    }
}

fn le32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn le64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

fn ioctl(session: u32, code: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![3, 0, 0, 0, 0, 0, 0, 0];
    v.extend_from_slice(&session.to_le_bytes());
    v.extend_from_slice(&code.to_le_bytes());
    v.extend_from_slice(payload);
    v
}

fn start(name: &str, extra: &[&str]) -> (Server, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("vmvfu-test-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("vfu.sock");
    // --no-shm and --shm-size exclude each other.
    let shm_size: &[&str] = if extra.contains(&"--no-shm") {
        &[]
    } else {
        &["--shm-size", "4M"]
    };
    let server = Server(
        Command::new(env!("CARGO_BIN_EXE_virtio-media-vfu"))
            .args(["--socket", sock.to_str().unwrap(), "--device-id", "48"])
            .args(shm_size)
            .arg("--exit-on-disconnect")
            .args(extra)
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    while !Path::new(&sock).exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "socket never appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    (server, sock)
}

/// Connects to the device at `sock`. Its file appears when the device
/// binds the socket, and a connection in the moment before it listens is
/// refused (seen once in a CI run): retried for a while.
fn connect(sock: &Path) -> Client {
    let t0 = Instant::now();
    loop {
        match Client::new(sock) {
            Ok(client) => return client,
            Err(e) => {
                assert!(
                    t0.elapsed() < Duration::from_secs(20),
                    "cannot connect to {}: {e:?}",
                    sock.display()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Maps RAM, sets up MSI-X and both queues; returns the driver.
fn init(mut c: Client) -> (Drv, Vec<File>) {
    let ram = memfd(c"guest-ram", RAM);
    c.dma_map(0, 0, RAM, ram.as_raw_fd()).unwrap();
    let efds: Vec<File> = (0..4).map(|_| eventfd()).collect();
    let raw: Vec<i32> = efds.iter().map(|f| f.as_raw_fd()).collect();
    c.set_irqs(2, (1 << 2) | (1 << 5), 0, 4, &raw).unwrap();
    c.region_write(CONFIG_REGION, 0x43, &[0x80]).unwrap(); // MSI-X enable
    let mut d = Drv {
        c,
        ram,
        next_desc: [0; 2],
        avail_idx: [0; 2],
        used_seen: [0; 2],
        next_buf: 0x10000,
    };
    d.w(0x14, &[0]);
    d.w(0x14, &[3]);
    d.w(0x08, &1u32.to_le_bytes());
    d.w(0x0c, &1u32.to_le_bytes());
    d.w(0x14, &[11]);
    assert_eq!(d.r(0x14, 1), vec![11], "FEATURES_OK accepted");
    for q in 0..2u16 {
        let (desc, avail, used) = RINGS[q as usize];
        d.w(0x16, &q.to_le_bytes());
        d.w(0x18, &QSIZE.to_le_bytes());
        d.w(0x1a, &(q + 1).to_le_bytes());
        d.w(0x20, &desc.to_le_bytes());
        d.w(0x28, &avail.to_le_bytes());
        d.w(0x30, &used.to_le_bytes());
        d.w(0x1c, &1u16.to_le_bytes());
    }
    d.w(0x14, &[15]);
    (d, efds)
}

#[test]
fn delayed_responses_over_the_socket() {
    let (_server, sock) = start(
        "delay",
        &["--response-delay-ms", "100", "--backend", "capture"],
    );
    let (mut d, efds) = init(connect(&sock));
    let t0 = Instant::now();
    let resp = d.command(&[1, 0, 0, 0, 0, 0, 0, 0], 16);
    let took = t0.elapsed();
    assert_eq!(resp.len(), 16);
    assert_eq!(le32(&resp, 0), 0);
    assert!(took >= Duration::from_millis(90), "answered after {took:?}");
    assert!(
        eventfd_count(&efds[1]) >= 1,
        "interrupt raised by the delay worker"
    );
    let mut cfg = d.r(0x3000, 40);
    cfg.truncate(32);
    assert_eq!(&cfg[8..32], b"virtio-media-vfu capture");
}

/// Responses are completed when their delay ends, not in the order the
/// commands came: with every 2nd command held 500 ms longer, a command of
/// one session is answered on time while an earlier command of another
/// session still waits.
#[test]
fn delayed_responses_complete_in_due_order_across_sessions() {
    let (_server, sock) = start(
        "due-order",
        &[
            "--response-delay-ms",
            "30",
            "--fault",
            "delay",
            "--fault-every",
            "2",
            "--backend",
            "capture",
        ],
    );
    let (mut d, _efds) = init(connect(&sock));
    let s1 = le32(&d.command(&[1, 0, 0, 0, 0, 0, 0, 0], 16), 8); // command 1
    let s2 = le32(&d.command(&[1, 0, 0, 0, 0, 0, 0, 0], 16), 8); // command 2: +500 ms
    assert_ne!(s1, s2);
    let mut fmt = vec![0u8; 208];
    fmt[0] = 9; // V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE
    const VIDIOC_G_FMT: u32 = 4;
    assert_eq!(
        le32(&d.command(&ioctl(s1, VIDIOC_G_FMT, &fmt), 8 + 208), 0),
        0
    ); // command 3
    let t0 = Instant::now();
    let (slow, _) = d.submit(&ioctl(s2, VIDIOC_G_FMT, &fmt), 8 + 208); // command 4: +500 ms
    let (fast, _) = d.submit(&ioctl(s1, VIDIOC_G_FMT, &fmt), 8 + 208); // command 5
    let (first, _) = d.next_used(Duration::from_secs(5)).expect("a response");
    let first_at = t0.elapsed();
    let (second, _) = d
        .next_used(Duration::from_secs(5))
        .expect("a second response");
    let second_at = t0.elapsed();
    assert_eq!(
        (first, second),
        (fast as u32, slow as u32),
        "session {s1} answered first"
    );
    assert!(
        first_at < Duration::from_millis(400),
        "the on-time response waited {first_at:?}"
    );
    assert!(
        second_at >= Duration::from_millis(500),
        "the held response came after {second_at:?}"
    );
}

#[test]
fn qemu_like_client_over_the_socket() {
    let (_server, sock) = start("basic", &[]);
    let mut c = connect(&sock);

    // Regions as QEMU sees them.
    let bar2 = c.region(2).unwrap();
    assert_eq!(bar2.size, SHM);
    assert!(bar2.file_offset.is_some(), "shm BAR offered with an fd");
    assert_eq!(bar2.sparse_areas.len(), 1);
    assert_eq!(bar2.sparse_areas[0].size, SHM);
    let shm_fd = bar2
        .file_offset
        .as_ref()
        .unwrap()
        .file()
        .try_clone()
        .unwrap();
    assert_eq!(c.region(0).unwrap().size, 0x4000);
    assert_eq!(c.region(CONFIG_REGION).unwrap().size, 256);
    assert_eq!(c.get_irq_info(2).unwrap().count, 4, "MSI-X vectors");

    let mut id = [0u8; 4];
    c.region_read(CONFIG_REGION, 0, &mut id).unwrap();
    assert_eq!(u32::from_le_bytes(id), 0x1af4 | (0x1040 + 48) << 16);

    // Guest RAM and interrupts.
    let ram = memfd(c"guest-ram", RAM);
    c.dma_map(0, 0, RAM, ram.as_raw_fd()).unwrap();
    let efds: Vec<File> = (0..4).map(|_| eventfd()).collect();
    let raw: Vec<i32> = efds.iter().map(|f| f.as_raw_fd()).collect();
    c.set_irqs(2, (1 << 2) | (1 << 5), 0, 4, &raw).unwrap();
    c.region_write(CONFIG_REGION, 0x43, &[0x80]).unwrap(); // MSI-X enable

    let mut d = Drv {
        c,
        ram,
        next_desc: [0; 2],
        avail_idx: [0; 2],
        used_seen: [0; 2],
        next_buf: 0x10000,
    };
    // Driver init through BAR0 common config.
    d.w(0x14, &[0]);
    d.w(0x14, &[3]);
    d.w(0x08, &1u32.to_le_bytes());
    d.w(0x0c, &1u32.to_le_bytes());
    d.w(0x14, &[11]);
    assert_eq!(d.r(0x14, 1), vec![11], "FEATURES_OK accepted");
    for q in 0..2u16 {
        let (desc, avail, used) = RINGS[q as usize];
        d.w(0x16, &q.to_le_bytes());
        d.w(0x18, &QSIZE.to_le_bytes());
        d.w(0x1a, &(q + 1).to_le_bytes());
        d.w(0x20, &desc.to_le_bytes());
        d.w(0x28, &avail.to_le_bytes());
        d.w(0x30, &used.to_le_bytes());
        d.w(0x1c, &1u16.to_le_bytes());
    }
    d.w(0x14, &[15]);
    let mut cfg = d.r(0x3000, 40);
    cfg.truncate(22);
    assert_eq!(&cfg[8..], b"simple_device\0");

    // OPEN.
    let resp = d.command(&[1, 0, 0, 0, 0, 0, 0, 0], 16);
    assert_eq!(resp.len(), 16);
    assert_eq!(le32(&resp, 0), 0);
    let s = le32(&resp, 8);
    assert!(eventfd_count(&efds[1]) >= 1, "commandq MSI-X eventfd fired");

    // REQBUFS 1, QUERYBUF, MMAP, QBUF, STREAMON.
    let mut req = vec![0u8; 20];
    req[0] = 1;
    req[4] = 9;
    req[8] = 1;
    assert_eq!(le32(&d.command(&ioctl(s, 8, &req), 28), 0), 0);
    let mut buf = vec![0u8; 88];
    buf[4] = 9;
    buf[60] = 1;
    buf[72] = 1;
    let resp = d.command(&ioctl(s, 9, &buf), 8 + 88 + 64);
    assert_eq!(le32(&resp, 0), 0);
    let mem_offset = le32(&resp, 8 + 88 + 8);
    let mut mmap = vec![4, 0, 0, 0, 0, 0, 0, 0];
    mmap.extend_from_slice(&s.to_le_bytes());
    mmap.extend_from_slice(&1u32.to_le_bytes());
    mmap.extend_from_slice(&(mem_offset as u64).to_le_bytes());
    let resp = d.command(&mmap, 24);
    assert_eq!(le32(&resp, 0), 0);
    let shm_off = le64(&resp, 8);
    let mut qbuf = buf.clone();
    qbuf.extend_from_slice(&[0u8; 64]);
    // Queue the same buffer twice over (sequence 0 then 1) so the frame is
    // not all zeroes.
    for _ in 0..2 {
        assert_eq!(le32(&d.command(&ioctl(s, 15, &qbuf), 8 + 88 + 64), 0), 0);
        if d.avail_idx[0] == 5 {
            assert_eq!(
                le32(&d.command(&ioctl(s, 18, &9u32.to_le_bytes()), 8), 0),
                0
            );
        }
    }
    // The frame as the guest would see it through the BAR2 fd mapping.
    let mut px = [0u8; 1];
    shm_fd.read_exact_at(&mut px, shm_off).unwrap();
    assert_eq!(px[0], 1, "Y of frame sequence 1");
    shm_fd.read_exact_at(&mut px, shm_off + 640 * 480).unwrap();
    assert_eq!(px[0], 65, "U of frame sequence 1");

    // Two DQBUF events wait; give the eventq one buffer.
    let (desc, avail, used) = RINGS[1];
    let a = d.alloc(8 + 88 + 512);
    d.put(desc, a.to_le_bytes());
    d.put(desc + 8, (8u32 + 88 + 512).to_le_bytes());
    d.put(desc + 12, 2u16.to_le_bytes());
    d.put(avail + 4, 0u16.to_le_bytes());
    d.put(avail + 2, 1u16.to_le_bytes());
    d.w(0x1004, &1u16.to_le_bytes());
    assert_eq!(d.get16(used + 2), 1);
    assert_eq!(d.get32(used + 8), 8 + 88 + 512);
    assert_eq!(d.get32(a), 1, "DQBUF event");
    assert!(eventfd_count(&efds[2]) >= 1, "eventq MSI-X eventfd fired");
    drop(d);
}

/// `--no-shm` as QEMU sees it: BAR2 absent (size 0, no fd, nothing to map),
/// no SHARED_MEMORY capability, and a device that refuses MMAP but streams
/// USERPTR.
#[test]
fn no_shm_over_the_socket() {
    let (_server, sock) = start("noshm", &["--no-shm", "--backend", "capture"]);
    let mut c = connect(&sock);
    let bar2 = c.region(2).unwrap();
    assert_eq!((bar2.size, bar2.flags), (0, 0), "BAR2 region absent");
    assert!(bar2.file_offset.is_none(), "no fd offered");
    assert!(bar2.sparse_areas.is_empty());
    assert_eq!(c.region(0).unwrap().size, 0x4000);
    assert_eq!(c.region(4).unwrap().size, 0x1000);

    // Capability list as the guest's virtio_pci_modern walks it.
    let mut cfg = vec![0u8; 256];
    c.region_read(CONFIG_REGION, 0, &mut cfg).unwrap();
    let (mut pos, mut vendor) = (cfg[0x34] as usize, vec![]);
    while pos != 0 {
        assert!(vendor.len() < 48 && pos + 4 <= cfg.len(), "capability list");
        if cfg[pos] == 0x09 {
            vendor.push(cfg[pos + 3]);
        }
        pos = cfg[pos + 1] as usize;
    }
    assert_eq!(vendor, vec![1, 2, 3, 4], "no SHARED_MEMORY (8) capability");
    assert_eq!(&cfg[0x18..0x20], &[0; 8], "BAR2/3 not implemented");

    let (mut d, _efds) = init(c);
    let resp = d.command(&[1, 0, 0, 0, 0, 0, 0, 0], 16);
    assert_eq!(le32(&resp, 0), 0, "OPEN");
    let s = le32(&resp, 8);
    // REQBUFS(MMAP) refused, REQBUFS(USERPTR) without SUPPORTS_MMAP.
    let mut req = vec![0u8; 20];
    req[0] = 2;
    req[4] = 9;
    req[8] = 1;
    assert_eq!(
        le32(&d.command(&ioctl(s, 8, &req), 28), 0) as i32,
        libc::EINVAL
    );
    req[8] = 2;
    let resp = d.command(&ioctl(s, 8, &req), 28);
    assert_eq!(le32(&resp, 0), 0);
    assert_eq!(
        le32(&resp, 8 + 12) & 3,
        2,
        "USERPTR but not MMAP in capabilities"
    );
    // MMAP command refused.
    let mut mmap = vec![4, 0, 0, 0, 0, 0, 0, 0];
    mmap.extend_from_slice(&s.to_le_bytes());
    mmap.extend_from_slice(&1u32.to_le_bytes());
    mmap.extend_from_slice(&0u64.to_le_bytes());
    let resp = d.command(&mmap, 24);
    assert_eq!((resp.len(), le32(&resp, 0) as i32), (8, libc::EINVAL));
}

fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!("vmvfu-test-{}-exit", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_virtio-media-vfu"))
        .args(["--socket", dir.join("vfu.sock").to_str().unwrap()])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn no_shm_refused_for_simple_and_with_shm_size() {
    let (code, err) = run_to_exit(&["--no-shm", "--backend", "simple"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("simple backend cannot run without shared memory"),
        "{err}"
    );
    let (code, err) = run_to_exit(&["--no-shm"]);
    assert_eq!(code, Some(1), "simple is the default backend: {err}");
    let (code, err) = run_to_exit(&["--no-shm", "--shm-size", "4M", "--backend", "capture"]);
    assert_eq!(code, Some(2), "clap usage error: {err}");
    assert!(err.contains("--shm-size"), "{err}");
}
