// SPDX-License-Identifier: GPL-2.0

//! Safe wrappers over the V4L2 core: device registration, file handles and
//! the C entry points (file operations, ioctl handlers, vm operations).
//!
//! Every callback here turns the raw pointers the core hands over into
//! references with the lifetimes the core guarantees, then calls the safe
//! driver logic in `session` and `mmap`. Argument structs reach the logic
//! as byte slices in their 64-bit wire layout (which is the native layout
//! on the 64-bit kernels this driver builds for).

use crate::{
    ffi,
    mmap::Mapping,
    protocol::{self, DeviceConfig},
    session::{Arg, Session},
    virtio, MediaDevice,
};
use core::{mem::size_of, ptr::NonNull};
use kernel::{
    fs::File,
    prelude::*,
    sync::{poll::PollTable, Arc, ArcBorrow},
    types::Opaque,
};

// The wire layout is the 64-bit one; this driver passes the core's structs
// through as they are, so it only builds for 64-bit kernels.
const _: () = assert!(size_of::<usize>() == 8);

/// A C operations table: function pointers and null pointers only.
///
/// # Safety
///
/// Implementors hold no pointer to data and no interior mutability, so a
/// shared reference may be used from any thread.
pub(crate) unsafe trait OpsTable {}

// SAFETY: Function pointers and the (null) owner module pointer only.
unsafe impl OpsTable for ffi::v4l2_file_operations {}
// SAFETY: Function pointers only.
unsafe impl OpsTable for ffi::v4l2_ioctl_ops {}
// SAFETY: Function pointers and the `name` callback only.
unsafe impl OpsTable for ffi::vm_operations_struct {}

/// Wraps a C operations table so it can be a `static`.
#[repr(transparent)]
pub(crate) struct ConstOps<T: OpsTable>(pub(crate) T);

// SAFETY: The wrapped tables are never written after initialisation and,
// being `OpsTable`s, only hold function pointers and null pointers.
unsafe impl<T: OpsTable> Sync for ConstOps<T> {}

/// An ioctl table with no handler set, to fill in with struct update syntax.
// SAFETY: An all-zero `v4l2_ioctl_ops` is "no handler" everywhere (every
// member is an optional function pointer).
pub(crate) const NO_HANDLERS: ffi::v4l2_ioctl_ops = unsafe { core::mem::zeroed() };

/// A struct the V4L2 core hands to an ioctl handler, forwarded as bytes.
///
/// # Safety
///
/// Implementors must be plain C data: every byte pattern is a valid value
/// and the size is the 64-bit wire size.
pub(crate) unsafe trait Payload: Sized {}

macro_rules! payloads {
    ($($t:ty),* $(,)?) => { $(
        // SAFETY: A V4L2 UAPI struct or integer: plain C data.
        unsafe impl Payload for $t {}
    )* };
}
payloads!(
    u32,
    u64,
    ffi::v4l2_fmtdesc,
    ffi::v4l2_format,
    ffi::v4l2_requestbuffers,
    ffi::v4l2_create_buffers,
    ffi::v4l2_remove_buffers,
    ffi::v4l2_framebuffer,
    ffi::v4l2_input,
    ffi::v4l2_output,
    ffi::v4l2_query_ext_ctrl,
    ffi::v4l2_querymenu,
    ffi::v4l2_audio,
    ffi::v4l2_audioout,
    ffi::v4l2_modulator,
    ffi::v4l2_selection,
    ffi::v4l2_enc_idx,
    ffi::v4l2_encoder_cmd,
    ffi::v4l2_decoder_cmd,
    ffi::v4l2_streamparm,
    ffi::v4l2_tuner,
    ffi::v4l2_frequency,
    ffi::v4l2_frequency_band,
    ffi::v4l2_sliced_vbi_cap,
    ffi::v4l2_hw_freq_seek,
    ffi::v4l2_frmsizeenum,
    ffi::v4l2_frmivalenum,
    ffi::v4l2_dv_timings,
    ffi::v4l2_enum_dv_timings,
    ffi::v4l2_dv_timings_cap,
    ffi::v4l2_event_subscription,
);

