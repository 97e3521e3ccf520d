//! The video reader and processors against the references of `tools/fixtures/video.py` in
//! `tests/fixtures/video/`: transformers 5.23's frame sampling, PyAV 18.1 (FFmpeg 8) decoding
//! to RGB24, and the LLaVA video processors' `pixel_values_videos` (Pillow image processors
//! with the video processors' settings on PyAV's frames).
//!
//! Decoded pixels: H.264 and VP9 decoding is bit-exact by specification, so the frames can only
//! differ by the YUV->RGB conversion of the two swscale versions (here the system's, Debian 12:
//! FFmpeg 5.1). Measured: none — every frame of the three clips (untagged BT.601 H.264 with
//! B-frames, VP9 with hidden alt-ref frames, BT.709 full-range H.264) is bit-identical to PyAV's,
//! as were 640x480 H.264, yuv444p, MJPEG yuvj420p, RGB H.264 and MPEG-4 clips tried while writing
//! this. The tolerance kept in the asserts is two levels on at most 1% of the values (a
//! different FFmpeg build may round a chroma edge differently); `frames_are_bit_identical`
//! pins the measured exactness so a change shows.

use lmms_collators::video::{
    Sampling, VideoProcessor, VideoProcessorKind, probe, read_frames, read_frames_at,
    read_frames_with, sample_indices,
};
use lmms_core::tensor_file::{HostTensor, TensorFile};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn fixtures() -> PathBuf {
    root().join("tests/fixtures/video")
}

