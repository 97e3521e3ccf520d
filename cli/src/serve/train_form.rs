//! The training form the page posts, checked and turned into `lmms train` arguments. Every
//! path goes through the workspace fence; numbers are range-checked here so mistakes show at
//! once in the page rather than in a failed run. The dataset is loaded once up front (bad
//! data is reported before anything starts) and gives the total step count for the ETA.

use super::catalog::{ModelChoice, check_model};
use super::error::{ApiError, ApiResult};
use super::workspace::{Kind, Workspace};
use lmms_collators::dataset::{Dataset, DatasetOptions, MediaCheck};
use lmms_core::backend::DeviceSpec;
use serde::Deserialize;
use std::path::PathBuf;

fn yes() -> bool {
    true
}

fn frozen() -> String {
    "frozen".into()
}

/// The form as the page sends it; empty fields are `null` and take `lmms train`'s defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainForm {
    pub model: String,
    pub data: String,
    #[serde(default)]
    pub image_folder: Option<String>,
    pub output_dir: String,
    /// LLM: `lora`, `qlora` or `full`.
    pub strategy: String,
    /// Vision tower: `frozen`, `full` or `lora`.
    #[serde(default = "frozen")]
    pub vision: String,
    #[serde(default = "yes")]
    pub train_projector: bool,
    #[serde(default)]
    pub epochs: Option<f64>,
    #[serde(default)]
    pub max_steps: Option<u64>,
    #[serde(default)]
    pub learning_rate: Option<f64>,
    #[serde(default)]
    pub batch_size: Option<usize>,
    #[serde(default)]
    pub grad_accum: Option<usize>,
    #[serde(default)]
    pub lora_rank: Option<usize>,
    #[serde(default)]
    pub lora_alpha: Option<f64>,
    #[serde(default)]
    pub lora_dropout: Option<f64>,
    #[serde(default)]
    pub model_max_length: Option<usize>,
    #[serde(default)]
    pub lr_scheduler: Option<String>,
    #[serde(default)]
    pub warmup_ratio: Option<f64>,
    #[serde(default)]
    pub save_steps: Option<u64>,
    #[serde(default)]
    pub seed: Option<u64>,
    #[serde(default)]
    pub bf16: bool,
    #[serde(default)]
    pub overwrite: bool,
    #[serde(default)]
    pub resume: bool,
    #[serde(default)]
    pub device: Option<String>,
}

/// A checked form: the child's arguments and what the progress view needs.
#[derive(Debug, Clone)]
pub struct TrainPlan {
    /// Arguments after `lmms train`, paths relative to the workspace (the child's cwd).
    pub args: Vec<String>,
    pub model: ModelChoice,
    pub data: PathBuf,
    pub image_folder: Option<PathBuf>,
    pub output_dir: PathBuf,
    pub max_steps: Option<u64>,
    pub epochs: f64,
    pub batch_size: usize,
    pub grad_accum: usize,
    /// One line for the page: strategy and main settings.
    pub summary: String,
}

fn positive(what: &str, v: Option<f64>) -> ApiResult<()> {
    match v {
        Some(x) if !(x.is_finite() && x > 0.0) => {
            Err(ApiError::bad_request(format!("{what} must be > 0")))
        }
        _ => Ok(()),
    }
}

fn at_least_one<T: Into<u64> + Copy>(what: &str, v: Option<T>) -> ApiResult<()> {
    match v {
        Some(x) if x.into() == 0 => Err(ApiError::bad_request(format!("{what} must be >= 1"))),
        _ => Ok(()),
    }
}

