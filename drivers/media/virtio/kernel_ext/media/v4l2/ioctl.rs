// SPDX-License-Identifier: GPL-2.0

//! V4L2 ioctls: their codes, what a driver receives for each
//! ([`Ioctl`]), and the handler table the V4L2 core calls.
//!
//! C header: [`include/media/v4l2-ioctl.h`](srctree/include/media/v4l2-ioctl.h)
//!
//! The core (`video_ioctl2`) validates and copies every argument, converts
//! 32-bit arguments, and calls the handler set here. Every handler the core
//! knows a prototype for is set: a driver refuses what it does not support
//! (the protocol of virtio-media forwards almost every ioctl), or disables
//! it on the node ([`super::device::Options::disabled`]). Adding an ioctl
//! is one line in the table.

use super::{
    file::{nonblocking, Driver, FileData},
    types::{
        Buffer, Capability, CreateBuffers, EventSubscription, ExportBuffer, ExtControl,
        ExtControls, Plane, RemoveBuffers, RequestBuffers,
    },
};
use crate::kernel_ext::bindings;
use core::{fmt::Write, marker::PhantomData, mem::size_of, ptr::NonNull};
use kernel::{
    ioctl::{_IOR, _IOW, _IOWR},
    prelude::*,
    str::NullTerminatedFormatter,
};

/// The V4L2 ioctl type, `'V'`.
const V: u32 = b'V' as u32;

const fn rw<T>(nr: u32) -> u32 {
    _IOWR::<T>(V, nr)
}
const fn r<T>(nr: u32) -> u32 {
    _IOR::<T>(V, nr)
}
const fn w<T>(nr: u32) -> u32 {
    _IOW::<T>(V, nr)
}

// The codes of videodev2.h, which bindgen cannot expand.
pub(crate) const VIDIOC_ENUM_FMT: u32 = rw::<bindings::v4l2_fmtdesc>(2);
pub(crate) const VIDIOC_G_FMT: u32 = rw::<bindings::v4l2_format>(4);
pub(crate) const VIDIOC_S_FMT: u32 = rw::<bindings::v4l2_format>(5);
pub(crate) const VIDIOC_REQBUFS: u32 = rw::<bindings::v4l2_requestbuffers>(8);
pub(crate) const VIDIOC_QUERYBUF: u32 = rw::<bindings::v4l2_buffer>(9);
pub(crate) const VIDIOC_G_FBUF: u32 = r::<bindings::v4l2_framebuffer>(10);
pub(crate) const VIDIOC_S_FBUF: u32 = w::<bindings::v4l2_framebuffer>(11);
pub(crate) const VIDIOC_OVERLAY: u32 = w::<c_int>(14);
pub(crate) const VIDIOC_QBUF: u32 = rw::<bindings::v4l2_buffer>(15);
pub(crate) const VIDIOC_EXPBUF: u32 = rw::<bindings::v4l2_exportbuffer>(16);
pub(crate) const VIDIOC_STREAMON: u32 = w::<c_int>(18);
pub(crate) const VIDIOC_STREAMOFF: u32 = w::<c_int>(19);
pub(crate) const VIDIOC_G_PARM: u32 = rw::<bindings::v4l2_streamparm>(21);
pub(crate) const VIDIOC_S_PARM: u32 = rw::<bindings::v4l2_streamparm>(22);
pub(crate) const VIDIOC_G_STD: u32 = r::<bindings::v4l2_std_id>(23);
pub(crate) const VIDIOC_S_STD: u32 = w::<bindings::v4l2_std_id>(24);
pub(crate) const VIDIOC_ENUMINPUT: u32 = rw::<bindings::v4l2_input>(26);
pub(crate) const VIDIOC_G_TUNER: u32 = rw::<bindings::v4l2_tuner>(29);
pub(crate) const VIDIOC_S_TUNER: u32 = w::<bindings::v4l2_tuner>(30);
pub(crate) const VIDIOC_G_AUDIO: u32 = r::<bindings::v4l2_audio>(33);
pub(crate) const VIDIOC_S_AUDIO: u32 = w::<bindings::v4l2_audio>(34);
pub(crate) const VIDIOC_QUERYMENU: u32 = rw::<bindings::v4l2_querymenu>(37);
pub(crate) const VIDIOC_G_INPUT: u32 = r::<c_int>(38);
pub(crate) const VIDIOC_S_INPUT: u32 = rw::<c_int>(39);
pub(crate) const VIDIOC_G_OUTPUT: u32 = r::<c_int>(46);
pub(crate) const VIDIOC_S_OUTPUT: u32 = rw::<c_int>(47);
pub(crate) const VIDIOC_ENUMOUTPUT: u32 = rw::<bindings::v4l2_output>(48);
pub(crate) const VIDIOC_G_AUDOUT: u32 = r::<bindings::v4l2_audioout>(49);
pub(crate) const VIDIOC_S_AUDOUT: u32 = w::<bindings::v4l2_audioout>(50);
pub(crate) const VIDIOC_G_MODULATOR: u32 = rw::<bindings::v4l2_modulator>(54);
pub(crate) const VIDIOC_S_MODULATOR: u32 = w::<bindings::v4l2_modulator>(55);
pub(crate) const VIDIOC_G_FREQUENCY: u32 = rw::<bindings::v4l2_frequency>(56);
pub(crate) const VIDIOC_S_FREQUENCY: u32 = w::<bindings::v4l2_frequency>(57);
pub(crate) const VIDIOC_QUERYSTD: u32 = r::<bindings::v4l2_std_id>(63);
pub(crate) const VIDIOC_TRY_FMT: u32 = rw::<bindings::v4l2_format>(64);
pub(crate) const VIDIOC_ENUMAUDIO: u32 = rw::<bindings::v4l2_audio>(65);
pub(crate) const VIDIOC_ENUMAUDOUT: u32 = rw::<bindings::v4l2_audioout>(66);
pub(crate) const VIDIOC_G_SLICED_VBI_CAP: u32 = rw::<bindings::v4l2_sliced_vbi_cap>(69);
pub(crate) const VIDIOC_G_EXT_CTRLS: u32 = rw::<bindings::v4l2_ext_controls>(71);
pub(crate) const VIDIOC_S_EXT_CTRLS: u32 = rw::<bindings::v4l2_ext_controls>(72);
pub(crate) const VIDIOC_TRY_EXT_CTRLS: u32 = rw::<bindings::v4l2_ext_controls>(73);
pub(crate) const VIDIOC_ENUM_FRAMESIZES: u32 = rw::<bindings::v4l2_frmsizeenum>(74);
pub(crate) const VIDIOC_ENUM_FRAMEINTERVALS: u32 = rw::<bindings::v4l2_frmivalenum>(75);
pub(crate) const VIDIOC_G_ENC_INDEX: u32 = r::<bindings::v4l2_enc_idx>(76);
pub(crate) const VIDIOC_ENCODER_CMD: u32 = rw::<bindings::v4l2_encoder_cmd>(77);
pub(crate) const VIDIOC_TRY_ENCODER_CMD: u32 = rw::<bindings::v4l2_encoder_cmd>(78);
pub(crate) const VIDIOC_S_HW_FREQ_SEEK: u32 = w::<bindings::v4l2_hw_freq_seek>(82);
pub(crate) const VIDIOC_S_DV_TIMINGS: u32 = rw::<bindings::v4l2_dv_timings>(87);
pub(crate) const VIDIOC_G_DV_TIMINGS: u32 = rw::<bindings::v4l2_dv_timings>(88);
pub(crate) const VIDIOC_SUBSCRIBE_EVENT: u32 = w::<bindings::v4l2_event_subscription>(90);
pub(crate) const VIDIOC_UNSUBSCRIBE_EVENT: u32 = w::<bindings::v4l2_event_subscription>(91);
pub(crate) const VIDIOC_CREATE_BUFS: u32 = rw::<bindings::v4l2_create_buffers>(92);
pub(crate) const VIDIOC_PREPARE_BUF: u32 = rw::<bindings::v4l2_buffer>(93);
pub(crate) const VIDIOC_G_SELECTION: u32 = rw::<bindings::v4l2_selection>(94);
pub(crate) const VIDIOC_S_SELECTION: u32 = rw::<bindings::v4l2_selection>(95);
pub(crate) const VIDIOC_DECODER_CMD: u32 = rw::<bindings::v4l2_decoder_cmd>(96);
pub(crate) const VIDIOC_TRY_DECODER_CMD: u32 = rw::<bindings::v4l2_decoder_cmd>(97);
pub(crate) const VIDIOC_ENUM_DV_TIMINGS: u32 = rw::<bindings::v4l2_enum_dv_timings>(98);
pub(crate) const VIDIOC_QUERY_DV_TIMINGS: u32 = r::<bindings::v4l2_dv_timings>(99);
pub(crate) const VIDIOC_DV_TIMINGS_CAP: u32 = rw::<bindings::v4l2_dv_timings_cap>(100);
pub(crate) const VIDIOC_ENUM_FREQ_BANDS: u32 = rw::<bindings::v4l2_frequency_band>(101);
pub(crate) const VIDIOC_QUERY_EXT_CTRL: u32 = rw::<bindings::v4l2_query_ext_ctrl>(103);
pub(crate) const VIDIOC_REMOVE_BUFS: u32 = rw::<bindings::v4l2_remove_buffers>(104);

