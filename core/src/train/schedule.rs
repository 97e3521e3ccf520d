//! Learning-rate schedules as transformers' `get_scheduler` builds them
//! (`optimization.py`): linear warmup, then constant, linear decay or cosine decay to zero. As in
//! HF, optimizer step `k` (0-based) uses the factor of `k`, so with warmup the first update has a
//! learning rate of zero.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    Constant,
    Linear,
    #[default]
    Cosine,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub warmup_steps: u64,
    pub total_steps: u64,
}

impl Schedule {
    /// The multiplier of the base learning rate at optimizer step `step`.
    pub fn factor(&self, step: u64) -> f64 {
        let (s, w, t) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        if step < self.warmup_steps {
            return s / w.max(1.0);
        }
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => ((t - s) / (t - w).max(1.0)).max(0.0),
            ScheduleKind::Cosine => {
                let progress = (s - w) / (t - w).max(1.0);
                (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// transformers 5.23 `get_scheduler(name, optimizer, num_warmup_steps=3,
    /// num_training_steps=10)` learning rates for base lr 1, steps 0..10 (printed by the
    /// project's Python venv).
    #[test]
    fn matches_transformers() {
        let expect_cosine = [
            0.0,
            0.3333333333333333,
            0.6666666666666666,
            1.0,
            0.9504844339512095,
            0.8117449009293668,
            0.6112604669781572,
            0.38873953302184283,
            0.18825509907063326,
            0.04951556604879048,
        ];
        let expect_linear = [
            0.0,
            0.3333333333333333,
            0.6666666666666666,
            1.0,
            0.8571428571428571,
            0.7142857142857143,
            0.5714285714285714,
            0.42857142857142855,
            0.2857142857142857,
            0.14285714285714285,
        ];
        for (kind, expect) in [
            (ScheduleKind::Cosine, expect_cosine),
            (ScheduleKind::Linear, expect_linear),
        ] {
            let s = Schedule {
                kind,
                warmup_steps: 3,
                total_steps: 10,
            };
            for (k, e) in expect.iter().enumerate() {
                assert!(
                    (s.factor(k as u64) - e).abs() < 1e-12,
                    "{kind:?} step {k}: {} vs {e}",
                    s.factor(k as u64)
                );
            }
        }
    }
}
