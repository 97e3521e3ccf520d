//! Layer-level activation checkpointing: what HF's `gradient_checkpointing_enable()` does
//! (`torch.utils.checkpoint` around every decoder layer, `modeling_utils.py`). The forward keeps
//! only each layer's input; the backward reruns one layer at a time under autodiff and chains
//! the gradients down the stack, so at most one layer's activations are alive at once.
//!
//! burn 0.21 cannot rerun a sub-graph from inside `backward()` (its autodiff-level
//! `BalancedCheckpointing` only recomputes element-wise ops and keeps every matmul's inputs,
//! which saved nothing here: docs/BENCHMARKS.md), so the trainer drives it:
//!
//! 1. [`Recompute::begin`] installs a tape for the backend on this thread.
//! 2. Model code runs its layers through a [`Stack`]. With a tape, each layer runs on detached
//!    inputs with its parameters detached (no graph, no saved activations), its output becomes
//!    a fresh leaf, and the layer, its input and its dropout seeds are recorded. Without one (no
//!    checkpointing, inference) a `Stack` just calls the layer.
//! 3. The loss's backward stops at the last layer's output leaf; [`Recording::backward`] then
//!    reruns the layers last to first: each rerun's output is multiplied by the gradient that
//!    reached it and summed, and the backward of that scalar yields the layer's parameter
//!    gradients and the gradient of its input (a vector-Jacobian product). What flows out of
//!    the stack's bottom (into the embeddings, the projector, the vision tower) runs through
//!    their still-recorded graph in one last pass.
//!
//! LoRA dropout draws the same masks in the rerun: the first forward records the seeds it drew
//! ([`dropout_seed`]) and the rerun replays them, as `torch.utils.checkpoint` restores the RNG
//! state.

use crate::error::Result;
use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use std::any::{Any, TypeId};
use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

type Rerun<B> = Box<dyn Fn(Tensor<B, 3>, &[Tensor<B, 3>]) -> Result<Tensor<B, 3>>>;

/// One checkpointed layer call.
struct Record<B: Backend> {
    /// The layer's input: the previous record's output when `chained`, else a tensor from below
    /// the stack (whose graph is still recorded).
    input: Tensor<B, 3>,
    chained: bool,
    /// Further inputs from below the stack (Mllama's vision states).
    extras: Vec<Tensor<B, 3>>,
    /// The output leaf the rest of the forward was built on.
    output: Tensor<B, 3>,
    rerun: Rerun<B>,
    seeds: Vec<u64>,
}

/// The layers checkpointed in one forward, in call order.
pub struct Recompute<B: Backend> {
    records: RefCell<Vec<Record<B>>>,
}

thread_local! {
    /// The active tape per backend type (a thread may train on one backend at a time; the map
    /// keeps generic model code free of an extra bound).
    static ACTIVE: RefCell<Vec<(TypeId, Rc<dyn Any>)>> = const { RefCell::new(Vec::new()) };
    static SEEDS: RefCell<Seeds> = const { RefCell::new(Seeds::Off) };
}

enum Seeds {
    Off,
    Record(Vec<u64>),
    Replay(VecDeque<u64>),
}

/// The seed for one dropout mask. While a checkpointed layer runs its first forward the seed
/// `draw` returns is recorded; while it reruns, the recorded one comes back instead.
pub fn dropout_seed(draw: impl FnOnce() -> u64) -> u64 {
    SEEDS.with(|s| match &mut *s.borrow_mut() {
        Seeds::Off => draw(),
        Seeds::Record(seeds) => {
            let seed = draw();
            seeds.push(seed);
            seed
        }
        Seeds::Replay(seeds) => seeds.pop_front().unwrap_or_else(draw),
    })
}

/// Whether dropout masks must come from [`dropout_seed`] (a checkpointed layer is running), so
/// that its rerun draws the same ones.
pub fn seeds_tracked() -> bool {
    SEEDS.with(|s| !matches!(*s.borrow(), Seeds::Off))
}

/// Runs `f` with the dropout seeds in `mode`, and returns what it recorded.
fn with_seeds<T>(mode: Seeds, f: impl FnOnce() -> T) -> (T, Vec<u64>) {
    let saved = SEEDS.with(|s| std::mem::replace(&mut *s.borrow_mut(), mode));
    let out = f();
    let used = SEEDS.with(|s| std::mem::replace(&mut *s.borrow_mut(), saved));
    let seeds = match used {
        Seeds::Record(seeds) => seeds,
        _ => Vec::new(),
    };
    (out, seeds)
}

