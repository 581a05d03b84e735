// SPDX-License-Identifier: GPL-2.0

//! Commands on the commandq: submission, completion and timeout.
//!
//! Many commands may be in flight at once, from any number of sessions;
//! each waits on its own condition variable. The request and response
//! buffers belong to the queue's in-flight entry until the device returns
//! the chain, so a caller that gives up (timeout, signal) never leaves the
//! device writing into freed memory: the entry is freed when the device
//! returns it, or when the queue is torn down after a device reset.
//!
//! Guest memory a command points the device at (control payloads) is
//! mapped before the queue's lock is taken and unmapped by whoever ends up
//! with the entry, in process context: a mapping may copy the whole
//! buffer (swiotlb) and must not stall other sessions with interrupts off.
//!
//! A command needs four allocations (request, response, the caller's
//! completion, the in-flight entry); a finished command's are kept for the
//! next one (`CommandQueue::spares`), so a program that sends one ioctl
//! after another allocates nothing after its first.

#![forbid(unsafe_code)]

use crate::{
    kernel_ext::{
        alloc::drop_unallocated,
        dma_buf::DeviceRef,
        sync::{BoxSlot, Completion, WaitFailed},
        virtio::virtqueue::{Chain, Mapper, Virtqueue},
    },
    protocol::{self, ResponseError, SG_ENTRY_SIZE},
};
use kernel::{
    new_condvar, new_spinlock_irq,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, CondVar, CondVarTimeoutResult, SpinLockIrq,
    },
    time::{msecs_to_jiffies, Jiffies},
};

/// How long a command may take before the device counts as broken. The
/// spec asks the device to answer "as soon as possible"; this only
/// catches a device that stopped answering.
pub(crate) const COMMAND_TIMEOUT_MS: u32 = 5000;

/// How many finished commands' allocations the queue keeps for reuse: one
/// per thread of a busy program; the fifth thread allocates.
const SPARES: usize = 4;

/// Buffers larger than this are freed rather than kept for reuse, so a
/// rare large control payload does not stay allocated. A QBUF of a 1080p
/// USERPTR frame carries about a thousand SG entries (16 KiB) and fits: at
/// most 256 KiB per device are kept.
const SPARE_MAX_BYTES: usize = 32 * 1024;

/// Whether a signal may end the wait for a response.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// The caller may give up on a signal; the command stays in flight and
    /// its response is handled without the caller (see `MediaDevice`).
    Interruptible,
    /// Commands whose effect the driver mirrors (buffer and stream state),
    /// and the release and unmap paths: they see the answer, or the
    /// timeout.
    Uninterruptible,
}

/// Why a wait for a response ended without one.
pub(crate) enum WaitError {
    /// A signal came first (`Wait::Interruptible`); the command is still
    /// in flight.
    Interrupted(PendingCommand),
    /// The device did not answer within [`COMMAND_TIMEOUT_MS`].
    TimedOut,
    /// The queue was torn down (the device was reset or removed).
    Gone,
}

/// The caller's side of one command.
#[pin_data]
struct Command {
    /// The finished entry, put by the completion side (often the commandq's
    /// interrupt) before `done`; empty when the queue was torn down first.
    answer: BoxSlot<InFlight>,
    /// Completed once the command ended; the waiter's wait consumes it, so
    /// a reused command starts not done.
    #[pin]
    done: Completion,
}

impl Command {
    /// Ends the command with `entry` (answered) or without (torn down).
    fn finish(&self, entry: Option<KBox<InFlight>>) {
        if let Some(entry) = entry {
            // Empty: a command is answered once, and its waiter took the
            // previous answer before it was reused.
            if let Err(entry) = self.answer.put(entry) {
                drop(entry);
            }
        }
        self.done.complete();
    }
}

/// Guest memory a command points the device at (a control's payload),
/// mapped for the device while it is mapped; dropping it unmaps it.
pub(crate) struct Mapped {
    bytes: KVec<u8>,
    /// Device address while mapped, and the queue it is mapped on.
    mapping: Option<(u64, Mapper)>,
}

impl Mapped {
    fn unmap(&mut self) {
        if let Some((addr, mapper)) = self.mapping.take() {
            mapper.unmap(addr, self.bytes.len());
        }
    }

