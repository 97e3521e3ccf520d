//! Chat templates, tokenization and label masking against the references that transformers
//! computed in `tests/fixtures/collate/` (`tools/fixtures/collate.py`).

use lmms_collators::dataset::{DatasetOptions, MediaCheck, load_samples};
use lmms_collators::template::{
    BUILTIN_TEMPLATES, ChatTemplate, ContentStyle, SpecialTokens, find_chat_template,
    sample_messages,
};
use lmms_collators::text::{
    EncodeOptions, EncodeOutcome, IGNORE_INDEX, LabelMode, MediaKind, OverLength, TextTokenizer,
    encode_conversation, encode_conversation_with, pad_batch,
};
use lmms_core::data::Sample;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/collate")
}

fn samples() -> Vec<Sample> {
    let options = DatasetOptions {
        media_check: MediaCheck::None,
        ..Default::default()
    };
    load_samples(fixtures().join("samples.json"), &options).unwrap()
}

fn read_json(name: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fixtures().join(name)).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load(dir: &str) -> (TextTokenizer, ChatTemplate) {
    let dir = fixtures().join(dir);
    let tok = TextTokenizer::from_dir(&dir).unwrap();
    let template = ChatTemplate::from_model_dir(&dir, None).unwrap().unwrap();
    (tok, template)
}

fn options_of(case: &Value) -> EncodeOptions {
    let mut o = EncodeOptions {
        content: match case["content"].as_str().unwrap() {
            "text" => ContentStyle::Text,
            _ => ContentStyle::Parts,
        },
        labels: match case["labels"].as_str().unwrap() {
            "all" => LabelMode::All,
            _ => LabelMode::AssistantOnly,
        },
        // The fixtures' templates write their own end-of-turn token (or, for llava-noeos,
        // HF's reference has none): compare without adding one.
        ensure_eos: false,
        ..Default::default()
    };
    if let Some(t) = case["image_token"].as_str() {
        o.image_token = t.into();
    }
    if let Some(t) = case["video_token"].as_str() {
        o.video_token = t.into();
    }
    if let Some(t) = case["image_text"].as_str() {
        o.image_text = t.into();
    }
    o
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

#[test]
fn encodings_match_transformers() {
    let samples = samples();
    let cases = read_json("cases.json");
    assert!(cases.len() >= 20);
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let (tok, template) = load(case["tokenizer"].as_str().unwrap());
        let sample = &samples[case["sample"].as_u64().unwrap() as usize];
        let options = options_of(case);

        // The rendered text first (clearer failures).
        let messages = sample_messages(
            sample,
            options.content,
            &options.image_text,
            &options.video_text,
        );
        let text = template.render(&messages, false).unwrap();
        assert_eq!(text, case["text"].as_str().unwrap(), "{name}: text");

        let expand = case.get("expand").cloned();
        let encoded =
            encode_conversation_with(&tok, &template, sample, &options, &mut |kind, _index| {
                let Some(e) = &expand else { return Ok(None) };
                let token = e["token"].as_str().unwrap();
                let wanted = match kind {
                    MediaKind::Image => &options.image_token,
                    MediaKind::Video => &options.video_token,
                };
                if token != wanted {
                    return Ok(None);
                }
                let id = tok.token_id(token).unwrap();
                Ok(Some(vec![id; e["count"].as_u64().unwrap() as usize]))
            })
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .encoded()
            .unwrap();
        let got_ids: Vec<i64> = encoded.input_ids.iter().map(|&i| i64::from(i)).collect();
        assert_eq!(got_ids, ids(&case["input_ids"]), "{name}: input_ids");
        assert_eq!(encoded.labels, ids(&case["label_ids"]), "{name}: labels");
        // Media spans point at the expanded ids.
        for span in &encoded.media {
            assert!(
                encoded.labels[span.start..span.start + span.len]
                    .iter()
                    .all(|&l| l == IGNORE_INDEX)
            );
        }
        assert_eq!(
            encoded.media.len(),
            sample.images.len() + sample.videos.len(),
            "{name}"
        );
    }
}

