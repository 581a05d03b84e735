// SPDX-License-Identifier: GPL-2.0

//! Buffer memory: what a program's MMAP, USERPTR and DMABUF buffers are on
//! the device, and the guest memory held for the device while it owns them.
//!
//! The device knows MMAP buffers (in its shared memory) and USERPTR
//! buffers (guest pages, as SG entries). Everything else is presented to
//! it as USERPTR buffers: guest-backed MMAP buffers (the driver's pages,
//! for a device without shared memory) and DMABUF buffers (dma-bufs of
//! other guest drivers). [`Presented`] says which, per queue.

#![forbid(unsafe_code)]

use super::*;
use crate::guest_mmap::USERPTR_TOKEN;

pub(super) const MEMORY_MMAP: u32 = ffi::v4l2_memory_V4L2_MEMORY_MMAP;
pub(super) const MEMORY_USERPTR: u32 = ffi::v4l2_memory_V4L2_MEMORY_USERPTR;
const MEMORY_DMABUF: u32 = ffi::v4l2_memory_V4L2_MEMORY_DMABUF;

/// What the buffers of a queue are for the program when the device knows
/// them as USERPTR buffers.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(crate) enum Presented {
    /// What the device knows them as.
    #[default]
    AsIs,
    /// MMAP buffers in the driver's pages.
    GuestMmap,
    /// Imported dma-bufs.
    DmaBuf,
}

impl Presented {
    fn program_memory(self) -> Option<u32> {
        match self {
            Self::AsIs => None,
            Self::GuestMmap => Some(MEMORY_MMAP),
            Self::DmaBuf => Some(MEMORY_DMABUF),
        }
    }
}

/// Whether the driver passes USERPTR buffers to the device.
fn userptr_enabled() -> bool {
    crate::module_parameters::userptr.value()
}

/// The (value of `m`, length) of each plane of a buffer: a user pointer,
/// or a dma-buf fd in the low 32 bits.
fn plane_memory(buf_type: u32, buf: &[u8], planes: &[u8]) -> Result<KVec<(u64, u32)>> {
    let mut memory = KVec::new();
    if is_multiplanar(buf_type) {
        let count = usize::try_from(get_u32(buf, BUF_LENGTH).ok_or(EINVAL)?)?;
        for plane in planes.chunks_exact(PLANE_SIZE).take(count.min(MAX_PLANES)) {
            let m = get_u64(plane, PLANE_M).ok_or(EINVAL)?;
            memory.push((m, get_u32(plane, PLANE_LENGTH).ok_or(EINVAL)?), GFP_KERNEL)?;
        }
    } else {
        memory.push(
            (
                get_u64(buf, BUF_M).ok_or(EINVAL)?,
                get_u32(buf, BUF_LENGTH).ok_or(EINVAL)?,
            ),
            GFP_KERNEL,
        )?;
    }
    Ok(memory)
}

/// Rewrites a buffer's memory type, each plane's `m` (from `values`) and,
/// with `lengths`, each plane's length. For the multi-planar types the
/// plane count becomes the number of values.
fn present(
    memory: u32,
    buf_type: u32,
    buf: &mut [u8],
    planes: &mut [u8],
    values: &[u64],
    lengths: Option<&[u32]>,
) {
    set_u32(buf, BUF_MEMORY, memory);
    if is_multiplanar(buf_type) {
        set_u32(buf, BUF_LENGTH, values.len().min(MAX_PLANES) as u32);
        for (i, (plane, value)) in planes.chunks_exact_mut(PLANE_SIZE).zip(values).enumerate() {
            set_u64(plane, PLANE_M, *value);
            if let Some(length) = lengths.and_then(|l| l.get(i)) {
                set_u32(plane, PLANE_LENGTH, *length);
            }
        }
    } else if let Some(value) = values.first() {
        set_u64(buf, BUF_M, *value);
        if let Some(length) = lengths.and_then(|l| l.first()) {
            set_u32(buf, BUF_LENGTH, *length);
        }
    }
}