    /// What the device left in the memory.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Mapped {
    fn drop(&mut self) {
        self.unmap();
    }
}

/// The queue's side of one command: owns its buffers while in flight.
///
/// A spare (kept for reuse, see `CommandQueue::spares`) has empty buffers
/// and a `command` nobody else refers to, not done and with no answer.
pub(crate) struct InFlight {
    request: KVec<u8>,
    response: KVec<u8>,
    memory: KVec<Mapped>,
    /// How many bytes of `response` the device says it wrote.
    written: u32,
    /// Taken when the command completes or is aborted; put back with the
    /// response, whose drop gives both to the queue for reuse.
    command: Option<Arc<Command>>,
}

impl InFlight {
    fn end(mut self: KBox<Self>, written: Option<u32>) {
        if let Some(command) = self.command.take() {
            command.finish(written.map(|written| {
                self.written = written;
                self
            }));
        }
    }
}

impl Chain for InFlight {
    fn buffers(&mut self) -> (&KVec<u8>, &mut KVec<u8>) {
        (&self.request, &mut self.response)
    }
}

/// A response the device wrote, with the guest memory the command pointed
/// at, unmapped. Dropping it gives its allocations back to the queue.
pub(crate) struct Response<'q> {
    queue: &'q CommandQueue,
    /// `Some` until dropped.
    entry: Option<KBox<InFlight>>,
    /// How many bytes of the response the device wrote; at most its length.
    written: usize,
}

impl Response<'_> {
    /// What the device wrote.
    pub(crate) fn written(&self) -> &[u8] {
        self.entry
            .as_ref()
            .and_then(|entry| entry.response.get(..self.written))
            .unwrap_or(&[])
    }

    /// How many bytes the response had room for.
    pub(crate) fn capacity(&self) -> usize {
        self.entry.as_ref().map_or(0, |entry| entry.response.len())
    }

    /// The guest memory the command pointed at, in order, unmapped.
    pub(crate) fn take_memory(&mut self) -> KVec<Mapped> {
        self.entry
            .as_mut()
            .map(|entry| core::mem::take(&mut entry.memory))
            .unwrap_or_default()
    }

    /// The status in the response header: `Ok` for 0, else the errno the
    /// device reported (`EIO` for a malformed header).
    pub(crate) fn status(&self) -> Result {
        check_status(self.written())
    }
}

impl Drop for Response<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.entry.take() {
            self.queue.recycle(entry);
        }
    }
}

/// A command the device has not answered yet.
pub(crate) struct PendingCommand {
    command: Arc<Command>,
}

impl PendingCommand {
    /// Waits for the response, at most [`COMMAND_TIMEOUT_MS`] of real time;
    /// `queue` is the one the command was submitted to.
    pub(crate) fn wait(self, queue: &CommandQueue, wait: Wait) -> Result<Response<'_>, WaitError> {
        let done = &self.command.done;
        let waited = match wait {
            Wait::Interruptible => done.wait_interruptible_timeout(queue.timeout),
            // In D state, as long as the device takes, at most the timeout:
            // a signal cannot end it (a killed program's release waits too).
            Wait::Uninterruptible => done.wait_timeout(queue.timeout),
        };
        match waited {
            Ok(_) => {}
            Err(WaitFailed::Interrupted) => return Err(WaitError::Interrupted(self)),
            // An answer that comes later ends the command, unseen: a device
            // this late counts as broken anyway.
            Err(WaitFailed::TimedOut) => return Err(WaitError::TimedOut),
        }
        // The wait consumed the one `complete` and this takes the answer:
        // the command is ready for reuse when the response is dropped (see
        // `CommandQueue::recycle`).
        let Some(mut entry) = self.command.answer.take() else {
            return Err(WaitError::Gone);
        };
        let written = entry.written;
        // The device is done with the memory: unmapped before the CPU
        // reads it (a bounce buffer is copied back by the unmap).
        for mapped in entry.memory.iter_mut() {
            mapped.unmap();
        }
        let capacity = entry.response.len();
        let written = match usize::try_from(written) {
            Ok(written) if written <= capacity => written,
            _ => {
                pr_err!(
                    "device claims {} bytes written into a {}-byte response\n",
                    written,
                    capacity
                );
                0
            }
        };
        entry.command = Some(self.command);
        Ok(Response {
            queue,
            entry: Some(entry),
            written,
        })
    }
}

