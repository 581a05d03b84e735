// SPDX-License-Identifier: GPL-2.0

//! Raw bindings to the virtio and V4L2 C APIs and to our C helpers.
//!
//! Generated at build time for the running kernel's configuration. Only the
//! items of virtio, media and our own headers are emitted here; every other C
//! type they use is the kernel crate's own, re-exported below, so a
//! `struct device` from here and one from `kernel` are the same type.

#![allow(
    clippy::all,
    clippy::pedantic,
    clippy::undocumented_unsafe_blocks,
    dead_code,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    improper_ctypes,
    unreachable_pub,
    unsafe_op_in_unsafe_fn
)]

// Not inlined: rustdoc would document the whole kernel crate's bindings
// again (tens of thousands of pages).
#[doc(no_inline)]
pub(crate) use kernel::bindings::*;

// The generated code names C scalar types as `ffi::c_int` and so on.
use kernel::ffi;

include!("bindings_generated.rs");