fn clip(name: &str) -> PathBuf {
    fixtures().join(name)
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn reference(name: &str) -> HostTensor<i64> {
    TensorFile::open(fixtures().join("frames.safetensors"))
        .unwrap()
        .i64(name)
        .unwrap()
}

/// Reference frame `i` of a `[N, H, W, 3]` u8 tensor.
fn frame(t: &HostTensor<i64>, i: usize) -> Vec<u8> {
    let per = t.shape[1] * t.shape[2] * 3;
    t.data[i * per..(i + 1) * per]
        .iter()
        .map(|&v| v as u8)
        .collect()
}

/// (max abs difference, values that differ).
fn diff(a: &[u8], b: &[u8]) -> (u8, usize) {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold((0, 0), |(m, n), (x, y)| {
        (m.max(x.abs_diff(*y)), n + usize::from(x != y))
    })
}

fn assert_close(got: &[u8], want: &[u8], what: &str) {
    let (max, n) = diff(got, want);
    assert!(
        max <= 2 && n * 100 <= got.len(),
        "{what}: {n} of {} values differ, by up to {max}",
        got.len()
    );
}

#[test]
fn sampling_matches_transformers() {
    let expected = read_json(&fixtures().join("expected.json"));
    for (n, v) in expected["indices"].as_object().unwrap() {
        let n: usize = n.parse().unwrap();
        for (key, sampling) in [
            ("uniform", Sampling::Uniform),
            ("linspace", Sampling::Linspace),
        ] {
            let want: Vec<usize> = serde_json::from_value(v[key].clone()).unwrap();
            assert_eq!(sample_indices(24, n, sampling).unwrap(), want, "{key} {n}");
        }
    }
}

#[test]
fn probe_counts_frames_without_a_header_count() {
    let mp4 = probe(clip("clip.mp4")).unwrap();
    assert_eq!(
        (mp4.frames, mp4.header_frames, mp4.width, mp4.height),
        (24, Some(24), 64, 48)
    );
    assert_eq!(mp4.codec, "h264");
    assert_eq!(mp4.fps, Some(24.0));
    // WebM has no frame count in its header; VP9's hidden alt-ref frames share a packet.
    let webm = probe(clip("clip.webm")).unwrap();
    assert_eq!(
        (webm.frames, webm.header_frames, webm.codec.as_str()),
        (24, None, "vp9")
    );
}

#[test]
fn every_h264_frame_matches_pyav() {
    let want = reference("mp4");
    let all: Vec<usize> = (0..24).collect();
    let got = read_frames_at(clip("clip.mp4"), &all).unwrap();
    assert_eq!(got.len(), 24);
    for (i, img) in got.iter().enumerate() {
        assert_eq!(img.dimensions(), (64, 48));
        assert_close(img.as_raw(), &frame(&want, i), &format!("mp4 frame {i}"));
        // The right frame, not a neighbour: the blue level steps by 10 per frame.
        for j in [i.wrapping_sub(1), i + 1] {
            if j < 24 {
                let (max, _) = diff(img.as_raw(), &frame(&want, j));
                assert!(max >= 8, "frame {i} is as close to reference frame {j}");
            }
        }
    }
    // Any order, repeats.
    let some = read_frames_at(clip("clip.mp4"), &[5, 1, 5, 23]).unwrap();
    for (img, i) in some.iter().zip([5, 1, 5, 23]) {
        assert_eq!(img.as_raw(), got[i].as_raw());
    }
    let e = read_frames_at(clip("clip.mp4"), &[3, 24])
        .unwrap_err()
        .to_string();
    assert!(e.contains("clip.mp4"), "{e}");
}

#[test]
fn sampled_frames_match_pyav() {
    // clip.mp4, HF's sampler and the linspace one.
    let all = reference("mp4");
    for sampling in [Sampling::Uniform, Sampling::Linspace] {
        for n in [1, 4, 5, 8, 24] {
            let f = read_frames_with(clip("clip.mp4"), n, sampling).unwrap();
            assert_eq!(f.total, 24);
            assert_eq!(f.indices, sample_indices(24, n, sampling).unwrap());
            for (img, &i) in f.images.iter().zip(&f.indices) {
                assert_close(
                    img.as_raw(),
                    &frame(&all, i),
                    &format!("{sampling:?} {n}: frame {i}"),
                );
            }
        }
    }
    // clip.webm: the frames HF picks for 8.
    let want = reference("webm");
    let idx: Vec<usize> = reference("webm_indices")
        .data
        .iter()
        .map(|&i| i as usize)
        .collect();
    let got = read_frames_with(clip("clip.webm"), 8, Sampling::Uniform).unwrap();
    assert_eq!(got.indices, idx);
    for (k, img) in got.images.iter().enumerate() {
        assert_close(
            img.as_raw(),
            &frame(&want, k),
            &format!("webm frame {}", idx[k]),
        );
    }
    // read_frames is the uniform sampler.
    let plain = read_frames(clip("clip.webm"), 8).unwrap();
    assert!(
        plain
            .iter()
            .zip(&got.images)
            .all(|(a, b)| a.as_raw() == b.as_raw())
    );
}

#[test]
fn tagged_bt709_full_range_follows_the_tags() {
    let want = reference("tagged");
    let got = read_frames(clip("tagged.mp4"), 4).unwrap();
    assert_eq!(got.len(), 4);
    for (i, img) in got.iter().enumerate() {
        assert_eq!(img.dimensions(), (64, 48));
        assert_close(img.as_raw(), &frame(&want, i), &format!("tagged frame {i}"));
    }
}

#[test]
fn frames_are_bit_identical() {
    // The measured exactness (see the module docs); the other tests allow two levels.
    let all: Vec<usize> = (0..24).collect();
    let want = reference("mp4");
    for (i, img) in read_frames_at(clip("clip.mp4"), &all)
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_eq!(
            diff(img.as_raw(), &frame(&want, i)),
            (0, 0),
            "mp4 frame {i}"
        );
    }
    let want = reference("webm");
    for (k, img) in read_frames(clip("clip.webm"), 8)
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_eq!(diff(img.as_raw(), &frame(&want, k)), (0, 0), "webm {k}");
    }
    let want = reference("tagged");
    for (i, img) in read_frames(clip("tagged.mp4"), 4)
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_eq!(diff(img.as_raw(), &frame(&want, i)), (0, 0), "tagged {i}");
    }
}

/// A 0.1 s mono 8 kHz WAV: a file FFmpeg opens, with no video stream.
fn wav(path: &Path) {
    let samples = 800u32;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + samples * 2).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&8000u32.to_le_bytes());
    b.extend_from_slice(&16000u32.to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&(samples * 2).to_le_bytes());
    for i in 0..samples {
        b.extend_from_slice(&(((i % 40) as i16 - 20) * 500).to_le_bytes());
    }
    std::fs::write(path, b).unwrap();
}

/// The error's message with its causes.
fn message(e: &lmms_core::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(c) = source {
        s.push_str(": ");
        s.push_str(&c.to_string());
        source = c.source();
    }
    s
}

