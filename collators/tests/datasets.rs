//! Dataset formats, the data.txt mixture, and the errors of broken samples.

use lmms_collators::dataset::{
    CheckReport, Dataset, DatasetOptions, Format, MediaCheck, RoleMap, check_samples, load_samples,
    parse_mixture,
};
use lmms_core::Error;
use lmms_core::data::{Role, Sample};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../example_data")
        .join(name)
}

fn opts() -> DatasetOptions {
    DatasetOptions::default()
}

#[test]
fn llava_json_loads_every_kind_of_sample() {
    let path = example("llava_dataset.json");
    let samples = load_samples(&path, &opts()).unwrap();
    assert_eq!(samples.len(), 6);
    for (i, s) in samples.iter().enumerate() {
        assert_eq!(s.origin.file, path);
        assert_eq!(s.origin.index, i);
        for (k, t) in s.turns.iter().enumerate() {
            let want = if k % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            };
            assert_eq!(t.role, want);
        }
    }
    // Single image, resolved against the data file's folder.
    assert_eq!(samples[0].images, vec![example("images/red_square.png")]);
    assert!(samples[0].turns[0].content.starts_with("<image>\n"));
    // system_prompt, multi-turn.
    assert_eq!(
        samples[1].system.as_deref(),
        Some("You are a careful assistant. Answer briefly.")
    );
    assert_eq!(samples[1].turns.len(), 4);
    // Text-only.
    assert!(samples[2].images.is_empty() && samples[2].videos.is_empty());
    assert_eq!(samples[2].system, None);
    // Two images, in order.
    assert_eq!(
        samples[3].images,
        vec![example("images/bright.png"), example("images/dark.png")]
    );
    // A leading system turn becomes the system prompt; user/assistant roles.
    assert_eq!(
        samples[4].system.as_deref(),
        Some("You read charts for a living.")
    );
    assert_eq!(samples[4].turns.len(), 2);
}

#[test]
fn jsonl_and_json_give_the_same_samples() {
    let a = load_samples(example("llava_dataset.json"), &opts()).unwrap();
    let b = load_samples(example("llava_dataset.jsonl"), &opts()).unwrap();
    let strip = |s: &Sample| (s.system.clone(), s.turns.clone(), s.images.clone());
    assert_eq!(
        a.iter().map(strip).collect::<Vec<_>>(),
        b.iter().map(strip).collect::<Vec<_>>()
    );
    assert_eq!(b[5].origin.index, 5);
}

#[test]
fn image_folder_and_absolute_paths() {
    let dir = tempfile::tempdir().unwrap();
    let images = dir.path().join("imgs");
    std::fs::create_dir(&images).unwrap();
    std::fs::copy(example("images/cat.png"), images.join("cat.png")).unwrap();
    let abs = example("images/dark.png").canonicalize().unwrap();
    let data = dir.path().join("d.json");
    std::fs::write(
        &data,
        serde_json::json!([{
            "image": ["cat.png", abs.to_str().unwrap()],
            "video": "clip.mp4",
            "conversations": [
                {"from": "human", "value": "<image><image><video> hi"},
                {"from": "gpt", "value": "ok"}
            ]
        }])
        .to_string(),
    )
    .unwrap();
    std::fs::write(dir.path().join("clip.mp4"), b"not really a video").unwrap();
    let options = DatasetOptions {
        image_folder: Some(images.clone()),
        video_folder: Some(dir.path().to_path_buf()),
        media_check: MediaCheck::Decode,
        ..opts()
    };
    let s = load_samples(&data, &options).unwrap();
    assert_eq!(s[0].images, vec![images.join("cat.png"), abs]);
    assert_eq!(s[0].videos, vec![dir.path().join("clip.mp4")]);
}

#[test]
fn xcomposer2_placeholders_become_image() {
    let samples = load_samples(example("xcomposer_dataset.json"), &opts()).unwrap();
    assert_eq!(samples.len(), 3);
    assert_eq!(
        samples[1].turns[0].content,
        "Image1 <image>; Image2 <image>; What is different between the two images?"
    );
    assert_eq!(samples[1].images.len(), 2);
    assert!(samples[2].images.is_empty());
    // With Format::Llava, <ImageHere> is plain text: the image count no longer matches.
    let err = load_samples(
        example("xcomposer_dataset.json"),
        &DatasetOptions {
            format: Format::Llava,
            ..opts()
        },
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("sample 0: 0 `<image>` placeholders in the text but 1 image"),
        "{err}"
    );
}

