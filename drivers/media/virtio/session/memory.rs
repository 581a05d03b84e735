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
use crate::{
    guest_mmap::{self, GuestMmapQueue, USERPTR_TOKEN},
    kernel_ext::{
        media::v4l2::{
            types::{CreateBuffers, ExportBuffer, Format, RequestBuffers},
            uapi::{
                V4L2_BUF_CAP_SUPPORTS_DMABUF, V4L2_BUF_CAP_SUPPORTS_MMAP,
                V4L2_BUF_CAP_SUPPORTS_USERPTR,
            },
        },
        mm::OwnedPages,
    },
};
use kernel::{
    fs::file::flags::{O_ACCMODE, O_CLOEXEC},
    transmute::FromBytes,
};

/// What the buffers of one queue are in memory.
#[derive(Default)]
pub(super) struct QueueMemory {
    /// What the program's buffers are, if the device knows them as USERPTR.
    pub(super) presented: Presented,
    /// The memory of guest-backed MMAP buffers.
    pub(super) mmap: GuestMmapQueue,
}

/// What the buffers of a queue are for the program when the device knows
/// them as USERPTR buffers.
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
pub(super) enum Presented {
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
            Self::GuestMmap => Some(buffer_memory::MMAP),
            Self::DmaBuf => Some(buffer_memory::DMABUF),
        }
    }
}

/// The (value of `m`, length) of each plane of a buffer: a user pointer,
/// or a dma-buf fd in the low 32 bits.
fn plane_memory(buf: &Buffer, planes: &[Plane]) -> Result<KVec<(u64, u32)>> {
    let mut memory = KVec::new();
    if buf.buf_type().is_multiplanar() {
        let count = usize::try_from(buf.length())?;
        for plane in planes.iter().take(count) {
            memory.push((plane.m(), plane.length()), GFP_KERNEL)?;
        }
    } else {
        memory.push((buf.m(), buf.length()), GFP_KERNEL)?;
    }
    Ok(memory)
}

