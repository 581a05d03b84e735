// SPDX-License-Identifier: GPL-2.0

//! Extended controls: compound and array controls carry a user pointer,
//! whose payload goes to the device as guest memory behind SG entries.

#![forbid(unsafe_code)]

use super::*;
use crate::kernel_ext::media::v4l2::types::{ExtControl, ExtControls};
use kernel::uaccess::{UserPtr, UserSlice};

/// Largest control payload the driver passes (the V4L2 core's own limit
/// for a compound control's elements is far above any real device's).
const MAX_CONTROL_PAYLOAD: u32 = 1 << 20;
/// Largest sum of the payloads of one ioctl: the core lets a program pass
/// up to 1024 controls.
const MAX_CONTROL_PAYLOADS: usize = 4 << 20;

fn user_slice(ptr: u64, len: usize) -> Result<UserSlice> {
    Ok(UserSlice::new(
        UserPtr::from_addr(usize::try_from(ptr)?),
        len,
    ))
}

impl Session {
    /// G/S/TRY_EXT_CTRLS.
    pub(super) fn controls_ioctl(
        &self,
        code: u32,
        ctrls: &mut ExtControls,
        array: &mut [ExtControl],
    ) -> Result {
        let count = ctrls.count();
        // Compound and array controls carry a user pointer: their payload
        // is copied into guest memory the device reads and writes through
        // SG entries, and copied back once it answered.
        let mut memory = KVec::new();
        let mut payloads = KVec::new();
        let mut total = 0usize;
        for (i, control) in array.iter().enumerate() {
            let size = control.size();
            if size == 0 {
                continue;
            }
            let len = usize::try_from(size)?;
            total = total.saturating_add(len);
            if size > MAX_CONTROL_PAYLOAD || total > MAX_CONTROL_PAYLOADS {
                crate::log::warn_limited!(
                    "session {}: control payloads of {} bytes (one of {}) refused: at most {} each, {} in all",
                    self.id,
                    total,
                    size,
                    MAX_CONTROL_PAYLOAD,
                    MAX_CONTROL_PAYLOADS
                );
                return Err(if size > MAX_CONTROL_PAYLOAD {
                    EINVAL
                } else {
                    ENOMEM
                });
            }
            let ptr = control.ptr();
            // Accounted to the program's memory cgroup: it chose the sizes.
            let mut bytes = KVec::new();
            bytes.resize(len, 0u8, GFP_KERNEL_ACCOUNT)?;
            if code != codes::VIDIOC_G_EXT_CTRLS {
                user_slice(ptr, len)?.reader().read_slice(&mut bytes)?;
            }
            memory.push(bytes, GFP_KERNEL)?;
            payloads.push((i, ptr, len), GFP_KERNEL)?;
        }
        let result = self.exchange(code, ctrls.as_bytes_mut(), array.as_bytes_mut(), memory);
        // The count is the core's, and the user pointers the program's,
        // whatever the device wrote.
        ctrls.set_count(count);
        if ctrls.error_idx() > count {
            ctrls.set_error_idx(count);
        }
        for &(i, ptr, _) in payloads.iter() {
            if let Some(control) = array.get_mut(i) {
                control.set_ptr(ptr);
            }
        }
        let (_, memory) = result?;
        // Every payload comes back, or the ioctl did not work.
        if memory.len() != payloads.len() {
            return Err(EIO);
        }
        for (&(_, ptr, len), mapped) in payloads.iter().zip(memory.iter()) {
            user_slice(ptr, len)?
                .writer()
                .write_slice(mapped.bytes().get(..len).ok_or(EIO)?)?;
        }
        Ok(())
    }
}
