//! Text generation from a conversation: the family's collator builds the prompt, the family's
//! forward gives the next-token logits, and a sampler picks the token (greedy by default, or
//! temperature / top-k / top-p / repetition penalty as transformers' `generate` applies them).
//! Every step runs the whole sequence again (no KV cache yet), which is fine for the short
//! replies of a check after training, not for long chats.

use crate::data::Sample;
use crate::error::Result;
use rand::SeedableRng;
use rand::distr::{Distribution, weighted::WeightedIndex};
use rand_chacha::ChaCha8Rng;

/// How to pick tokens, with transformers' names and defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    /// 0 = off.
    pub top_k: usize,
    /// 1 = off.
    pub top_p: f32,
    /// 1 = off.
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            max_new_tokens: 256,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

impl GenerateOptions {
    /// transformers' defaults overridden by the model's `generation_config.json` in `dir`, when
    /// it has one: sampling only with `do_sample: true` (then `temperature`, `top_k` (default
    /// 50) and `top_p` apply), `repetition_penalty` and `max_new_tokens` either way.
    pub fn from_model_dir(dir: &std::path::Path) -> Result<Self> {
        let path = dir.join("generation_config.json");
        let mut o = GenerateOptions::default();
        if !path.is_file() {
            return Ok(o);
        }
        let v = crate::model_dir::read_json(&path)?;
        let num = |k: &str| v.get(k).and_then(serde_json::Value::as_f64);
        if v.get("do_sample").and_then(serde_json::Value::as_bool) == Some(true) {
            o.temperature = num("temperature").unwrap_or(1.0) as f32;
            o.top_k = num("top_k").unwrap_or(50.0) as usize;
            o.top_p = num("top_p").unwrap_or(1.0) as f32;
        }
        if let Some(r) = num("repetition_penalty") {
            o.repetition_penalty = r as f32;
        }
        if let Some(n) = num("max_new_tokens") {
            o.max_new_tokens = n as usize;
        }
        o.validate()
            .map_err(|e| crate::error::Error::config(&path, e))?;
        Ok(o)
    }

    /// Checks the ranges transformers accepts.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.temperature.is_nan() || self.temperature < 0.0 {
            return Err(format!("temperature must be >= 0, is {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p must be in (0, 1], is {}", self.top_p));
        }
        if self.repetition_penalty.is_nan() || self.repetition_penalty <= 0.0 {
            return Err(format!(
                "repetition_penalty must be > 0, is {}",
                self.repetition_penalty
            ));
        }
        Ok(())
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// A stop id (EOS or end of turn) was generated; it is not in the reply.
    Stop(u32),
    MaxNewTokens,
}

/// One reply.
#[derive(Debug, Clone)]
pub struct Generation {
    pub text: String,
    pub ids: Vec<u32>,
    pub prompt_tokens: usize,
    pub stop: StopReason,
    pub seconds: f64,
}

/// A loaded model that answers conversations.
pub trait Generator {
    /// Generates the assistant's reply to `conversation` (its last turn is the user's).
    /// `on_text` receives the reply's text as it grows, piece by piece.
    fn generate(
        &mut self,
        conversation: &Sample,
        options: &GenerateOptions,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation>;
}

/// Picks the next token from the last position's logits, as transformers' logits processors
/// do: repetition penalty over `history`, then temperature, top-k, top-p; greedy at temperature
/// 0.
pub struct Sampler {
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(seed: u64) -> Self {
        Sampler {
            rng: ChaCha8Rng::seed_from_u64(seed),
        }
    }

    pub fn pick(&mut self, logits: &mut [f32], history: &[u32], o: &GenerateOptions) -> u32 {
        if o.repetition_penalty != 1.0 {
            let mut seen = history.to_vec();
            seen.sort_unstable();
            seen.dedup();
            for id in seen {
                if let Some(l) = logits.get_mut(id as usize) {
                    *l = if *l < 0.0 {
                        *l * o.repetition_penalty
                    } else {
                        *l / o.repetition_penalty
                    };
                }
            }
        }
        let argmax = || {
            let mut best = 0;
            for (i, &l) in logits.iter().enumerate() {
                if l > logits[best] {
                    best = i;
                }
            }
            best as u32
        };
        if o.temperature <= 0.0 {
            return argmax();
        }
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        if o.top_k > 0 {
            order.truncate(o.top_k);
        }
        let max = logits[order[0]];
        let mut probs: Vec<f64> = order
            .iter()
            .map(|&i| (((logits[i] - max) / o.temperature) as f64).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if o.top_p < 1.0 {
            // Keep the smallest head whose mass reaches top_p (at least one token).
            let mut mass = 0.0;
            let mut keep = probs.len();
            for (k, p) in probs.iter().enumerate() {
                mass += p;
                if mass >= f64::from(o.top_p) {
                    keep = k + 1;
                    break;
                }
            }
            probs.truncate(keep);
            order.truncate(keep);
        }
        match WeightedIndex::new(&probs) {
            Ok(dist) => order[dist.sample(&mut self.rng)] as u32,
            Err(_) => argmax(),
        }
    }
}

/// Emits the new part of a growing decoded text, holding back an incomplete UTF-8 character
/// (decoders write U+FFFD for a byte-fallback token whose character is not complete yet).
#[derive(Debug, Default)]
pub struct TextStream {
    sent: usize,
}

impl TextStream {
    pub fn push<'a>(&mut self, full: &'a str) -> &'a str {
        if full.ends_with('\u{fffd}') || full.len() < self.sent || !full.is_char_boundary(self.sent)
        {
            return "";
        }
        let new = &full[self.sent..];
        self.sent = full.len();
        new
    }

