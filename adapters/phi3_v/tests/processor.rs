//! The HD image processor against the reference processor's output for the fixture image
//! (`processor_expected.safetensors`: `pixel_values`, `image_sizes`, `num_img_tokens` of
//! `Phi3VImageProcessor` with the fixture's `preprocessor_config.json`, num_crops 4).

use lmms_collators::image::load_image;
use lmms_collators::image::phi3_v::Phi3VImageProcessor;
use lmms_core::tensor_file::TensorFile;
use std::path::PathBuf;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/phi3-v")
}

#[test]
fn pixel_values_sizes_and_token_counts_match_the_reference() {
    let dir = fixture();
    let processor = Phi3VImageProcessor::from_model_dir(&dir).unwrap();
    assert_eq!(processor.num_crops, 4);
    let img = load_image(dir.join("image.png")).unwrap();
    let out = processor.process(&img);
    let expected = TensorFile::open(dir.join("processor_expected.safetensors")).unwrap();
    let pixels = expected.f32("pixel_values").unwrap();
    assert_eq!(pixels.shape, vec![1, 5, 3, 336, 336]);
    assert_eq!(out.pixels.len(), pixels.data.len());
    let crop = 3 * 336 * 336;
    let mut worst = 0f32;
    for (slot, (a, b)) in out
        .pixels
        .chunks(crop)
        .zip(pixels.data.chunks(crop))
        .enumerate()
    {
        let d = a
            .iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        println!("slot {slot}: max abs diff {d:e}");
        worst = worst.max(d);
    }
    // The crops are exact; the global image (PyTorch bicubic) within float32 rounding.
    assert!(worst < 2e-6, "max abs diff {worst}");
    let sizes = expected.i64("image_sizes").unwrap();
    assert_eq!(sizes.data, vec![out.size.0 as i64, out.size.1 as i64]);
    let tokens = expected.i64("num_img_tokens").unwrap();
    assert_eq!(tokens.data, vec![out.num_img_tokens as i64]);
    assert_eq!(
        processor.hd_size(img.width() as usize, img.height() as usize),
        out.size
    );
}
