// SPDX-License-Identifier: GPL-2.0

//! The eventq: kept full of buffers, drained on the driver's workqueue.
//!
//! The interrupt callback only schedules the work; parsing, session lookup
//! and allocation happen in process context. Each buffer goes back to the
//! device as soon as its event is handled, as the spec requires.
//!
//! Events go to [`EventTarget`]s by session id: the sessions implement it,
//! and this module knows nothing else of them.

#![forbid(unsafe_code)]

use crate::{
    kernel_ext::{
        alloc::LeanVec,
        virtio::virtqueue::{Chain, Virtqueue},
    },
    protocol::{self, Event, MAX_EVENT_SIZE},
    stream::{BadEvent, DoneBuffer},
};
use kernel::{
    new_mutex, new_spinlock_irq,
    prelude::*,
    rbtree::{RBTree, RBTreeNode},
    sync::{atomic::Atomic, Arc, Mutex, SpinLockIrq},
};

/// What the events of one session go to.
pub(crate) trait EventTarget: Send + Sync {
    /// The device returned a buffer (a DQBUF event); it shows, and the
    /// waiters wake, once the batch is handled ([`Self::publish`]).
    fn buffer_done(&self, done: KBox<DoneBuffer>) -> Result<(), BadEvent>;
    /// A V4L2 event (`struct v4l2_event` bytes); shown like a buffer.
    fn v4l2_event(&self, event: &[u8]);
    /// Shows the buffers and events returned so far, all at once; their
    /// waiters may go on.
    fn publish(&self);
    /// An ERROR event: the device closed the session.
    fn failed(&self, errno: u32);
    /// The device was reset: it holds none of the session's buffers.
    fn device_reset(&self);
    /// The device went away.
    fn device_gone(&self);
}

/// The sessions a batch of events reached, each once, to publish when the
/// batch is handled. The first few are kept inline: a batch rarely reaches
/// more than one session, and a vector allocated per batch was an
/// allocation per frame of a stream.
#[derive(Default)]
struct Woken {
    first: [Option<Arc<dyn EventTarget>>; 4],
    more: LeanVec<Arc<dyn EventTarget>>,
}

impl Woken {
    fn add(&mut self, session: Arc<dyn EventTarget>) {
        let known = |s: &Arc<dyn EventTarget>| Arc::ptr_eq(s, &session);
        if self.first.iter().flatten().any(known) || self.more.iter().any(known) {
            return;
        }
        if let Some(slot) = self.first.iter_mut().find(|slot| slot.is_none()) {
            *slot = Some(session);
            return;
        }
        if self.more.reserve(1, GFP_KERNEL).is_err() {
            // No room to defer it: wake it now.
            session.publish();
            return;
        }
        // Cannot fail: the capacity is reserved.
        let _ = self.more.push_within_capacity(session);
    }

    fn publish(self) {
        for session in self.first.iter().flatten() {
            session.publish();
        }
        for session in self.more.iter() {
            session.publish();
        }
    }
}

/// Why a new target could not be entered.
pub(crate) enum AddTargetError {
    /// The device gave an id that another open session has.
    Duplicate,
    NoMemory,
}

/// Buffers kept on the eventq: at most this many events can have been
/// returned before a given moment.
pub(crate) const EVENT_BUFFERS: usize = 64;
/// Events the worker handles before it yields, so a device that floods
/// events cannot hold the draining lock (and the ioctls that wait for it)
/// for long.
pub(crate) const EVENT_BATCH: usize = 64;
/// The device is notified of returned buffers once this fraction of the
/// ring's buffers went back unannounced. A notification traps to the
/// hypervisor (under vfio-user a round trip to the device's process), and
/// one per event was half of the notifications of a stream. Every
/// buffer is back in the available ring at once, as the spec asks; only
/// the notification waits, so a device that looks at the ring only when
/// notified still knows of three quarters of the buffers whenever the
/// driver has caught up, and never waits for one (virtio-net refills its
/// receive ring in batches for the same reason).
const NOTIFY_FRACTION: usize = 4;

/// One event-sized, device-writable buffer.
pub(crate) struct EventBuffer {
    /// Events carry nothing to the device.
    nothing: KVec<u8>,
    bytes: KVec<u8>,
}

impl Chain for EventBuffer {
    fn buffers(&mut self) -> (&KVec<u8>, &mut KVec<u8>) {
        (&self.nothing, &mut self.bytes)
    }
}

