// SPDX-License-Identifier: GPL-2.0

//! The one table of V4L2 ioctls: which are forwarded, which are local.
//!
//! The V4L2 core (`video_ioctl2`) validates and copies every argument,
//! handles 32-bit compat and priorities, and calls the handler set here.
//! Adding a forwarded ioctl is one line: its handler field, the ioctl code
//! and its argument type. Ioctls the protocol excludes (JPEGCOMP,
//! LOG_STATUS) and the ones not supported yet (EXPBUF, EDID) have no handler,
//! so the core answers `ENOTTY`. QUERYCAP, DQBUF and DQEVENT are local.

#![forbid(unsafe_code)]

use crate::{
    ffi,
    v4l2::{
        dqbuf, expbuf, forward, forward_buffer, forward_const, forward_ext_ctrls, forward_std,
        forward_value, querycap, subscribe_event, unsubscribe_event, ConstOps, NO_HANDLERS,
    },
};
use kernel::{
    ffi::c_int,
    ioctl::{_IOR, _IOW, _IOWR},
    prelude::*,
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
pub(crate) const VIDIOC_ENUM_FMT: u32 = rw::<ffi::v4l2_fmtdesc>(2);
pub(crate) const VIDIOC_G_FMT: u32 = rw::<ffi::v4l2_format>(4);
pub(crate) const VIDIOC_S_FMT: u32 = rw::<ffi::v4l2_format>(5);
pub(crate) const VIDIOC_REQBUFS: u32 = rw::<ffi::v4l2_requestbuffers>(8);
pub(crate) const VIDIOC_QUERYBUF: u32 = rw::<ffi::v4l2_buffer>(9);
pub(crate) const VIDIOC_G_FBUF: u32 = r::<ffi::v4l2_framebuffer>(10);
pub(crate) const VIDIOC_S_FBUF: u32 = w::<ffi::v4l2_framebuffer>(11);
pub(crate) const VIDIOC_OVERLAY: u32 = w::<c_int>(14);
pub(crate) const VIDIOC_QBUF: u32 = rw::<ffi::v4l2_buffer>(15);
pub(crate) const VIDIOC_EXPBUF: u32 = rw::<ffi::v4l2_exportbuffer>(16);
pub(crate) const VIDIOC_STREAMON: u32 = w::<c_int>(18);
pub(crate) const VIDIOC_STREAMOFF: u32 = w::<c_int>(19);
pub(crate) const VIDIOC_G_PARM: u32 = rw::<ffi::v4l2_streamparm>(21);
pub(crate) const VIDIOC_S_PARM: u32 = rw::<ffi::v4l2_streamparm>(22);
pub(crate) const VIDIOC_G_STD: u32 = r::<ffi::v4l2_std_id>(23);
pub(crate) const VIDIOC_S_STD: u32 = w::<ffi::v4l2_std_id>(24);
pub(crate) const VIDIOC_ENUMINPUT: u32 = rw::<ffi::v4l2_input>(26);
pub(crate) const VIDIOC_G_TUNER: u32 = rw::<ffi::v4l2_tuner>(29);
pub(crate) const VIDIOC_S_TUNER: u32 = w::<ffi::v4l2_tuner>(30);
pub(crate) const VIDIOC_G_AUDIO: u32 = r::<ffi::v4l2_audio>(33);
pub(crate) const VIDIOC_S_AUDIO: u32 = w::<ffi::v4l2_audio>(34);
pub(crate) const VIDIOC_QUERYMENU: u32 = rw::<ffi::v4l2_querymenu>(37);
pub(crate) const VIDIOC_G_INPUT: u32 = r::<c_int>(38);
pub(crate) const VIDIOC_S_INPUT: u32 = rw::<c_int>(39);
pub(crate) const VIDIOC_G_OUTPUT: u32 = r::<c_int>(46);
pub(crate) const VIDIOC_S_OUTPUT: u32 = rw::<c_int>(47);
pub(crate) const VIDIOC_ENUMOUTPUT: u32 = rw::<ffi::v4l2_output>(48);
pub(crate) const VIDIOC_G_AUDOUT: u32 = r::<ffi::v4l2_audioout>(49);
pub(crate) const VIDIOC_S_AUDOUT: u32 = w::<ffi::v4l2_audioout>(50);
pub(crate) const VIDIOC_G_MODULATOR: u32 = rw::<ffi::v4l2_modulator>(54);
pub(crate) const VIDIOC_S_MODULATOR: u32 = w::<ffi::v4l2_modulator>(55);
pub(crate) const VIDIOC_G_FREQUENCY: u32 = rw::<ffi::v4l2_frequency>(56);
pub(crate) const VIDIOC_S_FREQUENCY: u32 = w::<ffi::v4l2_frequency>(57);
pub(crate) const VIDIOC_QUERYSTD: u32 = r::<ffi::v4l2_std_id>(63);
pub(crate) const VIDIOC_TRY_FMT: u32 = rw::<ffi::v4l2_format>(64);
pub(crate) const VIDIOC_ENUMAUDIO: u32 = rw::<ffi::v4l2_audio>(65);
pub(crate) const VIDIOC_ENUMAUDOUT: u32 = rw::<ffi::v4l2_audioout>(66);
pub(crate) const VIDIOC_G_SLICED_VBI_CAP: u32 = rw::<ffi::v4l2_sliced_vbi_cap>(69);
pub(crate) const VIDIOC_G_EXT_CTRLS: u32 = rw::<ffi::v4l2_ext_controls>(71);
pub(crate) const VIDIOC_S_EXT_CTRLS: u32 = rw::<ffi::v4l2_ext_controls>(72);
pub(crate) const VIDIOC_TRY_EXT_CTRLS: u32 = rw::<ffi::v4l2_ext_controls>(73);
pub(crate) const VIDIOC_ENUM_FRAMESIZES: u32 = rw::<ffi::v4l2_frmsizeenum>(74);
pub(crate) const VIDIOC_ENUM_FRAMEINTERVALS: u32 = rw::<ffi::v4l2_frmivalenum>(75);
pub(crate) const VIDIOC_G_ENC_INDEX: u32 = r::<ffi::v4l2_enc_idx>(76);
pub(crate) const VIDIOC_ENCODER_CMD: u32 = rw::<ffi::v4l2_encoder_cmd>(77);
pub(crate) const VIDIOC_TRY_ENCODER_CMD: u32 = rw::<ffi::v4l2_encoder_cmd>(78);
pub(crate) const VIDIOC_S_HW_FREQ_SEEK: u32 = w::<ffi::v4l2_hw_freq_seek>(82);
pub(crate) const VIDIOC_S_DV_TIMINGS: u32 = rw::<ffi::v4l2_dv_timings>(87);
pub(crate) const VIDIOC_G_DV_TIMINGS: u32 = rw::<ffi::v4l2_dv_timings>(88);
pub(crate) const VIDIOC_SUBSCRIBE_EVENT: u32 = w::<ffi::v4l2_event_subscription>(90);
pub(crate) const VIDIOC_UNSUBSCRIBE_EVENT: u32 = w::<ffi::v4l2_event_subscription>(91);
pub(crate) const VIDIOC_CREATE_BUFS: u32 = rw::<ffi::v4l2_create_buffers>(92);
pub(crate) const VIDIOC_PREPARE_BUF: u32 = rw::<ffi::v4l2_buffer>(93);
pub(crate) const VIDIOC_G_SELECTION: u32 = rw::<ffi::v4l2_selection>(94);
pub(crate) const VIDIOC_S_SELECTION: u32 = rw::<ffi::v4l2_selection>(95);
pub(crate) const VIDIOC_DECODER_CMD: u32 = rw::<ffi::v4l2_decoder_cmd>(96);
pub(crate) const VIDIOC_TRY_DECODER_CMD: u32 = rw::<ffi::v4l2_decoder_cmd>(97);
pub(crate) const VIDIOC_ENUM_DV_TIMINGS: u32 = rw::<ffi::v4l2_enum_dv_timings>(98);
pub(crate) const VIDIOC_QUERY_DV_TIMINGS: u32 = r::<ffi::v4l2_dv_timings>(99);
pub(crate) const VIDIOC_DV_TIMINGS_CAP: u32 = rw::<ffi::v4l2_dv_timings_cap>(100);
pub(crate) const VIDIOC_ENUM_FREQ_BANDS: u32 = rw::<ffi::v4l2_frequency_band>(101);
pub(crate) const VIDIOC_QUERY_EXT_CTRL: u32 = rw::<ffi::v4l2_query_ext_ctrl>(103);
pub(crate) const VIDIOC_REMOVE_BUFS: u32 = rw::<ffi::v4l2_remove_buffers>(104);

macro_rules! fwd {
    ($code:ident, $t:ty) => {
        Some(forward::<$code, $t>)
    };
}

pub(crate) static IOCTL_OPS: ConstOps<ffi::v4l2_ioctl_ops> = ConstOps(ffi::v4l2_ioctl_ops {
    vidioc_querycap: Some(querycap),
    vidioc_enum_fmt_vid_cap: fwd!(VIDIOC_ENUM_FMT, ffi::v4l2_fmtdesc),
    vidioc_enum_fmt_vid_overlay: fwd!(VIDIOC_ENUM_FMT, ffi::v4l2_fmtdesc),
    vidioc_enum_fmt_vid_out: fwd!(VIDIOC_ENUM_FMT, ffi::v4l2_fmtdesc),
    vidioc_enum_fmt_sdr_cap: fwd!(VIDIOC_ENUM_FMT, ffi::v4l2_fmtdesc),
    vidioc_enum_fmt_sdr_out: fwd!(VIDIOC_ENUM_FMT, ffi::v4l2_fmtdesc),
    vidioc_enum_fmt_meta_cap: fwd!(VIDIOC_ENUM_FMT, ffi::v4l2_fmtdesc),
    vidioc_enum_fmt_meta_out: fwd!(VIDIOC_ENUM_FMT, ffi::v4l2_fmtdesc),
    vidioc_g_fmt_vid_cap: fwd!(VIDIOC_G_FMT, ffi::v4l2_format),
    vidioc_g_fmt_vid_overlay: fwd!(VIDIOC_G_FMT, ffi::v4l2_format),
    vidioc_g_fmt_vid_out: fwd!(VIDIOC_G_FMT, ffi::v4l2_format),
    vidioc_g_fmt_vid_out_overlay: fwd!(VIDIOC_G_FMT, ffi::v4l2_format),
    vidioc_g_fmt_vbi_cap: fwd!(VIDIOC_G_FMT, ffi::v4l2_format),
    vidioc_g_fmt_vbi_out: fwd!(VIDIOC_G_FMT, ffi::v4l2_format),
    vidioc_g_fmt_sliced_vbi_cap: fwd!(VIDIOC_G_FMT, ffi::v4l2_format),
    vidioc_g_fmt_sliced_vbi_out: fwd!(VIDIOC_G_FMT, ffi::v4l2_format),
    vidioc_g_fmt_vid_cap_mplane: fwd!(VIDIOC_G_FMT, ffi::v4l2_format),
    vidioc_g_fmt_vid_out_mplane: fwd!(VIDIOC_G_FMT, ffi::v4l2_format),
    vidioc_g_fmt_sdr_cap: fwd!(VIDIOC_G_FMT, ffi::v4l2_format),
    vidioc_g_fmt_sdr_out: fwd!(VIDIOC_G_FMT, ffi::v4l2_format),
    vidioc_g_fmt_meta_cap: fwd!(VIDIOC_G_FMT, ffi::v4l2_format),
    vidioc_g_fmt_meta_out: fwd!(VIDIOC_G_FMT, ffi::v4l2_format),
    vidioc_s_fmt_vid_cap: fwd!(VIDIOC_S_FMT, ffi::v4l2_format),
    vidioc_s_fmt_vid_overlay: fwd!(VIDIOC_S_FMT, ffi::v4l2_format),
    vidioc_s_fmt_vid_out: fwd!(VIDIOC_S_FMT, ffi::v4l2_format),
    vidioc_s_fmt_vid_out_overlay: fwd!(VIDIOC_S_FMT, ffi::v4l2_format),
    vidioc_s_fmt_vbi_cap: fwd!(VIDIOC_S_FMT, ffi::v4l2_format),
    vidioc_s_fmt_vbi_out: fwd!(VIDIOC_S_FMT, ffi::v4l2_format),
    vidioc_s_fmt_sliced_vbi_cap: fwd!(VIDIOC_S_FMT, ffi::v4l2_format),
    vidioc_s_fmt_sliced_vbi_out: fwd!(VIDIOC_S_FMT, ffi::v4l2_format),
    vidioc_s_fmt_vid_cap_mplane: fwd!(VIDIOC_S_FMT, ffi::v4l2_format),
    vidioc_s_fmt_vid_out_mplane: fwd!(VIDIOC_S_FMT, ffi::v4l2_format),
    vidioc_s_fmt_sdr_cap: fwd!(VIDIOC_S_FMT, ffi::v4l2_format),
    vidioc_s_fmt_sdr_out: fwd!(VIDIOC_S_FMT, ffi::v4l2_format),
    vidioc_s_fmt_meta_cap: fwd!(VIDIOC_S_FMT, ffi::v4l2_format),
    vidioc_s_fmt_meta_out: fwd!(VIDIOC_S_FMT, ffi::v4l2_format),
    vidioc_try_fmt_vid_cap: fwd!(VIDIOC_TRY_FMT, ffi::v4l2_format),
    vidioc_try_fmt_vid_overlay: fwd!(VIDIOC_TRY_FMT, ffi::v4l2_format),
    vidioc_try_fmt_vid_out: fwd!(VIDIOC_TRY_FMT, ffi::v4l2_format),
    vidioc_try_fmt_vid_out_overlay: fwd!(VIDIOC_TRY_FMT, ffi::v4l2_format),
    vidioc_try_fmt_vbi_cap: fwd!(VIDIOC_TRY_FMT, ffi::v4l2_format),
    vidioc_try_fmt_vbi_out: fwd!(VIDIOC_TRY_FMT, ffi::v4l2_format),
    vidioc_try_fmt_sliced_vbi_cap: fwd!(VIDIOC_TRY_FMT, ffi::v4l2_format),
    vidioc_try_fmt_sliced_vbi_out: fwd!(VIDIOC_TRY_FMT, ffi::v4l2_format),
    vidioc_try_fmt_vid_cap_mplane: fwd!(VIDIOC_TRY_FMT, ffi::v4l2_format),
    vidioc_try_fmt_vid_out_mplane: fwd!(VIDIOC_TRY_FMT, ffi::v4l2_format),
    vidioc_try_fmt_sdr_cap: fwd!(VIDIOC_TRY_FMT, ffi::v4l2_format),
    vidioc_try_fmt_sdr_out: fwd!(VIDIOC_TRY_FMT, ffi::v4l2_format),
    vidioc_try_fmt_meta_cap: fwd!(VIDIOC_TRY_FMT, ffi::v4l2_format),
    vidioc_try_fmt_meta_out: fwd!(VIDIOC_TRY_FMT, ffi::v4l2_format),
    vidioc_reqbufs: fwd!(VIDIOC_REQBUFS, ffi::v4l2_requestbuffers),
    vidioc_querybuf: Some(forward_buffer::<VIDIOC_QUERYBUF>),
    vidioc_qbuf: Some(forward_buffer::<VIDIOC_QBUF>),
    vidioc_dqbuf: Some(dqbuf),
    vidioc_expbuf: Some(expbuf),
    vidioc_create_bufs: fwd!(VIDIOC_CREATE_BUFS, ffi::v4l2_create_buffers),
    vidioc_prepare_buf: Some(forward_buffer::<VIDIOC_PREPARE_BUF>),
    vidioc_remove_bufs: fwd!(VIDIOC_REMOVE_BUFS, ffi::v4l2_remove_buffers),
    vidioc_overlay: Some(forward_value::<VIDIOC_OVERLAY>),
    vidioc_g_fbuf: fwd!(VIDIOC_G_FBUF, ffi::v4l2_framebuffer),
    vidioc_s_fbuf: Some(forward_const::<VIDIOC_S_FBUF, ffi::v4l2_framebuffer>),
    vidioc_streamon: Some(forward_value::<VIDIOC_STREAMON>),
    vidioc_streamoff: Some(forward_value::<VIDIOC_STREAMOFF>),
    vidioc_g_std: fwd!(VIDIOC_G_STD, u64),
    vidioc_s_std: Some(forward_std::<VIDIOC_S_STD>),
    vidioc_querystd: fwd!(VIDIOC_QUERYSTD, u64),
    vidioc_enum_input: fwd!(VIDIOC_ENUMINPUT, ffi::v4l2_input),
    vidioc_g_input: fwd!(VIDIOC_G_INPUT, u32),
    vidioc_s_input: Some(forward_value::<VIDIOC_S_INPUT>),
    vidioc_enum_output: fwd!(VIDIOC_ENUMOUTPUT, ffi::v4l2_output),
    vidioc_g_output: fwd!(VIDIOC_G_OUTPUT, u32),
    vidioc_s_output: Some(forward_value::<VIDIOC_S_OUTPUT>),
    vidioc_query_ext_ctrl: fwd!(VIDIOC_QUERY_EXT_CTRL, ffi::v4l2_query_ext_ctrl),
    vidioc_g_ext_ctrls: Some(forward_ext_ctrls::<VIDIOC_G_EXT_CTRLS>),
    vidioc_s_ext_ctrls: Some(forward_ext_ctrls::<VIDIOC_S_EXT_CTRLS>),
    vidioc_try_ext_ctrls: Some(forward_ext_ctrls::<VIDIOC_TRY_EXT_CTRLS>),
    vidioc_querymenu: fwd!(VIDIOC_QUERYMENU, ffi::v4l2_querymenu),
    vidioc_enumaudio: fwd!(VIDIOC_ENUMAUDIO, ffi::v4l2_audio),
    vidioc_g_audio: fwd!(VIDIOC_G_AUDIO, ffi::v4l2_audio),
    vidioc_s_audio: Some(forward_const::<VIDIOC_S_AUDIO, ffi::v4l2_audio>),
    vidioc_enumaudout: fwd!(VIDIOC_ENUMAUDOUT, ffi::v4l2_audioout),
    vidioc_g_audout: fwd!(VIDIOC_G_AUDOUT, ffi::v4l2_audioout),
    vidioc_s_audout: Some(forward_const::<VIDIOC_S_AUDOUT, ffi::v4l2_audioout>),
    vidioc_g_modulator: fwd!(VIDIOC_G_MODULATOR, ffi::v4l2_modulator),
    vidioc_s_modulator: Some(forward_const::<VIDIOC_S_MODULATOR, ffi::v4l2_modulator>),
    vidioc_g_selection: fwd!(VIDIOC_G_SELECTION, ffi::v4l2_selection),
    vidioc_s_selection: fwd!(VIDIOC_S_SELECTION, ffi::v4l2_selection),
    vidioc_g_enc_index: fwd!(VIDIOC_G_ENC_INDEX, ffi::v4l2_enc_idx),
    vidioc_encoder_cmd: fwd!(VIDIOC_ENCODER_CMD, ffi::v4l2_encoder_cmd),
    vidioc_try_encoder_cmd: fwd!(VIDIOC_TRY_ENCODER_CMD, ffi::v4l2_encoder_cmd),
    vidioc_decoder_cmd: fwd!(VIDIOC_DECODER_CMD, ffi::v4l2_decoder_cmd),
    vidioc_try_decoder_cmd: fwd!(VIDIOC_TRY_DECODER_CMD, ffi::v4l2_decoder_cmd),
    vidioc_g_parm: fwd!(VIDIOC_G_PARM, ffi::v4l2_streamparm),
    vidioc_s_parm: fwd!(VIDIOC_S_PARM, ffi::v4l2_streamparm),
    vidioc_g_tuner: fwd!(VIDIOC_G_TUNER, ffi::v4l2_tuner),
    vidioc_s_tuner: Some(forward_const::<VIDIOC_S_TUNER, ffi::v4l2_tuner>),
    vidioc_g_frequency: fwd!(VIDIOC_G_FREQUENCY, ffi::v4l2_frequency),
    vidioc_s_frequency: Some(forward_const::<VIDIOC_S_FREQUENCY, ffi::v4l2_frequency>),
    vidioc_enum_freq_bands: fwd!(VIDIOC_ENUM_FREQ_BANDS, ffi::v4l2_frequency_band),
    vidioc_g_sliced_vbi_cap: fwd!(VIDIOC_G_SLICED_VBI_CAP, ffi::v4l2_sliced_vbi_cap),
    vidioc_s_hw_freq_seek: Some(forward_const::<VIDIOC_S_HW_FREQ_SEEK, ffi::v4l2_hw_freq_seek>),
    vidioc_enum_framesizes: fwd!(VIDIOC_ENUM_FRAMESIZES, ffi::v4l2_frmsizeenum),
    vidioc_enum_frameintervals: fwd!(VIDIOC_ENUM_FRAMEINTERVALS, ffi::v4l2_frmivalenum),
    vidioc_s_dv_timings: fwd!(VIDIOC_S_DV_TIMINGS, ffi::v4l2_dv_timings),
    vidioc_g_dv_timings: fwd!(VIDIOC_G_DV_TIMINGS, ffi::v4l2_dv_timings),
    vidioc_query_dv_timings: fwd!(VIDIOC_QUERY_DV_TIMINGS, ffi::v4l2_dv_timings),
    vidioc_enum_dv_timings: fwd!(VIDIOC_ENUM_DV_TIMINGS, ffi::v4l2_enum_dv_timings),
    vidioc_dv_timings_cap: fwd!(VIDIOC_DV_TIMINGS_CAP, ffi::v4l2_dv_timings_cap),
    vidioc_subscribe_event: Some(subscribe_event),
    vidioc_unsubscribe_event: Some(unsubscribe_event),
    ..NO_HANDLERS
});

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
}