#[test]
fn builtin_templates_render_like_transformers() {
    let samples = samples();
    let special = SpecialTokens::from_model_dir(&fixtures().join("llava")).unwrap();
    let renders = read_json("renders.json");
    let names: Vec<&str> = BUILTIN_TEMPLATES.iter().map(|(n, _)| *n).collect();
    let mut seen = std::collections::HashSet::new();
    for r in &renders {
        let name = r["template"].as_str().unwrap();
        seen.insert(name.to_string());
        let template = ChatTemplate::builtin(name)
            .unwrap_or_else(|| panic!("no built-in `{name}`"))
            .with_special_tokens(special.clone());
        let sample = &samples[r["sample"].as_u64().unwrap() as usize];
        let style = match r["content"].as_str().unwrap() {
            "text" => ContentStyle::Text,
            _ => ContentStyle::Parts,
        };
        let gen_prompt = r["add_generation_prompt"].as_bool().unwrap();
        let mut messages = sample_messages(sample, style, "<image>", "<video>");
        if gen_prompt {
            messages.pop();
        }
        let text = template.render(&messages, gen_prompt).unwrap();
        assert_eq!(text, r["text"].as_str().unwrap(), "{r}");
    }
    for n in names {
        assert!(seen.contains(n), "built-in `{n}` has no reference render");
    }
}

#[test]
fn ensure_eos_adds_a_trained_eos_after_replies_without_one() {
    let samples = samples();
    let (tok, template) = load("llava-noeos");
    let eos = i64::from(tok.eos_id().unwrap());
    let cases = read_json("cases.json");
    let case = cases
        .iter()
        .find(|c| c["name"] == "llava-noeos-parts-2")
        .unwrap();
    let sample = &samples[2];
    let mut options = options_of(case);
    options.ensure_eos = true;
    let got = encode_conversation(&tok, &template, sample, &options)
        .unwrap()
        .encoded()
        .unwrap();
    // The reference with `</s>` inserted after each labelled run.
    let (ref_ids, ref_labels) = (ids(&case["input_ids"]), ids(&case["label_ids"]));
    let mut want_ids = vec![];
    let mut want_labels = vec![];
    for k in 0..ref_ids.len() {
        want_ids.push(ref_ids[k]);
        want_labels.push(ref_labels[k]);
        let run_ends = ref_labels[k] != IGNORE_INDEX
            && ref_labels.get(k + 1).is_none_or(|&l| l == IGNORE_INDEX);
        if run_ends {
            want_ids.push(eos);
            want_labels.push(eos);
        }
    }
    let got_ids: Vec<i64> = got.input_ids.iter().map(|&i| i64::from(i)).collect();
    assert_eq!(got_ids, want_ids);
    assert_eq!(got.labels, want_labels);
    assert_eq!(sample.turns.len() / 2, 3);
    assert_eq!(got.labels.iter().filter(|&&l| l == eos).count(), 3);
}

#[test]
fn templates_are_found_in_every_place_hf_keeps_them() {
    let f = fixtures();
    // chat_template.jinja, tokenizer_config.json, chat_template.json.
    for (dir, file) in [
        ("chatml", "chat_template.jinja"),
        ("llava", "tokenizer_config.json"),
        ("llava-noeos", "chat_template.json"),
    ] {
        let (_, path) = find_chat_template(&f.join(dir), None).unwrap().unwrap();
        assert_eq!(path.file_name().unwrap(), file);
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    assert!(find_chat_template(d, None).unwrap().is_none());
    // processor_config.json.
    std::fs::write(
        d.join("processor_config.json"),
        r#"{"chat_template": "P{{ messages | length }}", "image_processor": {}}"#,
    )
    .unwrap();
    let t = ChatTemplate::from_model_dir(d, None).unwrap().unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "P0");
    // A list of named templates in tokenizer_config.json wins over processor_config.json, and
    // special tokens given as {"content": ...} objects are read.
    std::fs::write(
        d.join("tokenizer_config.json"),
        r#"{"chat_template": [{"name": "tool_use", "template": "T"},
                              {"name": "default", "template": "D{{ bos_token }}{{ eos_token }}"}],
            "bos_token": {"content": "<s>", "lstrip": false}, "eos_token": "</s>"}"#,
    )
    .unwrap();
    let t = ChatTemplate::from_model_dir(d, None).unwrap().unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "D<s></s>");
    let t = ChatTemplate::from_model_dir(d, Some("tool_use"))
        .unwrap()
        .unwrap();
    assert_eq!(t.render(&[], false).unwrap(), "T");
    let err = ChatTemplate::from_model_dir(d, Some("nope")).unwrap_err();
    assert!(err.to_string().contains("tool_use, default"), "{err}");
}

