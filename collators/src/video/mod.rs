//! Video input: frames decoded with FFmpeg (the `ffmpeg-next` crate on the system's
//! libavformat / libavcodec / libswscale; Debian: `libavcodec-dev libavformat-dev
//! libavutil-dev libswscale-dev`, plus `pkg-config clang libclang-dev` for the bindings), sampled
//! the way transformers samples them, and the LLaVA video processors that turn them into
//! `pixel_values_videos`.
//!
//! ```no_run
//! # fn main() -> lmms_core::Result<()> {
//! let frames = lmms_collators::video::read_frames("clip.mp4", 8)?; // Vec<image::RgbImage>
//! # Ok(()) }
//! ```
//!
//! What transformers 5.23 does, and what is done here:
//! - **Sampling.** `processor.apply_chat_template(..., num_frames=N)` turns on
//!   `do_sample_frames`, and the video processor's `sample_frames` calls
//!   `default_sample_indices_fn`: `np.arange(N) * total // N` over the decoded frames
//!   ([`Sampling::Uniform`], the default of [`read_frames`]); it raises when `N > total`. Without
//!   `num_frames` HF keeps every frame (the LLaVA video processors' `do_sample_frames` is false
//!   "for BC"), which no fixed-size batch can use. The `load_video` docs' example sampler, and
//!   the original LLaVA-NeXT / LLaVA-OneVision code, use `np.linspace(0, total - 1, N)` instead
//!   ([`Sampling::Linspace`]: first and last frame included).
//! - **Frame count.** HF's default decoder (torchcodec) scans the file; its PyAV reader trusts
//!   the container header (absent in WebM/Matroska: it then fails). Here the packets of the video
//!   stream are counted by reading the file without decoding; if decoding yields fewer frames,
//!   the indices are drawn again from the frames it did yield.
//! - **Decoding.** Frames come out of the decoder in presentation order (B-frames reordered);
//!   decoding stops after the last frame needed and only the chosen frames are converted to
//!   RGB24 (swscale at the native size, the frame's YUV matrix and range, BT.601 limited when
//!   untagged, as PyAV's `to_ndarray(format="rgb24")`). Rotation metadata is not applied (nor is
//!   it by HF's PyAV reader); alpha is dropped.
//! - **Errors** name the file (`cannot read <path>: <reason>`): missing or unreadable, "not a
//!   video FFmpeg can read", "has no video stream" (audio files, also with a cover picture), a
//!   codec that cannot be decoded, "has N frames, fewer than the M asked (num_frames)" — frames
//!   are never repeated to make up the count (HF raises too; a collator reports the sample).
//! - **Pixels.** [`VideoProcessor`]: `LlavaNextVideoVideoProcessor` (CLIP: shortest edge,
//!   center crop, OpenAI CLIP mean/std) and `LlavaOnevisionVideoProcessor` (fixed height x width,
//!   SigLIP-style) are the image pipeline per frame; here it is [`crate::image`]'s Pillow-exact
//!   one. HF's video processors run it on torchvision tensors instead (antialiased bicubic
//!   resize, fused float rescale/normalize), which Pillow's resize matches to within a level or
//!   so; not measured here (torchvision is not in the reference environment).
//!
//! Speed (`speed` in `collators/tests/video.rs`, a 640x480 H.264 clip of 240 frames, release
//! build, a busy 2-vCPU machine, Debian 12's FFmpeg 5.1): every frame to RGB24 at ~1300
//! frames/s (PyAV 18 on its bundled FFmpeg 8: ~2300, with a faster h264 decoder — raw decoding
//! alone is ~1.4x slower in the Debian build — and threaded swscale); 8 frames sampled from the
//! 240 in ~75-85 ms (HF's `load_video` with PyAV: ~50 ms), of which ~12 ms is opening the file
//! (`avformat_find_stream_info`). The file is opened once: after counting, it is rewound and
//! checked to start at its first packet again (else it is reopened). The decoder uses frame
//! threads (up to 4); samples are decoded in parallel by the collator.
//!
//! Parity (`collators/tests/video.rs`, fixtures by `tools/fixtures/video.py`): sampled indices
//! equal HF's for both samplers; every decoded frame of an H.264 and a VP9 clip against PyAV 18
//! (FFmpeg 8): H.264 and VP9 decoding is bit-exact by specification, so the differences are the
//! YUV->RGB rounding of the two swscale versions (measured: see the test); pixel values of the
//! video processors on the same RGB frames are bit-identical to the Pillow image processors.

mod decode;
mod processor;
mod sampling;

pub use decode::{Frames, VideoInfo, probe, read_frames, read_frames_at, read_frames_with};
pub use processor::{VIDEO_PREPROCESSOR_CONFIG, VideoProcessor, VideoProcessorKind};
pub use sampling::{Sampling, sample_indices};