/// The commandq and the commands in flight on it.
#[pin_data]
pub(crate) struct CommandQueue {
    /// `None` once the device is gone.
    #[pin]
    vq: SpinLockIrq<Option<Virtqueue<InFlight>>>,
    /// Signalled when descriptors are returned and `space_waiters` (changed
    /// and read under `vq`'s lock) says somebody waits for them.
    #[pin]
    space: CondVar,
    space_waiters: Atomic<u32>,
    /// [`COMMAND_TIMEOUT_MS`] in jiffies, converted once.
    timeout: Jiffies,
    /// Finished commands' allocations, for the next commands (see the
    /// module comment); taken and given back without a lock.
    spares: [BoxSlot<InFlight>; SPARES],
}

impl CommandQueue {
    /// A queue that refuses commands until `attach`.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            vq <- new_spinlock_irq!(None, "virtio_media_commandq"),
            space <- new_condvar!("virtio_media_commandq_space"),
            space_waiters: Atomic::new(0),
            timeout: msecs_to_jiffies(COMMAND_TIMEOUT_MS),
            spares: core::array::from_fn(|_| BoxSlot::new()),
        })
    }

    /// A cleared in-flight entry with its command (not done, no answer): a
    /// spare if one is kept, else a new one.
    fn entry(&self) -> Result<KBox<InFlight>> {
        if let Some(spare) = self.spares.iter().find_map(BoxSlot::take) {
            return Ok(spare);
        }
        let command = Arc::pin_init(
            pin_init!(Command {
                answer: BoxSlot::new(),
                done <- Completion::new(),
            }),
            GFP_KERNEL,
        )?;
        Ok(KBox::new(
            InFlight {
                request: KVec::new(),
                response: KVec::new(),
                memory: KVec::new(),
                written: 0,
                command: Some(command),
            },
            GFP_KERNEL,
        )?)
    }

    /// Keeps a finished command's allocations for a later one, unless its
    /// completion is still referred to elsewhere or there are enough spares.
    fn recycle(&self, mut entry: KBox<InFlight>) {
        // `PendingCommand::wait` took the answer and consumed the
        // completion; unique means nothing else can end it before the next
        // `submit`.
        let Some(command) = entry.command.take().and_then(Arc::into_unique_or_drop) else {
            return;
        };
        entry.command = Some(command.into());
        let InFlight {
            request, response, ..
        } = &mut *entry;
        for buf in [request, response] {
            if buf.capacity() > SPARE_MAX_BYTES {
                *buf = KVec::new();
            }
            buf.clear();
        }
        if entry.memory.capacity() != 0 {
            entry.memory = KVec::new();
        }
        for slot in &self.spares {
            match slot.put(entry) {
                Ok(()) => return,
                Err(back) => entry = back,
            }
        }
        drop(entry);
    }

    /// Starts using `vq`.
    pub(crate) fn attach(&self, vq: Virtqueue<InFlight>) {
        *self.vq.lock() = Some(vq);
    }

    /// Maps and unmaps guest memory for the device; `None` once the queue
    /// is torn down.
    pub(crate) fn mapper(&self) -> Option<Mapper> {
        self.vq.lock().as_ref().map(|queue| queue.mapper())
    }

    /// Sends the request `build` writes into an empty buffer, to be
    /// answered with at most `response_len` bytes. Each of `memory` is
    /// mapped for the device and its `virtio_media_sg_entry` written into
    /// the request at `sg_offset` (one entry per buffer, in order); the
    /// buffers come back in the response once the device is done with them.
    ///
    /// `ETIMEDOUT` when the ring stayed full for [`COMMAND_TIMEOUT_MS`],
    /// `ENODEV` once the queue is torn down.
    pub(crate) fn submit(
        &self,
        build: impl FnOnce(&mut KVec<u8>) -> Result,
        response_len: usize,
        memory: KVec<KVec<u8>>,
        sg_offset: usize,
    ) -> Result<PendingCommand> {
        let mut chain = self.entry()?;
        build(&mut chain.request)?;
        let sg_end = memory
            .len()
            .checked_mul(SG_ENTRY_SIZE)
            .and_then(|len| len.checked_add(sg_offset))
            .ok_or(EINVAL)?;
        if !memory.is_empty() && sg_end > chain.request.len() {
            return Err(EINVAL);
        }
        chain.response.resize(response_len, 0, GFP_KERNEL)?;
        let command = chain.command.clone().ok_or(EINVAL)?;
        if memory.is_empty() {
            drop_unallocated(memory);
        } else {
            chain.memory = KVec::with_capacity(memory.len(), GFP_KERNEL)?;
            let mapper = self.mapper().ok_or(ENODEV)?;
            map_memory(&mapper, &mut chain, memory, sg_offset)?;
        }

        // Queue it, waiting (boundedly) for free descriptors if the ring is
        // full. The device is notified after the lock is dropped: the
        // notification traps, and other commands must not wait for it with
        // interrupts off (it was the largest cost of a forwarded ioctl).
        let kick = {
            let mut vq = self.vq.lock();
            let mut remaining = self.timeout;
            loop {
                let Some(queue) = Option::as_mut(&mut vq) else {
                    return Err(ENODEV);
                };
                match queue.add(chain) {
                    Ok(()) => break queue.prepare_kick(),
                    Err((e, back)) if e == ENOSPC => {
                        chain = back;
                        self.space_waiters.fetch_add(1, Relaxed);
                        let woken = self.space.wait_interruptible_timeout(&mut vq, remaining);
                        self.space_waiters.fetch_sub(1, Relaxed);
                        match woken {
                            CondVarTimeoutResult::Woken { jiffies } => remaining = jiffies,
                            CondVarTimeoutResult::Signal { .. } => return Err(ERESTARTSYS),
                            CondVarTimeoutResult::Timeout => return Err(ETIMEDOUT),
                        }
                    }
                    Err((e, _)) => return Err(e),
                }
            }
        };
        if let Some(kick) = kick {
            kick.notify();
        }
        Ok(PendingCommand { command })
    }

    /// Completes every command the device returned. Runs in the commandq's
    /// interrupt callback. `true` when the ring caught the device
    /// misbehaving and stopped (then nothing in flight will complete).
    pub(crate) fn complete_returned(&self) -> bool {
        let mut vq = self.vq.lock();
        let Some(queue) = Option::as_mut(&mut vq) else {
            return false;
        };
        let mut returned = false;
        while let Some((entry, written)) = queue.get_buf() {
            entry.end(Some(written));
            returned = true;
        }
        let broken = queue.is_broken();
        let waiters = self.space_waiters.load(Relaxed) != 0;
        drop(vq);
        if returned && waiters {
            self.space.notify_all();
        }
        broken
    }

    /// The device imported dma-bufs are attached to; `None` when the device
    /// is gone or its transport cannot use dma-bufs.
    pub(crate) fn dmabuf_device(&self) -> Option<DeviceRef> {
        self.mapper()?.dmabuf_device()
    }

    /// Called once the device is reset: fails every command still queued
    /// and refuses new ones. Process context: unmaps what was mapped.
    pub(crate) fn shut_down(&self) {
        let Some(mut queue) = self.vq.lock().take() else {
            return;
        };
        // The device is reset: it uses none of these any more.
        while let Some((entry, _)) = queue.get_buf() {
            entry.end(None);
        }
        while let Some(entry) = queue.detach_unused() {
            entry.end(None);
        }
        self.space.notify_all();
        // Dropped last: waits for mappers and kicks still under way.
        drop(queue);
    }
}

