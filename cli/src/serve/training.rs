//! Training runs started from the page. Each run is a child process, the current executable
//! as `lmms train ...` with the workspace as its working directory, so a crash or an
//! out-of-memory kill takes down the run and not the server. Its progress comes from the
//! run's `metrics.jsonl` (followed by [`MetricsTail`]) and its standard error (log lines and
//! the final `error: ...`). Stopping sends SIGINT, which `lmms train` handles by writing a
//! checkpoint at the next step boundary and exiting (checkpoints are written to a temporary
//! directory and renamed, so nothing is left half-written); a run that has not ended
//! [`STOP_GRACE`] later is killed, and the temporary files of an interrupted write are removed.

use super::metrics_tail::{Metric, MetricsTail};
use super::train_form::TrainPlan;
use super::workspace::Workspace;
use serde::Serialize;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::{mpsc, watch};

/// How long a stopped run may take to write its checkpoint before it is killed.
pub const STOP_GRACE: Duration = Duration::from_secs(30);
/// Log lines kept per run (older ones are dropped).
const MAX_LOG_LINES: usize = 5000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Running,
    Stopping,
    Finished,
    Stopped,
    Failed,
}

impl Status {
    pub fn is_active(self) -> bool {
        matches!(self, Status::Running | Status::Stopping)
    }
}

#[derive(Debug)]
enum Control {
    Interrupt,
    Kill,
}

/// What describes a run and does not change.
#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    pub id: u64,
    pub model: String,
    pub data: String,
    pub output_dir: String,
    pub summary: String,
    /// The command line, for the log (paths relative to the workspace).
    pub command: String,
    pub started_unix: u64,
    /// Whether the run trains a LoRA adapter (chat then needs the base model and the adapter).
    pub adapter: bool,
}

struct State {
    status: Status,
    total_steps: u64,
    step: u64,
    /// Bumped when the metrics file was replaced (a cursor from before is stale).
    generation: u64,
    metrics: Vec<Metric>,
    logs: VecDeque<String>,
    /// Absolute index of `logs[0]`.
    logs_base: usize,
    started: Instant,
    /// (when, step) of the first and latest train metric, for the ETA.
    first: Option<(Instant, u64)>,
    last: Option<(Instant, u64)>,
    ended: Option<Instant>,
    message: Option<String>,
    last_error: Option<String>,
}

pub struct Job {
    pub info: JobInfo,
    output_dir: PathBuf,
    state: Mutex<State>,
    version: watch::Sender<u64>,
    control: mpsc::UnboundedSender<Control>,
}

/// Where a page's event stream is: (metrics generation, metrics read, log lines read).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    pub generation: u64,
    pub metrics: usize,
    pub logs: usize,
}

impl Cursor {
    /// The SSE event id that encodes it.
    pub fn to_id(self) -> String {
        format!("{}:{}:{}", self.generation, self.metrics, self.logs)
    }

    /// From a `Last-Event-ID` header (a reconnecting EventSource).
    pub fn from_id(id: &str) -> Option<Cursor> {
        let mut it = id.split(':').map(|p| p.parse::<usize>().ok());
        Some(Cursor {
            generation: it.next()?? as u64,
            metrics: it.next()??,
            logs: it.next()??,
        })
    }
}

/// Removes ANSI escape sequences (colours) from a log line.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            out.push(c);
        }
    }
    out
}

impl Job {
    fn touch(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    pub fn status(&self) -> Status {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).status
    }

    fn log(&self, line: String) {
        {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(msg) = line.strip_prefix("error: ") {
                s.last_error = Some(msg.to_string());
            }
            s.logs.push_back(line);
            while s.logs.len() > MAX_LOG_LINES {
                s.logs.pop_front();
                s.logs_base += 1;
            }
        }
        self.touch();
    }

    fn apply(&self, update: super::metrics_tail::Update) {
        if !update.reset && update.metrics.is_empty() {
            return;
        }
        {
            let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
            if update.reset {
                s.metrics.clear();
                s.generation += 1;
                s.first = None;
            }
            let now = Instant::now();
            for m in update.metrics {
                if m.split == "train" {
                    s.step = s.step.max(m.step);
                    if s.first.is_none() {
                        s.first = Some((now, m.step));
                    }
                    s.last = Some((now, m.step));
                }
                s.metrics.push(m);
            }
        }
        self.touch();
    }