/// One ioctl, as the driver receives it: a typed view where it reads or
/// changes the argument, the argument's bytes where it only passes them
/// on. Every reference is the V4L2 core's copy, valid for the call.
pub(crate) enum Ioctl<'a> {
    /// An argument the ioctl reads and may write back.
    Bytes { code: u32, arg: &'a mut [u8] },
    /// An argument the ioctl only reads (`const` in the core's handler).
    ReadOnly { code: u32, arg: &'a [u8] },
    /// VIDIOC_QUERYCAP.
    QueryCap(&'a mut Capability),
    /// VIDIOC_REQBUFS.
    ReqBufs(&'a mut RequestBuffers),
    /// VIDIOC_CREATE_BUFS.
    CreateBufs(&'a mut CreateBuffers),
    /// VIDIOC_REMOVE_BUFS.
    RemoveBufs(&'a mut RemoveBuffers),
    /// VIDIOC_STREAMON or VIDIOC_STREAMOFF of a buffer type.
    Stream { code: u32, buf_type: u32 },
    /// VIDIOC_QUERYBUF, VIDIOC_QBUF or VIDIOC_PREPARE_BUF. For the
    /// multi-planar types, `planes` is the planes array (the buffer's
    /// `length` entries) and `buf.m` reads 0; otherwise it is empty.
    Buffer {
        code: u32,
        buf: &'a mut Buffer,
        planes: &'a mut [Plane],
    },
    /// VIDIOC_DQBUF, the planes as for [`Ioctl::Buffer`].
    Dqbuf {
        buf: &'a mut Buffer,
        planes: &'a mut [Plane],
    },
    /// VIDIOC_EXPBUF.
    ExpBuf(&'a mut ExportBuffer),
    /// VIDIOC_G/S/TRY_EXT_CTRLS: the controls array is `array`, and the
    /// structure's pointer to it reads 0.
    ExtCtrls {
        code: u32,
        ctrls: &'a mut ExtControls,
        array: &'a mut [ExtControl],
    },
    /// VIDIOC_DECODER_CMD, VIDIOC_ENCODER_CMD and their TRY_ forms: the
    /// command (`V4L2_DEC_CMD_*`, `V4L2_ENC_CMD_*`) and the argument's
    /// bytes.
    Command {
        code: u32,
        cmd: u32,
        arg: &'a mut [u8],
    },
    /// VIDIOC_SUBSCRIBE_EVENT: the file is subscribed locally before the
    /// driver is asked (a device may send the initial events at once), and
    /// unsubscribed again if the driver fails.
    Subscribe(&'a EventSubscription),
    /// VIDIOC_UNSUBSCRIBE_EVENT; the file is unsubscribed locally whatever
    /// the driver answers.
    Unsubscribe(&'a EventSubscription),
}

/// Events kept per subscription before the oldest are dropped.
const EVENT_QUEUE_DEPTH: c_uint = 32;

fn to_c(result: Result) -> c_int {
    match result {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// `file` must be an open file of a node of `T`, for the call.
unsafe fn call<T: Driver>(file: *mut bindings::file, ioctl: Ioctl<'_>) -> c_int {
    // SAFETY: Per the caller.
    let (driver_file, nonblocking) = unsafe { (FileData::<T>::of_file(file), nonblocking(file)) };
    to_c(T::ioctl(driver_file, nonblocking, ioctl))
}

/// A V4L2 ioctl argument passed on as bytes.
///
/// # Safety
///
/// Implementors are plain C data: any byte pattern is valid, and a value
/// the core hands over is fully initialised (copied from user space, or
/// zeroed).
unsafe trait Payload: Sized {}

macro_rules! payloads {
    ($($t:ty),* $(,)?) => { $(
        // SAFETY: A V4L2 UAPI struct or integer: plain C data.
        unsafe impl Payload for $t {}
    )* };
}
payloads!(
    u32,
    u64,
    bindings::v4l2_fmtdesc,
    bindings::v4l2_format,
    bindings::v4l2_framebuffer,
    bindings::v4l2_input,
    bindings::v4l2_output,
    bindings::v4l2_query_ext_ctrl,
    bindings::v4l2_querymenu,
    bindings::v4l2_audio,
    bindings::v4l2_audioout,
    bindings::v4l2_modulator,
    bindings::v4l2_selection,
    bindings::v4l2_enc_idx,
    bindings::v4l2_streamparm,
    bindings::v4l2_tuner,
    bindings::v4l2_frequency,
    bindings::v4l2_frequency_band,
    bindings::v4l2_sliced_vbi_cap,
    bindings::v4l2_hw_freq_seek,
    bindings::v4l2_frmsizeenum,
    bindings::v4l2_frmivalenum,
    bindings::v4l2_dv_timings,
    bindings::v4l2_enum_dv_timings,
    bindings::v4l2_dv_timings_cap,
);

/// The bytes of the core's copy of an argument.
///
/// # Safety
///
/// `arg` must be valid for reads and writes of `A` for `'a`, and not
/// otherwise accessed meanwhile (the core gives each handler its own copy).
unsafe fn bytes_of<'a, A: Payload>(arg: *mut A) -> &'a mut [u8] {
    // SAFETY: Per the caller; initialised (`Payload`).
    unsafe { core::slice::from_raw_parts_mut(arg.cast::<u8>(), size_of::<A>()) }
}

/// # Safety
///
/// Called by the V4L2 core only, with an open file of a node of `T` and its
/// copy of the argument.
unsafe extern "C" fn forward<T: Driver, const CODE: u32, A: Payload>(
    file: *mut bindings::file,
    _priv: *mut c_void,
    arg: *mut A,
) -> c_int {
    // SAFETY: See the function's safety section.
    unsafe {
        call::<T>(
            file,
            Ioctl::Bytes {
                code: CODE,
                arg: bytes_of(arg),
            },
        )
    }
}

/// `VIDIOC_ENUM_FMT`, forwarded. The V4L2 core describes the formats it
/// knows, and WARNs for any other format whose description is empty
/// (`v4l_fill_fmtdesc`): a kernel report, and a panic under
/// `panic_on_warn`, which a device must not be able to cause. Such a
/// format gets its four characters and value as description here, as the
/// core's own fallback would print it; every description is terminated.
///
/// # Safety
///
/// As for [`forward`].
unsafe extern "C" fn enum_fmt<T: Driver>(
    file: *mut bindings::file,
    priv_: *mut c_void,
    arg: *mut bindings::v4l2_fmtdesc,
) -> c_int {
    // SAFETY: The caller's arguments, as `forward` requires them.
    let ret = unsafe { forward::<T, VIDIOC_ENUM_FMT, bindings::v4l2_fmtdesc>(file, priv_, arg) };
    if ret == 0 {
        // SAFETY: The core's copy of the argument, valid and the handler's
        // alone for the call; `forward` is done with it.
        let desc = unsafe { &mut *arg };
        // The core passes a description it does not replace on as is.
        if let Some(last) = desc.description.last_mut() {
            *last = 0;
        }
        if desc.description.first() == Some(&0) {
            kernel::pr_warn_once!(
                "device described format {:#010x} with an empty string; named here\n",
                desc.pixelformat
            );
            describe_format(&mut desc.description, desc.pixelformat);
        }
    }
    ret
}

/// Writes "ABCD (0x44434241)" for fourcc `format` into `text`,
/// NUL-terminated, the rest zeroed; a piece that does not fit is left out.
/// Characters that do not print are shown as '.'.
fn describe_format(text: &mut [u8], format: u32) {
    text.fill(0);
    let chars = format.to_le_bytes().map(|c| {
        if c.is_ascii_graphic() || c == b' ' {
            char::from(c)
        } else {
            '.'
        }
    });
    let Some(mut out) = NullTerminatedFormatter::new(text) else {
        return;
    };
    // What does not fit is dropped: a description is only for display.
    let _ = out.write_fmt(format_args!(
        "{}{}{}{} ({:#010x})",
        chars[0], chars[1], chars[2], chars[3], format
    ));
}

/// # Safety
///
/// As for [`forward`].
unsafe extern "C" fn forward_const<T: Driver, const CODE: u32, A: Payload>(
    file: *mut bindings::file,
    _priv: *mut c_void,
    arg: *const A,
) -> c_int {
    // SAFETY: See the function's safety section: the core's copy, only
    // read here.
    let arg = unsafe { core::slice::from_raw_parts(arg.cast::<u8>(), size_of::<A>()) };
    // SAFETY: As above.
    unsafe { call::<T>(file, Ioctl::ReadOnly { code: CODE, arg }) }
}

/// An ioctl whose integer argument the core passes by value.
///
/// # Safety
///
/// As for [`forward`].
unsafe extern "C" fn forward_value<T: Driver, const CODE: u32>(
    file: *mut bindings::file,
    _priv: *mut c_void,
    value: c_uint,
) -> c_int {
    let arg = value.to_le_bytes();
    // SAFETY: See the function's safety section.
    unsafe {
        call::<T>(
            file,
            Ioctl::ReadOnly {
                code: CODE,
                arg: &arg,
            },
        )
    }
}

/// `VIDIOC_S_STD`, whose `v4l2_std_id` argument comes by value.
///
/// # Safety
///
/// As for [`forward`].
unsafe extern "C" fn forward_std<T: Driver, const CODE: u32>(
    file: *mut bindings::file,
    _priv: *mut c_void,
    value: bindings::v4l2_std_id,
) -> c_int {
    let arg = value.to_le_bytes();
    // SAFETY: See the function's safety section.
    unsafe {
        call::<T>(
            file,
            Ioctl::ReadOnly {
                code: CODE,
                arg: &arg,
            },
        )
    }
}

/// # Safety
///
/// As for [`forward`].
unsafe extern "C" fn stream<T: Driver, const CODE: u32>(
    file: *mut bindings::file,
    _priv: *mut c_void,
    buf_type: c_uint,
) -> c_int {
    // SAFETY: See the function's safety section.
    unsafe {
        call::<T>(
            file,
            Ioctl::Stream {
                code: CODE,
                buf_type,
            },
        )
    }
}

/// # Safety
///
/// As for [`forward`].
unsafe extern "C" fn querycap<T: Driver>(
    file: *mut bindings::file,
    _priv: *mut c_void,
    cap: *mut bindings::v4l2_capability,
) -> c_int {
    // SAFETY: See the function's safety section.
    unsafe { call::<T>(file, Ioctl::QueryCap(Capability::from_raw(cap))) }
}

/// # Safety
///
/// As for [`forward`].
unsafe extern "C" fn reqbufs<T: Driver>(
    file: *mut bindings::file,
    _priv: *mut c_void,
    req: *mut bindings::v4l2_requestbuffers,
) -> c_int {
    // SAFETY: See the function's safety section.
    unsafe { call::<T>(file, Ioctl::ReqBufs(RequestBuffers::from_raw(req))) }
}

/// # Safety
///
/// As for [`forward`].
unsafe extern "C" fn create_bufs<T: Driver>(
    file: *mut bindings::file,
    _priv: *mut c_void,
    create: *mut bindings::v4l2_create_buffers,
) -> c_int {
    // SAFETY: See the function's safety section.
    unsafe { call::<T>(file, Ioctl::CreateBufs(CreateBuffers::from_raw(create))) }
}

/// # Safety
///
/// As for [`forward`].
unsafe extern "C" fn remove_bufs<T: Driver>(
    file: *mut bindings::file,
    _priv: *mut c_void,
    remove: *mut bindings::v4l2_remove_buffers,
) -> c_int {
    // SAFETY: See the function's safety section.
    unsafe { call::<T>(file, Ioctl::RemoveBufs(RemoveBuffers::from_raw(remove))) }
}

/// # Safety
///
/// As for [`forward`].
unsafe extern "C" fn expbuf<T: Driver>(
    file: *mut bindings::file,
    _priv: *mut c_void,
    exp: *mut bindings::v4l2_exportbuffer,
) -> c_int {
    // SAFETY: See the function's safety section.
    unsafe { call::<T>(file, Ioctl::ExpBuf(ExportBuffer::from_raw(exp))) }
}

/// The argument of a codec command ioctl.
trait CodecCommand: Payload {
    fn cmd(&self) -> u32;
}

impl CodecCommand for bindings::v4l2_decoder_cmd {
    fn cmd(&self) -> u32 {
        self.cmd
    }
}

impl CodecCommand for bindings::v4l2_encoder_cmd {
    fn cmd(&self) -> u32 {
        self.cmd
    }
}

/// DECODER_CMD and ENCODER_CMD, and their TRY_ forms.
///
/// # Safety
///
/// As for [`forward`].
unsafe extern "C" fn command<T: Driver, const CODE: u32, A: CodecCommand>(
    file: *mut bindings::file,
    _priv: *mut c_void,
    arg: *mut A,
) -> c_int {
    // SAFETY: See the function's safety section.
    let cmd = unsafe { (*arg).cmd() };
    // SAFETY: As above.
    unsafe {
        call::<T>(
            file,
            Ioctl::Command {
                code: CODE,
                cmd,
                arg: bytes_of(arg),
            },
        )
    }
}

payloads!(bindings::v4l2_encoder_cmd, bindings::v4l2_decoder_cmd);

/// The planes array of a multi-planar buffer, and the buffer with its
/// planes pointer cleared: the core copied the array from user space and
/// pointed `m.planes` at its copy, `length` entries long.
///
/// # Safety
///
/// `buf` must be the core's copy of a `v4l2_buffer` argument, valid for
/// `'a`; the returned pointer must be written back into `m` before the
/// handler returns.
unsafe fn buffer_args<'a>(
    buf: *mut bindings::v4l2_buffer,
) -> Result<(&'a mut Buffer, &'a mut [Plane], u64)> {
    // SAFETY: Per the caller.
    let buf = unsafe { Buffer::from_raw(buf) };
    let planes_ptr = buf.m();
    if !buf.buf_type().is_multiplanar() {
        return Ok((buf, &mut [], planes_ptr));
    }
    let count = usize::try_from(buf.length())?;
    if count > bindings::VIDEO_MAX_PLANES as usize {
        return Err(EINVAL);
    }
    // CAST: `m.planes` is the core's pointer to its copy of the array.
    let Some(planes) = NonNull::new(planes_ptr as usize as *mut bindings::v4l2_plane) else {
        return Err(EFAULT);
    };
    // SAFETY: For multi-planar types the core replaced the user pointer by
    // its copy of `length` planes (video_usercopy), valid for the handler
    // and separate from the buffer.
    let planes = unsafe { core::slice::from_raw_parts_mut(planes.as_ptr().cast::<Plane>(), count) };
    // The pointer is the core's: no device sees it.
    buf.set_m(0);
    Ok((buf, planes, planes_ptr))
}

/// QBUF, QUERYBUF and PREPARE_BUF.
///
/// # Safety
///
/// As for [`forward`].
unsafe extern "C" fn buffer<T: Driver, const CODE: u32>(
    file: *mut bindings::file,
    _priv: *mut c_void,
    buf: *mut bindings::v4l2_buffer,
) -> c_int {
    // SAFETY: See the function's safety section.
    match unsafe { buffer_args(buf) } {
        Ok((buf, planes, saved)) => {
            let multiplanar = buf.buf_type().is_multiplanar();
            // SAFETY: As above.
            let ret = unsafe {
                call::<T>(
                    file,
                    Ioctl::Buffer {
                        code: CODE,
                        buf: &mut *buf,
                        planes,
                    },
                )
            };
            if multiplanar {
                buf.set_m(saved);
            }
            ret
        }
        Err(e) => e.to_errno(),
    }
}

/// DQBUF.
///
/// # Safety
///
/// As for [`forward`].
unsafe extern "C" fn dqbuf<T: Driver>(
    file: *mut bindings::file,
    _priv: *mut c_void,
    buf: *mut bindings::v4l2_buffer,
) -> c_int {
    // SAFETY: See the function's safety section.
    match unsafe { buffer_args(buf) } {
        Ok((buf, planes, saved)) => {
            let multiplanar = buf.buf_type().is_multiplanar();
            // SAFETY: As above.
            let ret = unsafe {
                call::<T>(
                    file,
                    Ioctl::Dqbuf {
                        buf: &mut *buf,
                        planes,
                    },
                )
            };
            if multiplanar {
                buf.set_m(saved);
            }
            ret
        }
        Err(e) => e.to_errno(),
    }
}

/// G/S/TRY_EXT_CTRLS: the controls array follows the structure.
///
/// # Safety
///
/// As for [`forward`].
unsafe extern "C" fn ext_ctrls<T: Driver, const CODE: u32>(
    file: *mut bindings::file,
    _priv: *mut c_void,
    ctrls: *mut bindings::v4l2_ext_controls,
) -> c_int {
    // SAFETY: See the function's safety section.
    let ctrls = unsafe { ExtControls::from_raw(ctrls) };
    let (count, array_ptr) = (ctrls.count(), ctrls.controls_ptr());
    let Ok(count) = usize::try_from(count) else {
        return EINVAL.to_errno();
    };
    let array: &mut [ExtControl] = match NonNull::new(array_ptr) {
        // SAFETY: The core copied the `count` controls and pointed
        // `controls` at its copy, valid for the handler and separate from
        // the structure.
        Some(array) if count > 0 => unsafe {
            core::slice::from_raw_parts_mut(array.as_ptr().cast::<ExtControl>(), count)
        },
        _ => &mut [],
    };
    // The pointer is the core's: no device sees it, and it comes back
    // whatever the driver wrote.
    ctrls.set_controls_ptr(core::ptr::null_mut());
    // SAFETY: As above.
    let ret = unsafe {
        call::<T>(
            file,
            Ioctl::ExtCtrls {
                code: CODE,
                ctrls: &mut *ctrls,
                array,
            },
        )
    };
    ctrls.set_controls_ptr(array_ptr);
    ret
}

/// VIDIOC_SUBSCRIBE_EVENT: subscribed locally, then forwarded.
///
/// # Safety
///
/// Called by the V4L2 core only, with a file handle of a node of `T`.
unsafe extern "C" fn subscribe_event<T: Driver>(
    fh: *mut bindings::v4l2_fh,
    sub: *const bindings::v4l2_event_subscription,
) -> c_int {
    // Subscribe locally first: the device may send the initial events
    // (V4L2_EVENT_SUB_FL_SEND_INITIAL) before it answers, and the core
    // drops events nobody subscribed to.
    // SAFETY: `fh` and `sub` are valid for the call; no custom event ops.
    let ret =
        unsafe { bindings::v4l2_event_subscribe(fh, sub, EVENT_QUEUE_DEPTH, core::ptr::null()) };
    if ret < 0 {
        return ret;
    }
    // SAFETY: `fh` is an open file's handle, and `sub` the core's copy,
    // only read.
    let ret = unsafe {
        let view = &*sub.cast::<EventSubscription>();
        to_c(T::ioctl(
            FileData::<T>::of_fh(fh),
            false,
            Ioctl::Subscribe(view),
        ))
    };
    if ret < 0 {
        // SAFETY: As above; undoes the local subscription.
        unsafe { bindings::v4l2_event_unsubscribe(fh, sub) };
    }
    ret
}

/// VIDIOC_UNSUBSCRIBE_EVENT: forwarded and dropped locally.
///
/// # Safety
///
/// As for [`subscribe_event`].
unsafe extern "C" fn unsubscribe_event<T: Driver>(
    fh: *mut bindings::v4l2_fh,
    sub: *const bindings::v4l2_event_subscription,
) -> c_int {
    // SAFETY: As in `subscribe_event`.
    let forwarded = unsafe {
        let view = &*sub.cast::<EventSubscription>();
        to_c(T::ioctl(
            FileData::<T>::of_fh(fh),
            false,
            Ioctl::Unsubscribe(view),
        ))
    };
    // SAFETY: As in `subscribe_event`.
    let ret = unsafe { bindings::v4l2_event_unsubscribe(fh, sub) };
    if forwarded < 0 {
        forwarded
    } else {
        ret
    }
}

// SAFETY: An all-zero `v4l2_ioctl_ops` is "no handler" everywhere (every
// member is an optional function pointer).
const NO_HANDLERS: bindings::v4l2_ioctl_ops = unsafe { core::mem::zeroed() };

/// The ioctl handlers of a node of driver `T`.
pub(super) struct IoctlOps<T>(PhantomData<T>);

impl<T: Driver> IoctlOps<T> {
    pub(super) const TABLE: bindings::v4l2_ioctl_ops = bindings::v4l2_ioctl_ops {
        vidioc_querycap: Some(querycap::<T>),
        vidioc_enum_fmt_vid_cap: Some(enum_fmt::<T>),
        vidioc_enum_fmt_vid_overlay: Some(enum_fmt::<T>),
        vidioc_enum_fmt_vid_out: Some(enum_fmt::<T>),
        vidioc_enum_fmt_sdr_cap: Some(enum_fmt::<T>),
        vidioc_enum_fmt_sdr_out: Some(enum_fmt::<T>),
        vidioc_enum_fmt_meta_cap: Some(enum_fmt::<T>),
        vidioc_enum_fmt_meta_out: Some(enum_fmt::<T>),
        vidioc_g_fmt_vid_cap: Some(forward::<T, VIDIOC_G_FMT, bindings::v4l2_format>),
        vidioc_g_fmt_vid_overlay: Some(forward::<T, VIDIOC_G_FMT, bindings::v4l2_format>),
        vidioc_g_fmt_vid_out: Some(forward::<T, VIDIOC_G_FMT, bindings::v4l2_format>),
        vidioc_g_fmt_vid_out_overlay: Some(forward::<T, VIDIOC_G_FMT, bindings::v4l2_format>),
        vidioc_g_fmt_vbi_cap: Some(forward::<T, VIDIOC_G_FMT, bindings::v4l2_format>),
        vidioc_g_fmt_vbi_out: Some(forward::<T, VIDIOC_G_FMT, bindings::v4l2_format>),
        vidioc_g_fmt_sliced_vbi_cap: Some(forward::<T, VIDIOC_G_FMT, bindings::v4l2_format>),
        vidioc_g_fmt_sliced_vbi_out: Some(forward::<T, VIDIOC_G_FMT, bindings::v4l2_format>),
        vidioc_g_fmt_vid_cap_mplane: Some(forward::<T, VIDIOC_G_FMT, bindings::v4l2_format>),
        vidioc_g_fmt_vid_out_mplane: Some(forward::<T, VIDIOC_G_FMT, bindings::v4l2_format>),
        vidioc_g_fmt_sdr_cap: Some(forward::<T, VIDIOC_G_FMT, bindings::v4l2_format>),
        vidioc_g_fmt_sdr_out: Some(forward::<T, VIDIOC_G_FMT, bindings::v4l2_format>),
        vidioc_g_fmt_meta_cap: Some(forward::<T, VIDIOC_G_FMT, bindings::v4l2_format>),
        vidioc_g_fmt_meta_out: Some(forward::<T, VIDIOC_G_FMT, bindings::v4l2_format>),
        vidioc_s_fmt_vid_cap: Some(forward::<T, VIDIOC_S_FMT, bindings::v4l2_format>),
        vidioc_s_fmt_vid_overlay: Some(forward::<T, VIDIOC_S_FMT, bindings::v4l2_format>),
        vidioc_s_fmt_vid_out: Some(forward::<T, VIDIOC_S_FMT, bindings::v4l2_format>),
        vidioc_s_fmt_vid_out_overlay: Some(forward::<T, VIDIOC_S_FMT, bindings::v4l2_format>),
        vidioc_s_fmt_vbi_cap: Some(forward::<T, VIDIOC_S_FMT, bindings::v4l2_format>),
        vidioc_s_fmt_vbi_out: Some(forward::<T, VIDIOC_S_FMT, bindings::v4l2_format>),
        vidioc_s_fmt_sliced_vbi_cap: Some(forward::<T, VIDIOC_S_FMT, bindings::v4l2_format>),
        vidioc_s_fmt_sliced_vbi_out: Some(forward::<T, VIDIOC_S_FMT, bindings::v4l2_format>),
        vidioc_s_fmt_vid_cap_mplane: Some(forward::<T, VIDIOC_S_FMT, bindings::v4l2_format>),
        vidioc_s_fmt_vid_out_mplane: Some(forward::<T, VIDIOC_S_FMT, bindings::v4l2_format>),
        vidioc_s_fmt_sdr_cap: Some(forward::<T, VIDIOC_S_FMT, bindings::v4l2_format>),
        vidioc_s_fmt_sdr_out: Some(forward::<T, VIDIOC_S_FMT, bindings::v4l2_format>),
        vidioc_s_fmt_meta_cap: Some(forward::<T, VIDIOC_S_FMT, bindings::v4l2_format>),
        vidioc_s_fmt_meta_out: Some(forward::<T, VIDIOC_S_FMT, bindings::v4l2_format>),
        vidioc_try_fmt_vid_cap: Some(forward::<T, VIDIOC_TRY_FMT, bindings::v4l2_format>),
        vidioc_try_fmt_vid_overlay: Some(forward::<T, VIDIOC_TRY_FMT, bindings::v4l2_format>),
        vidioc_try_fmt_vid_out: Some(forward::<T, VIDIOC_TRY_FMT, bindings::v4l2_format>),
        vidioc_try_fmt_vid_out_overlay: Some(forward::<T, VIDIOC_TRY_FMT, bindings::v4l2_format>),
        vidioc_try_fmt_vbi_cap: Some(forward::<T, VIDIOC_TRY_FMT, bindings::v4l2_format>),
        vidioc_try_fmt_vbi_out: Some(forward::<T, VIDIOC_TRY_FMT, bindings::v4l2_format>),
        vidioc_try_fmt_sliced_vbi_cap: Some(forward::<T, VIDIOC_TRY_FMT, bindings::v4l2_format>),
        vidioc_try_fmt_sliced_vbi_out: Some(forward::<T, VIDIOC_TRY_FMT, bindings::v4l2_format>),
        vidioc_try_fmt_vid_cap_mplane: Some(forward::<T, VIDIOC_TRY_FMT, bindings::v4l2_format>),
        vidioc_try_fmt_vid_out_mplane: Some(forward::<T, VIDIOC_TRY_FMT, bindings::v4l2_format>),
        vidioc_try_fmt_sdr_cap: Some(forward::<T, VIDIOC_TRY_FMT, bindings::v4l2_format>),
        vidioc_try_fmt_sdr_out: Some(forward::<T, VIDIOC_TRY_FMT, bindings::v4l2_format>),
        vidioc_try_fmt_meta_cap: Some(forward::<T, VIDIOC_TRY_FMT, bindings::v4l2_format>),
        vidioc_try_fmt_meta_out: Some(forward::<T, VIDIOC_TRY_FMT, bindings::v4l2_format>),
        vidioc_reqbufs: Some(reqbufs::<T>),
        vidioc_querybuf: Some(buffer::<T, VIDIOC_QUERYBUF>),
        vidioc_qbuf: Some(buffer::<T, VIDIOC_QBUF>),
        vidioc_dqbuf: Some(dqbuf::<T>),
        vidioc_expbuf: Some(expbuf::<T>),
        vidioc_create_bufs: Some(create_bufs::<T>),
        vidioc_prepare_buf: Some(buffer::<T, VIDIOC_PREPARE_BUF>),
        vidioc_remove_bufs: Some(remove_bufs::<T>),
        vidioc_overlay: Some(forward_value::<T, VIDIOC_OVERLAY>),
        vidioc_g_fbuf: Some(forward::<T, VIDIOC_G_FBUF, bindings::v4l2_framebuffer>),
        vidioc_s_fbuf: Some(forward_const::<T, VIDIOC_S_FBUF, bindings::v4l2_framebuffer>),
        vidioc_streamon: Some(stream::<T, VIDIOC_STREAMON>),
        vidioc_streamoff: Some(stream::<T, VIDIOC_STREAMOFF>),
        vidioc_g_std: Some(forward::<T, VIDIOC_G_STD, u64>),
        vidioc_s_std: Some(forward_std::<T, VIDIOC_S_STD>),
        vidioc_querystd: Some(forward::<T, VIDIOC_QUERYSTD, u64>),
        vidioc_enum_input: Some(forward::<T, VIDIOC_ENUMINPUT, bindings::v4l2_input>),
        vidioc_g_input: Some(forward::<T, VIDIOC_G_INPUT, u32>),
        vidioc_s_input: Some(forward_value::<T, VIDIOC_S_INPUT>),
        vidioc_enum_output: Some(forward::<T, VIDIOC_ENUMOUTPUT, bindings::v4l2_output>),
        vidioc_g_output: Some(forward::<T, VIDIOC_G_OUTPUT, u32>),
        vidioc_s_output: Some(forward_value::<T, VIDIOC_S_OUTPUT>),
        vidioc_query_ext_ctrl: Some(
            forward::<T, VIDIOC_QUERY_EXT_CTRL, bindings::v4l2_query_ext_ctrl>,
        ),
        vidioc_g_ext_ctrls: Some(ext_ctrls::<T, VIDIOC_G_EXT_CTRLS>),
        vidioc_s_ext_ctrls: Some(ext_ctrls::<T, VIDIOC_S_EXT_CTRLS>),
        vidioc_try_ext_ctrls: Some(ext_ctrls::<T, VIDIOC_TRY_EXT_CTRLS>),
        vidioc_querymenu: Some(forward::<T, VIDIOC_QUERYMENU, bindings::v4l2_querymenu>),
        vidioc_enumaudio: Some(forward::<T, VIDIOC_ENUMAUDIO, bindings::v4l2_audio>),
        vidioc_g_audio: Some(forward::<T, VIDIOC_G_AUDIO, bindings::v4l2_audio>),
        vidioc_s_audio: Some(forward_const::<T, VIDIOC_S_AUDIO, bindings::v4l2_audio>),
        vidioc_enumaudout: Some(forward::<T, VIDIOC_ENUMAUDOUT, bindings::v4l2_audioout>),
        vidioc_g_audout: Some(forward::<T, VIDIOC_G_AUDOUT, bindings::v4l2_audioout>),
        vidioc_s_audout: Some(forward_const::<T, VIDIOC_S_AUDOUT, bindings::v4l2_audioout>),
        vidioc_g_modulator: Some(forward::<T, VIDIOC_G_MODULATOR, bindings::v4l2_modulator>),
        vidioc_s_modulator: Some(forward_const::<T, VIDIOC_S_MODULATOR, bindings::v4l2_modulator>),
        vidioc_g_selection: Some(forward::<T, VIDIOC_G_SELECTION, bindings::v4l2_selection>),
        vidioc_s_selection: Some(forward::<T, VIDIOC_S_SELECTION, bindings::v4l2_selection>),
        vidioc_g_enc_index: Some(forward::<T, VIDIOC_G_ENC_INDEX, bindings::v4l2_enc_idx>),
        vidioc_encoder_cmd: Some(command::<T, VIDIOC_ENCODER_CMD, bindings::v4l2_encoder_cmd>),
        vidioc_try_encoder_cmd: Some(
            command::<T, VIDIOC_TRY_ENCODER_CMD, bindings::v4l2_encoder_cmd>,
        ),
        vidioc_decoder_cmd: Some(command::<T, VIDIOC_DECODER_CMD, bindings::v4l2_decoder_cmd>),
        vidioc_try_decoder_cmd: Some(
            command::<T, VIDIOC_TRY_DECODER_CMD, bindings::v4l2_decoder_cmd>,
        ),
        vidioc_g_parm: Some(forward::<T, VIDIOC_G_PARM, bindings::v4l2_streamparm>),
        vidioc_s_parm: Some(forward::<T, VIDIOC_S_PARM, bindings::v4l2_streamparm>),
        vidioc_g_tuner: Some(forward::<T, VIDIOC_G_TUNER, bindings::v4l2_tuner>),
        vidioc_s_tuner: Some(forward_const::<T, VIDIOC_S_TUNER, bindings::v4l2_tuner>),
        vidioc_g_frequency: Some(forward::<T, VIDIOC_G_FREQUENCY, bindings::v4l2_frequency>),
        vidioc_s_frequency: Some(forward_const::<T, VIDIOC_S_FREQUENCY, bindings::v4l2_frequency>),
        vidioc_enum_freq_bands: Some(
            forward::<T, VIDIOC_ENUM_FREQ_BANDS, bindings::v4l2_frequency_band>,
        ),
        vidioc_g_sliced_vbi_cap: Some(
            forward::<T, VIDIOC_G_SLICED_VBI_CAP, bindings::v4l2_sliced_vbi_cap>,
        ),
        vidioc_s_hw_freq_seek: Some(
            forward_const::<T, VIDIOC_S_HW_FREQ_SEEK, bindings::v4l2_hw_freq_seek>,
        ),
        vidioc_enum_framesizes: Some(
            forward::<T, VIDIOC_ENUM_FRAMESIZES, bindings::v4l2_frmsizeenum>,
        ),
        vidioc_enum_frameintervals: Some(
            forward::<T, VIDIOC_ENUM_FRAMEINTERVALS, bindings::v4l2_frmivalenum>,
        ),
        vidioc_s_dv_timings: Some(forward::<T, VIDIOC_S_DV_TIMINGS, bindings::v4l2_dv_timings>),
        vidioc_g_dv_timings: Some(forward::<T, VIDIOC_G_DV_TIMINGS, bindings::v4l2_dv_timings>),
        vidioc_query_dv_timings: Some(
            forward::<T, VIDIOC_QUERY_DV_TIMINGS, bindings::v4l2_dv_timings>,
        ),
        vidioc_enum_dv_timings: Some(
            forward::<T, VIDIOC_ENUM_DV_TIMINGS, bindings::v4l2_enum_dv_timings>,
        ),
        vidioc_dv_timings_cap: Some(
            forward::<T, VIDIOC_DV_TIMINGS_CAP, bindings::v4l2_dv_timings_cap>,
        ),
        vidioc_subscribe_event: Some(subscribe_event::<T>),
        vidioc_unsubscribe_event: Some(unsubscribe_event::<T>),
        ..NO_HANDLERS
    };
}

#[kunit_tests(virtio_media_ioctl)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_videodev2() {
        // Values of the _IO* macros in videodev2.h on a 64-bit kernel.
        assert_eq!(VIDIOC_G_FMT, 0xc0d0_5604);
        assert_eq!(VIDIOC_REQBUFS, 0xc014_5608);
        assert_eq!(VIDIOC_QBUF, 0xc058_560f);
        assert_eq!(VIDIOC_EXPBUF, 0xc040_5610);
        assert_eq!(VIDIOC_STREAMON, 0x4004_5612);
        assert_eq!(VIDIOC_G_EXT_CTRLS, 0xc020_5647);
        assert_eq!(VIDIOC_SUBSCRIBE_EVENT, 0x4020_565a);
        assert_eq!(VIDIOC_CREATE_BUFS, 0xc100_565c);
        assert_eq!(VIDIOC_QUERY_EXT_CTRL, 0xc0e8_5667);
        assert_eq!(VIDIOC_G_STD, 0x8008_5617);
    }

    #[test]
    fn an_unknown_format_is_named_by_its_fourcc() {
        let mut text = [0xffu8; 32];
        describe_format(&mut text, u32::from_le_bytes(*b"VMZZ"));
        let end = text.iter().position(|&c| c == 0).unwrap_or(text.len());
        assert_eq!(&text[..end], b"VMZZ (0x5a5a4d56)");
        assert!(text[end..].iter().all(|&c| c == 0));
    }

    #[test]
    fn what_does_not_fit_is_left_out_and_terminated() {
        let mut text = [0xffu8; 8];
        describe_format(&mut text, 0x0102_0341);
        assert_eq!(&text, b"A... (\0\0");
    }
}
