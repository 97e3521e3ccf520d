//! Decoding with FFmpeg (`ffmpeg-next` on the system's libavformat / libavcodec / libswscale).

use ffmpeg_next as ffmpeg;
use ffmpeg_next::ffi;
use ffmpeg_next::format::Pixel;
use ffmpeg_next::format::stream::Disposition;
use ffmpeg_next::media::Type;
use ffmpeg_next::software::scaling;
use ffmpeg_next::util::color;
use ffmpeg_next::util::frame::video::Video as VideoFrame;
use image::RgbImage;
use lmms_core::{Error, Result};
use std::io::ErrorKind;
use std::path::Path;
use std::sync::Once;

use super::sampling::{Sampling, sample_indices};

/// What [`probe`] finds out about a video without decoding it.
#[derive(Debug, Clone, PartialEq)]
pub struct VideoInfo {
    /// Frames of the video stream: its packets, counted by reading the whole file (the
    /// container's own count, `header_frames`, is missing from some formats and wrong in
    /// others).
    pub frames: usize,
    /// The container's frame count, when it has one.
    pub header_frames: Option<usize>,
    pub width: u32,
    pub height: u32,
    /// Average frame rate, when known.
    pub fps: Option<f64>,
    /// FFmpeg's name of the codec (`h264`, `vp9`, ...).
    pub codec: String,
}

/// Frames read by [`read_frames_with`].
#[derive(Debug, Clone)]
pub struct Frames {
    /// RGB24 at the video's native size, one per index.
    pub images: Vec<RgbImage>,
    /// Their indices among the decoded frames.
    pub indices: Vec<usize>,
    /// How many frames the video has (what the indices were sampled from).
    pub total: usize,
}

fn init() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        // Registers nothing on FFmpeg >= 5 but is harmless; FFmpeg's own log stays quiet below
        // errors (a corrupt packet in one clip should not flood a training log: the reader's
        // errors say what went wrong).
        let _ = ffmpeg::init();
        ffmpeg::util::log::set_level(ffmpeg::util::log::Level::Error);
    });
}

fn fail(path: &Path, kind: ErrorKind, reason: impl Into<String>) -> Error {
    Error::io(path, std::io::Error::new(kind, reason.into()))
}

/// Opens the container of `path`: checks the file first so that a missing file is reported as
/// such, and forces FFmpeg's `file:` protocol so that a name is never taken for a URL or a
/// device.
fn open_input(path: &Path) -> Result<ffmpeg::format::context::Input> {
    init();
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(fail(
            path,
            ErrorKind::InvalidInput,
            "is a directory, not a video file",
        ));
    }
    let name = path.to_str().filter(|s| !s.contains('\0')).ok_or_else(|| {
        fail(
            path,
            ErrorKind::InvalidInput,
            "the path is not valid UTF-8, which FFmpeg needs",
        )
    })?;
    ffmpeg::format::input(&format!("file:{name}")).map_err(|e| {
        fail(
            path,
            ErrorKind::InvalidData,
            format!("not a video FFmpeg can read ({e})"),
        )
    })
}

/// The video stream to decode: FFmpeg's best one, never a cover picture (`attached_pic`).
fn video_stream(input: &ffmpeg::format::context::Input, path: &Path) -> Result<usize> {
    let usable = |s: &ffmpeg::format::stream::Stream| {
        s.parameters().medium() == Type::Video
            && !s.disposition().contains(Disposition::ATTACHED_PIC)
    };
    if let Some(best) = input.streams().best(Type::Video).filter(usable) {
        return Ok(best.index());
    }
    if let Some(s) = input.streams().find(usable) {
        return Ok(s.index());
    }
    let cover = input
        .streams()
        .any(|s| s.parameters().medium() == Type::Video);
    Err(fail(
        path,
        ErrorKind::InvalidData,
        if cover {
            "has no video stream (only a cover picture)"
        } else {
            "has no video stream"
        },
    ))
}

/// Whether a packet holds a frame the decoder outputs: not empty, not marked for discarding
/// (the samples an MP4 edit list cuts away).
fn counts(p: &ffmpeg::Packet) -> bool {
    use ffmpeg::packet::Ref;
    // SAFETY: the pointer is to the packet's own AVPacket, alive for this call.
    let flags = unsafe { (*p.as_ptr()).flags };
    p.size() > 0 && flags & ffi::AV_PKT_FLAG_DISCARD == 0
}

/// Where a packet is, to recognise the first one again after a rewind.
type PacketKey = (Option<i64>, Option<i64>, isize);

fn key(p: &ffmpeg::Packet) -> PacketKey {
    (p.pts(), p.dts(), p.position())
}

/// An opened container and its video stream.
struct Source {
    input: ffmpeg::format::context::Input,
    index: usize,
}

