// SPDX-License-Identifier: GPL-2.0

//! Dma-bufs of other guest drivers (vivid, udmabuf, ...), imported for the
//! device: attached to the device the virtqueues use and mapped, so the
//! device gets their DMA addresses as SG entries, as for USERPTR.

use crate::ffi;
use core::ptr::NonNull;
use kernel::{error::from_err_ptr, prelude::*};

/// A reference to a `struct device`.
///
/// # Invariants
///
/// `0` holds a reference from `get_device`.
pub(crate) struct DeviceRef(NonNull<ffi::device>);

// SAFETY: Device references may be taken and dropped from any thread.
unsafe impl Send for DeviceRef {}
// SAFETY: Shared references only read the pointer.
unsafe impl Sync for DeviceRef {}

impl DeviceRef {
    /// # Safety
    ///
    /// `device` must be a valid device for the duration of the call.
    pub(crate) unsafe fn get(device: NonNull<ffi::device>) -> Self {
        // SAFETY: `device` is valid (see the safety section).
        unsafe { ffi::get_device(device.as_ptr()) };
        // INVARIANT: The reference was just taken.
        Self(device)
    }
}

impl Drop for DeviceRef {
    fn drop(&mut self) {
        // SAFETY: The reference is ours (invariant).
        unsafe { ffi::put_device(self.0.as_ptr()) };
    }
}

/// A dma-buf attached and mapped for the device.
///
/// # Invariants
///
/// `buf` holds a reference from `dma_buf_get`; `attach` is its attachment
/// to `device`, and `sgt` that attachment's mapping in `dir`, all live
/// until `drop`.
pub(crate) struct ImportedDmaBuf {
    /// Kept until the detach: the attachment points at it.
    _device: DeviceRef,
    buf: NonNull<ffi::dma_buf>,
    attach: NonNull<ffi::dma_buf_attachment>,
    sgt: NonNull<ffi::sg_table>,
    dir: ffi::dma_data_direction,
}

// SAFETY: A dma-buf reference, its attachment and mapping may be used and
// released from any thread.
unsafe impl Send for ImportedDmaBuf {}
// SAFETY: Shared references only read the mapping.
unsafe impl Sync for ImportedDmaBuf {}

impl ImportedDmaBuf {
    /// Imports the dma-buf behind `fd` of the caller for `device`.
    pub(crate) fn import(device: DeviceRef, fd: i32, device_writes: bool) -> Result<Self> {
        let dir = if device_writes {
            ffi::dma_data_direction::DMA_FROM_DEVICE
        } else {
            ffi::dma_data_direction::DMA_TO_DEVICE
        };
        // SAFETY: Any fd value may be passed; it is looked up in the
        // caller's table.
        let buf = unsafe { ffi::dma_buf_get(fd) };
        let buf = NonNull::new(from_err_ptr(buf)?).ok_or(EBADF)?;
        // SAFETY: `buf` is a live reference and `device` a referenced device.
        let attach = unsafe { ffi::dma_buf_attach(buf.as_ptr(), device.0.as_ptr()) };
        let attach = match from_err_ptr(attach).map(NonNull::new) {
            Ok(Some(attach)) => attach,
            Ok(None) | Err(_) => {
                // SAFETY: `buf` is our reference.
                unsafe { ffi::dma_buf_put(buf.as_ptr()) };
                return Err(EINVAL);
            }
        };
        // SAFETY: `attach` is a live attachment of `buf`.
        let sgt = unsafe { ffi::dma_buf_map_attachment_unlocked(attach.as_ptr(), dir) };
        let sgt = match from_err_ptr(sgt).map(NonNull::new) {
            Ok(Some(sgt)) => sgt,
            Ok(None) | Err(_) => {
                // SAFETY: `attach` and `buf` are ours and unmapped.
                unsafe {
                    ffi::dma_buf_detach(buf.as_ptr(), attach.as_ptr());
                    ffi::dma_buf_put(buf.as_ptr());
                }
                return Err(EINVAL);
            }
        };
        // INVARIANT: All were obtained above, in order.
        Ok(Self {
            _device: device,
            buf,
            attach,
            sgt,
            dir,
        })
    }

    /// Size of the dma-buf in bytes.
    pub(crate) fn size(&self) -> usize {
        // SAFETY: `buf` is live (invariant); its size never changes.
        unsafe { (*self.buf.as_ptr()).size }
    }

    /// Device address and length of each DMA segment, in order.
    pub(crate) fn segments(&self) -> Result<KVec<(u64, u32)>> {
        // SAFETY: `sgt` is live (invariant).
        let count = unsafe { (*self.sgt.as_ptr()).nents } as usize;
        let mut addrs = KVec::from_elem(0u64, count, GFP_KERNEL)?;
        let mut lens = KVec::from_elem(0u32, count, GFP_KERNEL)?;
        // SAFETY: `sgt` is live; both arrays hold `count` elements.
        let found = unsafe {
            ffi::virtio_media_sgt_dma_segments(
                self.sgt.as_ptr(),
                addrs.as_mut_ptr(),
                lens.as_mut_ptr(),
                count as u32,
            )
        } as usize;
        let mut segments = KVec::with_capacity(found.min(count), GFP_KERNEL)?;
        for (addr, len) in addrs.iter().zip(lens.iter()).take(found) {
            segments.push((*addr, *len), GFP_KERNEL)?;
        }
        Ok(segments)
    }
}

impl Drop for ImportedDmaBuf {
    fn drop(&mut self) {
        // SAFETY: By the type invariant, each of these is ours and undone
        // once, in the reverse order of `import`.
        unsafe {
            ffi::dma_buf_unmap_attachment_unlocked(
                self.attach.as_ptr(),
                self.sgt.as_ptr(),
                self.dir,
            );
            ffi::dma_buf_detach(self.buf.as_ptr(), self.attach.as_ptr());
            ffi::dma_buf_put(self.buf.as_ptr());
        }
    }
}
