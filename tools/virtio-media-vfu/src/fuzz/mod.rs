// SPDX-License-Identifier: GPL-2.0
//! `--fuzz SEED`: a hostile device.
//!
//! The backends stay honest; this layer sits between them and the
//! transport and lies about what they did: it mutates responses (sizes,
//! fields, errnos, session ids, MMAP offsets and lengths), used lengths,
//! events (types, sizes, sessions, buffer indexes, floods), stays silent,
//! answers late, twice or with an id the driver never gave, and changes the
//! configuration space. It never touches the vfio-user side, so QEMU sees a
//! valid PCI device throughout.
//!
//! Rounds: a device reset that follows DRIVER_OK (the driver unbinding, a
//! module unload) starts the next round, whose seed is SEED + round. Each
//! round draws its own mix of mutation kinds and rates, so one seed may
//! only mangle events and the next only go silent. A round's mutations
//! depend only on its seed and on what the guest sends, so `--fuzz S`
//! with a guest that loads the driver once replays round S - SEED of an
//! earlier run. Every mutation is logged at info level ("fuzz ...").

pub mod fields;
pub mod rng;
#[cfg(test)]
mod tests;

use std::time::Duration;

use fields::{
    Field, CMD_CLOSE, CMD_IOCTL, CMD_MMAP, CMD_OPEN, EVT_DQBUF, EVT_ERROR, EVT_EVENT, HEADER,
};
use rng::Rng;

/// What the fuzzer can do, each with its own rate per round.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A response cut short, or padded with noise to the buffer's end.
    RespSize,
    /// A response payload field set to a boundary value.
    RespField,
    /// The status replaced: another errno, an invalid one, 0 on an error.
    RespErrno,
    /// OPEN answers a session id already in use, or a wild one.
    RespSession,
    /// MMAP answers an address or length outside the region, unaligned,
    /// or overlapping an earlier mapping.
    RespMmap,
    /// The used length of a command differs from what was written.
    UsedLen,
    /// A command is never answered, or several in a row are not.
    Silent,
    /// A response comes late, up to 8 s (past the driver's 5 s timeout),
    /// so responses also complete out of order.
    Late,
    /// A chain is returned twice in a row (both entries published at once),
    /// or an id never made available.
    Twice,
    /// An event's type, session, buffer index, plane count or a buffer
    /// field is changed, or the event is cut short.
    EventField,
    /// An event's used length differs from what was written.
    EventLen,
    /// A burst of duplicated and made-up events.
    EventFlood,
    /// The configuration space changes (at probe, or at run time with a
    /// configuration-change interrupt).
    Config,
}

pub const KINDS: [Kind; 13] = [
    Kind::RespSize,
    Kind::RespField,
    Kind::RespErrno,
    Kind::RespSession,
    Kind::RespMmap,
    Kind::UsedLen,
    Kind::Silent,
    Kind::Late,
    Kind::Twice,
    Kind::EventField,
    Kind::EventLen,
    Kind::EventFlood,
    Kind::Config,
];

impl Kind {
    fn index(self) -> usize {
        KINDS.iter().position(|k| *k == self).unwrap_or(0)
    }

    /// Rates a round may draw, per mille of the occasions (commands,
    /// events). The costly ones (each silent command holds its caller for
    /// the driver's 5 s timeout, a chain returned twice breaks the queue
    /// for the rest of the round) stay rare.
    fn rates(self) -> &'static [u32] {
        match self {
            Kind::RespSize | Kind::RespErrno | Kind::UsedLen => &[0, 0, 10, 40, 100],
            Kind::RespField | Kind::EventField => &[0, 0, 20, 80, 200],
            Kind::RespSession | Kind::RespMmap => &[0, 0, 100, 300],
            Kind::EventLen => &[0, 0, 10, 50],
            Kind::Silent => &[0, 0, 0, 3, 10],
            Kind::Late => &[0, 0, 20, 80],
            Kind::Twice => &[0, 0, 0, 0, 2, 5],
            Kind::EventFlood => &[0, 0, 0, 10, 40],
            Kind::Config => &[0, 0, 0, 5, 20],
        }
    }
}

