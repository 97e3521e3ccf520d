//! `lmms serve` in a real browser: headless Chromium, driven through chromedriver, fills the
//! training form on a workspace holding the tiny LLaVA and its dataset, starts a LoRA run,
//! watches the step counter and the loss chart reach the end, then chats with the trained
//! adapter (an uploaded image, a streamed answer, tokens/s). Before that, a path that leaves
//! the workspace is refused in the page, and a long run is stopped with the Stop button (a
//! checkpoint, no temporary files left). The page is screenshotted at the end
//! (`$CARGO_TARGET_TMPDIR/serve.png`, and `$LMMS_SERVE_SCREENSHOT` when set).
//!
//! Needs Debian's `chromium` and `chromium-driver` (scripts/install-deps.sh installs them);
//! without them the test fails, unless LMMS_SKIP_BROWSER_TEST=1.

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::root;

const STEPS: u64 = 30;

/// A child process killed when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `env` if set, else the first of `names` found in /usr/bin or on PATH.
fn find_tool(env: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs: Vec<PathBuf> = std::iter::once(PathBuf::from("/usr/bin"))
        .chain(std::env::split_paths(&path))
        .collect();
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `lmms serve` on a free port and returns it with the URL it printed.
fn start_server(workspace: &Path, log: &Path) -> (Killed, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_lmms"))
        .args(["serve", "--port", "0", "--workspace"])
        .arg(workspace)
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("lmms serve starts");
    let stdout = child.stdout.take().unwrap();
    let guard = Killed(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = line.strip_prefix("lmms serve: ") {
                let _ = tx.send(url.to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| {
            panic!(
                "lmms serve printed no URL; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            )
        });
    (guard, url)
}

fn start_driver(driver: &Path) -> (Killed, String) {
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", driver.display()));
    let guard = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    (guard, format!("http://127.0.0.1:{port}"))
}

type Res<T> = Result<T, String>;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Evaluates `script` (a function body) in the page.
async fn js(c: &Client, script: &str) -> Res<Value> {
    c.execute(script, vec![]).await.map_err(err)
}

async fn text_of(c: &Client, id: &str) -> Res<String> {
    let v = js(
        c,
        &format!("const e = document.getElementById('{id}'); return e ? e.textContent : null;"),
    )
    .await?;
    Ok(v.as_str().unwrap_or_default().to_string())
}

async fn value_of(c: &Client, id: &str) -> Res<String> {
    let v = js(c, &format!("return document.getElementById('{id}').value;")).await?;
    Ok(v.as_str().unwrap_or_default().to_string())
}

async fn fill(c: &Client, id: &str, value: &str) -> Res<()> {
    let e = c.find(Locator::Id(id)).await.map_err(err)?;
    e.clear().await.map_err(err)?;
    e.send_keys(value).await.map_err(err)
}

async fn click(c: &Client, id: &str) -> Res<()> {
    c.find(Locator::Id(id))
        .await
        .map_err(err)?
        .click()
        .await
        .map_err(err)
}

/// Polls `script` until it returns something truthy; returns that value.
async fn wait_js(c: &Client, what: &str, limit: Duration, script: &str) -> Res<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let v = js(c, script).await?;
        let truthy = !matches!(&v, Value::Null | Value::Bool(false))
            && v.as_str().is_none_or(|s| !s.is_empty());
        if truthy {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn scenario(c: &Client, url: &str, workspace: &Path, timings: &mut Vec<String>) -> Res<()> {
    let t0 = Instant::now();
    c.set_window_size(1440, 1200).await.map_err(err)?;
    c.goto(url).await.map_err(err)?;
    wait_js(
        c,
        "the workspace info",
        Duration::from_secs(20),
        "return document.getElementById('conn').textContent === 'connected';",
    )
    .await?;
    let shown = text_of(c, "workspace").await?;
    let real = workspace.canonicalize().unwrap();
    assert_eq!(Path::new(&shown), real, "the page names the workspace");
    // The model and dataset in the workspace are offered.
    let models = js(
        c,
        "return [...document.querySelectorAll('#models option')].map(o => o.value);",
    )
    .await?;
    assert!(
        models.as_array().unwrap().contains(&json!("tiny-llava")),
        "{models}"
    );

    // A path leading out of the workspace is refused, and the page says why.
    fill(c, "t-model", "tiny-llava").await?;
    fill(c, "t-data", "../outside.json").await?;
    click(c, "t-start").await?;
    let msg = wait_js(
        c,
        "the path error",
        Duration::from_secs(10),
        "const e = document.getElementById('t-error'); \
         return e.classList.contains('hidden') ? '' : e.textContent;",
    )
    .await?;
    let msg = msg.as_str().unwrap();
    assert!(msg.contains("`..` is not allowed"), "{msg}");

    // A long run, stopped from the page: it ends with a checkpoint and nothing half-written.
    fill(c, "t-data", "data/llava_dataset.json").await?;
    fill(c, "t-output", "output/stopped-run").await?;
    fill(c, "t-steps", "100000").await?;
    click(c, "t-start").await?;
    wait_js(
        c,
        "the long run's first steps",
        Duration::from_secs(120),
        "return Number(document.getElementById('chart').dataset.points) >= 3;",
    )
    .await?;
    let t_stop = Instant::now();
    click(c, "t-stop").await?;
    let status = wait_js(
        c,
        "the stopped run",
        Duration::from_secs(60),
        "const s = document.getElementById('t-status').textContent;          return ['stopped', 'failed', 'finished'].includes(s) ? s : '';",
    )
    .await?;
    timings.push(format!("stop: {:.1} s", t_stop.elapsed().as_secs_f64()));
    assert_eq!(status, json!("stopped"), "{}", text_of(c, "t-log").await?);
    let message = text_of(c, "t-message").await?;
    assert!(message.contains("checkpoint"), "{message}");
    let stopped = workspace.join("output/stopped-run");
    let entries: Vec<String> = std::fs::read_dir(&stopped)
        .map_err(err)?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        entries.iter().any(|n| n.starts_with("checkpoint-")),
        "{entries:?}"
    );
    assert!(!entries.iter().any(|n| n.starts_with('.')), "{entries:?}");
    assert!(!stopped.join("adapter_config.json").exists());

    // The tiny run: LoRA r 8 on the LLM, constant lr, a fixed number of steps.
    fill(c, "t-output", "output/tiny-run").await?;
    fill(c, "t-steps", &STEPS.to_string()).await?;
    fill(c, "t-lr", "3e-2").await?;
    fill(c, "t-batch", "2").await?;
    fill(c, "t-rank", "8").await?;
    fill(c, "t-alpha", "16").await?;
    fill(c, "t-dropout", "0").await?;
    fill(c, "t-warmup", "0").await?;
    c.find(Locator::Css("#t-sched option[value=constant]"))
        .await
        .map_err(err)?
        .click()
        .await
        .map_err(err)?;
    let t_train = Instant::now();
    click(c, "t-start").await?;
    // Follow the run: the chart gains points as metrics arrive, until the run ends.
    let mut seen_points = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        let s = js(
            c,
            "return [document.getElementById('t-status').textContent, \
             Number(document.getElementById('chart').dataset.points)];",
        )
        .await?;
        let status = s[0].as_str().unwrap_or_default().to_string();
        if status != "starting" {
            // (While starting, the chart still shows the stopped run.)
            seen_points.insert(s[1].as_u64().unwrap_or(0));
        }
        if !["starting", "running", "stopping"].contains(&status.as_str()) {
            break status;
        }
        if Instant::now() > deadline {
            return Err(format!("the run did not end in time (status {status})"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    timings.push(format!(
        "training run in the page: {:.1} s",
        t_train.elapsed().as_secs_f64()
    ));
    if status != "finished" {
        return Err(format!(
            "the run ended `{status}`: {} / log:\n{}",
            text_of(c, "t-error").await?,
            text_of(c, "t-log").await?
        ));
    }
    assert_eq!(text_of(c, "t-step").await?, format!("{STEPS} / {STEPS}"));
    let points = js(
        c,
        "return Number(document.getElementById('chart').dataset.points);",
    )
    .await?
    .as_u64()
    .unwrap();
    assert_eq!(points, STEPS, "one chart point per step");
    assert!(seen_points.len() >= 2, "the chart grew: {seen_points:?}");
    let loss = text_of(c, "t-loss").await?;
    assert!(loss.parse::<f64>().is_ok(), "last loss shown: {loss}");
    assert!(
        text_of(c, "t-log")
            .await?
            .contains("lmms train --model tiny-llava"),
        "the log shows the command"
    );
    assert!(
        workspace
            .join("output/tiny-run/adapter_config.json")
            .is_file()
    );

    // Chat with the result: base model + the run's adapter, an uploaded image.
    click(c, "t-chat").await?;
    assert_eq!(value_of(c, "c-model").await?, "tiny-llava");
    assert_eq!(value_of(c, "c-adapter").await?, "output/tiny-run");
    // chromedriver wants a canonical path.
    let image = root()
        .join("example_data/images/red_square.png")
        .canonicalize()
        .unwrap();
    c.find(Locator::Id("c-file"))
        .await
        .map_err(err)?
        .send_keys(image.to_str().unwrap())
        .await
        .map_err(err)?;
    wait_js(
        c,
        "the image upload",
        Duration::from_secs(20),
        "const i = document.querySelector('#attachments img'); \
         return !!i && i.title.startsWith('.lmms-serve/uploads/');",
    )
    .await?;
    js(c, "document.querySelector('details.gen').open = true;").await?;
    fill(c, "c-max", "12").await?;
    fill(c, "c-input", "What is in the picture?").await?;
    let t_chat = Instant::now();
    click(c, "c-send").await?;
    let stats = wait_js(
        c,
        "the answer's tokens/s",
        Duration::from_secs(120),
        "const m = document.querySelector('.msg.assistant'); if (!m) return ''; \
         const e = m.querySelector('.err'); if (e) return 'ERROR ' + e.textContent; \
         const s = m.querySelector('.stats-line').textContent; \
         return s.includes('tokens/s') ? s : '';",
    )
    .await?;
    timings.push(format!(
        "chat answer: {:.1} s",
        t_chat.elapsed().as_secs_f64()
    ));
    let stats = stats.as_str().unwrap().to_string();
    assert!(!stats.starts_with("ERROR"), "{stats}");
    let answer = js(
        c,
        "const m = document.querySelector('.msg.assistant'); \
         return [m.querySelector('.text').textContent, Number(m.dataset.pieces || 0)];",
    )
    .await?;
    let (text, pieces) = (answer[0].as_str().unwrap(), answer[1].as_u64().unwrap());
    assert!(!text.trim().is_empty(), "an answer appeared ({stats})");
    // Each piece came as its own SSE event.
    assert!(pieces >= 1, "the answer streamed ({pieces} pieces): {text}");
    assert!(
        stats.contains(" tokens ·") && stats.contains("tokens/s"),
        "{stats}"
    );
    // The user's message shows with its image.
    let user_img = js(
        c,
        "return document.querySelectorAll('.msg.user img').length;",
    )
    .await?;
    assert_eq!(user_img, json!(1));
    // The upload landed inside the workspace.
    let uploads: Vec<_> = std::fs::read_dir(workspace.join(".lmms-serve/uploads"))
        .map_err(err)?
        .collect();
    assert_eq!(uploads.len(), 1);
    timings.push(format!(
        "whole page scenario: {:.1} s",
        t0.elapsed().as_secs_f64()
    ));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn train_and_chat_in_the_browser() {
    let chromium = find_tool(
        "LMMS_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    );
    let driver = find_tool("LMMS_CHROMEDRIVER", &["chromedriver"]);
    let (chromium, driver) = match (chromium, driver) {
        (Some(c), Some(d)) => (c, d),
        (c, d) => {
            if std::env::var("LMMS_SKIP_BROWSER_TEST").as_deref() == Ok("1") {
                eprintln!("skipped: no chromium/chromedriver and LMMS_SKIP_BROWSER_TEST=1");
                return;
            }
            panic!(
                "the browser test needs Chromium and chromedriver (found chromium: {c:?}, \
                 chromedriver: {d:?}). Install them with scripts/install-deps.sh (Debian \
                 packages `chromium` and `chromium-driver`), point LMMS_CHROMIUM / \
                 LMMS_CHROMEDRIVER at them, or set LMMS_SKIP_BROWSER_TEST=1 to skip this test."
            );
        }
    };
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let workspace = tmp.path().join("ws");
    let ex = root().join("example_data");
    copy_dir(&ex.join("tiny-llava"), &workspace.join("tiny-llava"));
    copy_dir(&ex.join("images"), &workspace.join("data/images"));
    std::fs::copy(
        ex.join("llava_dataset.json"),
        workspace.join("data/llava_dataset.json"),
    )
    .unwrap();
    std::fs::write(tmp.path().join("outside.json"), "[]").unwrap();
    let server_log = tmp.path().join("serve.log");
    let (_server, url) = start_server(&workspace, &server_log);
    let (_driver, driver_url) = start_driver(&driver);
    let caps = json!({
        "goog:chromeOptions": {
            "binary": chromium,
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                     "--disable-dev-shm-usage", "--window-size=1440,1200",
                     "--force-device-scale-factor=1"]
        }
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver_url)
        .await
        .expect("a Chromium session through chromedriver");
    // The scenario runs in its own task so that a failed assertion still lets the browser
    // session close below (chromedriver then ends Chromium).
    let task = {
        let (client, workspace) = (client.clone(), workspace.clone());
        tokio::spawn(async move {
            let mut timings = Vec::new();
            let result = scenario(&client, &url, &workspace, &mut timings).await;
            (result, timings)
        })
    };
    let (result, mut timings) = match task.await {
        Ok(done) => done,
        Err(e) => {
            let panic = e.into_panic();
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            (Err(format!("assertion failed: {message}")), vec![])
        }
    };
    // The page as the scenario left it (also on failure, for a look), whole.
    let height = client
        .execute(
            "window.scrollTo(0, 0); return document.documentElement.scrollHeight;",
            vec![],
        )
        .await
        .ok()
        .and_then(|h| h.as_u64())
        .unwrap_or(1200);
    let _ = client.set_window_size(1440, height as u32 + 140).await;
    if let Ok(png) = client.screenshot().await {
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("serve.png");
        let _ = std::fs::write(&out, &png);
        if let Some(p) = std::env::var_os("LMMS_SERVE_SCREENSHOT") {
            std::fs::write(&p, &png).unwrap();
        }
    }
    let _ = client.close().await;
    timings.push(format!(
        "whole test: {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    eprintln!("{}", timings.join("\n"));
    if let Err(e) = result {
        panic!(
            "{e}\nserver log:\n{}",
            std::fs::read_to_string(&server_log).unwrap_or_default()
        );
    }
}
