//! What trains and how, per part of a model (vision tower, projector, LLM): frozen, full,
//! LoRA or QLoRA, each part with its own learning rate. LoRA settings and the adapter files we
//! write follow PEFT's `LoraConfig` (`r`, `lora_alpha`, `lora_dropout`, `target_modules` as a list
//! of names or a regex matched against the whole module path).

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The parts of a multimodal model that train independently. A family maps each of its
/// modules to one part (e.g. LLaVA-NeXT's `image_newline` goes with the projector).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    VisionTower,
    Projector,
    Llm,
}

impl Part {
    pub const ALL: [Part; 3] = [Part::VisionTower, Part::Projector, Part::Llm];
}

impl fmt::Display for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Part::VisionTower => "vision tower",
            Part::Projector => "projector",
            Part::Llm => "LLM",
        })
    }
}

/// Which modules get LoRA. PEFT semantics: a name matches a module whose path is that name or
/// ends with `.name`; a regex must match the whole path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetModules {
    /// Every linear layer of the part (lmms-finetune's default), except the LM head.
    AllLinear,
    Names(Vec<String>),
    Regex(String),
}

impl TargetModules {
    /// Whether the module at `path` (e.g. `model.layers.0.self_attn.q_proj`) is targeted.
    /// `AllLinear` leaves the decision to the caller, which knows which modules are linear.
    pub fn matches(&self, path: &str) -> Result<bool> {
        Ok(match self {
            TargetModules::AllLinear => true,
            TargetModules::Names(names) => names
                .iter()
                .any(|n| path == n || path.ends_with(&format!(".{n}"))),
            TargetModules::Regex(re) => {
                let re = regex::Regex::new(&format!("^(?:{re})$")).map_err(|e| {
                    Error::Strategy(format!("bad target_modules regex `{re}`: {e}"))
                })?;
                re.is_match(path)
            }
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub r: usize,
    pub alpha: f64,
    pub dropout: f64,
    pub target_modules: TargetModules,
    /// rsLoRA scaling `alpha / sqrt(r)` instead of `alpha / r`.
    #[serde(default)]
    pub use_rslora: bool,
}

impl Default for LoraConfig {
    /// lmms-finetune's defaults: r 8, alpha 8, dropout 0.05, all linear layers.
    fn default() -> Self {
        LoraConfig {
            r: 8,
            alpha: 8.0,
            dropout: 0.05,
            target_modules: TargetModules::AllLinear,
            use_rslora: false,
        }
    }
}

impl LoraConfig {
    /// The factor the LoRA product is scaled by, as PEFT computes it.
    pub fn scaling(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.r as f64).sqrt()
        } else {
            self.alpha / self.r as f64
        }
    }

    fn validate(&self, part: Part) -> Result<()> {
        if self.r == 0 {
            return Err(Error::Strategy(format!("LoRA rank r must be > 0 ({part})")));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::Strategy(format!(
                "LoRA dropout must be in [0, 1), got {} ({part})",
                self.dropout
            )));
        }
        self.target_modules.matches("").map(|_| ())
    }
}

/// 4-bit storage of the frozen base weights under QLoRA.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum QuantKind {
    /// 4-bit, symmetric, one scale per block.
    #[default]
    Q4Block,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QloraConfig {
    pub lora: LoraConfig,
    #[serde(default)]
    pub quant: QuantKind,
    /// Elements that share one scale.
    pub block_size: usize,
}

impl Default for QloraConfig {
    fn default() -> Self {
        QloraConfig {
            lora: LoraConfig::default(),
            quant: QuantKind::Q4Block,
            block_size: 64,
        }
    }
}

/// How one part trains.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum PartStrategy {
    #[default]
    Frozen,
    Full,
    Lora(LoraConfig),
    Qlora(QloraConfig),
}

impl PartStrategy {
    pub fn trains(&self) -> bool {
        !matches!(self, PartStrategy::Frozen)
    }

    /// The LoRA settings, for LoRA and QLoRA.
    pub fn lora(&self) -> Option<&LoraConfig> {
        match self {
            PartStrategy::Lora(l) => Some(l),
            PartStrategy::Qlora(q) => Some(&q.lora),
            _ => None,
        }
    }
}

/// Decides, for each part of a model, whether and how it trains. Families ask it while they
/// build the model (to wrap linear layers in LoRA, quantize frozen weights, freeze parameters);
/// the optimizer asks it for learning rates.
pub trait TrainStrategy: fmt::Debug + Send + Sync {
    fn part(&self, part: Part) -> &PartStrategy;

