// SPDX-License-Identifier: GPL-2.0
//! virtio-media-vfu: a vfio-user server presenting a virtio-media device
//! (virtio 1.x over PCI) to a vfio-user client such as QEMU's
//! `vfio-user-pci` device.

// Helpers kept for tests and the upcoming backends.
#![allow(dead_code)]

mod avcodec;
mod delay;
mod device;
mod devices;
mod framelog;
mod fuzz;
mod media;
mod pci;
mod shm;
mod stats;
mod transport;
mod vfu;

#[cfg(test)]
mod codec_tests;
#[cfg(test)]
mod tests;

use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use clap::Parser;

fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (num, mult) = match s
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit() && *c != 'x')
    {
        Some((i, _)) if !s.starts_with("0x") => {
            let mult = match s[i..].to_ascii_lowercase().as_str() {
                "k" | "kib" => 1u64 << 10,
                "m" | "mib" => 1 << 20,
                "g" | "gib" => 1 << 30,
                other => return Err(format!("unknown size suffix {other:?}")),
            };
            (&s[..i], mult)
        }
        _ => (s, 1),
    };
    let n = if let Some(hex) = num.strip_prefix("0x") {
        u64::from_str_radix(hex, 16)
    } else {
        num.parse::<u64>()
    }
    .map_err(|e| format!("{s:?}: {e}"))?;
    n.checked_mul(mult)
        .ok_or_else(|| "size overflows".to_string())
}

fn parse_shm_size(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(format!(
            "{n} is not a power of two >= 4096 (PCI BAR sizes are powers of two)"
        ));
    }
    if n > 1 << 32 {
        return Err("at most 4 GiB (V4L2 MMAP offsets are 32-bit)".into());
    }
    Ok(n)
}

/// vfio-user server presenting a virtio-media device (virtio 1.x PCI
/// function) to a vfio-user client such as QEMU's vfio-user-pci.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
pub struct Args {
    /// Path of the UNIX socket to listen on (a stale socket file at this
    /// path is removed first).
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,

    /// virtio device ID; the PCI device ID is 0x1040 + N. 42 is the ID in
    /// the virtio-media specification draft, 48 the one used by some
    /// implementations (crosvm, the virtio-media crate).
    #[arg(long, value_name = "N", default_value_t = 42, value_parser = clap::value_parser!(u16).range(1..64))]
    pub device_id: u16,

    /// Size of the shared-memory BAR (BAR2, virtio shm id 0) that holds MMAP
    /// buffers. Power of two between 4 KiB and 4 GiB; accepts K/M/G suffixes
    /// and 0x prefixes.
    #[arg(long, value_name = "BYTES", default_value = "256M", value_parser = parse_shm_size)]
    pub shm_size: u64,

    /// No shared-memory region, as on hypervisors that cannot map host pages
    /// into the guest: no BAR2 and no SHARED_MEMORY capability. The MMAP
    /// command fails with EINVAL, REQBUFS/CREATE_BUFS with V4L2_MEMORY_MMAP
    /// fail with EINVAL and SUPPORTS_MMAP is not reported; USERPTR works.
    /// The "simple" backend (MMAP only) refuses to start. Cannot be combined
    /// with --shm-size.
    #[arg(long, conflicts_with = "shm_size")]
    pub no_shm: bool,

    /// Device backend: "simple" = the virtio-media crate's single-format
    /// capture device (YU12 640x480, MMAP); "capture" = multi-format,
    /// multi-planar capture device with controls (incl. a U8 array control)
    /// and events; "output" = output device that consumes frames and exposes
    /// their checksum as a control; "m2m" = mem2mem pixel-format converter
    /// with STOP/START drain and LAST buffers; "decoder" = V4L2 stateful
    /// video decoder (H.264, HEVC, VP8, VP9 to NV12/YU12/NM12/YM12, with
    /// libavcodec); "encoder" = V4L2 stateful video encoder
    /// (NV12/YU12/NM12/YM12 to H.264, with libx264 through libavcodec).
    #[arg(long, value_name = "NAME", default_value = "simple", value_parser = clap::builder::PossibleValuesParser::new(devices::BACKENDS))]
    pub backend: String,

    /// Debug logging (equivalent to RUST_LOG=debug; RUST_LOG still wins).
    #[arg(long, short)]
    pub verbose: bool,

    /// No MSI-X capability: the device interrupts through INTx only. QEMU
    /// 11.1.3 aborts when it unplugs (device_del) a vfio-user device that
    /// has MSI-X, so devices that are to be unplugged run with this.
    #[arg(long)]
    pub no_msix: bool,

    /// Exit when the client disconnects instead of waiting for the next one.
    #[arg(long)]
    pub exit_on_disconnect: bool,

    /// Delay every command response by this many milliseconds (the command
    /// itself runs at once; its response is written to the commandq and
    /// signalled when the delay ends, so responses whose delays end out of
    /// order are completed out of order). Events are not delayed.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub response_delay_ms: u64,