/// The mmap offsets and lengths of a guest-backed buffer's planes.
fn guest_mmap_planes(
    kind: QueueKind,
    index: u32,
    owned: &[Arc<OwnedPages>],
) -> Result<(KVec<u64>, KVec<u32>)> {
    let mut offsets = KVec::with_capacity(owned.len(), GFP_KERNEL)?;
    let mut lengths = KVec::with_capacity(owned.len(), GFP_KERNEL)?;
    for (plane, pages) in owned.iter().enumerate() {
        let offset = guest_mmap::plane_offset(kind, index, plane).ok_or(EINVAL)?;
        offsets.push(u64::from(offset), GFP_KERNEL)?;
        lengths.push(u32::try_from(pages.len())?, GFP_KERNEL)?;
    }
    Ok((offsets, lengths))
}

impl State {
    /// Shows a buffer the device describes as USERPTR as the program knows
    /// it; `pointers` are what the driver queued it with, if it holds it.
    pub(super) fn present_to_program(
        &self,
        kind: QueueKind,
        buf: &mut [u8],
        planes: &mut [u8],
        pointers: Option<&[u64]>,
    ) {
        let buf_type = get_u32(buf, BUF_TYPE).unwrap_or(0);
        let index = get_u32(buf, BUF_INDEX).unwrap_or(u32::MAX);
        let queue = self.queue_ref(kind);
        match queue.presented {
            Presented::GuestMmap => {
                if let Some(Ok((offsets, lengths))) = queue
                    .mmap
                    .planes(index)
                    .map(|owned| guest_mmap_planes(kind, index, owned))
                {
                    present(MEMORY_MMAP, buf_type, buf, planes, &offsets, Some(&lengths));
                }
            }
            // The fds the program queued the dma-bufs with.
            Presented::DmaBuf => present(
                MEMORY_DMABUF,
                buf_type,
                buf,
                planes,
                pointers.unwrap_or(&[0]),
                None,
            ),
            // The device must return user pointers unchanged, but need
            // not for QUERYBUF.
            Presented::AsIs => {
                if let Some(pointers) = pointers {
                    present(MEMORY_USERPTR, buf_type, buf, planes, pointers, None);
                }
            }
        }
    }
}

impl Session {
    /// Whether the device can be given imported dma-bufs.
    fn dmabuf_supported(&self) -> bool {
        self.dev.commandq().dmabuf_device().is_some()
    }