/// When a command's response reaches the used ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    Now,
    After(Duration),
    Never,
}

/// What to do with one command's response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CmdPlan {
    pub answer: Answer,
    /// The used length to report instead of the bytes written.
    pub used_len: Option<u32>,
}

/// A used-ring entry the device adds on its own: an id the driver never
/// made available (beyond the queue size), and a used length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replay(pub u32, pub u32);

const RECENT: usize = 16;
/// The commands of the driver's probe: OPEN, G_PARM, CLOSE.
const PROBE_COMMANDS: u32 = 3;

pub struct Fuzzer {
    base_seed: u64,
    round: u64,
    rng: Rng,
    rates: [u32; KINDS.len()],
    /// Mutations made, per kind, over all rounds.
    pub counts: [u64; KINDS.len()],
    /// Set by DRIVER_OK: the next reset starts a new round.
    active: bool,
    /// Configuration space bytes replacing the backend's.
    config: Option<Vec<u8>>,
    /// Commands still to swallow in a silence.
    silent_for: u32,
    /// Commands still answered honestly at the start of the round: half
    /// the rounds let the driver's probe (OPEN, G_PARM, CLOSE) through, so
    /// that they reach the programs instead of ending at probe.
    grace: u32,
    /// Session ids the device handed out, MMAP answers.
    sessions: Vec<u32>,
    mmaps: Vec<(u64, u64)>,
    /// Descriptions of every mutation, kept for the tests.
    pub trace: Option<Vec<String>>,
}

impl Fuzzer {
    /// A fuzzer whose first round uses `seed`; `config` is the backend's
    /// configuration space, the base of its mutations.
    pub fn new(seed: u64, config: &[u8]) -> Self {
        let mut f = Fuzzer {
            base_seed: seed,
            round: 0,
            rng: Rng::new(seed),
            rates: [0; KINDS.len()],
            counts: [0; KINDS.len()],
            active: false,
            config: None,
            silent_for: 0,
            grace: 0,
            sessions: Vec::new(),
            mmaps: Vec::new(),
            trace: None,
        };
        f.start_round(config);
        f
    }

    /// The seed of the current round.
    pub fn seed(&self) -> u64 {
        self.base_seed.wrapping_add(self.round)
    }

    fn start_round(&mut self, config: &[u8]) {
        self.rng = Rng::new(self.seed());
        for (i, k) in KINDS.iter().enumerate() {
            self.rates[i] = self.rng.pick(k.rates());
        }
        self.silent_for = 0;
        self.grace = if self.rng.below(2) == 0 {
            PROBE_COMMANDS
        } else {
            0
        };
        self.sessions.clear();
        self.mmaps.clear();
        self.config = None;
        let mix: Vec<String> = KINDS
            .iter()
            .zip(self.rates)
            .filter(|(_, r)| *r > 0)
            .map(|(k, r)| format!("{k:?} {r}"))
            .collect();
        log::info!(
            "fuzz: round {} seed {}: per mille {}{}",
            self.round,
            self.seed(),
            if mix.is_empty() {
                "nothing".to_string()
            } else {
                mix.join(", ")
            },
            if self.grace > 0 {
                "; probe answered honestly"
            } else {
                ""
            }
        );
        // The driver reads the configuration once, at probe: half the
        // rounds that change it do so before.
        if self.rates[Kind::Config.index()] > 0 && self.rng.below(2) == 0 {
            self.mutate_config(config);
        }
    }

    /// DRIVER_OK: the round is in use.
    pub fn driver_ok(&mut self) {
        self.active = true;
    }