#[test]
fn custom_role_names() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d.jsonl");
    std::fs::write(
        &data,
        "{\"conversations\": [{\"from\": \"Q\", \"value\": \"a\"}, {\"from\": \"A\", \"value\": \"b\"}]}\n",
    )
    .unwrap();
    let err = load_samples(&data, &opts()).unwrap_err().to_string();
    assert!(
        err.contains("d.jsonl: sample 0: turn 0: unknown role `Q`"),
        "{err}"
    );
    let roles = RoleMap {
        user: vec!["q".into()],
        assistant: vec!["a".into()],
        ..Default::default()
    };
    let s = load_samples(&data, &DatasetOptions { roles, ..opts() }).unwrap();
    assert_eq!(s[0].turns[1].role, Role::Assistant);
}

fn count_by_file(samples: &[&Sample]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for s in samples {
        *m.entry(
            s.origin
                .file
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        )
        .or_insert(0) += 1;
    }
    m
}

#[test]
fn mixture_takes_exact_counts_per_epoch() {
    let mix = example("data.txt");
    let entries = parse_mixture(&mix).unwrap();
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].per_epoch, Some(10));
    assert_eq!(entries[1].per_epoch, Some(2));
    assert_eq!(entries[1].line, 5);

    let ds = Dataset::load(&mix, &opts()).unwrap();
    assert_eq!(ds.epoch_len(), 12);
    for epoch in 0..5 {
        let samples = ds.epoch(epoch, 42);
        assert_eq!(samples.len(), 12);
        let counts = count_by_file(&samples);
        assert_eq!(counts["llava_dataset.json"], 10);
        assert_eq!(counts["xcomposer_dataset.json"], 2);
        // Up-sampling: every one of the 6 once, 4 of them twice.
        let mut per_index = [0; 6];
        for s in samples
            .iter()
            .filter(|s| s.origin.file.ends_with("llava_dataset.json"))
        {
            per_index[s.origin.index] += 1;
        }
        assert!(per_index.iter().all(|&n| n == 1 || n == 2), "{per_index:?}");
        assert_eq!(per_index.iter().filter(|&&n| n == 2).count(), 4);
        // Down-sampling: 2 distinct of 3.
        let mut x: Vec<usize> = samples
            .iter()
            .filter(|s| s.origin.file.ends_with("xcomposer_dataset.json"))
            .map(|s| s.origin.index)
            .collect();
        x.dedup();
        assert_eq!(x.len(), 2);
        // Seeded: the same epoch and seed give the same draw.
        let again: Vec<_> = ds.epoch(epoch, 42).iter().map(|s| &s.origin).collect();
        let first: Vec<_> = samples.iter().map(|s| &s.origin).collect();
        assert_eq!(first, again);
        let shuffled = ds.shuffled_epoch(epoch, 42);
        assert_eq!(count_by_file(&shuffled), counts);
    }
    // Epochs draw differently.
    let draws: std::collections::HashSet<Vec<usize>> = (0..10)
        .map(|e| ds.epoch(e, 42).iter().map(|s| s.origin.index).collect())
        .collect();
    assert!(draws.len() > 1);

    // A plain file: every sample once.
    let plain = Dataset::load(example("llava_dataset.json"), &opts()).unwrap();
    assert_eq!(plain.epoch(3, 1).len(), 6);
}

#[test]
fn mixture_errors_name_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let mix = dir.path().join("data.txt");
    for (content, want) in [
        (
            "a.json\n",
            "line 1: expected `<json path> <samples in thousands>`",
        ),
        ("a.json lots\n", "line 1: `lots` is not a number"),
        (
            "# c\n\na.json 0.0205\n",
            "line 3: `0.0205` thousand is 20.5 samples",
        ),
        ("", "no data files listed"),
    ] {
        std::fs::write(&mix, content).unwrap();
        let err = parse_mixture(&mix).unwrap_err().to_string();
        assert!(err.contains(want) && err.contains("data.txt"), "{err}");
    }
    std::fs::write(&mix, "missing.json 0.01\n").unwrap();
    let err = Dataset::load(&mix, &opts()).unwrap_err().to_string();
    assert!(err.contains("missing.json"), "{err}");
}

