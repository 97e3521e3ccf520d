//! Phi-3-V's image embedding (`Phi3ImageEmbedding` of the hub's remote code
//! `image_embedding_phi3_v.py`): CLIP features of every crop (`hidden_states[layer_idx]`,
//! class token dropped), the HD transform, learnable separators and the MLP projection.
//!
//! Per image, with `h x w` crops of a `G x G` patch grid (G = 24 for CLIP-L/14-336):
//! - each crop's patches are merged 2x2 into the channels (`[G/2, G/2, 4C]`), the crops laid
//!   out as the image (`[h G/2, w G/2, 4C]`) and `sub_GN` appended to every row;
//! - the global image (crop slot 0) goes through the same with `h = w = 1`;
//! - `sub_glb` order: `[sub-image rows, glb_GN, global rows]`, then `img_projection`
//!   (`Linear(4C, hidden)`, GELU, `Linear(hidden, hidden)`).
//!
//! That is `h G/2 (w G/2 + 1) + 1 + G/2 (G/2 + 1)` embeddings (757 for 2x2 crops at G = 24).

use crate::config::ImageEmbdConfig;
use burn::module::{Module, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use lmms_core::burn;
use lmms_core::error::Result;
use lmms_core::nn::{Activation, Mlp, PartPlan};
use lmms_core::vision::VisionTransformer;
use lmms_core::weights::Vars;

#[derive(Module, Debug)]
pub struct Phi3ImageEmbedding<B: Backend> {
    /// `img_processor.vision_model`.
    pub img_processor: VisionTransformer<B>,
    /// The separator between the sub-images and the global image, `[1, 1, 4C]`.
    pub glb_gn: Param<Tensor<B, 3>>,
    /// The separator after every row of patches, `[1, 1, 1, 4C]`.
    pub sub_gn: Param<Tensor<B, 4>>,
    /// `img_projection.0` and `img_projection.2` (`.1` is the GELU).
    pub img_projection: Mlp<B>,
    #[module(skip)]
    pub layer_idx: isize,
    /// Patches per side of a crop.
    #[module(skip)]
    pub grid: usize,
}

impl<B: Backend> Phi3ImageEmbedding<B> {
    /// Loads `vars` = `model.vision_embed_tokens`: the tower with the vision plan, the
    /// separators and projection with the projector plan.
    pub fn load(
        vars: &Vars<'_>,
        c: &ImageEmbdConfig,
        hidden: usize,
        tower: &PartPlan<'_>,
        projector: &PartPlan<'_>,
        device: &B::Device,
    ) -> Result<Self> {
        let merged = 4 * c.image_dim_out;
        Ok(Phi3ImageEmbedding {
            img_processor: VisionTransformer::load(
                &vars.pp("img_processor.vision_model"),
                &c.vision,
                tower,
                device,
            )?,
            glb_gn: vars.param("glb_GN", [1, 1, merged], device, projector.trainable)?,
            sub_gn: vars.param("sub_GN", [1, 1, 1, merged], device, projector.trainable)?,
            img_projection: Mlp::load(
                &vars.pp("img_projection"),
                ["0", "2"],
                merged,
                hidden,
                hidden,
                Activation::Gelu,
                projector,
                device,
            )?,
            layer_idx: c.layer_idx,
            grid: c.vision.grid(),
        })
    }

    /// Patch features `[N, G * G, C]` of crops `[N, 3, H, W]` (class token dropped).
    pub fn crop_features(&self, crops: Tensor<B, 4>) -> Tensor<B, 3> {
        let x = self
            .img_processor
            .hidden_states(crops, &[self.layer_idx])
            .pop()
            .expect("one hidden state asked for");
        let [n, p, c] = x.dims();
        x.slice([0..n, 1..p, 0..c])
    }

    /// `reshape_hd_patches_2x2merge`: `[h * w, G * G, C]` crop features of one image, row by
    /// row, to `[h G/2, w G/2, 4C]` (each 2x2 block of patches concatenated in
    /// `(row, column, channel)` order).
    fn merge_2x2(&self, x: Tensor<B, 3>, h: usize, w: usize) -> Tensor<B, 3> {
        let [n, _, c] = x.dims();
        let g = self.grid / 2;
        x.reshape([n, g, 2, g, 2, c])
            .permute([0, 1, 3, 2, 4, 5])
            .reshape([h, w, g, g, 4 * c])
            .permute([0, 2, 1, 3, 4])
            .reshape([h * g, w * g, 4 * c])
    }

    /// `add_image_newline`: `sub_GN` after every row, flattened to `[rows * (cols + 1), 4C]`.
    fn add_newline(&self, x: Tensor<B, 3>) -> Tensor<B, 2> {
        let [rows, cols, d] = x.dims();
        let newline = self
            .sub_gn
            .val()
            .cast(x.dtype())
            .reshape([1, 1, d])
            .expand([rows, 1, d]);
        Tensor::cat(vec![x, newline], 1).reshape([rows * (cols + 1), d])
    }

    /// Projected embeddings `[K, hidden]` of every image, in order. `features` are the crop
    /// features of all images' used crops (global first, then the `h * w` sub-images of each),
    /// `crops` each image's `(h, w)`.
    pub fn hd_embeddings(&self, features: Tensor<B, 3>, crops: &[(usize, usize)]) -> Tensor<B, 2> {
        let [_, p, c] = features.dims();
        let mut parts = Vec::with_capacity(3 * crops.len());
        let mut at = 0;
        let dtype = features.dtype();
        let glb = self.glb_gn.val().cast(dtype).reshape([1, 4 * c]);
        for &(h, w) in crops {
            let global = features.clone().slice([at..at + 1, 0..p, 0..c]);
            let subs = features.clone().slice([at + 1..at + 1 + h * w, 0..p, 0..c]);
            at += 1 + h * w;
            parts.push(self.add_newline(self.merge_2x2(subs, h, w)));
            parts.push(glb.clone());
            parts.push(self.add_newline(self.merge_2x2(global, 1, 1)));
        }
        self.img_projection.forward(Tensor::cat(parts, 0))
    }

    /// Embeddings per image for its `h x w` crops: see the module docs.
    pub fn num_embeddings(&self, h: usize, w: usize) -> usize {
        let g = self.grid / 2;
        h * g * (w * g + 1) + 1 + g * (g + 1)
    }
}