    /// A device reset: after DRIVER_OK it ends the round.
    pub fn reset(&mut self, config: &[u8]) {
        if std::mem::take(&mut self.active) {
            self.round += 1;
            self.start_round(config);
        }
    }

    fn hit(&mut self, kind: Kind) -> bool {
        self.rng.per_mille(self.rates[kind.index()])
    }

    fn note(&mut self, kind: Kind, what: String) {
        self.counts[kind.index()] += 1;
        log::info!("fuzz: round {} {kind:?}: {what}", self.round);
        if let Some(t) = self.trace.as_mut() {
            t.push(format!("{kind:?}: {what}"));
        }
    }

    pub fn count(&self, kind: Kind) -> u64 {
        self.counts[kind.index()]
    }

    // ---- configuration space ---------------------------------------------

    /// The configuration space the driver sees, if changed.
    pub fn config(&self) -> Option<&[u8]> {
        self.config.as_deref()
    }

    fn mutate_config(&mut self, base: &[u8]) {
        let mut cfg = self.config.clone().unwrap_or_else(|| base.to_vec());
        let what = match self.rng.below(3) {
            0 => {
                // device_caps: none, all, the other direction, no STREAMING,
                // or noise.
                let caps = fields::le32(&cfg, 0).unwrap_or(0);
                let (bit, noise) = (self.rng.below(32), self.rng.next_u32());
                let v = self.rng.pick(&[
                    0,
                    u32::MAX,
                    0x0000_0001 | 0x0400_0000, // VIDEO_CAPTURE | STREAMING
                    0x0000_0002 | 0x0400_0000, // VIDEO_OUTPUT | STREAMING
                    0x0000_8000 | 0x0400_0000, // VIDEO_M2M | STREAMING
                    0x0000_4000 | 0x0000_1000 | 0x0400_0000,
                    caps & !0x0400_0000,
                    caps ^ (1 << bit),
                    noise,
                ]);
                fields::write(&mut cfg, Field(0, 4), v as u64);
                format!("device_caps {caps:#x} -> {v:#x}")
            }
            1 => {
                let noise = self.rng.next_u32();
                let v = self.rng.pick(&[1, 2, 3, 4, 5, 6, 7, 255, u32::MAX, noise]);
                fields::write(&mut cfg, Field(4, 4), v as u64);
                format!("device_type -> {v}")
            }
            _ => {
                let card = cfg.get_mut(8..40);
                let how = self.rng.below(3);
                if let Some(card) = card {
                    match how {
                        0 => card.fill(b'A'), // no terminating NUL
                        1 => card.fill(0),    // empty
                        _ => card.iter_mut().for_each(|b| *b = 0x80 | (*b & 0x3f)), // not UTF-8
                    }
                }
                format!(
                    "card name {}",
                    ["without NUL", "empty", "not UTF-8"][how as usize]
                )
            }
        };
        self.config = Some(cfg);
        self.note(Kind::Config, what);
    }

    /// Called for each command: true when the configuration changed now
    /// (the device then raises the configuration-change interrupt).
    pub fn maybe_change_config(&mut self, base: &[u8]) -> bool {
        if !self.hit(Kind::Config) {
            return false;
        }
        self.mutate_config(base);
        true
    }

    // ---- commands ---------------------------------------------------------