#[test]
fn hf_template_features_work() {
    // raise_exception, pycompat methods, namespace, loop controls, tojson, strftime_now.
    let t = ChatTemplate::new(
        "{%- for m in messages %}{% if m.role not in ['user', 'assistant'] %}\
         {{ raise_exception('Conversation roles must be user or assistant') }}{% endif %}\
         {{ m.content.strip().upper() }}|{{ m.content.split(' ') | length }}|\
         {{ m | tojson }}{% if loop.index > 1 %}{% break %}{% endif %}{% endfor %}\
         {{ strftime_now('%Y') | length }}",
    )
    .unwrap();
    let msg = |role: &str, text: &str| lmms_collators::template::Message {
        role: role.into(),
        content: lmms_collators::template::Content::Text(text.into()),
    };
    let out = t
        .render(&[msg("user", "  hi there "), msg("assistant", "ok")], false)
        .unwrap();
    assert_eq!(
        out,
        "HI THERE|5|{\"role\": \"user\", \"content\": \"  hi there \"}OK|1|{\"role\": \"assistant\", \"content\": \"ok\"}4"
    );
    let err = t.render(&[msg("tool", "x")], false).unwrap_err();
    assert!(
        err.to_string()
            .contains("Conversation roles must be user or assistant"),
        "{err}"
    );
}

#[test]
fn errors_name_the_sample() {
    let samples = samples();
    let (tok, template) = load("chatml");
    // A template that raises.
    let raising = ChatTemplate::new("{{ raise_exception('no images here') }}").unwrap();
    let err = encode_conversation(&tok, &raising, &samples[0], &EncodeOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("samples.json: sample 0") && err.contains("no images here"),
        "{err}"
    );
    // A template that writes no assistant text: nothing to train.
    let silent = ChatTemplate::new(
        "{% for m in messages %}{% if m.role == 'user' %}{{ m.content }}{% endif %}{% endfor %}",
    )
    .unwrap();
    let err = encode_conversation(&tok, &silent, &samples[2], &EncodeOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sample 2") && err.contains("every label is -100"),
        "{err}"
    );
    // Placeholders that the template drops.
    let opts = EncodeOptions {
        content: ContentStyle::Parts,
        ..Default::default()
    };
    let drop_images = ChatTemplate::new(
        "{% for m in messages %}{% for p in m.content if p.type == 'text' %}{{ p.text }}{% endfor %}{% endfor %}",
    )
    .unwrap();
    let err = encode_conversation(&tok, &drop_images, &samples[3], &opts)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sample 3") && err.contains("0 `<image>` but the sample has 2 images"),
        "{err}"
    );
    let _ = template;
}

#[test]
fn length_limits_skip_reject_or_truncate_without_cutting_media() {
    let samples = samples();
    let (tok, template) = load("chatml");
    let sample = &samples[1]; // image + two rounds.
    let image_id = tok.token_id("<image>").unwrap();
    let expand = |n: usize| {
        move |_: MediaKind, _: usize| -> lmms_core::Result<Option<Vec<u32>>> {
            Ok(Some(vec![image_id; n]))
        }
    };
    let full = encode_conversation_with(
        &tok,
        &template,
        sample,
        &EncodeOptions::default(),
        &mut expand(20),
    )
    .unwrap()
    .encoded()
    .unwrap();
    let span = full.media[0];
    assert_eq!(span.len, 20);
    let limit = span.start + 5; // inside the image tokens
    let base = EncodeOptions {
        max_length: Some(limit),
        ..Default::default()
    };

    let err = encode_conversation_with(&tok, &template, sample, &base, &mut expand(20))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("sample 1")
            && err.contains(&format!("{} tokens, over the limit of {limit}", full.len())),
        "{err}"
    );

    let skip = EncodeOptions {
        over_length: OverLength::Skip,
        ..base.clone()
    };
    let out = encode_conversation_with(&tok, &template, sample, &skip, &mut expand(20)).unwrap();
    assert_eq!(
        out,
        EncodeOutcome::TooLong {
            length: full.len(),
            limit
        }
    );

    // Truncating inside the image would leave no assistant token: an error, not a silent
    // all-masked sample.
    let truncate = EncodeOptions {
        over_length: OverLength::Truncate,
        ..base.clone()
    };
    let err = encode_conversation_with(&tok, &template, sample, &truncate, &mut expand(20))
        .unwrap_err()
        .to_string();
    assert!(err.contains("every label is -100"), "{err}");

    // Truncating after the first reply keeps it, and never splits the image.
    let first_reply_end = full
        .labels
        .iter()
        .position(|&l| l != IGNORE_INDEX)
        .map(|p| {
            p + full.labels[p..]
                .iter()
                .take_while(|&&l| l != IGNORE_INDEX)
                .count()
        })
        .unwrap();
    let truncate = EncodeOptions {
        max_length: Some(first_reply_end + 3),
        over_length: OverLength::Truncate,
        ..Default::default()
    };
    let cut = encode_conversation_with(&tok, &template, sample, &truncate, &mut expand(20))
        .unwrap()
        .encoded()
        .unwrap();
    assert_eq!(cut.len(), first_reply_end + 3);
    assert_eq!(cut.truncated_from, Some(full.len()));
    assert_eq!(cut.input_ids[..], full.input_ids[..cut.len()]);
    assert_eq!(cut.media, full.media);

    // A limit inside an image moves the cut before it: the image is dropped whole, and the
    // reply before it still trains.
    let late_image = Sample {
        turns: {
            let mut t = sample.turns.clone();
            t[0].content = "Hello there.".into();
            t[2].content = "<image>\nAnd this one?".into();
            t
        },
        ..sample.clone()
    };
    let full = encode_conversation_with(
        &tok,
        &template,
        &late_image,
        &EncodeOptions::default(),
        &mut expand(20),
    )
    .unwrap()
    .encoded()
    .unwrap();
    let span = full.media[0];
    let truncate = EncodeOptions {
        max_length: Some(span.start + 7),
        over_length: OverLength::Truncate,
        ..Default::default()
    };
    let cut = encode_conversation_with(&tok, &template, &late_image, &truncate, &mut expand(20))
        .unwrap()
        .encoded()
        .unwrap();
    assert_eq!(cut.len(), span.start);
    assert!(cut.media.is_empty());
    assert!(cut.num_labels() > 0);
    assert!(!cut.input_ids.contains(&image_id));
}