fn to_c(result: Result) -> c_int {
    match result {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// `file` must be an open file of our video node: its private data is the
/// `v4l2_fh` of a live session (set in `open`, cleared in `release`).
unsafe fn session_of<'a>(file: *mut ffi::file) -> &'a Session {
    // SAFETY: Per the caller, `private_data` points to the `fh` field of a
    // `Session` kept alive by the file until `release`.
    unsafe { session_of_fh((*file).private_data.cast()) }
}

/// # Safety
///
/// `fh` must be the file handle of a live session.
unsafe fn session_of_fh<'a>(fh: *mut ffi::v4l2_fh) -> &'a Session {
    let fh = fh.cast::<FileHandle>();
    // SAFETY: `FileHandle` is the transparent `fh` field of a `Session`.
    unsafe { &*kernel::container_of!(fh, Session, fh) }
}

/// The byte view of an ioctl argument.
///
/// # Safety
///
/// `arg` must be valid for reads and writes of `T` for `'a`, and not
/// otherwise accessed meanwhile (the core gives each handler its own kernel
/// copy of the argument).
unsafe fn bytes_of<'a, T: Payload>(arg: *mut T) -> &'a mut [u8] {
    // SAFETY: Per the caller; any byte pattern is a valid `T` (`Payload`).
    unsafe { core::slice::from_raw_parts_mut(arg.cast::<u8>(), size_of::<T>()) }
}

/// The handler of an ioctl forwarded with a plain struct payload.
///
/// # Safety
///
/// Called by the V4L2 core only, with a file of our node and its kernel
/// copy of the argument.
pub(crate) unsafe extern "C" fn forward<const CODE: u32, T: Payload>(
    file: *mut ffi::file,
    _priv: *mut c_void,
    arg: *mut T,
) -> c_int {
    // SAFETY: See the function's safety section.
    let (session, arg) = unsafe { (session_of(file), bytes_of(arg)) };
    to_c(session.ioctl(CODE, Arg::Plain(arg)))
}

/// The handler of an ioctl with a read-only (`const`) struct argument.
///
/// # Safety
///
/// As for [`forward`].
pub(crate) unsafe extern "C" fn forward_const<const CODE: u32, T: Payload>(
    file: *mut ffi::file,
    _priv: *mut c_void,
    arg: *const T,
) -> c_int {
    // SAFETY: The argument is only read (the ioctl is write-only); the
    // byte view does not outlive this call.
    let (session, arg) = unsafe {
        (
            session_of(file),
            core::slice::from_raw_parts(arg.cast::<u8>(), size_of::<T>()),
        )
    };
    to_c(session.ioctl(CODE, Arg::ReadOnly(arg)))
}

/// The handler of an ioctl whose argument the core passes by value.
///
/// # Safety
///
/// As for [`forward`].
pub(crate) unsafe extern "C" fn forward_value<const CODE: u32>(
    file: *mut ffi::file,
    _priv: *mut c_void,
    value: c_uint,
) -> c_int {
    // SAFETY: See the function's safety section.
    let session = unsafe { session_of(file) };
    to_c(session.ioctl(CODE, Arg::ReadOnly(&value.to_le_bytes())))
}

/// `VIDIOC_S_STD`, whose `v4l2_std_id` argument comes by value.
///
/// # Safety
///
/// As for [`forward`].
pub(crate) unsafe extern "C" fn forward_std<const CODE: u32>(
    file: *mut ffi::file,
    _priv: *mut c_void,
    value: ffi::v4l2_std_id,
) -> c_int {
    // SAFETY: See the function's safety section.
    let session = unsafe { session_of(file) };
    to_c(session.ioctl(CODE, Arg::ReadOnly(&value.to_le_bytes())))
}

/// The planes array of a multi-planar `v4l2_buffer`: the core copied it from
/// user space and pointed `m.planes` at the copy, `length` entries long.
///
/// # Safety
///
/// `buf` must be the core's kernel copy of a `v4l2_buffer` argument.
unsafe fn planes_of<'a>(buf: *mut ffi::v4l2_buffer) -> Result<&'a mut [u8]> {
    // SAFETY: `buf` is valid per the caller.
    let (buf_type, length) = unsafe { ((*buf).type_, (*buf).length) };
    if !is_multiplanar(buf_type) {
        return Ok(&mut []);
    }
    let count = usize::try_from(length)?;
    if count > protocol::MAX_PLANES {
        return Err(EINVAL);
    }
    // SAFETY: For multi-planar types the core replaced the user pointer by
    // its kernel copy of `length` planes (video_usercopy), valid for the
    // duration of the handler.
    let planes = unsafe { *(*buf).m.planes.as_ref() };
    let Some(planes) = NonNull::new(planes) else {
        return Err(EFAULT);
    };
    // SAFETY: As above: `count` planes of `PLANE_SIZE` bytes each.
    Ok(unsafe {
        core::slice::from_raw_parts_mut(planes.as_ptr().cast::<u8>(), count * protocol::PLANE_SIZE)
    })
}

fn is_multiplanar(buf_type: u32) -> bool {
    buf_type == ffi::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE
        || buf_type == ffi::v4l2_buf_type_V4L2_BUF_TYPE_VIDEO_OUTPUT_MPLANE
}

/// (session, `v4l2_buffer` bytes, planes bytes) of a buffer ioctl.
type BufferArgs<'a> = (&'a Session, &'a mut [u8], &'a mut [u8]);

/// The session, buffer bytes and planes bytes of a buffer ioctl.
///
/// # Safety
///
/// As for [`forward`], with `buf` the core's copy of a `v4l2_buffer`.
unsafe fn buffer_args<'a>(
    file: *mut ffi::file,
    buf: *mut ffi::v4l2_buffer,
) -> Result<BufferArgs<'a>> {
    // SAFETY: Per the caller; the planes array is a separate allocation
    // from the buffer struct, so the two byte views do not overlap.
    unsafe {
        let planes = planes_of(buf)?;
        Ok((session_of(file), bytes_of(buf), planes))
    }
}

