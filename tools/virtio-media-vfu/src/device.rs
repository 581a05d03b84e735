// SPDX-License-Identifier: GPL-2.0
//! The complete virtio-media PCI function: config space, BAR0 registers,
//! queues over guest memory, interrupts, and the media backend.
//!
//! Everything here is independent of the vfio-user socket so it can be
//! driven directly by unit tests.

use std::fs::File;
use std::io::Write;
use std::sync::mpsc::Sender;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::{
    Address, Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap,
    GuestMemoryRegion, GuestRegionMmap, MmapRegion,
};

use crate::media::MAX_CMD_SIZE;
use crate::media::{error_response, EventQueueHandle, MediaBackend, RespWriter, SharedGuestMemory};
use crate::pci::{self, PciConfigSpace};
use crate::shm::Shm;
use crate::transport::{self, Action, Transport, ISR_QUEUE, VIRTIO_MSI_NO_VECTOR};

pub const COMMANDQ: usize = 0;
pub const EVENTQ: usize = 1;

// VFIO IRQ indexes and SET_IRQS flags.
pub const VFIO_PCI_INTX_IRQ_INDEX: u32 = 0;
pub const VFIO_PCI_MSIX_IRQ_INDEX: u32 = 2;
pub const VFIO_IRQ_SET_DATA_NONE: u32 = 1 << 0;
pub const VFIO_IRQ_SET_DATA_BOOL: u32 = 1 << 1;
pub const VFIO_IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
pub const VFIO_IRQ_SET_ACTION_MASK: u32 = 1 << 3;
pub const VFIO_IRQ_SET_ACTION_UNMASK: u32 = 1 << 4;
pub const VFIO_IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;

#[derive(Default)]
pub struct Irqs {
    pub intx: Option<File>,
    pub msix: Vec<Option<File>>,
    /// Interrupts raised, per MSI-X vector (tests and logs).
    pub msix_count: Vec<u64>,
    pub intx_count: u64,
}

fn kick(f: &mut File) {
    if let Err(e) = f.write_all(&1u64.to_ne_bytes()) {
        log::error!("eventfd write failed: {e}");
    }
}

pub struct VirtioMediaPci {
    pub pci: PciConfigSpace,
    pub transport: Transport,
    pub mem: SharedGuestMemory,
    pub irqs: Irqs,
    pub backend: Box<dyn MediaBackend>,
    pub events: EventQueueHandle,
    pub shm: Arc<Shm>,
    /// BAR4 contents (MSI-X table and PBA) as seen through region accesses.
    msix_bar: Vec<u8>,
    /// Delay applied to every command response.
    pub response_delay: Duration,
    /// Fault injection (off by default).
    pub faults: Faults,
    /// CLOSE commands processed since start.
    closes: u64,
    /// DQBUF events sent, for `--fault bytesused-overrun`.
    dqbuf_events: u64,
    /// Commands processed since start (drives the fault pattern).
    pub cmd_counter: u64,
    /// Bumped by every reset; delayed completions of an older generation
    /// are dropped.
    pub generation: u64,
    /// Where delayed completions go (a worker thread completes them).
    pub delayed_tx: Option<Sender<Delayed>>,
    /// `--stats`: the device's own time per command (off when `None`).
    pub stats: Option<crate::stats::CmdStats>,
    /// Delayed responses handed to the worker and not completed yet.
    pub delayed_pending: usize,
    /// Sessions the device opened and has not closed, from the OPEN and
    /// CLOSE commands it answered (fault injection and the reset log).
    pub open_sessions: std::collections::BTreeSet<u32>,
    /// `--fuzz`: the hostile layer between the backend and the queues.
    pub fuzz: Option<crate::fuzz::Fuzzer>,
}

/// Fault injection switches (`--fault`). Each enabled fault hits every
/// `every`-th command unless it says otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Faults {
    /// Delay the response by an extra FAULT_DELAY.
    pub delay: bool,
    /// After a successful IOCTL, send VIRTIO_MEDIA_EVT_ERROR (EIO) for the
    /// session and close it.
    pub error_event: bool,
    /// Cut the response short: 4 bytes (half a header) for errors, the bare
    /// 8-byte header (status 0, no payload) for successes with payload.
    pub malformed: bool,
    /// After every command and every eventq notification, queue
    /// FLOOD_EVENTS V4L2 events (SOURCE_CHANGE) for every open session, so
    /// events never stop while sessions are open.
    pub event_flood: bool,
    /// Send every DQBUF event twice: the second one is for a buffer the
    /// driver no longer has queued.
    pub dqbuf_repeat: bool,
    /// From the `every`-th command on, take commands off the commandq and
    /// never answer them (until the driver resets the device).
    pub silent: bool,
    /// Answer an OPEN with the id of a session that is still open (the new
    /// session is closed on the device), whenever one is open.
    pub dup_session: bool,
    /// Report 64 MiB for the first plane's sizeimage in every G/S/TRY_FMT
    /// answer.
    pub huge_format: bool,
    /// Report 100000 buffers in every REQBUFS answer.
    pub huge_count: bool,
    /// Answer every ENUM_FMT with a format the kernel does not know
    /// (`UNKNOWN_FOURCC`) and an empty description.
    pub unknown_format: bool,
    /// Answer every CLOSE but the first (the driver's check at probe) with
    /// ENOMEM, an errno the driver also meets when it cannot send a CLOSE;
    /// the session is closed all the same.
    pub close_error: bool,
    /// Answer every `every`-th IOCTL with ERESTARTNOINTR (513), an errno
    /// only the kernel may use, instead of its result.
    pub kernel_status: bool,
    /// In every `every`-th DQBUF event, report 4096 bytes more used than
    /// the first plane's length, and (multi-planar) its data starting
    /// 4096 bytes beyond them.
    pub bytesused_overrun: bool,
    /// Report no capabilities: `device_caps` in the device configuration
    /// reads 0.
    pub no_caps: bool,
    pub every: u32,
}