impl Source {
    fn open(path: &Path) -> Result<Self> {
        let input = open_input(path)?;
        let index = video_stream(&input, path)?;
        Ok(Source { input, index })
    }

    fn info(&self, frames: usize) -> VideoInfo {
        let s = self.input.stream(self.index).expect("the stream exists");
        let rate = s.avg_frame_rate();
        let fps = (rate.numerator() > 0 && rate.denominator() > 0).then(|| f64::from(rate));
        let p = s.parameters();
        // SAFETY: `p` wraps the stream's live AVCodecParameters, read-only here.
        let (width, height) = unsafe {
            let raw = p.as_ptr();
            ((*raw).width.max(0) as u32, (*raw).height.max(0) as u32)
        };
        VideoInfo {
            frames,
            header_frames: usize::try_from(s.frames()).ok().filter(|&n| n > 0),
            width,
            height,
            fps,
            codec: p.id().name().to_string(),
        }
    }

    /// Reads the whole container: the video stream's packets (one per frame) and the first
    /// one's position.
    fn count(&mut self) -> (usize, Option<PacketKey>) {
        let index = self.index;
        let mut first = None;
        let mut n = 0;
        for (s, p) in self.input.packets() {
            if s.index() == index && counts(&p) {
                first.get_or_insert_with(|| key(&p));
                n += 1;
            }
        }
        (n, first)
    }

    /// Seeks back to the start; whether the seek succeeded (the decoder checks that the first
    /// packet is the one counted first).
    fn rewind(&mut self) -> bool {
        // SAFETY: reading a field of the live AVFormatContext. (`..start` is max_ts = start.)
        let start = unsafe { (*self.input.as_ptr()).start_time };
        let start = if start == ffi::AV_NOPTS_VALUE {
            0
        } else {
            start
        };
        self.input.seek(start, ..start).is_ok()
    }
}

/// Opens `path`, reads it to the end and reports its frame count, size, rate and codec.
/// Errors name the file: missing, not a container FFmpeg reads, no video stream.
pub fn probe(path: impl AsRef<Path>) -> Result<VideoInfo> {
    let mut source = Source::open(path.as_ref())?;
    let (frames, _) = source.count();
    Ok(source.info(frames))
}

/// What a scaling context was made for.
type FrameKind = (Pixel, u32, u32, color::Space, color::Range);

/// RGB24 conversion of decoded frames with swscale, as PyAV's `to_ndarray(format="rgb24")`
/// does it: bilinear flags (irrelevant at the native size but for chroma), the frame's YUV
/// matrix (BT.601 unless tagged BT.709 / FCC / SMPTE-240M / BT.2020) and range (limited unless
/// tagged full or a `yuvj` format).
struct ToRgb {
    ctx: Option<(scaling::Context, FrameKind)>,
    out: VideoFrame,
}

impl ToRgb {
    fn new() -> Self {
        ToRgb {
            ctx: None,
            out: VideoFrame::empty(),
        }
    }

    fn convert(&mut self, frame: &VideoFrame) -> std::result::Result<RgbImage, ffmpeg::Error> {
        let (w, h) = (frame.width(), frame.height());
        let key = (
            frame.format(),
            w,
            h,
            frame.color_space(),
            frame.color_range(),
        );
        if self.ctx.as_ref().is_none_or(|(_, k)| *k != key) {
            let mut ctx =
                scaling::Context::get(key.0, w, h, Pixel::RGB24, w, h, scaling::Flags::BILINEAR)?;
            set_colorspace(&mut ctx, frame);
            self.ctx = Some((ctx, key));
            self.out = VideoFrame::empty();
        }
        let (ctx, _) = self.ctx.as_mut().expect("set above");
        ctx.run(frame, &mut self.out)?;
        let (stride, row) = (self.out.stride(0), 3 * w as usize);
        let data = self.out.data(0);
        let mut buf = Vec::with_capacity(row * h as usize);
        for y in 0..h as usize {
            buf.extend_from_slice(&data[y * stride..y * stride + row]);
        }
        Ok(RgbImage::from_raw(w, h, buf).expect("w * h * 3 bytes"))
    }
}