    /// Mutates the response `resp` (at most `capacity` bytes) to `cmd` and
    /// says when and how it is returned. `shm_size` is the size of the
    /// shared-memory region (0 without one).
    pub fn command(
        &mut self,
        cmd: &[u8],
        resp: &mut Vec<u8>,
        capacity: usize,
        shm_size: u64,
    ) -> CmdPlan {
        let code = fields::le32(cmd, 0).unwrap_or(0);
        let status = fields::le32(resp, 0);
        if code == CMD_OPEN && status == Some(0) {
            if let Some(id) = fields::le32(resp, 8) {
                remember(&mut self.sessions, id);
            }
        }
        let honest = CmdPlan {
            answer: Answer::Now,
            used_len: None,
        };
        if self.grace > 0 {
            self.grace -= 1;
            return honest;
        }
        let name = describe(cmd);

        if code == CMD_OPEN && status == Some(0) && resp.len() >= 12 && self.hit(Kind::RespSession)
        {
            let old = fields::le32(resp, 8).unwrap_or(0);
            let v = match self.rng.below(3) {
                0 if !self.sessions.is_empty() => self.rng.pick(&self.sessions),
                0 | 1 => self.rng.pick(&[0, 1, u32::MAX, 0x8000_0000]),
                _ => self.rng.next_u32(),
            };
            fields::write(resp, Field(8, 4), v as u64);
            self.note(Kind::RespSession, format!("{name}: session {old} -> {v}"));
        }
        if code == CMD_MMAP && status == Some(0) && resp.len() >= 24 && self.hit(Kind::RespMmap) {
            self.mutate_mmap(&name, resp, shm_size);
        }
        if code == CMD_MMAP && status == Some(0) {
            if let (Some(a), Some(l)) = (
                fields::read(resp, Field(8, 8)),
                fields::read(resp, Field(16, 8)),
            ) {
                remember(&mut self.mmaps, (a, l));
            }
        }
        if code == CMD_IOCTL
            && status == Some(0)
            && resp.len() > HEADER
            && self.hit(Kind::RespField)
        {
            let nr = fields::le32(cmd, 12).unwrap_or(0);
            self.mutate_field(&name, nr, resp);
        }
        if !resp.is_empty() && self.hit(Kind::RespErrno) {
            self.mutate_errno(&name, resp);
        }
        if (!resp.is_empty() || code == CMD_CLOSE) && self.hit(Kind::RespSize) {
            self.mutate_size(&name, resp, capacity);
        }

        let mut plan = honest;
        if self.hit(Kind::UsedLen) {
            let v = self.used_len_value(resp.len(), capacity);
            self.note(
                Kind::UsedLen,
                format!("{name}: used length {} -> {v}", resp.len()),
            );
            plan.used_len = Some(v);
        }
        if self.silent_for > 0 {
            self.silent_for -= 1;
            plan.answer = self.silent_answer(&name);
        } else if self.hit(Kind::Silent) {
            if self.rng.below(4) == 0 {
                self.silent_for = self.rng.range(2, 8) as u32;
                self.note(
                    Kind::Silent,
                    format!("silence for {} more commands", self.silent_for),
                );
            }
            plan.answer = self.silent_answer(&name);
        } else if self.hit(Kind::Late) {
            let ms = match self.rng.below(10) {
                0..=6 => self.rng.range(1, 300),
                7 | 8 => self.rng.range(300, 3000),
                _ => self.rng.range(5000, 8000),
            };
            self.note(Kind::Late, format!("{name}: answered after {ms} ms"));
            plan.answer = Answer::After(Duration::from_millis(ms));
        }
        plan
    }

    fn silent_answer(&mut self, name: &str) -> Answer {
        // Most silent commands are lost; some come back after the driver
        // gave up on them.
        if self.rng.below(3) == 0 {
            let ms = self.rng.range(5500, 7000);
            self.note(
                Kind::Silent,
                format!("{name}: silent, answered after {ms} ms"),
            );
            Answer::After(Duration::from_millis(ms))
        } else {
            self.note(Kind::Silent, format!("{name}: never answered"));
            Answer::Never
        }
    }

