//! The training engine: AdamW with per-part learning rates and no weight decay on norms and
//! biases, HF's learning-rate schedules, gradient accumulation and clipping by global norm.

pub mod checkpoint;
pub mod optimizer;
pub mod run;
pub mod schedule;
pub mod trainer;

pub use optimizer::{GroupedAdamW, OptimizerConfig, ParamGroup};
pub use schedule::{Schedule, ScheduleKind};
pub use trainer::{StepStats, Trainer};
