//! `lmms serve`: a local web UI to train and chat. One embedded page (`page`), a JSON + SSE
//! API (`routes`), training runs as child processes (`train_form`, `training`,
//! `metrics_tail`), chat through cached generators on their own threads (`chat`, `uploads`),
//! the choices the page offers (`catalog`), and the two fences: paths stay inside the
//! workspace (`workspace`) and requests carry the token or come from the loopback
//! (`access`).

pub mod access;
mod catalog;
mod chat;
mod error;
mod metrics_tail;
mod page;
mod routes;
mod train_form;
mod training;
mod uploads;
pub mod workspace;

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// `lmms serve`'s settings, checked by the command.
#[derive(Debug, Clone)]
pub struct Config {
    pub host: IpAddr,
    /// 0: any free port (the URL printed says which).
    pub port: u16,
    pub workspace: PathBuf,
    pub token: Option<String>,
}

/// What every handler shares.
pub struct AppState {
    pub ws: workspace::Workspace,
    pub jobs: training::Jobs,
    pub chats: chat::Generators,
}

/// Serves until Ctrl-C; active runs are then stopped (with a checkpoint) before it returns.
pub fn run(config: Config) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("lmms-serve")
        .build()?;
    let result = rt.block_on(serve(config));
    rt.shutdown_timeout(Duration::from_secs(1));
    result
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let ws = workspace::Workspace::new(&config.workspace)?;
    let addr = SocketAddr::new(config.host, config.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    let access = Arc::new(access::Access::new(config.token.clone(), local.port()));
    let state = Arc::new(AppState {
        ws,
        jobs: training::Jobs::default(),
        chats: chat::Generators::default(),
    });
    let url = match &config.token {
        Some(t) => format!("http://{local}/?token={t}"),
        None => format!("http://{local}/"),
    };
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "lmms serve: {url}")?;
        writeln!(out, "workspace: {}", state.ws.root().display())?;
        out.flush()?;
    }
    let app = routes::router(state.clone(), access);
    tokio::select! {
        r = axum::serve(listener, app) => r?,
        _ = shutdown_signal() => {
            eprintln!("stopping: active training runs write a checkpoint first");
            state.jobs.stop_all(training::STOP_GRACE + Duration::from_secs(5)).await;
        }
    }
    Ok(())
}

/// Ctrl-C, or SIGTERM (a service manager stopping the server).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
