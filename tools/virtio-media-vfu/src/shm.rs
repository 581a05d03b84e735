// SPDX-License-Identifier: GPL-2.0
//! The shared-memory region (virtio shm id 0) behind BAR2.
//!
//! The whole BAR is one memfd. QEMU receives that fd with the region info and
//! maps it straight into the guest, and this process maps the same fd, so a
//! byte written here is the byte the guest reads: no copy.
//!
//! MMAP buffers are carved out of the region by a small first-fit allocator.
//! Every allocation is reference counted: the device's buffer object holds
//! one reference and every live guest mapping (VIRTIO_MEDIA_CMD_MMAP) holds
//! one, so a range stays allocated until both the buffer is gone and the
//! driver has sent MUNMAP (mappings outlive sessions).
//!
//! With `--no-shm` the device has no such region: [`Shm::absent`] stands in
//! for it, with size 0 and no memfd, so every allocation and access fails
//! and callers can ask [`Shm::is_present`] before offering MMAP memory.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex};

pub const PAGE_SIZE: u64 = 4096;

#[derive(Debug)]
struct Allocation {
    len: u64,
    refs: u32,
}

#[derive(Debug, Default)]
struct AllocState {
    /// offset -> allocation, sorted by offset.
    allocs: BTreeMap<u64, Allocation>,
    /// Bumped by `reset()`; references taken before a reset are ignored.
    generation: u64,
}

pub struct Shm {
    /// The memfd; `None` for a device without shared memory.
    file: Option<File>,
    /// Start of our mapping of `file`; null when `file` is `None`.
    ptr: *mut u8,
    size: u64,
    state: Mutex<AllocState>,
}

// SAFETY: `ptr` is a MAP_SHARED mapping owned by this object for its whole
// lifetime; all accesses are bounds-checked and go through raw copies.
unsafe impl Send for Shm {}
unsafe impl Sync for Shm {}

/// A reference to an allocated range of the region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShmRange {
    pub offset: u64,
    pub len: u64,
    pub generation: u64,
}