/// V4L2 events `--fault event-flood` queues per session and round.
pub const FLOOD_EVENTS: usize = 8;
/// Events `--fault event-flood` lets wait for eventq buffers at most.
pub const FLOOD_PENDING: usize = 1024;
/// The kernel's "restart the system call, even after a signal handler"
/// (`include/linux/errno.h`), which `--fault kernel-status` reports.
pub const ERESTARTNOINTR: i32 = 513;
/// The sizeimage `--fault huge-format` reports.
pub const HUGE_SIZEIMAGE: u32 = 64 << 20;
/// The buffer count `--fault huge-count` reports.
pub const HUGE_COUNT: u32 = 100_000;
/// The format `--fault unknown-format` reports: "VMZZ", in no kernel's
/// table.
pub const UNKNOWN_FOURCC: u32 = u32::from_le_bytes(*b"VMZZ");

pub const FAULT_DELAY: Duration = Duration::from_millis(500);

/// A command response waiting to be written to the commandq.
pub struct Delayed {
    pub due: Instant,
    pub head: u16,
    pub writable: Vec<(GuestAddress, u32)>,
    pub data: Vec<u8>,
    pub generation: u64,
    /// The used length to report instead of the bytes written (`--fuzz`).
    pub used_len: Option<u32>,
}

impl VirtioMediaPci {
    pub fn new(
        virtio_device_id: u16,
        shm: Arc<Shm>,
        backend: Box<dyn MediaBackend>,
        events: EventQueueHandle,
        mem: SharedGuestMemory,
    ) -> Self {
        let mut msix_bar = vec![0u8; pci::MSIX_BAR_SIZE as usize];
        // Vector control: masked at reset.
        for v in 0..pci::MSIX_VECTORS as usize {
            msix_bar[v * 16 + 12] = 1;
        }
        VirtioMediaPci {
            pci: PciConfigSpace::new(virtio_device_id, shm.size()),
            transport: Transport::new(pci::MSIX_VECTORS),
            mem,
            irqs: Irqs {
                msix: (0..pci::MSIX_VECTORS).map(|_| None).collect(),
                msix_count: vec![0; pci::MSIX_VECTORS as usize],
                ..Default::default()
            },
            backend,
            events,
            shm,
            msix_bar,
            response_delay: Duration::ZERO,
            faults: Faults::default(),
            closes: 0,
            dqbuf_events: 0,
            cmd_counter: 0,
            generation: 0,
            delayed_tx: None,
            stats: None,
            delayed_pending: 0,
            open_sessions: Default::default(),
            fuzz: None,
        }
    }

    pub fn new_guest_memory() -> SharedGuestMemory {
        Arc::new(RwLock::new(GuestMemoryMmap::new()))
    }

    // ---- config space -------------------------------------------------

    pub fn config_read(&self, offset: u64, data: &mut [u8]) {
        self.pci.read(offset, data);
    }

    pub fn config_write(&mut self, offset: u64, data: &[u8]) {
        let was_msix = self.pci.msix_enabled();
        self.pci.write(offset, data);
        if was_msix != self.pci.msix_enabled() {
            log::info!(
                "MSI-X {}",
                if self.pci.msix_enabled() {
                    "enabled"
                } else {
                    "disabled"
                }
            );
        }
    }

    // ---- BAR0 -----------------------------------------------------------

