// SPDX-License-Identifier: GPL-2.0
//! The codec library under the `decoder` and `encoder` backends: Debian's
//! FFmpeg (libavcodec 59 on bookworm) through the `ffmpeg-next` crate.
//!
//! `ffmpeg-next` wraps decoding, encoding and frames; what it leaves out
//! (the bitstream parser, `max_pixels`, profile and level) is done here
//! through its raw bindings, so every `unsafe` block of the codec backends
//! lives in this file. The backends see owned frames and byte vectors only.

use std::collections::VecDeque;
use std::os::raw::c_int;

use ff::codec;
use ff::format::Pixel;
use ff::util::frame::video::Video as Frame;
use ffmpeg_next as ff;

/// Largest frame the codecs accept, in pixels (4096x4096): libavcodec
/// refuses to allocate frames larger than this, whatever a bitstream claims.
pub const MAX_PIXELS: u32 = 4096 * 4096;

/// Padding libavcodec wants after input bytes (`AV_INPUT_BUFFER_PADDING_SIZE`):
/// its bitstream readers may read that far past the end.
const INPUT_PADDING: usize = 64;

/// Coded formats the backends know, and whether this libavcodec can
/// decode or encode them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coded {
    H264,
    Hevc,
    Vp8,
    Vp9,
}

impl Coded {
    pub const ALL: [Coded; 4] = [Coded::H264, Coded::Hevc, Coded::Vp8, Coded::Vp9];

    fn id(self) -> codec::Id {
        match self {
            Coded::H264 => codec::Id::H264,
            Coded::Hevc => codec::Id::HEVC,
            Coded::Vp8 => codec::Id::VP8,
            Coded::Vp9 => codec::Id::VP9,
        }
    }

    /// H.264 and HEVC streams are byte streams that a buffer may cut
    /// anywhere, so they go through libavcodec's parser; a VP8 or VP9
    /// buffer holds exactly one frame (V4L2's `VP80`/`VP90` formats).
    fn needs_parser(self) -> bool {
        matches!(self, Coded::H264 | Coded::Hevc)
    }

    /// True if this libavcodec has a decoder for the format.
    pub fn decodable(self) -> bool {
        init();
        ff::decoder::find(self.id()).is_some()
    }
}

/// Initialises FFmpeg once: only errors go to stderr (a garbage bitstream
/// would otherwise print a warning per slice).
pub fn init() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ff::init();
        ff::util::log::set_level(ff::util::log::Level::Fatal);
    });
}

/// A codec failure: what the backends turn into `V4L2_BUF_FLAG_ERROR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodecError(pub String);

impl From<ff::Error> for CodecError {
    fn from(e: ff::Error) -> Self {
        CodecError(e.to_string())
    }
}

/// One decoded picture in 8-bit planar 4:2:0 (I420), as the backends lay
/// it out into CAPTURE buffers, with the token of the OUTPUT buffer it
/// came from.
pub struct Picture {
    pub frame: Frame,
    pub token: Option<i64>,
    /// libavcodec flagged the picture as corrupt (concealed errors).
    pub corrupt: bool,
}

impl Picture {
    pub fn width(&self) -> u32 {
        self.frame.width()
    }
    pub fn height(&self) -> u32 {
        self.frame.height()
    }
    /// Row `row` of plane `plane` (0 = Y, 1 = U, 2 = V), `len` bytes, or
    /// None if the frame has no such row.
    pub fn row(&self, plane: usize, row: usize, len: usize) -> Option<&[u8]> {
        if plane >= self.frame.planes() {
            return None;
        }
        let stride = self.frame.stride(plane);
        let start = row.checked_mul(stride)?;
        self.frame.data(plane).get(start..start.checked_add(len)?)
    }
}

/// libavcodec's bitstream parser (`av_parser_parse2`): splits a byte
/// stream into access units whatever the OUTPUT buffers hold (part of a
/// frame, one frame, several frames).
struct Parser {
    ctx: *mut ff::ffi::AVCodecParserContext,
    /// Bytes fed since the last access unit came out: the parser keeps
    /// them all, so a stream without unit boundaries must be cut off.
    held: usize,
    /// A copy of those bytes while the stream's picture size is unknown
    /// (`probe_size`); empty and not kept once it is known.
    pending: Vec<u8>,
    keep_pending: bool,
}

/// Most bytes a parser may hold without finding an access unit.
const MAX_HELD: usize = 32 << 20;

