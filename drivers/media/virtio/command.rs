// SPDX-License-Identifier: GPL-2.0

//! Commands on the commandq: submission, completion and timeout.
//!
//! Many commands may be in flight at once, from any number of sessions;
//! each waits on its own condition variable. The request and response
//! buffers belong to the queue's in-flight entry until the device returns
//! the chain, so a caller that gives up (timeout, signal) never leaves the
//! device writing into freed memory: the entry is freed when the device
//! returns it, or when the queue is torn down after a device reset.

use crate::{
    dmabuf::DeviceRef,
    pages::PageRange,
    protocol::{self, ResponseError, SG_ENTRY_SIZE},
    virtqueue::{Chain, Virtqueue},
};
use kernel::{
    new_condvar, new_spinlock_irq,
    prelude::*,
    sync::{Arc, CondVar, CondVarTimeoutResult, SpinLockIrq},
    time::msecs_to_jiffies,
};

/// How long a command may take before its caller gets `EIO`. The spec asks
/// the device to answer "as soon as possible"; this only catches a device
/// that stopped answering.
const COMMAND_TIMEOUT_MS: u32 = 5000;

/// Whether a signal may end the wait for a response.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// An ioctl: a signal returns `EINTR` (the command stays in flight).
    Interruptible,
    /// Release and unmap paths, which must see the answer.
    Uninterruptible,
}

enum State {
    Pending,
    Done {
        response: KVec<u8>,
        written: u32,
        memory: KVec<KVec<u8>>,
    },
    /// The device went away before answering.
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
/// mapped for the device while the command is in flight.
struct Mapped {
    bytes: KVec<u8>,
    /// Device address while mapped.
    addr: Option<u64>,
}

/// The queue's side of one command: owns its buffers while in flight.
pub(crate) struct InFlight {
    request: KVec<u8>,
    response: KVec<u8>,
    memory: KVec<Mapped>,
    command: Arc<Command>,
}

impl InFlight {
    /// Unmaps whatever of the command's memory is mapped.
    fn unmap(&mut self, queue: &mut Virtqueue<InFlight>) {
        for mapped in self.memory.iter_mut() {
            if let Some(addr) = mapped.addr.take() {
                queue.unmap(addr, mapped.bytes.len());
            }
        }
    }

    /// Unmaps the command's memory and hands it over: the device is done.
    fn take_memory(&mut self, queue: &mut Virtqueue<InFlight>) -> KVec<KVec<u8>> {
        self.unmap(queue);
        let mut memory = KVec::new();
        if memory.reserve(self.memory.len(), GFP_ATOMIC).is_ok() {
            for mapped in self.memory.drain_all() {
                // Cannot fail: the capacity is reserved.
                let _ = memory.push(mapped.bytes, GFP_ATOMIC);
            }
        }
        memory
    }
}

impl Chain for InFlight {
    fn buffers(&mut self) -> (&KVec<u8>, &mut KVec<u8>) {
        (&self.request, &mut self.response)
    }
}

/// A response the device wrote: `bytes[..written]` is what it wrote, and
/// `memory` the guest memory the command pointed at, in order.
pub(crate) struct Response {
    pub(crate) bytes: KVec<u8>,
    pub(crate) written: usize,
    pub(crate) memory: KVec<KVec<u8>>,
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

    /// Sends `request` and waits for a response of at most `response_len`
    /// bytes. `Ok` when the device answered, whatever its status (see
    /// [`Response::status`]); `Err` when it did not.
    pub(crate) fn send(&self, request: KVec<u8>, response_len: usize, wait: Wait) -> Result<Response> {
        self.send_with_memory(request, response_len, wait, KVec::new(), 0)
    }

    /// Like [`CommandQueue::send`], and also maps each of `memory` for the
    /// device and writes its `virtio_media_sg_entry` into the request at
    /// `sg_offset` (one entry per buffer, in order). The buffers come back
    /// in the response once the device is done with them.
    pub(crate) fn send_with_memory(
        &self,
        request: KVec<u8>,
        response_len: usize,
        wait: Wait,
        memory: KVec<KVec<u8>>,
        sg_offset: usize,
    ) -> Result<Response> {
        let sg_end = memory
            .len()
            .checked_mul(SG_ENTRY_SIZE)
            .and_then(|len| len.checked_add(sg_offset))
            .ok_or(EINVAL)?;
        if !memory.is_empty() && sg_end > request.len() {
            return Err(EINVAL);
        }
        let mut mapped = KVec::with_capacity(memory.len(), GFP_KERNEL)?;
        for bytes in memory {
            mapped.push(Mapped { bytes, addr: None }, GFP_KERNEL)?;
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
                memory: mapped,
                command: command.clone(),
            },
            GFP_KERNEL,
        )?;

        // Queue it, waiting for free descriptors if the ring is full. The
        // device is notified after the lock is dropped: the notification
        // traps, and other commands must not wait for it with interrupts
        // off (it was the largest cost of a forwarded ioctl).
        let kick = {
            let mut vq = self.vq.lock();
            loop {
                let Some(queue) = Option::as_mut(&mut vq) else {
                    return Err(ENODEV);
                };
                map_memory(queue, &mut chain, sg_offset)?;
                match queue.add(chain) {
                    Ok(()) => break queue.prepare_kick(),
                    Err((e, mut back)) if e == ENOSPC => {
                        back.unmap(queue);
                        chain = back;
                        if self.space.wait_interruptible(&mut vq) {
                            return Err(EINTR);
                        }
                    }
                    Err((e, mut back)) => {
                        back.unmap(queue);
                        return Err(e);
                    }
                }
            }
        };
        if let Some(kick) = kick {
            kick.notify();
        }