    /// Stops the run: SIGINT first (a checkpoint is written), a kill if it is already
    /// stopping or does not end within [`STOP_GRACE`].
    pub fn stop(self: &Arc<Self>) -> Status {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match s.status {
            Status::Running => {
                s.status = Status::Stopping;
                drop(s);
                let _ = self.control.send(Control::Interrupt);
                let job = self.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(STOP_GRACE).await;
                    if job.status() == Status::Stopping {
                        let _ = job.control.send(Control::Kill);
                    }
                });
                self.log(
                    "[lmms serve] stop requested: the run writes a checkpoint and ends".into(),
                );
                Status::Stopping
            }
            Status::Stopping => {
                drop(s);
                let _ = self.control.send(Control::Kill);
                self.log("[lmms serve] killing the run".into());
                Status::Stopping
            }
            other => other,
        }
    }

    /// What changed since `cursor`, as the JSON the page reads, and the new cursor.
    pub fn update_since(&self, cursor: Cursor) -> (serde_json::Value, Cursor, Status) {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let reset = cursor.generation != s.generation;
        let from_metrics = if reset {
            0
        } else {
            cursor.metrics.min(s.metrics.len())
        };
        let from_logs = cursor.logs.max(s.logs_base) - s.logs_base;
        let from_logs = from_logs.min(s.logs.len());
        let now = s.ended.unwrap_or_else(Instant::now);
        let eta = match (s.first, s.last) {
            _ if !s.status.is_active() => None,
            // Steps per second since the first step; over the whole run (model loading
            // included) while that span is too short to measure.
            (Some((t0, s0)), Some((t1, s1))) if s1 > 0 => {
                let span = (t1 - t0).as_secs_f64();
                let rate = if s1 > s0 && span > 0.5 {
                    (s1 - s0) as f64 / span
                } else {
                    s1 as f64 / (t1 - s.started).as_secs_f64().max(1e-3)
                };
                Some(s.total_steps.saturating_sub(s1) as f64 / rate)
            }
            _ => None,
        };
        let last_train = s.metrics.iter().rev().find(|m| m.split == "train");
        let value = serde_json::json!({
            "id": self.info.id,
            "status": s.status,
            "step": s.step,
            "total": s.total_steps,
            "elapsed": (now - s.started).as_secs_f64(),
            "eta": eta,
            "loss": last_train.map(|m| m.loss),
            "lr": last_train.and_then(|m| m.lr),
            "message": s.message,
            "reset": reset,
            "metrics": &s.metrics[from_metrics..],
            "logs": s.logs.range(from_logs..).collect::<Vec<_>>(),
            "info": &self.info,
        });
        let next = Cursor {
            generation: s.generation,
            metrics: s.metrics.len(),
            logs: s.logs_base + s.logs.len(),
        };
        (value, next, s.status)
    }

    /// The run as the job list shows it.
    pub fn summary(&self) -> serde_json::Value {
        let s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        serde_json::json!({
            "info": &self.info, "status": s.status, "step": s.step, "total": s.total_steps,
            "message": s.message,
        })
    }

    fn finish(&self, exit: std::io::Result<std::process::ExitStatus>, forced: bool) {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let stop_requested = s.status == Status::Stopping;
        s.ended = Some(Instant::now());
        let code = exit.as_ref().ok().and_then(|e| e.code());
        let (status, message) = match (&exit, code) {
            (Ok(e), _) if e.success() => {
                // Batches the collator skips entirely take no step: the end is where it ended.
                if s.step > 0 {
                    s.total_steps = s.step;
                }
                (
                    Status::Finished,
                    format!(
                        "finished: {} steps; output in {}",
                        s.step, self.info.output_dir
                    ),
                )
            }
            (Ok(_), Some(130)) => (
                Status::Stopped,
                format!(
                    "stopped at step {}: a checkpoint was written in {}; tick Resume to \
                     continue it",
                    s.step, self.info.output_dir
                ),
            ),
            (Ok(_), None) if stop_requested || forced => (
                Status::Stopped,
                format!(
                    "killed at step {} (it did not stop within {} s); the last complete \
                     checkpoint remains and temporary files were removed",
                    s.step,
                    STOP_GRACE.as_secs()
                ),
            ),
            (Ok(e), _) => (
                Status::Failed,
                match &s.last_error {
                    Some(err) => format!("training failed: {err}"),
                    None => format!("lmms train ended with {e}"),
                },
            ),
            (Err(e), _) => (Status::Failed, format!("cannot wait for lmms train: {e}")),
        };
        s.status = status;
        s.message = Some(message);
    }
}