/// When to notify the device of buffers given back (see
/// [`NOTIFY_FRACTION`]).
#[derive(Default)]
struct NotifyBatch {
    /// Buffers the ring holds, with the device or returned: set once the
    /// ring is filled, less any that could not be requeued. While it is
    /// below [`NOTIFY_FRACTION`] every buffer is announced.
    buffers: usize,
    /// Given back since the last notification.
    unnotified: usize,
}

impl NotifyBatch {
    /// One more buffer given back: whether the device must hear of the
    /// buffers given back so far.
    fn given_back(&mut self) -> bool {
        self.unnotified += 1;
        if self.unnotified < (self.buffers / NOTIFY_FRACTION).max(1) {
            return false;
        }
        self.unnotified = 0;
        true
    }

    /// A buffer the ring refused is lost to it.
    fn lost(&mut self) {
        self.buffers = self.buffers.saturating_sub(1);
    }
}

/// The eventq's ring and when to notify the device of it.
struct EventRing {
    queue: Virtqueue<EventBuffer>,
    notify: NotifyBatch,
}

#[pin_data]
pub(crate) struct EventQueue {
    /// `None` until set up and once the device is gone.
    #[pin]
    vq: SpinLockIrq<Option<EventRing>>,
    /// Held while events are taken and handled, so a caller of `drain`
    /// knows every event returned before the call has been handled when it
    /// gets the lock (STREAMOFF relies on that).
    #[pin]
    draining: Mutex<()>,
    /// Open sessions by id.
    #[pin]
    targets: Mutex<RBTree<u32, Arc<dyn EventTarget>>>,
    /// Events dropped as malformed, for rate-limited logging.
    dropped: Atomic<u64>,
}