    /// Fault injection, off by default. Comma-separated list of:
    /// "delay" (hold the response of every Nth command 500 ms longer, so
    /// responses complete out of order), "error-event" (after every Nth
    /// successful IOCTL send VIRTIO_MEDIA_EVT_ERROR with EIO for its session
    /// and close the session), "malformed" (cut every Nth response short:
    /// 4 bytes for errors, the bare 8-byte header for successes with a
    /// payload). N is --fault-every. Also, for the driver's hardening
    /// tests: "event-flood" (V4L2 events for every open session after
    /// every command and every eventq notification), "dqbuf-repeat" (every
    /// DQBUF event sent twice), "silent" (from the Nth command on, no
    /// command is answered until the driver resets the device),
    /// "dup-session" (an OPEN is answered with the id of a session that is
    /// still open), "huge-format" (G/S/TRY_FMT report a 64 MiB sizeimage),
    /// "huge-count" (REQBUFS reports 100000 buffers), "close-error"
    /// (every CLOSE but the first answered with ENOMEM), "unknown-format"
    /// (ENUM_FMT reports a format no kernel knows, with no description),
    /// "no-caps" (the configuration's device_caps reads 0),
    /// "kernel-status" (every Nth IOCTL answered with ERESTARTNOINTR, an
    /// errno only the kernel may use) and "bytesused-overrun" (every Nth
    /// DQBUF event reports more bytes used than the plane's length).
    #[arg(long, value_name = "LIST", value_delimiter = ',', value_parser = [
        "delay", "error-event", "malformed", "event-flood", "dqbuf-repeat", "silent", "dup-session",
        "huge-format", "huge-count", "close-error", "unknown-format", "no-caps", "kernel-status",
        "bytesused-overrun",
    ])]
    pub fault: Vec<String>,

    /// Period of the injected faults: every Nth command is hit.
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    pub fault_every: u32,

    /// Append one line "SEQUENCE MD5 SESSION" to PATH for every frame the
    /// "simple" and "capture" backends produce, after the frame is in the
    /// buffer and before its DQBUF event is sent: SEQUENCE is the
    /// v4l2_buffer sequence of that event, MD5 the lowercase hex MD5 of the
    /// bytes the guest reads (each plane's first bytesused bytes, planes in
    /// order; what `v4l2-ctl --stream-to` writes for that frame), SESSION
    /// the virtio-media session id. Flushed after every line. Off by
    /// default.
    #[arg(long, value_name = "PATH")]
    pub frame_log: Option<PathBuf>,

    /// Capture backend: every N frames produced while streaming, toggle the
    /// simulated input signal between two resolutions and send
    /// V4L2_EVENT_SOURCE_CHANGE (changes = V4L2_EVENT_SRC_CH_RESOLUTION) to
    /// every session subscribed to it for input 0. 0 (default) = never.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub source_change_every: u32,

    /// Capture backend: a camera with a cropper. One frame size (640x480)
    /// per pixel format, and VIDIOC_G/S_SELECTION with a settable CROP
    /// rectangle inside the full frame. Off by default.
    #[arg(long)]
    pub crop: bool,

    /// A hostile device, deterministic for SEED: mutates response sizes and
    /// fields, errnos, session ids, MMAP addresses and lengths, used
    /// lengths, events (types, sizes, sessions, buffer indexes, floods),
    /// leaves commands unanswered, answers late, twice or with ids never
    /// made available, and changes the configuration space. Each device
    /// reset after DRIVER_OK starts a new round with seed SEED + round and
    /// its own mix of mutations; every mutation is logged ("fuzz: ...").
    /// Off by default.
    #[arg(long, value_name = "SEED")]
    pub fuzz: Option<u64>,

    /// Decoder backend: libavcodec threads per session (1 = decode in the
    /// command's thread only; more use frame threads and add a frame of
    /// delay per thread).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=16))]
    pub codec_threads: u16,

    /// Time every command on the device side (from taking it off the
    /// commandq to its response in the used ring and the interrupt raised)
    /// and write count, min, p50, p99, max and mean per command kind as
    /// JSON to PATH whenever a client disconnects. Off by default.
    #[arg(long, value_name = "PATH")]
    pub stats: Option<PathBuf>,
}

