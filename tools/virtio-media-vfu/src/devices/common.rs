// SPDX-License-Identifier: GPL-2.0
//! Building blocks shared by the project test devices: device context
//! (shared memory, MMAP mapping manager, guest memory, event queue), pixel
//! formats, a buffer queue with MMAP (in the shared-memory BAR) and USERPTR
//! memory, a small control framework and event subscriptions.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::AsFd;
use std::sync::Arc;

use v4l2r::bindings;
use v4l2r::ioctl::{BufferCapabilities, BufferFlags, UncheckedV4l2Buffer, V4l2Buffer};
use v4l2r::memory::MemoryType;
use v4l2r::{PixelFormat, QueueType};
use virtio_media::mmap::MmapMappingManager;
use virtio_media::protocol::{SessionEvent, SgEntry, V4l2Event, VIRTIO_MEDIA_MMAP_FLAG_RW};
use virtio_media::{GuestMemoryRange, VirtioMediaEventQueue, VirtioMediaGuestMemoryMapper};

use crate::media::{EventQueueHandle, GuestMemMapper};
use crate::shm::{Shm, ShmBuffer, ShmMapper};

pub type IoctlResult<T> = Result<T, i32>;

pub const MAX_BUFFERS: u32 = 32;

/// Device-wide resources shared by all sessions.
pub struct DevCtx {
    pub shm: Arc<Shm>,
    pub mmap: MmapMappingManager<ShmMapper>,
    pub guest: GuestMemMapper,
    pub events: EventQueueHandle,
    /// session id -> event subscriptions.
    pub subs: BTreeMap<u32, Vec<Subscription>>,
    pub event_sequence: BTreeMap<u32, u32>,
}

impl DevCtx {
    pub fn new(shm: Arc<Shm>, guest: GuestMemMapper, events: EventQueueHandle) -> Self {
        DevCtx {
            mmap: MmapMappingManager::from(ShmMapper::new(shm.clone())),
            shm,
            guest,
            events,
            subs: BTreeMap::new(),
            event_sequence: BTreeMap::new(),
        }
    }

    /// True if the device has a shared-memory region, i.e. can offer MMAP
    /// buffers (not with `--no-shm`).
    pub fn has_shm(&self) -> bool {
        self.shm.is_present()
    }

    /// Memory types REQBUFS and CREATE_BUFS accept: USERPTR always, MMAP
    /// only with shared memory.
    pub fn memory_supported(&self, memory: MemoryType) -> bool {
        match memory {
            MemoryType::UserPtr => true,
            MemoryType::Mmap => self.has_shm(),
            _ => false,
        }
    }

    /// `capabilities` of REQBUFS and CREATE_BUFS: what `memory_supported`
    /// accepts, plus orphaned buffers (which vb2 always reports).
    pub fn buf_caps(&self) -> u32 {
        let mut caps =
            BufferCapabilities::SUPPORTS_USERPTR | BufferCapabilities::SUPPORTS_ORPHANED_BUFS;
        if self.has_shm() {
            caps |= BufferCapabilities::SUPPORTS_MMAP;
        }
        caps.bits()
    }

    /// MMAP command: `offset` is a plane's mem_offset == its shm offset.
    pub fn do_mmap(&mut self, owned: &[u32], flags: u32, offset: u32) -> IoctlResult<(u64, u64)> {
        let Some(file) = self.shm.file() else {
            log::warn!(
                "MMAP of offset {offset:#x} refused (EINVAL): the device has no shared-memory region (--no-shm), \
                 so it has no MMAP buffers to map"
            );
            return Err(libc::EINVAL);
        };
        if !owned.contains(&offset) {
            return Err(libc::EINVAL);
        }
        let rw = flags & VIRTIO_MEDIA_MMAP_FLAG_RW != 0;
        let fd = file.as_fd();
        self.mmap.create_mapping(offset, fd, rw).map_err(|e| {
            log::error!("MMAP of offset {offset:#x} failed: {e}");
            libc::EINVAL
        })
    }

    pub fn do_munmap(&mut self, guest_addr: u64) -> IoctlResult<()> {
        self.mmap
            .remove_mapping(guest_addr)
            .map(|_| ())
            .map_err(|_| libc::EINVAL)
    }

    pub fn send_event(&mut self, session: u32, mut ev: bindings::v4l2_event) {
        let seq = self.event_sequence.entry(session).or_insert(0);
        ev.sequence = *seq;
        *seq = seq.wrapping_add(1);
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out pointer.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ev.timestamp.tv_sec = ts.tv_sec as _;
        ev.timestamp.tv_nsec = ts.tv_nsec as _;
        self.events
            .send_event(V4l2Event::Event(SessionEvent::new(session, ev)));
    }

    pub fn subscribed(&self, session: u32, type_: u32, id: u32) -> Option<Subscription> {
        self.subs
            .get(&session)?
            .iter()
            .find(|s| s.type_ == type_ && (s.id == id || type_ != bindings::V4L2_EVENT_CTRL))
            .copied()
    }

    pub fn subscribe(&mut self, session: u32, sub: Subscription) {
        let list = self.subs.entry(session).or_default();
        if !list.iter().any(|s| s.type_ == sub.type_ && s.id == sub.id) {
            list.push(sub);
        }
    }

    pub fn unsubscribe(&mut self, session: u32, type_: u32, id: u32) {
        if let Some(list) = self.subs.get_mut(&session) {
            if type_ == bindings::V4L2_EVENT_ALL {
                list.clear();
            } else {
                list.retain(|s| !(s.type_ == type_ && s.id == id));
            }
        }
    }

