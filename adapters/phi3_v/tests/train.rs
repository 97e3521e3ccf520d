//! LoRA training of a tiny Phi-3-V on CPU: the reference fixture's weights (2-layer Phi-3 with
//! su RoPE, 2-layer CLIP, HD transform) with the embedding and head widened to the real
//! Phi-3-vision tokenizer's vocabulary, a batch of an image sample and a text-only sample;
//! the loss must fall and a PEFT adapter on the fused linears must come out.

use lmms_core::backend::DeviceSpec;
use lmms_core::data::{Role, Sample, SampleOrigin, Turn};
use lmms_core::model_dir::ModelDir;
use lmms_core::runtime::DynFamily;
use lmms_core::strategy::{LoraConfig, PartStrategy, QloraConfig, StrategySpec, TargetModules};
use lmms_core::tensor_file::{HostTensor, TensorFile, write_f32};
use lmms_core::train::run::{EpochSource, RunConfig, TrainObserver, TrainRequest};
use lmms_core::train::schedule::ScheduleKind;
use lmms_phi3_v::Phi3VFamily;
use std::path::{Path, PathBuf};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/phi3-v")
}

const VOCAB: usize = 32064;

/// The fixture model with a 32064-row embedding and head (rows past 512 repeat the first
/// ones), the real tokenizer and the fixture's image processor settings.
fn tiny_model(dir: &Path) {
    let src = fixture();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(src.join("config.json")).unwrap()).unwrap();
    config["vocab_size"] = VOCAB.into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    for f in [
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "preprocessor_config.json",
    ] {
        std::fs::copy(src.join(f), dir.join(f)).unwrap();
    }
    let weights = TensorFile::open(src.join("model.safetensors")).unwrap();
    let tensors: Vec<(String, HostTensor<f32>)> = weights
        .names()
        .into_iter()
        .map(|name| {
            let mut t = weights.f32(&name).unwrap();
            if name == "model.embed_tokens.weight" || name == "lm_head.weight" {
                let (rows, width) = (t.shape[0], t.shape[1]);
                let data = (0..VOCAB)
                    .flat_map(|r| t.data[(r % rows) * width..(r % rows + 1) * width].to_vec())
                    .collect();
                t = HostTensor {
                    shape: vec![VOCAB, width],
                    data,
                };
            }
            (name, t)
        })
        .collect();
    write_f32(&dir.join("model.safetensors"), &tensors).unwrap();
}

struct Fixed(Vec<Sample>);

impl EpochSource for Fixed {
    fn epoch_len(&self) -> usize {
        self.0.len()
    }

    fn epoch(&self, _epoch: u64, _seed: u64) -> Vec<&Sample> {
        self.0.iter().collect()
    }
}

struct Quiet;
impl TrainObserver for Quiet {}

fn sample(index: usize, user: &str, reply: &str, images: Vec<PathBuf>) -> Sample {
    Sample {
        origin: SampleOrigin {
            file: "train.json".into(),
            index,
        },
        system: None,
        turns: vec![
            Turn {
                role: Role::User,
                content: user.into(),
            },
            Turn {
                role: Role::Assistant,
                content: reply.into(),
            },
        ],
        images,
        videos: vec![],
    }
}

fn lora(r: usize) -> LoraConfig {
    LoraConfig {
        r,
        alpha: 2.0 * r as f64,
        dropout: 0.0,
        target_modules: TargetModules::AllLinear,
        use_rslora: false,
    }
}

/// Trains the tiny model with `strategy` for `steps` steps of a batch of an image sample and a
/// text-only sample; returns the first and last loss and the output directory.
fn train(tmp: &Path, strategy: &StrategySpec, steps: u64, lr: f64) -> (f64, f64, PathBuf) {
    let model = tmp.join("model");
    if !model.exists() {
        std::fs::create_dir(&model).unwrap();
        tiny_model(&model);
    }
    let data = Fixed(vec![
        sample(
            0,
            "<image>\nWhat is in the picture?",
            "A red barn in a green field.",
            vec![fixture().join("image.png")],
        ),
        sample(1, "Say hello.", "Hello there, friend!", vec![]),
    ]);
    let mut config = RunConfig {
        per_device_train_batch_size: 2,
        max_steps: Some(steps),
        lr_scheduler_type: ScheduleKind::Constant,
        warmup_ratio: 0.0,
        seed: 7,
        ..RunConfig::default()
    };
    config.optimizer.learning_rate = lr;
    let out = tempfile::tempdir_in(tmp).unwrap().keep();
    let dir = ModelDir::open(&model).unwrap();
    let report = Phi3VFamily
        .train(
            &TrainRequest {
                model_dir: &dir,
                base_name: Some("tiny-phi3-v"),
                strategy,
                data: &data,
                eval: None,
                config: &config,
                output_dir: &out,
                resume: false,
            },
            DeviceSpec::Cpu,
            &mut Quiet,
        )
        .unwrap();
    let (first, last) = (report.first_loss.unwrap(), report.last_loss.unwrap());
    println!(
        "{} steps in {:.1}s: loss {first:.4} -> {last:.4}",
        report.steps, report.seconds
    );
    assert_eq!(report.steps, steps);
    (first, last, report.output.unwrap())
}