/// One file with every kind of broken sample: loading stops at the first, checking finds all.
#[test]
fn every_error_kind_is_named_and_check_collects_all() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::copy(example("images/cat.png"), d.join("ok.png")).unwrap();
    std::fs::write(d.join("broken.png"), b"\x89PNG\r\n\x1a\nnot a png at all").unwrap();
    let ok_turns = serde_json::json!([
        {"from": "human", "value": "<image> hi"}, {"from": "gpt", "value": "hello"}
    ]);
    let samples = serde_json::json!([
        {"image": "ok.png", "conversations": ok_turns},                        // 0 fine
        {"image": "ok.png"},                                                    // 1
        {"image": "gone2.png", "conversations": [
            {"from": "human", "value": "<image> hi"}, {"from": "bot", "value": "x"}]},   // 2
        {"image": "ok.png", "conversations": [
            {"from": "human", "value": "<image> hi"}, {"from": "human", "value": "x"}]}, // 3
        {"image": "ok.png", "conversations": [
            {"from": "human", "value": "<image> hi"}, {"from": "gpt", "value": "  "}]},  // 4
        {"image": ["ok.png", "ok.png"], "conversations": ok_turns},             // 5
        {"image": "gone.png", "conversations": ok_turns},                       // 6
        {"image": "broken.png", "conversations": ok_turns},                     // 7
        {"video": "gone.mp4", "conversations": [
            {"from": "human", "value": "<video> hi"}, {"from": "gpt", "value": "x"}]},   // 8
        {"conversations": [{"from": "human", "value": "hi"}]},                  // 9
        {"conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "<image>"}],
         "system_prompt": 3},                                                   // 10
        {"image": "ok.png", "conversations": ok_turns}                          // 11 fine
    ]);
    let data = d.join("train.json");
    std::fs::write(&data, serde_json::to_string_pretty(&samples).unwrap()).unwrap();
    let options = DatasetOptions {
        media_check: MediaCheck::Decode,
        ..opts()
    };

    let err = load_samples(&data, &options).unwrap_err();
    let Error::Sample {
        file,
        index,
        reason,
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!((file, *index), (&data, 1));
    assert!(reason.contains("missing `conversations`"), "{reason}");

    let check = check_samples(&data, &options);
    assert_eq!(check.total, 12);
    assert_eq!(check.samples.len(), 2);
    let messages: Vec<String> = check.problems.iter().map(|e| e.to_string()).collect();
    let expect = [
        (1, "missing `conversations`"),
        (
            2,
            "turn 1: unknown role `bot` (known roles: human, user, gpt, assistant, system)",
        ),
        // A broken sample's media are checked too.
        (2, "gone2.png not found"),
        (3, "turn 1: expected an assistant turn, found user"),
        (4, "turn 1: empty assistant turn"),
        (
            5,
            "1 `<image>` or `<ImageHere>` placeholder in the text but 2 images in `image`",
        ),
        (6, "image file"),
        (7, "cannot be decoded"),
        (8, "video file"),
        (9, "turn 0: the conversation ends with a user turn"),
        (10, "`system_prompt` must be a string, found a number"),
        (10, "turn 1: a media placeholder in an assistant reply"),
        (
            10,
            "1 `<image>` or `<ImageHere>` placeholder in the text but 0 images",
        ),
    ];
    for (index, want) in expect {
        let prefix = format!("{}: sample {index}: ", data.display());
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with(&prefix) && m.contains(want)),
            "no `{prefix}...{want}` in:\n{}",
            messages.join("\n")
        );
    }
    assert!(messages[6].contains("gone.png") && messages[6].contains("not found"));
    assert_eq!(messages.len(), expect.len(), "{}", messages.join("\n"));
    // In sample order.
    let indices: Vec<usize> = check
        .problems
        .iter()
        .map(|e| match e {
            Error::Sample { index, .. } => *index,
            _ => usize::MAX,
        })
        .collect();
    assert!(indices.windows(2).all(|w| w[0] <= w[1]));
    // Dataset::check: the same, with totals and a count of broken samples.
    let report: CheckReport = Dataset::check(&data, &options);
    assert_eq!(report.total_samples(), 12);
    assert_eq!(report.broken_samples(), 10);
    assert_eq!(report.dataset.samples().count(), 2);
}

