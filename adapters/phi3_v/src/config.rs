//! `Phi3VConfig` (the hub's remote code `configuration_phi3_v.py`): field names are the
//! `config.json` keys, defaults the class defaults. The LLM becomes a [`TextConfig`] for the
//! shared decoder (su / longrope RoPE from `rope_scaling`); the image embedding reads
//! `embd_layer` and `img_processor`.

use lmms_core::error::{Error, Result};
use lmms_core::llm::TextConfig;
use lmms_core::llm::config::check_heads;
use lmms_core::nn::Activation;
use lmms_core::nn::rope::RopeConfig;
use lmms_core::vision::VisionConfig;
use serde::Deserialize;
use serde_json::{Value, json};
use std::path::Path;

#[derive(Debug, Clone, Deserialize)]
pub struct Phi3VConfig {
    #[serde(default = "d::vocab_size")]
    pub vocab_size: usize,
    #[serde(default = "d::hidden_size")]
    pub hidden_size: usize,
    #[serde(default = "d::intermediate_size")]
    pub intermediate_size: usize,
    #[serde(default = "d::num_hidden_layers")]
    pub num_hidden_layers: usize,
    #[serde(default = "d::num_attention_heads")]
    pub num_attention_heads: usize,
    pub num_key_value_heads: Option<usize>,
    #[serde(default = "d::hidden_act")]
    pub hidden_act: Activation,
    #[serde(default = "d::max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default = "d::max_position_embeddings")]
    pub original_max_position_embeddings: usize,
    #[serde(default = "d::rms_norm_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    pub sliding_window: Option<usize>,
    pub pad_token_id: Option<i64>,
    pub bos_token_id: Option<i64>,
    /// `{"embedding_cls": "image", "use_hd_transform", "with_learnable_separator",
    /// "hd_transform_order", "projection_cls"}`; absent for a text-only Phi-3.
    pub embd_layer: Option<EmbdLayer>,
    pub img_processor: Option<ImgProcessor>,
    #[serde(skip)]
    pub rope: Option<RopeConfig>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EmbdLayer {
    #[serde(default = "d::embedding_cls")]
    pub embedding_cls: String,
    #[serde(default)]
    pub use_hd_transform: bool,
    #[serde(default)]
    pub with_learnable_separator: bool,
    #[serde(default = "d::hd_transform_order")]
    pub hd_transform_order: String,
    #[serde(default = "d::projection_cls")]
    pub projection_cls: String,
}

/// The vision tower's settings. The remote code always builds CLIP ViT-L/14-336 (asserting
/// `model_name`); `image_dim_out` is that tower's width.
#[derive(Debug, Clone, Deserialize)]
pub struct ImgProcessor {
    #[serde(default = "d::clip_name")]
    pub name: String,
    pub model_name: Option<String>,
    pub image_dim_out: usize,
    #[serde(default = "d::num_img_tokens")]
    pub num_img_tokens: usize,
    /// The hidden state the features come from (`hidden_states[layer_idx]`).
    #[serde(default = "d::layer_idx")]
    pub layer_idx: isize,
    /// `patch`: drop the class token (the only kind the remote code implements).
    #[serde(default = "d::type_feature")]
    pub type_feature: String,
    /// Not in hub configs: any `CLIPVisionConfig` key given here overrides ViT-L/14-336's, for
    /// small test towers.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, Value>,
}

/// The class defaults of `Phi3VConfig`.
mod d {
    use lmms_core::nn::Activation;
    pub fn vocab_size() -> usize {
        32064
    }
    pub fn hidden_size() -> usize {
        3072
    }
    pub fn intermediate_size() -> usize {
        8192
    }
    pub fn num_hidden_layers() -> usize {
        32
    }
    pub fn num_attention_heads() -> usize {
        32
    }
    pub fn hidden_act() -> Activation {
        serde_json::from_value(serde_json::json!("silu")).expect("silu is an activation")
    }
    pub fn max_position_embeddings() -> usize {
        4096
    }
    pub fn rms_norm_eps() -> f64 {
        1e-5
    }
    pub fn embedding_cls() -> String {
        "image".into()
    }
    pub fn hd_transform_order() -> String {
        "glb_sub".into()
    }
    pub fn projection_cls() -> String {
        "linear".into()
    }
    pub fn clip_name() -> String {
        "clip_vision_model".into()
    }
    pub fn num_img_tokens() -> usize {
        144
    }
    pub fn layer_idx() -> isize {
        -2
    }
    pub fn type_feature() -> String {
        "patch".into()
    }
}

/// CLIP ViT-L/14-336, which `image_embedding_phi3_v.py` hard-codes
/// (`CLIP_VIT_LARGE_PATCH14_336_CONFIG`).
fn clip_large_336() -> Value {
    json!({
        "model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
        "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
        "num_channels": 3, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
    })
}

/// What the image embedding does, checked against what the remote code implements.
#[derive(Debug, Clone)]
pub struct ImageEmbdConfig {
    pub vision: VisionConfig,
    pub layer_idx: isize,
    /// CLIP width (`image_dim_out`); the HD transform's 2x2 merge makes it 4x.
    pub image_dim_out: usize,
}

impl Phi3VConfig {
    /// Parses `config.json` (`path` names it in errors).
    pub fn from_value(v: &Value, path: &Path) -> Result<Self> {
        let mut c: Phi3VConfig = serde_json::from_value(v.clone())
            .map_err(|e| Error::config(path, format!("bad Phi-3-V config: {e}")))?;
        check_heads(
            path,
            Some(c.hidden_size),
            c.num_attention_heads,
            c.num_kv_heads(),
        )?;
        // The class default of `original_max_position_embeddings` is 4096; RopeConfig reads
        // it from the config object, so give it the resolved value.
        let mut rope_cfg = v.clone();
        if let Some(o) = rope_cfg.as_object_mut() {
            o.insert(
                "original_max_position_embeddings".into(),
                json!(c.original_max_position_embeddings),
            );
        }
        c.rope = Some(RopeConfig::from_hf(
            &rope_cfg,
            c.head_dim(),
            c.max_position_embeddings,
            path,
        )?);
        Ok(c)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    pub fn num_kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    /// The shared decoder's config: no biases anywhere.
    pub fn text(&self) -> TextConfig {
        TextConfig {
            model_type: "phi3".into(),
            vocab_size: self.vocab_size,
            hidden_size: self.hidden_size,
            intermediate_size: self.intermediate_size,
            num_hidden_layers: self.num_hidden_layers,
            num_attention_heads: self.num_attention_heads,
            num_key_value_heads: Some(self.num_kv_heads()),
            head_dim: Some(self.head_dim()),
            hidden_act: self.hidden_act,
            max_position_embeddings: self.max_position_embeddings,
            rms_norm_eps: self.rms_norm_eps,
            attention_bias: false,
            mlp_bias: false,
            tie_word_embeddings: self.tie_word_embeddings,
            // Phi-3's window (`sliding_window`, 131072 on the hub) is never shorter than the
            // context the model takes; the shared decoder applies windows only for Mistral.
            sliding_window: None,
            use_sliding_window: None,
            rope: self.rope.clone(),
        }
    }

    /// The image embedding's settings, or `None` for a text-only Phi-3. `tower_shape` gives
    /// the checkpoint's CLIP width, MLP width and layer count, for towers smaller than
    /// ViT-L/14-336 (test models; see [`ImgProcessor::extra`]).
    pub fn image_embd(
        &self,
        path: &Path,
        tower_shape: Option<(usize, usize, usize)>,
    ) -> Result<Option<ImageEmbdConfig>> {
        let (Some(e), Some(p)) = (&self.embd_layer, &self.img_processor) else {
            return Ok(None);
        };
        let unsupported = |what: String| Err(Error::config(path, what));
        if e.embedding_cls != "image" {
            return unsupported(format!("embd_layer.embedding_cls `{}`", e.embedding_cls));
        }
        if !(e.use_hd_transform && e.with_learnable_separator) {
            return unsupported(
                "only the HD transform with learnable separators is implemented \
                 (embd_layer.use_hd_transform and with_learnable_separator true)"
                    .into(),
            );
        }
        if e.hd_transform_order != "sub_glb" {
            return unsupported(format!(
                "embd_layer.hd_transform_order `{}` (the remote code implements sub_glb)",
                e.hd_transform_order
            ));
        }
        if e.projection_cls != "mlp" {
            return unsupported(format!(
                "embd_layer.projection_cls `{}` with the HD transform (only mlp is implemented)",
                e.projection_cls
            ));
        }
        if p.name != "clip_vision_model" {
            return unsupported(format!("img_processor.name `{}`", p.name));
        }
        if p.type_feature != "patch" {
            return unsupported(format!("img_processor.type_feature `{}`", p.type_feature));
        }
        let mut vision = clip_large_336();
        let obj = vision.as_object_mut().expect("object");
        obj.insert("hidden_size".into(), json!(p.image_dim_out));
        if p.image_dim_out != 1024 {
            // A smaller tower than the remote code's (a test model): widths and depth come
            // from the checkpoint, heads are 8 wide (the tiny towers of the Phi-3-V reference
            // fixtures: width 32, 4 heads).
            if let Some((width, mlp, layers)) = tower_shape {
                obj.insert("hidden_size".into(), json!(width));
                obj.insert("intermediate_size".into(), json!(mlp));
                obj.insert("num_hidden_layers".into(), json!(layers));
                obj.insert("num_attention_heads".into(), json!((width / 8).max(1)));
            }
        }
        for (k, val) in &p.extra {
            obj.insert(k.clone(), val.clone());
        }
        let vision = VisionConfig::from_value(&vision, path)?;
        if vision.hidden_size != p.image_dim_out {
            return unsupported(format!(
                "img_processor.image_dim_out {} but the CLIP tower is {} wide",
                p.image_dim_out, vision.hidden_size
            ));
        }
        if !vision.grid().is_multiple_of(2) {
            return unsupported(format!(
                "a {}x{} patch grid cannot be merged 2x2",
                vision.grid(),
                vision.grid()
            ));
        }
        Ok(Some(ImageEmbdConfig {
            vision,
            layer_idx: p.layer_idx,
            image_dim_out: p.image_dim_out,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lmms_core::nn::RopeScaling;

    #[test]
    fn reads_the_hub_config() {
        let p = Path::new("config.json");
        let v = json!({
            "architectures": ["Phi3VForCausalLM"], "model_type": "phi3_v",
            "hidden_size": 3072, "num_attention_heads": 32, "max_position_embeddings": 131072,
            "original_max_position_embeddings": 4096, "rope_theta": 10000.0,
            "rope_scaling": {"type": "su", "short_factor": vec![1.0; 48], "long_factor": vec![2.0; 48]},
            "embd_layer": {"embedding_cls": "image", "hd_transform_order": "sub_glb",
                "projection_cls": "mlp", "use_hd_transform": true, "with_learnable_separator": true},
            "img_processor": {"image_dim_out": 1024, "model_name": "openai/clip-vit-large-patch14-336",
                "name": "clip_vision_model", "num_img_tokens": 144},
        });
        let c = Phi3VConfig::from_value(&v, p).unwrap();
        let t = c.text();
        assert_eq!(
            (t.head_dim(), t.num_kv_heads(), t.vocab_size),
            (96, 32, 32064)
        );
        let RopeScaling::LongRope {
            original_max_position_embeddings,
            ..
        } = &t.rope().scaling
        else {
            panic!("su scaling");
        };
        assert_eq!(*original_max_position_embeddings, 4096);
        let e = c.image_embd(p, None).unwrap().unwrap();
        assert_eq!(
            (
                e.vision.hidden_size,
                e.vision.num_hidden_layers,
                e.vision.num_attention_heads
            ),
            (1024, 24, 16)
        );
        assert_eq!((e.layer_idx, e.vision.grid()), (-2, 24));
        let mut bad = v.clone();
        bad["embd_layer"]["hd_transform_order"] = json!("glb_sub");
        let err = Phi3VConfig::from_value(&bad, p)
            .unwrap()
            .image_embd(p, None)
            .unwrap_err();
        assert!(err.to_string().contains("glb_sub"));
    }
}