/// QBUF, QUERYBUF and PREPARE_BUF: the buffer and its planes go both ways.
///
/// # Safety
///
/// As for [`forward`].
pub(crate) unsafe extern "C" fn forward_buffer<const CODE: u32>(
    file: *mut ffi::file,
    _priv: *mut c_void,
    buf: *mut ffi::v4l2_buffer,
) -> c_int {
    // SAFETY: See the function's safety section.
    match unsafe { buffer_args(file, buf) } {
        Ok((session, buf, planes)) => to_c(session.ioctl(CODE, Arg::Buffer { buf, planes })),
        Err(e) => e.to_errno(),
    }
}

/// EXPBUF: a dma-buf of a guest-backed MMAP buffer plane.
///
/// # Safety
///
/// As for [`forward`].
pub(crate) unsafe extern "C" fn expbuf(
    file: *mut ffi::file,
    _priv: *mut c_void,
    exp: *mut ffi::v4l2_exportbuffer,
) -> c_int {
    // SAFETY: See the function's safety section: `exp` is the core's copy
    // of the argument, ours for the call.
    let (session, exp) = unsafe { (session_of(file), &mut *exp) };
    match session.export_buffer(exp.type_, exp.index, exp.plane, exp.flags) {
        Ok(fd) => {
            exp.fd = fd;
            0
        }
        Err(e) => e.to_errno(),
    }
}

/// DQBUF, answered from the buffers the eventq returned.
///
/// # Safety
///
/// As for [`forward`].
pub(crate) unsafe extern "C" fn dqbuf(
    file: *mut ffi::file,
    _priv: *mut c_void,
    buf: *mut ffi::v4l2_buffer,
) -> c_int {
    // SAFETY: `file` is valid for the call.
    let nonblocking = unsafe { (*file).f_flags } & ffi::O_NONBLOCK != 0;
    // SAFETY: See the function's safety section.
    match unsafe { buffer_args(file, buf) } {
        Ok((session, buf, planes)) => to_c(session.dqbuf(buf, planes, nonblocking)),
        Err(e) => e.to_errno(),
    }
}

/// G/S/TRY_EXT_CTRLS: the controls array follows the struct.
///
/// # Safety
///
/// As for [`forward`].
pub(crate) unsafe extern "C" fn forward_ext_ctrls<const CODE: u32>(
    file: *mut ffi::file,
    _priv: *mut c_void,
    ctrls: *mut ffi::v4l2_ext_controls,
) -> c_int {
    // SAFETY: See the function's safety section.
    let session = unsafe { session_of(file) };
    // SAFETY: `ctrls` is the core's kernel copy; the core also copied the
    // `count` controls and pointed `controls` at that copy.
    let (count, array) = unsafe { ((*ctrls).count, (*ctrls).controls) };
    let Ok(count) = usize::try_from(count) else {
        return EINVAL.to_errno();
    };
    let array: &mut [u8] = match NonNull::new(array) {
        // SAFETY: As above: `count` controls, valid for the handler.
        Some(array) if count > 0 => unsafe {
            core::slice::from_raw_parts_mut(
                array.as_ptr().cast::<u8>(),
                count * size_of::<ffi::v4l2_ext_control>(),
            )
        },
        _ => &mut [],
    };
    // SAFETY: As above.
    let ctrls = unsafe {
        core::slice::from_raw_parts_mut(ctrls.cast::<u8>(), size_of::<ffi::v4l2_ext_controls>())
    };
    to_c(session.ioctl(CODE, Arg::Controls { ctrls, array }))
}