impl Parser {
    fn new(id: codec::Id) -> Option<Parser> {
        let id: ff::ffi::AVCodecID = id.into();
        // SAFETY: av_parser_init takes any codec id and returns NULL when it
        // has no parser for it.
        let ctx = unsafe { ff::ffi::av_parser_init(id as c_int) };
        (!ctx.is_null()).then_some(Parser {
            ctx,
            held: 0,
            pending: vec![],
            keep_pending: true,
        })
    }

    /// Feeds `data` (empty: end of stream, flush what is buffered) and
    /// returns the complete access units found, each with the pts the
    /// parser attributes to it.
    fn parse(
        &mut self,
        avctx: *mut ff::ffi::AVCodecContext,
        data: &[u8],
        pts: i64,
    ) -> Vec<(Vec<u8>, Option<i64>)> {
        let mut units = vec![];
        let mut padded = Vec::with_capacity(data.len() + INPUT_PADDING);
        padded.extend_from_slice(data);
        padded.resize(data.len() + INPUT_PADDING, 0);
        let mut pos = 0usize;
        let flushing = data.is_empty();
        // Each call consumes bytes or emits a unit; the bound only guards
        // against a parser that would do neither forever.
        for _ in 0..data.len().saturating_mul(2).saturating_add(16) {
            let rest = &padded[pos..data.len()];
            let Ok(rest_len) = c_int::try_from(rest.len()) else {
                break;
            };
            let mut out: *mut u8 = std::ptr::null_mut();
            let mut out_len: c_int = 0;
            // SAFETY:
            // - `self.ctx` is a live parser context (freed only in Drop),
            //   `avctx` a live codec context of the same codec;
            // - `rest` is `rest_len` readable bytes followed by at least
            //   INPUT_PADDING zero bytes of the same allocation;
            // - `out`/`out_len` are valid out pointers; the parser points
            //   `out` into its own buffer or into `rest`, valid until the
            //   next call, and the unit is copied out before that.
            let used = unsafe {
                ff::ffi::av_parser_parse2(
                    self.ctx,
                    avctx,
                    &mut out,
                    &mut out_len,
                    rest.as_ptr(),
                    rest_len,
                    pts,
                    ff::ffi::AV_NOPTS_VALUE,
                    0,
                )
            };
            if out_len > 0 && !out.is_null() {
                // SAFETY: the parser returned `out_len` readable bytes at
                // `out` (see above); `out_len` is positive.
                let unit = unsafe { std::slice::from_raw_parts(out, out_len as usize) }.to_vec();
                // SAFETY: `self.ctx` is live; `pts` is a plain field.
                let unit_pts = unsafe { (*self.ctx).pts };
                units.push((
                    unit,
                    (unit_pts != ff::ffi::AV_NOPTS_VALUE).then_some(unit_pts),
                ));
                self.held = 0;
            }
            let Ok(used) = usize::try_from(used) else {
                break; // a parser error: drop the rest of this buffer
            };
            if self.keep_pending {
                let end = pos.saturating_add(used).min(data.len());
                if let Some(bytes) = data.get(pos..end) {
                    self.pending.extend_from_slice(bytes);
                }
            }
            if out_len > 0 {
                // The bytes consumed by the call that gives a unit end it;
                // those after start the next.
                self.pending.clear();
            }
            pos = pos.saturating_add(used).min(data.len());
            self.held = self.held.saturating_add(used);
            if flushing || pos >= data.len() || (used == 0 && out_len <= 0) {
                break;
            }
        }
        units
    }
}

impl Drop for Parser {
    fn drop(&mut self) {
        // SAFETY: `self.ctx` came from av_parser_init and is closed once.
        unsafe { ff::ffi::av_parser_close(self.ctx) };
    }
}

// SAFETY: the parser context is owned by this value alone and only used
// through `&mut self`; FFmpeg parser contexts have no thread affinity.
unsafe impl Send for Parser {}

/// One access unit of a byte stream (or one VP8/VP9 frame) and the
/// token its pictures carry.
pub struct Unit {
    pub data: Vec<u8>,
    pub pts: Option<i64>,
}