        let mut state = command.state.lock();
        let mut remaining = msecs_to_jiffies(COMMAND_TIMEOUT_MS);
        while matches!(*state, State::Pending) {
            match command.done.wait_interruptible_timeout(&mut state, remaining) {
                CondVarTimeoutResult::Woken { jiffies } => remaining = jiffies,
                CondVarTimeoutResult::Signal { jiffies } => {
                    if wait == Wait::Interruptible {
                        return Err(EINTR);
                    }
                    // Pending signals make every further wait return at
                    // once; poll with a short sleep instead until the
                    // deadline.
                    remaining = jiffies;
                    drop(state);
                    kernel::time::delay::fsleep(kernel::time::Delta::from_millis(1));
                    remaining = remaining.saturating_sub(msecs_to_jiffies(1));
                    state = command.state.lock();
                    if remaining == 0 && matches!(*state, State::Pending) {
                        pr_err!("device did not answer a command in {} ms\n", COMMAND_TIMEOUT_MS);
                        return Err(EIO);
                    }
                }
                CondVarTimeoutResult::Timeout => {
                    pr_err!("device did not answer a command in {} ms\n", COMMAND_TIMEOUT_MS);
                    return Err(EIO);
                }
            }
        }
        match core::mem::replace(&mut *state, State::Aborted) {
            State::Done {
                response,
                written,
                memory,
            } => {
                let written = usize::try_from(written).unwrap_or(usize::MAX);
                if written > response.len() {
                    pr_err!(
                        "device claims {} bytes written into a {}-byte response\n",
                        written,
                        response.len()
                    );
                    return Err(EIO);
                }
                Ok(Response {
                    bytes: response,
                    written,
                    memory,
                })
            }
            State::Aborted => Err(ENODEV),
            State::Pending => Err(EIO),
        }
    }

    /// Completes every command the device returned. Runs in the commandq's
    /// interrupt callback.
    pub(crate) fn complete_returned(&self) {
        let mut vq = self.vq.lock();
        let Some(queue) = Option::as_mut(&mut vq) else {
            return;
        };
        while let Some((mut entry, written)) = queue.get_buf() {
            let memory = entry.take_memory(queue);
            let InFlight {
                response, command, ..
            } = KBox::into_inner(entry);
            command.finish(State::Done {
                response,
                written,
                memory,
            });
        }
        drop(vq);
        self.space.notify_all();
    }

    /// The device imported dma-bufs are attached to; `None` when the device
    /// is gone or its transport cannot use dma-bufs.
    pub(crate) fn dmabuf_device(&self) -> Option<DeviceRef> {
        self.vq.lock().as_ref().and_then(|queue| queue.dmabuf_device())
    }

    /// Maps guest pages for the device; see [`Virtqueue::map_pages`].
    pub(crate) fn map_pages(&self, pages: &impl PageRange, device_writes: bool) -> Result<KVec<(u64, u32)>> {
        let mut mapped = KVec::with_capacity(pages.chunks().count(), GFP_KERNEL)?;
        match Option::as_mut(&mut self.vq.lock()) {
            Some(queue) => queue.map_pages(pages, device_writes, &mut mapped)?,
            None => return Err(ENODEV),
        }
        Ok(mapped)
    }

    /// Undoes [`CommandQueue::map_pages`]. Once the queue is shut down the
    /// device is reset and cannot reach the pages any more; the teardown
    /// unmaps every buffer before that, so only a buffer whose file closed
    /// while the device went away is left to its transport's teardown.
    pub(crate) fn unmap_pages(&self, device_writes: bool, mapped: &[(u64, u32)]) {
        if let Some(queue) = Option::as_mut(&mut self.vq.lock()) {
            queue.unmap_pages(device_writes, mapped);
        }
    }

    /// Called once the device is reset, before its queues are deleted:
    /// fails every command still queued and refuses new ones.
    pub(crate) fn shut_down(&self) {
        let mut vq = self.vq.lock();
        let Some(mut queue) = vq.take() else {
            return;
        };
        // `queue` drops at the end, outside the lock: it waits for kicks
        // still being sent.
        while let Some((mut entry, _)) = queue.get_buf() {
            entry.unmap(&mut queue);
            entry.command.finish(State::Aborted);
        }
        while let Some(mut entry) = queue.detach_unused() {
            entry.unmap(&mut queue);
            entry.command.finish(State::Aborted);
        }
        drop(vq);
        self.space.notify_all();
    }
}

/// Maps the command's memory and writes one SG entry per buffer into the
/// request; on failure nothing stays mapped.
fn map_memory(queue: &mut Virtqueue<InFlight>, chain: &mut InFlight, sg_offset: usize) -> Result {
    let mut entry = sg_offset;
    for i in 0..chain.memory.len() {
        let Some(mapped) = chain.memory.get_mut(i) else {
            break;
        };
        let len = u32::try_from(mapped.bytes.len())?;
        let addr = match queue.map(&mut mapped.bytes) {
            Ok(addr) => addr,
            Err(e) => {
                chain.unmap(queue);
                return Err(e);
            }
        };
        mapped.addr = Some(addr);
        if let Some(field) = chain.request.get_mut(entry..entry + SG_ENTRY_SIZE) {
            field.copy_from_slice(&protocol::sg_entry(addr, len));
        }
        entry += SG_ENTRY_SIZE;
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
