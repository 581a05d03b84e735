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

#![forbid(unsafe_code)]

use crate::{
    dmabuf::DeviceRef,
    protocol::{self, ResponseError, SG_ENTRY_SIZE},
    virtqueue::{Chain, Mapper, Virtqueue},
};
use kernel::{
    new_condvar, new_spinlock_irq,
    prelude::*,
    sync::{Arc, CondVar, CondVarTimeoutResult, SpinLockIrq},
    time::{msecs_to_jiffies, Delta, Instant, Monotonic},
};

/// How long a command may take before the device counts as broken. The
/// spec asks the device to answer "as soon as possible"; this only
/// catches a device that stopped answering.
pub(crate) const COMMAND_TIMEOUT_MS: u32 = 5000;

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

enum State {
    Pending,
    Done {
        entry: KBox<InFlight>,
        written: u32,
    },
    /// The queue was torn down before the device answered.
    Aborted,
}

/// The caller's side of one command.
#[pin_data]
struct Command {
    #[pin]
    state: SpinLockIrq<State>,
    #[pin]
    done: CondVar,
}

impl Command {
    fn finish(&self, state: State) {
        *self.state.lock() = state;
        self.done.notify_all();
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
pub(crate) struct InFlight {
    request: KVec<u8>,
    response: KVec<u8>,
    memory: KVec<Mapped>,
    /// Taken when the command completes or is aborted.
    command: Option<Arc<Command>>,
}

impl InFlight {
    fn end(mut self: KBox<Self>, written: Option<u32>) {
        if let Some(command) = self.command.take() {
            command.finish(match written {
                Some(written) => State::Done {
                    entry: self,
                    written,
                },
                None => State::Aborted,
            });
        }
    }
}

impl Chain for InFlight {
    fn buffers(&mut self) -> (&KVec<u8>, &mut KVec<u8>) {
        (&self.request, &mut self.response)
    }
}

/// A response the device wrote: `bytes[..written]` is what it wrote, and
/// `memory` the guest memory the command pointed at, in order, unmapped.
pub(crate) struct Response {
    pub(crate) bytes: KVec<u8>,
    pub(crate) written: usize,
    pub(crate) memory: KVec<Mapped>,
}

impl Response {
    /// What the device wrote.
    pub(crate) fn written(&self) -> &[u8] {
        self.bytes.get(..self.written).unwrap_or(&[])
    }

    /// The status in the response header: `Ok` for 0, else the errno the
    /// device reported (`EIO` for a malformed header).
    pub(crate) fn status(&self) -> Result {
        check_status(&self.bytes, self.written)
    }
}

/// A command the device has not answered yet.
pub(crate) struct PendingCommand {
    command: Arc<Command>,
}

impl PendingCommand {
    /// Waits for the response, at most [`COMMAND_TIMEOUT_MS`] of real time.
    pub(crate) fn wait(self, wait: Wait) -> Result<Response, WaitError> {
        let command = &self.command;
        let start = Instant::<Monotonic>::now();
        let timeout = Delta::from_millis(i64::from(COMMAND_TIMEOUT_MS));
        let mut state = command.state.lock();
        while matches!(*state, State::Pending) {
            // The deadline is in time, not in turns: a waiter that cannot
            // sleep interruptibly (a signal is pending) polls, and each
            // turn may take much longer than its nominal millisecond.
            let left = timeout - start.elapsed();
            if left.is_negative() || left.is_zero() {
                return Err(WaitError::TimedOut);
            }
            let left_ms = u32::try_from(left.as_millis_ceil()).unwrap_or(COMMAND_TIMEOUT_MS);
            match command
                .done
                .wait_interruptible_timeout(&mut state, msecs_to_jiffies(left_ms))
            {
                CondVarTimeoutResult::Woken { .. } | CondVarTimeoutResult::Timeout => {}
                CondVarTimeoutResult::Signal { .. } => {
                    if wait == Wait::Interruptible {
                        drop(state);
                        return Err(WaitError::Interrupted(self));
                    }
                    // Pending signals make every further wait return at
                    // once: poll with a short sleep instead.
                    drop(state);
                    kernel::time::delay::fsleep(Delta::from_millis(1));
                    state = command.state.lock();
                }
            }
        }
        let done = core::mem::replace(&mut *state, State::Aborted);
        drop(state);
        let State::Done { entry, written } = done else {
            return Err(WaitError::Gone);
        };
        let InFlight {
            response,
            mut memory,
            ..
        } = KBox::into_inner(entry);
        // The device is done with the memory: unmapped before the CPU
        // reads it (a bounce buffer is copied back by the unmap).
        for mapped in memory.iter_mut() {
            mapped.unmap();
        }
        let written = usize::try_from(written).unwrap_or(usize::MAX);
        if written > response.len() {
            pr_err!(
                "device claims {} bytes written into a {}-byte response\n",
                written,
                response.len()
            );
            return Ok(Response {
                bytes: response,
                written: 0,
                memory,
            });
        }
        Ok(Response {
            bytes: response,
            written,
            memory,
        })
    }
}

/// The commandq and the commands in flight on it.
#[pin_data]
pub(crate) struct CommandQueue {
    /// `None` once the device is gone.
    #[pin]
    vq: SpinLockIrq<Option<Virtqueue<InFlight>>>,
    /// Signalled whenever descriptors are returned.
    #[pin]
    space: CondVar,
}

impl CommandQueue {
    /// A queue that refuses commands until `attach`.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            vq <- new_spinlock_irq!(None, "virtio_media_commandq"),
            space <- new_condvar!("virtio_media_commandq_space"),
        })
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