/// A libavcodec video decoder with its parser.
pub struct Decoder {
    coded: Coded,
    threads: usize,
    dec: ff::decoder::Video,
    parser: Option<Parser>,
    /// Scaler for pictures that are not 8-bit 4:2:0 (4:2:2, 4:4:4,
    /// 10-bit...): converted to I420 so CAPTURE formats stay 8-bit 4:2:0.
    scaler: Option<(Scaler, Pixel, u32, u32)>,
    /// Token of the last buffer decoded: what the parser's last unit
    /// carries at a drain if it lost track of its input.
    last_token: Option<i64>,
}

/// A swscale context, owned by one decoder.
struct Scaler(ff::software::scaling::Context);

// SAFETY: the context is owned by this value alone and only used through
// `&mut self` (one thread at a time); swscale contexts have no thread
// affinity. ffmpeg-next leaves `Send` out only because it holds a raw
// pointer.
unsafe impl Send for Scaler {}

/// A decoder's picture size, once its headers gave one within bounds.
fn size_of(dec: &ff::decoder::Video) -> Option<(u32, u32)> {
    let (w, h) = (dec.width(), dec.height());
    (w > 0 && h > 0 && u64::from(w) * u64::from(h) <= u64::from(MAX_PIXELS)).then_some((w, h))
}

fn open_decoder(coded: Coded, threads: usize) -> Result<ff::decoder::Video, CodecError> {
    init();
    let codec =
        ff::decoder::find(coded.id()).ok_or_else(|| CodecError(format!("no {coded:?} decoder")))?;
    let mut ctx = codec::Context::new_with_codec(codec);
    ctx.set_threading(codec::threading::Config {
        kind: if threads > 1 {
            codec::threading::Type::Frame
        } else {
            codec::threading::Type::None
        },
        count: threads.max(1),
        ..Default::default()
    });
    // SAFETY: `ctx` owns a live, not yet opened AVCodecContext; max_pixels
    // is a plain field read by avcodec when it allocates frames.
    unsafe { (*ctx.as_mut_ptr()).max_pixels = i64::from(MAX_PIXELS) };
    Ok(ctx.decoder().video()?)
}

impl Decoder {
    pub fn new(coded: Coded, threads: usize) -> Result<Decoder, CodecError> {
        let dec = open_decoder(coded, threads)?;
        let parser = if coded.needs_parser() {
            Parser::new(coded.id())
        } else {
            None
        };
        Ok(Decoder {
            coded,
            threads,
            dec,
            parser,
            scaler: None,
            last_token: None,
        })
    }

    pub fn coded(&self) -> Coded {
        self.coded
    }

    /// The picture size the stream's headers gave libavcodec so far, before
    /// any picture comes out (B-frames delay the first by several units).
    pub fn stream_size(&self) -> Option<(u32, u32)> {
        size_of(&self.dec)
    }

    /// The picture size of the unit the parser still holds (it completes
    /// a unit only when the next one starts): a throwaway decoder reads
    /// its headers. Hardware parses the headers of the first buffer at
    /// once; a client that waits for the SOURCE_CHANGE before it queues
    /// more must not wait for a second buffer.
    pub fn probe_size(&self) -> Option<(u32, u32)> {
        let pending = &self.parser.as_ref()?.pending;
        if pending.is_empty() {
            return None;
        }
        let mut probe = open_decoder(self.coded, 1).ok()?;
        let _ = probe.send_packet(&ff::Packet::copy(pending));
        size_of(&probe)
    }

    /// The size is known: the parser stops copying what it holds.
    pub fn size_known(&mut self) {
        if let Some(p) = self.parser.as_mut() {
            p.keep_pending = false;
            p.pending = vec![];
        }
    }

    /// Splits one OUTPUT buffer's bytes, tagged with `token`, into the
    /// access units they complete (frames made from a unit carry its
    /// token back). The error says the parser had to drop data; the units
    /// found are returned anyway.
    pub fn split(&mut self, data: &[u8], token: i64) -> (Vec<Unit>, Result<(), CodecError>) {
        self.last_token = Some(token);
        let units = match &mut self.parser {
            // SAFETY: the decoder's context is live for the parser call.
            Some(p) if !data.is_empty() => p.parse(unsafe { self.dec.as_mut_ptr() }, data, token),
            Some(_) => vec![],
            None if data.is_empty() => vec![],
            None => vec![(data.to_vec(), Some(token))],
        };
        let mut result = Ok(());
        if self.parser.as_ref().is_some_and(|p| p.held > MAX_HELD) {
            self.parser = Parser::new(self.coded.id());
            result = Err(CodecError(format!("no access unit in {MAX_HELD} bytes")));
        }
        let units = units
            .into_iter()
            .map(|(data, pts)| Unit {
                data,
                pts: pts.or(Some(token)),
            })
            .collect();
        (units, result)
    }