    /// The learning rate of a part, given the run's base learning rate.
    fn learning_rate(&self, part: Part, base: f64) -> f64 {
        let _ = part;
        base
    }

    /// Refuses combinations that cannot work.
    fn validate(&self) -> Result<()> {
        for part in Part::ALL {
            let s = self.part(part);
            if matches!(s, PartStrategy::Qlora(_)) && part != Part::Llm {
                return Err(Error::Strategy(format!(
                    "QLoRA quantizes the LLM only; the {part} can be frozen, full or LoRA"
                )));
            }
            if let Some(l) = s.lora() {
                l.validate(part)?;
            }
        }
        if Part::ALL.iter().all(|p| !self.part(*p).trains()) {
            return Err(Error::Strategy(
                "every part is frozen: nothing would train".into(),
            ));
        }
        Ok(())
    }
}

/// The usual strategy: one [`PartStrategy`] and an optional learning rate per part. It is what
/// `lmms train` flags and config files produce.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategySpec {
    pub vision_tower: PartStrategy,
    pub projector: PartStrategy,
    pub llm: PartStrategy,
    #[serde(default)]
    pub vision_tower_lr: Option<f64>,
    #[serde(default)]
    pub projector_lr: Option<f64>,
    #[serde(default)]
    pub llm_lr: Option<f64>,
}

impl Default for StrategySpec {
    /// lmms-finetune's default: LoRA on the LLM, vision tower frozen, projector trained.
    fn default() -> Self {
        StrategySpec {
            vision_tower: PartStrategy::Frozen,
            projector: PartStrategy::Full,
            llm: PartStrategy::Lora(LoraConfig::default()),
            vision_tower_lr: None,
            projector_lr: None,
            llm_lr: None,
        }
    }
}

impl TrainStrategy for StrategySpec {
    fn part(&self, part: Part) -> &PartStrategy {
        match part {
            Part::VisionTower => &self.vision_tower,
            Part::Projector => &self.projector,
            Part::Llm => &self.llm,
        }
    }

    fn learning_rate(&self, part: Part, base: f64) -> f64 {
        match part {
            Part::VisionTower => self.vision_tower_lr,
            Part::Projector => self.projector_lr,
            Part::Llm => self.llm_lr,
        }
        .unwrap_or(base)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peft_name_matching() {
        let t = TargetModules::Names(vec!["q_proj".into(), "v_proj".into()]);
        assert!(t.matches("model.layers.0.self_attn.q_proj").unwrap());
        assert!(t.matches("q_proj").unwrap());
        assert!(!t.matches("model.layers.0.self_attn.xq_proj").unwrap());
        let t = TargetModules::Regex(r".*language_model.*\.(q_proj|v_proj)".into());
        assert!(
            t.matches("language_model.model.layers.3.self_attn.v_proj")
                .unwrap()
        );
        assert!(
            !t.matches("vision_tower.encoder.layers.3.self_attn.v_proj")
                .unwrap()
        );
        // PEFT uses fullmatch: a prefix match is not enough.
        let t = TargetModules::Regex("q_proj".into());
        assert!(!t.matches("layers.0.q_proj").unwrap());
    }

    #[test]
    fn scaling_follows_peft() {
        let mut l = LoraConfig {
            r: 16,
            alpha: 32.0,
            ..Default::default()
        };
        assert_eq!(l.scaling(), 2.0);
        l.use_rslora = true;
        assert_eq!(l.scaling(), 8.0);
    }

    #[test]
    fn invalid_strategies_are_refused() {
        let mut s = StrategySpec {
            vision_tower: PartStrategy::Qlora(QloraConfig::default()),
            ..Default::default()
        };
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("QLoRA quantizes the LLM only")
        );
        s.vision_tower = PartStrategy::Frozen;
        s.validate().unwrap();
        s.projector = PartStrategy::Frozen;
        s.llm = PartStrategy::Frozen;
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("nothing would train")
        );
        s.llm = PartStrategy::Lora(LoraConfig {
            target_modules: TargetModules::Regex("(".into()),
            ..Default::default()
        });
        assert!(
            s.validate()
                .unwrap_err()
                .to_string()
                .contains("bad target_modules regex")
        );
    }

    #[test]
    fn per_part_learning_rates() {
        let s = StrategySpec {
            projector_lr: Some(2e-5),
            ..Default::default()
        };
        assert_eq!(s.learning_rate(Part::Projector, 1e-4), 2e-5);
        assert_eq!(s.learning_rate(Part::Llm, 1e-4), 1e-4);
    }
}
