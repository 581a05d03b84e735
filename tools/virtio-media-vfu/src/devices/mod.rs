// SPDX-License-Identifier: GPL-2.0
//! Device backends selectable with `--backend`.

pub mod capture;
pub mod codec;
pub mod common;
pub mod decoder;
pub mod encoder;
pub mod m2m;
pub mod simple;

use std::sync::Arc;

use crate::framelog::FrameLog;
use crate::media::{
    make_config, EventQueueHandle, GuestMemMapper, MediaBackend, RunnerBackend, SharedGuestMemory,
};
use crate::shm::{Shm, ShmMapper};

/// Backend names accepted by `--backend`.
pub const BACKENDS: &[&str] = &["simple", "capture", "output", "m2m", "decoder", "encoder"];

/// V4L2 device_caps bits.
pub const V4L2_CAP_VIDEO_CAPTURE_MPLANE: u32 = 0x0000_1000;
pub const V4L2_CAP_STREAMING: u32 = 0x0400_0000;
pub const V4L2_CAP_VIDEO_OUTPUT_MPLANE: u32 = 0x0000_2000;
pub const V4L2_CAP_VIDEO_M2M_MPLANE: u32 = 0x0000_4000;
/// VFL_TYPE_VIDEO
pub const VFL_TYPE_VIDEO: u32 = 0;

/// Per-device options from the command line.
#[derive(Clone, Default)]
pub struct BackendOpts {
    /// `--frame-log` (simple and capture).
    pub frame_log: FrameLog,
    /// `--source-change-every` (capture; 0 = off).
    pub source_change_every: u32,
    /// `--crop` (capture).
    pub crop: bool,
    /// `--codec-threads` (decoder): libavcodec threads per session.
    pub codec_threads: usize,
}

/// Builds the backend `name`. Fails for an unknown name, and for "simple"
/// without shared memory (`shm` absent): that device only has MMAP buffers
/// and keeps them in the shared-memory region.
pub fn make_backend(
    name: &str,
    events: EventQueueHandle,
    shm: Arc<Shm>,
    mem: SharedGuestMemory,
    opts: BackendOpts,
) -> anyhow::Result<Box<dyn MediaBackend>> {
    let BackendOpts {
        frame_log,
        source_change_every,
        crop,
        codec_threads,
    } = opts;
    let guest = GuestMemMapper { mem };
    match name {
        "simple" => {
            if !shm.is_present() {
                anyhow::bail!(
                    "the simple backend cannot run without shared memory (--no-shm): it only has MMAP \
                     buffers and they live in the shared-memory region; use --backend capture, output \
                     or m2m, which also offer USERPTR"
                );
            }
            let config = make_config(
                V4L2_CAP_VIDEO_CAPTURE_MPLANE | V4L2_CAP_STREAMING,
                VFL_TYPE_VIDEO,
                "simple_device",
            );
            let factory = Box::new(move || {
                simple::SimpleCaptureDevice::new(
                    events.clone(),
                    ShmMapper::new(shm.clone()),
                    shm.clone(),
                    frame_log.clone(),
                )
            });
            Ok(Box::new(RunnerBackend::new(factory, config)))
        }
        "capture" => {
            let config = make_config(
                V4L2_CAP_VIDEO_CAPTURE_MPLANE | V4L2_CAP_STREAMING,
                VFL_TYPE_VIDEO,
                "virtio-media-vfu capture",
            );
            let factory = Box::new(move || {
                let mut dev = capture::CaptureDevice::new(common::DevCtx::new(
                    shm.clone(),
                    guest.clone(),
                    events.clone(),
                ));
                dev.frame_log = frame_log.clone();
                dev.source_change_every = source_change_every;
                if crop {
                    dev.enable_crop();
                }
                dev
            });
            Ok(Box::new(RunnerBackend::new(factory, config)))
        }
        "output" => {
            let config = make_config(
                V4L2_CAP_VIDEO_OUTPUT_MPLANE | V4L2_CAP_STREAMING,
                VFL_TYPE_VIDEO,
                "virtio-media-vfu output",
            );
            let factory = Box::new(move || {
                capture::CaptureDevice::new_output(common::DevCtx::new(
                    shm.clone(),
                    guest.clone(),
                    events.clone(),
                ))
            });
            Ok(Box::new(RunnerBackend::new(factory, config)))
        }
        "m2m" => {
            let config = make_config(
                V4L2_CAP_VIDEO_M2M_MPLANE | V4L2_CAP_STREAMING,
                VFL_TYPE_VIDEO,
                "virtio-media-vfu m2m",
            );
            let factory = Box::new(move || {
                m2m::M2mDevice::new(common::DevCtx::new(
                    shm.clone(),
                    guest.clone(),
                    events.clone(),
                ))
            });
            Ok(Box::new(RunnerBackend::new(factory, config)))
        }
        "decoder" => {
            let config = make_config(
                V4L2_CAP_VIDEO_M2M_MPLANE | V4L2_CAP_STREAMING,
                VFL_TYPE_VIDEO,
                "virtio-media-vfu decoder",
            );
            let factory = Box::new(move || {
                decoder::DecoderDevice::new(
                    common::DevCtx::new(shm.clone(), guest.clone(), events.clone()),
                    codec_threads,
                )
            });
            Ok(Box::new(RunnerBackend::new(factory, config)))
        }
        "encoder" => {
            let config = make_config(
                V4L2_CAP_VIDEO_M2M_MPLANE | V4L2_CAP_STREAMING,
                VFL_TYPE_VIDEO,
                "virtio-media-vfu encoder",
            );
            let factory = Box::new(move || {
                encoder::EncoderDevice::new(common::DevCtx::new(
                    shm.clone(),
                    guest.clone(),
                    events.clone(),
                ))
            });
            Ok(Box::new(RunnerBackend::new(factory, config)))
        }
        _ => anyhow::bail!("unknown backend {name:?}"),
    }
}
