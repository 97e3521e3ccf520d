//! `lmms data check`: validates a dataset without training. Prints every problem (file, sample,
//! reason) and statistics; with a tokenizer, token counts per sample and the samples over
//! `--max-length`. Exits 1 when any sample is broken.

use crate::args::{DataCheckArgs, DataCommand, IdentityLang, MakeIdentityArgs};
use anyhow::Context;
use lmms_collators::dataset::{
    Dataset, DatasetOptions, IdentityLanguage, MediaCheck, identity_samples,
};
use lmms_collators::template::{ChatTemplate, ContentStyle, builtin_template_names};
use lmms_collators::text::{EncodeOptions, LabelMode, TextTokenizer, encode_conversation};
use lmms_core::data::Sample;
use lmms_core::model_dir::resolve_model;
use lmms_core::{Error, Registry};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

pub fn run(command: &DataCommand) -> anyhow::Result<ExitCode> {
    match command {
        DataCommand::Check(args) => check(args),
        DataCommand::Inspect(args) => super::inspect::run(args),
        DataCommand::MakeIdentity(args) => make_identity(args),
    }
}

fn make_identity(args: &MakeIdentityArgs) -> anyhow::Result<ExitCode> {
    if args.name.trim().is_empty() || args.author.trim().is_empty() {
        anyhow::bail!("--name and --author must not be empty");
    }
    if args.num_samples == 0 {
        anyhow::bail!("-n must be at least 1");
    }
    if args.out.exists() && !args.force {
        anyhow::bail!("{} exists; pass --force to replace it", args.out.display());
    }
    let language = match args.language {
        IdentityLang::En => IdentityLanguage::En,
        IdentityLang::Zh => IdentityLanguage::Zh,
        IdentityLang::Both => IdentityLanguage::Both,
    };
    let samples = identity_samples(
        &args.name,
        &args.author,
        args.num_samples,
        language,
        args.seed,
    );
    let mut text = serde_json::to_string_pretty(&samples)?;
    text.push('\n');
    lmms_core::fs::write_atomic(&args.out, text.as_bytes())?;
    println!(
        "wrote {} identity conversations for \"{}\" by {} to {}",
        samples.len(),
        args.name,
        args.author,
        args.out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// What a token statistic is computed with.
struct TextSide {
    tokenizer: TextTokenizer,
    template: ChatTemplate,
    dir: PathBuf,
}

fn text_side(args: &DataCheckArgs) -> anyhow::Result<Option<TextSide>> {
    let dir = match (&args.model, &args.tokenizer) {
        (Some(model), _) => {
            let registry = Registry::linked()?;
            resolve_model(&registry, model, args.model_path.as_deref())?
                .dir
                .root
        }
        (None, Some(dir)) => dir.clone(),
        (None, None) => {
            if args.template.is_some() || args.max_length.is_some() {
                anyhow::bail!(
                    "--template and --max-length need a tokenizer: pass --model or --tokenizer"
                );
            }
            return Ok(None);
        }
    };
    let tokenizer = TextTokenizer::from_dir(&dir)?;
    let template = match &args.template {
        Some(name) => ChatTemplate::builtin(name)
            .with_context(|| {
                format!(
                    "no built-in template `{name}`; built-in templates: {}",
                    builtin_template_names().collect::<Vec<_>>().join(", ")
                )
            })?
            .with_special_tokens(tokenizer.special.clone()),
        None => ChatTemplate::from_model_dir(&dir, None)?.with_context(|| {
            format!(
                "{} has no chat template (chat_template.jinja, chat_template.json, \
                 tokenizer_config.json or processor_config.json); pick a built-in one with \
                 --template ({})",
                dir.display(),
                builtin_template_names().collect::<Vec<_>>().join(", ")
            )
        })?,
    };
    Ok(Some(TextSide {
        tokenizer,
        template,
        dir,
    }))
}

fn check(args: &DataCheckArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let text = text_side(args)?;
    if !args.data.exists() {
        anyhow::bail!("--data {}: no such file", args.data.display());
    }
    let options = DatasetOptions {
        image_folder: args.image_folder.clone(),
        video_folder: args.video_folder.clone(),
        media_check: if args.no_decode {
            MediaCheck::Exists
        } else {
            MediaCheck::Decode
        },
        ..Default::default()
    };
    let report = Dataset::check(&args.data, &options);
    let mut problems: Vec<String> = report.problems.iter().map(|e| e.to_string()).collect();
    let samples: Vec<&Sample> = report.dataset.samples().collect();

    let tokens = text
        .as_ref()
        .map(|t| token_stats(t, &samples, args.max_length));
    if let Some(stats) = &tokens {
        problems.extend(stats.errors.iter().map(|e| e.to_string()));
    }

    if !problems.is_empty() {
        println!("problems ({}):", problems.len());
        for p in &problems {
            println!("  {p}");
        }
        println!();
    }

    println!("files:");
    for (source, (_, total)) in report.dataset.sources.iter().zip(&report.totals) {
        let per_epoch = match source.per_epoch {
            Some(n) => format!(", {n} per epoch"),
            None => String::new(),
        };
        println!(
            "  {}: {} samples ({} valid{per_epoch})",
            source.file.display(),
            total,
            source.samples.len()
        );
    }
    let broken = report.broken_samples();
    let total = report.total_samples();
    let images: usize = samples.iter().map(|s| s.images.len()).sum();
    let multi = samples.iter().filter(|s| s.images.len() > 1).count();
    let videos: usize = samples.iter().map(|s| s.videos.len()).sum();
    let text_only = samples
        .iter()
        .filter(|s| s.images.is_empty() && s.videos.is_empty())
        .count();
    let turns: usize = samples.iter().map(|s| s.turns.len()).sum();
    let max_rounds = samples.iter().map(|s| s.turns.len() / 2).max().unwrap_or(0);
    let with_system = samples.iter().filter(|s| s.system.is_some()).count();
    let n = samples.len().max(1) as f64;
    println!(
        "samples:   {} valid, {broken} broken, {total} in total",
        samples.len()
    );
    if report.dataset.sources.iter().any(|s| s.per_epoch.is_some()) {
        println!("per epoch: {}", report.dataset.epoch_len());
    }
    println!(
        "images:    {images} ({multi} {} with several)",
        if multi == 1 { "sample" } else { "samples" }
    );
    println!("videos:    {videos}");
    println!("text-only: {text_only}");
    println!(
        "turns:     {turns} ({:.1} rounds per sample, at most {max_rounds}; {with_system} \
         samples with a system prompt)",
        turns as f64 / 2.0 / n
    );
    if let (Some(t), Some(stats)) = (&text, &tokens) {
        let mut lens = stats.lengths.clone();
        lens.sort_unstable();
        if !lens.is_empty() {
            let pct =
                |p: f64| lens[((p * lens.len() as f64).ceil() as usize).clamp(1, lens.len()) - 1];
            println!(
                "tokens:    p50 {}, p95 {}, max {} per sample; {:.0}% of tokens trained \
                 (tokenizer {}, template {}; media placeholders counted as their text)",
                pct(0.5),
                pct(0.95),
                lens[lens.len() - 1],
                100.0 * stats.trained as f64 / stats.total.max(1) as f64,
                t.dir.display(),
                t.template.origin(),
            );
        }
        if let Some(model) = &args.model {
            media_lengths(model, args, &samples)?;
        }
        if let Some(limit) = args.max_length {
            let n = stats.over_limit.len();
            println!(
                "over --max-length {limit}: {n} {}",
                if n == 1 { "sample" } else { "samples" }
            );
            for (file, index, len) in stats.over_limit.iter().take(20) {
                println!("  {}: sample {index}: {len} tokens", file.display());
            }
            if stats.over_limit.len() > 20 {
                println!("  ... and {} more", stats.over_limit.len() - 20);
            }
        }
    }
    println!(
        "checked in {:.2} s: {}",
        started.elapsed().as_secs_f64(),
        if problems.is_empty() {
            "no problems".to_string()
        } else {
            format!("{} problems", problems.len())
        }
    );
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

struct TokenStats {
    lengths: Vec<usize>,
    trained: usize,
    total: usize,
    over_limit: Vec<(PathBuf, usize, usize)>,
    errors: Vec<Error>,
}

/// Encodes every sample (on all cores) for its token count. Templates written for typed content
/// (`[{"type": "image"}, ...]`) are detected by trying the first sample with string content.
/// With `--model` of a family that has model code: lengths as its collator builds them, media
/// tokens included (what training sees).
fn media_lengths(model: &str, args: &DataCheckArgs, samples: &[&Sample]) -> anyhow::Result<()> {
    let loaded = super::common::load_model(model, args.model_path.as_deref())?;
    let options = lmms_core::collator::CollateOptions::default();
    let lengths = loaded.runtime.num_tokens(&loaded.dir, samples, &options)?;
    let mut lens: Vec<usize> = lengths
        .iter()
        .filter_map(|l| l.as_ref().ok().copied())
        .collect();
    lens.sort_unstable();
    if let Some(&max) = lens.last() {
        let pct = |p: f64| lens[((p * lens.len() as f64).ceil() as usize).clamp(1, lens.len()) - 1];
        println!(
            "with media: p50 {}, p95 {}, max {max} tokens per sample (the model's collator)",
            pct(0.5),
            pct(0.95)
        );
    }
    if let Some(limit) = args.max_length {
        let over = samples
            .iter()
            .zip(&lengths)
            .filter(|(_, l)| l.as_ref().is_ok_and(|l| *l > limit))
            .count();
        println!("with media over --max-length {limit}: {over} samples (skipped in training)");
    }
    Ok(())
}

fn token_stats(text: &TextSide, samples: &[&Sample], max_length: Option<usize>) -> TokenStats {
    let options = EncodeOptions {
        labels: LabelMode::AssistantOnly,
        content: ContentStyle::for_template(&text.template),
        // Family-specific media tokens are not known here.
        image_token: String::new(),
        video_token: String::new(),
        ..Default::default()
    };
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = samples.len().div_ceil(threads).max(1);
    let results: Vec<lmms_core::Result<(usize, usize)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = samples
            .chunks(chunk)
            .map(|part| {
                let options = &options;
                scope.spawn(move || {
                    part.iter()
                        .map(|s| {
                            encode_conversation(&text.tokenizer, &text.template, s, options).map(
                                |out| {
                                    let e = out.encoded().expect("no length limit set");
                                    (e.len(), e.num_labels())
                                },
                            )
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("encoding thread panicked"))
            .collect()
    });
    let mut stats = TokenStats {
        lengths: vec![],
        trained: 0,
        total: 0,
        over_limit: vec![],
        errors: vec![],
    };
    for (sample, result) in samples.iter().zip(results) {
        match result {
            Ok((len, trained)) => {
                stats.lengths.push(len);
                stats.total += len;
                stats.trained += trained;
                if max_length.is_some_and(|m| len > m) {
                    stats
                        .over_limit
                        .push((sample.origin.file.clone(), sample.origin.index, len));
                }
            }
            Err(e) => stats.errors.push(e),
        }
    }
    stats
}