impl EventQueue {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            vq <- new_spinlock_irq!(None, "virtio_media_eventq"),
            draining <- new_mutex!((), "virtio_media_eventq_draining"),
            targets <- new_mutex!(RBTree::new(), "virtio_media_sessions"),
            dropped: Atomic::new(0),
        })
    }

    /// Starts using `vq` and fills it with buffers, announced to the
    /// device at once.
    pub(crate) fn attach(&self, vq: Virtqueue<EventBuffer>) -> Result {
        *self.vq.lock() = Some(EventRing {
            queue: vq,
            notify: NotifyBatch::default(),
        });
        let mut added = 0;
        for _ in 0..EVENT_BUFFERS {
            let mut bytes = KVec::with_capacity(MAX_EVENT_SIZE, GFP_KERNEL)?;
            bytes.resize(MAX_EVENT_SIZE, 0, GFP_KERNEL)?;
            let buffer = KBox::new(
                EventBuffer {
                    nothing: KVec::new(),
                    bytes,
                },
                GFP_KERNEL,
            )?;
            let mut vq = self.vq.lock();
            let Some(ring) = Option::as_mut(&mut vq) else {
                break;
            };
            if let Err((e, _)) = ring.queue.add(buffer) {
                pr_err!(
                    "eventq takes {} buffers, not {}: {:?}\n",
                    added,
                    EVENT_BUFFERS,
                    e
                );
                break;
            }
            added += 1;
        }
        let kick = Option::as_mut(&mut self.vq.lock()).and_then(|ring| {
            ring.notify.buffers = added;
            ring.queue.prepare_kick()
        });
        if let Some(kick) = kick {
            kick.notify();
        }
        Ok(())
    }

    /// Puts `buffer` back in the ring (see [`NOTIFY_FRACTION`] for when
    /// the device hears of it).
    fn give_back(&self, buffer: KBox<EventBuffer>) {
        // The device is notified after the lock is dropped, as for commands.
        let kick = match Option::as_mut(&mut self.vq.lock()) {
            Some(ring) => match ring.queue.add(buffer) {
                Ok(()) => ring
                    .notify
                    .given_back()
                    .then(|| ring.queue.prepare_kick())
                    .flatten(),
                Err((e, _)) => {
                    pr_err!("cannot requeue an event buffer: {:?}\n", e);
                    ring.notify.lost();
                    None
                }
            },
            None => None,
        };
        if let Some(kick) = kick {
            kick.notify();
        }
    }

    fn take_returned(&self) -> Option<(KBox<EventBuffer>, u32)> {
        Option::as_mut(&mut self.vq.lock())?.queue.get_buf()
    }

    /// Handles at most `budget` events the device returned, requeueing
    /// each buffer; returns whether more may be waiting.
    ///
    /// Sessions see the buffers and V4L2 events of the batch, and are
    /// woken, once it is handled, all at once (see `Session::publish` for
    /// why programs need that).
    pub(crate) fn drain(&self, budget: usize) -> bool {
        let _draining = self.draining.lock();
        let mut woken = Woken::default();
        let mut handled = 0;
        while handled < budget {
            let Some((buffer, written)) = self.take_returned() else {
                break;
            };
            handled += 1;
            let len = usize::try_from(written).unwrap_or(usize::MAX);
            let done = match buffer.bytes.get(..len) {
                Some(bytes) => self.dispatch(bytes),
                None => {
                    self.drop_event(format_args!(
                        "event claims {} bytes, buffer has {}",
                        len, MAX_EVENT_SIZE
                    ));
                    None
                }
            };
            self.give_back(buffer);
            if let Some(session) = done {
                woken.add(session);
            }
        }
        woken.publish();
        handled == budget
    }

    /// Handles one event; returns the session that has something to show.
    fn dispatch(&self, bytes: &[u8]) -> Option<Arc<dyn EventTarget>> {
        let event = match protocol::parse_event(bytes) {
            Ok(event) => event,
            Err(e) => {
                self.drop_event(format_args!("malformed event: {:?}", e));
                return None;
            }
        };
        let id = match event {
            Event::Error { session, .. }
            | Event::Dqbuf { session, .. }
            | Event::V4l2 { session, .. } => session,
        };
        // An ERROR ends the session on the device: take it out of the map
        // at once, since the device may hand its id to a new session.
        let target = match event {
            Event::Error { .. } => self.targets.lock().remove(&id),
            _ => self.targets.lock().get(&id).cloned(),
        };
        let Some(target) = target else {
            self.drop_event(format_args!("event for unknown session {}", id));
            return None;
        };
        let handled = match event {
            Event::Error { errno, .. } => {
                target.failed(errno);
                return None;
            }
            Event::Dqbuf { buffer, planes, .. } => match DoneBuffer::from_event(buffer, planes) {
                Ok(done) => target.buffer_done(done),
                // No memory: the buffer is lost to the program, as a
                // dropped event would be.
                Err(_) => Err(BadEvent::NoMemory),
            },
            Event::V4l2 { event, .. } => {
                target.v4l2_event(event);
                Ok(())
            }
        };
        match handled {
            Ok(()) => Some(target),
            Err(e) => {
                self.drop_event(format_args!("event for session {} dropped: {:?}", id, e));
                None
            }
        }
    }

    /// Enters a new session; the device must not reuse an id that is
    /// still open.
    pub(crate) fn add_target(
        &self,
        id: u32,
        target: Arc<dyn EventTarget>,
    ) -> Result<(), AddTargetError> {
        let mut targets = self.targets.lock();
        if targets.get(&id).is_some() {
            pr_err!(
                "device opened session {} while it is still open; the open fails\n",
                id
            );
            return Err(AddTargetError::Duplicate);
        }
        let node = RBTreeNode::new(id, target, GFP_KERNEL).map_err(|_| AddTargetError::NoMemory)?;
        targets.insert(node);
        Ok(())
    }

    /// Removes the session under `id`, if it is still `target`.
    pub(crate) fn remove_target(&self, id: u32, target: &dyn EventTarget) {
        let mut targets = self.targets.lock();
        let entered = |t: &Arc<dyn EventTarget>| core::ptr::addr_eq(Arc::as_ptr(t), target);
        if targets.get(&id).is_some_and(entered) {
            targets.remove(&id);
        }
    }

    /// Takes every open session out of the map: the device was reset and
    /// forgot them, and may give their ids to new sessions.
    pub(crate) fn take_targets(&self) -> RBTree<u32, Arc<dyn EventTarget>> {
        core::mem::replace(&mut *self.targets.lock(), RBTree::new())
    }

    /// Calls `f` for every open session.
    pub(crate) fn for_each_target(&self, f: impl Fn(&Arc<dyn EventTarget>)) {
        for target in self.targets.lock().values() {
            f(target);
        }
    }

    /// Counts a dropped event and logs it (see [`crate::log`]), so a
    /// broken device cannot flood the log.
    fn drop_event(&self, why: core::fmt::Arguments<'_>) {
        if let Some(count) = crate::log::counted(&self.dropped) {
            pr_warn!("{} ({} events dropped so far)\n", why, count);
        }
    }

    /// The device is reset: free every buffer and refuse new ones.
    pub(crate) fn shut_down(&self) {
        // Taken out, then emptied and dropped outside the lock.
        let ring = self.vq.lock().take();
        if let Some(EventRing { mut queue, .. }) = ring {
            while queue.get_buf().is_some() {}
            while queue.detach_unused().is_some() {}
        }
    }
}