    pub fn bar0_read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let len = data.len() as u64;
        if offset.checked_add(len).is_none_or(|e| e > pci::BAR0_SIZE) {
            log::warn!("BAR0 read out of range: {offset:#x}+{len}");
            return;
        }
        match offset {
            o if (pci::COMMON_OFF..pci::COMMON_OFF + pci::COMMON_LEN).contains(&o) => {
                self.transport.common_read(o - pci::COMMON_OFF, data)
            }
            o if (pci::ISR_OFF..pci::ISR_OFF + 4).contains(&o) => {
                if o == pci::ISR_OFF {
                    data[0] = self.transport.isr_read();
                }
            }
            o if (pci::DEVICE_OFF..pci::DEVICE_OFF + pci::DEVICE_LEN).contains(&o) => {
                let cfg = self.backend.config();
                let bytes: &[u8] = match self.fuzz.as_ref().and_then(|f| f.config()) {
                    Some(fuzzed) => fuzzed,
                    None => cfg.as_ref(),
                };
                let start = (o - pci::DEVICE_OFF) as usize;
                for (i, b) in data.iter_mut().enumerate() {
                    let at = start + i;
                    *b = match bytes.get(at) {
                        // device_caps, the configuration's first field.
                        Some(_) if self.faults.no_caps && at < 4 => 0,
                        Some(&v) => v,
                        None => 0,
                    };
                }
            }
            o if (pci::NOTIFY_OFF..pci::NOTIFY_OFF + pci::NOTIFY_LEN).contains(&o) => {}
            o => log::debug!("BAR0 read of unused offset {o:#x}"),
        }
    }

    pub fn bar0_write(&mut self, offset: u64, data: &[u8]) {
        let len = data.len() as u64;
        if offset.checked_add(len).is_none_or(|e| e > pci::BAR0_SIZE) {
            log::warn!("BAR0 write out of range: {offset:#x}+{len}");
            return;
        }
        match offset {
            o if (pci::COMMON_OFF..pci::COMMON_OFF + pci::COMMON_LEN).contains(&o) => {
                for action in self.transport.common_write(o - pci::COMMON_OFF, data) {
                    self.apply(action);
                }
            }
            o if (pci::NOTIFY_OFF..pci::NOTIFY_OFF + pci::NOTIFY_LEN).contains(&o) => {
                let q = (o - pci::NOTIFY_OFF) / pci::NOTIFY_OFF_MULTIPLIER as u64;
                self.notify(q as usize);
            }
            o => log::debug!("BAR0 write to read-only/unused offset {o:#x} ignored"),
        }
    }

    fn apply(&mut self, action: Action) {
        match action {
            Action::None => {}
            Action::Reset => self.device_reset(),
            Action::DriverOk => {
                if let Some(f) = self.fuzz.as_mut() {
                    f.driver_ok();
                }
                // Events may have been queued before the driver was ready.
                self.notify(COMMANDQ);
                self.flush_events();
            }
            Action::QueueEnabled(q) => log::info!(
                "queue {q} enabled: size {} desc {:#x} avail {:#x} used {:#x} vector {:#x}",
                self.transport.queues[q as usize].size(),
                self.transport.queues[q as usize].desc_table(),
                self.transport.queues[q as usize].avail_ring(),
                self.transport.queues[q as usize].used_ring(),
                self.transport.queue_vectors[q as usize],
            ),
        }
    }

    /// Full device reset: transport state (already reset by the caller or
    /// done here), sessions, MMAP allocations and pending events.
    pub fn device_reset(&mut self) {
        if self.transport.status != 0 {
            self.transport.reset();
        }
        // What a driver left open when it reset the device (the driver
        // resets it when it unbinds): tests read this line.
        let (mappings, bytes) = self.shm.usage();
        log::info!(
            "device reset: {} sessions open, {mappings} MMAP buffers ({bytes} bytes) still allocated",
            self.backend.num_sessions()
        );
        self.open_sessions.clear();
        self.backend.reset();
        self.shm.reset();
        self.events.clear();
        self.generation += 1;
        if let Some(f) = self.fuzz.as_mut() {
            f.reset(self.backend.config().as_ref());
        }
        log::info!("device reset complete");
    }

    // ---- BAR4 (MSI-X) ---------------------------------------------------

    pub fn msix_bar_read(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = offset
                .checked_add(i as u64)
                .and_then(|o| self.msix_bar.get(o as usize))
                .copied()
                .unwrap_or(0);
        }
    }

    pub fn msix_bar_write(&mut self, offset: u64, data: &[u8]) {
        let table_end = pci::MSIX_VECTORS as u64 * 16;
        for (i, &b) in data.iter().enumerate() {
            if let Some(o) = offset.checked_add(i as u64).filter(|o| *o < table_end) {
                self.msix_bar[o as usize] = b;
            }
        }
    }

    // ---- queues ---------------------------------------------------------

    pub fn notify(&mut self, q: usize) {
        log::trace!("notify queue {q}");
        if let Some(st) = self.stats.as_mut() {
            st.record_notification(match q {
                COMMANDQ => "commandq",
                EVENTQ => "eventq",
                _ => "other",
            });
        }
        match q {
            COMMANDQ => self.process_commandq(),
            EVENTQ => {
                self.flood_events();
                self.flush_events()
            }
            _ => log::warn!("notify for nonexistent queue {q}"),
        }
    }

    /// `--fault event-flood`: more events for every open session.
    fn flood_events(&mut self) {
        if !self.faults.event_flood || self.events.len() >= FLOOD_PENDING {
            return;
        }
        for &session in &self.open_sessions {
            for _ in 0..FLOOD_EVENTS {
                self.events.push_raw(source_change_event(session));
            }
        }
    }

    fn queue_usable(&self, q: usize, mem: &GuestMemoryMmap) -> bool {
        let queue = &self.transport.queues[q];
        if !self.transport.driver_ok() || !queue.ready() {
            log::debug!(
                "queue {q} not usable yet (status {:#x}, ready {})",
                self.transport.status,
                queue.ready()
            );
            return false;
        }
        if !queue.is_valid(mem) {
            log::error!("queue {q}: ring addresses not in guest memory");
            return false;
        }
        true
    }

    fn process_commandq(&mut self) {
        let mem = match self.mem.read() {
            Ok(m) => m.clone(),
            Err(_) => return,
        };
        if !self.queue_usable(COMMANDQ, &mem) {
            return;
        }
        let mut used = 0;
        // With --stats: (kind, start) of the commands answered below, timed
        // once their interrupt is raised.
        let mut timed: Vec<(String, Instant)> = Vec::new();
        while let Some(chain) = self.transport.queues[COMMANDQ].pop_descriptor_chain(&mem) {
            if self.faults.silent && self.cmd_counter >= u64::from(self.faults.every) {
                log::warn!(
                    "fault: silent, command (head {}) never answered",
                    chain.head_index()
                );
                continue;
            }
            let started = Instant::now();
            let head = chain.head_index();
            let mut cmd = Vec::new();
            let mut writable: Vec<(GuestAddress, u32)> = Vec::new();
            let mut bad: Option<String> = None;
            for desc in chain {
                if desc.is_write_only() {
                    writable.push((desc.addr(), desc.len()));
                    continue;
                }
                if !writable.is_empty() {
                    bad = Some("device-readable descriptor after a writable one".into());
                    break;
                }
                let len = desc.len() as usize;
                if cmd.len() + len > MAX_CMD_SIZE {
                    bad = Some(format!("command larger than {MAX_CMD_SIZE} bytes"));
                    break;
                }
                let start = cmd.len();
                cmd.resize(start + len, 0);
                if let Err(e) = mem.read_slice(&mut cmd[start..], desc.addr()) {
                    bad = Some(format!("bad descriptor {:#x}+{len:#x}: {e}", desc.addr().0));
                    break;
                }
            }
            let capacity: usize = writable.iter().map(|(_, l)| *l as usize).sum();
            if bad.is_none() {
                if let Some((a, l)) = writable
                    .iter()
                    .find(|(a, l)| !mem.check_range(*a, *l as usize))
                {
                    bad = Some(format!(
                        "writable descriptor {:#x}+{l:#x} outside guest memory",
                        a.0
                    ));
                } else if capacity < 8 && cmd.get(0..4) != Some(&2u32.to_le_bytes()[..]) {
                    // Only CLOSE may go without a response; do not run a
                    // command whose result the driver could never see.
                    bad = Some(format!(
                        "only {capacity} writable bytes, no room for a response"
                    ));
                }
            }
            let mut resp = RespWriter::new(capacity);
            match bad {
                Some(why) => {
                    log::error!("commandq: malformed chain (head {head}): {why}");
                    error_response(&mut resp, libc::EINVAL);
                    if resp.data.is_empty() {
                        log::error!("commandq: no room for the error response");
                    }
                }
                None => {
                    self.backend.handle(&cmd, &mut resp);
                    self.track_sessions(&cmd, &mut resp);
                    self.inject_faults(&cmd, &mut resp);
                }
            }
            let plan = self.fuzz_command(&cmd, &mut resp.data, capacity);
            let mut delay = self.response_delay;
            if self.faults.delay && self.fault_hit() {
                delay += FAULT_DELAY;
            }
            match plan.answer {
                crate::fuzz::Answer::Never => continue,
                crate::fuzz::Answer::After(d) => delay += d,
                crate::fuzz::Answer::Now => {}
            }
            if !delay.is_zero() {
                if let Some(tx) = &self.delayed_tx {
                    log::debug!("commandq: response to chain {head} delayed by {delay:?}");
                    let d = Delayed {
                        due: Instant::now() + delay,
                        head,
                        writable,
                        data: resp.data,
                        generation: self.generation,
                        used_len: plan.used_len,
                    };
                    match tx.send(d) {
                        Ok(()) => {
                            self.delayed_pending += 1;
                            if let Some(st) = self.stats.as_mut() {
                                st.record(crate::stats::kind(&cmd), started.elapsed());
                                st.record_in_flight(self.delayed_pending);
                            }
                            continue;
                        }
                        Err(std::sync::mpsc::SendError(d)) => {
                            log::error!("delay worker gone; answering at once");
                            writable = d.writable;
                            resp.data = d.data;
                        }
                    }
                }
            }
            // The initial event of a VIDIOC_SUBSCRIBE_EVENT is part of the
            // subscription (V4L2 queues it before the ioctl returns): it
            // reaches the eventq before the response. Everything else a
            // command causes (DQBUF events of QBUF or STREAMON) follows
            // the response, below.
            if is_subscribe_event(&cmd) {
                self.flush_events();
            }
            let written = scatter(&mem, &writable, &resp.data);
            used += self.return_chain(COMMANDQ, &mem, head, plan.used_len.unwrap_or(written));
            if self.stats.is_some() {
                timed.push((crate::stats::kind(&cmd), started));
            }
        }
        used += self.fuzz_replay(COMMANDQ, &mem);
        if used > 0 {
            self.signal_queue(COMMANDQ);
        }
        if let Some(st) = self.stats.as_mut() {
            for (kind, started) in timed {
                st.record(kind, started.elapsed());
            }
        }
        self.flood_events();
        self.flush_events();
    }

    /// Follows the sessions the backend opens and closes; with `--fault
    /// dup-session`, answers an OPEN with the id of another open session.
    fn track_sessions(&mut self, cmd: &[u8], resp: &mut RespWriter) {
        match (word(cmd, 0), word(&resp.data, 0)) {
            (Some(1), Some(0)) => {
                let Some(id) = word(&resp.data, 8) else {
                    return;
                };
                let other = self.open_sessions.iter().next().copied();
                match other {
                    Some(other) if self.faults.dup_session => {
                        log::warn!("fault: OPEN answered with session {other}, which is open (new {id} closed)");
                        self.backend.close_session(id);
                        resp.data[8..12].copy_from_slice(&other.to_le_bytes());
                    }
                    _ => {
                        self.open_sessions.insert(id);
                    }
                }
            }
            (Some(2), _) => {
                if let Some(id) = word(cmd, 8) {
                    self.open_sessions.remove(&id);
                }
            }
            _ => {}
        }
    }

    fn fault_hit(&self) -> bool {
        let every = self.faults.every.max(1) as u64;
        self.cmd_counter.is_multiple_of(every)
    }

    fn inject_faults(&mut self, cmd: &[u8], resp: &mut RespWriter) {
        self.cmd_counter += 1;
        let is_close = word(cmd, 0) == Some(2);
        self.closes += u64::from(is_close);
        if self.faults.close_error && is_close && self.closes > 1 {
            log::warn!("fault: CLOSE answered with ENOMEM");
            crate::media::error_response(resp, libc::ENOMEM);
        }
        let status = word(&resp.data, 0);
        if word(cmd, 0) == Some(3) && status == Some(0) {
            let code = word(cmd, 12);
            // G_FMT, S_FMT, TRY_FMT: the first plane's sizeimage is at the
            // same offset for the single- and multi-planar formats.
            if self.faults.huge_format && matches!(code, Some(4 | 5 | 64)) && resp.data.len() >= 40
            {
                log::warn!("fault: sizeimage reported as {HUGE_SIZEIMAGE}");
                resp.data[36..40].copy_from_slice(&HUGE_SIZEIMAGE.to_le_bytes());
            }
            if self.faults.huge_count && code == Some(8) && resp.data.len() >= 12 {
                log::warn!("fault: REQBUFS count reported as {HUGE_COUNT}");
                resp.data[8..12].copy_from_slice(&HUGE_COUNT.to_le_bytes());
            }
            // ENUM_FMT: v4l2_fmtdesc's description at 12..44 and
            // pixelformat at 44..48, after the 8-byte response header.
            if self.faults.unknown_format && code == Some(2) && resp.data.len() >= 56 {
                log::warn!("fault: ENUM_FMT reports {UNKNOWN_FOURCC:#010x}, no description");
                resp.data[20..52].fill(0);
                resp.data[52..56].copy_from_slice(&UNKNOWN_FOURCC.to_le_bytes());
            }
        }
        if !self.fault_hit() {
            return;
        }
        if self.faults.kernel_status && word(cmd, 0) == Some(3) {
            log::warn!("fault: IOCTL answered with ERESTARTNOINTR");
            crate::media::error_response(resp, ERESTARTNOINTR);
        }
        if self.faults.error_event && word(cmd, 0) == Some(3) && status == Some(0) {
            if let Some(session) = word(cmd, 8) {
                log::warn!("fault: ERROR event (EIO) for session {session}, closing it");
                self.backend.close_session(session);
                self.events.push_raw(crate::media::serialize_event(
                    virtio_media::protocol::V4l2Event::Error(
                        virtio_media::protocol::ErrorEvent::new(session, libc::EIO),
                    ),
                ));
            }
        }
        if self.faults.malformed && !resp.data.is_empty() {
            let cut = if status == Some(0) && resp.data.len() > 8 {
                8
            } else {
                4
            };
            log::warn!(
                "fault: response cut from {} to {cut} bytes",
                resp.data.len()
            );
            resp.data.truncate(cut);
        }
    }

    /// `--fuzz`: lets the fuzzer mutate a response, and maybe the
    /// configuration space (raising the configuration-change interrupt).
    fn fuzz_command(
        &mut self,
        cmd: &[u8],
        resp: &mut Vec<u8>,
        capacity: usize,
    ) -> crate::fuzz::CmdPlan {
        let now = crate::fuzz::CmdPlan {
            answer: crate::fuzz::Answer::Now,
            used_len: None,
        };
        let shm_size = self.shm.size();
        let Some(f) = self.fuzz.as_mut() else {
            return now;
        };
        let plan = f.command(cmd, resp, capacity, shm_size);
        if f.maybe_change_config(self.backend.config().as_ref()) {
            self.transport.config_generation = self.transport.config_generation.wrapping_add(1);
            self.signal_config();
        }
        plan
    }

    /// Returns chain `head` of queue `q` with used length `len` (twice in
    /// a row, if the fuzzer says so); the number of used entries added.
    fn return_chain(&mut self, q: usize, mem: &GuestMemoryMmap, head: u16, len: u32) -> usize {
        let twice = self.fuzz.as_mut().and_then(|f| f.twice(q, len));
        let queue = &mut self.transport.queues[q];
        let res = match twice {
            None => queue.add_used(mem, head, len).map(|()| 1),
            Some(second) => add_used_twice(queue, mem, head, len, second).map(|()| 2),
        };
        res.unwrap_or_else(|e| {
            log::error!("queue {q}: add_used failed: {e}");
            0
        })
    }

    /// `--fuzz`: an extra used-ring entry on queue `q` with an id that was
    /// never made available, if the fuzzer wants one. Returns the number
    /// of entries added.
    fn fuzz_replay(&mut self, q: usize, mem: &GuestMemoryMmap) -> usize {
        let size = self.transport.queues[q].size();
        let Some(crate::fuzz::Replay(id, len)) = self.fuzz.as_mut().and_then(|f| f.replay(q, size))
        else {
            return 0;
        };
        let queue = &mut self.transport.queues[q];
        // add_used refuses ids beyond the queue: write the entry by hand.
        let next = queue.next_used();
        let elem = queue.used_ring() + 4 + 8 * (next % size.max(1)) as u64;
        let res = mem
            .write_obj(id, GuestAddress(elem))
            .and_then(|()| mem.write_obj(len, GuestAddress(elem + 4)))
            .and_then(|()| {
                mem.write_obj(next.wrapping_add(1), GuestAddress(queue.used_ring() + 2))
            });
        queue.set_next_used(next.wrapping_add(1));
        match res {
            Ok(()) => 1,
            Err(e) => {
                log::error!("fuzz: extra used entry on queue {q} failed: {e}");
                0
            }
        }
    }

    /// Completes a delayed response (called by the delay worker).
    pub fn complete_delayed(&mut self, d: Delayed) {
        self.delayed_pending = self.delayed_pending.saturating_sub(1);
        if d.generation != self.generation {
            log::debug!("dropping delayed response from before a reset");
            return;
        }
        let mem = match self.mem.read() {
            Ok(m) => m.clone(),
            Err(_) => return,
        };
        if !self.queue_usable(COMMANDQ, &mem) {
            return;
        }
        let written = scatter(&mem, &d.writable, &d.data);
        self.return_chain(COMMANDQ, &mem, d.head, d.used_len.unwrap_or(written));
        self.fuzz_replay(COMMANDQ, &mem);
        self.signal_queue(COMMANDQ);
        self.flush_events();
    }

    /// Writes pending events into the buffers the driver made available on
    /// the eventq. Events that find no buffer stay pending.
    pub fn flush_events(&mut self) {
        if self.events.len() == 0 {
            return;
        }
        let mem = match self.mem.read() {
            Ok(m) => m.clone(),
            Err(_) => return,
        };
        if !self.queue_usable(EVENTQ, &mem) {
            return;
        }
        if let Some(f) = self.fuzz.as_mut() {
            let first = self.events.pop();
            let burst = f.flood(first.as_deref());
            if let Some(first) = first {
                self.events.unpop(first);
            }
            burst.into_iter().for_each(|e| self.events.push_raw(e));
        }
        let mut used = 0;
        // `--fault dqbuf-repeat`: the copy of the DQBUF event just sent, and
        // the buffer set aside for it: an event and its copy go together,
        // so the driver sees the copy before the program can queue the
        // buffer again (the copy would then be a new return to it).
        let mut repeat = None;
        loop {
            let (mut event, chain, is_copy) = match repeat.take() {
                Some((copy, chain)) => (copy, chain, true),
                None => {
                    let Some(event) = self.events.pop() else {
                        break;
                    };
                    let Some(chain) = self.transport.queues[EVENTQ].pop_descriptor_chain(&mem)
                    else {
                        self.events.unpop(event);
                        break;
                    };
                    (event, chain, false)
                }
            };
            let repeats = self.faults.dqbuf_repeat && word(&event, 0) == Some(1) && !is_copy;
            let copy_chain = if repeats {
                match self.transport.queues[EVENTQ].pop_descriptor_chain(&mem) {
                    Some(second) => Some(second),
                    None => {
                        self.transport.queues[EVENTQ].go_to_previous_position();
                        self.events.unpop(event);
                        break;
                    }
                }
            } else {
                None
            };
            let head = chain.head_index();
            let writable: Vec<(GuestAddress, u32)> =
                chain.writable().map(|d| (d.addr(), d.len())).collect();
            let capacity: usize = writable.iter().map(|(_, l)| *l as usize).sum();
            let used_len = self
                .fuzz
                .as_mut()
                .and_then(|f| f.event(&mut event, capacity));
            if self.faults.bytesused_overrun && word(&event, 0) == Some(1) && !is_copy {
                self.dqbuf_events += 1;
                if self
                    .dqbuf_events
                    .is_multiple_of(u64::from(self.faults.every.max(1)))
                {
                    crate::media::overrun_bytesused(&mut event);
                    log::warn!(
                        "fault: {} reports more bytes used than its length",
                        crate::media::describe_event(&event)
                    );
                }
            }
            let written = if capacity < event.len() {
                log::error!(
                    "eventq: buffer of {capacity} bytes too small for a {}-byte event; event dropped",
                    event.len()
                );
                0
            } else {
                scatter(&mem, &writable, &event)
            };
            used += self.return_chain(EVENTQ, &mem, head, used_len.unwrap_or(written));
            if let Some(st) = self.stats.as_mut() {
                st.record_event();
            }
            if let Some(second) = copy_chain {
                log::warn!("fault: {} sent twice", crate::media::describe_event(&event));
                repeat = Some((event, second));
            }
        }
        used += self.fuzz_replay(EVENTQ, &mem);
        if used > 0 {
            log::debug!(
                "eventq: {used} event(s) delivered, {} pending",
                self.events.len()
            );
            self.signal_queue(EVENTQ);
        }
    }

    // ---- interrupts -----------------------------------------------------

    fn msix_active(&self) -> bool {
        self.pci.msix_enabled() || self.irqs.msix.iter().any(|f| f.is_some())
    }

    pub fn signal_queue(&mut self, q: usize) {
        let vector = self.transport.queue_vectors[q];
        self.raise(vector, ISR_QUEUE);
    }

    pub fn signal_config(&mut self) {
        let vector = self.transport.msix_config;
        self.raise(vector, transport::ISR_CONFIG);
    }

    fn raise(&mut self, vector: u16, isr_bit: u8) {
        if self.msix_active() {
            if vector == VIRTIO_MSI_NO_VECTOR {
                return;
            }
            let v = vector as usize;
            if let Some(c) = self.irqs.msix_count.get_mut(v) {
                *c += 1;
            }
            match self.irqs.msix.get_mut(v) {
                Some(Some(f)) => kick(f),
                _ => log::debug!("no eventfd for MSI-X vector {v}"),
            }
        } else {
            self.transport.isr |= isr_bit;
            self.irqs.intx_count += 1;
            if self.pci.intx_disabled() {
                return;
            }
            if let Some(f) = self.irqs.intx.as_mut() {
                kick(f);
            }
        }
    }

    pub fn set_irqs(&mut self, index: u32, flags: u32, start: u32, count: u32, fds: Vec<File>) {
        let action = flags
            & (VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_ACTION_TRIGGER);
        log::debug!(
            "SET_IRQS index {index} flags {flags:#x} start {start} count {count} fds {}",
            fds.len()
        );
        match (index, action) {
            (VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_TRIGGER) => {
                if flags & VFIO_IRQ_SET_DATA_EVENTFD != 0 {
                    self.irqs.intx = fds.into_iter().next();
                } else if count == 0 {
                    self.irqs.intx = None;
                }
            }
            (VFIO_PCI_INTX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_UNMASK) => {
                // Level-triggered semantics: still pending -> assert again.
                if self.transport.isr != 0 && !self.pci.intx_disabled() {
                    if let Some(f) = self.irqs.intx.as_mut() {
                        kick(f);
                    }
                }
            }
            (VFIO_PCI_MSIX_IRQ_INDEX, VFIO_IRQ_SET_ACTION_TRIGGER) => {
                if count == 0 {
                    self.irqs.msix.iter_mut().for_each(|f| *f = None);
                    log::info!("MSI-X eventfds cleared");
                    return;
                }
                let mut fds = fds.into_iter();
                for v in start..start.saturating_add(count) {
                    let fd = if flags & VFIO_IRQ_SET_DATA_EVENTFD != 0 {
                        fds.next()
                    } else {
                        None
                    };
                    match self.irqs.msix.get_mut(v as usize) {
                        Some(slot) => *slot = fd,
                        None => log::warn!("SET_IRQS for MSI-X vector {v} beyond the table"),
                    }
                }
                log::info!(
                    "MSI-X eventfds: {:?}",
                    self.irqs
                        .msix
                        .iter()
                        .map(|f| f.is_some())
                        .collect::<Vec<_>>()
                );
            }
            _ => log::debug!("SET_IRQS index {index} action {action:#x} ignored"),
        }
    }

    // ---- DMA ------------------------------------------------------------

    pub fn dma_map(
        &mut self,
        offset: u64,
        address: u64,
        size: u64,
        fd: Option<File>,
    ) -> std::io::Result<()> {
        let Some(file) = fd else {
            log::warn!("DMA_MAP {address:#x}+{size:#x} without fd: not accessible to the device");
            return Ok(());
        };
        let size_usize =
            usize::try_from(size).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let region = MmapRegion::from_file(FileOffset::new(file, offset), size_usize)
            .map_err(|e| std::io::Error::other(format!("mmap of DMA region failed: {e}")))?;
        let region = GuestRegionMmap::new(region, GuestAddress(address))
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let mut mem = self
            .mem
            .write()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        let new = mem
            .insert_region(Arc::new(region))
            .map_err(|e| std::io::Error::other(format!("DMA_MAP {address:#x}+{size:#x}: {e}")))?;
        *mem = new;
        log::info!("DMA_MAP {address:#x}+{size:#x} (fd offset {offset:#x})");
        Ok(())
    }

    pub fn dma_unmap(&mut self, address: u64, size: u64, all: bool) -> std::io::Result<()> {
        let mut mem = self
            .mem
            .write()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        let end = address.saturating_add(size);
        let victims: Vec<(GuestAddress, u64)> = mem
            .iter()
            .filter(|r| {
                all || (r.start_addr().raw_value() < end && r.last_addr().raw_value() >= address)
            })
            .map(|r| (r.start_addr(), r.len()))
            .collect();
        for (base, len) in victims {
            match mem.remove_region(base, len) {
                Ok((new, _)) => {
                    *mem = new;
                    log::info!("DMA_UNMAP {:#x}+{len:#x}", base.0);
                }
                Err(e) => log::error!("DMA_UNMAP {:#x}: {e}", base.0),
            }
        }
        Ok(())
    }
}

