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
    protocol::{self, ResponseError},
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
    Done { response: KVec<u8>, written: u32 },
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

/// The queue's side of one command: owns both buffers while in flight.
pub(crate) struct InFlight {
    request: KVec<u8>,
    response: KVec<u8>,
    command: Arc<Command>,
}

// SAFETY: Both buffers are `KVec`s (kmalloc'd, linear-mapped) that are never
// resized or touched while the entry is in the queue: the entry is only
// reachable as the queue's token until the device returns it.
unsafe impl Chain for InFlight {
    fn buffers(&mut self) -> (*const [u8], *mut [u8]) {
        (
            core::ptr::from_ref(self.request.as_slice()),
            core::ptr::from_mut(self.response.as_mut_slice()),
        )
    }
}

/// A response the device wrote: `bytes[..written]` is what it wrote.
pub(crate) struct Response {
    pub(crate) bytes: KVec<u8>,
    pub(crate) written: usize,
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
                command: command.clone(),
            },
            GFP_KERNEL,
        )?;

        // Queue it, waiting for free descriptors if the ring is full.
        {
            let mut vq = self.vq.lock();
            loop {
                let Some(queue) = Option::as_mut(&mut vq) else {
                    return Err(ENODEV);
                };
                match queue.add(chain) {
                    Ok(()) => {
                        queue.kick();
                        break;
                    }
                    Err((e, back)) if e == ENOSPC => {
                        chain = back;
                        if self.space.wait_interruptible(&mut vq) {
                            return Err(EINTR);
                        }
                    }
                    Err((e, _)) => return Err(e),
                }
            }
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
            State::Done { response, written } => {
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
        while let Some((entry, written)) = queue.get_buf() {
            let InFlight {
                response, command, ..
            } = KBox::into_inner(entry);
            command.finish(State::Done { response, written });
        }
        drop(vq);
        self.space.notify_all();
    }

    /// Called once the device is reset, before its queues are deleted:
    /// fails every command still queued and refuses new ones.
    pub(crate) fn shut_down(&self) {
        let mut vq = self.vq.lock();
        let Some(mut queue) = vq.take() else {
            return;
        };
        while let Some((entry, _)) = queue.get_buf() {
            entry.command.finish(State::Aborted);
        }
        while let Some(entry) = queue.detach_unused() {
            entry.command.finish(State::Aborted);
        }
        drop(vq);
        self.space.notify_all();
    }
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
