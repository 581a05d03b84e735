// SPDX-License-Identifier: GPL-2.0

//! Guest pages the device is pointed at: a USERPTR buffer's user pages,
//! pinned, and the pages the driver allocates for MMAP buffers of devices
//! without shared memory.
//!
//! User pages are pinned with `FOLL_LONGTERM`, as the device may hold them
//! for as long as a program leaves a buffer queued, and unpinned (marked
//! dirty when the device may have written them) when dropped.

use crate::ffi;
use core::ptr::NonNull;
use kernel::{
    page::{Page, PAGE_SIZE},
    prelude::*,
};

/// Memory made of whole or partial pages, in order.
///
/// # Safety
///
/// Implementors guarantee that the pages `chunks` returns stay allocated
/// (and, for user memory, pinned) for as long as the implementor lives, and
/// that each chunk lies within its page.
pub(crate) unsafe trait PageRange {
    /// The range, page by page: (page, offset in it, length).
    fn chunks(&self) -> impl Iterator<Item = (NonNull<ffi::page>, usize, usize)> + '_;
}

/// Largest buffer plane a program may pin, a bound on what one QBUF makes
/// the kernel allocate and pin (a 4K RGBA frame is 32 MiB).
pub(crate) const MAX_PINNED_LEN: usize = 64 << 20;

/// A range of user memory, pinned.
///
/// # Invariants
///
/// Every entry of `pages` is a page pinned by `pin_user_pages_fast` and not
/// yet unpinned; `offset + len` bytes fit in them.
pub(crate) struct PinnedPages {
    pages: KVec<*mut ffi::page>,
    /// Offset of the range in its first page.
    offset: usize,
    len: usize,
    device_writes: bool,
}

// SAFETY: Pinned pages are not tied to the task that pinned them: they may
// be used and unpinned from any thread.
unsafe impl Send for PinnedPages {}
// SAFETY: Shared references only read the page pointers.
unsafe impl Sync for PinnedPages {}

impl PinnedPages {
    /// Pins `len` bytes of the caller's memory at `addr`, for writing when
    /// `device_writes`.
    pub(crate) fn pin(addr: u64, len: usize, device_writes: bool) -> Result<Self> {
        let addr = usize::try_from(addr)?;
        if len == 0 || len > MAX_PINNED_LEN {
            return Err(EINVAL);
        }
        let offset = addr % PAGE_SIZE;
        let first = addr - offset;
        let end = addr.checked_add(len).ok_or(EFAULT)?;
        let count = (end - first).div_ceil(PAGE_SIZE);
        let mut pages = KVec::from_elem(core::ptr::null_mut(), count, GFP_KERNEL_ACCOUNT)?;
        let mut flags = ffi::FOLL_LONGTERM;
        if device_writes {
            flags |= ffi::FOLL_WRITE;
        }
        let mut pinned = 0usize;
        let mut error = None;
        while let Some(slots) = pages.get_mut(pinned..).filter(|slots| !slots.is_empty()) {
            // Bounded by MAX_PINNED_LEN / PAGE_SIZE, so it fits.
            let want = slots.len() as i32;
            // SAFETY: `slots` has room for `want` page pointers; the user
            // range is checked by the callee.
            let ret = unsafe {
                ffi::pin_user_pages_fast(
                    first + pinned * PAGE_SIZE,
                    want,
                    flags,
                    slots.as_mut_ptr(),
                )
            };
            match usize::try_from(ret) {
                Ok(0) => {
                    error = Some(EFAULT);
                    break;
                }
                Ok(n) => pinned += n.min(want as usize),
                Err(_) => {
                    error = Some(Error::from_errno(ret));
                    break;
                }
            }
        }
        // INVARIANT: The first `pinned` entries were filled with pinned
        // pages; dropping `this` unpins them if the range is incomplete.
        pages.truncate(pinned);
        let this = Self {
            pages,
            offset,
            len,
            device_writes,
        };
        match error {
            Some(e) => Err(e),
            None => Ok(this),
        }
    }
}

// SAFETY: The pages are pinned until `drop`; `offset + len` fit in them (type
// invariant), which is what the chunks cover.
unsafe impl PageRange for PinnedPages {
    fn chunks(&self) -> impl Iterator<Item = (NonNull<ffi::page>, usize, usize)> + '_ {
        let mut remaining = self.len;
        let mut offset = self.offset;
        // Pinned pages are never null (invariant): nothing is filtered out.
        self.pages.iter().filter_map(move |page| {
            let len = (PAGE_SIZE - offset).min(remaining);
            remaining -= len;
            let chunk = NonNull::new(*page).map(|page| (page, offset, len));
            offset = 0;
            chunk
        })
    }
}

impl Drop for PinnedPages {
    fn drop(&mut self) {
        // SAFETY: By the type invariant, `pages` are pinned by us and still
        // pinned.
        unsafe {
            ffi::unpin_user_pages_dirty_lock(
                self.pages.as_mut_ptr(),
                self.pages.len(),
                self.device_writes,
            )
        };
    }
}

/// Zeroed pages the driver allocated: one plane of a guest-backed MMAP
/// buffer, which programs map and the device is pointed at.
pub(crate) struct OwnedPages {
    pages: KVec<Page>,
    len: usize,
}

impl OwnedPages {
    /// Allocates `len` bytes (whole pages), zeroed: programs map them.
    pub(crate) fn new(len: usize) -> Result<Self> {
        if len == 0 || len > MAX_PINNED_LEN {
            return Err(EINVAL);
        }
        let count = len.div_ceil(PAGE_SIZE);
        // Accounted to the program's memory cgroup: a program asks for
        // these buffers.
        let mut pages = KVec::with_capacity(count, GFP_KERNEL_ACCOUNT)?;
        for _ in 0..count {
            pages.push(
                Page::alloc_page(GFP_KERNEL_ACCOUNT | __GFP_ZERO)?,
                GFP_KERNEL_ACCOUNT,
            )?;
        }
        Ok(Self { pages, len })
    }

    /// Bytes the buffer plane holds.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The pages, for mapping them into a process.
    pub(crate) fn raw_pages(&self) -> Result<KVec<*mut ffi::page>> {
        let mut raw = KVec::with_capacity(self.pages.len(), GFP_KERNEL)?;
        for page in self.pages.iter() {
            raw.push(page.as_ptr(), GFP_KERNEL)?;
        }
        Ok(raw)
    }
}

impl OwnedPages {
    /// Exports the pages as a dma-buf; returns its fd in the caller's
    /// table (`flags`: `O_CLOEXEC` and access mode).
    pub(crate) fn export(&self, flags: u32) -> Result<i32> {
        let raw = self.raw_pages()?;
        // SAFETY: `raw` holds `raw.len()` live pages of `self`; the export
        // takes its own reference on each.
        let fd = unsafe { ffi::virtio_media_export_pages(raw.as_ptr(), raw.len(), flags) };
        if fd < 0 {
            return Err(Error::from_errno(fd));
        }
        Ok(fd)
    }
}

// SAFETY: The pages are owned by `self` and freed only when it drops; the
// chunks cover `len` bytes of them, page by page.
unsafe impl PageRange for OwnedPages {
    fn chunks(&self) -> impl Iterator<Item = (NonNull<ffi::page>, usize, usize)> + '_ {
        let mut remaining = self.len;
        self.pages.iter().filter_map(move |page| {
            let len = PAGE_SIZE.min(remaining);
            remaining -= len;
            NonNull::new(page.as_ptr()).map(|page| (page, 0, len))
        })
    }
}
