//! The key/value cache of incremental decoding (transformers' `DynamicCache`): each layer's
//! rotated keys and values of every token seen so far, the attention mask over them, and the
//! position the next token of each row takes. A prompt is run once (the prefill, which also
//! computes the vision features once); each new token then runs alone against the cache.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

/// One attention layer's cached keys and values, `[B, KV, T, D]` (before the kv heads are
/// repeated for their query heads; keys after RoPE).
#[derive(Debug, Clone)]
pub struct LayerKv<B: Backend> {
    pub k: Option<Tensor<B, 4>>,
    pub v: Option<Tensor<B, 4>>,
}

impl<B: Backend> Default for LayerKv<B> {
    fn default() -> Self {
        LayerKv { k: None, v: None }
    }
}

impl<B: Backend> LayerKv<B> {
    /// Appends the new keys and values (along T) and returns all of them.
    pub fn append(&mut self, k: Tensor<B, 4>, v: Tensor<B, 4>) -> (Tensor<B, 4>, Tensor<B, 4>) {
        let k = match self.k.take() {
            Some(past) => Tensor::cat(vec![past, k], 2),
            None => k,
        };
        let v = match self.v.take() {
            Some(past) => Tensor::cat(vec![past, v], 2),
            None => v,
        };
        self.k = Some(k.clone());
        self.v = Some(v.clone());
        (k, v)
    }
}

/// What cross-attention layers (Mllama's) apply to each new token: its additive mask over the
/// attended sequence `[B, 1, 1, S]` and whether it sees any of it (`[B, 1, 1]`, 0 or 1), both
/// the prompt's last row's (transformers extends `cross_attention_mask` by repeating that row).
/// The layers' keys and values of that sequence sit in their [`LayerKv`], computed once.
#[derive(Debug, Clone)]
pub struct CrossState<B: Backend> {
    pub bias: Option<Tensor<B, 4>>,
    pub rows: Option<Tensor<B, 3>>,
}

/// The cache of a whole decoder, for a batch of `batch` rows.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    pub layers: Vec<LayerKv<B>>,
    pub batch: usize,
    /// Tokens cached per row.
    pub len: usize,
    /// Tokens of the prompt (the first run into the cache): QWen keeps the NTK scaling the
    /// prompt's length chose for every later token.
    pub prompt_len: usize,
    /// Row-major `[batch, len]`: 1 for a real token, 0 for padding (HF's convention).
    pub attention_mask: Vec<i64>,
    /// The RoPE position of each row's next token.
    pub next_position: Vec<i64>,
    /// For decoders with cross-attention layers, when the prompt had something to attend to.
    pub cross: Option<CrossState<B>>,
}

impl<B: Backend> KvCache<B> {
    pub fn new(num_layers: usize, batch: usize) -> Self {
        KvCache {
            layers: (0..num_layers).map(|_| LayerKv::default()).collect(),
            batch,
            len: 0,
            prompt_len: 0,
            attention_mask: vec![],
            next_position: vec![0; batch],
            cross: None,
        }
    }

    /// Records `tq` new tokens per row with their mask (`None`: all real), and returns the mask
    /// over every cached token, new ones included.
    pub fn extend_mask(&mut self, new: Option<&[i64]>, tq: usize) -> &[i64] {
        let (b, t) = (self.batch, self.len);
        let mut mask = Vec::with_capacity(b * (t + tq));
        for r in 0..b {
            mask.extend_from_slice(&self.attention_mask[r * t..(r + 1) * t]);
            match new {
                Some(m) => mask.extend_from_slice(&m[r * tq..(r + 1) * tq]),
                None => mask.extend(std::iter::repeat_n(1, tq)),
            }
        }
        self.attention_mask = mask;
        if t == 0 {
            self.prompt_len = tq;
        }
        self.len = t + tq;
        &self.attention_mask
    }

    /// Sets each row's next position to one past the largest of `positions` (row-major
    /// `[batch, seq]`, or `[k, batch, seq]` for multi-axis positions such as M-RoPE's).
    pub fn continue_after(&mut self, positions: &[i64], seq: usize) {
        let mut next = vec![i64::MIN; self.batch];
        for (i, &p) in positions.iter().enumerate() {
            let row = (i / seq.max(1)) % self.batch;
            next[row] = next[row].max(p + 1);
        }
        self.next_position = next;
    }
}