impl Shm {
    /// Creates a memfd of `size` bytes (rounded up to a page) and maps it.
    pub fn new(size: u64) -> std::io::Result<Arc<Shm>> {
        let size = size.max(PAGE_SIZE).div_ceil(PAGE_SIZE) * PAGE_SIZE;
        // SAFETY: plain syscall with a valid NUL-terminated name.
        let fd = unsafe { libc::memfd_create(c"virtio-media-shm".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just created and is owned by nobody else.
        let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        file.set_len(size)?;
        // SAFETY: mapping a file we own, size matches the file length.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Arc::new(Shm {
            file: Some(file),
            ptr: ptr as *mut u8,
            size,
            state: Mutex::new(AllocState::default()),
        }))
    }

    /// No shared-memory region (`--no-shm`): size 0, no memfd, nothing
    /// mapped. Every access and allocation fails.
    pub fn absent() -> Arc<Shm> {
        Arc::new(Shm {
            file: None,
            ptr: std::ptr::null_mut(),
            size: 0,
            state: Mutex::new(AllocState::default()),
        })
    }

    /// False for [`Shm::absent`].
    pub fn is_present(&self) -> bool {
        self.file.is_some()
    }

    /// Size in bytes (0 when absent).
    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn file(&self) -> Option<&File> {
        self.file.as_ref()
    }

    pub fn raw_fd(&self) -> Option<i32> {
        self.file.as_ref().map(|f| f.as_raw_fd())
    }

    /// True if `fd` refers to this region's memfd (same inode).
    pub fn is_same_file(&self, fd: BorrowedFd) -> bool {
        fn ino(fd: i32) -> Option<(u64, u64)> {
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: st is a valid out pointer.
            if unsafe { libc::fstat(fd, &mut st) } != 0 {
                return None;
            }
            Some((st.st_dev, st.st_ino))
        }
        let Some(file) = &self.file else { return false };
        match (ino(fd.as_raw_fd()), ino(file.as_raw_fd())) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }

    fn check(&self, offset: u64, len: u64) -> Result<(), i32> {
        if self.ptr.is_null() {
            return Err(libc::EINVAL);
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(libc::EINVAL),
        }
    }

    /// Copies `data` into the region at `offset`.
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<(), i32> {
        self.check(offset, data.len() as u64)?;
        // SAFETY: bounds checked above; the mapping lives as long as self.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(offset as usize), data.len())
        };
        Ok(())
    }

    /// Fills `len` bytes at `offset` with `byte`.
    pub fn fill(&self, offset: u64, len: u64, byte: u8) -> Result<(), i32> {
        self.check(offset, len)?;
        // SAFETY: bounds checked above.
        unsafe { std::ptr::write_bytes(self.ptr.add(offset as usize), byte, len as usize) };
        Ok(())
    }

    /// Copies bytes out of the region at `offset`.
    pub fn read_at(&self, offset: u64, out: &mut [u8]) -> Result<(), i32> {
        self.check(offset, out.len() as u64)?;
        // SAFETY: bounds checked above.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.ptr.add(offset as usize),
                out.as_mut_ptr(),
                out.len(),
            )
        };
        Ok(())
    }

    /// Allocates a page-aligned range of at least `len` bytes (first fit).
    /// The returned range holds one reference.
    pub fn alloc(&self, len: u64) -> Result<ShmRange, i32> {
        if len == 0 || !self.is_present() {
            return Err(libc::EINVAL);
        }
        let len = len
            .checked_next_multiple_of(PAGE_SIZE)
            .ok_or(libc::ENOMEM)?;
        let mut st = self.state.lock().map_err(|_| libc::EIO)?;
        let mut cursor = 0u64;
        for (&off, a) in st.allocs.iter() {
            if off.saturating_sub(cursor) >= len {
                break;
            }
            cursor = off + a.len;
        }
        if cursor.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(libc::ENOMEM);
        }
        st.allocs.insert(cursor, Allocation { len, refs: 1 });
        Ok(ShmRange {
            offset: cursor,
            len,
            generation: st.generation,
        })
    }

    /// Takes one more reference on the allocation starting at `offset`;
    /// returns the allocation.
    pub fn add_ref(&self, offset: u64) -> Result<ShmRange, i32> {
        let mut st = self.state.lock().map_err(|_| libc::EIO)?;
        let generation = st.generation;
        let a = st.allocs.get_mut(&offset).ok_or(libc::EINVAL)?;
        a.refs += 1;
        Ok(ShmRange {
            offset,
            len: a.len,
            generation,
        })
    }

    /// Drops one reference; the range is freed when the count reaches 0.
    /// References from before the last `reset()` are ignored.
    pub fn release(&self, offset: u64, generation: u64) -> Result<(), i32> {
        let mut st = self.state.lock().map_err(|_| libc::EIO)?;
        if st.generation != generation {
            return Ok(());
        }
        let a = st.allocs.get_mut(&offset).ok_or(libc::EINVAL)?;
        a.refs -= 1;
        if a.refs == 0 {
            st.allocs.remove(&offset);
        }
        Ok(())
    }

    pub fn generation(&self) -> u64 {
        self.state.lock().map(|s| s.generation).unwrap_or(0)
    }

    /// Frees every allocation (device reset).
    pub fn reset(&self) {
        if let Ok(mut st) = self.state.lock() {
            st.allocs.clear();
            st.generation += 1;
        }
    }

    /// Number of live allocations and bytes allocated (for tests and logs).
    pub fn usage(&self) -> (usize, u64) {
        self.state
            .lock()
            .map(|s| (s.allocs.len(), s.allocs.values().map(|a| a.len).sum()))
            .unwrap_or((0, 0))
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        if self.ptr.is_null() {
            return;
        }
        // SAFETY: ptr/size come from the mmap in new().
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.size as usize) };
    }
}

/// A buffer living inside the region; releases its reference on drop.
pub struct ShmBuffer {
    shm: Arc<Shm>,
    range: ShmRange,
}

