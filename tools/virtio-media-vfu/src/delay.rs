// SPDX-License-Identifier: GPL-2.0
//! Delayed command responses (`--response-delay-ms`, `--fault delay`),
//! completed in the order their delays end rather than the order their
//! commands arrived: a command of one session whose delay ends first is
//! answered first, whatever other sessions still wait for.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use crate::device::Delayed;

struct Entry {
    due: Instant,
    /// Arrival order: responses due at the same instant keep it.
    seq: u64,
    d: Delayed,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// Pending responses ordered by due time (earliest first, then arrival).
#[derive(Default)]
pub struct DueQueue {
    heap: BinaryHeap<Reverse<Entry>>,
    seq: u64,
}

impl DueQueue {
    pub fn push(&mut self, d: Delayed) {
        self.seq += 1;
        self.heap.push(Reverse(Entry {
            due: d.due,
            seq: self.seq,
            d,
        }));
    }

    /// When the earliest pending response is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse(e)| e.due)
    }

    /// The earliest pending response if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Delayed> {
        if self.next_due()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse(e)| e.d)
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

/// The delay worker: takes responses from `rx` and hands each to
/// `complete` once it is due, earliest due first. Returns when `complete`
/// returns false, or when `rx` is closed and every pending response has
/// been completed.
pub fn run_worker(rx: Receiver<Delayed>, mut complete: impl FnMut(Delayed) -> bool) {
    let mut q = DueQueue::default();
    let mut open = true;
    loop {
        while let Some(d) = q.pop_due(Instant::now()) {
            if !complete(d) {
                return;
            }
        }
        let next = q.next_due();
        if !open {
            match next {
                Some(due) => std::thread::sleep(due.saturating_duration_since(Instant::now())),
                None => return,
            }
            continue;
        }
        let msg = match next {
            Some(due) => rx.recv_timeout(due.saturating_duration_since(Instant::now())),
            None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match msg {
            Ok(d) => q.push(d),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => open = false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn delayed(due: Instant, head: u16) -> Delayed {
        Delayed {
            due,
            head,
            writable: vec![],
            data: vec![],
            generation: 0,
            used_len: None,
        }
    }

    #[test]
    fn due_queue_orders_by_due_time_then_arrival() {
        let t = Instant::now();
        let mut q = DueQueue::default();
        q.push(delayed(t + Duration::from_millis(30), 1));
        q.push(delayed(t + Duration::from_millis(10), 2));
        q.push(delayed(t + Duration::from_millis(20), 3));
        q.push(delayed(t + Duration::from_millis(10), 4));
        assert_eq!(q.next_due(), Some(t + Duration::from_millis(10)));
        assert!(q.pop_due(t).is_none(), "nothing due yet");
        let heads: Vec<u16> =
            std::iter::from_fn(|| q.pop_due(t + Duration::from_millis(30)).map(|d| d.head))
                .collect();
        assert_eq!(heads, vec![2, 4, 3, 1]);
        assert!(q.is_empty());
    }

    #[test]
    fn due_queue_pops_only_what_is_due() {
        let t = Instant::now();
        let mut q = DueQueue::default();
        q.push(delayed(t + Duration::from_millis(5), 1));
        q.push(delayed(t + Duration::from_millis(50), 2));
        assert_eq!(
            q.pop_due(t + Duration::from_millis(10)).map(|d| d.head),
            Some(1)
        );
        assert!(q.pop_due(t + Duration::from_millis(10)).is_none());
        assert_eq!(q.len(), 1);
    }

    /// A response queued after a long-delayed one, but due earlier, is
    /// completed first and on time, not behind it.
    #[test]
    fn worker_completes_in_due_order_not_queue_order() {
        let (tx, rx) = std::sync::mpsc::channel::<Delayed>();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<(u16, Instant)>();
        let worker = std::thread::spawn(move || {
            run_worker(rx, |d| done_tx.send((d.head, Instant::now())).is_ok());
        });
        let t0 = Instant::now();
        tx.send(delayed(t0 + Duration::from_millis(400), 1))
            .unwrap();
        tx.send(delayed(t0 + Duration::from_millis(20), 2)).unwrap();
        tx.send(delayed(t0 + Duration::from_millis(100), 3))
            .unwrap();
        let (first, at) = done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(first, 2);
        assert!(at >= t0 + Duration::from_millis(20));
        assert!(
            at < t0 + Duration::from_millis(300),
            "completed after {:?}, not behind head 1",
            at - t0
        );
        let (second, at) = done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(second, 3);
        assert!(
            at < t0 + Duration::from_millis(380),
            "completed after {:?}",
            at - t0
        );
        // Closing the channel still completes what is pending.
        drop(tx);
        let (third, at) = done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(third, 1);
        assert!(at >= t0 + Duration::from_millis(400));
        worker.join().unwrap();
        assert!(done_rx.try_recv().is_err());
    }

    #[test]
    fn worker_stops_when_completion_fails() {
        let (tx, rx) = std::sync::mpsc::channel::<Delayed>();
        let t = Instant::now();
        tx.send(delayed(t, 1)).unwrap();
        tx.send(delayed(t, 2)).unwrap();
        let mut seen = vec![];
        run_worker(rx, |d| {
            seen.push(d.head);
            false
        });
        assert_eq!(seen, vec![1], "stopped at the first failed completion");
    }
}
