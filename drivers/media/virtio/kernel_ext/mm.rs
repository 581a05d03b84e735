// SPDX-License-Identifier: GPL-2.0

//! Guest pages the device is pointed at: a USERPTR buffer's user pages,
//! pinned, and the pages the driver allocates for MMAP buffers of devices
//! without shared memory.
//!
//! User pages are pinned with `FOLL_LONGTERM`, as the device may hold them
//! for as long as a program leaves a buffer queued, and unpinned (marked
//! dirty when the device may have written them) when dropped.

use crate::kernel_ext::bindings as ffi;
use core::{marker::PhantomData, ptr::NonNull};
use kernel::{
    error::to_result,
    page::{Page, PAGE_SIZE},
    prelude::*,
    sync::{Arc, Refcount},
    types::Opaque,
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

/// An inode programs opened a file through, referenced so that every
/// mapping of the file can be removed later.
///
/// # Invariants
///
/// `0` holds a reference taken by `igrab`.
pub(crate) struct UserInode(NonNull<ffi::inode>);

// SAFETY: Inode references may be used and dropped from any thread.
unsafe impl Send for UserInode {}
// SAFETY: Shared references only compare the pointer and unmap, which the
// mm core serialises itself.
unsafe impl Sync for UserInode {}

impl UserInode {
    /// # Safety
    ///
    /// `file` must be a valid, open file.
    pub(crate) unsafe fn of_file(file: *mut ffi::file) -> Option<Self> {
        // SAFETY: Per the caller.
        let inode = unsafe { ffi::virtio_media_file_inode_get(file) };
        // INVARIANT: A non-null result carries a reference.
        NonNull::new(inode).map(Self)
    }

    pub(crate) fn same_as(&self, other: &Self) -> bool {
        self.0 == other.0
    }

    /// Removes every program's mapping of the file through this inode:
    /// a later touch faults again.
    pub(crate) fn unmap_all(&self) {
        // SAFETY: The inode is referenced (invariant).
        unsafe { ffi::virtio_media_inode_unmap_all(self.0.as_ptr()) };
    }
}

impl Drop for UserInode {
    fn drop(&mut self) {
        // SAFETY: The reference is ours (invariant).
        unsafe { ffi::virtio_media_inode_put(self.0.as_ptr()) };
    }
}

/// Memory of a device that programs map, page by page when they fault:
/// the owner decides, at every fault, whether it may still be mapped.
pub(crate) trait DeviceMemory: Send + Sync + 'static {
    /// (guest physical address, page offset the program mapped it at,
    /// length in bytes).
    fn extent(&self) -> (u64, usize, u64);

    /// Runs `insert` unless the memory may no longer be mapped; the owner
    /// must make sure no insertion it allowed outlives its revocation
    /// (it removes the mappings after it).
    fn while_mappable<R>(&self, insert: impl FnOnce() -> R) -> Option<R>;

    /// The last VMA mapping it went away.
    fn released(this: Arc<Self>);
}

/// A VMA being set up by an `mmap` file operation.
///
/// # Invariants
///
/// `0` is a VMA being set up by the `mmap` call that made this.
#[repr(transparent)]
pub(crate) struct NewVma(Opaque<ffi::vm_area_struct>);

impl NewVma {
    /// # Safety
    ///
    /// `vma` must be a VMA being set up by an `mmap` file operation, for
    /// `'a`.
    pub(crate) unsafe fn from_raw<'a>(vma: *mut ffi::vm_area_struct) -> &'a Self {
        // SAFETY: Per the caller; the wrapper is transparent.
        unsafe { &*vma.cast::<Self>() }
    }

    fn as_raw(&self) -> *mut ffi::vm_area_struct {
        self.0.get()
    }

    /// The page offset in the file the program maps.
    pub(crate) fn pgoff(&self) -> usize {
        // SAFETY: The VMA is valid (invariant).
        unsafe { ffi::virtio_media_vma_pgoff(self.as_raw()) }
    }

    /// Bytes mapped.
    pub(crate) fn len(&self) -> usize {
        // SAFETY: The VMA is valid (invariant).
        unsafe { ffi::virtio_media_vma_len(self.as_raw()) }
    }

    /// Whether the mapping is `MAP_SHARED`.
    pub(crate) fn is_shared(&self) -> bool {
        // SAFETY: The VMA is valid (invariant).
        unsafe { ffi::virtio_media_vma_shared(self.as_raw()) }
    }

    /// Whether the mapping is writable.
    pub(crate) fn is_writable(&self) -> bool {
        // SAFETY: The VMA is valid (invariant).
        unsafe { ffi::virtio_media_vma_writable(self.as_raw()) }
    }