impl ShmBuffer {
    pub fn new(shm: &Arc<Shm>, len: u64) -> Result<ShmBuffer, i32> {
        let range = shm.alloc(len)?;
        Ok(ShmBuffer {
            shm: shm.clone(),
            range,
        })
    }
    pub fn offset(&self) -> u64 {
        self.range.offset
    }
    pub fn len(&self) -> u64 {
        self.range.len
    }
    pub fn shm(&self) -> &Arc<Shm> {
        &self.shm
    }
    pub fn fill(&self, off: u64, len: u64, byte: u8) -> Result<(), i32> {
        if off.checked_add(len).is_none_or(|e| e > self.range.len) {
            return Err(libc::EINVAL);
        }
        self.shm.fill(self.range.offset + off, len, byte)
    }
    pub fn write_at(&self, off: u64, data: &[u8]) -> Result<(), i32> {
        if off
            .checked_add(data.len() as u64)
            .is_none_or(|e| e > self.range.len)
        {
            return Err(libc::EINVAL);
        }
        self.shm.write_at(self.range.offset + off, data)
    }
    pub fn read_at(&self, off: u64, out: &mut [u8]) -> Result<(), i32> {
        if off
            .checked_add(out.len() as u64)
            .is_none_or(|e| e > self.range.len)
        {
            return Err(libc::EINVAL);
        }
        self.shm.read_at(self.range.offset + off, out)
    }
}

impl Drop for ShmBuffer {
    fn drop(&mut self) {
        let _ = self.shm.release(self.range.offset, self.range.generation);
    }
}

/// `VirtioMediaHostMemoryMapper` over the region. Devices in this crate keep
/// their MMAP buffers inside the region and register them in the
/// `MmapMappingManager` with `mem_offset == region offset`, so a mapping
/// request is just a reference on an existing allocation: the address given
/// to the driver is the offset inside shared memory region 0.
pub struct ShmMapper {
    shm: Arc<Shm>,
    /// offset -> generation of the mapping reference.
    mappings: BTreeMap<u64, u64>,
}

impl ShmMapper {
    pub fn new(shm: Arc<Shm>) -> Self {
        ShmMapper {
            shm,
            mappings: BTreeMap::new(),
        }
    }
}

impl virtio_media::VirtioMediaHostMemoryMapper for ShmMapper {
    fn add_mapping(
        &mut self,
        buffer: BorrowedFd,
        length: u64,
        offset: u64,
        _rw: bool,
    ) -> Result<u64, i32> {
        if !self.shm.is_same_file(buffer) {
            log::error!("MMAP of a buffer that does not live in the shared memory region");
            return Err(libc::EINVAL);
        }
        if self.mappings.contains_key(&offset) {
            log::error!("MMAP: offset {offset:#x} already mapped");
            return Err(libc::EINVAL);
        }
        let range = self.shm.add_ref(offset).inspect_err(|_| {
            log::error!("MMAP: no allocation at shm offset {offset:#x}");
        })?;
        if length > range.len {
            let _ = self.shm.release(offset, range.generation);
            log::error!(
                "MMAP: length {length:#x} larger than allocation {:#x}",
                range.len
            );
            return Err(libc::EINVAL);
        }
        self.mappings.insert(offset, range.generation);
        log::debug!("MMAP: shm offset {offset:#x} len {length:#x}");
        Ok(offset)
    }

