//! The activations HF configs name in `hidden_act` / `projector_hidden_act`
//! (transformers' `activations.py`).

use burn::tensor::Tensor;
use burn::tensor::activation;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Activation {
    #[default]
    #[serde(rename = "silu", alias = "swish")]
    Silu,
    /// Exact (erf) GELU.
    #[serde(rename = "gelu")]
    Gelu,
    /// GELU with the tanh approximation.
    #[serde(
        rename = "gelu_pytorch_tanh",
        alias = "gelu_new",
        alias = "gelu_fast",
        alias = "gelu_python_tanh"
    )]
    GeluTanh,
    /// `x * sigmoid(1.702 x)` (OpenAI CLIP).
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    #[serde(rename = "relu")]
    Relu,
}

impl Activation {
    pub fn forward<B: Backend, const D: usize>(self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self {
            Activation::Silu => activation::silu(x),
            Activation::Gelu => activation::gelu(x),
            Activation::GeluTanh => {
                // 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
                let inner = (x.clone() + x.clone().powi_scalar(3) * 0.044715)
                    * (2.0f64 / std::f64::consts::PI).sqrt();
                x * (inner.tanh() + 1.0) * 0.5
            }
            Activation::QuickGelu => x.clone() * activation::sigmoid(x * 1.702),
            Activation::Relu => activation::relu(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Cpu;

    fn eval(a: Activation, x: f32) -> f32 {
        let t = Tensor::<Cpu, 1>::from_floats([x], &Default::default());
        a.forward(t).into_data().to_vec::<f32>().unwrap()[0]
    }

    #[test]
    fn values_match_pytorch() {
        // Printed by torch 2.15 (float64) for x = 1.3: F.silu, F.gelu, F.gelu(approximate='tanh'),
        // x * sigmoid(1.702 x).
        assert!((eval(Activation::Silu, 1.3) - 1.021_585_5).abs() < 1e-6);
        assert!((eval(Activation::Gelu, 1.3) - 1.174_159_4).abs() < 1e-6);
        assert!((eval(Activation::GeluTanh, 1.3) - 1.173_929).abs() < 1e-6);
        assert!((eval(Activation::QuickGelu, 1.3) - 1.171_787_9).abs() < 1e-6);
        let a: Activation = serde_json::from_str("\"gelu_pytorch_tanh\"").unwrap();
        assert_eq!(a, Activation::GeluTanh);
    }
}