    fn mutate_mmap(&mut self, name: &str, resp: &mut [u8], shm_size: u64) {
        let addr = fields::read(resp, Field(8, 8)).unwrap_or(0);
        let len = fields::read(resp, Field(16, 8)).unwrap_or(0);
        let earlier = self.mmaps.first().copied();
        let (new_addr, new_len) = match self.rng.below(9) {
            0 => (shm_size, len),                                 // just past the region
            1 => (shm_size.saturating_sub(4096), len.max(8192)),  // runs past the end
            2 => (addr | self.rng.pick(&[1, 0x800, 0xfff]), len), // unaligned
            3 => (!0xfff_u64, len),                               // wraps around
            4 => earlier.map_or((0, len), |(a, _)| (a, len)),     // overlaps an earlier one
            5 => (addr, self.rng.pick(&[0, 1, 4095])),            // empty or tiny
            6 => (addr, self.rng.pick(&[shm_size + 4096, u64::MAX, 1 << 40])),
            7 => (addr.wrapping_add(4096), len), // overlaps the next one
            _ => (self.rng.next_u64(), self.rng.next_u64()),
        };
        fields::write(resp, Field(8, 8), new_addr);
        fields::write(resp, Field(16, 8), new_len);
        self.note(
            Kind::RespMmap,
            format!("{name}: addr {addr:#x}+{len:#x} -> {new_addr:#x}+{new_len:#x}"),
        );
    }

    fn mutate_field(&mut self, name: &str, nr: u32, resp: &mut [u8]) {
        let payload_len = resp.len() - HEADER;
        let known = fields::ioctl_fields(nr, payload_len);
        let field = if !known.is_empty() && self.rng.below(4) != 0 {
            self.rng.pick(&known)
        } else {
            let words = payload_len / 4;
            if words == 0 {
                Field(self.rng.below(payload_len as u64) as usize, 1)
            } else {
                Field(4 * self.rng.below(words as u64) as usize, 4)
            }
        };
        let at = Field(HEADER + field.0, field.1);
        let old = fields::read(resp, at).unwrap_or(0);
        let v = fields::boundary_value(&mut self.rng, field.1, old);
        fields::write(resp, at, v);
        self.note(
            Kind::RespField,
            format!(
                "{name}: payload bytes {}..{}: {old:#x} -> {v:#x}",
                field.0,
                field.0 + field.1
            ),
        );
    }

    fn mutate_errno(&mut self, name: &str, resp: &mut Vec<u8>) {
        let old = fields::le32(resp, 0).unwrap_or(0);
        let v = match self.rng.below(4) {
            0 => self.rng.range(1, 133) as u32,
            1 => self.rng.pick(&[
                libc::EIO,
                libc::ENOTTY,
                libc::EAGAIN,
                libc::EINTR,
                libc::ENODEV,
                libc::EPIPE,
            ]) as u32,
            // Not errnos: zero, the kernel's own codes (ERESTARTSYS,
            // ERESTARTNOINTR, ENOIOCTLCMD, EPROBE_DEFER), out of range.
            2 => self.rng.pick(&[
                0,
                512,
                513,
                515,
                517,
                4095,
                4096,
                0x7fff_ffff,
                0x8000_0000,
                u32::MAX,
            ]),
            _ => 0,
        };
        if resp.len() < 4 {
            resp.resize(4, 0);
        }
        fields::write(resp, Field(0, 4), v as u64);
        self.note(Kind::RespErrno, format!("{name}: status {old} -> {v}"));
    }

    fn mutate_size(&mut self, name: &str, resp: &mut Vec<u8>, capacity: usize) {
        let old = resp.len();
        let new = if capacity > old && self.rng.below(3) == 0 {
            // Padded with noise up to the room there is.
            self.rng.range(old as u64 + 1, capacity as u64) as usize
        } else {
            let shrunk = [
                0,
                1,
                4,
                7,
                8,
                old.saturating_sub(1),
                old / 2,
                self.rng.below(old as u64 + 1) as usize,
            ];
            self.rng.pick(&shrunk).min(old)
        };
        while resp.len() < new {
            resp.push(self.rng.next_u32() as u8);
        }
        resp.truncate(new);
        self.note(
            Kind::RespSize,
            format!("{name}: response {old} -> {new} bytes"),
        );
    }

