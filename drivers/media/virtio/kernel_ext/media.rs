// SPDX-License-Identifier: GPL-2.0

//! Media subsystem abstractions.

pub(crate) mod v4l2;