    pub fn drop_session(&mut self, session: u32) {
        self.subs.remove(&session);
        self.event_sequence.remove(&session);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subscription {
    pub type_: u32,
    pub id: u32,
    pub flags: u32,
}

// ---- pixel formats ----------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaneLayout {
    pub bytesperline: u32,
    pub sizeimage: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub fourcc: u32,
    pub width: u32,
    pub height: u32,
    pub planes: Vec<PlaneLayout>,
}

pub const fn fourcc(b: &[u8; 4]) -> u32 {
    PixelFormat::from_fourcc(b).to_u32()
}

pub const FMT_YUYV: u32 = fourcc(b"YUYV");
pub const FMT_RGB24: u32 = fourcc(b"RGB3");
pub const FMT_NV12: u32 = fourcc(b"NV12");
pub const FMT_NV12M: u32 = fourcc(b"NM12");
pub const FMT_YUV420M: u32 = fourcc(b"YM12");
pub const FMT_YUV420: u32 = fourcc(b"YU12");
pub const FMT_GREY: u32 = fourcc(b"GREY");

pub fn fourcc_str(f: u32) -> String {
    f.to_le_bytes()
        .iter()
        .map(|&b| if b.is_ascii_graphic() { b as char } else { '?' })
        .collect()
}

/// Human-readable description for VIDIOC_ENUM_FMT.
pub fn format_description(f: u32) -> &'static str {
    match f {
        FMT_YUYV => "YUYV 4:2:2",
        FMT_RGB24 => "24-bit RGB 8-8-8",
        FMT_NV12 => "Y/UV 4:2:0",
        FMT_NV12M => "Y/UV 4:2:0 (N-C)",
        FMT_YUV420M => "Planar YUV 4:2:0 (N-C)",
        FMT_YUV420 => "Planar YUV 4:2:0",
        FMT_GREY => "8-bit Greyscale",
        _ => "unknown",
    }
}

/// Memory-plane layout of `fourcc` at `width`x`height` (even sizes).
pub fn layout(fourcc: u32, width: u32, height: u32) -> Option<Format> {
    let (w, h) = (width, height);
    let p = |bpl: u32, size: u32| PlaneLayout {
        bytesperline: bpl,
        sizeimage: size,
    };
    let planes = match fourcc {
        FMT_YUYV => vec![p(w * 2, w * 2 * h)],
        FMT_RGB24 => vec![p(w * 3, w * 3 * h)],
        FMT_GREY => vec![p(w, w * h)],
        FMT_NV12 => vec![p(w, w * h * 3 / 2)],
        FMT_NV12M => vec![p(w, w * h), p(w, w * h / 2)],
        FMT_YUV420M => vec![p(w, w * h), p(w / 2, w * h / 4), p(w / 2, w * h / 4)],
        FMT_YUV420 => vec![p(w, w * h * 3 / 2)],
        _ => return None,
    };
    Some(Format {
        fourcc,
        width,
        height,
        planes,
    })
}

pub fn fmt_to_v4l2(queue: QueueType, f: &Format) -> bindings::v4l2_format {
    let mut out = bindings::v4l2_format {
        type_: queue as u32,
        ..Default::default()
    };
    if queue.is_multiplanar() {
        let mut pix_mp = bindings::v4l2_pix_format_mplane {
            width: f.width,
            height: f.height,
            pixelformat: f.fourcc,
            field: bindings::v4l2_field_V4L2_FIELD_NONE,
            colorspace: bindings::v4l2_colorspace_V4L2_COLORSPACE_SRGB,
            num_planes: f.planes.len() as u8,
            ..Default::default()
        };
        for (i, pl) in f.planes.iter().enumerate() {
            pix_mp.plane_fmt[i].bytesperline = pl.bytesperline;
            pix_mp.plane_fmt[i].sizeimage = pl.sizeimage;
        }
        out.fmt.pix_mp = pix_mp;
    } else {
        let size: u32 = f.planes.iter().map(|p| p.sizeimage).sum();
        out.fmt.pix = bindings::v4l2_pix_format {
            width: f.width,
            height: f.height,
            pixelformat: f.fourcc,
            field: bindings::v4l2_field_V4L2_FIELD_NONE,
            bytesperline: f.planes.first().map(|p| p.bytesperline).unwrap_or(0),
            sizeimage: size,
            colorspace: bindings::v4l2_colorspace_V4L2_COLORSPACE_SRGB,
            ..Default::default()
        };
    }
    out
}

/// (fourcc, width, height) requested by a v4l2_format.
pub fn fmt_request(queue: QueueType, f: &bindings::v4l2_format) -> (u32, u32, u32) {
    // SAFETY: the union member read matches the queue type.
    unsafe {
        if queue.is_multiplanar() {
            (
                f.fmt.pix_mp.pixelformat,
                f.fmt.pix_mp.width,
                f.fmt.pix_mp.height,
            )
        } else {
            (f.fmt.pix.pixelformat, f.fmt.pix.width, f.fmt.pix.height)
        }
    }
}

// ---- buffers ----------------------------------------------------------