/// The runs of this server, newest last; at most one is active at a time.
#[derive(Default)]
pub struct Jobs {
    list: Mutex<Vec<Arc<Job>>>,
    next_id: AtomicU64,
}

impl Jobs {
    pub fn get(&self, id: u64) -> Option<Arc<Job>> {
        let list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.iter().find(|j| j.info.id == id).cloned()
    }

    pub fn all(&self) -> Vec<Arc<Job>> {
        self.list.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn active(&self) -> Option<Arc<Job>> {
        self.all().into_iter().find(|j| j.status().is_active())
    }

    /// Starts `lmms train` for `plan`; refused while another run is active.
    pub fn start(
        &self,
        ws: &Workspace,
        plan: &TrainPlan,
        total_steps: u64,
    ) -> Result<Arc<Job>, String> {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(j) = list.iter().find(|j| j.status().is_active()) {
            return Err(format!(
                "run {} ({}) is still going: stop it first",
                j.info.id, j.info.output_dir
            ));
        }
        let exe =
            std::env::current_exe().map_err(|e| format!("cannot find the lmms executable: {e}"))?;
        let id = self.next_id.fetch_add(1, Ordering::SeqCst) + 1;
        let info = JobInfo {
            id,
            model: plan.model.arg(ws),
            data: ws.relative(&plan.data),
            output_dir: ws.relative(&plan.output_dir),
            summary: plan.summary.clone(),
            command: format!("lmms train {}", plan.args.join(" ")),
            started_unix: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            // LoRA anywhere makes the output an adapter (core's export).
            adapter: plan
                .args
                .iter()
                .any(|a| ["--use-lora", "--q-lora", "--use-vision-lora"].contains(&a.as_str())),
        };
        // Before the child starts: a metrics file already there is the previous run's.
        let tail = MetricsTail::new(plan.output_dir.join("metrics.jsonl"));
        let mut cmd = tokio::process::Command::new(exe);
        cmd.arg("train")
            .args(&plan.args)
            .current_dir(ws.root())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start lmms train: {e}"))?;
        let (control, control_rx) = mpsc::unbounded_channel();
        let job = Arc::new(Job {
            output_dir: plan.output_dir.clone(),
            state: Mutex::new(State {
                status: Status::Running,
                total_steps,
                step: 0,
                generation: 0,
                metrics: Vec::new(),
                logs: VecDeque::new(),
                logs_base: 0,
                started: Instant::now(),
                first: None,
                last: None,
                ended: None,
                message: None,
                last_error: None,
            }),
            version: watch::channel(0).0,
            control,
            info,
        });
        job.log(format!("$ {}", job.info.command));
        let readers = [
            child.stdout.take().map(|o| spawn_reader(o, job.clone())),
            child.stderr.take().map(|e| spawn_reader(e, job.clone())),
        ];
        tokio::spawn(supervise(child, job.clone(), control_rx, tail, readers));
        list.push(job.clone());
        Ok(job)
    }

    /// Asks every active run to stop (server shutdown) and waits up to `limit` for them.
    pub async fn stop_all(&self, limit: Duration) {
        let active: Vec<_> = self
            .all()
            .into_iter()
            .filter(|j| j.status().is_active())
            .collect();
        for j in &active {
            if j.status() == Status::Running {
                j.stop();
            }
        }
        let deadline = Instant::now() + limit;
        while active.iter().any(|j| j.status().is_active()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn spawn_reader(
    stream: impl AsyncRead + Unpin + Send + 'static,
    job: Arc<Job>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let line = strip_ansi(&line);
            if !line.trim().is_empty() {
                job.log(line);
            }
        }
    })
}

async fn supervise(
    mut child: tokio::process::Child,
    job: Arc<Job>,
    mut control: mpsc::UnboundedReceiver<Control>,
    mut tail: MetricsTail,
    readers: [Option<tokio::task::JoinHandle<()>>; 2],
) {
    let pid = child.id();
    let mut forced = false;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let exit = loop {
        tokio::select! {
            exit = child.wait() => break exit,
            Some(c) = control.recv() => match c {
                Control::Interrupt => {
                    // The child has not been reaped yet (its wait() is pending here), so the
                    // pid is still its own.
                    #[cfg(unix)]
                    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                        // SAFETY: sending a signal to our own child process.
                        unsafe { libc::kill(pid, libc::SIGINT) };
                    }
                    #[cfg(not(unix))]
                    { forced = true; let _ = child.start_kill(); }
                }
                Control::Kill => {
                    forced = true;
                    let _ = child.start_kill();
                }
            },
            _ = tick.tick() => job.apply(tail.poll()),
        }
    };
    for r in readers.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
    }
    job.apply(tail.poll());
    if forced {
        for removed in remove_partial_writes(&job.output_dir) {
            job.log(format!("[lmms serve] removed unfinished {removed}"));
        }
    }
    job.finish(exit, forced);
    let message = job
        .state
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .message
        .clone();
    if let Some(m) = message {
        job.log(format!("[lmms serve] {m}"));
    }
    job.touch();
}