/// Writes `data` across the writable descriptors; returns bytes written.
/// Stops at the first descriptor that is not in guest memory.
pub fn scatter(mem: &GuestMemoryMmap, writable: &[(GuestAddress, u32)], data: &[u8]) -> u32 {
    let mut pos = 0usize;
    for &(addr, len) in writable {
        if pos >= data.len() {
            break;
        }
        let n = (len as usize).min(data.len() - pos);
        if let Err(e) = mem.write_slice(&data[pos..pos + n], addr) {
            log::error!("write of {n} bytes to {:#x} failed: {e}", addr.0);
            break;
        }
        pos += n;
    }
    pos as u32
}

fn word(b: &[u8], o: usize) -> Option<u32> {
    b.get(o..o + 4)
        .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
}

/// A VIRTIO_MEDIA_EVT_EVENT of type V4L2_EVENT_SOURCE_CHANGE (resolution)
/// for `session`.
fn source_change_event(session: u32) -> Vec<u8> {
    let mut event = vec![0u8; 8 + std::mem::size_of::<v4l2r::bindings::v4l2_event>()];
    event[0..4].copy_from_slice(&2u32.to_le_bytes());
    event[4..8].copy_from_slice(&session.to_le_bytes());
    event[8..12].copy_from_slice(&v4l2r::bindings::V4L2_EVENT_SOURCE_CHANGE.to_le_bytes());
    event[16..20].copy_from_slice(&v4l2r::bindings::V4L2_EVENT_SRC_CH_RESOLUTION.to_le_bytes());
    event
}