fn main() {
    let args = Args::parse();
    let default_level = if args.verbose { "debug" } else { "info" };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_level))
        .format_timestamp_millis()
        .init();

    if let Err(e) = run(args) {
        log::error!("{e:#}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let shm = if args.no_shm {
        shm::Shm::absent()
    } else {
        shm::Shm::new(args.shm_size)?
    };
    let events = media::EventQueueHandle::default();
    let mem = device::VirtioMediaPci::new_guest_memory();
    let frame_log = match &args.frame_log {
        Some(p) => framelog::FrameLog::open(p)
            .map_err(|e| anyhow::anyhow!("cannot open frame log {}: {e}", p.display()))?,
        None => framelog::FrameLog::default(),
    };
    let backend = devices::make_backend(
        &args.backend,
        events.clone(),
        shm.clone(),
        mem.clone(),
        devices::BackendOpts {
            frame_log,
            source_change_every: args.source_change_every,
            crop: args.crop,
            codec_threads: usize::from(args.codec_threads),
        },
    )?;
    let mut dev = device::VirtioMediaPci::new(args.device_id, shm.clone(), backend, events, mem);
    if args.no_msix {
        dev.pci.remove_msix();
    }
    dev.response_delay = std::time::Duration::from_millis(args.response_delay_ms);
    let fault = |name: &str| args.fault.iter().any(|f| f == name);
    dev.faults = device::Faults {
        delay: fault("delay"),
        error_event: fault("error-event"),
        malformed: fault("malformed"),
        event_flood: fault("event-flood"),
        dqbuf_repeat: fault("dqbuf-repeat"),
        silent: fault("silent"),
        dup_session: fault("dup-session"),
        huge_format: fault("huge-format"),
        huge_count: fault("huge-count"),
        close_error: fault("close-error"),
        unknown_format: fault("unknown-format"),
        no_caps: fault("no-caps"),
        kernel_status: fault("kernel-status"),
        bytesused_overrun: fault("bytesused-overrun"),
        every: args.fault_every,
    };
    if !args.fault.is_empty() {
        log::warn!("fault injection enabled: {:?}", dev.faults);
    }
    if let Some(seed) = args.fuzz {
        log::warn!("fuzzing: a hostile device, seed {seed}");
        dev.fuzz = Some(fuzz::Fuzzer::new(seed, dev.backend.config().as_ref()));
    }
    if args.stats.is_some() {
        dev.stats = Some(stats::CmdStats::default());
    }
    let (tx, rx) = std::sync::mpsc::channel::<device::Delayed>();
    dev.delayed_tx = Some(tx);
    let dev = std::sync::Arc::new(std::sync::Mutex::new(dev));
    let worker_dev = dev.clone();
    std::thread::Builder::new()
        .name("delayed-responses".into())
        .spawn(move || {
            // Completes delayed responses when their delay ends, earliest
            // first, whatever order their commands came in.
            delay::run_worker(rx, |d| match worker_dev.lock() {
                Ok(mut dev) => {
                    dev.complete_delayed(d);
                    true
                }
                Err(_) => false,
            })
        })?;

    if let Ok(md) = std::fs::symlink_metadata(&args.socket) {
        if md.file_type().is_socket() {
            log::warn!("removing stale socket {}", args.socket.display());
            std::fs::remove_file(&args.socket)?;
        } else {
            anyhow::bail!("{} exists and is not a socket", args.socket.display());
        }
    }
    let server = vfio_user::Server::new(
        &args.socket,
        true,
        vfu::irqs(!args.no_msix),
        vfu::regions(shm.size(), shm.raw_fd(), !args.no_msix),
    )
    .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", args.socket.display()))?;
    let shm_desc = if shm.is_present() {
        format!("shm {} bytes", shm.size())
    } else {
        "no shared memory (MMAP refused, USERPTR only)".to_string()
    };
    log::info!(
        "virtio-media-vfu: device id {} (PCI {:04x}:{:04x}), backend {}, {shm_desc}, listening on {}",
        args.device_id,
        pci::VIRTIO_PCI_VENDOR,
        pci::VIRTIO_PCI_DEVICE_BASE + args.device_id,
        args.backend,
        args.socket.display()
    );

    let mut backend = vfu::VfuBackend { dev };
    loop {
        match server.run(&mut backend) {
            Ok(()) => log::info!("client disconnected"),
            Err(e) => log::error!("vfio-user connection ended: {e}"),
        }
        // A new client sees a freshly reset device without DMA mappings or
        // interrupt eventfds.
        {
            let mut dev = backend
                .dev
                .lock()
                .map_err(|_| anyhow::anyhow!("device state poisoned"))?;
            if let (Some(path), Some(st)) = (&args.stats, &dev.stats) {
                match st.write(path) {
                    Ok(()) => log::info!("command timings written to {}", path.display()),
                    Err(e) => log::error!("cannot write {}: {e}", path.display()),
                }
            }
            dev.transport.reset();
            dev.device_reset();
            let _ = dev.dma_unmap(0, u64::MAX, true);
            dev.set_irqs(
                device::VFIO_PCI_MSIX_IRQ_INDEX,
                device::VFIO_IRQ_SET_ACTION_TRIGGER | device::VFIO_IRQ_SET_DATA_NONE,
                0,
                0,
                vec![],
            );
            dev.irqs.intx = None;
        }
        if args.exit_on_disconnect {
            return Ok(());
        }
        log::info!("waiting for the next client on {}", args.socket.display());
    }
}
