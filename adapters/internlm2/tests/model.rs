//! InternLM2's grouped `wqkv` split and dynamic NTK RoPE, checked against hand-built values
//! written the way `modeling_internlm2.py` computes them.

use lmms_core::backend::Cpu;
use lmms_core::burn::tensor::{Tensor, TensorData};
use lmms_core::nn::QkvLayout;
use lmms_core::nn::rope::{RopeConfig, RopeScaling};

fn values<const D: usize>(t: Tensor<Cpu, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

/// `rearrange(qkv, "b q (h gs d) -> b q h gs d", gs=2 + groups)`, then q = `[..., :groups, :]`
/// flattened to `(h gs)` heads, k = `[..., -2, :]`, v = `[..., -1, :]`.
#[test]
fn grouped_wqkv_split_follows_modeling_internlm2() {
    let (b, t, heads, kv, d) = (2usize, 3usize, 4usize, 2usize, 2usize);
    let groups = heads / kv;
    let width = (heads + 2 * kv) * d;
    // Each element encodes (batch, position, channel) so every split element is traceable.
    let data: Vec<f32> = (0..b * t * width)
        .map(|i| {
            let (bt, c) = (i / width, i % width);
            (bt * 1000 + c) as f32
        })
        .collect();
    let y = Tensor::<Cpu, 3>::from_data(TensorData::new(data, [b, t, width]), &Default::default());
    let layout = QkvLayout::Grouped { name: "wqkv" };
    let (q, k, v) = layout.split(y, heads, kv, d);
    assert_eq!(q.dims(), [b, t, heads, d]);
    assert_eq!(k.dims(), [b, t, kv, d]);
    assert_eq!(v.dims(), [b, t, kv, d]);
    let (q, k, v) = (values(q), values(k), values(v));
    for bt in 0..b * t {
        for h in 0..kv {
            let group = h * (groups + 2) * d;
            for j in 0..d {
                let at = |slot: usize| (bt * 1000 + group + slot * d + j) as f32;
                for g in 0..groups {
                    // Query head h * groups + g belongs to kv head h.
                    assert_eq!(q[(bt * heads + h * groups + g) * d + j], at(g));
                }
                assert_eq!(k[(bt * kv + h) * d + j], at(groups));
                assert_eq!(v[(bt * kv + h) * d + j], at(groups + 1));
            }
        }
    }
    // Phi-3's concatenated layout for comparison: all q, then all k, then all v.
    let y = Tensor::<Cpu, 3>::from_data(
        TensorData::new((0..width).map(|c| c as f32).collect(), [1, 1, width]),
        &Default::default(),
    );
    let (q, k, v) = QkvLayout::Concat { name: "qkv_proj" }.split(y, heads, kv, d);
    assert_eq!(values(q), (0..8).map(|c| c as f32).collect::<Vec<_>>());
    assert_eq!(values(k), (8..12).map(|c| c as f32).collect::<Vec<_>>());
    assert_eq!(values(v), (12..16).map(|c| c as f32).collect::<Vec<_>>());
}

/// `InternLM2DynamicNTKScalingRotaryEmbedding`: past `max_position_embeddings` the base
/// becomes `base * ((factor * seq_len / max) - (factor - 1)) ** (dim / (dim - 2))`.
#[test]
fn dynamic_ntk_base_matches_internlm2() {
    let (theta, dim, max, factor) = (1e6f64, 8usize, 16usize, 2.0f64);
    let rope = RopeConfig {
        theta,
        dim,
        max_position_embeddings: max,
        scaling: RopeScaling::Dynamic { factor },
    };
    let inv = |base: f64| -> Vec<f32> {
        (0..dim / 2)
            .map(|i| 1.0 / (base as f32).powf((2 * i) as f32 / dim as f32))
            .collect()
    };
    assert_eq!(rope.inv_freq(max), inv(theta));
    let seq = 40;
    let base = theta
        * ((factor * seq as f64 / max as f64) - (factor - 1.0))
            .powf(dim as f64 / (dim as f64 - 2.0));
    assert_eq!(rope.inv_freq(seq), inv(base));
    assert!(rope.inv_freq(seq)[1] < rope.inv_freq(max)[1]);
}

/// LoRA on `wqkv` is one adapter on the fused linear (PEFT targets `wqkv` as one module).
#[test]
fn lora_on_wqkv_is_one_adapter_on_the_fused_linear() {
    use lmms_core::backend::Cpu;
    use lmms_core::loader::DType;
    use lmms_core::model_dir::ModelDir;
    use lmms_core::nn::QkvProj;
    use lmms_core::nn::plan::{LoraRegistry, PartPlan};
    use lmms_core::runtime::{Plans, build_model};
    use lmms_core::strategy::{LoraConfig, PartStrategy, TargetModules};
    use lmms_internlm2::InternLm2Family;

    let fixture =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/internlm2");
    let strategy = PartStrategy::Lora(LoraConfig {
        r: 4,
        target_modules: TargetModules::Names(vec!["wqkv".into()]),
        ..Default::default()
    });
    let registry = LoraRegistry::default();
    let plans = Plans::uniform(PartPlan::from_strategy(&strategy, &registry), None);
    let dir = ModelDir::open(&fixture).unwrap();
    let (model, _) = build_model::<Cpu, _>(
        &InternLm2Family,
        &dir,
        DType::F32,
        &plans,
        &Default::default(),
    )
    .unwrap();
    for (i, layer) in model.layers.iter().enumerate() {
        let attn = &layer.self_attn;
        let QkvProj::Fused(wqkv) = &attn.qkv else {
            panic!("InternLM2's q/k/v projection is fused");
        };
        assert_eq!(wqkv.path, format!("model.layers.{i}.attention.wqkv"));
        assert_eq!((wqkv.d_in(), wqkv.d_out()), (64, (8 + 2 * 2) * 8));
        assert!(wqkv.lora.is_some());
        assert!(attn.o_proj.lora.is_none() && layer.mlp.gate_proj.lora.is_none());
    }
    assert_eq!(registry.entries().len(), model.layers.len());
}
