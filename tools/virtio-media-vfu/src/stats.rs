// SPDX-License-Identifier: GPL-2.0
//! `--stats PATH`: the device's own time per command, for benchmarks.
//!
//! For every command the device records how long it took from taking the
//! chain off the commandq to having written the response into the used
//! ring and raised the interrupt (for a delayed response: to handing it to
//! the delay worker, so the artificial delay is not counted). That is the
//! device's floor for the command: a guest cannot see its answer sooner.
//! The figures are grouped by command kind (`OPEN`, `CLOSE`, `MMAP`,
//! `MUNMAP`, `IOCTL VIDIOC_G_FMT`, ...) and written as JSON.
//!
//! With delayed responses it also counts, each time a response is handed
//! to the delay worker, how many (itself included) are then waiting: a
//! driver that keeps several commands in flight shows depths above 1.
//!
//! It also counts the driver's notifications per queue and the events
//! sent: every notification is a trap out of the guest, so how many a
//! driver sends per event is a figure of its own.

use std::collections::BTreeMap;
use std::time::Duration;

/// At most this many samples are kept per kind (counts go on).
const MAX_SAMPLES: usize = 1 << 20;

#[derive(Default)]
struct Kind {
    count: u64,
    total_ns: u128,
    samples: Vec<u64>,
}

#[derive(Default)]
pub struct CmdStats {
    kinds: BTreeMap<String, Kind>,
    /// Delayed responses waiting, counted at each enqueue: depth -> times.
    in_flight: BTreeMap<usize, u64>,
    /// Notifications received, per queue name.
    notifications: BTreeMap<&'static str, u64>,
    /// Events written to the eventq.
    events_sent: u64,
}