    /// What is left at the end, incomplete characters included.
    pub fn finish<'a>(&mut self, full: &'a str) -> &'a str {
        if full.len() < self.sent || !full.is_char_boundary(self.sent) {
            return "";
        }
        let new = &full[self.sent..];
        self.sent = full.len();
        new
    }
}

/// A conversation for [`Generator::generate`]: optional system prompt, alternating turns that end
/// with the user's, and the images their `<image>` placeholders stand for, in order.
pub fn conversation(
    system: Option<&str>,
    turns: &[(crate::data::Role, String)],
    images: &[std::path::PathBuf],
) -> Sample {
    Sample {
        origin: crate::data::SampleOrigin {
            file: "<chat>".into(),
            index: 0,
        },
        system: system.map(str::to_string),
        turns: turns
            .iter()
            .map(|(role, content)| crate::data::Turn {
                role: *role,
                content: content.clone(),
            })
            .collect(),
        images: images.to_vec(),
        videos: vec![],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_argmax_and_penalty_changes_it() {
        let mut s = Sampler::new(0);
        let o = GenerateOptions::default();
        assert_eq!(s.pick(&mut [0.1, 2.0, 1.9], &[], &o), 1);
        let o = GenerateOptions {
            repetition_penalty: 1.2,
            ..o
        };
        // 2.0 / 1.2 < 1.9: the repeated token loses.
        assert_eq!(s.pick(&mut [0.1, 2.0, 1.9], &[1], &o), 2);
    }

    #[test]
    fn top_k_one_is_greedy_and_sampling_is_seeded() {
        let o = GenerateOptions {
            temperature: 1.0,
            top_k: 1,
            ..Default::default()
        };
        assert_eq!(Sampler::new(3).pick(&mut [0.0, 5.0, 4.0], &[], &o), 1);
        let o = GenerateOptions {
            temperature: 1.0,
            ..Default::default()
        };
        let draw = |seed| {
            let mut s = Sampler::new(seed);
            (0..20)
                .map(|_| s.pick(&mut [1.0, 1.0, 1.0, 1.0], &[], &o))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(5), draw(5));
        assert!(draw(5).iter().any(|&t| t != draw(5)[0]));
    }

    #[test]
    fn generation_config_sets_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            GenerateOptions::from_model_dir(dir.path()).unwrap(),
            GenerateOptions::default()
        );
        let gc = dir.path().join("generation_config.json");
        std::fs::write(
            &gc,
            r#"{"temperature": 0.7, "top_p": 0.8, "repetition_penalty": 1.05}"#,
        )
        .unwrap();
        // Without do_sample transformers decodes greedily whatever the temperature.
        let o = GenerateOptions::from_model_dir(dir.path()).unwrap();
        assert_eq!(
            (o.temperature, o.top_p, o.repetition_penalty),
            (0.0, 1.0, 1.05)
        );
        std::fs::write(
            &gc,
            r#"{"do_sample": true, "temperature": 0.7, "top_p": 0.8, "max_new_tokens": 64}"#,
        )
        .unwrap();
        let o = GenerateOptions::from_model_dir(dir.path()).unwrap();
        assert_eq!(
            (o.temperature, o.top_k, o.top_p, o.max_new_tokens),
            (0.7, 50, 0.8, 64)
        );
        std::fs::write(&gc, r#"{"do_sample": true, "top_p": 1.5}"#).unwrap();
        let e = GenerateOptions::from_model_dir(dir.path()).unwrap_err();
        assert!(e.to_string().contains("top_p must be in (0, 1]"), "{e}");
    }

    #[test]
    fn stream_holds_back_incomplete_characters() {
        let mut st = TextStream::default();
        assert_eq!(st.push("He"), "He");
        assert_eq!(st.push("Hell\u{fffd}"), "");
        assert_eq!(st.push("Hello"), "llo");
        assert_eq!(st.finish("Hello!"), "!");
    }
}