fn active<B: Backend>() -> Option<Rc<Recompute<B>>> {
    ACTIVE.with(|a| {
        a.borrow()
            .iter()
            .find(|(id, _)| *id == TypeId::of::<B>())
            .and_then(|(_, tape)| tape.clone().downcast::<Recompute<B>>().ok())
    })
}

fn uninstall<B: Backend>() {
    ACTIVE.with(|a| a.borrow_mut().retain(|(id, _)| *id != TypeId::of::<B>()));
}

/// Layers whose hidden state flows from one to the next (a decoder's layer loop). The stack
/// holds the hidden state so that each checkpointed layer's input is known to be the previous
/// one's output.
pub struct Stack<B: Backend> {
    hidden: Tensor<B, 3>,
    tape: Option<Rc<Recompute<B>>>,
    chained: bool,
}

impl<B: Backend> Stack<B> {
    /// A stack starting from `hidden`, checkpointed when a tape is active for `B`.
    pub fn new(hidden: Tensor<B, 3>) -> Self {
        Stack {
            hidden,
            tape: active::<B>(),
            chained: false,
        }
    }

    /// Applies `f(layer, hidden, extras)`. `f` owns whatever else it reads (rope tables, masks:
    /// constants), since a checkpointed layer reruns it in the backward; tensors that need a
    /// gradient and do not come through the stack go in `extras`.
    pub fn layer<L, F>(&mut self, layer: &L, extras: Vec<Tensor<B, 3>>, f: F)
    where
        L: Module<B> + 'static,
        F: Fn(&L, Tensor<B, 3>, &[Tensor<B, 3>]) -> Tensor<B, 3> + 'static,
    {
        self.try_layer(layer, extras, move |l, x, e| Ok(f(l, x, e)))
            .expect("an infallible layer");
    }

    /// [`Self::layer`] for a layer whose forward can fail.
    pub fn try_layer<L, F>(&mut self, layer: &L, extras: Vec<Tensor<B, 3>>, f: F) -> Result<()>
    where
        L: Module<B> + 'static,
        F: Fn(&L, Tensor<B, 3>, &[Tensor<B, 3>]) -> Result<Tensor<B, 3>> + 'static,
    {
        let Some(tape) = &self.tape else {
            self.hidden = f(layer, self.hidden.clone(), &extras)?;
            return Ok(());
        };
        // `set_require_grad(false)`, not `detach()`: a detached leaf would still be tracked.
        let detached: Vec<_> = extras
            .iter()
            .map(|e| e.clone().set_require_grad(false))
            .collect();
        let (out, seeds) = with_seeds(Seeds::Record(Vec::new()), || {
            f(
                &layer.clone().no_grad(),
                self.hidden.clone().set_require_grad(false),
                &detached,
            )
        });
        let output = out?.require_grad();
        let layer = layer.clone();
        tape.records.borrow_mut().push(Record {
            input: std::mem::replace(&mut self.hidden, output.clone()),
            chained: self.chained,
            extras,
            output,
            rerun: Box::new(move |x, extras| f(&layer, x, extras)),
            seeds,
        });
        self.chained = true;
        Ok(())
    }

    /// A stack for the layers of `module` that checkpoints only while something in it trains:
    /// a frozen tower's layers build no graph anyway, and rerunning them would only compute
    /// gradients nobody asked for.
    pub fn unless_frozen<M: Module<B>>(hidden: Tensor<B, 3>, module: &M) -> Self {
        let mut stack = Self::new(hidden);
        if stack.tape.is_some() && !trains(module) {
            stack.tape = None;
        }
        stack
    }

    /// The hidden state after the layers so far (e.g. an intermediate layer's output that a
    /// projector reads).
    pub fn hidden(&self) -> Tensor<B, 3> {
        self.hidden.clone()
    }

    pub fn into_hidden(self) -> Tensor<B, 3> {
        self.hidden
    }
}

/// Whether any parameter of `module` requires a gradient.
fn trains<B: Backend, M: Module<B>>(module: &M) -> bool {
    struct Trains(bool);
    impl<B: Backend> ModuleVisitor<B> for Trains {
        fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
            self.0 |= param.is_require_grad();
        }
    }
    let mut v = Trains(false);
    module.visit(&mut v);
    v.0
}

/// The tape of one forward, installed on this thread until [`Recording::backward`] or drop.
pub struct Recording<B: Backend> {
    tape: Rc<Recompute<B>>,
}