#[test]
fn errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("missing.mp4");
    let e = message(&read_frames(&missing, 4).unwrap_err());
    assert!(
        e.contains("missing.mp4") && e.contains("No such file"),
        "{e}"
    );

    let text = tmp.path().join("notes.mp4");
    std::fs::write(&text, "this is not a video, only some text\n".repeat(20)).unwrap();
    let e = message(&read_frames(&text, 4).unwrap_err());
    assert!(
        e.contains("notes.mp4") && e.contains("not a video FFmpeg can read"),
        "{e}"
    );

    let audio = tmp.path().join("sound.wav");
    wav(&audio);
    let e = message(&read_frames(&audio, 4).unwrap_err());
    assert!(
        e.contains("sound.wav") && e.contains("has no video stream"),
        "{e}"
    );
    let e = message(&probe(&audio).unwrap_err());
    assert!(e.contains("has no video stream"), "{e}");

    let e = message(&read_frames(clip("clip.mp4"), 25).unwrap_err());
    assert!(
        e.contains("clip.mp4") && e.contains("has 24 frames, fewer than the 25 asked"),
        "{e}"
    );
    let e = message(&read_frames(clip("clip.mp4"), 0).unwrap_err());
    assert!(e.contains("0 frames asked"), "{e}");

    let e = message(&read_frames(tmp.path(), 4).unwrap_err());
    assert!(e.contains("is a directory"), "{e}");

    // A clip cut short: its packets say more frames than it decodes to, or it has fewer
    // packets; either way it reads what is there, or names the file.
    let bytes = std::fs::read(clip("clip.webm")).unwrap();
    let cut = tmp.path().join("cut.webm");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    match read_frames_with(&cut, 4, Sampling::Uniform) {
        Ok(f) => {
            assert!(f.total < 24 && f.total >= 4, "{}", f.total);
            assert_eq!(f.images.len(), 4);
        }
        Err(e) => assert!(message(&e).contains("cut.webm"), "{}", message(&e)),
    }
}

fn expected(variant: &str) -> TensorFile {
    TensorFile::open(fixtures().join(variant).join("expected.safetensors")).unwrap()
}

/// `pixel_values_videos` of the fixture batch: clip.mp4, clip.webm, clip.mp4, clip.webm,
/// 4 frames each at HF's indices [0, 6, 12, 18].
const BATCH_VIDEOS: [&str; 4] = ["clip.mp4", "clip.webm", "clip.mp4", "clip.webm"];

#[test]
fn video_processors_match_hf_on_the_same_frames() {
    let mp4 = reference("mp4");
    let webm = reference("webm");
    let webm_idx: Vec<i64> = reference("webm_indices").data;
    let ref_frame = |name: &str, i: usize| -> image::RgbImage {
        let (t, k) = if name == "clip.mp4" {
            (&mp4, i)
        } else {
            (
                &webm,
                webm_idx.iter().position(|&j| j as usize == i).unwrap(),
            )
        };
        image::RgbImage::from_raw(64, 48, frame(t, k)).unwrap()
    };
    for (variant, kind, hw) in [
        ("llava-next-video", VideoProcessorKind::LlavaNextVideo, 32),
        ("llava-onevision", VideoProcessorKind::LlavaOnevision, 40),
    ] {
        let p = VideoProcessor::from_model_dir(fixtures().join(variant), kind).unwrap();
        assert_eq!(p.kind, kind);
        assert_eq!(p.output_size(48, 64), (hw, hw));
        let want = expected(variant).f32("pixel_values_videos").unwrap();
        assert_eq!(want.shape, [4, 4, 3, hw, hw]);
        let per_video = 4 * 3 * hw * hw;
        for (v, name) in BATCH_VIDEOS.iter().enumerate() {
            let frames: Vec<_> = [0, 6, 12, 18].iter().map(|&i| ref_frame(name, i)).collect();
            let got = p.preprocess(&frames).unwrap();
            assert_eq!(got.shape, [4, 3, hw, hw]);
            let w = &want.data[v * per_video..(v + 1) * per_video];
            let differ = got
                .data
                .iter()
                .zip(w)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(differ, 0, "{variant}: video {v} ({name})");
        }
    }
}