    /// Maps `memory` into the VMA at fault time. All VMAs made from this
    /// one (fork, split) share the reference; the last one's close calls
    /// [`DeviceMemory::released`]. A read-only mapping cannot be made
    /// writable.
    pub(crate) fn map_device_memory<M: DeviceMemory>(&self, memory: Arc<M>) -> Result {
        let shared = KBox::new(
            VmaShared {
                memory,
                vmas: Refcount::new(1),
            },
            GFP_KERNEL,
        )?;
        let private = KBox::into_raw(shared);
        // SAFETY: The VMA is being set up (invariant); from now on its
        // private data is the leaked `VmaShared<M>`, which `VmOps::<M>`
        // expects, and the last `close` takes it back.
        unsafe {
            ffi::virtio_media_vma_setup_pfnmap(self.as_raw(), &VmOps::<M>::TABLE, private.cast())
        };
        Ok(())
    }

    /// Maps the pages of `pages` into the VMA now; each mapped page holds
    /// its own reference, so the mapping outlives `pages` safely. A
    /// read-only mapping cannot be made writable.
    pub(crate) fn map_pages(&self, pages: &OwnedPages) -> Result {
        let raw = pages.raw_pages()?;
        // SAFETY: The VMA is being set up (invariant); `raw` holds live
        // pages of `pages`, which outlives the call.
        to_result(unsafe {
            ffi::virtio_media_vma_map_pages(self.as_raw(), raw.as_ptr().cast_mut(), raw.len())
        })
    }
}

/// What the VMAs of one [`NewVma::map_device_memory`] share: the memory
/// and how many VMAs map it.
struct VmaShared<M> {
    memory: Arc<M>,
    vmas: Refcount,
}

/// The VMA operations of device memory of type `M`.
struct VmOps<M>(PhantomData<M>);

impl<M: DeviceMemory> VmOps<M> {
    const TABLE: ffi::vm_operations_struct = ffi::vm_operations_struct {
        open: Some(Self::open),
        close: Some(Self::close),
        fault: Some(Self::fault),
        // SAFETY: All-zero is "no callback" for the other members.
        ..unsafe { core::mem::zeroed() }
    };

    /// # Safety
    ///
    /// `vma` must be a VMA `map_device_memory::<M>` set up, or made from
    /// one.
    unsafe fn shared<'a>(vma: *mut ffi::vm_area_struct) -> &'a VmaShared<M> {
        // SAFETY: Per the caller, the private data is the `VmaShared<M>`
        // all these VMAs share, alive while any of them is.
        unsafe { &*ffi::virtio_media_vma_private(vma).cast::<VmaShared<M>>() }
    }

    /// A VMA was copied (fork) or split: it shares the reference.
    ///
    /// # Safety
    ///
    /// Only the mm core calls this, for a VMA of ours.
    unsafe extern "C" fn open(vma: *mut ffi::vm_area_struct) {
        // SAFETY: See the safety section.
        unsafe { Self::shared(vma) }.vmas.inc();
    }

    /// # Safety
    ///
    /// Only the mm core calls this, for a VMA of ours.
    unsafe extern "C" fn close(vma: *mut ffi::vm_area_struct) {
        // SAFETY: See the safety section.
        let shared = unsafe { Self::shared(vma) };
        if shared.vmas.dec_and_test() {
            // SAFETY: The last VMA gives back the box `map_device_memory`
            // leaked; no other VMA refers to it any more.
            let shared = unsafe { KBox::from_raw(core::ptr::from_ref(shared).cast_mut()) };
            M::released(KBox::into_inner(shared).memory);
        }
    }

    /// A program touched the mapping: maps the whole VMA, unless the
    /// memory may no longer be mapped (then SIGBUS, never stale memory).
    ///
    /// # Safety
    ///
    /// Only the mm core calls this, for a fault in a VMA of ours.
    unsafe extern "C" fn fault(vmf: *mut ffi::vm_fault) -> ffi::vm_fault_t {
        // SAFETY: `vmf` is the fault being handled; its VMA is ours.
        let shared = unsafe { Self::shared(ffi::virtio_media_vmf_vma(vmf)) };
        let (phys, pgoff, len) = shared.memory.extent();
        // SAFETY: `vmf` is valid for the call; `phys`/`len` are the
        // memory's, which the owner checked when it made the mapping.
        let inserted = shared
            .memory
            .while_mappable(|| unsafe { ffi::virtio_media_vma_insert_pfns(vmf, phys, pgoff, len) });
        inserted.unwrap_or(ffi::vm_fault_reason_VM_FAULT_SIGBUS)
    }
}