/// The session and subscription bytes of a (un)subscribe call.
///
/// # Safety
///
/// As for [`subscribe_event`]; the view lives no longer than the call.
unsafe fn subscription_args<'a>(
    fh: *mut ffi::v4l2_fh,
    sub: *const ffi::v4l2_event_subscription,
) -> (&'a Session, &'a [u8]) {
    // SAFETY: Per the caller: `fh` is a live session's handle and `sub` the
    // core's copy of the argument, plain C data.
    unsafe {
        (
            session_of_fh(fh),
            core::slice::from_raw_parts(
                sub.cast::<u8>(),
                size_of::<ffi::v4l2_event_subscription>(),
            ),
        )
    }
}

/// VIDIOC_SUBSCRIBE_EVENT: forwarded, then mirrored on the file handle so
/// the core's DQEVENT and poll see the events the eventq brings.
///
/// # Safety
///
/// Called by the V4L2 core only, with a file handle of our node.
pub(crate) unsafe extern "C" fn subscribe_event(
    fh: *mut ffi::v4l2_fh,
    sub: *const ffi::v4l2_event_subscription,
) -> c_int {
    // SAFETY: See the function's safety section.
    let (session, bytes) = unsafe { subscription_args(fh, sub) };
    // Subscribe locally first: the device may send the initial events
    // (V4L2_EVENT_SUB_FL_SEND_INITIAL) before it answers, and the core
    // drops events nobody subscribed to.
    // SAFETY: `fh` and `sub` are valid for the call; no custom event ops.
    let ret = unsafe { ffi::v4l2_event_subscribe(fh, sub, EVENT_QUEUE_DEPTH, core::ptr::null()) };
    if ret < 0 {
        return ret;
    }
    if let Err(e) = session.ioctl(crate::ioctl::VIDIOC_SUBSCRIBE_EVENT, Arg::ReadOnly(bytes)) {
        // SAFETY: As above; undoes the local subscription.
        unsafe { ffi::v4l2_event_unsubscribe(fh, sub) };
        return e.to_errno();
    }
    session.drain_events();
    0
}

/// Events kept per subscription before the oldest are dropped.
const EVENT_QUEUE_DEPTH: c_uint = 32;

/// VIDIOC_UNSUBSCRIBE_EVENT: forwarded and dropped locally.
///
/// # Safety
///
/// As for [`subscribe_event`].
pub(crate) unsafe extern "C" fn unsubscribe_event(
    fh: *mut ffi::v4l2_fh,
    sub: *const ffi::v4l2_event_subscription,
) -> c_int {
    // SAFETY: See the function's safety section.
    let (session, bytes) = unsafe { subscription_args(fh, sub) };
    let forwarded = session.ioctl(crate::ioctl::VIDIOC_UNSUBSCRIBE_EVENT, Arg::ReadOnly(bytes));
    // SAFETY: As in `subscribe_event`.
    let ret = unsafe { ffi::v4l2_event_unsubscribe(fh, sub) };
    match forwarded {
        Ok(()) => ret,
        Err(e) => e.to_errno(),
    }
}

/// VIDIOC_QUERYCAP, answered from config space.
///
/// # Safety
///
/// As for [`forward`].
pub(crate) unsafe extern "C" fn querycap(
    file: *mut ffi::file,
    _priv: *mut c_void,
    cap: *mut ffi::v4l2_capability,
) -> c_int {
    // SAFETY: See the function's safety section.
    let (session, cap) = unsafe { (session_of(file), &mut *cap) };
    let config = session.device().config();
    copy_cstr(&mut cap.driver, b"virtio-media");
    copy_cstr(
        &mut cap.card,
        config.card_name().unwrap_or("virtio-media").as_bytes(),
    );
    copy_cstr(&mut cap.bus_info, b"platform:virtio-media");
    cap.device_caps = config.device_caps;
    cap.capabilities = config.device_caps | ffi::V4L2_CAP_DEVICE_CAPS;
    0
}

fn copy_cstr(dst: &mut [u8], src: &[u8]) {
    let len = src.len().min(dst.len().saturating_sub(1));
    if let (Some(d), Some(s)) = (dst.get_mut(..len), src.get(..len)) {
        d.copy_from_slice(s);
    }
    if let Some(rest) = dst.get_mut(len..) {
        rest.fill(0);
    }
}

/// An inode programs opened the node through, referenced so its mappings
/// can be removed later.
///
/// # Invariants
///
/// `0` holds a reference taken by `igrab`.
pub(crate) struct UserInode(NonNull<ffi::inode>);

// SAFETY: Inode references may be used and dropped from any thread.
unsafe impl Send for UserInode {}
// SAFETY: Shared references only compare the pointer and unmap, which the
// mm core serialises itself.
unsafe impl Sync for UserInode {}