    fn remove_mapping(&mut self, shm_offset: u64) -> Result<(), i32> {
        match self.mappings.remove(&shm_offset) {
            Some(generation) => {
                log::debug!("MUNMAP: shm offset {shm_offset:#x}");
                self.shm.release(shm_offset, generation)
            }
            None => Err(libc::EINVAL),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use virtio_media::VirtioMediaHostMemoryMapper;

    #[test]
    fn alloc_first_fit_and_free() {
        let shm = Shm::new(16 * PAGE_SIZE).unwrap();
        let a = shm.alloc(1).unwrap();
        let b = shm.alloc(PAGE_SIZE + 1).unwrap();
        assert_eq!(a.offset, 0);
        assert_eq!(a.len, PAGE_SIZE);
        assert_eq!(b.offset, PAGE_SIZE);
        assert_eq!(b.len, 2 * PAGE_SIZE);
        shm.release(a.offset, a.generation).unwrap();
        let c = shm.alloc(PAGE_SIZE).unwrap();
        assert_eq!(c.offset, 0, "hole reused");
        assert_eq!(shm.alloc(14 * PAGE_SIZE), Err(libc::ENOMEM));
        assert_eq!(shm.alloc(13 * PAGE_SIZE).unwrap().offset, 3 * PAGE_SIZE);
    }

    #[test]
    fn mapping_outlives_buffer() {
        let shm = Shm::new(8 * PAGE_SIZE).unwrap();
        let mut mapper = ShmMapper::new(shm.clone());
        let buf = ShmBuffer::new(&shm, 100).unwrap();
        let off = buf.offset();
        assert_eq!(
            mapper.add_mapping(shm.file().unwrap().as_fd(), 100, off, true),
            Ok(off)
        );
        drop(buf);
        assert_eq!(shm.usage().0, 1, "still mapped: allocation kept");
        mapper.remove_mapping(off).unwrap();
        assert_eq!(shm.usage().0, 0);
        assert_eq!(mapper.remove_mapping(off), Err(libc::EINVAL));
    }

    #[test]
    fn foreign_fd_and_bad_offset_rejected() {
        let shm = Shm::new(8 * PAGE_SIZE).unwrap();
        let other = Shm::new(PAGE_SIZE).unwrap();
        let mut mapper = ShmMapper::new(shm.clone());
        let _buf = ShmBuffer::new(&shm, 100).unwrap();
        assert_eq!(
            mapper.add_mapping(other.file().unwrap().as_fd(), 100, 0, true),
            Err(libc::EINVAL)
        );
        assert_eq!(
            mapper.add_mapping(shm.file().unwrap().as_fd(), 100, PAGE_SIZE, true),
            Err(libc::EINVAL)
        );
        assert_eq!(
            mapper.add_mapping(shm.file().unwrap().as_fd(), 2 * PAGE_SIZE, 0, true),
            Err(libc::EINVAL)
        );
    }

    #[test]
    fn writes_visible_through_the_fd() {
        use std::os::unix::fs::FileExt;
        let shm = Shm::new(2 * PAGE_SIZE).unwrap();
        let buf = ShmBuffer::new(&shm, 10).unwrap();
        buf.write_at(3, b"abc").unwrap();
        let mut out = [0u8; 3];
        shm.file()
            .unwrap()
            .read_exact_at(&mut out, buf.offset() + 3)
            .unwrap();
        assert_eq!(&out, b"abc");
        assert_eq!(buf.write_at(PAGE_SIZE - 1, b"ab"), Err(libc::EINVAL));
        assert_eq!(shm.write_at(2 * PAGE_SIZE - 1, b"ab"), Err(libc::EINVAL));
        assert_eq!(shm.fill(u64::MAX, 2, 0), Err(libc::EINVAL));
    }

    #[test]
    fn reset_frees_everything_and_ignores_stale_refs() {
        let shm = Shm::new(4 * PAGE_SIZE).unwrap();
        let old = ShmBuffer::new(&shm, 1).unwrap();
        shm.reset();
        assert_eq!(shm.usage().0, 0);
        let new = ShmBuffer::new(&shm, 1).unwrap();
        assert_eq!(new.offset(), old.offset());
        drop(old); // stale generation: must not free `new`
        assert_eq!(shm.usage().0, 1);
    }

    #[test]
    fn absent_region_refuses_everything() {
        let shm = Shm::absent();
        assert!(!shm.is_present());
        assert_eq!(shm.size(), 0);
        assert!(shm.file().is_none() && shm.raw_fd().is_none());
        assert_eq!(shm.alloc(1), Err(libc::EINVAL));
        assert!(ShmBuffer::new(&shm, PAGE_SIZE).is_err());
        let mut b = [0u8; 1];
        assert_eq!(shm.read_at(0, &mut b), Err(libc::EINVAL));
        assert_eq!(shm.write_at(0, &b), Err(libc::EINVAL));
        assert_eq!(
            shm.read_at(0, &mut []),
            Err(libc::EINVAL),
            "not even an empty access"
        );
        assert_eq!(shm.fill(0, 0, 0), Err(libc::EINVAL));
        // A mapper over it accepts no fd, not even a real memfd's.
        let other = Shm::new(PAGE_SIZE).unwrap();
        assert!(!shm.is_same_file(other.file().unwrap().as_fd()));
        let mut mapper = ShmMapper::new(shm.clone());
        assert_eq!(
            mapper.add_mapping(other.file().unwrap().as_fd(), 1, 0, true),
            Err(libc::EINVAL)
        );
        shm.reset();
        assert_eq!(shm.usage(), (0, 0));
    }
}
