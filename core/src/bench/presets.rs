//! Model configs for `lmms bench --model <preset>`: the real shapes of a few hub models (their
//! `config.json` as the hub ships it, so no download is needed), the tiny example model, and
//! small shapes for CPU runs. A preset is only a `config.json`; weights are random.

use serde_json::{Value, json};

/// A named config.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    pub name: &'static str,
    pub about: &'static str,
    config: fn() -> Value,
}

impl Preset {
    /// The preset's `config.json`.
    pub fn config(&self) -> Value {
        (self.config)()
    }
}

/// Every preset.
pub const PRESETS: &[Preset] = &[
    Preset {
        name: "tiny",
        about: "example_data/tiny-llava's shape (LLaVA, 2-layer Llama of width 64, 32px CLIP)",
        config: tiny,
    },
    Preset {
        name: "llava-100m",
        about: "LLaVA of ~107M parameters for CPU runs (10-layer Llama of width 768, 6-layer CLIP at 224px)",
        config: llava_100m,
    },
    Preset {
        name: "llama-7b-layer",
        about: "one Llama-7B decoder layer (width 4096, 32 heads, MLP 11008) with a 1024-token vocabulary and a token-sized vision tower: the per-layer cost of a 7B model",
        config: llama_7b_layer,
    },
    Preset {
        name: "llava-interleave-qwen-0.5b",
        about: "llava-hf/llava-interleave-qwen-0.5b-hf (SigLIP-so400m at 384px + Qwen1.5-0.5B)",
        config: llava_interleave_qwen_0_5b,
    },
    Preset {
        name: "llava-1.5-7b",
        about: "llava-hf/llava-1.5-7b-hf (CLIP ViT-L/14 at 336px + Vicuna-7B)",
        config: llava_1_5_7b,
    },
    Preset {
        name: "qwen2-vl-7b-instruct",
        about: "Qwen/Qwen2-VL-7B-Instruct (675M-parameter ViT + Qwen2-7B with M-RoPE)",
        config: qwen2_vl_7b,
    },
];

pub fn find(name: &str) -> Option<&'static Preset> {
    PRESETS.iter().find(|p| p.name == name)
}

fn clip(
    hidden: usize,
    layers: usize,
    heads: usize,
    mlp: usize,
    image: usize,
    patch: usize,
) -> Value {
    json!({
        "model_type": "clip_vision_model", "hidden_act": "quick_gelu", "hidden_size": hidden,
        "num_hidden_layers": layers, "num_attention_heads": heads, "intermediate_size": mlp,
        "image_size": image, "patch_size": patch, "num_channels": 3, "layer_norm_eps": 1e-5,
        "attention_dropout": 0.0, "projection_dim": 768, "initializer_range": 0.02,
        "initializer_factor": 1.0,
    })
}

#[allow(clippy::too_many_arguments)]
fn llama(
    hidden: usize,
    layers: usize,
    heads: usize,
    kv_heads: usize,
    mlp: usize,
    vocab: usize,
    max_pos: usize,
) -> Value {
    json!({
        "model_type": "llama", "hidden_act": "silu", "hidden_size": hidden,
        "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads,
        "intermediate_size": mlp, "vocab_size": vocab, "max_position_embeddings": max_pos,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "attention_bias": false, "mlp_bias": false,
        "tie_word_embeddings": false, "attention_dropout": 0.0, "initializer_range": 0.02,
        "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2,
    })
}

fn llava(text: Value, vision: Value, image_token: usize, strategy: &str, layer: i64) -> Value {
    json!({
        "architectures": ["LlavaForConditionalGeneration"], "model_type": "llava",
        "image_token_index": image_token, "projector_hidden_act": "gelu",
        "multimodal_projector_bias": true, "vision_feature_layer": layer,
        "vision_feature_select_strategy": strategy, "tie_word_embeddings": false,
        "text_config": text, "vision_config": vision, "torch_dtype": "float32",
    })
}

fn tiny() -> Value {
    let mut text = llama(64, 2, 4, 2, 128, 400, 512);
    text["head_dim"] = json!(16);
    text["pad_token_id"] = json!(3);
    let mut v = llava(text, clip(32, 2, 4, 64, 32, 8), 4, "default", -2);
    v["pad_token_id"] = json!(3);
    v
}

fn llava_100m() -> Value {
    llava(
        llama(768, 10, 12, 12, 2048, 16000, 4096),
        clip(384, 6, 6, 1536, 224, 16),
        15999,
        "default",
        -2,
    )
}

fn llama_7b_layer() -> Value {
    llava(
        llama(4096, 1, 32, 32, 11008, 1024, 4096),
        clip(32, 2, 4, 64, 32, 8),
        1023,
        "default",
        -2,
    )
}

fn llava_1_5_7b() -> Value {
    let mut v = llava(
        llama(4096, 32, 32, 32, 11008, 32064, 4096),
        clip(1024, 24, 16, 4096, 336, 14),
        32000,
        "default",
        -2,
    );
    v["pad_token_id"] = json!(32001);
    v["text_config"]["pad_token_id"] = json!(32001);
    v
}

fn llava_interleave_qwen_0_5b() -> Value {
    let text = json!({
        "model_type": "qwen2", "hidden_act": "silu", "hidden_size": 896, "num_hidden_layers": 24,
        "num_attention_heads": 14, "num_key_value_heads": 2, "intermediate_size": 4864,
        "vocab_size": 152000, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "tie_word_embeddings": true, "use_sliding_window": false,
        "sliding_window": 32768, "max_window_layers": 21, "attention_dropout": 0.0,
        "bos_token_id": 151643, "eos_token_id": 151645,
    });
    let vision = json!({
        "model_type": "siglip_vision_model", "hidden_act": "gelu_pytorch_tanh",
        "hidden_size": 1152, "num_hidden_layers": 26, "num_attention_heads": 16,
        "intermediate_size": 4304, "image_size": 384, "patch_size": 14, "num_channels": 3,
        "layer_norm_eps": 1e-6, "attention_dropout": 0.0, "vision_use_head": false,
    });
    let mut v = llava(text, vision, 151646, "full", -1);
    v["tie_word_embeddings"] = json!(true);
    v
}

fn qwen2_vl_7b() -> Value {
    json!({
        "architectures": ["Qwen2VLForConditionalGeneration"], "model_type": "qwen2_vl",
        "hidden_act": "silu", "hidden_size": 3584, "intermediate_size": 18944,
        "num_hidden_layers": 28, "num_attention_heads": 28, "num_key_value_heads": 4,
        "vocab_size": 152064, "max_position_embeddings": 32768, "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
        "tie_word_embeddings": false, "use_sliding_window": false, "sliding_window": 32768,
        "max_window_layers": 28, "attention_dropout": 0.0, "initializer_range": 0.02,
        "bos_token_id": 151643, "eos_token_id": 151645, "vision_start_token_id": 151652,
        "vision_end_token_id": 151653, "vision_token_id": 151654, "image_token_id": 151655,
        "video_token_id": 151656, "torch_dtype": "bfloat16",
        "vision_config": {
            "depth": 32, "embed_dim": 1280, "mlp_ratio": 4, "num_heads": 16, "in_chans": 3,
            "hidden_size": 3584, "patch_size": 14, "spatial_merge_size": 2,
            "temporal_patch_size": 2, "hidden_act": "quick_gelu",
        },
    })
}