fn set_colorspace(ctx: &mut scaling::Context, frame: &VideoFrame) {
    let format = frame.format();
    let Some(desc) = format.descriptor() else {
        return;
    };
    // SAFETY: a descriptor pointer from av_pix_fmt_desc_get is static and non-null.
    let flags = unsafe { (*desc.as_ptr()).flags };
    if flags & (ffi::AV_PIX_FMT_FLAG_RGB as u64) != 0
        || flags & (ffi::AV_PIX_FMT_FLAG_PAL as u64) != 0
    {
        return; // not YUV / gray: no matrix, no range to set
    }
    let matrix = match frame.color_space() {
        color::Space::BT709 => ffi::SWS_CS_ITU709,
        color::Space::FCC => ffi::SWS_CS_FCC,
        color::Space::SMPTE240M => ffi::SWS_CS_SMPTE240M,
        color::Space::BT2020NCL | color::Space::BT2020CL => ffi::SWS_CS_BT2020,
        _ => ffi::SWS_CS_DEFAULT,
    };
    let full = frame.color_range() == color::Range::JPEG
        || matches!(
            format,
            Pixel::YUVJ420P | Pixel::YUVJ422P | Pixel::YUVJ444P | Pixel::YUVJ440P | Pixel::YUVJ411P
        );
    // SAFETY: the context is live; the coefficient tables are FFmpeg's static ones.
    unsafe {
        let table = ffi::sws_getCoefficients(matrix);
        ffi::sws_setColorspaceDetails(
            ctx.as_mut_ptr(),
            table,
            i32::from(full),
            ffi::sws_getCoefficients(ffi::SWS_CS_DEFAULT),
            1,
            0,
            1 << 16,
            1 << 16,
        );
    }
}

enum Decoded {
    All(Vec<RgbImage>),
    /// The stream ended after `decoded` frames, before the last index.
    Short {
        decoded: usize,
    },
    /// After a rewind, the first packet was not the one expected: open the file again.
    NotAtStart,
}

/// Decodes `source` from where it is (the start) and converts the frames at `wanted`
/// (ascending, repeats allowed), stopping after the last one. Frame threading with up to
/// `threads` threads. `first`: the key of the stream's first packet, to check a rewind.
fn decode_at(
    path: &Path,
    source: Source,
    wanted: &[usize],
    threads: usize,
    mut first: Option<PacketKey>,
) -> Result<Decoded> {
    debug_assert!(wanted.windows(2).all(|w| w[0] <= w[1]));
    let Source { mut input, index } = source;
    let (mut decoder, codec) = {
        let s = input.stream(index).expect("the stream was found");
        let codec = s.parameters().id().name().to_string();
        let mut ctx = ffmpeg::codec::context::Context::from_parameters(s.parameters())
            .map_err(|e| cannot_decode(path, &codec, e))?;
        ctx.set_threading(ffmpeg::codec::threading::Config {
            kind: ffmpeg::codec::threading::Type::Frame,
            count: threads,
            ..Default::default()
        });
        let decoder = ctx
            .decoder()
            .video()
            .map_err(|e| cannot_decode(path, &codec, e))?;
        (decoder, codec)
    };
    let mut rgb = ToRgb::new();
    let mut images: Vec<RgbImage> = Vec::with_capacity(wanted.len());
    let mut next = 0; // position in `wanted`
    let mut k = 0; // index of the next decoded frame
    let mut frame = VideoFrame::empty();
    let mut take = |frame: &VideoFrame, images: &mut Vec<RgbImage>| -> Result<()> {
        if next < wanted.len() && wanted[next] == k {
            let img = rgb.convert(frame).map_err(|e| {
                fail(
                    path,
                    ErrorKind::InvalidData,
                    format!(
                        "frame {k} ({:?}) cannot be converted to RGB ({e})",
                        frame.format()
                    ),
                )
            })?;
            while next < wanted.len() && wanted[next] == k {
                images.push(img.clone());
                next += 1;
            }
        }
        k += 1;
        Ok(())
    };
    for (stream, packet) in input.packets() {
        if stream.index() != index {
            continue;
        }
        if let Some(want) = first.take()
            && key(&packet) != want
        {
            return Ok(Decoded::NotAtStart);
        }
        // A packet the decoder rejects (corrupt data) is skipped, as FFmpeg's tools do.
        if decoder.send_packet(&packet).is_err() {
            continue;
        }
        while decoder.receive_frame(&mut frame).is_ok() {
            take(&frame, &mut images)?;
            if images.len() == wanted.len() {
                return Ok(Decoded::All(images));
            }
        }
    }
    if decoder.send_eof().is_ok() {
        while decoder.receive_frame(&mut frame).is_ok() {
            take(&frame, &mut images)?;
            if images.len() == wanted.len() {
                return Ok(Decoded::All(images));
            }
        }
    }
    if k == 0 {
        return Err(fail(
            path,
            ErrorKind::InvalidData,
            format!("its {codec} video stream decodes to no frame"),
        ));
    }
    Ok(Decoded::Short { decoded: k })
}

fn cannot_decode(path: &Path, codec: &str, e: ffmpeg::Error) -> Error {
    fail(
        path,
        ErrorKind::InvalidData,
        format!("cannot decode its {codec} video stream ({e})"),
    )
}

