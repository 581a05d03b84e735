// SPDX-License-Identifier: GPL-2.0

//! The video node's side of the driver: what the V4L2 core calls for each
//! open file, handed to its session.

#![forbid(unsafe_code)]

use crate::{
    device::MediaDevice,
    kernel_ext::{
        media::v4l2::{self, Ioctl, OpenFile, Poll},
        mm::NewVma,
    },
    mmap::Mapping,
    session::Session,
};
use kernel::{page::PAGE_SIZE, prelude::*, sync::Arc};

/// The V4L2 driver of virtio-media nodes: one session per open file.
pub(crate) struct VideoDriver;

impl v4l2::Driver for VideoDriver {
    type Data = Arc<MediaDevice>;
    type File = Arc<Session>;

    fn open(dev: &Arc<MediaDevice>, file: &OpenFile<'_>) -> Result<Arc<Session>> {
        // The inode's mappings are removed when the device stops.
        if let Some(inode) = file.inode() {
            dev.note_user_inode(inode)?;
        }
        Session::open(dev.clone(), file.events())
    }

    fn release(session: Arc<Session>) {
        session.release();
    }

    fn ioctl(session: &Arc<Session>, nonblocking: bool, ioctl: Ioctl<'_>) -> Result {
        session.ioctl(nonblocking, ioctl)
    }

    fn poll(session: &Arc<Session>, poll: &Poll<'_>) -> u32 {
        poll.wait_on(session.waiters());
        session.poll_mask(poll.requested(), || poll.events_pending())
    }

    /// A buffer plane: the device's shared memory (MMAP on the device,
    /// pages mapped at fault time), or the driver's pages of a guest-backed
    /// MMAP buffer.
    fn mmap(session: &Arc<Session>, vma: &NewVma) -> Result {
        if !vma.is_shared() {
            return Err(EINVAL);
        }
        let offset = u64::try_from(vma.pgoff())?
            .checked_mul(PAGE_SIZE as u64)
            .ok_or(EINVAL)?;
        let len = u64::try_from(vma.len())?;
        if session.device().guest_mmap() {
            // The plane keeps the pages alive until they are mapped, even if
            // a REQBUFS on another thread drops the session's reference.
            let plane = session.guest_mmap_plane(offset, len)?;
            return vma.map_pages(&plane);
        }
        let mapping = session.map(offset, len, vma.is_writable())?;
        if let Err(e) = vma.map_device_memory(mapping.clone()) {
            // The VMA did not take it: unmap on the device.
            Mapping::unmap_later(mapping);
            return Err(e);
        }
        Ok(())
    }
}