    /// Sends `request`, to be answered with at most `response_len` bytes.
    /// Each of `memory` is mapped for the device and its
    /// `virtio_media_sg_entry` written into the request at `sg_offset`
    /// (one entry per buffer, in order); the buffers come back in the
    /// response once the device is done with them.
    ///
    /// `ETIMEDOUT` when the ring stayed full for [`COMMAND_TIMEOUT_MS`],
    /// `ENODEV` once the queue is torn down.
    pub(crate) fn submit(
        &self,
        request: KVec<u8>,
        response_len: usize,
        memory: KVec<KVec<u8>>,
        sg_offset: usize,
    ) -> Result<PendingCommand> {
        let sg_end = memory
            .len()
            .checked_mul(SG_ENTRY_SIZE)
            .and_then(|len| len.checked_add(sg_offset))
            .ok_or(EINVAL)?;
        if !memory.is_empty() && sg_end > request.len() {
            return Err(EINVAL);
        }
        let mut response = KVec::with_capacity(response_len, GFP_KERNEL)?;
        response.resize(response_len, 0, GFP_KERNEL)?;
        let command = Arc::pin_init(
            pin_init!(Command {
                state <- new_spinlock_irq!(State::Pending, "virtio_media_command"),
                done <- new_condvar!("virtio_media_command_done"),
            }),
            GFP_KERNEL,
        )?;
        let mut chain = KBox::new(
            InFlight {
                request,
                response,
                memory: KVec::with_capacity(memory.len(), GFP_KERNEL)?,
                command: Some(command.clone()),
            },
            GFP_KERNEL,
        )?;
        if !memory.is_empty() {
            let mapper = self.mapper().ok_or(ENODEV)?;
            map_memory(&mapper, &mut chain, memory, sg_offset)?;
        }

        // Queue it, waiting (boundedly) for free descriptors if the ring is
        // full. The device is notified after the lock is dropped: the
        // notification traps, and other commands must not wait for it with
        // interrupts off (it was the largest cost of a forwarded ioctl).
        let kick = {
            let mut vq = self.vq.lock();
            let mut remaining = msecs_to_jiffies(COMMAND_TIMEOUT_MS);
            loop {
                let Some(queue) = Option::as_mut(&mut vq) else {
                    return Err(ENODEV);
                };
                match queue.add(chain) {
                    Ok(()) => break queue.prepare_kick(),
                    Err((e, back)) if e == ENOSPC => {
                        chain = back;
                        match self.space.wait_interruptible_timeout(&mut vq, remaining) {
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
    /// interrupt callback.
    pub(crate) fn complete_returned(&self) {
        let mut vq = self.vq.lock();
        let Some(queue) = Option::as_mut(&mut vq) else {
            return;
        };
        while let Some((entry, written)) = queue.get_buf() {
            entry.end(Some(written));
        }
        drop(vq);
        self.space.notify_all();
    }

    /// Whether the ring caught the device misbehaving and stopped using the
    /// queue (then nothing in flight will complete).
    pub(crate) fn is_broken(&self) -> bool {
        self.vq
            .lock()
            .as_ref()
            .is_some_and(|queue| queue.is_broken())
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
fn check_status(response: &[u8], written: usize) -> Result {
    match protocol::response_status(response.get(..written).unwrap_or(&[])) {
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
            pr_err!("response carries invalid status {}\n", status);
            Err(EIO)
        }
    }
}