impl TrainForm {
    /// Checks everything that can be checked without reading the data.
    pub fn plan(&self, ws: &Workspace) -> ApiResult<TrainPlan> {
        let model = check_model(ws, &self.model)?;
        // A family that loads it, and for an id a copy in the local Hugging Face cache; or
        // the error that says what is wrong, before anything starts.
        super::catalog::open_model(&model)?;
        let data = ws.existing("data file", &self.data, Kind::File)?;
        let image_folder = match self.image_folder.as_deref().map(str::trim) {
            Some(f) if !f.is_empty() => Some(ws.existing("image folder", f, Kind::Dir)?),
            _ => None,
        };
        let output_dir = ws.writable("output dir", &self.output_dir)?;
        if output_dir.is_file() {
            return Err(ApiError::bad_request(format!(
                "output dir `{}` is a file",
                self.output_dir
            )));
        }
        positive("epochs", self.epochs)?;
        positive("learning rate", self.learning_rate)?;
        positive("LoRA alpha", self.lora_alpha)?;
        at_least_one("max steps", self.max_steps)?;
        at_least_one("batch size", self.batch_size.map(|v| v as u64))?;
        at_least_one("gradient accumulation", self.grad_accum.map(|v| v as u64))?;
        at_least_one("LoRA rank", self.lora_rank.map(|v| v as u64))?;
        at_least_one("max length", self.model_max_length.map(|v| v as u64))?;
        at_least_one("save steps", self.save_steps)?;
        if let Some(p) = self.lora_dropout
            && !(0.0..1.0).contains(&p)
        {
            return Err(ApiError::bad_request("LoRA dropout must be in [0, 1)"));
        }
        if let Some(w) = self.warmup_ratio
            && !(0.0..=1.0).contains(&w)
        {
            return Err(ApiError::bad_request("warmup ratio must be in [0, 1]"));
        }
        if let Some(s) = &self.lr_scheduler
            && !["cosine", "linear", "constant"].contains(&s.as_str())
        {
            return Err(ApiError::bad_request(format!(
                "unknown schedule `{s}`: cosine, linear or constant"
            )));
        }
        let device = match self.device.as_deref().map(str::trim) {
            Some(d) if !d.is_empty() => Some(
                d.parse::<DeviceSpec>()
                    .map_err(ApiError::bad_request)?
                    .to_string(),
            ),
            _ => None,
        };
        if self.overwrite && self.resume {
            return Err(ApiError::bad_request(
                "choose either Overwrite (start afresh) or Resume (continue), not both",
            ));
        }
        let previous = ["adapter_config.json", "model.safetensors", "metrics.jsonl"]
            .iter()
            .any(|f| output_dir.join(f).is_file())
            || !lmms_core::train::checkpoint::list_checkpoints(&output_dir).is_empty();
        if previous && !self.overwrite && !self.resume {
            return Err(ApiError::conflict(format!(
                "output dir `{}` already holds a training run: tick Overwrite to start afresh \
                 (its outputs are deleted) or Resume to continue it, or choose another dir",
                ws.relative(&output_dir)
            )));
        }

        let mut args: Vec<String> = vec![
            "--model".into(),
            model.arg(ws),
            "--data".into(),
            ws.relative(&data),
            "--output-dir".into(),
            ws.relative(&output_dir),
            "--logging-steps".into(),
            "1".into(),
        ];
        let mut push = |flag: &str, v: Option<String>| {
            if let Some(v) = v {
                args.push(flag.into());
                args.push(v);
            }
        };
        push(
            "--image-folder",
            image_folder.as_ref().map(|f| ws.relative(f)),
        );
        let (llm, lora) = match self.strategy.as_str() {
            "lora" => ("LoRA", true),
            "qlora" => ("QLoRA", true),
            "full" => ("full", false),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown strategy `{other}`: lora, qlora or full"
                )));
            }
        };
        match self.strategy.as_str() {
            "lora" => push("--use-lora", Some("true".into())),
            "qlora" => push("--q-lora", Some("true".into())),
            _ => {}
        }
        let vision = match self.vision.as_str() {
            "frozen" => "vision frozen",
            "full" => {
                push("--train-vision-encoder", Some("true".into()));
                "vision full"
            }
            "lora" => {
                push("--train-vision-encoder", Some("true".into()));
                push("--use-vision-lora", Some("true".into()));
                "vision LoRA"
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown vision tower setting `{other}`: frozen, full or lora"
                )));
            }
        };
        if !self.train_projector {
            push("--train-vision-projector", Some("false".into()));
        }
        push("--epochs", self.epochs.map(|v| v.to_string()));
        push("--max-steps", self.max_steps.map(|v| v.to_string()));
        push("--learning-rate", self.learning_rate.map(|v| v.to_string()));
        push("--batch-size", self.batch_size.map(|v| v.to_string()));
        push("--grad-accum", self.grad_accum.map(|v| v.to_string()));
        if lora || self.vision == "lora" {
            push("--lora-rank", self.lora_rank.map(|v| v.to_string()));
            push("--lora-alpha", self.lora_alpha.map(|v| v.to_string()));
            push("--lora-dropout", self.lora_dropout.map(|v| v.to_string()));
        }
        push(
            "--model-max-length",
            self.model_max_length.map(|v| v.to_string()),
        );
        push("--lr-scheduler", self.lr_scheduler.clone());
        push("--warmup-ratio", self.warmup_ratio.map(|v| v.to_string()));
        push("--save-steps", self.save_steps.map(|v| v.to_string()));
        push("--seed", self.seed.map(|v| v.to_string()));
        push("--device", device);
        if self.bf16 {
            push("--bf16", Some("true".into()));
        }
        if self.overwrite {
            push("--overwrite-output-dir", Some("true".into()));
        }
        if self.resume {
            push("--resume", Some("true".into()));
        }
        let mut summary = format!("LLM {llm}, {vision}");
        if lora {
            summary += &format!(" · r {}", self.lora_rank.unwrap_or(8));
        }
        if let Some(lr) = self.learning_rate {
            summary += &format!(" · lr {lr:e}");
        }
        Ok(TrainPlan {
            args,
            model,
            data,
            image_folder,
            output_dir,
            max_steps: self.max_steps,
            epochs: self.epochs.unwrap_or(1.0),
            batch_size: self.batch_size.unwrap_or(1),
            grad_accum: self.grad_accum.unwrap_or(1),
            summary,
        })
    }
}

