//! Token-by-token decoding of a family's model, shared by `lmms chat` ([`Generator`]) and the
//! greedy check of `lmms parity`: with a KV cache when the family has one
//! ([`FamilyModel::prefill`]: the prompt and its images run once, then one token per step), else
//! by rerunning the whole sequence each step (transformers' `generate` with `use_cache=False`).

use crate::collator::Collator;
use crate::error::{Error, Result};
use crate::generate::{GenerateOptions, Generation, Generator, Sampler, StopReason, TextStream};
use crate::llm::KvCache;
use crate::runtime::FamilyModel;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

enum State<I, B: Backend> {
    Cached(KvCache<B>),
    /// The whole sequence so far.
    Full(I),
}

/// Next-token logits of the first row, step after step.
pub struct Decoder<'a, F: FamilyModel, B: Backend> {
    family: &'a F,
    model: &'a F::Model<B>,
    device: B::Device,
    state: State<F::Inputs, B>,
}

impl<'a, F: FamilyModel, B: Backend> Decoder<'a, F, B> {
    /// Runs the prompt; the logits that pick the first new token. `use_cache: false` forces the
    /// uncached path (to check one against the other).
    pub fn start(
        family: &'a F,
        model: &'a F::Model<B>,
        mut prompt: F::Inputs,
        use_cache: bool,
        device: &B::Device,
    ) -> Result<(Self, Vec<f32>)> {
        if use_cache && let Some((logits, cache)) = family.prefill(model, &prompt, device)? {
            let decoder = Decoder {
                family,
                model,
                device: device.clone(),
                state: State::Cached(cache),
            };
            return Ok((decoder, first_row2(logits)?));
        }
        if family.tokens_mut(&mut prompt).is_none() {
            return Err(Error::Unsupported(
                "this family cannot generate text yet".into(),
            ));
        }
        let logits = family.forward(model, &prompt, device)?;
        let decoder = Decoder {
            family,
            model,
            device: device.clone(),
            state: State::Full(prompt),
        };
        Ok((decoder, last_of_first_row(logits)?))
    }

    /// Whether the steps run against a KV cache.
    pub fn is_cached(&self) -> bool {
        matches!(self.state, State::Cached(_))
    }

    /// Appends `id` and returns the logits that pick the token after it.
    pub fn next(&mut self, id: u32) -> Result<Vec<f32>> {
        match &mut self.state {
            State::Cached(cache) => {
                let logits =
                    self.family
                        .decode(self.model, &[i64::from(id)], cache, &self.device)?;
                first_row2(logits)
            }
            State::Full(inputs) => {
                if let Some(tokens) = self.family.tokens_mut(inputs) {
                    tokens.push(i64::from(id));
                }
                let logits = self.family.forward(self.model, inputs, &self.device)?;
                last_of_first_row(logits)
            }
        }
    }
}

fn first_row2<B: Backend>(logits: Tensor<B, 2>) -> Result<Vec<f32>> {
    let [_, v] = logits.dims();
    read(logits.slice([0..1, 0..v]).reshape([v]))
}

fn last_of_first_row<B: Backend>(logits: Tensor<B, 3>) -> Result<Vec<f32>> {
    let [_, t, v] = logits.dims();
    read(logits.slice([0..1, t - 1..t]).reshape([v]))
}

fn read<B: Backend>(t: Tensor<B, 1>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|e| Error::Batch(format!("cannot read the logits: {e:?}")))
}

/// A greedy continuation: the ids, the logits that picked each, and whether it ran with a KV
/// cache.
pub struct Greedy {
    pub ids: Vec<u32>,
    pub logits: Vec<Vec<f32>>,
    pub cached: bool,
}

/// The greedy continuation of `prompt`, `n` tokens, stop tokens included (the parity check:
/// transformers' greedy `generate` with no EOS).
pub fn greedy<F: FamilyModel, B: Backend>(
    family: &F,
    model: &F::Model<B>,
    prompt: F::Inputs,
    n: usize,
    use_cache: bool,
    device: &B::Device,
) -> Result<Greedy> {
    let (mut decoder, mut logits) = Decoder::start(family, model, prompt, use_cache, device)?;
    let mut out = Greedy {
        ids: Vec::with_capacity(n),
        logits: Vec::with_capacity(n),
        cached: decoder.is_cached(),
    };
    let mut sampler = Sampler::new(0);
    let options = GenerateOptions::default();
    for i in 0..n {
        let id = sampler.pick(&mut logits, &[], &options);
        out.ids.push(id);
        out.logits.push(logits);
        if i + 1 < n {
            logits = decoder.next(id)?;
        } else {
            logits = vec![];
        }
    }
    Ok(out)
}

/// A loaded model, its collator and device: what `lmms chat` talks to.
pub(crate) struct FamilyGenerator<'a, F: FamilyModel, B: Backend> {
    pub family: &'a F,
    pub model: F::Model<B>,
    pub collator: F::Collator,
    pub device: B::Device,
}

impl<F: FamilyModel, B: Backend> Generator for FamilyGenerator<'_, F, B> {
    fn generate(
        &mut self,
        conversation: &crate::data::Sample,
        options: &GenerateOptions,
        on_text: &mut dyn FnMut(&str),
    ) -> Result<Generation> {
        let start = std::time::Instant::now();
        let inputs = self.collator.prompt(conversation)?;
        let tokens = self.family.tokens(&inputs);
        let prompt_tokens = tokens.seq();
        // The prompt and the reply so far (the repetition penalty looks at both).
        let mut seen: Vec<u32> = tokens.input_ids.data.iter().map(|&i| i as u32).collect();
        let (mut decoder, mut logits) =
            Decoder::start(self.family, &self.model, inputs, true, &self.device)?;
        let stops = self.collator.stop_ids();
        let mut sampler = Sampler::new(options.seed);
        let mut stream = TextStream::default();
        let mut stop = StopReason::MaxNewTokens;
        for step in 0..options.max_new_tokens {
            let next = sampler.pick(&mut logits, &seen, options);
            if stops.contains(&next) {
                stop = StopReason::Stop(next);
                break;
            }
            seen.push(next);
            let text = self.collator.decode(&seen[prompt_tokens..])?;
            on_text(stream.push(&text));
            if step + 1 < options.max_new_tokens {
                logits = decoder.next(next)?;
            }
        }
        let ids = seen.split_off(prompt_tokens);
        let text = self.collator.decode(&ids)?;
        on_text(stream.finish(&text));
        Ok(Generation {
            text,
            ids,
            prompt_tokens,
            stop,
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}