/// Rewrites a buffer's memory type, each plane's `m` (from `values`) and,
/// with `lengths`, each plane's length. For the multi-planar types the
/// plane count becomes the number of values.
fn present(
    memory: u32,
    buf: &mut Buffer,
    planes: &mut [Plane],
    values: &[u64],
    lengths: Option<&[u32]>,
) {
    buf.set_memory(memory);
    if buf.buf_type().is_multiplanar() {
        buf.set_length(u32::try_from(values.len().min(planes.len())).unwrap_or(0));
        for (i, (plane, value)) in planes.iter_mut().zip(values).enumerate() {
            plane.set_m(*value);
            if let Some(length) = lengths.and_then(|l| l.get(i)) {
                plane.set_length(*length);
            }
        }
    } else if let Some(value) = values.first() {
        buf.set_m(*value);
        if let Some(length) = lengths.and_then(|l| l.first()) {
            buf.set_length(*length);
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
        buf: &mut Buffer,
        planes: &mut [Plane],
        pointers: Option<&[u64]>,
    ) {
        let index = buf.index();
        let memory = self.memory_ref(kind);
        match memory.presented {
            Presented::GuestMmap => {
                if let Some(Ok((offsets, lengths))) = memory
                    .mmap
                    .planes(index)
                    .map(|owned| guest_mmap_planes(kind, index, owned))
                {
                    present(buffer_memory::MMAP, buf, planes, &offsets, Some(&lengths));
                }
            }
            // The fds the program queued the dma-bufs with.
            Presented::DmaBuf => present(
                buffer_memory::DMABUF,
                buf,
                planes,
                pointers.unwrap_or(&[0]),
                None,
            ),
            // The device must return user pointers unchanged, but need
            // not for QUERYBUF.
            Presented::AsIs => {
                if let Some(pointers) = pointers {
                    present(buffer_memory::USERPTR, buf, planes, pointers, None);
                }
            }
        }
    }
}

/// REQBUFS and CREATE_BUFS, as [`Session::allocate_buffers`] sees them.
trait BufferRequest: AsBytes + FromBytes {
    const CODE: u32;
    fn buf_type(&self) -> BufType;
    fn memory(&self) -> u32;
    fn set_memory(&mut self, memory: u32);
    fn capabilities(&self) -> u32;
    fn set_capabilities(&mut self, caps: u32);
    /// Buffers `first..end` the device allocated.
    fn allocated(&self) -> Option<(u32, u32)>;
    /// The plane sizes of the new buffers, when the request says them.
    fn plane_sizes(&self) -> Option<KVec<u32>>;
}

impl BufferRequest for RequestBuffers {
    const CODE: u32 = codes::VIDIOC_REQBUFS;

    fn buf_type(&self) -> BufType {
        RequestBuffers::buf_type(self)
    }

    fn memory(&self) -> u32 {
        RequestBuffers::memory(self)
    }

    fn set_memory(&mut self, memory: u32) {
        RequestBuffers::set_memory(self, memory)
    }

    fn capabilities(&self) -> u32 {
        RequestBuffers::capabilities(self)
    }

    fn set_capabilities(&mut self, caps: u32) {
        RequestBuffers::set_capabilities(self, caps)
    }

    fn allocated(&self) -> Option<(u32, u32)> {
        Some((0, self.count()))
    }

    fn plane_sizes(&self) -> Option<KVec<u32>> {
        // The queue's format: see `allocate_guest_mmap`.
        None
    }
}

impl BufferRequest for CreateBuffers {
    const CODE: u32 = codes::VIDIOC_CREATE_BUFS;

    fn buf_type(&self) -> BufType {
        self.format().buf_type()
    }

    fn memory(&self) -> u32 {
        CreateBuffers::memory(self)
    }

    fn set_memory(&mut self, memory: u32) {
        CreateBuffers::set_memory(self, memory)
    }

    fn capabilities(&self) -> u32 {
        CreateBuffers::capabilities(self)
    }

    fn set_capabilities(&mut self, caps: u32) {
        CreateBuffers::set_capabilities(self, caps)
    }

    fn allocated(&self) -> Option<(u32, u32)> {
        Some((self.index(), self.index().checked_add(self.count())?))
    }

    fn plane_sizes(&self) -> Option<KVec<u32>> {
        guest_mmap::plane_sizes(self.format())
    }
}

impl Session {
    /// Whether the driver passes USERPTR buffers to the device.
    fn userptr_enabled(&self) -> bool {
        self.dev.params().userptr
    }

    /// Whether the device can be given imported dma-bufs.
    fn dmabuf_supported(&self) -> bool {
        self.dev.commandq().dmabuf_device().is_some()
    }

    /// VIDIOC_REQBUFS.
    pub(super) fn request_buffers(&self, req: &mut RequestBuffers) -> Result {
        self.allocate_buffers(req)
    }

    /// VIDIOC_CREATE_BUFS.
    pub(super) fn create_buffers(&self, create: &mut CreateBuffers) -> Result {
        self.allocate_buffers(create)
    }

    /// REQBUFS and CREATE_BUFS. Buffers the device cannot have as they
    /// are (guest-backed MMAP, DMABUF) are asked for as USERPTR buffers;
    /// guest-backed memory is allocated once the device agreed.
    fn allocate_buffers<R: BufferRequest>(&self, request: &mut R) -> Result {
        let memory = request.memory();
        let presented = match memory {
            buffer_memory::MMAP if self.dev.guest_mmap() => Presented::GuestMmap,
            buffer_memory::MMAP => Presented::AsIs,
            buffer_memory::USERPTR if self.userptr_enabled() => Presented::AsIs,
            buffer_memory::DMABUF if self.dmabuf_supported() => Presented::DmaBuf,
            _ => return Err(EINVAL),
        };
        let kind = QueueKind::of(request.buf_type()).ok_or(EINVAL)?;
        let _ordered = self.buffer_lock(kind).lock();
        if R::CODE == codes::VIDIOC_CREATE_BUFS {
            // The device cannot tell the kinds of USERPTR buffers apart.
            let state = self.state.lock();
            if state.queue_ref(kind).num_buffers > 0
                && state.memory_ref(kind).presented != presented
            {
                return Err(EINVAL);
            }
        }
        if presented != Presented::AsIs {
            request.set_memory(buffer_memory::USERPTR);
        }
        let result = self.forward(R::CODE, request.as_bytes_mut());
        // The device's own DMABUF (virtio objects) is not used.
        let mut caps = request.capabilities() & !V4L2_BUF_CAP_SUPPORTS_DMABUF;
        if caps & V4L2_BUF_CAP_SUPPORTS_USERPTR != 0 {
            if self.dev.guest_mmap() {
                caps |= V4L2_BUF_CAP_SUPPORTS_MMAP;
            }
            if self.dmabuf_supported() {
                caps |= V4L2_BUF_CAP_SUPPORTS_DMABUF;
            }
        }
        if !self.userptr_enabled() {
            caps &= !V4L2_BUF_CAP_SUPPORTS_USERPTR;
        }
        request.set_capabilities(caps);
        request.set_memory(memory);
        result?;
        let Some((first, end)) = request.allocated().filter(|&(_, end)| end <= MAX_BUFFERS) else {
            pr_err!(
                "device gave session {} buffers beyond the driver's {}; refused\n",
                self.id,
                MAX_BUFFERS
            );
            if R::CODE == codes::VIDIOC_REQBUFS {
                self.free_device_buffers(request.buf_type());
            }
            return Err(EIO);
        };
        if R::CODE == codes::VIDIOC_REQBUFS {
            self.after_reqbufs(kind, end);
        } else {
            let mut state = self.state.lock();
            let queue = state.queue(kind);
            queue.num_buffers = queue.num_buffers.max(end);
        }
        self.state.lock().memory(kind).presented = presented;
        if presented == Presented::GuestMmap {
            let sizes = match request.plane_sizes() {
                Some(sizes) => Ok(Some(sizes)),
                None => self.queue_plane_sizes(request.buf_type()),
            };
            let allocated =
                sizes.and_then(|sizes| self.allocate_guest_mmap(kind, first, end, sizes));
            if let Err(e) = allocated {
                pr_debug!(
                    "no memory for the MMAP buffers of session {}: {:?}\n",
                    self.id,
                    e
                );
                if R::CODE == codes::VIDIOC_REQBUFS {
                    self.free_device_buffers(request.buf_type());
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// The plane sizes of the queue's current format.
    fn queue_plane_sizes(&self, buf_type: BufType) -> Result<Option<KVec<u32>>> {
        let mut format = Format::zeroed();
        format.set_buf_type(buf_type);
        self.forward(codes::VIDIOC_G_FMT, format.as_bytes_mut())?;
        Ok(guest_mmap::plane_sizes(&format))
    }

    /// Allocates the memory of the guest-backed MMAP buffers `first..end`
    /// the device just agreed to, with planes of `sizes` bytes.
    fn allocate_guest_mmap(
        &self,
        kind: QueueKind,
        first: u32,
        end: u32,
        sizes: Option<KVec<u32>>,
    ) -> Result {
        let count = end.saturating_sub(first);
        if count == 0 {
            return Ok(());
        }
        let sizes = sizes.ok_or(EINVAL)?;
        let mut state = self.state.lock();
        let mmap = &mut state.memory(kind).mmap;
        // The device chose the sizes and the program the count: bounded.
        let total = sizes
            .iter()
            .try_fold(0u64, |sum, &size| sum.checked_add(u64::from(size)))
            .and_then(|buffer| buffer.checked_mul(u64::from(count)))
            .and_then(|added| added.checked_add(mmap.bytes()));
        match total {
            Some(total) if total <= guest_mmap::MAX_QUEUE_BYTES => {
                mmap.allocate(first, count, &sizes)
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

    /// Frees the device's buffers of a REQBUFS the driver refused.
    fn free_device_buffers(&self, buf_type: BufType) {
        let mut request = RequestBuffers::zeroed();
        request.set_buf_type(buf_type);
        request.set_memory(buffer_memory::USERPTR);
        if self
            .forward(codes::VIDIOC_REQBUFS, request.as_bytes_mut())
            .is_ok()
        {
            if let Some(kind) = QueueKind::of(buf_type) {
                self.after_reqbufs(kind, 0);
            }
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
        buf: &mut Buffer,
        planes: &mut [Plane],
    ) -> Result<usize> {
        let _ordered = self.buffer_lock(kind).lock();
        let index = buf.index();
        if code != codes::VIDIOC_QBUF {
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
        buf: &mut Buffer,
        planes: &mut [Plane],
    ) -> Result<usize> {
        let index = buf.index();
        let memory = buf.memory();
        let presented = self.state.lock().memory_ref(kind).presented;
        if presented.program_memory().is_some_and(|m| m != memory) {
            return Err(EINVAL);
        }
        let device_writes = kind == QueueKind::Capture;
        let (held, pointers, lengths, reuse_key) = match (memory, presented) {
            (buffer_memory::MMAP, Presented::AsIs) => {
                return self.transact(code, buf.as_bytes_mut(), planes.as_bytes_mut())
            }
            (buffer_memory::USERPTR, Presented::AsIs) if self.userptr_enabled() => {
                let user = plane_memory(buf, planes)?;
                let memory = match self.kept_memory(kind, index, &user) {
                    Some(memory) => memory,
                    None => GuestBuffer::pin_user(&self.dev, &user, device_writes)?,
                };
                let mut pointers = KVec::with_capacity(user.len(), GFP_KERNEL)?;
                for (ptr, _) in user.iter() {
                    pointers.push(*ptr, GFP_KERNEL)?;
                }
                (memory, pointers, None, Some(user))
            }
            (buffer_memory::MMAP, Presented::GuestMmap) => {
                let mut owned = KVec::new();
                owned.extend_from_slice(
                    self.state
                        .lock()
                        .memory_ref(kind)
                        .mmap
                        .planes(index)
                        .ok_or(EINVAL)?,
                    GFP_KERNEL,
                )?;
                let (offsets, lengths) = guest_mmap_planes(kind, index, &owned)?;
                let mut key = KVec::with_capacity(offsets.len(), GFP_KERNEL)?;
                for (offset, length) in offsets.iter().zip(lengths.iter()) {
                    key.push((*offset, *length), GFP_KERNEL)?;
                }
                let memory = match self.kept_memory(kind, index, &key) {
                    Some(memory) => memory,
                    None => GuestBuffer::map_driver(&self.dev, &owned, device_writes)?,
                };
                (memory, offsets, Some(lengths), Some(key))
            }
            (buffer_memory::DMABUF, Presented::DmaBuf) => {
                let mut fds = KVec::new();
                let mut pointers = KVec::new();
                for (m, length) in plane_memory(buf, planes)? {
                    // CAST: `m.fd` is the low half of the union (the
                    // architectures this driver builds for are
                    // little-endian), a signed 32-bit fd.
                    let fd = m as u32 as i32;
                    fds.push((fd, length), GFP_KERNEL)?;
                    pointers.push(u64::from(m as u32), GFP_KERNEL)?;
                }
                let (memory, lengths) =
                    GuestBuffer::import_dmabufs(&self.dev, &fds, device_writes)?;
                (memory, pointers, Some(lengths), None)
            }
            _ => return Err(EINVAL),
        };
        let planes = if buf.buf_type().is_multiplanar() {
            planes.get_mut(..pointers.len()).ok_or(EINVAL)?
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
                buffer_memory::USERPTR,
                buf,
                planes,
                &tokens,
                lengths.as_deref(),
            );
        }
        self.hold_and_send(code, kind, buf, planes, held, pointers, reuse_key)
    }

    /// The memory buffer `index` of `kind` was last queued with, kept since
    /// the device returned it, if `key` names the same memory again; kept
    /// memory of another key is released.
    fn kept_memory(&self, kind: QueueKind, index: u32, key: &[(u64, u32)]) -> Option<GuestBuffer> {
        let kept = self.state.lock().held.take_kept(kind, index)?;
        let memory = kept.reuse(key)?;
        memory.sync_for_device();
        Some(memory)
    }

    /// Holds `memory` for the buffer and sends its QBUF or PREPARE_BUF
    /// with the SG entries after the planes; once returned, the memory is
    /// kept for a QBUF with the same `reuse_key`.
    #[allow(clippy::too_many_arguments)]
    fn hold_and_send(
        &self,
        code: u32,
        kind: QueueKind,
        buf: &mut Buffer,
        planes: &mut [Plane],
        mut memory: GuestBuffer,
        pointers: KVec<u64>,
        reuse_key: Option<KVec<(u64, u32)>>,
    ) -> Result<usize> {
        let sg_entries = memory.sg_entries()?;
        let mut state = self.state.lock();
        if self.is_lost() || state.closed {
            return Err(self.dev.check_usable().err().unwrap_or(EIO));
        }
        let prepare = code == codes::VIDIOC_PREPARE_BUF;
        let (serial, replaced) =
            state
                .held
                .insert(kind, buf.index(), prepare, pointers, reuse_key, memory)?;
        drop(state);
        drop(replaced);
        // Uninterruptible: a QBUF the device may still be handling must
        // keep its pages, so only the device's own answer releases them
        // (or the reset of a device that gave none).
        let response = self.send_ioctl(
            code,
            buf.as_bytes(),
            planes.as_bytes(),
            &sg_entries,
            KVec::new(),
            Wait::Uninterruptible,
        )?;
        let result = read_response(code, response, buf.as_bytes_mut(), planes.as_bytes_mut())
            .map(|(written, _)| written);
        if result.is_err() {
            let refused = self.state.lock().held.remove_serial(serial);
            drop(refused);
        }
        result
    }

    /// EXPBUF: a dma-buf of a guest-backed MMAP buffer plane. The device's
    /// own MMAP buffers (in its shared memory) cannot be exported: the
    /// ioctl is disabled on such a device's node.
    pub(super) fn export_buffer(&self, exp: &mut ExportBuffer) -> Result {
        self.check_usable()?;
        if exp.flags() & !(O_CLOEXEC | O_ACCMODE) != 0 {
            return Err(EINVAL);
        }
        let kind = QueueKind::of(exp.buf_type()).ok_or(EINVAL)?;
        let pages = {
            let state = self.state.lock();
            let memory = state.memory_ref(kind);
            // (On a device with shared memory the ioctl is disabled.)
            if memory.presented != Presented::GuestMmap {
                return Err(EINVAL);
            }
            let plane = usize::try_from(exp.plane())?;
            memory
                .mmap
                .planes(exp.index())
                .and_then(|p| p.get(plane))
                .ok_or(EINVAL)?
                .clone()
        };
        exp.set_fd(pages.export(exp.flags())?);
        Ok(())
    }

    /// `mmap()` of a guest-backed buffer plane: its pages, if `len` bytes
    /// fit in them.
    pub(crate) fn guest_mmap_plane(&self, offset: u64, len: u64) -> Result<Arc<OwnedPages>> {
        self.check_usable()?;
        let (kind, index, plane) = guest_mmap::decode_offset(offset).ok_or(EINVAL)?;
        let state = self.state.lock();
        let pages = state
            .memory_ref(kind)
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
