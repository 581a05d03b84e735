// SPDX-License-Identifier: GPL-2.0

//! The eventq: kept full of buffers, drained on the driver's workqueue.
//!
//! The interrupt callback only schedules the work; parsing, session lookup
//! and allocation happen in process context. Each buffer goes back to the
//! device as soon as its event is handled, as the spec requires.

#![forbid(unsafe_code)]

use crate::{
    protocol::{self, Event, MAX_EVENT_SIZE},
    session::Session,
    virtqueue::{Chain, Virtqueue},
    MediaDevice,
};
use core::sync::atomic::AtomicU64;
use kernel::{
    new_mutex, new_spinlock_irq,
    prelude::*,
    sync::{Arc, Mutex, SpinLockIrq},
};

/// Buffers kept on the eventq: at most this many events can have been
/// returned before a given moment.
pub(crate) const EVENT_BUFFERS: usize = 64;
/// Events the worker handles before it yields, so a device that floods
/// events cannot hold the draining lock (and the ioctls that wait for it)
/// for long.
pub(crate) const EVENT_BATCH: usize = 64;

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

#[pin_data]
pub(crate) struct EventQueue {
    /// `None` until set up and once the device is gone.
    #[pin]
    vq: SpinLockIrq<Option<Virtqueue<EventBuffer>>>,
    /// Held while events are taken and handled, so a caller of `drain`
    /// knows every event returned before the call has been handled when it
    /// gets the lock (STREAMOFF relies on that).
    #[pin]
    draining: Mutex<()>,
    /// Events dropped as malformed, for rate-limited logging.
    dropped: AtomicU64,
}

impl EventQueue {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            vq <- new_spinlock_irq!(None, "virtio_media_eventq"),
            draining <- new_mutex!((), "virtio_media_eventq_draining"),
            dropped: AtomicU64::new(0),
        })
    }

    /// Starts using `vq` and fills it with buffers.
    pub(crate) fn attach(&self, vq: Virtqueue<EventBuffer>) -> Result {
        *self.vq.lock() = Some(vq);
        for _ in 0..EVENT_BUFFERS {
            let mut bytes = KVec::with_capacity(MAX_EVENT_SIZE, GFP_KERNEL)?;
            bytes.resize(MAX_EVENT_SIZE, 0, GFP_KERNEL)?;
            self.give_back(KBox::new(
                EventBuffer {
                    nothing: KVec::new(),
                    bytes,
                },
                GFP_KERNEL,
            )?);
        }
        Ok(())
    }

    fn give_back(&self, buffer: KBox<EventBuffer>) {
        // The device is notified after the lock is dropped, as for commands.
        let kick = match Option::as_mut(&mut self.vq.lock()) {
            Some(queue) => match queue.add(buffer) {
                Ok(()) => queue.prepare_kick(),
                Err((e, _)) => {
                    pr_err!("cannot requeue an event buffer: {:?}\n", e);
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
        Option::as_mut(&mut self.vq.lock())?.get_buf()
    }

    /// Handles at most `budget` events the device returned, requeueing
    /// each buffer; returns whether more may be waiting.
    ///
    /// Sessions that got buffers back are woken once the batch is handled:
    /// an m2m device returns a job's OUTPUT and CAPTURE buffers as two
    /// events, and a poller woken between them would see the queue
    /// writable but not readable, which no vb2 m2m driver shows
    /// (v4l2-compliance's streaming loop can lose count on it).
    pub(crate) fn drain(&self, dev: &MediaDevice, budget: usize) -> bool {
        let _draining = self.draining.lock();
        let mut woken: KVec<Arc<Session>> = KVec::new();
        let mut handled = 0;
        while handled < budget {
            let Some((buffer, written)) = self.take_returned() else {
                break;
            };
            handled += 1;
            let len = usize::try_from(written).unwrap_or(usize::MAX);
            let done = match buffer.bytes.get(..len) {
                Some(bytes) => self.dispatch(dev, bytes),
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
                if woken.iter().any(|s| Arc::ptr_eq(s, &session)) {
                    continue;
                }
                if woken.reserve(1, GFP_KERNEL).is_err() {
                    // No room to defer it: wake it now.
                    session.wake_buffer_waiters();
                    continue;
                }
                // Cannot fail: the capacity is reserved.
                let _ = woken.push_within_capacity(session);
            }
        }
        for session in woken.iter() {
            session.wake_buffer_waiters();
        }
        handled == budget
    }

    /// Handles one event; returns the session a buffer came back to.
    fn dispatch(&self, dev: &MediaDevice, bytes: &[u8]) -> Option<Arc<Session>> {
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
        let session = match event {
            Event::Error { .. } => dev.take_session(id),
            _ => dev.session(id),
        };
        let Some(session) = session else {
            self.drop_event(format_args!("event for unknown session {}", id));
            return None;
        };
        let handled = match event {
            Event::Error { errno, .. } => {
                session.failed(errno);
                return None;
            }
            Event::Dqbuf { buffer, planes, .. } => {
                session.buffer_done(buffer, planes).map(|()| true)
            }
            Event::V4l2 { event, .. } => session.event(event).map(|()| false),
        };
        match handled {
            Ok(true) => Some(session),
            Ok(false) => None,
            Err(e) => {
                self.drop_event(format_args!("event for session {} dropped: {:?}", id, e));
                None
            }
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
        let queue = self.vq.lock().take();
        if let Some(mut queue) = queue {
            while queue.get_buf().is_some() {}
            while queue.detach_unused().is_some() {}
        }
    }
}
