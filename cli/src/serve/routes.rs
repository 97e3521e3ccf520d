//! The HTTP API the page uses, and the routes of the page itself.
//!
//! - `GET /api/info`: workspace, choices (models, datasets, runs) and the runs of this server
//! - `POST /api/train`: start a run (JSON form) -> `{id}`; `GET /api/train`: the runs
//! - `GET /api/train/{id}/events`: SSE `update` events (status, step/total, ETA, new metrics
//!   and log lines) until the run ends; resumes from `Last-Event-ID`
//! - `POST /api/train/{id}/stop`: stop (again: kill)
//! - `POST /api/chat`: a conversation -> SSE `status` / `text` / `done` / `error` events
//! - `POST /api/upload?name=F`: an image (raw body) -> `{path}` in the workspace

use super::AppState;
use super::access::{Access, guard};
use super::chat::{ChatEvent, ChatForm};
use super::error::{ApiError, ApiResult};
use super::train_form::TrainForm;
use super::training::Cursor;
use super::{catalog, page, uploads};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router, middleware};
use futures_util::Stream;
use futures_util::stream;
use serde::Deserialize;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

type Shared = Arc<AppState>;

pub fn router(state: Shared, access: Arc<Access>) -> Router {
    Router::new()
        .route("/", get(page::index))
        .route("/app.css", get(page::style))
        .route("/app.js", get(page::script))
        .route("/api/info", get(info))
        .route("/api/train", get(list_runs).post(start_run))
        .route("/api/train/{id}/events", get(run_events))
        .route("/api/train/{id}/stop", post(stop_run))
        .route("/api/chat", post(chat))
        .route(
            "/api/upload",
            post(upload).layer(DefaultBodyLimit::max(uploads::MAX_UPLOAD_BYTES)),
        )
        .fallback(|| async { ApiError::not_found("no such page or API route") })
        .layer(middleware::from_fn_with_state(access, guard))
        .with_state(state)
}

/// Runs blocking work (file system, dataset loading) off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> ApiResult<T> + Send + 'static,
) -> ApiResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("task failed: {e}")))?
}

async fn info(State(st): State<Shared>) -> ApiResult<Json<Value>> {
    let s = st.clone();
    let catalog = blocking(move || Ok(catalog::scan(&s.ws))).await?;
    let runs: Vec<Value> = st.jobs.all().iter().map(|j| j.summary()).collect();
    Ok(Json(json!({
        "workspace": st.ws.root(),
        "version": env!("CARGO_PKG_VERSION"),
        "uploads": uploads::UPLOAD_DIR,
        "catalog": catalog,
        "jobs": runs,
        "active": st.jobs.active().map(|j| j.info.id),
    })))
}

async fn list_runs(State(st): State<Shared>) -> Json<Value> {
    Json(Value::Array(
        st.jobs.all().iter().map(|j| j.summary()).collect(),
    ))
}

async fn start_run(
    State(st): State<Shared>,
    Json(form): Json<TrainForm>,
) -> ApiResult<Json<Value>> {
    if let Some(j) = st.jobs.active() {
        return Err(ApiError::conflict(format!(
            "run {} ({}) is still going: stop it first",
            j.info.id, j.info.output_dir
        )));
    }
    let s = st.clone();
    let (plan, total) = blocking(move || {
        let plan = form.plan(&s.ws)?;
        let total = plan.total_steps()?;
        Ok((plan, total))
    })
    .await?;
    let job = st
        .jobs
        .start(&st.ws, &plan, total)
        .map_err(ApiError::conflict)?;
    Ok(Json(json!({ "id": job.info.id, "total": total })))
}

async fn stop_run(State(st): State<Shared>, Path(id): Path<u64>) -> ApiResult<Json<Value>> {
    let job = st
        .jobs
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    let status = job.stop();
    Ok(Json(json!({ "id": id, "status": status })))
}

async fn run_events(
    State(st): State<Shared>,
    Path(id): Path<u64>,
    headers: HeaderMap,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let job = st
        .jobs
        .get(id)
        .ok_or_else(|| ApiError::not_found(format!("no run {id}")))?;
    let cursor = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(Cursor::from_id)
        .unwrap_or_default();
    let rx = job.subscribe();
    let stream = stream::unfold(
        (job, cursor, rx, true, false),
        |(job, cursor, mut rx, first, done)| async move {
            if done {
                return None;
            }
            if !first {
                // A closed channel cannot happen while the job lives; end the stream then.
                rx.changed().await.ok()?;
                // Let a burst of lines arrive together.
                tokio::time::sleep(Duration::from_millis(120)).await;
            }
            rx.borrow_and_update();
            let (value, next, status) = job.update_since(cursor);
            let event = Event::default()
                .event("update")
                .id(next.to_id())
                .json_data(value)
                .unwrap_or_else(|_| Event::default().comment("unserializable update"));
            Some((Ok(event), (job, next, rx, false, !status.is_active())))
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

async fn chat(
    State(st): State<Shared>,
    Json(form): Json<ChatForm>,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let s = st.clone();
    let plan = blocking(move || form.plan(&s.ws)).await?;
    let rx = st.chats.submit(plan);
    let stream = stream::unfold(rx, |mut rx| async move {
        let ev = rx.recv().await?;
        let (name, data) = match ev {
            ChatEvent::Status(s) => ("status", json!({ "message": s })),
            ChatEvent::Text(t) => ("text", json!({ "text": t })),
            ChatEvent::Done(v) => ("done", v),
            ChatEvent::Error(e) => ("error", json!({ "error": e })),
        };
        let event = Event::default()
            .event(name)
            .json_data(data)
            .unwrap_or_else(|_| Event::default().comment("unserializable event"));
        Some((Ok(event), rx))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}

#[derive(Deserialize)]
struct UploadQuery {
    name: String,
}

async fn upload(
    State(st): State<Shared>,
    Query(q): Query<UploadQuery>,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let s = st.clone();
    let path = blocking(move || uploads::save(&s.ws, &q.name, &body)).await?;
    Ok(Json(json!({ "path": path })))
}