pub enum PlaneMem {
    Mmap(ShmBuffer),
    UserPtr(Vec<SgEntry>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufState {
    Dequeued,
    Queued,
}

pub struct Buf {
    pub state: BufState,
    pub raw: bindings::v4l2_buffer,
    pub planes: [bindings::v4l2_plane; bindings::VIDEO_MAX_PLANES as usize],
    pub mem: Vec<PlaneMem>,
}

// SAFETY: the only non-Send field is the `m.planes` pointer inside the raw
// v4l2_buffer, which is never set or dereferenced here.
unsafe impl Send for Buf {}

impl Buf {
    pub fn to_v4l2(&self) -> IoctlResult<V4l2Buffer> {
        let queue = QueueType::n(self.raw.type_).ok_or(libc::EINVAL)?;
        let planes = queue.is_multiplanar().then_some(self.planes);
        V4l2Buffer::try_from(UncheckedV4l2Buffer(self.raw, planes)).map_err(|e| {
            log::error!("internal buffer conversion failed: {e:?}");
            libc::EIO
        })
    }
}

/// One V4L2 buffer queue of a session.
pub struct BufQueue {
    pub queue: QueueType,
    pub memory: MemoryType,
    pub bufs: Vec<Buf>,
    pub queued: VecDeque<usize>,
    pub streaming: bool,
    pub sequence: u32,
    /// Plane sizes the buffers were allocated for.
    pub plane_sizes: Vec<u32>,
    /// Buffers carry V4L2_BUF_FLAG_TIMESTAMP_COPY (mem2mem) instead of
    /// monotonic capture timestamps.
    pub ts_copy: bool,
}

fn now_timeval() -> bindings::timeval {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    bindings::timeval {
        tv_sec: ts.tv_sec as _,
        tv_usec: (ts.tv_nsec / 1000) as _,
    }
}

impl BufQueue {
    pub fn new(queue: QueueType) -> Self {
        BufQueue {
            queue,
            memory: MemoryType::Mmap,
            bufs: vec![],
            queued: VecDeque::new(),
            streaming: false,
            sequence: 0,
            plane_sizes: vec![],
            ts_copy: false,
        }
    }

    /// mem_offsets of all MMAP planes (for MMAP command validation).
    pub fn mmap_offsets(&self) -> Vec<u32> {
        self.bufs
            .iter()
            .flat_map(|b| b.mem.iter())
            .filter_map(|m| match m {
                PlaneMem::Mmap(s) => u32::try_from(s.offset()).ok(),
                _ => None,
            })
            .collect()
    }

    pub fn release(&mut self, ctx: &mut DevCtx) {
        for off in self.mmap_offsets() {
            ctx.mmap.unregister_buffer(off);
        }
        self.bufs.clear();
        self.queued.clear();
    }

    pub fn reqbufs(
        &mut self,
        ctx: &mut DevCtx,
        memory: MemoryType,
        count: u32,
        plane_sizes: &[u32],
    ) -> IoctlResult<u32> {
        // Like vb2: an unsupported memory type is EINVAL before anything
        // else is looked at.
        if !ctx.memory_supported(memory) {
            if memory == MemoryType::Mmap {
                log::debug!("REQBUFS with MMAP memory refused: no shared-memory region");
            }
            return Err(libc::EINVAL);
        }
        if self.streaming {
            return Err(libc::EBUSY);
        }
        self.release(ctx);
        self.memory = memory;
        self.plane_sizes = plane_sizes.to_vec();
        let count = count.min(MAX_BUFFERS);
        self.add_buffers(ctx, count)?;
        Ok(count)
    }

    /// VIDIOC_CREATE_BUFS on this queue. `count` 0 only queries: EINVAL
    /// for a memory type the device does not offer, else the capabilities
    /// and `index` = the number of buffers; the format (maybe all zeroes
    /// but for its type) is not looked at and nothing changes. Otherwise,
    /// like vb2, the plane count and sizes come from `format` (its pixel
    /// format and frame size do not matter), each plane at least `needed`
    /// (what the current format needs), and all buffers have one memory
    /// type.
    pub fn create_bufs(
        &mut self,
        ctx: &mut DevCtx,
        count: u32,
        memory: MemoryType,
        format: bindings::v4l2_format,
        needed: &[u32],
    ) -> IoctlResult<bindings::v4l2_create_buffers> {
        if !ctx.memory_supported(memory) {
            if memory == MemoryType::Mmap && count > 0 {
                log::debug!("CREATE_BUFS with MMAP memory refused: no shared-memory region");
            }
            return Err(libc::EINVAL);
        }
        let (index, count) = if count == 0 {
            (self.bufs.len() as u32, 0)
        } else {
            if !self.bufs.is_empty() && memory != self.memory {
                return Err(libc::EINVAL);
            }
            let sizes = requested_plane_sizes(self.queue, &format)?;
            if sizes.len() != needed.len() || sizes.iter().zip(needed).any(|(a, b)| a < b) {
                return Err(libc::EINVAL);
            }
            if self.bufs.is_empty() {
                self.memory = memory;
                self.plane_sizes = needed.to_vec();
            }
            let count = count.min(MAX_BUFFERS - self.bufs.len() as u32);
            let index = if count > 0 {
                self.add_buffers_sized(ctx, count, &sizes)?
            } else {
                self.bufs.len() as u32
            };
            (index, count)
        };
        Ok(bindings::v4l2_create_buffers {
            index,
            count,
            memory: memory as u32,
            format,
            capabilities: ctx.buf_caps(),
            ..Default::default()
        })
    }

    /// Appends `count` buffers (REQBUFS / CREATE_BUFS). Returns first index.
    pub fn add_buffers(&mut self, ctx: &mut DevCtx, count: u32) -> IoctlResult<u32> {
        let sizes = self.plane_sizes.clone();
        self.add_buffers_sized(ctx, count, &sizes)
    }

    /// Appends `count` buffers whose planes have the given sizes (CREATE_BUFS
    /// may ask for larger planes than the format needs).
    pub fn add_buffers_sized(
        &mut self,
        ctx: &mut DevCtx,
        count: u32,
        sizes: &[u32],
    ) -> IoctlResult<u32> {
        if sizes.len() != self.plane_sizes.len()
            || sizes.iter().zip(&self.plane_sizes).any(|(a, b)| a < b)
        {
            return Err(libc::EINVAL);
        }
        let first = self.bufs.len() as u32;
        if first + count > MAX_BUFFERS {
            return Err(libc::ENOMEM);
        }
        let mp = self.queue.is_multiplanar();
        for i in first..first + count {
            let mut raw = bindings::v4l2_buffer {
                index: i,
                type_: self.queue as u32,
                memory: self.memory as u32,
                field: bindings::v4l2_field_V4L2_FIELD_NONE,
                flags: if self.ts_copy {
                    BufferFlags::TIMESTAMP_COPY.bits()
                } else {
                    BufferFlags::TIMESTAMP_MONOTONIC.bits()
                },
                ..Default::default()
            };
            let mut planes = [bindings::v4l2_plane::default(); bindings::VIDEO_MAX_PLANES as usize];
            let mut mem = vec![];
            let mut first_offset = 0u32;
            for (p, &size) in sizes.iter().enumerate() {
                planes[p].length = size;
                if self.memory == MemoryType::Mmap {
                    let b = ShmBuffer::new(&ctx.shm, size as u64).map_err(|e| {
                        log::error!("cannot allocate {size} bytes in shared memory: {e}");
                        libc::ENOMEM
                    })?;
                    let off = u32::try_from(b.offset()).map_err(|_| libc::ENOMEM)?;
                    ctx.mmap
                        .register_buffer(Some(off), size)
                        .map_err(|_| libc::EINVAL)?;
                    planes[p].m.mem_offset = off;
                    if p == 0 {
                        first_offset = off;
                    }
                    mem.push(PlaneMem::Mmap(b));
                }
            }
            if mp {
                raw.length = sizes.len() as u32;
            } else {
                raw.length = sizes.first().copied().unwrap_or(0);
                raw.m.offset = first_offset;
            }
            self.bufs.push(Buf {
                state: BufState::Dequeued,
                raw,
                planes,
                mem,
            });
        }
        Ok(first)
    }

    pub fn querybuf(&self, index: u32) -> IoctlResult<V4l2Buffer> {
        self.bufs.get(index as usize).ok_or(libc::EINVAL)?.to_v4l2()
    }

    /// Validates and queues `buffer`. For OUTPUT queues the bytesused of
    /// every plane is taken from the driver (0 means "whole plane").
    pub fn qbuf(
        &mut self,
        buffer: &V4l2Buffer,
        regions: Vec<Vec<SgEntry>>,
    ) -> IoctlResult<V4l2Buffer> {
        if buffer.queue() != self.queue || buffer.memory() != self.memory {
            return Err(libc::EINVAL);
        }
        let idx = buffer.index() as usize;
        let nplanes = self.plane_sizes.len();
        let buf = self.bufs.get_mut(idx).ok_or(libc::EINVAL)?;
        if buf.state == BufState::Queued {
            return Err(libc::EINVAL);
        }
        let given = buffer.num_planes();
        if given != nplanes {
            return Err(libc::EINVAL);
        }
        let output = !matches!(
            self.queue,
            QueueType::VideoCapture | QueueType::VideoCaptureMplane
        );
        // bytesused of every plane, checked before anything changes.
        let mut used = vec![];
        for (p, plane) in buffer.planes_iter().enumerate() {
            if !output {
                used.push(0);
                continue;
            }
            // The length of the buffer as allocated, not as the guest says
            // (for USERPTR, the length it is queued with).
            let length = if self.memory == MemoryType::UserPtr {
                *plane.length
            } else if self.queue.is_multiplanar() {
                buf.planes[p].length
            } else {
                buf.raw.length
            };
            let u = *plane.bytesused;
            if u > length {
                return Err(libc::EINVAL);
            }
            used.push(if u == 0 { length } else { u });
        }
        let mut mem_userptr = vec![];
        if self.memory == MemoryType::UserPtr {
            if regions.len() != nplanes {
                return Err(libc::EINVAL);
            }
            for (p, (plane, sgs)) in buffer.planes_iter().zip(regions).enumerate() {
                let total: u64 = sgs.iter().map(|s| s.len as u64).sum();
                if (*plane.length as u64) < self.plane_sizes[p] as u64
                    || total < *plane.length as u64
                {
                    return Err(libc::EINVAL);
                }
                mem_userptr.push(PlaneMem::UserPtr(sgs));
            }
            buf.mem = mem_userptr;
            // Keep the guest's pointers untouched (spec: must be returned as given).
            let src = buffer.as_v4l2_buffer();
            buf.raw.m = src.m;
            buf.raw.length = src.length;
            for (p, src_plane) in buffer.as_v4l2_planes().iter().enumerate() {
                buf.planes[p].m = src_plane.m;
                buf.planes[p].length = src_plane.length;
            }
        }
        for (p, &used) in used.iter().enumerate() {
            if self.queue.is_multiplanar() {
                buf.planes[p].bytesused = used;
            } else {
                buf.raw.bytesused = used;
            }
        }
        if output && self.ts_copy {
            // Copied to the CAPTURE buffer made from it (mem2mem).
            buf.raw.timestamp = buffer.as_v4l2_buffer().timestamp;
        }
        buf.state = BufState::Queued;
        // What the device set when it last returned the buffer goes (the
        // frame type flags of an encoder's CAPTURE buffers too).
        let returned = BufferFlags::DONE
            | BufferFlags::ERROR
            | BufferFlags::LAST
            | BufferFlags::KEYFRAME
            | BufferFlags::PFRAME
            | BufferFlags::BFRAME;
        buf.raw.flags = (buf.raw.flags | BufferFlags::QUEUED.bits()) & !returned.bits();
        self.queued.push_back(idx);
        buf.to_v4l2()
    }

    pub fn streamon(&mut self) -> IoctlResult<()> {
        if self.bufs.is_empty() {
            return Err(libc::EINVAL);
        }
        self.streaming = true;
        Ok(())
    }

    pub fn streamoff(&mut self) {
        self.streaming = false;
        self.queued.clear();
        self.sequence = 0;
        for b in &mut self.bufs {
            b.state = BufState::Dequeued;
            b.raw.flags &= !BufferFlags::QUEUED.bits();
        }
    }

    pub fn plane_len(&self, idx: usize, plane: usize) -> u32 {
        self.plane_sizes.get(plane).copied().unwrap_or(0).min(
            self.bufs
                .get(idx)
                .map(|b| {
                    if self.queue.is_multiplanar() {
                        b.planes[plane].length
                    } else {
                        b.raw.length
                    }
                })
                .unwrap_or(0),
        )
    }

    pub fn bytesused(&self, idx: usize, plane: usize) -> u32 {
        match self.bufs.get(idx) {
            Some(b) if self.queue.is_multiplanar() => b.planes[plane].bytesused,
            Some(b) => b.raw.bytesused,
            None => 0,
        }
    }

    /// Writes `data` at the start of plane `plane` of buffer `idx`.
    pub fn write_plane(
        &self,
        ctx: &DevCtx,
        idx: usize,
        plane: usize,
        data: &[u8],
    ) -> IoctlResult<()> {
        let buf = self.bufs.get(idx).ok_or(libc::EINVAL)?;
        match buf.mem.get(plane).ok_or(libc::EINVAL)? {
            PlaneMem::Mmap(s) => s.write_at(0, data),
            PlaneMem::UserPtr(sgs) => {
                if data.len() > self.plane_len(idx, plane) as usize {
                    return Err(libc::EINVAL);
                }
                ctx.guest.write_sgs(sgs, data).map_err(|e| {
                    log::error!("USERPTR write failed: {e:#}");
                    libc::EFAULT
                })
            }
        }
    }

    /// Fills the first `len` bytes of plane `plane` of buffer `idx` with
    /// `byte` (a capture frame), in place.
    pub fn fill_plane(
        &self,
        ctx: &DevCtx,
        idx: usize,
        plane: usize,
        len: usize,
        byte: u8,
    ) -> IoctlResult<()> {
        let buf = self.bufs.get(idx).ok_or(libc::EINVAL)?;
        match buf.mem.get(plane).ok_or(libc::EINVAL)? {
            PlaneMem::Mmap(s) => s.fill(0, len as u64, byte),
            PlaneMem::UserPtr(sgs) => {
                if len > self.plane_len(idx, plane) as usize {
                    return Err(libc::EINVAL);
                }
                ctx.guest.fill_sgs(sgs, len, byte).map_err(|e| {
                    log::error!("USERPTR write failed: {e:#}");
                    libc::EFAULT
                })
            }
        }
    }

    /// Reads the first `len` bytes of plane `plane` of buffer `idx`.
    pub fn read_plane(
        &self,
        ctx: &DevCtx,
        idx: usize,
        plane: usize,
        len: usize,
    ) -> IoctlResult<Vec<u8>> {
        let buf = self.bufs.get(idx).ok_or(libc::EINVAL)?;
        let mut out = vec![0u8; len];
        match buf.mem.get(plane).ok_or(libc::EINVAL)? {
            PlaneMem::Mmap(s) => s.read_at(0, &mut out)?,
            PlaneMem::UserPtr(sgs) => {
                let sgs = sgs.iter().map(clone_sg).collect();
                let m = ctx.guest.new_mapping(sgs).map_err(|_| libc::EFAULT)?;
                if len > self.plane_len(idx, plane) as usize {
                    return Err(libc::EINVAL);
                }
                // SAFETY: the mapping is at least plane_len bytes long.
                unsafe { std::ptr::copy_nonoverlapping(m.as_ptr(), out.as_mut_ptr(), len) };
            }
        }
        Ok(out)
    }

    /// Marks buffer `idx` done with the given bytesused per plane and extra
    /// flags; returns the buffer to report in a DQBUF event.
    pub fn complete(
        &mut self,
        idx: usize,
        bytesused: &[u32],
        extra: BufferFlags,
    ) -> IoctlResult<V4l2Buffer> {
        self.complete_ts(idx, bytesused, extra, None)
    }

    /// `complete` with an explicit timestamp (mem2mem timestamp copy).
    pub fn complete_ts(
        &mut self,
        idx: usize,
        bytesused: &[u32],
        extra: BufferFlags,
        ts: Option<bindings::timeval>,
    ) -> IoctlResult<V4l2Buffer> {
        let mp = self.queue.is_multiplanar();
        let seq = self.sequence;
        self.sequence = self.sequence.wrapping_add(1);
        let buf = self.bufs.get_mut(idx).ok_or(libc::EINVAL)?;
        buf.state = BufState::Dequeued;
        buf.raw.flags = (buf.raw.flags & !BufferFlags::QUEUED.bits()) | extra.bits();
        buf.raw.sequence = seq;
        buf.raw.field = bindings::v4l2_field_V4L2_FIELD_NONE;
        if let Some(ts) = ts {
            buf.raw.timestamp = ts;
        } else if !self.ts_copy {
            // TIMESTAMP_MONOTONIC: when the device produced (capture) or
            // consumed (output) the frame.
            buf.raw.timestamp = now_timeval();
        }
        for (p, &u) in bytesused.iter().enumerate() {
            if mp {
                buf.planes[p].bytesused = u;
            } else if p == 0 {
                buf.raw.bytesused = u;
            }
        }
        buf.to_v4l2()
    }
}

pub fn clone_sg(s: &SgEntry) -> SgEntry {
    // SgEntry has a private padding field; it is FromBytes, so rebuild it
    // from its wire representation.
    let mut bytes = [0u8; 16];
    bytes[0..8].copy_from_slice(&s.start.to_le_bytes());
    bytes[8..12].copy_from_slice(&s.len.to_le_bytes());
    <SgEntry as zerocopy::FromBytes>::read_from_bytes(&bytes[..]).unwrap_or_else(|_| unreachable!())
}

// ---- controls ---------------------------------------------------------

pub const CTRL_TYPE_INTEGER: u32 = 1;
pub const CTRL_TYPE_BOOLEAN: u32 = 2;
pub const CTRL_TYPE_MENU: u32 = 3;
pub const CTRL_TYPE_BUTTON: u32 = 4;
pub const CTRL_TYPE_CTRL_CLASS: u32 = 6;
pub const CTRL_TYPE_U8: u32 = 0x0100;
pub const CTRL_FLAG_READ_ONLY: u32 = 0x0004;
pub const CTRL_FLAG_SLIDER: u32 = 0x0020;
pub const CTRL_FLAG_WRITE_ONLY: u32 = 0x0040;
pub const CTRL_FLAG_VOLATILE: u32 = 0x0080;
pub const CTRL_FLAG_HAS_PAYLOAD: u32 = 0x0100;
pub const CTRL_FLAG_EXECUTE_ON_WRITE: u32 = 0x0200;
pub const CTRL_FLAG_NEXT_CTRL: u32 = 0x8000_0000;
pub const CTRL_FLAG_NEXT_COMPOUND: u32 = 0x4000_0000;
pub const CTRL_ID_MASK: u32 = 0x0fff_ffff;
pub const CTRL_WHICH_CUR_VAL: u32 = 0;
pub const CTRL_WHICH_DEF_VAL: u32 = 0x0f00_0000;
pub const EVENT_CTRL_CH_VALUE: u32 = 1;
pub const EVENT_CTRL_CH_FLAGS: u32 = 2;

#[derive(Debug, Clone)]
pub struct CtrlDef {
    pub id: u32,
    pub name: &'static str,
    pub type_: u32,
    pub min: i64,
    pub max: i64,
    pub step: u64,
    pub def: i64,
    pub flags: u32,
    /// Number of elements (arrays), 0 for scalars.
    pub elems: u32,
    pub menu: &'static [&'static str],
}

impl CtrlDef {
    pub fn is_payload(&self) -> bool {
        self.flags & CTRL_FLAG_HAS_PAYLOAD != 0
    }
    pub fn payload_size(&self) -> u32 {
        self.elems.max(1)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtrlVal {
    Int(i64),
    Bytes(Vec<u8>),
}

pub struct Controls {
    pub defs: Vec<CtrlDef>,
    pub vals: Vec<CtrlVal>,
}

fn name32(s: &str) -> [std::os::raw::c_char; 32] {
    let mut out = [0 as std::os::raw::c_char; 32];
    for (i, b) in s.bytes().take(31).enumerate() {
        out[i] = b as std::os::raw::c_char;
    }
    out
}

impl Controls {
    /// `defs` must be sorted by id.
    pub fn new(defs: Vec<CtrlDef>) -> Self {
        let vals = defs
            .iter()
            .map(|d| {
                if d.is_payload() {
                    CtrlVal::Bytes(vec![d.def as u8; d.payload_size() as usize])
                } else {
                    CtrlVal::Int(d.def)
                }
            })
            .collect();
        Controls { defs, vals }
    }

    pub fn find(&self, id: u32) -> Option<usize> {
        self.defs.iter().position(|d| d.id == id)
    }

    /// Resolves a QUERYCTRL/QUERY_EXT_CTRL id (with NEXT flags).
    pub fn lookup(&self, raw_id: u32, ext: bool) -> Option<usize> {
        let id = raw_id & CTRL_ID_MASK;
        let next_ctrl = raw_id & CTRL_FLAG_NEXT_CTRL != 0;
        let next_compound = raw_id & CTRL_FLAG_NEXT_COMPOUND != 0;
        if !next_ctrl && !next_compound {
            if id >= CID_PRIVATE_BASE {
                return self.private_nth(id - CID_PRIVATE_BASE);
            }
            return self.find(id);
        }
        self.defs.iter().position(|d| {
            d.id > id
                && ((d.is_payload() && next_compound && ext) || (!d.is_payload() && next_ctrl))
        })
    }

    /// The `n`th driver-private user-class control usable with
    /// G/S_CTRL: what the old `V4L2_CID_PRIVATE_BASE + n` ids name (the
    /// V4L2 control framework emulates them the same way).
    pub fn private_nth(&self, n: u32) -> Option<usize> {
        self.defs
            .iter()
            .enumerate()
            .filter(|(_, d)| {
                d.id & 0x0fff_0000 == CID_USER_CLASS & 0x0fff_0000
                    && d.id & 0xffff >= 0x1000
                    && !d.is_payload()
                    && d.type_ != CTRL_TYPE_CTRL_CLASS
            })
            .nth(n as usize)
            .map(|(i, _)| i)
    }

    pub fn query_ext(&self, i: usize) -> bindings::v4l2_query_ext_ctrl {
        let d = &self.defs[i];
        let mut q = bindings::v4l2_query_ext_ctrl {
            id: d.id,
            type_: d.type_,
            name: name32(d.name),
            minimum: d.min,
            maximum: d.max,
            step: d.step,
            default_value: d.def,
            flags: d.flags,
            elem_size: if d.type_ == CTRL_TYPE_U8 { 1 } else { 4 },
            elems: d.payload_size(),
            nr_of_dims: if d.elems > 0 { 1 } else { 0 },
            ..Default::default()
        };
        if d.type_ == CTRL_TYPE_CTRL_CLASS {
            q.elem_size = 0;
            q.elems = 1;
            q.step = 0;
            q.maximum = 0;
        }
        if d.elems > 0 {
            q.dims[0] = d.elems;
        }
        q
    }

    pub fn queryctrl(&self, i: usize) -> IoctlResult<bindings::v4l2_queryctrl> {
        let d = &self.defs[i];
        if d.is_payload() {
            return Err(libc::EINVAL);
        }
        Ok(bindings::v4l2_queryctrl {
            id: d.id,
            type_: d.type_,
            name: name32(d.name).map(|c| c as u8),
            minimum: d.min as i32,
            maximum: if d.type_ == CTRL_TYPE_CTRL_CLASS {
                0
            } else {
                d.max as i32
            },
            step: if d.type_ == CTRL_TYPE_CTRL_CLASS {
                0
            } else {
                d.step as i32
            },
            default_value: d.def as i32,
            flags: d.flags,
            ..Default::default()
        })
    }

    pub fn querymenu(&self, id: u32, index: u32) -> IoctlResult<bindings::v4l2_querymenu> {
        let i = self.find(id).ok_or(libc::EINVAL)?;
        let d = &self.defs[i];
        if d.type_ != CTRL_TYPE_MENU || (index as i64) < d.min || (index as i64) > d.max {
            return Err(libc::EINVAL);
        }
        // An empty name is a menu item the device does not offer (the
        // kernel's menu_skip_mask).
        let name = d
            .menu
            .get(index as usize)
            .filter(|n| !n.is_empty())
            .ok_or(libc::EINVAL)?;
        let mut m = bindings::v4l2_querymenu {
            id,
            index,
            ..Default::default()
        };
        let n = name32(name).map(|c| c as u8);
        m.__bindgen_anon_1.name = n;
        Ok(m)
    }

    /// Validates a scalar value like the kernel: integers and booleans are
    /// clamped/rounded, menus must be in range (ERANGE) and offered
    /// (EINVAL), buttons take any value as 0.
    pub fn validate(&self, i: usize, v: i64) -> IoctlResult<i64> {
        let d = &self.defs[i];
        if d.flags & CTRL_FLAG_READ_ONLY != 0 || d.type_ == CTRL_TYPE_CTRL_CLASS {
            return Err(libc::EACCES);
        }
        match d.type_ {
            CTRL_TYPE_INTEGER | CTRL_TYPE_BOOLEAN => {
                let v = v.clamp(d.min, d.max);
                let step = d.step.max(1) as i64;
                Ok(d.min + (v - d.min + step / 2) / step * step)
            }
            CTRL_TYPE_MENU => {
                if v < d.min || v > d.max {
                    Err(libc::ERANGE)
                } else if d.menu.get(v as usize).is_some_and(|n| n.is_empty()) {
                    Err(libc::EINVAL)
                } else {
                    Ok(v)
                }
            }
            CTRL_TYPE_BUTTON => Ok(0),
            _ => Err(libc::EINVAL),
        }
    }

    pub fn int(&self, id: u32) -> i64 {
        match self.find(id).map(|i| &self.vals[i]) {
            Some(CtrlVal::Int(v)) => *v,
            _ => 0,
        }
    }

    pub fn ctrl_event(&self, i: usize, changes: u32) -> bindings::v4l2_event {
        let d = &self.defs[i];
        let mut ev = bindings::v4l2_event {
            type_: bindings::V4L2_EVENT_CTRL,
            id: d.id,
            ..Default::default()
        };
        let mut c = bindings::v4l2_event_ctrl {
            changes,
            type_: d.type_,
            flags: d.flags,
            minimum: d.min as i32,
            maximum: d.max as i32,
            step: d.step as i32,
            default_value: d.def as i32,
            ..Default::default()
        };
        if let CtrlVal::Int(v) = self.vals[i] {
            c.__bindgen_anon_1.value64 = v;
        }
        ev.u.ctrl = c;
        ev
    }
}

/// Writes a v4l2_event for every session subscribed to control `id`
/// (except `from` unless it asked for feedback).
/// VIDIOC_G_CTRL: integer-valued controls only (payload and class
/// controls need the extended ioctls).
pub fn g_ctrl(ctrls: &Controls, id: u32) -> IoctlResult<bindings::v4l2_control> {
    let i = ctrls.find(id).ok_or(libc::EINVAL)?;
    let d = &ctrls.defs[i];
    if d.is_payload() || d.type_ == CTRL_TYPE_CTRL_CLASS {
        return Err(libc::EINVAL);
    }
    if d.flags & CTRL_FLAG_WRITE_ONLY != 0 {
        return Err(libc::EACCES);
    }
    Ok(bindings::v4l2_control {
        id,
        value: ctrls.int(id) as i32,
    })
}

/// VIDIOC_S_CTRL from `session`: validates, stores, and notifies the other
/// subscribers when the value changed.
pub fn s_ctrl(
    ctx: &mut DevCtx,
    ctrls: &mut Controls,
    session: u32,
    id: u32,
    value: i32,
) -> IoctlResult<bindings::v4l2_control> {
    let i = ctrls.find(id).ok_or(libc::EINVAL)?;
    if ctrls.defs[i].is_payload() {
        return Err(libc::EINVAL);
    }
    let v = ctrls.validate(i, value as i64)?;
    if ctrls.vals[i] != CtrlVal::Int(v) {
        ctrls.vals[i] = CtrlVal::Int(v);
        notify_ctrl(ctx, ctrls, i, Some(session));
    }
    Ok(bindings::v4l2_control {
        id,
        value: v as i32,
    })
}

pub fn notify_ctrl(ctx: &mut DevCtx, ctrls: &Controls, i: usize, from: Option<u32>) {
    let id = ctrls.defs[i].id;
    let targets: Vec<u32> = ctx
        .subs
        .iter()
        .filter(|(sid, subs)| {
            subs.iter().any(|s| {
                s.type_ == bindings::V4L2_EVENT_CTRL
                    && s.id == id
                    && (Some(**sid) != from
                        || s.flags & bindings::V4L2_EVENT_SUB_FL_ALLOW_FEEDBACK != 0)
            })
        })
        .map(|(sid, _)| *sid)
        .collect();
    for sid in targets {
        let ev = ctrls.ctrl_event(i, EVENT_CTRL_CH_VALUE);
        ctx.send_event(sid, ev);
    }
}

/// Shared implementation of G/S/TRY_EXT_CTRLS over `ctrls`.
// The ioctl's pieces as the protocol hands them over; a struct for them
// would only be unpacked again here.
#[allow(clippy::too_many_arguments)]
pub fn ext_ctrls(
    ctx: &mut DevCtx,
    ctrls: &mut Controls,
    session: u32,
    op: ExtOp,
    which: u32,
    hdr: &mut bindings::v4l2_ext_controls,
    arr: &mut [bindings::v4l2_ext_control],
    regions: Vec<Vec<SgEntry>>,
) -> IoctlResult<()> {
    let mut regions = regions.into_iter();
    let count = arr.len() as u32;
    if which != CTRL_WHICH_CUR_VAL && which != CTRL_WHICH_DEF_VAL && which & CTRL_ID_MASK != which {
        return Err(libc::EINVAL);
    }
    let class = which & 0x0fff_0000;
    if which == CTRL_WHICH_DEF_VAL && op != ExtOp::Get {
        hdr.error_idx = count;
        return Err(libc::EINVAL);
    }
    // Validation pass.
    let mut new_vals: Vec<(usize, CtrlVal)> = vec![];
    for (n, c) in arr.iter_mut().enumerate() {
        // Like the V4L2 control framework: TRY reports the failing
        // control, G and S report `count` (no hardware was touched).
        let fail_idx = if op == ExtOp::Try { n as u32 } else { count };
        let Some(i) = ctrls.find(c.id) else {
            hdr.error_idx = fail_idx;
            return Err(libc::EINVAL);
        };
        let d = ctrls.defs[i].clone();
        if class != 0 && which != CTRL_WHICH_DEF_VAL && d.id & 0x0fff_0000 != class {
            hdr.error_idx = fail_idx;
            return Err(libc::EINVAL);
        }
        if d.type_ == CTRL_TYPE_CTRL_CLASS {
            hdr.error_idx = fail_idx;
            return Err(libc::EACCES);
        }
        let region = if c.size > 0 { regions.next() } else { None };
        if d.is_payload() {
            let need = d.payload_size();
            if c.size < need {
                c.size = need;
                hdr.error_idx = fail_idx;
                return Err(libc::ENOSPC);
            }
            let Some(sgs) = region else {
                hdr.error_idx = fail_idx;
                return Err(libc::EFAULT);
            };
            let mapping = ctx.guest.new_mapping(sgs).map_err(|e| {
                log::error!("control payload mapping failed: {e:#}");
                libc::EFAULT
            })?;
            if op == ExtOp::Get {
                let data = match (which, &ctrls.vals[i]) {
                    (CTRL_WHICH_DEF_VAL, _) => vec![d.def as u8; need as usize],
                    (_, CtrlVal::Bytes(b)) => b.clone(),
                    _ => vec![0; need as usize],
                };
                let mut mapping = mapping;
                // SAFETY: the mapping covers c.size >= need bytes.
                unsafe {
                    std::ptr::copy_nonoverlapping(data.as_ptr(), mapping.as_mut_ptr(), data.len())
                };
            } else {
                let mut data = vec![0u8; need as usize];
                // SAFETY: as above.
                unsafe {
                    std::ptr::copy_nonoverlapping(mapping.as_ptr(), data.as_mut_ptr(), data.len())
                };
                for b in data.iter_mut() {
                    *b = (*b as i64).clamp(d.min, d.max) as u8;
                }
                new_vals.push((i, CtrlVal::Bytes(data)));
            }
        } else if op == ExtOp::Get {
            if d.flags & CTRL_FLAG_WRITE_ONLY != 0 {
                hdr.error_idx = fail_idx;
                return Err(libc::EACCES);
            }
            let v = if which == CTRL_WHICH_DEF_VAL {
                d.def
            } else {
                match ctrls.vals[i] {
                    CtrlVal::Int(v) => v,
                    _ => 0,
                }
            };
            c.__bindgen_anon_1.value64 = 0;
            c.__bindgen_anon_1.value = v as i32;
        } else {
            // SAFETY: scalar controls carry their value in `value`.
            let v = unsafe { c.__bindgen_anon_1.value } as i64;
            match ctrls.validate(i, v) {
                Ok(v) => {
                    c.__bindgen_anon_1.value = v as i32;
                    new_vals.push((i, CtrlVal::Int(v)));
                }
                Err(e) => {
                    hdr.error_idx = fail_idx;
                    return Err(e);
                }
            }
        }
    }
    if op == ExtOp::Set {
        for (i, v) in new_vals {
            if ctrls.vals[i] != v {
                ctrls.vals[i] = v;
                notify_ctrl(ctx, ctrls, i, Some(session));
            }
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtOp {
    Get,
    Try,
    Set,
}

/// The common user-class controls of the project devices. The array
/// control is a driver-private U8 array of 8 elements.
pub const CID_USER_CLASS: u32 = 0x0098_0001;
pub const CID_PRIVATE_BASE: u32 = 0x0800_0000;
pub const CID_BRIGHTNESS: u32 = 0x0098_0900;
pub const CID_CONTRAST: u32 = 0x0098_0901;
pub const CID_HFLIP: u32 = 0x0098_0914;
pub const CID_POWER_LINE_FREQUENCY: u32 = 0x0098_0918;
pub const CID_TEST_U8_ARRAY: u32 = 0x0098_1980;
pub const TEST_ARRAY_LEN: u32 = 8;

pub fn user_controls() -> Vec<CtrlDef> {
    let int = |id, name, min, max, def, flags| CtrlDef {
        id,
        name,
        type_: CTRL_TYPE_INTEGER,
        min,
        max,
        step: 1,
        def,
        flags,
        elems: 0,
        menu: &[],
    };
    vec![
        CtrlDef {
            id: CID_USER_CLASS,
            name: "User Controls",
            type_: CTRL_TYPE_CTRL_CLASS,
            min: 0,
            max: 0,
            step: 0,
            def: 0,
            flags: CTRL_FLAG_READ_ONLY | CTRL_FLAG_WRITE_ONLY,
            elems: 0,
            menu: &[],
        },
        int(CID_BRIGHTNESS, "Brightness", 0, 255, 128, CTRL_FLAG_SLIDER),
        int(CID_CONTRAST, "Contrast", 0, 255, 128, CTRL_FLAG_SLIDER),
        CtrlDef {
            id: CID_HFLIP,
            name: "Horizontal Flip",
            type_: CTRL_TYPE_BOOLEAN,
            min: 0,
            max: 1,
            step: 1,
            def: 0,
            flags: 0,
            elems: 0,
            menu: &[],
        },
        CtrlDef {
            id: CID_POWER_LINE_FREQUENCY,
            name: "Power Line Frequency",
            type_: CTRL_TYPE_MENU,
            min: 0,
            max: 3,
            step: 1,
            def: 1,
            flags: 0,
            elems: 0,
            menu: &["Disabled", "50 Hz", "60 Hz", "Auto"],
        },
        CtrlDef {
            id: CID_TEST_U8_ARRAY,
            name: "Test U8 Array",
            type_: CTRL_TYPE_U8,
            min: 0,
            max: 255,
            step: 1,
            def: 0,
            flags: CTRL_FLAG_HAS_PAYLOAD,
            elems: TEST_ARRAY_LEN,
            menu: &[],
        },
    ]
}

/// Plane sizes a CREATE_BUFS format asks for.
pub fn requested_plane_sizes(queue: QueueType, f: &bindings::v4l2_format) -> IoctlResult<Vec<u32>> {
    // SAFETY: the union member read matches the queue type.
    unsafe {
        if queue.is_multiplanar() {
            let mp = &f.fmt.pix_mp;
            let n = mp.num_planes as usize;
            if n == 0 || n > bindings::VIDEO_MAX_PLANES as usize {
                return Err(libc::EINVAL);
            }
            Ok(mp.plane_fmt[..n].iter().map(|p| p.sizeimage).collect())
        } else {
            Ok(vec![f.fmt.pix.sizeimage])
        }
    }
}
