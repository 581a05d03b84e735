// SPDX-License-Identifier: GPL-2.0

//! The abstraction layer: safe Rust interfaces over the C APIs the driver
//! uses, shaped as the kernel crate's own (`kernel::virtio`,
//! `kernel::media::v4l2`, memory and dma-buf helpers), which Linux 7.3 does
//! not have yet.
//!
//! Every `unsafe` block and every raw C type of the module lives under
//! this module; it knows nothing of the driver (it imports only `kernel`
//! and itself), and the driver modules beside it are written in safe Rust
//! (`#![forbid(unsafe_code)]`).

pub(crate) mod alloc;
pub(crate) mod bindings;
pub(crate) mod dma_buf;
pub(crate) mod media;
pub(crate) mod mm;
pub(crate) mod sync;
pub(crate) mod uapi;
pub(crate) mod virtio;
pub(crate) mod workqueue;