impl UserInode {
    /// # Safety
    ///
    /// `file` must be a valid, open file.
    unsafe fn of_file(file: *mut ffi::file) -> Option<Self> {
        // SAFETY: Per the caller.
        let inode = unsafe { ffi::virtio_media_file_inode_get(file) };
        // INVARIANT: A non-null result carries a reference.
        NonNull::new(inode).map(Self)
    }

    pub(crate) fn same_as(&self, other: &Self) -> bool {
        self.0 == other.0
    }

    /// Removes every program's mapping of the node through this inode.
    pub(crate) fn unmap_all(&self) {
        // SAFETY: The inode is referenced (invariant).
        unsafe { ffi::virtio_media_inode_unmap_all(self.0.as_ptr()) };
    }
}

impl Drop for UserInode {
    fn drop(&mut self) {
        // SAFETY: The reference is ours (invariant).
        unsafe { ffi::virtio_media_inode_put(self.0.as_ptr()) };
    }
}

/// A V4L2 file handle, the first part of every session.
#[repr(transparent)]
pub(crate) struct FileHandle(Opaque<ffi::v4l2_fh>);

impl FileHandle {
    /// Zeroed, as `v4l2_fh_init` expects (it leaves fields such as
    /// `m2m_ctx` alone, and the core reads them): `open` initialises it once
    /// the session is pinned.
    pub(crate) fn zeroed() -> impl PinInit<Self> {
        // SAFETY: `FileHandle` is a transparent `Opaque`, for which any
        // contents are valid; the closure fully writes the slot.
        unsafe {
            pin_init::pin_init_from_closure(|slot: *mut Self| {
                slot.write_bytes(0, 1);
                Ok(())
            })
        }
    }

    fn as_raw(&self) -> *mut ffi::v4l2_fh {
        self.0.get()
    }

    /// Queues a V4L2 event (`struct v4l2_event` bytes from the device);
    /// the core drops it unless this handle subscribed to its type and id.
    pub(crate) fn queue_event(&self, event: &[u8]) {
        let mut ev = ffi::v4l2_event::default();
        // SAFETY: `v4l2_event` is plain C data; we copy at most its size.
        let dst = unsafe { bytes_of(&mut ev) };
        let len = dst.len().min(event.len());
        if let (Some(d), Some(s)) = (dst.get_mut(..len), event.get(..len)) {
            d.copy_from_slice(s);
        }
        // SAFETY: The handle is initialised while its session is in the
        // device's session map (between `open` and `release`), and `ev` is
        // copied by the core.
        unsafe { ffi::v4l2_event_queue_fh(self.as_raw(), &ev) };
    }

    /// Whether events are waiting to be dequeued.
    pub(crate) fn event_pending(&self) -> bool {
        // SAFETY: The handle is initialised (see `queue_event`).
        unsafe { ffi::v4l2_event_pending(self.as_raw()) != 0 }
    }
}

// SAFETY: `v4l2_event` and `v4l2_buffer` are plain C data.
unsafe impl Payload for ffi::v4l2_event {}
// SAFETY: As above.
unsafe impl Payload for ffi::v4l2_buffer {}

// SAFETY: The C file handle is used under the V4L2 core's own locks (event
// queue spinlock, subscribe mutex) from whichever thread holds the file.
unsafe impl Send for FileHandle {}
// SAFETY: As above.
unsafe impl Sync for FileHandle {}

/// The driver's V4L2 device and video node, embedded in `MediaDevice`.
#[pin_data]
pub(crate) struct VideoNode {
    #[pin]
    v4l2: Opaque<ffi::v4l2_device>,
    #[pin]
    vdev: Opaque<ffi::video_device>,
}

// SAFETY: The C structures are used under the V4L2 core's own locking.
unsafe impl Send for VideoNode {}
// SAFETY: As above.
unsafe impl Sync for VideoNode {}

static FOPS: ConstOps<ffi::v4l2_file_operations> = ConstOps(ffi::v4l2_file_operations {
    owner: core::ptr::null_mut(),
    read: None,
    write: None,
    poll: Some(poll),
    unlocked_ioctl: Some(ffi::video_ioctl2),
    compat_ioctl32: None,
    get_unmapped_area: None,
    mmap: Some(mmap),
    open: Some(open),
    release: Some(release),
});