    /// Decodes one access unit, appending the pictures it finishes to
    /// `out`.
    pub fn decode_unit(
        &mut self,
        unit: &Unit,
        out: &mut VecDeque<Picture>,
    ) -> Result<(), CodecError> {
        self.send(&unit.data, unit.pts, out)
    }

    /// `split` and `decode_unit` in one go.
    pub fn decode(
        &mut self,
        data: &[u8],
        token: i64,
        out: &mut VecDeque<Picture>,
    ) -> Result<(), CodecError> {
        let (units, mut result) = self.split(data, token);
        for u in &units {
            if let Err(e) = self.decode_unit(u, out) {
                result = Err(e);
            }
        }
        result
    }

    /// End of stream: decodes what the parser still holds, then every
    /// picture the decoder delays, and makes the decoder ready for a new
    /// stream (what follows must start at a resume point).
    pub fn drain(&mut self, out: &mut VecDeque<Picture>) -> Result<(), CodecError> {
        let mut result = Ok(());
        if let Some(p) = &mut self.parser {
            // SAFETY: the decoder's context is live for the parser call.
            let units = p.parse(
                unsafe { self.dec.as_mut_ptr() },
                &[],
                ff::ffi::AV_NOPTS_VALUE,
            );
            for (unit, pts) in units {
                if let Err(e) = self.send(&unit, pts.or(self.last_token), out) {
                    result = Err(e);
                }
            }
        }
        if let Err(e) = self.dec.send_eof() {
            result = Err(e.into());
        }
        if let Err(e) = self.receive(out) {
            result = Err(e);
        }
        // After EOF libavcodec only accepts packets again once flushed, and
        // a flushed parser starts afresh.
        self.dec.flush();
        if self.coded.needs_parser() {
            self.parser = Parser::new(self.coded.id());
        }
        result
    }

    /// Forgets everything: buffered bytes and delayed pictures (a seek).
    pub fn reset(&mut self) -> Result<(), CodecError> {
        self.dec.flush();
        if self.coded.needs_parser() {
            // A parser cannot be flushed without emitting what it holds.
            self.parser = Parser::new(self.coded.id());
        }
        Ok(())
    }

    /// Replaces the decoder with a new one (after a fatal error).
    pub fn reopen(&mut self) -> Result<(), CodecError> {
        self.dec = open_decoder(self.coded, self.threads)?;
        self.reset()
    }

    fn send(
        &mut self,
        unit: &[u8],
        pts: Option<i64>,
        out: &mut VecDeque<Picture>,
    ) -> Result<(), CodecError> {
        let mut packet = ff::Packet::copy(unit);
        packet.set_pts(pts);
        let sent = self.dec.send_packet(&packet);
        // Pictures finished so far come out whether or not this unit was
        // accepted.
        let received = self.receive(out);
        sent?;
        received
    }

