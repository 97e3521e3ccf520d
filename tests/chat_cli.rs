//! `lmms chat` with vision-language models: the tiny LLaVA and Qwen2-VL answer about an image
//! given with `--image` (the prompt grows by the image's tokens), a conversation goes on over
//! several messages, and bad input is refused with a message.

use assert_cmd::Command;

mod common;
use common::root;

fn chat(extra: &[&str]) -> std::process::Output {
    chat_with("tiny-llava", extra)
}

fn chat_with(model: &str, extra: &[&str]) -> std::process::Output {
    Command::cargo_bin("lmms")
        .unwrap()
        .arg("chat")
        .arg("--model")
        .arg(root().join("example_data").join(model))
        .args(["--max-new-tokens", "6"])
        .args(extra)
        .output()
        .unwrap()
}

/// The prompt length `chat` reports on stderr.
fn prompt_tokens(out: &std::process::Output) -> usize {
    let err = String::from_utf8_lossy(&out.stderr);
    let tail = err
        .split("prompt ")
        .nth(1)
        .unwrap_or_else(|| panic!("no prompt size in {err}"));
    tail.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn answers_about_an_image() {
    let image = root().join("example_data/images/red_square.png");
    assert!(image.is_file());
    let with = chat(&["--image", image.to_str().unwrap(), "-m", "What is this?"]);
    assert!(
        with.status.success(),
        "{}",
        String::from_utf8_lossy(&with.stderr)
    );
    let stdout = String::from_utf8_lossy(&with.stdout);
    assert!(stdout.contains("user: What is this?"), "{stdout}");
    assert!(stdout.contains("assistant: "), "{stdout}");
    let without = chat(&["-m", "What is this?"]);
    assert!(without.status.success());
    // The image becomes its tokens in the prompt (the tiny CLIP gives one token per patch).
    assert!(
        prompt_tokens(&with) > prompt_tokens(&without),
        "{} vs {}",
        prompt_tokens(&with),
        prompt_tokens(&without)
    );
}

#[test]
fn a_missing_image_is_named() {
    let out = chat(&["--image", "no/such.png", "-m", "hi"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no/such.png"), "{err}");
}

#[test]
fn qwen2_vl_answers_about_an_image_over_two_turns() {
    let image = root().join("example_data/images/cat.png");
    let out = chat_with(
        "tiny-qwen2-vl",
        &[
            "--image",
            image.to_str().unwrap(),
            "-m",
            "What is this?",
            "-m",
            "And the colour?",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("assistant: ").count(), 2, "{stdout}");
    let text_only = chat_with("tiny-qwen2-vl", &["-m", "What is this?"]);
    assert!(text_only.status.success());
    assert!(prompt_tokens(&out) > prompt_tokens(&text_only));
}

/// The families whose image prompts are not a single placeholder run: XComposer2 (image rows
/// with Partial-LoRA, then text), Qwen-VL (`<img>` spans) and Llama-3.2-Vision (one `<|image|>`
/// token, tiles seen through cross-attention); all answer with the KV cache.
#[test]
fn xcomposer2_qwen_vl_and_mllama_answer_about_an_image() {
    let image = root().join("example_data/images/cat.png");
    for model in ["tiny-xcomposer2", "tiny-qwen-vl", "tiny-mllama"] {
        let with = chat_with(
            model,
            &["--image", image.to_str().unwrap(), "-m", "What is this?"],
        );
        let err = String::from_utf8_lossy(&with.stderr);
        assert!(with.status.success(), "{model}: {err}");
        assert!(err.contains("tokens/s"), "{model}: {err}");
        let without = chat_with(model, &["-m", "What is this?"]);
        assert!(without.status.success(), "{model}");
        // Mllama's image is one token whatever its size (its template adds a system block
        // only to image-less chats); the others' prompts grow by the image.
        if model != "tiny-mllama" {
            assert!(
                prompt_tokens(&with) > prompt_tokens(&without),
                "{model}: {} vs {}",
                prompt_tokens(&with),
                prompt_tokens(&without)
            );
        }
        // Greedy decoding is deterministic.
        let again = chat_with(
            model,
            &["--image", image.to_str().unwrap(), "-m", "What is this?"],
        );
        assert_eq!(with.stdout, again.stdout, "{model}");
    }
}
