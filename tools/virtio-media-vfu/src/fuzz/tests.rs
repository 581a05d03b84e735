// SPDX-License-Identifier: GPL-2.0
//! The fuzzer is deterministic for a seed, makes every kind of mutation,
//! and, inside the device, never writes outside the buffers the driver
//! gave it nor panics.

use super::*;
use crate::tests::{cmd_hdr, ioctl_cmd, v4l2_buffer, Harness};
use vm_memory::{Bytes, GuestAddress};

const CONFIG: [u8; 40] = [0x11; 40];

/// A made-up guest: `n` commands and their honest responses, and events,
/// in a fixed order. Returns what the fuzzer did and the bytes it sent.
fn drive(f: &mut Fuzzer, n: usize) -> Vec<String> {
    f.trace = Some(Vec::new());
    let mut out = Vec::new();
    f.driver_ok();
    for i in 0..n {
        let (cmd, mut resp, cap) = match i % 6 {
            0 => (
                cmd_hdr(CMD_OPEN),
                [vec![0; 8], (i as u32).to_le_bytes().to_vec(), vec![0; 4]].concat(),
                16,
            ),
            1 => (ioctl_cmd(1, 4, &[0; 208]), vec![0; 8 + 208], 8 + 208),
            2 => (
                ioctl_cmd(1, 15, &v4l2_buffer(0, 1)),
                vec![0; 8 + 88 + 64],
                8 + 88 + 64,
            ),
            3 => {
                let mut r = vec![0u8; 24];
                r[8..16].copy_from_slice(&(0x10000 * i as u64).to_le_bytes());
                r[16..24].copy_from_slice(&0x4000u64.to_le_bytes());
                (cmd_hdr(CMD_MMAP), r, 24)
            }
            4 => (
                ioctl_cmd(1, 8, &[0; 20]),
                [22u32.to_le_bytes().to_vec(), vec![0; 4]].concat(),
                28,
            ),
            _ => (cmd_hdr(CMD_CLOSE), vec![], 8),
        };
        let plan = f.command(&cmd, &mut resp, cap, 1 << 20);
        let twice = f.twice(0, resp.len() as u32);
        out.push(format!("{plan:?} {resp:?} {twice:?} {:?}", f.replay(0, 16)));
        let mut ev = vec![0u8; fields::DQBUF_EVENT_SIZE];
        ev[0] = EVT_DQBUF as u8;
        let used = f.event(&mut ev, 1024);
        let burst = f.flood(Some(&ev));
        out.push(format!("{used:?} {ev:?} {}", burst.len()));
        if f.maybe_change_config(&CONFIG) {
            out.push(format!("config {:?}", f.config()));
        }
    }
    out.extend(f.trace.take().unwrap_or_default());
    out
}

#[test]
fn same_seed_same_mutations() {
    let a = drive(&mut Fuzzer::new(42, &CONFIG), 3000);
    let b = drive(&mut Fuzzer::new(42, &CONFIG), 3000);
    assert_eq!(a, b);
    // A seed that mutates nothing is possible; these do mutate.
    let c = drive(&mut Fuzzer::new(43, &CONFIG), 3000);
    assert_ne!(a, c, "another seed, other mutations");
}

/// Round k of base seed S replays as round 0 of seed S + k: a seed found
/// in a long run can be run alone.
#[test]
fn a_later_round_replays_as_its_own_seed() {
    let mut long = Fuzzer::new(100, &CONFIG);
    drive(&mut long, 500);
    long.reset(&CONFIG);
    drive(&mut long, 200);
    long.reset(&CONFIG);
    assert_eq!(long.seed(), 102);
    let mut alone = Fuzzer::new(102, &CONFIG);
    assert_eq!(
        long.config(),
        alone.config(),
        "the same probe-time configuration"
    );
    assert_eq!(drive(&mut long, 1000), drive(&mut alone, 1000));
}

#[test]
fn resets_before_driver_ok_keep_the_round() {
    let mut f = Fuzzer::new(7, &CONFIG);
    f.reset(&CONFIG);
    f.reset(&CONFIG);
    assert_eq!(f.seed(), 7, "no DRIVER_OK yet: same round");
    f.driver_ok();
    f.reset(&CONFIG);
    assert_eq!(f.seed(), 8);
    f.reset(&CONFIG);
    assert_eq!(f.seed(), 8);
}

#[test]
fn every_kind_of_mutation_happens() {
    let mut totals = [0u64; KINDS.len()];
    for seed in 0..64 {
        let mut f = Fuzzer::new(seed, &CONFIG);
        drive(&mut f, 1500);
        for (t, c) in totals.iter_mut().zip(f.counts) {
            *t += c;
        }
    }
    for (k, t) in KINDS.iter().zip(totals) {
        assert!(t > 0, "{k:?} never happened");
    }
}

#[test]
fn rounds_differ_in_their_mix() {
    let mixes: std::collections::HashSet<Vec<u32>> = (0..32)
        .map(|s| Fuzzer::new(s, &CONFIG).rates.to_vec())
        .collect();
    assert!(
        mixes.len() > 16,
        "only {} distinct mixes in 32 seeds",
        mixes.len()
    );
    assert!(
        (0..32).any(|s| Fuzzer::new(s, &CONFIG).rates[Kind::Silent.index()] == 0),
        "some rounds are never silent"
    );
}

