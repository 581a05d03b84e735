// SPDX-License-Identifier: GPL-2.0

//! Vectors that are free to drop when they never allocated.

use core::{
    mem::ManuallyDrop,
    ops::{Deref, DerefMut},
};
use kernel::prelude::*;

/// Drops a vector, without a call into the allocator when it never
/// allocated (see [`LeanVec`] for why): a forwarded ioctl passed three
/// empty vectors around and paid that three times. A vector with no
/// capacity owns nothing, so forgetting it leaks nothing.
pub(crate) fn drop_unallocated<T>(vec: KVec<T>) {
    if vec.capacity() == 0 {
        core::mem::forget(vec);
    }
}

/// A [`KVec`] whose drop calls the allocator only when the vector holds
/// an allocation.
///
/// Linux 7.3's `Vec::drop` hands its buffer to the allocator even when it
/// never allocated one (`krealloc(NULL, 0)`: a call and a `kfree`). A
/// session keeps about ten vectors that most programs never fill, and
/// every close() paid for each of them (`BENCH_TRACE=4` in
/// Documentation/benchmark.rst). Replace with `KVec` once the kernel's
/// `Vec` skips that free.
pub(crate) struct LeanVec<T>(ManuallyDrop<KVec<T>>);

impl<T> LeanVec<T> {
    /// An empty vector; allocates nothing.
    pub(crate) const fn new() -> Self {
        Self(ManuallyDrop::new(KVec::new()))
    }

    /// Takes the elements and the allocation, leaving an empty vector.
    pub(crate) fn take(&mut self) -> KVec<T> {
        core::mem::take(&mut *self.0)
    }
}

impl<T> Default for LeanVec<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Deref for LeanVec<T> {
    type Target = KVec<T>;

    fn deref(&self) -> &KVec<T> {
        &self.0
    }
}

impl<T> DerefMut for LeanVec<T> {
    fn deref_mut(&mut self) -> &mut KVec<T> {
        &mut self.0
    }
}

impl<T> Drop for LeanVec<T> {
    fn drop(&mut self) {
        // Capacity 0: no allocation and, so, no elements; nothing to drop.
        if self.0.capacity() != 0 {
            // SAFETY: This is the only place `self.0` is dropped, and it is
            // not used afterwards: `self` is being dropped.
            unsafe { ManuallyDrop::drop(&mut self.0) };
        }
    }
}

#[kunit_tests(virtio_media_alloc)]
mod tests {
    use super::*;
    use kernel::sync::{
        atomic::{Atomic, Relaxed},
        Arc,
    };

    /// Counts its drops.
    struct Counted(Arc<Atomic<u32>>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    #[test]
    fn elements_are_dropped_once() {
        let drops = Arc::new(Atomic::new(0u32), GFP_KERNEL).expect("allocation");
        let mut vec = LeanVec::new();
        for _ in 0..3 {
            vec.push(Counted(drops.clone()), GFP_KERNEL)
                .expect("allocation");
        }
        drop(vec);
        assert_eq!(drops.load(Relaxed), 3);
    }

    #[test]
    fn take_leaves_an_empty_unallocated_vector() {
        let mut vec = LeanVec::new();
        vec.push(1u64, GFP_KERNEL).expect("allocation");
        let taken = vec.take();
        assert_eq!(taken.as_slice(), &[1u64]);
        assert!(vec.is_empty());
        assert_eq!(vec.capacity(), 0);
    }
}