/// Maps each of `memory` and writes its SG entry into the request; on
/// failure what was mapped is unmapped (when `chain` drops).
fn map_memory(
    mapper: &Mapper,
    chain: &mut InFlight,
    memory: KVec<KVec<u8>>,
    sg_offset: usize,
) -> Result {
    let mut entry = sg_offset;
    for bytes in memory {
        let len = u32::try_from(bytes.len())?;
        chain.memory.push(
            Mapped {
                bytes,
                mapping: None,
            },
            GFP_KERNEL,
        )?;
        let Some(mapped) = chain.memory.last_mut() else {
            return Err(EINVAL);
        };
        let addr = mapper.map(&mut mapped.bytes)?;
        mapped.mapping = Some((addr, mapper.clone()));
        let end = entry.checked_add(SG_ENTRY_SIZE).ok_or(EINVAL)?;
        chain
            .request
            .get_mut(entry..end)
            .ok_or(EINVAL)?
            .copy_from_slice(&protocol::sg_entry(addr, len));
        entry = end;
    }
    Ok(())
}

/// Maps a response header to the result the caller sees.
fn check_status(written: &[u8]) -> Result {
    match protocol::response_status(written) {
        Ok(()) => Ok(()),
        Err(ResponseError::Device(errno)) => {
            // In range by construction: 1..=MAX_ERRNO.
            Err(Error::from_errno(-(errno as i32)))
        }
        Err(ResponseError::Short(len)) => {
            pr_err!("response of {} bytes is shorter than its header\n", len);
            Err(EIO)
        }
        Err(ResponseError::BadStatus(status)) => {
            pr_err!(
                "response carries status {}, which is no errno a program may see\n",
                status
            );
            Err(EIO)
        }
    }
}