    fn receive(&mut self, out: &mut VecDeque<Picture>) -> Result<(), CodecError> {
        loop {
            let mut frame = Frame::empty();
            match self.dec.receive_frame(&mut frame) {
                Ok(()) => {
                    let token = frame.pts();
                    let corrupt = frame.is_corrupt();
                    let frame = self.convert_to_i420(frame)?;
                    out.push_back(Picture {
                        frame,
                        token,
                        corrupt,
                    });
                }
                Err(ff::Error::Other { errno }) if errno == libc::EAGAIN => return Ok(()),
                Err(ff::Error::Eof) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn convert_to_i420(&mut self, frame: Frame) -> Result<Frame, CodecError> {
        let (fmt, w, h) = (frame.format(), frame.width(), frame.height());
        if w == 0 || h == 0 || u64::from(w) * u64::from(h) > u64::from(MAX_PIXELS) {
            return Err(CodecError(format!("picture size {w}x{h} out of range")));
        }
        if matches!(fmt, Pixel::YUV420P | Pixel::YUVJ420P) && frame.planes() == 3 {
            return Ok(frame);
        }
        let reuse =
            matches!(&self.scaler, Some((_, f, sw, sh)) if *f == fmt && *sw == w && *sh == h);
        if !reuse {
            let ctx = ff::software::scaling::Context::get(
                fmt,
                w,
                h,
                Pixel::YUV420P,
                w,
                h,
                ff::software::scaling::Flags::BILINEAR,
            )?;
            self.scaler = Some((Scaler(ctx), fmt, w, h));
        }
        let Some((ctx, ..)) = &mut self.scaler else {
            return Err(CodecError("no scaler".into()));
        };
        let mut i420 = Frame::empty();
        ctx.0.run(&frame, &mut i420)?;
        i420.set_pts(frame.pts());
        Ok(i420)
    }
}

/// H.264 profiles the encoder offers (V4L2 menu order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum H264Profile {
    Baseline,
    ConstrainedBaseline,
    Main,
    High,
}

/// Rate control of the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateControl {
    /// Average bitrate (x264 ABR).
    Vbr,
    /// Constant bitrate: x264 ABR capped by a VBV of one second.
    Cbr,
    /// Constant quality: x264 CQP with this QP (0..51).
    ConstantQp(u32),
}

/// What the encoder is opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncoderParams {
    pub width: u32,
    pub height: u32,
    /// Source frames are NV12 (true) or I420.
    pub nv12: bool,
    /// Frame interval: numerator, denominator (seconds per frame).
    pub interval: (u32, u32),
    pub bitrate: u32,
    pub rate_control: RateControl,
    pub gop: u32,
    pub profile: H264Profile,
    /// `level_idc` (10 = 1.0, 9 = 1b, 41 = 4.1...).
    pub level_idc: i32,
}

/// One encoded access unit and the token of the frame it came from.
pub struct EncodedUnit {
    pub data: Vec<u8>,
    pub token: Option<i64>,
    pub keyframe: bool,
}

/// libx264 through libavcodec: no B-frames and x264's `zerolatency` tune,
/// so every frame comes out as one access unit as soon as it went in, in
/// the order it went in (timestamps match without reordering).
pub struct Encoder {
    params: EncoderParams,
    enc: ff::encoder::video::Encoder,
    frames_in: i64,
    /// (pts, token) of the frames sent and not yet out: the pts counts
    /// frames (x264 wants them increasing), the token is the caller's.
    pending: VecDeque<(i64, i64)>,
}

impl Encoder {
    /// True if this libavcodec has libx264.
    pub fn available() -> bool {
        init();
        ff::encoder::find_by_name("libx264").is_some()
    }

    pub fn new(params: EncoderParams) -> Result<Encoder, CodecError> {
        init();
        let codec = ff::encoder::find_by_name("libx264")
            .ok_or_else(|| CodecError("no libx264 encoder".into()))?;
        let mut ctx = codec::Context::new_with_codec(codec);
        ctx.set_threading(codec::threading::Config {
            kind: codec::threading::Type::None,
            count: 1,
            ..Default::default()
        });
        let mut enc = ctx.encoder().video()?;
        enc.set_width(params.width);
        enc.set_height(params.height);
        enc.set_format(if params.nv12 {
            Pixel::NV12
        } else {
            Pixel::YUV420P
        });
        let (num, den) = params.interval;
        let (num, den) = (
            i32::try_from(num.max(1)).unwrap_or(1),
            i32::try_from(den.max(1)).unwrap_or(30),
        );
        enc.set_time_base(ff::Rational::new(num, den));
        enc.set_frame_rate(Some(ff::Rational::new(den, num)));
        enc.set_gop(params.gop.max(1));
        enc.set_max_b_frames(0);
        let mut opts = ff::Dictionary::new();
        opts.set("preset", "veryfast");
        opts.set("tune", "zerolatency");
        // Key frames where the GOP size puts them (and where the client
        // forces one), not where x264 detects a scene cut.
        opts.set("x264-params", "scenecut=0");
        let bitrate = params.bitrate as usize;
        match params.rate_control {
            RateControl::Vbr => enc.set_bit_rate(bitrate),
            RateControl::Cbr => {
                enc.set_bit_rate(bitrate);
                enc.set_max_bit_rate(bitrate);
                opts.set("nal-hrd", "cbr");
            }
            RateControl::ConstantQp(qp) => opts.set("qp", &qp.min(51).to_string()),
        }
        let profile = match params.profile {
            H264Profile::Baseline | H264Profile::ConstrainedBaseline => "baseline",
            H264Profile::Main => "main",
            H264Profile::High => "high",
        };
        opts.set("profile", profile);
        // SAFETY: `enc` owns a live, not yet opened AVCodecContext; level
        // and rc_buffer_size are plain fields libx264 reads when opened.
        unsafe {
            let raw = enc.as_mut_ptr();
            (*raw).level = params.level_idc;
            if params.rate_control == RateControl::Cbr {
                (*raw).rc_buffer_size = i32::try_from(params.bitrate).unwrap_or(i32::MAX);
            }
        }
        let enc = enc.open_with(opts)?;
        Ok(Encoder {
            params,
            enc,
            frames_in: 0,
            pending: VecDeque::new(),
        })
    }