fn le32(b: &[u8], o: usize) -> Option<u32> {
    b.get(o..o + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

/// The kind of a command: its name, and for IOCTL the ioctl's name.
pub fn kind(cmd: &[u8]) -> String {
    match le32(cmd, 0) {
        Some(1) => "OPEN".into(),
        Some(2) => "CLOSE".into(),
        Some(3) => {
            let code = le32(cmd, 12);
            match code.and_then(virtio_media::protocol::V4l2Ioctl::n) {
                Some(i) => format!("IOCTL {i:?}"),
                None => format!("IOCTL {}", code.map_or("?".into(), |c| c.to_string())),
            }
        }
        Some(4) => "MMAP".into(),
        Some(5) => "MUNMAP".into(),
        Some(c) => format!("unknown {c}"),
        None => "short".into(),
    }
}

/// The `q`-quantile (0..=1) of sorted samples, nearest rank.
fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

impl CmdStats {
    pub fn record(&mut self, kind: String, took: Duration) {
        let ns = took.as_nanos().min(u64::MAX as u128) as u64;
        let k = self.kinds.entry(kind).or_default();
        k.count += 1;
        k.total_ns += ns as u128;
        if k.samples.len() < MAX_SAMPLES {
            k.samples.push(ns);
        }
    }

    /// A delayed response was queued; `depth` are now waiting.
    pub fn record_in_flight(&mut self, depth: usize) {
        *self.in_flight.entry(depth).or_default() += 1;
    }

    /// The driver notified `queue`.
    pub fn record_notification(&mut self, queue: &'static str) {
        *self.notifications.entry(queue).or_default() += 1;
    }

    /// An event went to the driver.
    pub fn record_event(&mut self) {
        self.events_sent += 1;
    }

    pub fn count(&self, kind: &str) -> u64 {
        self.kinds.get(kind).map_or(0, |k| k.count)
    }

    /// `{"unit": "ns", "commands": {KIND: {"count", "min", "p50", "p99",
    /// "max", "mean"}}, "delayed_in_flight": {"max", "at_enqueue":
    /// {DEPTH: TIMES}}, "notifications": {QUEUE: COUNT}, "events_sent"}`.
    pub fn to_json(&self) -> String {
        let mut out = String::from("{\n  \"unit\": \"ns\",\n  \"measured\": ");
        out.push_str(&json_string(
            "device time per command: chain taken off the commandq to response in the used ring and interrupt raised",
        ));
        out.push_str(",\n  \"commands\": {");
        for (i, (name, k)) in self.kinds.iter().enumerate() {
            let mut s = k.samples.clone();
            s.sort_unstable();
            let mean = if k.count == 0 {
                0
            } else {
                (k.total_ns / k.count as u128) as u64
            };
            out.push_str(if i == 0 { "\n" } else { ",\n" });
            out.push_str(&format!(
                "    {}: {{\"count\": {}, \"min\": {}, \"p50\": {}, \"p99\": {}, \"max\": {}, \"mean\": {}}}",
                json_string(name),
                k.count,
                s.first().copied().unwrap_or(0),
                quantile(&s, 0.5),
                quantile(&s, 0.99),
                s.last().copied().unwrap_or(0),
                mean
            ));
        }
        out.push_str("\n  },\n  \"delayed_in_flight\": {\"max\": ");
        out.push_str(
            &self
                .in_flight
                .keys()
                .next_back()
                .copied()
                .unwrap_or(0)
                .to_string(),
        );
        out.push_str(", \"at_enqueue\": {");
        let depths: Vec<String> = self
            .in_flight
            .iter()
            .map(|(d, n)| format!("\"{d}\": {n}"))
            .collect();
        out.push_str(&depths.join(", "));
        out.push_str("}},\n  \"notifications\": {");
        let notified: Vec<String> = self
            .notifications
            .iter()
            .map(|(q, n)| format!("{}: {n}", json_string(q)))
            .collect();
        out.push_str(&notified.join(", "));
        out.push_str(&format!(
            "}},\n  \"events_sent\": {}\n}}\n",
            self.events_sent
        ));
        out
    }

    /// Writes the JSON to `path` (through a temporary file and a rename, so
    /// a reader never sees half a file).
    pub fn write(&self, path: &std::path::Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, self.to_json())?;
        std::fs::rename(&tmp, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[u32]) -> Vec<u8> {
        w.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    #[test]
    fn kinds_name_the_command_and_ioctl() {
        assert_eq!(kind(&words(&[1, 0])), "OPEN");
        assert_eq!(kind(&words(&[2, 0, 1])), "CLOSE");
        assert_eq!(kind(&words(&[3, 0, 1, 4])), "IOCTL VIDIOC_G_FMT");
        assert_eq!(kind(&words(&[3, 0, 1, 0xffff])), "IOCTL 65535");
        assert_eq!(kind(&words(&[4, 0, 1])), "MMAP");
        assert_eq!(kind(&words(&[5])), "MUNMAP");
        assert_eq!(kind(&[1, 0]), "short");
    }

    #[test]
    fn quantiles_and_json() {
        let mut st = CmdStats::default();
        for us in 1..=100u64 {
            st.record("IOCTL VIDIOC_G_FMT".into(), Duration::from_micros(us));
        }
        st.record("OPEN".into(), Duration::from_nanos(7));
        assert_eq!(st.count("IOCTL VIDIOC_G_FMT"), 100);
        let j = st.to_json();
        assert!(j.contains(
            "\"IOCTL VIDIOC_G_FMT\": {\"count\": 100, \"min\": 1000, \"p50\": 50000, \"p99\": 99000, \"max\": 100000, \"mean\": 50500}"
        ), "{j}");
        assert!(j.contains("\"OPEN\": {\"count\": 1, \"min\": 7, \"p50\": 7, \"p99\": 7, \"max\": 7, \"mean\": 7}"), "{j}");
        assert!(
            j.contains("\"delayed_in_flight\": {\"max\": 0, \"at_enqueue\": {}}"),
            "{j}"
        );
        st.record_in_flight(1);
        st.record_in_flight(3);
        st.record_in_flight(1);
        let j = st.to_json();
        assert!(
            j.contains("\"delayed_in_flight\": {\"max\": 3, \"at_enqueue\": {\"1\": 2, \"3\": 1}}"),
            "{j}"
        );
        assert_eq!(quantile(&[], 0.5), 0);
        assert_eq!(json_string("a\"b\\\n"), "\"a\\\"b\\\\\\u000a\"");
    }

    #[test]
    fn notifications_and_events_are_counted() {
        let mut st = CmdStats::default();
        assert!(st
            .to_json()
            .ends_with("\"notifications\": {},\n  \"events_sent\": 0\n}\n"));
        st.record_notification("eventq");
        st.record_notification("commandq");
        st.record_notification("eventq");
        st.record_event();
        let j = st.to_json();
        assert!(
            j.contains(
                "\"notifications\": {\"commandq\": 1, \"eventq\": 2},\n  \"events_sent\": 1"
            ),
            "{j}"
        );
    }
}