impl VideoNode {
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: All-zero is the state the C side expects before
            // registration.
            v4l2 <- Opaque::ffi_init(|p: *mut ffi::v4l2_device| unsafe { p.write_bytes(0, 1) }),
            // SAFETY: As above.
            vdev <- Opaque::ffi_init(|p: *mut ffi::video_device| unsafe { p.write_bytes(0, 1) }),
        })
    }

    /// Registers `/dev/videoN`. The node keeps one reference to `owner` (the
    /// device it is embedded in) until the V4L2 core releases it, which is
    /// after `unregister` and the last file's release.
    pub(crate) fn register(
        &self,
        parent: &virtio::Device,
        config: &DeviceConfig,
        disabled: &[u32],
        owner: Arc<MediaDevice>,
    ) -> Result {
        let v4l2 = self.v4l2.get();
        let vdev = self.vdev.get();
        // SAFETY: `v4l2` is zeroed and pinned inside `owner`; `parent` is a
        // valid device that outlives the registration (unregistered in
        // remove).
        kernel::error::to_result(unsafe { ffi::v4l2_device_register(parent.as_dev(), v4l2) })?;
        // SAFETY: Registered just above; nothing else uses it yet.
        unsafe {
            (*v4l2).release = Some(v4l2_release);
            let name = config.card_name().unwrap_or("virtio-media").as_bytes();
            copy_cstr(&mut (*vdev).name, name);
            (*vdev).v4l2_dev = v4l2;
            (*vdev).fops = &FOPS.0;
            (*vdev).ioctl_ops = &crate::ioctl::IOCTL_OPS.0;
            (*vdev).release = Some(ffi::video_device_release_empty);
            (*vdev).device_caps = config.device_caps;
            (*vdev).vfl_dir = direction_of(config.device_caps);
            // Before registration `valid_ioctls` lists the disabled ones
            // (what `v4l2_disable_ioctl` sets).
            for &code in disabled {
                let nr = protocol::ioctl_nr(code) as usize;
                let bits = c_ulong::BITS as usize;
                if let Some(word) = (*vdev).valid_ioctls.get_mut(nr / bits) {
                    *word |= 1 << (nr % bits);
                }
            }
        }
        // The reference the V4L2 device's release gives back.
        let owner = Arc::into_raw(owner);
        // SAFETY: `vdev` is fully set up; `THIS_MODULE` owns the fops.
        let ret = unsafe {
            ffi::__video_register_device(
                vdev,
                config.device_type,
                -1,
                1,
                <crate::VirtioMediaModule as kernel::ModuleMetadata>::THIS_MODULE.as_ptr(),
            )
        };
        if ret < 0 {
            // SAFETY: The V4L2 device was registered above; dropping its
            // initial reference runs `v4l2_release`, which takes back the
            // reference leaked for it.
            unsafe {
                ffi::v4l2_device_unregister(v4l2);
                ffi::v4l2_device_put(v4l2);
            }
            let _ = owner;
            return Err(Error::from_errno(ret));
        }
        Ok(())
    }

    /// Removes the node: no new opens; open files keep working until they
    /// find the device gone.
    pub(crate) fn unregister(&self) {
        // SAFETY: Registered by `register`. The final `v4l2_device_put`
        // drops the initial reference; the memory stays until the core's
        // last reference goes and `v4l2_release` runs.
        unsafe {
            ffi::video_unregister_device(self.vdev.get());
            ffi::v4l2_device_unregister(self.v4l2.get());
            ffi::v4l2_device_put(self.v4l2.get());
        }
    }

    /// The node's device number, N in `/dev/videoN`.
    pub(crate) fn number(&self) -> u16 {
        // SAFETY: Registered; `num` is constant afterwards.
        unsafe { (*self.vdev.get()).num }
    }
}

fn direction_of(caps: u32) -> u32 {
    const OUTPUT: u32 = ffi::V4L2_CAP_VIDEO_OUTPUT
        | ffi::V4L2_CAP_VIDEO_OUTPUT_MPLANE
        | ffi::V4L2_CAP_VBI_OUTPUT
        | ffi::V4L2_CAP_SLICED_VBI_OUTPUT
        | ffi::V4L2_CAP_SDR_OUTPUT
        | ffi::V4L2_CAP_META_OUTPUT
        | ffi::V4L2_CAP_MODULATOR;
    const CAPTURE: u32 = ffi::V4L2_CAP_VIDEO_CAPTURE
        | ffi::V4L2_CAP_VIDEO_CAPTURE_MPLANE
        | ffi::V4L2_CAP_VBI_CAPTURE
        | ffi::V4L2_CAP_SLICED_VBI_CAPTURE
        | ffi::V4L2_CAP_SDR_CAPTURE
        | ffi::V4L2_CAP_META_CAPTURE
        | ffi::V4L2_CAP_TUNER;
    if caps & (ffi::V4L2_CAP_VIDEO_M2M | ffi::V4L2_CAP_VIDEO_M2M_MPLANE) != 0 {
        ffi::vfl_devnode_direction_VFL_DIR_M2M
    } else if caps & OUTPUT != 0 && caps & CAPTURE == 0 {
        ffi::vfl_devnode_direction_VFL_DIR_TX
    } else {
        ffi::vfl_devnode_direction_VFL_DIR_RX
    }
}