impl TrainPlan {
    /// Loads the dataset as `lmms train` will (media must exist) and returns the number of
    /// optimizer steps the run will take, computed as the trainer does.
    pub fn total_steps(&self) -> ApiResult<u64> {
        let options = DatasetOptions {
            image_folder: self.image_folder.clone(),
            media_check: MediaCheck::Exists,
            ..Default::default()
        };
        let data = Dataset::load(&self.data, &options)
            .map_err(|e| ApiError::bad_request(format!("{e:#}")))?;
        let len = data.epoch_len();
        if len == 0 {
            return Err(ApiError::bad_request("the training data has no samples"));
        }
        Ok(steps_for(
            len,
            self.batch_size,
            self.grad_accum,
            self.epochs,
            self.max_steps,
        ))
    }
}

/// The trainer's step count (core/src/train/run.rs): batches per epoch, divided by the
/// accumulation, times the epochs, unless `max_steps` is set.
pub fn steps_for(
    samples: usize,
    batch: usize,
    accum: usize,
    epochs: f64,
    max_steps: Option<u64>,
) -> u64 {
    let batches = samples.div_ceil(batch.max(1)) as u64;
    let per_epoch = batches.div_ceil(accum.max(1) as u64).max(1);
    max_steps
        .unwrap_or_else(|| (epochs * per_epoch as f64).ceil() as u64)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn form(model: &str, data: &str, out: &str) -> TrainForm {
        serde_json::from_value(serde_json::json!({
            "model": model, "data": data, "output_dir": out, "strategy": "lora",
            "max_steps": 5, "learning_rate": 0.01, "lora_rank": 4
        }))
        .unwrap()
    }

    fn workspace() -> (tempfile::TempDir, Workspace) {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("m")).unwrap();
        fs::write(
            d.path().join("m/config.json"),
            r#"{"architectures": ["LlavaForConditionalGeneration"]}"#,
        )
        .unwrap();
        fs::create_dir_all(d.path().join("unknown")).unwrap();
        fs::write(
            d.path().join("unknown/config.json"),
            r#"{"model_type": "nothing-we-know"}"#,
        )
        .unwrap();
        fs::write(d.path().join("d.json"), "[]").unwrap();
        let ws = Workspace::new(d.path()).unwrap();
        (d, ws)
    }

    #[test]
    fn a_form_becomes_train_arguments() {
        let (_d, ws) = workspace();
        let plan = form("m", "d.json", "out/r1").plan(&ws).unwrap();
        let args = plan.args.join(" ");
        assert!(
            args.starts_with("--model m --data d.json --output-dir out/r1 --logging-steps 1"),
            "{args}"
        );
        assert!(args.contains("--use-lora true"), "{args}");
        assert!(args.contains("--max-steps 5"), "{args}");
        assert!(args.contains("--learning-rate 0.01"), "{args}");
        assert!(args.contains("--lora-rank 4"), "{args}");
        assert!(!args.contains("--epochs"), "{args}");
        assert_eq!(plan.summary, "LLM LoRA, vision frozen · r 4 · lr 1e-2");
    }

    #[test]
    fn bad_paths_values_and_reused_outputs_are_refused() {
        let (d, ws) = workspace();
        let e = form("m", "../d.json", "out").plan(&ws).unwrap_err();
        assert!(e.message.contains("`..`"), "{}", e.message);
        let e = form("nope", "d.json", "out").plan(&ws).unwrap_err();
        assert!(e.message.contains("registered model id"), "{}", e.message);
        let e = form("unknown", "d.json", "out").plan(&ws).unwrap_err();
        assert!(e.message.contains("no registered family"), "{}", e.message);
        let e = form("m", "d.json", "/elsewhere").plan(&ws).unwrap_err();
        assert!(e.message.contains("outside the workspace"), "{}", e.message);
        let mut f = form("m", "d.json", "out");
        f.learning_rate = Some(-1.0);
        assert!(f.plan(&ws).unwrap_err().message.contains("learning rate"));
        let mut f = form("m", "d.json", "out");
        f.strategy = "magic".into();
        assert!(
            f.plan(&ws)
                .unwrap_err()
                .message
                .contains("unknown strategy")
        );
        fs::create_dir_all(d.path().join("out")).unwrap();
        fs::write(d.path().join("out/metrics.jsonl"), "").unwrap();
        let e = form("m", "d.json", "out").plan(&ws).unwrap_err();
        assert!(
            e.message.contains("already holds a training run"),
            "{}",
            e.message
        );
        let mut f = form("m", "d.json", "out");
        f.overwrite = true;
        assert!(
            f.plan(&ws)
                .unwrap()
                .args
                .contains(&"--overwrite-output-dir".into())
        );
    }

    #[test]
    fn steps_match_the_trainer() {
        assert_eq!(steps_for(10, 2, 1, 1.0, None), 5);
        assert_eq!(steps_for(10, 3, 2, 1.0, None), 2);
        assert_eq!(steps_for(10, 2, 1, 2.5, None), 13);
        assert_eq!(steps_for(10, 2, 1, 1.0, Some(30)), 30);
        assert_eq!(steps_for(1, 8, 8, 0.1, None), 1);
    }
}