/// Decoder threads: frame threading pays off on big frames; the collator already decodes
/// several samples at once.
fn decoder_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

fn too_few(path: &Path, total: usize, num_frames: usize) -> Error {
    if num_frames == 0 {
        return fail(path, ErrorKind::InvalidInput, "0 frames asked (num_frames)");
    }
    fail(
        path,
        ErrorKind::InvalidInput,
        format!(
            "has {total} frame{}, fewer than the {num_frames} asked (num_frames): lower \
             num_frames or leave the clip out",
            if total == 1 { "" } else { "s" }
        ),
    )
}

/// `num_frames` frames of the video at `path`, spread over it as transformers' video
/// processors do ([`Sampling::Uniform`]), decoded to RGB24 at the native size. See
/// [`read_frames_with`] for the errors.
pub fn read_frames(path: impl AsRef<Path>, num_frames: usize) -> Result<Vec<RgbImage>> {
    read_frames_with(path, num_frames, Sampling::Uniform).map(|f| f.images)
}

/// `num_frames` frames of the video at `path` chosen by `sampling` among all its frames, with
/// their indices. The frame count is the number of video packets (read without decoding, as
/// torchcodec's exact mode scans the file); if the decoder then yields fewer frames (a
/// damaged or cut stream), the indices are sampled again from the frames it did yield.
///
/// Errors, all naming the file (`cannot read <path>: <reason>`): it does not exist or cannot
/// be read; it is not a container FFmpeg reads ("not a video FFmpeg can read"); it has no video
/// stream (an audio file; an audio file with a cover picture); its codec cannot be decoded;
/// it has fewer frames than `num_frames` (as transformers, frames are never repeated to make up
/// the count), or `num_frames` is 0.
pub fn read_frames_with(
    path: impl AsRef<Path>,
    num_frames: usize,
    sampling: Sampling,
) -> Result<Frames> {
    let path = path.as_ref();
    let threads = decoder_threads();
    let mut source = Source::open(path)?;
    let (mut total, first) = source.count();
    let sample = |total: usize| {
        sample_indices(total, num_frames, sampling).ok_or_else(|| too_few(path, total, num_frames))
    };
    let mut indices = sample(total)?;
    // One pass over the opened file when it rewinds to its first packet, else a fresh open.
    let mut decoded = if source.rewind() {
        decode_at(path, source, &indices, threads, first)?
    } else {
        Decoded::NotAtStart
    };
    for _ in 0..2 {
        match decoded {
            Decoded::All(images) => {
                return Ok(Frames {
                    images,
                    indices,
                    total,
                });
            }
            Decoded::NotAtStart => {}
            Decoded::Short { decoded } => {
                total = decoded;
                indices = sample(total)?;
            }
        }
        decoded = decode_at(path, Source::open(path)?, &indices, threads, None)?;
    }
    Err(fail(
        path,
        ErrorKind::InvalidData,
        "decodes to a different number of frames on each pass",
    ))
}

/// The decoded frames of `path` at `indices` (any order, repeats allowed), RGB24 at the native
/// size. An index past the last decoded frame is an error naming the file and the count.
pub fn read_frames_at(path: impl AsRef<Path>, indices: &[usize]) -> Result<Vec<RgbImage>> {
    let path = path.as_ref();
    let mut sorted: Vec<usize> = indices.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.is_empty() {
        return Ok(vec![]);
    }
    match decode_at(path, Source::open(path)?, &sorted, decoder_threads(), None)? {
        Decoded::All(images) => Ok(indices
            .iter()
            .map(|i| images[sorted.binary_search(i).expect("in sorted")].clone())
            .collect()),
        Decoded::Short { decoded } => Err(fail(
            path,
            ErrorKind::InvalidInput,
            format!(
                "has {decoded} frames; frame {} was asked",
                sorted[sorted.len() - 1]
            ),
        )),
        Decoded::NotAtStart => unreachable!("no rewind to check"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_open_when_the_file_rewinds() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/video");
        for name in ["clip.mp4", "clip.webm"] {
            let path = path.join(name);
            let mut source = Source::open(&path).unwrap();
            let (total, first) = source.count();
            assert_eq!(total, 24);
            assert!(source.rewind(), "{name}");
            let decoded = decode_at(&path, source, &[0, 23], 1, first).unwrap();
            let Decoded::All(images) = decoded else {
                panic!("{name}: the rewound file did not start at its first packet");
            };
            assert_eq!(images.len(), 2);
            // A wrong first packet is noticed.
            let source = Source::open(&path).unwrap();
            let wrong = first.map(|(pts, dts, pos)| (pts, dts, pos + 1));
            assert!(matches!(
                decode_at(&path, source, &[0], 1, wrong).unwrap(),
                Decoded::NotAtStart
            ));
        }
    }
}