    pub fn params(&self) -> &EncoderParams {
        &self.params
    }

    /// Changes the target bitrate of an open encoder: libavcodec's libx264
    /// wrapper compares it before every frame and reconfigures x264.
    pub fn set_bitrate(&mut self, bitrate: u32) {
        if matches!(self.params.rate_control, RateControl::ConstantQp(_))
            || self.params.bitrate == bitrate
        {
            return;
        }
        self.params.bitrate = bitrate;
        // SAFETY: `self.enc` owns a live, opened AVCodecContext; bit_rate
        // and rc_max_rate are plain fields, read by the wrapper on the next
        // frame from this same thread.
        unsafe {
            let raw = self.enc.as_mut_ptr();
            (*raw).bit_rate = i64::from(bitrate);
            if self.params.rate_control == RateControl::Cbr {
                (*raw).rc_max_rate = i64::from(bitrate);
            }
        }
    }

    /// Encodes one source frame given as its planes (NV12: Y, UV; I420:
    /// Y, U, V), each `width` (chroma: width / 2 or width for NV12's UV)
    /// bytes per row at the given strides. `keyframe` forces an IDR.
    pub fn encode(
        &mut self,
        planes: &[(&[u8], usize)],
        token: i64,
        keyframe: bool,
        out: &mut Vec<EncodedUnit>,
    ) -> Result<(), CodecError> {
        let p = &self.params;
        let fmt = if p.nv12 { Pixel::NV12 } else { Pixel::YUV420P };
        let mut frame = Frame::new(fmt, p.width, p.height);
        let (w, h) = (p.width as usize, p.height as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let shapes: Vec<(usize, usize)> = if p.nv12 {
            vec![(w, h), (cw * 2, ch)]
        } else {
            vec![(w, h), (cw, ch), (cw, ch)]
        };
        if planes.len() != shapes.len() || frame.planes() != shapes.len() {
            return Err(CodecError("wrong plane count".into()));
        }
        for (i, ((src, src_stride), (row_len, rows))) in planes.iter().zip(&shapes).enumerate() {
            let dst_stride = frame.stride(i);
            let dst = frame.data_mut(i);
            for r in 0..*rows {
                let s = src
                    .get(r * src_stride..r * src_stride + row_len)
                    .ok_or_else(|| CodecError("source plane too short".into()))?;
                let d = dst
                    .get_mut(r * dst_stride..r * dst_stride + row_len)
                    .ok_or_else(|| CodecError("frame plane too short".into()))?;
                d.copy_from_slice(s);
            }
        }
        let pts = self.frames_in;
        self.frames_in += 1;
        frame.set_pts(Some(pts));
        if keyframe {
            frame.set_kind(ff::picture::Type::I);
        }
        self.enc.send_frame(&frame)?;
        self.pending.push_back((pts, token));
        self.receive(out)
    }

    /// End of stream: everything still inside the encoder comes out.
    /// The encoder cannot take frames afterwards (make a new one).
    pub fn drain(&mut self, out: &mut Vec<EncodedUnit>) -> Result<(), CodecError> {
        self.enc.send_eof()?;
        self.receive(out)
    }

    fn receive(&mut self, out: &mut Vec<EncodedUnit>) -> Result<(), CodecError> {
        loop {
            let mut packet = ff::Packet::empty();
            match self.enc.receive_packet(&mut packet) {
                Ok(()) => {
                    // Frames before this one that made no unit are dropped.
                    let mut token = None;
                    while let Some(&(pts, t)) = self.pending.front() {
                        if packet.pts().is_some_and(|p| pts > p) {
                            break;
                        }
                        self.pending.pop_front();
                        token = Some(t);
                    }
                    out.push(EncodedUnit {
                        data: packet.data().unwrap_or(&[]).to_vec(),
                        token,
                        keyframe: packet.is_key(),
                    })
                }
                Err(ff::Error::Other { errno }) if errno == libc::EAGAIN => return Ok(()),
                Err(ff::Error::Eof) => return Ok(()),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Streams and reference decodes for the tests.
#[cfg(test)]
pub mod testing {
    use super::*;

    /// Frame `i` of a `w`x`h` test sequence as I420 planes: gradients that
    /// move with `i` and a square that crosses the picture.
    pub fn pattern(i: u32, w: u32, h: u32) -> [Vec<u8>; 3] {
        let (w, h) = (w as usize, h as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let i = i as usize;
        let mut y = vec![0u8; w * h];
        for r in 0..h {
            for c in 0..w {
                let in_square = (c + 200 - (i * 3) % 200) % w < w / 5 && (r * 2 + i) % h < h / 4;
                y[r * w + c] = if in_square {
                    235
                } else {
                    ((c + r + i * 2) % 200 + 16) as u8
                };
            }
        }
        let u = (0..cw * ch)
            .map(|k| ((k % cw + i) % 160 + 48) as u8)
            .collect();
        let v = (0..cw * ch)
            .map(|k| ((k / cw + 2 * i) % 160 + 48) as u8)
            .collect();
        [y, u, v]
    }

    pub fn has_encoder(name: &str) -> bool {
        init();
        ff::encoder::find_by_name(name).is_some()
    }

    /// Encodes `n` pattern frames with the libavcodec encoder `name`
    /// (libx264, libx265, libvpx, libvpx-vp9): one access unit per frame.
    pub fn encode(name: &str, w: u32, h: u32, n: u32, first: u32) -> Vec<Vec<u8>> {
        init();
        let codec = ff::encoder::find_by_name(name).unwrap_or_else(|| panic!("no encoder {name}"));
        let mut enc = codec::Context::new_with_codec(codec)
            .encoder()
            .video()
            .unwrap();
        enc.set_width(w);
        enc.set_height(h);
        enc.set_format(Pixel::YUV420P);
        enc.set_time_base(ff::Rational::new(1, 30));
        enc.set_frame_rate(Some(ff::Rational::new(30, 1)));
        enc.set_gop(10);
        enc.set_bit_rate(2_000_000);
        let mut opts = ff::Dictionary::new();
        match name {
            "libx264" => {
                opts.set("preset", "veryfast");
                // B-frames make the display order differ from the decode order.
                enc.set_max_b_frames(2);
            }
            "libx265" => {
                opts.set("preset", "ultrafast");
                opts.set("x265-params", "log-level=none");
            }
            _ => {
                opts.set("deadline", "realtime");
                opts.set("cpu-used", "8");
                opts.set("auto-alt-ref", "0");
            }
        }
        let mut enc = enc.open_with(opts).unwrap();
        let mut units = vec![];
        let take = |enc: &mut ff::encoder::video::Encoder, units: &mut Vec<Vec<u8>>| loop {
            let mut p = ff::Packet::empty();
            if enc.receive_packet(&mut p).is_err() {
                break;
            }
            units.push(p.data().unwrap().to_vec());
        };
        for i in first..first + n {
            let planes = pattern(i, w, h);
            let mut f = Frame::new(Pixel::YUV420P, w, h);
            for (p, src) in planes.iter().enumerate() {
                let pw = if p == 0 {
                    w as usize
                } else {
                    (w as usize).div_ceil(2)
                };
                let stride = f.stride(p);
                for (r, row) in src.chunks(pw).enumerate() {
                    f.data_mut(p)[r * stride..r * stride + pw].copy_from_slice(row);
                }
            }
            f.set_pts(Some(i64::from(i)));
            enc.send_frame(&f).unwrap();
            take(&mut enc, &mut units);
        }
        enc.send_eof().unwrap();
        take(&mut enc, &mut units);
        units
    }

    /// Decodes whole access units straight with libavcodec (no parser):
    /// the pictures in display order.
    pub fn reference_decode(coded: Coded, units: &[Vec<u8>]) -> Vec<Picture> {
        let mut dec = Decoder::new(coded, 1).unwrap();
        dec.parser = None;
        let mut out = VecDeque::new();
        for (i, u) in units.iter().enumerate() {
            dec.send(u, Some(i as i64), &mut out).unwrap();
        }
        dec.drain(&mut out).unwrap();
        out.into()
    }
}