/// # Safety
///
/// Only the V4L2 core calls this, once, when the last reference to our
/// `v4l2_device` goes.
unsafe extern "C" fn v4l2_release(v4l2: *mut ffi::v4l2_device) {
    let v4l2 = v4l2.cast::<Opaque<ffi::v4l2_device>>();
    // SAFETY: `v4l2` is the `v4l2` field of the `VideoNode` in the `node`
    // field of a `MediaDevice`, which `register` leaked one `Arc` reference
    // to; this is where it is taken back, once.
    unsafe {
        let node = kernel::container_of!(v4l2, VideoNode, v4l2);
        let dev = kernel::container_of!(node, MediaDevice, node);
        drop(Arc::from_raw(dev));
    }
}

/// # Safety
///
/// Only the V4L2 core calls this, for a file of our registered node.
unsafe extern "C" fn open(file: *mut ffi::file) -> c_int {
    // SAFETY: The core passes a file of our node; its video_device is the
    // `vdev` field of a registered `VideoNode`, whose `MediaDevice` holds a
    // leaked reference until `v4l2_release` (which cannot run while this
    // file is being opened).
    let dev: Arc<MediaDevice> = unsafe {
        let vdev = ffi::video_devdata(file).cast::<Opaque<ffi::video_device>>();
        let node = kernel::container_of!(vdev, VideoNode, vdev);
        let dev = kernel::container_of!(node, MediaDevice, node);
        ArcBorrow::from_raw(dev).into()
    };
    // The inode's mappings are removed when the device stops.
    // SAFETY: `file` is the file being opened.
    if let Some(inode) = unsafe { UserInode::of_file(file) } {
        if let Err(e) = dev.note_user_inode(inode) {
            return e.to_errno();
        }
    }
    let session = match Session::open(dev) {
        Ok(session) => session,
        Err(e) => return e.to_errno(),
    };
    let fh = session.file_handle().as_raw();
    // SAFETY: `fh` is pinned in the session, which the file keeps alive
    // (the reference leaked below) until `release`.
    unsafe {
        ffi::v4l2_fh_init(fh, ffi::video_devdata(file));
        ffi::v4l2_fh_add(fh, file);
    }
    session.publish();
    let _ = Arc::into_raw(session);
    0
}

/// # Safety
///
/// Only the V4L2 core calls this, for a file `open` succeeded on.
unsafe extern "C" fn release(file: *mut ffi::file) -> c_int {
    // SAFETY: `open` stored the session's handle in `private_data` and
    // leaked one reference to it for the file.
    let session = unsafe {
        let session = session_of(file);
        Arc::from_raw(core::ptr::from_ref(session))
    };
    session.release();
    let fh = session.file_handle().as_raw();
    // SAFETY: Initialised and added in `open`; the session is out of the
    // device's map, so no event is queued on it any more.
    unsafe {
        ffi::v4l2_fh_del(fh, file);
        ffi::v4l2_fh_exit(fh);
    }
    0
}

/// # Safety
///
/// Only the V4L2 core calls this, for an open file of our node.
unsafe extern "C" fn poll(
    file: *mut ffi::file,
    table: *mut ffi::poll_table_struct,
) -> ffi::__poll_t {
    // SAFETY: See the function's safety section.
    let session = unsafe { session_of(file) };
    // SAFETY: `file` and `table` are valid for the call; both wait queues
    // live as long as the file (the session is freed after release).
    let requested = unsafe {
        ffi::virtio_media_poll_wait(file, &raw mut (*session.file_handle().as_raw()).wait, table);
        let requested = ffi::virtio_media_poll_requested(table);
        PollTable::from_raw(table).register_wait(File::from_raw_file(file), session.waiters());
        requested
    };
    session.poll_mask(requested)
}