/// Unused queue handle type re-export for tests.
pub type VirtQueue = Queue;

/// VIRTIO_MEDIA_CMD_IOCTL (3) with code VIDIOC_SUBSCRIBE_EVENT (90):
/// le32 cmd, le32 reserved, le32 session_id, le32 code.
fn is_subscribe_event(cmd: &[u8]) -> bool {
    let word = |o: usize| {
        cmd.get(o..o + 4)
            .map(|x| u32::from_le_bytes([x[0], x[1], x[2], x[3]]))
    };
    word(0) == Some(3)
        && word(12) == Some(virtio_media::protocol::V4l2Ioctl::VIDIOC_SUBSCRIBE_EVENT as u32)
}

/// Adds two used entries for `head` (used lengths `len`, then `second`) and
/// publishes them with one index update, so that the driver sees both or
/// neither (see `Fuzzer::twice`).
pub(crate) fn add_used_twice(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    head: u16,
    len: u32,
    second: u32,
) -> Result<(), virtio_queue::Error> {
    let size = queue.size().max(1);
    let next = queue.next_used();
    for (i, used_len) in [(0u16, len), (1, second)] {
        let elem = queue.used_ring() + 4 + 8 * (next.wrapping_add(i) % size) as u64;
        mem.write_obj(u32::from(head), GuestAddress(elem))
            .and_then(|()| mem.write_obj(used_len, GuestAddress(elem + 4)))
            .map_err(virtio_queue::Error::GuestMemory)?;
    }
    queue.set_next_used(next.wrapping_add(2));
    mem.store(
        next.wrapping_add(2).to_le(),
        GuestAddress(queue.used_ring() + 2),
        std::sync::atomic::Ordering::Release,
    )
    .map_err(virtio_queue::Error::GuestMemory)
}