    fn used_len_value(&mut self, written: usize, capacity: usize) -> u32 {
        let w = u32::try_from(written).unwrap_or(u32::MAX);
        let c = u32::try_from(capacity).unwrap_or(u32::MAX);
        let noise = self.rng.next_u32();
        self.rng.pick(&[
            0,
            1,
            w.saturating_sub(1),
            w.saturating_add(1),
            c,
            c.saturating_add(1),
            c.saturating_add(4096),
            u32::MAX,
            noise,
        ])
    }

    // ---- used ring ----------------------------------------------------------

    /// A chain of queue `q` is about to be returned with used length
    /// `len`: the used length of a second entry for it, right behind the
    /// first, if the fuzzer wants the chain returned twice.
    ///
    /// Only twice in a row, published together: a driver that saw the
    /// first entry alone could give the id to another chain before the
    /// second arrives, take the second for that chain's answer and free
    /// memory the device then writes. No driver can tell such an entry
    /// from a real answer; only an IOMMU or bounce buffers contain it (a
    /// device-fuzz run found it as KASAN quarantine corruption).
    pub fn twice(&mut self, q: usize, len: u32) -> Option<u32> {
        if !self.hit(Kind::Twice) || self.rng.below(4) == 0 {
            return None;
        }
        let second = self.rng.pick(&[len, 0, len.wrapping_add(1)]);
        self.note(
            Kind::Twice,
            format!("queue {q}: chain returned twice (used length {len}, then {second})"),
        );
        Some(second)
    }

    /// An extra used-ring entry with an id never made available, for queue
    /// `q` of `size` entries, if the fuzzer wants one now.
    pub fn replay(&mut self, q: usize, size: u16) -> Option<Replay> {
        if !self.hit(Kind::Twice) {
            return None;
        }
        let noise = self.rng.next_u32();
        let id = self
            .rng
            .pick(&[size as u32, size as u32 + 1, 0xffff, u32::MAX, noise]);
        let r = Replay(id.max(size as u32), self.rng.below(4096) as u32);
        self.note(Kind::Twice, format!("queue {q}: extra used entry {r:?}"));
        Some(r)
    }

    // ---- events -------------------------------------------------------------

    /// Mutates one event about to be written; returns the used length to
    /// report instead of the bytes written, if any.
    pub fn event(&mut self, ev: &mut Vec<u8>, capacity: usize) -> Option<u32> {
        if self.hit(Kind::EventField) {
            self.mutate_event(ev);
        }
        if self.hit(Kind::EventLen) {
            let v = self.used_len_value(ev.len(), capacity);
            self.note(
                Kind::EventLen,
                format!("event used length {} -> {v}", ev.len()),
            );
            return Some(v);
        }
        None
    }

    fn mutate_event(&mut self, ev: &mut Vec<u8>) {
        let ty = fields::le32(ev, 0).unwrap_or(u32::MAX);
        let what = match self.rng.below(6) {
            0 => {
                let v = self
                    .rng
                    .pick(&[EVT_ERROR, EVT_DQBUF, EVT_EVENT, 3, u32::MAX]);
                fields::write(ev, Field(0, 4), v as u64);
                format!("type {ty} -> {v}")
            }
            1 => {
                let old = fields::le32(ev, 4).unwrap_or(0);
                let v = match self.rng.below(3) {
                    0 if !self.sessions.is_empty() => self.rng.pick(&self.sessions),
                    0 | 1 => old.wrapping_add(1),
                    _ => {
                        let noise = self.rng.next_u32();
                        self.rng.pick(&[0, u32::MAX, noise])
                    }
                };
                fields::write(ev, Field(4, 4), v as u64);
                format!("type {ty}: session {old} -> {v}")
            }
            2 => {
                let old = ev.len();
                let new = self
                    .rng
                    .pick(&[0, 4, 8, 12, HEADER + 4, old / 2, old.saturating_sub(1)])
                    .min(old);
                ev.truncate(new);
                format!("type {ty}: cut from {old} to {new} bytes")
            }
            _ => {
                let known = match ty {
                    EVT_DQBUF => fields::dqbuf_event_fields(),
                    EVT_EVENT => fields::v4l2_event_fields(),
                    _ => vec![Field(8, 4)],
                };
                let f = self.rng.pick(&known);
                let old = fields::read(ev, f).unwrap_or(0);
                let v = fields::boundary_value(&mut self.rng, f.1, old);
                fields::write(ev, f, v);
                format!(
                    "type {ty}: bytes {}..{}: {old:#x} -> {v:#x}",
                    f.0,
                    f.0 + f.1
                )
            }
        };
        self.note(Kind::EventField, what);
    }