/// After a killed run: removes the temporary files and directories of writes it had not
/// finished (`lmms_core::fs`'s `.tmp*` files and `.<name>.tmp-*` directories) and puts back
/// a checkpoint moved aside (`.<name>.old-*`) whose replacement never arrived. Returns what
/// it removed.
pub fn remove_partial_writes(dir: &Path) -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return removed;
    };
    for e in entries.filter_map(|e| e.ok()) {
        let name = e.file_name().to_string_lossy().into_owned();
        let path = e.path();
        if let Some(rest) = name.strip_prefix('.')
            && let Some((orig, _)) = rest.rsplit_once(".old-")
        {
            let target = dir.join(orig);
            if !target.exists() && std::fs::rename(&path, &target).is_ok() {
                continue;
            }
        }
        let temp = name.starts_with(".tmp")
            || (name.starts_with('.') && name.contains(".tmp-"))
            || (name.starts_with('.') && name.contains(".old-"));
        if !temp {
            continue;
        }
        let ok = if path.is_dir() {
            std::fs::remove_dir_all(&path).is_ok()
        } else {
            std::fs::remove_file(&path).is_ok()
        };
        if ok {
            removed.push(name);
        }
    }
    removed.sort();
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_through_event_ids() {
        let c = Cursor {
            generation: 2,
            metrics: 30,
            logs: 7,
        };
        assert_eq!(Cursor::from_id(&c.to_id()), Some(c));
        assert_eq!(Cursor::from_id("x"), None);
        assert_eq!(Cursor::from_id("1:2"), None);
    }

    #[test]
    fn colours_are_stripped_from_log_lines() {
        assert_eq!(
            strip_ansi("\u{1b}[2m2026\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m hi\r"),
            "2026  INFO hi"
        );
    }

    #[test]
    fn a_killed_runs_temporary_writes_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        std::fs::create_dir_all(p.join("checkpoint-10")).unwrap();
        std::fs::create_dir_all(p.join(".checkpoint-20.tmp-abc")).unwrap();
        std::fs::write(p.join(".checkpoint-20.tmp-abc/params.safetensors"), "x").unwrap();
        std::fs::write(p.join(".tmpXyZ"), "partial").unwrap();
        std::fs::create_dir_all(p.join(".checkpoint-5.old-123")).unwrap();
        std::fs::write(p.join("metrics.jsonl"), "").unwrap();
        let removed = remove_partial_writes(p);
        assert_eq!(removed, vec![".checkpoint-20.tmp-abc", ".tmpXyZ"]);
        assert!(p.join("checkpoint-10").is_dir());
        // The moved-aside checkpoint whose replacement never came is put back.
        assert!(p.join("checkpoint-5").is_dir());
        assert!(p.join("metrics.jsonl").is_file());
    }
}