#[test]
fn train_on_everything_and_padding() {
    let samples = samples();
    let (tok, template) = load("chatml");
    let all = EncodeOptions {
        labels: LabelMode::All,
        ..Default::default()
    };
    let a = encode_conversation(&tok, &template, &samples[0], &all)
        .unwrap()
        .encoded()
        .unwrap();
    let image = tok.token_id("<image>").unwrap();
    for (id, label) in a.input_ids.iter().zip(&a.labels) {
        if *id == image {
            assert_eq!(*label, IGNORE_INDEX);
        } else {
            assert_eq!(*label, i64::from(*id));
        }
    }
    let b = encode_conversation(&tok, &template, &samples[2], &EncodeOptions::default())
        .unwrap()
        .encoded()
        .unwrap();
    let pad = tok.pad_id().unwrap();
    let batch = pad_batch(&[&a, &b], pad);
    assert_eq!(batch.batch(), 2);
    let len = batch.seq();
    assert_eq!(len, a.len().max(b.len()));
    let row = |v: &Vec<i64>, r: usize| v[r * len..(r + 1) * len].to_vec();
    let short = if a.len() < b.len() { 0 } else { 1 };
    let short_len = a.len().min(b.len());
    assert!(
        row(&batch.attention_mask.as_ref().unwrap().data, short)[short_len..]
            .iter()
            .all(|&m| m == 0)
    );
    assert!(
        row(&batch.labels.as_ref().unwrap().data, short)[short_len..]
            .iter()
            .all(|&l| l == IGNORE_INDEX)
    );
    assert!(
        row(&batch.input_ids.data, short)[short_len..]
            .iter()
            .all(|&i| i == i64::from(pad))
    );
}

/// Incremental rendering (used for templates without `{% generation %}`, i.e. most hub
/// templates) against HF's generation-block masks: identical for ChatML; for the LLaVA layout
/// the only difference is the `▁` (space) token between `ASSISTANT:` and the reply, which the
/// generation block leaves out and incremental rendering counts as part of the reply.
#[test]
fn incremental_spans_agree_with_generation_blocks() {
    use lmms_collators::text::AssistantSpans;
    let samples = samples();
    let cases = read_json("cases.json");
    let mut compared = 0;
    for case in &cases {
        let name = case["name"].as_str().unwrap();
        let tokenizer = case["tokenizer"].as_str().unwrap();
        if case.get("expand").is_some() {
            continue;
        }
        let (tok, template) = load(tokenizer);
        assert!(template.has_generation_tags());
        let sample = &samples[case["sample"].as_u64().unwrap() as usize];
        let options = EncodeOptions {
            assistant_spans: AssistantSpans::Incremental,
            ..options_of(case)
        };
        let got = encode_conversation(&tok, &template, sample, &options)
            .unwrap()
            .encoded()
            .unwrap();
        let want = ids(&case["label_ids"]);
        assert_eq!(got.labels.len(), want.len(), "{name}");
        if tokenizer == "chatml" {
            assert_eq!(got.labels, want, "{name}");
        } else {
            let space = i64::from(tok.token_id("▁").unwrap());
            for (k, (g, w)) in got.labels.iter().zip(&want).enumerate() {
                if g != w {
                    assert!(
                        *w == IGNORE_INDEX
                            && *g == space
                            && want.get(k + 1).is_some_and(|&n| n != IGNORE_INDEX),
                        "{name}: token {k}: {g} vs {w}"
                    );
                }
            }
        }
        compared += 1;
    }
    assert!(compared >= 20);
}