    /// Events made up for this flush of the eventq (a burst of copies of
    /// `last`, the last real event, and of invented ones), if any.
    pub fn flood(&mut self, last: Option<&[u8]>) -> Vec<Vec<u8>> {
        if !self.hit(Kind::EventFlood) {
            return Vec::new();
        }
        let n = self.rng.pick(&[2, 8, 64, 300]);
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let session = if self.sessions.is_empty() {
                0
            } else {
                self.rng.pick(&self.sessions)
            };
            let ev = match (self.rng.below(4), last) {
                (0, Some(last)) => last.to_vec(),
                (0 | 1, _) => {
                    let mut e = vec![0u8; fields::DQBUF_EVENT_SIZE];
                    fields::write(&mut e, Field(0, 4), EVT_DQBUF as u64);
                    fields::write(&mut e, Field(4, 4), session as u64);
                    fields::write(&mut e, Field(HEADER, 4), self.rng.below(34)); // index
                    fields::write(
                        &mut e,
                        Field(HEADER + 4, 4),
                        self.rng.pick(&[1, 2, 9, 10, 0x80]),
                    ); // type
                    fields::write(&mut e, Field(HEADER + 60, 4), self.rng.range(1, 4)); // memory
                    fields::write(&mut e, Field(HEADER + 72, 4), self.rng.below(10)); // length
                    e
                }
                (2, _) => {
                    let mut e = vec![0u8; fields::EVENT_EVENT_SIZE];
                    fields::write(&mut e, Field(0, 4), EVT_EVENT as u64);
                    fields::write(&mut e, Field(4, 4), session as u64);
                    fields::write(&mut e, Field(HEADER, 4), self.rng.range(1, 6)); // V4L2_EVENT_*
                    e
                }
                _ => {
                    let mut e = vec![0u8; fields::ERROR_EVENT_SIZE];
                    fields::write(&mut e, Field(4, 4), session as u64);
                    fields::write(
                        &mut e,
                        Field(8, 4),
                        self.rng.pick(&[libc::EIO as u64, 0, 0xffff_ffff]),
                    );
                    e
                }
            };
            out.push(ev);
        }
        self.note(Kind::EventFlood, format!("{n} extra events"));
        out
    }
}

fn remember<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if !list.contains(&item) {
        if list.len() == RECENT {
            list.remove(0);
        }
        list.push(item);
    }
}

/// Short name of a command for the log.
fn describe(cmd: &[u8]) -> String {
    match fields::le32(cmd, 0) {
        Some(CMD_OPEN) => "OPEN".into(),
        Some(CMD_CLOSE) => "CLOSE".into(),
        Some(CMD_IOCTL) => {
            let nr = fields::le32(cmd, 12).unwrap_or(0);
            match virtio_media::protocol::V4l2Ioctl::n(nr) {
                Some(ioctl) => format!("{ioctl:?}"),
                None => format!("IOCTL {nr}"),
            }
        }
        Some(CMD_MMAP) => "MMAP".into(),
        Some(c) => format!("command {c}"),
        None => "short command".into(),
    }
}