impl<B: Backend> Recompute<B> {
    /// Starts checkpointing the [`Stack`]s that backend `B` runs on this thread.
    pub fn begin() -> Recording<B> {
        let tape = Rc::new(Recompute {
            records: RefCell::new(Vec::new()),
        });
        uninstall::<B>();
        ACTIVE.with(|a| {
            a.borrow_mut()
                .push((TypeId::of::<B>(), tape.clone() as Rc<dyn Any>))
        });
        Recording { tape }
    }
}

impl<B: Backend> Recording<B> {
    /// Layers recorded so far.
    pub fn len(&self) -> usize {
        self.tape.records.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<B: Backend> Drop for Recording<B> {
    fn drop(&mut self) {
        uninstall::<B>();
    }
}

/// Adds `g` to an optional running sum.
fn add<T: std::ops::Add<Output = T>>(sum: &mut Option<T>, g: T) {
    *sum = Some(match sum.take() {
        Some(s) => s + g,
        None => g,
    });
}

impl<B: AutodiffBackend> Recording<B> {
    /// Finishes the backward pass that produced `grads` (the loss's, which stops at the
    /// recorded layers' outputs): reruns the layers last to first and runs what flows out of
    /// the stacks through the graph below them. `sink` receives `grads` and the gradients of
    /// every further pass; together they are the gradients of one ordinary backward (a
    /// parameter may appear in several and its parts add up).
    pub fn backward(self, grads: B::Gradients, mut sink: impl FnMut(B::Gradients)) -> Result<()> {
        uninstall::<B>();
        let records = std::mem::take(&mut *self.tape.records.borrow_mut());
        let mut pending: Vec<Option<Tensor<B::InnerBackend, 3>>> = Vec::new();
        collect(&records, &grads, &mut pending);
        sink(grads);
        // What leaves the current stack at its bottom: (tensor from below, its gradient).
        let mut below: Vec<(Tensor<B, 3>, Tensor<B::InnerBackend, 3>)> = Vec::new();
        for (i, record) in records.iter().enumerate().rev() {
            if let Some(g) = pending[i].take() {
                let x = record.input.clone().detach().require_grad();
                let extras: Vec<_> = record
                    .extras
                    .iter()
                    .map(|e| e.clone().detach().require_grad())
                    .collect();
                let replay = Seeds::Replay(record.seeds.iter().copied().collect());
                let (out, _) = with_seeds(replay, || (record.rerun)(x.clone(), &extras));
                let grads = (out? * Tensor::from_inner(g)).sum().backward();
                if let Some(gx) = x.grad(&grads) {
                    if record.chained {
                        add(&mut pending[i - 1], gx);
                    } else {
                        below.push((record.input.clone(), gx));
                    }
                }
                for (e, leaf) in record.extras.iter().zip(&extras) {
                    if let Some(ge) = leaf.grad(&grads) {
                        below.push((e.clone(), ge));
                    }
                }
                sink(grads);
            }
            if !record.chained && !below.is_empty() {
                // The stack's first layer: one pass through the graph below it, shared by
                // everything in `below`; it may reach the outputs of an earlier stack (a vision
                // tower's, under the LLM's). The extra leaf keeps the root tracked where nothing
                // below needs a gradient (frozen embeddings).
                let device = below[0].0.device();
                let mut total = Tensor::<B, 1>::zeros([1], &device).require_grad().sum();
                for (t, g) in below.drain(..) {
                    total = total + (t * Tensor::from_inner(g)).sum();
                }
                let grads = total.backward();
                collect(&records[..i], &grads, &mut pending);
                sink(grads);
            }
        }
        Ok(())
    }
}

/// Adds the gradients `grads` holds for the outputs of `records` to `pending`.
fn collect<B: AutodiffBackend>(
    records: &[Record<B>],
    grads: &B::Gradients,
    pending: &mut Vec<Option<Tensor<B::InnerBackend, 3>>>,
) {
    pending.resize_with(pending.len().max(records.len()), || None);
    for (r, p) in records.iter().zip(pending.iter_mut()) {
        if let Some(g) = r.output.grad(grads) {
            add(p, g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::CpuTrain;
    use burn::tensor::{Distribution, TensorData};

    #[derive(Module, Debug)]
    struct Scale<B: Backend> {
        w: Param<Tensor<B, 1>>,
    }

    fn grads_of(checkpoint: bool) -> (Vec<f32>, Vec<f32>, Vec<Vec<f32>>) {
        type B = CpuTrain;
        let dev = Default::default();
        B::seed(&dev, 11);
        let x0 = Tensor::<B, 3>::random([2, 3, 4], Distribution::Default, &dev).require_grad();
        let extra = Tensor::<B, 3>::random([2, 3, 4], Distribution::Default, &dev).require_grad();
        let layers: Vec<Scale<B>> = (0..5)
            .map(|i| Scale {
                w: Param::from_tensor(Tensor::from_data(
                    TensorData::new(vec![0.5 + i as f32, -1.0, 2.0, 0.25], [4]),
                    &dev,
                )),
            })
            .collect();
        let run = |l: &Scale<B>, x: Tensor<B, 3>, e: &[Tensor<B, 3>]| {
            let y = (x * l.w.val().unsqueeze::<3>()).sin();
            match e.first() {
                Some(e) => y * e.clone().exp(),
                None => y,
            }
        };
        let recording = checkpoint.then(Recompute::<B>::begin);
        // A first stack (a vision tower) whose intermediate and last outputs the graph between
        // the stacks reads, then a second one (the LLM) with an extra input on one layer.
        let mut tower = Stack::new(x0.clone().tanh() * 2.0);
        tower.layer(&layers[0], vec![], run);
        let middle = tower.hidden();
        tower.layer(&layers[1], vec![], run);
        let between = middle * 0.5 + tower.into_hidden().tanh();
        let mut stack = Stack::new(between);
        for (i, layer) in layers[2..].iter().enumerate() {
            let extras = if i == 1 { vec![extra.clone()] } else { vec![] };
            stack.layer(layer, extras, run);
        }
        if let Some(r) = &recording {
            assert_eq!(r.len(), 5);
        }
        let loss = stack.into_hidden().powf_scalar(2.0).sum();
        let mut all = Vec::new();
        match recording {
            Some(r) => r.backward(loss.backward(), |g| all.push(g)).unwrap(),
            None => all.push(loss.backward()),
        }
        let sum = |f: &dyn Fn(&<B as AutodiffBackend>::Gradients) -> Option<Vec<f32>>| {
            all.iter()
                .filter_map(f)
                .reduce(|a, b| a.iter().zip(&b).map(|(a, b)| a + b).collect())
                .expect("a gradient")
        };
        let vec = |t: Tensor<_, 3>| t.into_data().to_vec::<f32>().unwrap();
        let gx = sum(&|g| x0.grad(g).map(vec));
        let ge = sum(&|g| extra.grad(g).map(vec));
        let gw = layers
            .iter()
            .map(|l| sum(&|g| l.w.val().grad(g).map(|t| t.into_data().to_vec().unwrap())))
            .collect();
        (gx, ge, gw)
    }

    #[test]
    fn rerun_gives_the_gradients_of_one_backward() {
        let (plain, checkpointed) = (grads_of(false), grads_of(true));
        let close = |a: &[f32], b: &[f32]| {
            a.len() == b.len() && a.iter().zip(b).all(|(a, b)| (a - b).abs() <= 1e-5)
        };
        assert!(close(&plain.0, &checkpointed.0), "input gradients differ");
        assert!(
            close(&plain.1, &checkpointed.1),
            "extra-input gradients differ"
        );
        for (p, c) in plain.2.iter().zip(&checkpointed.2) {
            assert!(close(p, c), "layer gradients differ: {p:?} vs {c:?}");
        }
        assert!(active::<CpuTrain>().is_none(), "the tape is uninstalled");
    }

    #[test]
    fn frozen_modules_are_not_checkpointed() {
        let dev = Default::default();
        let layer = Scale::<CpuTrain> {
            w: Param::from_tensor(Tensor::ones([4], &dev)),
        };
        let x = || Tensor::<CpuTrain, 3>::ones([1, 2, 4], &dev);
        let recording = Recompute::<CpuTrain>::begin();
        let mut frozen = Stack::unless_frozen(x(), &layer.clone().no_grad());
        frozen.layer(&layer, vec![], |l, x, _| x * l.w.val().unsqueeze::<3>());
        assert!(recording.is_empty());
        let mut trained = Stack::unless_frozen(x(), &layer);
        trained.layer(&layer, vec![], |l, x, _| x * l.w.val().unsqueeze::<3>());
        assert_eq!(recording.len(), 1);
    }

    #[test]
    fn seeds_replay_in_order() {
        let mut n = 0;
        let (_, seeds) = with_seeds(Seeds::Record(Vec::new()), || {
            assert!(seeds_tracked());
            for _ in 0..3 {
                dropout_seed(|| {
                    n += 1;
                    n
                });
            }
        });
        assert_eq!(seeds, vec![1, 2, 3]);
        let (replayed, _) = with_seeds(Seeds::Replay(seeds.into()), || {
            (0..3).map(|_| dropout_seed(|| 99)).collect::<Vec<_>>()
        });
        assert_eq!(replayed, vec![1, 2, 3]);
        assert!(!seeds_tracked());
    }
}
