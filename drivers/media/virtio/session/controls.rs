// SPDX-License-Identifier: GPL-2.0

//! Extended controls: compound and array controls carry a user pointer,
//! whose payload goes to the device as guest memory behind SG entries.

#![forbid(unsafe_code)]

use super::*;
use kernel::uaccess::{UserPtr, UserSlice};

const CTRLS_COUNT: usize = offset_of!(ffi::v4l2_ext_controls, count);
const CTRLS_ERROR_IDX: usize = offset_of!(ffi::v4l2_ext_controls, error_idx);
const CTRLS_POINTER: usize = offset_of!(ffi::v4l2_ext_controls, controls);
const CTRL_SIZE: usize = offset_of!(ffi::v4l2_ext_control, size);
const CTRL_PTR: usize = offset_of!(ffi::v4l2_ext_control, __bindgen_anon_1);
const CONTROL_SIZE: usize = core::mem::size_of::<ffi::v4l2_ext_control>();
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

/// The user pointers of the controls with a payload, by index.
fn array_pointers(array: &[u8]) -> Result<KVec<(usize, u64)>> {
    let mut pointers = KVec::new();
    for (i, control) in array.chunks(CONTROL_SIZE).enumerate() {
        if get_u32(control, CTRL_SIZE).is_some_and(|size| size > 0) {
            pointers.push((i, get_u64(control, CTRL_PTR).unwrap_or(0)), GFP_KERNEL)?;
        }
    }
    Ok(pointers)
}

/// Puts back the user pointers the device may have overwritten.
fn restore_array_pointers(array: &mut [u8], pointers: &[(usize, u64)]) {
    for &(i, ptr) in pointers {
        set_u64(array, i * CONTROL_SIZE + CTRL_PTR, ptr);
    }
}

impl Session {
    pub(super) fn controls_ioctl(&self, code: u32, ctrls: &mut [u8], array: &mut [u8]) -> Result {
        let count = get_u32(ctrls, CTRLS_COUNT).ok_or(EINVAL)?;
        // Compound and array controls carry a user pointer: their payload
        // is copied into guest memory the device reads and writes through
        // SG entries, and copied back once it answered.
        let mut memory = KVec::new();
        let mut pointers = KVec::new();
        let mut total = 0usize;
        for control in array.chunks(CONTROL_SIZE) {
            let size = get_u32(control, CTRL_SIZE).unwrap_or(0);
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
            let ptr = get_u64(control, CTRL_PTR).ok_or(EINVAL)?;
            // Accounted to the program's memory cgroup: it chose the sizes.
            let mut bytes = KVec::new();
            bytes.resize(len, 0u8, GFP_KERNEL_ACCOUNT)?;
            if code != ioctl::VIDIOC_G_EXT_CTRLS {
                user_slice(ptr, len)?.reader().read_slice(&mut bytes)?;
            }
            memory.push(bytes, GFP_KERNEL)?;
            pointers.push((ptr, len), GFP_KERNEL)?;
        }
        let mut pointer = [0u8; POINTER_SIZE];
        pointer.copy_from_slice(
            ctrls
                .get(CTRLS_POINTER..CTRLS_POINTER + POINTER_SIZE)
                .ok_or(EINVAL)?,
        );
        let saved_array_pointers = array_pointers(array)?;
        let result = self.exchange(code, ctrls, array, memory);
        // The core owns these pointers, whatever the device wrote.
        if let Some(p) = ctrls.get_mut(CTRLS_POINTER..CTRLS_POINTER + POINTER_SIZE) {
            p.copy_from_slice(&pointer);
        }
        set_u32(ctrls, CTRLS_COUNT, count);
        if get_u32(ctrls, CTRLS_ERROR_IDX).is_some_and(|idx| idx > count) {
            set_u32(ctrls, CTRLS_ERROR_IDX, count);
        }
        restore_array_pointers(array, &saved_array_pointers);
        let (_, memory) = result?;
        // Every payload comes back, or the ioctl did not work.
        if memory.len() != pointers.len() {
            return Err(EIO);
        }
        for ((ptr, len), mapped) in pointers.iter().zip(memory.iter()) {
            user_slice(*ptr, *len)?
                .writer()
                .write_slice(mapped.bytes().get(..*len).ok_or(EIO)?)?;
        }
        Ok(())
    }
}