    /// REQBUFS and CREATE_BUFS. Buffers the device cannot have as they
    /// are (guest-backed MMAP, DMABUF) are asked for as USERPTR buffers;
    /// guest-backed memory is allocated once the device agreed.
    pub(super) fn allocate_buffers(
        &self,
        code: u32,
        payload: &mut [u8],
        memory_at: usize,
        caps_at: usize,
    ) -> Result {
        let memory = get_u32(payload, memory_at).ok_or(EINVAL)?;
        let presented = match memory {
            MEMORY_MMAP if self.dev.guest_mmap() => Presented::GuestMmap,
            MEMORY_MMAP => Presented::AsIs,
            MEMORY_USERPTR if userptr_enabled() => Presented::AsIs,
            MEMORY_DMABUF if self.dmabuf_supported() => Presented::DmaBuf,
            _ => return Err(EINVAL),
        };
        let type_at = if code == ioctl::VIDIOC_REQBUFS {
            REQBUFS_TYPE
        } else {
            CREATE_TYPE
        };
        let kind = get_u32(payload, type_at).and_then(queue_of).ok_or(EINVAL)?;
        let _ordered = self.buffer_lock(kind).lock();
        if code == ioctl::VIDIOC_CREATE_BUFS {
            // The device cannot tell the kinds of USERPTR buffers apart.
            let state = self.state.lock();
            let queue = state.queue_ref(kind);
            if queue.num_buffers > 0 && queue.presented != presented {
                return Err(EINVAL);
            }
        }
        if presented != Presented::AsIs {
            set_u32(payload, memory_at, MEMORY_USERPTR);
        }
        let result = self.transact(code, payload, &mut []).map(|_| ());
        if let Some(caps) = get_u32(payload, caps_at) {
            // The device's own DMABUF (virtio objects) is not used.
            let mut caps = caps & !ffi::V4L2_BUF_CAP_SUPPORTS_DMABUF;
            if caps & ffi::V4L2_BUF_CAP_SUPPORTS_USERPTR != 0 {
                if self.dev.guest_mmap() {
                    caps |= ffi::V4L2_BUF_CAP_SUPPORTS_MMAP;
                }
                if self.dmabuf_supported() {
                    caps |= ffi::V4L2_BUF_CAP_SUPPORTS_DMABUF;
                }
            }
            if !userptr_enabled() {
                caps &= !ffi::V4L2_BUF_CAP_SUPPORTS_USERPTR;
            }
            set_u32(payload, caps_at, caps);
        }
        set_u32(payload, memory_at, memory);
        result?;
        if let Err(e) = self.check_buffer_count(code, payload) {
            if code == ioctl::VIDIOC_REQBUFS {
                self.free_device_buffers(payload);
            }
            return Err(e);
        }
        self.after_success(code, payload);
        self.state.lock().queue(kind).presented = presented;
        if presented == Presented::GuestMmap {
            if let Err(e) = self.allocate_guest_mmap(code, kind, payload) {
                pr_warn!(
                    "no memory for the MMAP buffers of session {}: {:?}\n",
                    self.id,
                    e
                );
                if code == ioctl::VIDIOC_REQBUFS {
                    self.free_device_buffers(payload);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// A device may not give a queue more than [`MAX_BUFFERS`] buffers: the
    /// driver keeps state per buffer.
    fn check_buffer_count(&self, code: u32, payload: &[u8]) -> Result {
        let end = if code == ioctl::VIDIOC_REQBUFS {
            get_u32(payload, REQBUFS_COUNT)
        } else {
            get_u32(payload, CREATE_INDEX)
                .zip(get_u32(payload, CREATE_COUNT))
                .and_then(|(index, count)| index.checked_add(count))
        };
        match end {
            Some(end) if end <= MAX_BUFFERS => Ok(()),
            _ => {
                pr_err!(
                    "device gave session {} buffers up to {:?}, more than the driver's {}; refused\n",
                    self.id,
                    end,
                    MAX_BUFFERS
                );
                Err(EIO)
            }
        }
    }

    /// Allocates the memory of the guest-backed MMAP buffers the device
    /// just agreed to, sized by the format (the queue's, for REQBUFS).
    fn allocate_guest_mmap(&self, code: u32, kind: QueueKind, payload: &[u8]) -> Result {
        let (first, count, sizes) = if code == ioctl::VIDIOC_REQBUFS {
            let mut format = [0u8; core::mem::size_of::<ffi::v4l2_format>()];
            format[..4].copy_from_slice(payload.get(REQBUFS_TYPE..REQBUFS_TYPE + 4).ok_or(EINVAL)?);
            self.transact(ioctl::VIDIOC_G_FMT, &mut format, &mut [])?;
            (
                0,
                get_u32(payload, REQBUFS_COUNT).ok_or(EINVAL)?,
                guest_mmap::plane_sizes(&format),
            )
        } else {
            let format = payload
                .get(CREATE_FORMAT..CREATE_FORMAT + core::mem::size_of::<ffi::v4l2_format>());
            (
                get_u32(payload, CREATE_INDEX).ok_or(EINVAL)?,
                get_u32(payload, CREATE_COUNT).ok_or(EINVAL)?,
                format.and_then(guest_mmap::plane_sizes),
            )
        };
        if count == 0 {
            return Ok(());
        }
        let sizes = sizes.ok_or(EINVAL)?;
        let mut state = self.state.lock();
        let queue = state.queue(kind);
        // The device chose the sizes and the program the count: bounded.
        let total = sizes
            .iter()
            .try_fold(0u64, |sum, &size| sum.checked_add(u64::from(size)))
            .and_then(|buffer| buffer.checked_mul(u64::from(count)))
            .and_then(|added| added.checked_add(queue.mmap.bytes()));
        match total {
            Some(total) if total <= guest_mmap::MAX_QUEUE_BYTES => {
                queue.mmap.allocate(first, count, &sizes)
            }
            _ => {
                crate::log::warn_limited!(
                    "session {}: {} MMAP buffers of {:?} bytes would exceed the {} bytes a queue may have in guest memory",
                    self.id,
                    count,
                    sizes.as_slice(),
                    guest_mmap::MAX_QUEUE_BYTES
                );
                Err(ENOMEM)
            }
        }
    }

    /// Frees the device's buffers of a REQBUFS whose memory the driver
    /// could not allocate.
    fn free_device_buffers(&self, payload: &[u8]) {
        let mut request = [0u8; core::mem::size_of::<ffi::v4l2_requestbuffers>()];
        if let Some(buf_type) = get_u32(payload, REQBUFS_TYPE) {
            set_u32(&mut request, REQBUFS_TYPE, buf_type);
            set_u32(&mut request, REQBUFS_MEMORY, MEMORY_USERPTR);
            let _ = self.transact(ioctl::VIDIOC_REQBUFS, &mut request, &mut []);
            self.after_success(ioctl::VIDIOC_REQBUFS, &request);
        }
    }

    /// QBUF or PREPARE_BUF: the buffer's guest memory, if any, is mapped
    /// for the device, described after the planes, and held until the
    /// device returns the buffer or the queue stops. Returns how many
    /// trailer bytes the device wrote.
    pub(super) fn queue_buffer(
        &self,
        code: u32,
        kind: QueueKind,
        buf: &mut [u8],
        planes: &mut [u8],
    ) -> Result<usize> {
        let _ordered = self.buffer_lock(kind).lock();
        let index = get_u32(buf, BUF_INDEX).ok_or(EINVAL)?;
        if code != ioctl::VIDIOC_QBUF {
            return self.send_buffer(code, kind, buf, planes);
        }
        // Counted as queued before the device hears of it: it may return
        // the buffer before it answers.
        if !self.state.lock().queue(kind).queued.insert(index)? {
            // vb2 refuses a buffer that is queued already.
            return Err(EINVAL);
        }
        let result = self.send_buffer(code, kind, buf, planes);
        if result.is_err() {
            self.state.lock().queue(kind).queued.remove(index);
        }
        result
    }

    /// Sends a QBUF or PREPARE_BUF (see [`Session::queue_buffer`]).
    fn send_buffer(
        &self,
        code: u32,
        kind: QueueKind,
        buf: &mut [u8],
        planes: &mut [u8],
    ) -> Result<usize> {
        let buf_type = get_u32(buf, BUF_TYPE).ok_or(EINVAL)?;
        let index = get_u32(buf, BUF_INDEX).ok_or(EINVAL)?;
        let memory = get_u32(buf, BUF_MEMORY).ok_or(EINVAL)?;
        let presented = self.state.lock().queue_ref(kind).presented;
        if presented.program_memory().is_some_and(|m| m != memory) {
            return Err(EINVAL);
        }
        let device_writes = kind == QueueKind::Capture;
        let (held, pointers, lengths) = match (memory, presented) {
            (MEMORY_MMAP, Presented::AsIs) => return self.transact(code, buf, planes),
            (MEMORY_USERPTR, Presented::AsIs) if userptr_enabled() => {
                let user = plane_memory(buf_type, buf, planes)?;
                let memory = GuestBuffer::pin_user(&self.dev, &user, device_writes)?;
                let mut pointers = KVec::with_capacity(user.len(), GFP_KERNEL)?;
                for (ptr, _) in user.iter() {
                    pointers.push(*ptr, GFP_KERNEL)?;
                }
                (memory, pointers, None)
            }
            (MEMORY_MMAP, Presented::GuestMmap) => {
                let mut owned = KVec::new();
                owned.extend_from_slice(
                    self.state
                        .lock()
                        .queue_ref(kind)
                        .mmap
                        .planes(index)
                        .ok_or(EINVAL)?,
                    GFP_KERNEL,
                )?;
                let memory = GuestBuffer::map_driver(&self.dev, &owned, device_writes)?;
                let (offsets, lengths) = guest_mmap_planes(kind, index, &owned)?;
                (memory, offsets, Some(lengths))
            }
            (MEMORY_DMABUF, Presented::DmaBuf) => {
                let mut fds = KVec::new();
                let mut pointers = KVec::new();
                for (m, length) in plane_memory(buf_type, buf, planes)? {
                    // `m.fd` is the low half of the union.
                    fds.push((m as u32 as i32, length), GFP_KERNEL)?;
                    pointers.push(u64::from(m as u32), GFP_KERNEL)?;
                }
                let (memory, lengths) =
                    GuestBuffer::import_dmabufs(&self.dev, &fds, device_writes)?;
                (memory, pointers, Some(lengths))
            }
            _ => return Err(EINVAL),
        };
        let planes = if is_multiplanar(buf_type) {
            planes
                .get_mut(..pointers.len() * PLANE_SIZE)
                .ok_or(EINVAL)?
        } else {
            &mut planes[..0]
        };
        if presented != Presented::AsIs {
            // The device gets tokens it must echo; the tokens of MMAP
            // buffers carry their mmap offset, which helps reading logs.
            let mut tokens = KVec::with_capacity(pointers.len(), GFP_KERNEL)?;
            for value in pointers.iter() {
                tokens.push(USERPTR_TOKEN | value, GFP_KERNEL)?;
            }
            present(
                MEMORY_USERPTR,
                buf_type,
                buf,
                planes,
                &tokens,
                lengths.as_deref(),
            );
        }
        self.hold_and_send(code, kind, index, buf, planes, held, pointers)
    }

    /// Holds `memory` for buffer `index` and sends its QBUF or PREPARE_BUF
    /// with the SG entries after the planes.
    #[expect(clippy::too_many_arguments)]
    fn hold_and_send(
        &self,
        code: u32,
        kind: QueueKind,
        index: u32,
        buf: &mut [u8],
        planes: &mut [u8],
        memory: GuestBuffer,
        pointers: KVec<u64>,
    ) -> Result<usize> {
        let sg_entries = memory.sg_entries()?;
        let mut state = self.state.lock();
        if state.device_reset || state.closed || state.failed.is_some() {
            return Err(self.dev.check_usable().err().unwrap_or(EIO));
        }
        let prepare = code == ioctl::VIDIOC_PREPARE_BUF;
        let (serial, replaced) = state.held.insert(kind, index, prepare, pointers, memory)?;
        drop(state);
        drop(replaced);
        // Uninterruptible: a QBUF the device may still be handling must
        // keep its pages, so only the device's own answer releases them.
        let response = self.send_ioctl(
            code,
            buf,
            planes,
            &sg_entries,
            KVec::new(),
            Wait::Uninterruptible,
        )?;
        let result = read_response(code, response, buf, planes).map(|(written, _)| written);
        if result.is_err() {
            let refused = self.state.lock().held.remove_serial(serial);
            drop(refused);
        }
        result
    }

    /// EXPBUF: a dma-buf of a guest-backed MMAP buffer plane. The device's
    /// own MMAP buffers (in its shared memory) cannot be exported: the
    /// ioctl is disabled on such a device's node.
    pub(crate) fn export_buffer(
        &self,
        buf_type: u32,
        index: u32,
        plane: u32,
        flags: u32,
    ) -> Result<i32> {
        self.check_usable()?;
        if flags & !(ffi::O_CLOEXEC | ffi::O_ACCMODE) != 0 {
            return Err(EINVAL);
        }
        let kind = queue_of(buf_type).ok_or(EINVAL)?;
        let pages = {
            let state = self.state.lock();
            let queue = state.queue_ref(kind);
            // (On a device with shared memory the ioctl is disabled.)
            if queue.presented != Presented::GuestMmap {
                return Err(EINVAL);
            }
            let plane = usize::try_from(plane)?;
            queue
                .mmap
                .planes(index)
                .and_then(|p| p.get(plane))
                .ok_or(EINVAL)?
                .clone()
        };
        pages.export(flags)
    }

    /// `mmap()` of a guest-backed buffer plane: its pages, if `len` bytes
    /// fit in them.
    pub(crate) fn guest_mmap_plane(&self, offset: u64, len: u64) -> Result<Arc<OwnedPages>> {
        self.check_usable()?;
        let (kind, index, plane) = guest_mmap::decode_offset(offset).ok_or(EINVAL)?;
        let state = self.state.lock();
        let pages = state
            .queue_ref(kind)
            .mmap
            .planes(index)
            .and_then(|p| p.get(plane))
            .ok_or(EINVAL)?;
        let page = kernel::page::PAGE_SIZE as u64;
        let mappable = (pages.len() as u64)
            .checked_next_multiple_of(page)
            .ok_or(EINVAL)?;
        if len > mappable {
            return Err(EINVAL);
        }
        Ok(pages.clone())
    }
}