#[kunit_tests(virtio_media_events)]
mod tests {
    use super::*;
    use kernel::sync::atomic::Relaxed;

    /// Which of `count` buffers given back notify the device (1-based).
    fn notifying(batch: &mut NotifyBatch, count: usize) -> KVec<usize> {
        let mut notified = KVec::new();
        for n in 1..=count {
            if batch.given_back() {
                // A test that cannot allocate a few words fails anyway.
                notified.push(n, GFP_KERNEL).expect("allocation");
            }
        }
        notified
    }

    #[test]
    fn a_full_ring_is_announced_every_quarter() {
        let mut batch = NotifyBatch {
            buffers: EVENT_BUFFERS,
            unnotified: 0,
        };
        let quarter = EVENT_BUFFERS / 4;
        let notified = notifying(&mut batch, EVENT_BUFFERS);
        assert_eq!(notified.len(), 4);
        assert_eq!(notified.first().copied(), Some(quarter));
        assert_eq!(notified.last().copied(), Some(EVENT_BUFFERS));
    }

    /// Counts its publications.
    struct Publishes(Atomic<u32>);

    impl EventTarget for Publishes {
        fn buffer_done(&self, _done: KBox<DoneBuffer>) -> Result<(), BadEvent> {
            Ok(())
        }
        fn v4l2_event(&self, _event: &[u8]) {}
        fn publish(&self) {
            self.0.fetch_add(1, Relaxed);
        }
        fn failed(&self, _errno: u32) {}
        fn device_reset(&self) {}
        fn device_gone(&self) {}
    }

    #[test]
    fn a_batch_publishes_each_session_once() {
        // More sessions than are kept inline, each reached twice.
        let mut sessions = KVec::new();
        for _ in 0..6 {
            // A test that cannot allocate a few words fails anyway.
            let session = Arc::new(Publishes(Atomic::new(0)), GFP_KERNEL).expect("allocation");
            sessions.push(session, GFP_KERNEL).expect("allocation");
        }
        let mut woken = Woken::default();
        for _ in 0..2 {
            for session in sessions.iter() {
                woken.add(session.clone());
            }
        }
        assert!(sessions.iter().all(|s| s.0.load(Relaxed) == 0));
        woken.publish();
        assert!(sessions.iter().all(|s| s.0.load(Relaxed) == 1));
    }

    #[test]
    fn only_the_entered_session_is_removed() {
        // A test that cannot allocate a few words fails anyway.
        let queue = KBox::pin_init(EventQueue::new(), GFP_KERNEL).expect("allocation");
        let first: Arc<dyn EventTarget> =
            Arc::new(Publishes(Atomic::new(0)), GFP_KERNEL).expect("allocation");
        let second: Arc<dyn EventTarget> =
            Arc::new(Publishes(Atomic::new(0)), GFP_KERNEL).expect("allocation");
        assert!(queue.add_target(7, first.clone()).is_ok());
        // Another session that had id 7 once: the entry stays.
        queue.remove_target(7, &*second);
        assert!(queue.targets.lock().get(&7).is_some());
        queue.remove_target(7, &*first);
        assert!(queue.targets.lock().get(&7).is_none());
    }

    #[test]
    fn small_rings_announce_every_buffer() {
        // A ring the device made smaller than NOTIFY_FRACTION buffers, or
        // one that lost them all: nothing may wait.
        for buffers in [0, 1, NOTIFY_FRACTION - 1] {
            let mut batch = NotifyBatch {
                buffers,
                unnotified: 0,
            };
            assert_eq!(notifying(&mut batch, 5).len(), 5);
        }
    }

    #[test]
    fn lost_buffers_shorten_the_wait() {
        let mut batch = NotifyBatch {
            buffers: 8,
            unnotified: 0,
        };
        assert!(!batch.given_back());
        // Down to 3 buffers: the device must hear of each one now.
        for _ in 0..5 {
            batch.lost();
        }
        assert!(batch.given_back());
        assert!(batch.given_back());
    }
}