/// # Safety
///
/// Only the V4L2 core calls this, for an open file of our node.
unsafe extern "C" fn mmap(file: *mut ffi::file, vma: *mut ffi::vm_area_struct) -> c_int {
    // SAFETY: See the function's safety section; `vma` is being set up and
    // is ours to fill.
    let (session, pgoff, len, shared, writable) = unsafe {
        (
            session_of(file),
            ffi::virtio_media_vma_pgoff(vma),
            ffi::virtio_media_vma_len(vma),
            ffi::virtio_media_vma_shared(vma),
            ffi::virtio_media_vma_writable(vma),
        )
    };
    if !shared {
        return EINVAL.to_errno();
    }
    let (Ok(pgoff), Ok(len)) = (u64::try_from(pgoff), u64::try_from(len)) else {
        return EINVAL.to_errno();
    };
    let Some(offset) = pgoff.checked_mul(kernel::page::PAGE_SIZE as u64) else {
        return EINVAL.to_errno();
    };
    if session.device().guest_mmap() {
        // SAFETY: As above.
        return unsafe { map_guest_pages(session, vma, offset, len) };
    }
    let mapping = match session.map(offset, len, writable) {
        Ok(mapping) => mapping,
        Err(e) => return e.to_errno(),
    };
    let private = Arc::into_raw(mapping);
    // SAFETY: `vma` is being set up by this call; the VMAs made from it
    // share one reference to the mapping, given back by the last
    // `vm_close`. Pages are mapped by `vm_fault`, which checks them against
    // the mapping.
    unsafe { ffi::virtio_media_vma_setup_pfnmap(vma, &VM_OPS.0, private.cast_mut().cast()) };
    0
}

/// Maps the pages of a guest-backed MMAP buffer plane.
///
/// # Safety
///
/// `vma` is a VMA being set up by `mmap` on a file of `session`.
unsafe fn map_guest_pages(
    session: &Session,
    vma: *mut ffi::vm_area_struct,
    offset: u64,
    len: u64,
) -> c_int {
    // `plane` keeps the pages alive until they are mapped, even if a
    // REQBUFS on another thread drops the session's reference meanwhile.
    let (plane, pages) = match session.guest_mmap_plane(offset, len).and_then(|plane| {
        let pages = plane.raw_pages()?;
        Ok((plane, pages))
    }) {
        Ok(found) => found,
        Err(e) => return e.to_errno(),
    };
    // SAFETY: `vma` is being set up (see the safety section); `pages` are
    // live pages of `plane`, which is held until after the call, and every
    // page the VMA maps takes its own reference, so the mapping outlives
    // the buffer safely.
    let ret =
        unsafe { ffi::virtio_media_vma_map_pages(vma, pages.as_ptr().cast_mut(), pages.len()) };
    drop(plane);
    ret
}

static VM_OPS: ConstOps<ffi::vm_operations_struct> = ConstOps(ffi::vm_operations_struct {
    open: Some(vm_open),
    close: Some(vm_close),
    fault: Some(vm_fault),
    // SAFETY: All-zero is "no callback" for the other members.
    ..unsafe { core::mem::zeroed() }
});

/// A program touched a mapping of the device's memory: map it, unless the
/// device stopped (then SIGBUS, never stale memory).
///
/// # Safety
///
/// Only the mm core calls this, for a fault in a VMA `mmap` set up.
unsafe extern "C" fn vm_fault(vmf: *mut ffi::vm_fault) -> ffi::vm_fault_t {
    // SAFETY: `vmf` is the fault being handled; its VMA is one of ours.
    let mapping = unsafe {
        &*ffi::virtio_media_vma_private(ffi::virtio_media_vmf_vma(vmf)).cast::<Mapping>()
    };
    let (phys, pgoff, len) = mapping.extent();
    // SAFETY: `vmf` is valid for the call; `phys` and `len` were checked
    // against the shared-memory region when the mapping was made.
    let inserted = mapping
        .device()
        .while_mappable(|| unsafe { ffi::virtio_media_vma_insert_pfns(vmf, phys, pgoff, len) });
    inserted.unwrap_or(ffi::vm_fault_reason_VM_FAULT_SIGBUS)
}

/// A VMA was copied (fork) or split: it holds its own reference.
///
/// # Safety
///
/// Only the mm core calls this, for a VMA `mmap` set up.
unsafe extern "C" fn vm_open(vma: *mut ffi::vm_area_struct) {
    // SAFETY: The private data is the reference to a `Mapping` that all
    // VMAs made from one `mmap` share; it is alive while any of them is.
    let mapping = unsafe { &*ffi::virtio_media_vma_private(vma).cast::<Mapping>() };
    mapping.vma_opened();
}

/// # Safety
///
/// Only the mm core calls this, for a VMA `mmap` or `vm_open` set up.
unsafe extern "C" fn vm_close(vma: *mut ffi::vm_area_struct) {
    // SAFETY: As in `vm_open`.
    let mapping = unsafe {
        ffi::virtio_media_vma_private(vma)
            .cast::<Mapping>()
            .cast_const()
    };
    // SAFETY: As in `vm_open`.
    if unsafe { (*mapping).vma_closed() } {
        // SAFETY: The last VMA gives back the reference `mmap` leaked.
        Mapping::unmap_later(unsafe { Arc::from_raw(mapping) });
    }
}