#[test]
fn bad_json_names_the_sample_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bad.json");
    let good =
        r#"{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt", "value": "b"}]}"#;
    std::fs::write(
        &data,
        format!("[\n{good},\n{good},\n{{\"conversations\": [}}\n]"),
    )
    .unwrap();
    let err = load_samples(&data, &opts()).unwrap_err().to_string();
    assert!(
        err.contains("bad.json: sample 2: invalid JSON at line 4, column"),
        "{err}"
    );
    // check keeps the samples before the error.
    let check = check_samples(&data, &opts());
    assert_eq!(check.samples.len(), 2);
    assert_eq!(check.total, 3);
    assert_eq!(check.problems.len(), 1);

    // JSONL: each line on its own; the index is the line's position.
    let data = dir.path().join("bad.jsonl");
    std::fs::write(&data, format!("{good}\n\n{{oops\n{good}\n[1]\n")).unwrap();
    let check = check_samples(&data, &opts());
    let messages: Vec<String> = check.problems.iter().map(|e| e.to_string()).collect();
    assert_eq!(check.samples.len(), 2);
    assert_eq!(check.samples[1].origin.index, 3);
    assert!(
        messages[0].contains("bad.jsonl: sample 2: invalid JSON on line 3, column 2"),
        "{messages:?}"
    );
    assert!(
        messages[1].contains("sample 4: expected a JSON object, found a list"),
        "{messages:?}"
    );

    // Not a dataset at all.
    let data = dir.path().join("x.json");
    std::fs::write(&data, "42").unwrap();
    let err = load_samples(&data, &opts()).unwrap_err().to_string();
    assert!(
        err.contains("x.json") && err.contains("expected a JSON list"),
        "{err}"
    );
    std::fs::write(&data, "[]").unwrap();
    let err = load_samples(&data, &opts()).unwrap_err().to_string();
    assert!(err.contains("no samples"), "{err}");
}

#[test]
fn example_data_checks_clean() {
    for name in [
        "llava_dataset.json",
        "llava_dataset.jsonl",
        "xcomposer_dataset.json",
        "data.txt",
        "alpaca_dataset.json",
        "openai_messages.jsonl",
    ] {
        let report = Dataset::check(
            example(name),
            &DatasetOptions {
                media_check: MediaCheck::Decode,
                ..opts()
            },
        );
        assert!(report.is_ok(), "{name}: {:?}", report.problems);
    }
}

#[test]
fn alpaca_samples_become_conversations() {
    let samples = load_samples(example("alpaca_dataset.json"), &opts()).unwrap();
    assert_eq!(samples.len(), 3);
    let texts = |s: &Sample| -> Vec<(Role, String)> {
        s.turns
            .iter()
            .map(|t| (t.role, t.content.clone()))
            .collect()
    };
    // An empty `input` adds nothing; a non-empty one follows the instruction on a new line.
    assert_eq!(
        texts(&samples[0])[0],
        (
            Role::User,
            "Give three tips for staying healthy.".to_string()
        )
    );
    assert_eq!(
        texts(&samples[1]),
        vec![
            (
                Role::User,
                "Translate the sentence into French.\nThe cat sleeps on the sofa.".to_string()
            ),
            (Role::Assistant, "Le chat dort sur le canapé.".to_string()),
        ]
    );
    // `history` pairs come first; `system` is the system prompt.
    assert_eq!(
        samples[2].system.as_deref(),
        Some("You are a terse assistant.")
    );
    assert_eq!(
        texts(&samples[2]),
        vec![
            (Role::User, "What is 1 + 1?".to_string()),
            (Role::Assistant, "2.".to_string()),
            (Role::User, "And what is 2 + 3?".to_string()),
            (Role::Assistant, "5.".to_string()),
        ]
    );
    assert!(samples.iter().all(|s| s.images.is_empty()));
}

#[test]
fn openai_messages_with_content_parts() {
    let samples = load_samples(example("openai_messages.jsonl"), &opts()).unwrap();
    assert_eq!(samples.len(), 3);
    assert_eq!(
        samples[0].system.as_deref(),
        Some("You are a helpful assistant.")
    );
    assert_eq!(samples[1].turns[0].content, "Write a haiku about rain.");
    assert_eq!(samples[2].turns.len(), 4);
}

#[test]
fn broken_alpaca_and_parts_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("bad.jsonl");
    std::fs::write(
        &data,
        concat!(
            "{\"instruction\": \"no output\"}\n",
            "{\"instruction\": \"x\", \"output\": 3}\n",
            "{\"instruction\": \"x\", \"output\": \"y\", \"history\": [[\"only one\"]]}\n",
            "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"audio\"}]}, ",
            "{\"role\": \"assistant\", \"content\": \"a\"}]}\n",
        ),
    )
    .unwrap();
    let report = check_samples(&data, &opts());
    let msgs: Vec<String> = report.problems.iter().map(|e| e.to_string()).collect();
    assert_eq!(msgs.len(), 4, "{msgs:#?}");
    assert!(
        msgs[0].contains("sample 0") && msgs[0].contains("without `output`"),
        "{msgs:#?}"
    );
    assert!(
        msgs[1].contains("`output` must be a string, found a number"),
        "{msgs:#?}"
    );
    assert!(msgs[2].contains("`history` item 0"), "{msgs:#?}");
    assert!(msgs[3].contains("unknown type `audio`"), "{msgs:#?}");
    for m in &msgs {
        assert!(m.contains("bad.jsonl"), "{m}");
    }
}
