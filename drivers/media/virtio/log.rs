// SPDX-License-Identifier: GPL-2.0

//! Log lines that a program or a device can cause at will: the first ones
//! are printed, then only every power of two, each with its count, so that
//! nothing the other side does can flood the kernel log.

#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};
#[cfg(CONFIG_KUNIT)]
use kernel::prelude::*;

/// Counts one occurrence; returns the count if this one is to be logged.
pub(crate) fn counted(counter: &AtomicU64) -> Option<u64> {
    let count = counter.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
    (count <= 10 || count.is_power_of_two()).then_some(count)
}

/// `pr_warn!`, limited per call site as the module says; the count is
/// appended to the line.
macro_rules! warn_limited {
    ($fmt:literal $(, $arg:expr)* $(,)?) => {{
        static COUNT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
        if let Some(count) = $crate::log::counted(&COUNT) {
            kernel::pr_warn!("{} (seen {} times)\n", format_args!($fmt $(, $arg)*), count);
        }
    }};
}
pub(crate) use warn_limited;

#[kunit_tests(virtio_media_log)]
mod tests {
    use super::*;

    #[test]
    fn the_first_ten_then_powers_of_two() {
        let counter = AtomicU64::new(0);
        let logged: KVec<u64> = {
            let mut logged = KVec::new();
            for _ in 0..100 {
                if let Some(n) = counted(&counter) {
                    let _ = logged.push(n, GFP_KERNEL);
                }
            }
            logged
        };
        assert_eq!(
            logged.as_slice(),
            &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 16, 32, 64]
        );
    }
}