#[test]
fn responses_never_outgrow_their_buffer() {
    for seed in 0..32 {
        let mut f = Fuzzer::new(seed, &CONFIG);
        f.driver_ok();
        for cap in [0usize, 4, 8, 16, 216, 4096] {
            for _ in 0..200 {
                let mut resp = vec![0u8; cap.min(16)];
                f.command(&ioctl_cmd(1, 4, &[0; 208]), &mut resp, cap, 4096);
                assert!(
                    resp.len() <= cap.max(4),
                    "seed {seed}: {} bytes in {cap}",
                    resp.len()
                );
            }
        }
    }
}

/// The whole device with the fuzzer on: thousands of commands and events
/// through both rings. The device must not panic, and must not write past
/// any buffer the driver gave it (canaries after each one stay intact).
#[test]
fn hostile_device_writes_only_into_given_buffers() {
    const CANARY: u8 = 0x5a;
    for seed in [1u64, 2, 3, 5, 8, 13] {
        let mut h = Harness::with_backend("capture", true);
        let cfg = h.dev.backend.config().as_ref().to_vec();
        let mut f = Fuzzer::new(seed, &cfg);
        f.driver_ok();
        // Rates high enough that every path runs in a short test.
        f.rates = [200; KINDS.len()];
        f.rates[Kind::Silent.index()] = 50;
        f.rates[Kind::EventFlood.index()] = 20;
        h.dev.fuzz = Some(f);
        let (tx, _rx) = std::sync::mpsc::channel();
        h.dev.delayed_tx = Some(tx);
        let mut canaries = vec![];
        // Event buffers the device holds: a few at a time, like a driver.
        let mut posted = 0usize;
        for i in 0..600u32 {
            let cmd = match i % 4 {
                0 => cmd_hdr(CMD_OPEN),
                1 => ioctl_cmd(i / 4, 4, &{
                    let mut f = vec![0u8; 208];
                    f[0] = 9;
                    f
                }),
                2 => ioctl_cmd(
                    i / 4,
                    8,
                    &[1, 0, 0, 0, 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                ),
                _ => ioctl_cmd(i / 4, 15, &[v4l2_buffer(0, 1), vec![0; 64]].concat()),
            };
            let resp_len = [16u32, 8 + 208, 28, 8 + 88 + 64][(i % 4) as usize];
            let c = h.alloc(cmd.len());
            h.mem.write_slice(&cmd, GuestAddress(c)).unwrap();
            let r = h.alloc(resp_len as usize + 32);
            h.mem
                .write_slice(&vec![CANARY; resp_len as usize + 32], GuestAddress(r))
                .unwrap();
            canaries.push((r + resp_len as u64, 32usize));
            h.add_chain(0, &[(c, cmd.len() as u32, false), (r, resp_len, true)]);
            h.notify(0);
            // Events as a streaming backend would send them.
            let mut ev = vec![0u8; fields::DQBUF_EVENT_SIZE];
            ev[0] = EVT_DQBUF as u8;
            ev[4] = (i / 4) as u8;
            h.dev.events.push_raw(ev);
            if posted < 8 {
                let (_, a) = h.add_event_buffer(fields::DQBUF_EVENT_SIZE as u32);
                h.mem
                    .write_slice(
                        &[CANARY; 32],
                        GuestAddress(a + fields::DQBUF_EVENT_SIZE as u64),
                    )
                    .unwrap();
                canaries.push((a + fields::DQBUF_EVENT_SIZE as u64, 32));
                posted += 1;
            }
            h.notify(1);
            let _ = h.used(0);
            posted = posted.saturating_sub(h.used(1).len());
            if i % 150 == 149 {
                // A new round, as when the driver is reloaded.
                h.w(crate::transport::reg::DEVICE_STATUS, &[0]);
                h.init_driver(true);
                posted = 0;
            }
        }
        for (at, len) in canaries {
            let mut b = vec![0u8; len];
            h.mem.read_slice(&mut b, GuestAddress(at)).unwrap();
            assert!(
                b.iter().all(|&x| x == CANARY),
                "seed {seed}: bytes past a buffer at {at:#x} written"
            );
        }
        let f = h.dev.fuzz.as_ref().unwrap();
        assert!(f.seed() > seed, "resets after DRIVER_OK started new rounds");
        assert!(
            f.count(Kind::RespField) > 0,
            "seed {seed}: no response field mutated"
        );
        assert!(
            f.count(Kind::EventField) > 0,
            "seed {seed}: no event mutated"
        );
    }
}

/// A configuration change reaches the driver: BAR0 shows the new values,
/// `config_generation` moves and the configuration vector fires.
#[test]
fn config_changes_raise_the_config_interrupt() {
    let mut h = Harness::with_backend("capture", true);
    let cfg = h.dev.backend.config().as_ref().to_vec();
    let mut f = Fuzzer::new(3, &cfg);
    f.driver_ok();
    f.rates = [0; KINDS.len()];
    f.rates[Kind::Config.index()] = 1000;
    h.dev.fuzz = Some(f);
    let (generation, config_irqs) = (h.dev.transport.config_generation, h.dev.irqs.msix_count[0]);
    h.open();
    assert_eq!(
        h.dev.transport.config_generation,
        generation.wrapping_add(1)
    );
    assert_eq!(
        h.dev.irqs.msix_count[0],
        config_irqs + 1,
        "configuration vector 0 raised"
    );
    let mut seen = vec![0u8; 40];
    h.dev.bar0_read(crate::pci::DEVICE_OFF, &mut seen);
    assert_eq!(Some(&seen[..]), h.dev.fuzz.as_ref().unwrap().config());
    assert_ne!(seen, cfg, "the driver reads the changed configuration");
}