#[test]
fn decode_and_process_matches_hf() {
    // The whole path: our decoder + processor against HF's decoder (PyAV) + Pillow processor.
    for variant in ["llava-next-video", "llava-onevision"] {
        let kind = if variant == "llava-next-video" {
            VideoProcessorKind::LlavaNextVideo
        } else {
            VideoProcessorKind::LlavaOnevision
        };
        let p = VideoProcessor::from_model_dir(fixtures().join(variant), kind).unwrap();
        let want = expected(variant).f32("pixel_values_videos").unwrap();
        let per_video = want.data.len() / 4;
        for (v, name) in BATCH_VIDEOS.iter().enumerate() {
            let got = p.preprocess(&read_frames(clip(name), 4).unwrap()).unwrap();
            let w = &want.data[v * per_video..(v + 1) * per_video];
            let max = got
                .data
                .iter()
                .zip(w)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            // Bit-identical frames give identical pixels; allow one level (1 / 255 / std).
            assert!(max <= 1.0 / 255.0 / 0.26 + 1e-6, "{variant} {name}: {max}");
        }
    }
}

#[test]
fn video_processor_lookup_follows_transformers() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // No config at all.
    let e = VideoProcessor::from_model_dir(d, VideoProcessorKind::LlavaNextVideo)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no video processor config"), "{e}");
    // preprocessor_config.json only: the image processor's settings, the model's class.
    std::fs::write(
        d.join("preprocessor_config.json"),
        r#"{"image_processor_type": "LlavaNextImageProcessor", "size": {"shortest_edge": 336},
            "crop_size": {"height": 336, "width": 336}, "do_center_crop": true,
            "image_grid_pinpoints": [[336, 672]]}"#,
    )
    .unwrap();
    let p = VideoProcessor::from_model_dir(d, VideoProcessorKind::LlavaNextVideo).unwrap();
    assert_eq!(p.output_size(480, 640), (336, 336));
    assert!(p.source.ends_with("preprocessor_config.json"));
    // video_preprocessor_config.json wins over it.
    std::fs::write(
        d.join("video_preprocessor_config.json"),
        r#"{"video_processor_type": "LlavaOnevisionVideoProcessor", "size": {"height": 64, "width": 48}}"#,
    )
    .unwrap();
    let p = VideoProcessor::from_model_dir(d, VideoProcessorKind::LlavaNextVideo).unwrap();
    assert_eq!(p.kind, VideoProcessorKind::LlavaOnevision);
    assert_eq!(p.output_size(480, 640), (64, 48));
    // processor_config.json's `video_processor` wins over both.
    std::fs::write(
        d.join("processor_config.json"),
        r#"{"video_processor": {"video_processor_type": "LlavaNextVideoVideoProcessor"}}"#,
    )
    .unwrap();
    let p = VideoProcessor::from_model_dir(d, VideoProcessorKind::LlavaOnevision).unwrap();
    assert_eq!(p.kind, VideoProcessorKind::LlavaNextVideo);
    assert_eq!(p.output_size(480, 640), (224, 224));
}

/// Decoding speed, a benchmark run by hand on a clip of your choice, e.g. the 640x480 H.264
/// clip of 240 frames that `tools/fixtures/video.py --bench` writes (and times PyAV on):
/// `LMMS_BENCH_CLIP=/tmp/lmms-video-bench.mp4 cargo test --release -p lmms-collators --test
/// video -- --ignored --nocapture speed`.
#[test]
#[ignore = "benchmark"]
fn speed() {
    let Some(path) = std::env::var_os("LMMS_BENCH_CLIP").map(PathBuf::from) else {
        eprintln!("set LMMS_BENCH_CLIP to a video file");
        return;
    };
    let info = probe(&path).unwrap();
    // Best of a few runs: the machine may be busy.
    let best = |rounds: usize, f: &dyn Fn()| {
        (0..rounds)
            .map(|_| {
                let t = std::time::Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    let all: Vec<usize> = (0..info.frames).collect();
    let dt = best(3, &|| {
        read_frames_at(&path, &all).unwrap();
    });
    println!(
        "{} frames {}x{} ({}) decoded to RGB24 in {dt:.3}s = {:.0} frames/s",
        info.frames,
        info.width,
        info.height,
        info.codec,
        info.frames as f64 / dt
    );
    for n in [8, 32] {
        let dt = best(10, &|| {
            read_frames(&path, n).unwrap();
        });
        println!("read_frames({n}) of {}: {:.1} ms", info.frames, dt * 1000.0);
    }
    let dt = best(10, &|| {
        probe(&path).unwrap();
    });
    println!("probe (open + packet count): {:.1} ms", dt * 1000.0);
}