/// lmms-finetune's default mix: LoRA on the LLM, projector (with the separators) fully.
#[test]
fn lora_training_reduces_the_loss_and_writes_an_adapter() {
    let tmp = tempfile::tempdir().unwrap();
    let strategy = StrategySpec {
        llm: PartStrategy::Lora(lora(8)),
        ..StrategySpec::default()
    };
    let (first, last, adapter) = train(tmp.path(), &strategy, 12, 1e-2);
    assert!(last < 0.75 * first, "loss {first} -> {last}");
    let config = std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap();
    for module in ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"] {
        assert!(config.contains(module), "{module} missing from {config}");
    }
    let weights = TensorFile::open(adapter.join("adapter_model.safetensors")).unwrap();
    let names = weights.names();
    assert!(
        names
            .iter()
            .any(|n| n.contains("layers.0.mlp.gate_up_proj.lora_A")),
        "{names:?}"
    );
    // The projector trained fully and is saved with the adapter.
    assert!(
        names.iter().any(|n| n.contains("img_projection")),
        "{names:?}"
    );
}

/// QLoRA on the LLM with LoRA on the CLIP tower; then everything fully trained.
#[test]
fn qlora_vision_lora_and_full_training_reduce_the_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let strategy = StrategySpec {
        vision_tower: PartStrategy::Lora(lora(4)),
        projector: PartStrategy::Frozen,
        llm: PartStrategy::Qlora(QloraConfig {
            lora: lora(8),
            ..QloraConfig::default()
        }),
        ..StrategySpec::default()
    };
    let (first, last, adapter) = train(tmp.path(), &strategy, 8, 1e-2);
    assert!(last < 0.85 * first, "qlora: loss {first} -> {last}");
    let names = TensorFile::open(adapter.join("adapter_model.safetensors"))
        .unwrap()
        .names();
    assert!(
        names
            .iter()
            .any(|n| n
                .contains("img_processor.vision_model.encoder.layers.0.self_attn.q_proj.lora_A")),
        "{names:?}"
    );
    let full = StrategySpec {
        vision_tower: PartStrategy::Full,
        projector: PartStrategy::Full,
        llm: PartStrategy::Full,
        ..StrategySpec::default()
    };
    let (first, last, model) = train(tmp.path(), &full, 6, 1e-3);
    assert!(last < 0.85 * first, "full: loss {first} -> {last}");
    // A full checkpoint in the base layout loads back.
    let saved = TensorFile::open(model.join("model.safetensors")).unwrap();
    assert!(saved.contains("model.vision_embed_tokens.glb_GN"));
    assert!(saved.contains("model.layers.1.mlp.gate_up_proj.weight"));
}

/// Generation (what `lmms chat` runs): the prompt holds the image's tokens and the assistant
/// header; greedy decoding is deterministic.
#[test]
fn generates_a_reply_to_an_image_prompt() {
    use lmms_core::collator::CollateOptions;
    use lmms_core::generate::{GenerateOptions, conversation};
    let d = tempfile::tempdir().unwrap();
    tiny_model(d.path());
    let dir = ModelDir::open(d.path()).unwrap();
    let family: &dyn DynFamily = &Phi3VFamily;
    let mut generator = family
        .generator(&dir, None, &CollateOptions::default(), DeviceSpec::Cpu)
        .unwrap();
    let image = fixture().join("image.png");
    let ask = |text: &str, images: &[PathBuf]| {
        conversation(None, &[(Role::User, text.to_string())], images)
    };
    let options = GenerateOptions {
        max_new_tokens: 5,
        ..Default::default()
    };
    let mut streamed = String::new();
    let with_image = generator
        .generate(
            &ask("<image>\nWhat is this?", std::slice::from_ref(&image)),
            &options,
            &mut |piece| streamed.push_str(piece),
        )
        .unwrap();
    let text_only = generator
        .generate(&ask("What is this?", &[]), &options, &mut |_| {})
        .unwrap();
    // 757 image tokens (the shared image's count) plus the text.
    assert!(with_image.prompt_tokens > text_only.prompt_tokens + 700);
    assert_eq!(streamed, with_image.text);
    let again = generator
        .generate(
            &ask("<image>\nWhat is this?", std::slice::from_ref(&image)),
            &options,
            &mut |_| {},
        )
        .unwrap();
    assert_eq!(again.ids, with_image.ids);
}