#[kunit_tests(virtio_media_command)]
mod tests {
    use super::*;

    /// A response as the waiter gets it: the device answered `bytes` into
    /// a command of `bytes`, and `PendingCommand::wait` took the answer.
    fn answered(queue: &CommandQueue, bytes: usize) -> Response<'_> {
        // A test that cannot allocate a few bytes fails anyway.
        let mut entry = queue.entry().expect("allocation");
        entry
            .request
            .resize(bytes, 0xaa, GFP_KERNEL)
            .expect("allocation");
        entry
            .response
            .resize(bytes, 0x55, GFP_KERNEL)
            .expect("allocation");
        let command = entry.command.clone().expect("an entry has its command");
        entry.end(Some(u32::try_from(bytes).expect("a small test size")));
        match (PendingCommand { command }).wait(queue, Wait::Uninterruptible) {
            Ok(response) => response,
            Err(_) => panic!("an answered command has its response"),
        }
    }

    fn entry_of(response: &Response<'_>) -> *const InFlight {
        response
            .entry
            .as_deref()
            .map_or(core::ptr::null(), core::ptr::from_ref)
    }

    #[test]
    fn a_dropped_response_is_reused_cleared() {
        let queue = KBox::pin_init(CommandQueue::new(), GFP_KERNEL).expect("allocation");
        let response = answered(&queue, 300);
        assert_eq!(response.written().len(), 300);
        let first = entry_of(&response);
        drop(response);
        let again = queue.entry().expect("allocation");
        assert!(core::ptr::eq(first, &*again));
        assert!(again.request.is_empty() && again.response.is_empty());
        assert!(again.request.capacity() >= 300 && again.response.capacity() >= 300);
        let command = again.command.as_ref().expect("a spare has its command");
        // The wait took the answer and consumed the completion: the next
        // wait will sleep until the next answer.
        assert!(!command.answer.is_occupied());
        assert!(!command.done.is_done());
    }

    #[test]
    fn a_command_still_referred_to_is_not_reused() {
        let queue = KBox::pin_init(CommandQueue::new(), GFP_KERNEL).expect("allocation");
        let response = answered(&queue, 8);
        let first = entry_of(&response);
        let elsewhere = response
            .entry
            .as_ref()
            .and_then(|entry| entry.command.clone());
        assert!(elsewhere.is_some());
        drop(response);
        let again = queue.entry().expect("allocation");
        assert!(!core::ptr::eq(first, &*again));
        drop(elsewhere);
    }

    #[test]
    fn large_buffers_are_freed_and_spares_bounded() {
        let queue = KBox::pin_init(CommandQueue::new(), GFP_KERNEL).expect("allocation");
        drop(answered(&queue, SPARE_MAX_BYTES + 1));
        let again = queue.entry().expect("allocation");
        assert_eq!(again.request.capacity() + again.response.capacity(), 0);
        drop(again);
        // One more than the queue keeps: the last is freed.
        let mut responses = KVec::new();
        for _ in 0..=SPARES {
            responses
                .push(answered(&queue, 8), GFP_KERNEL)
                .expect("allocation");
        }
        drop(responses);
        assert_eq!(
            queue
                .spares
                .iter()
                .filter(|slot| slot.is_occupied())
                .count(),
            SPARES
        );
    }
}
