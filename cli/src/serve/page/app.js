// lmms serve: the page's script. Plain JavaScript, no framework, no build step.
// Talks to the JSON + SSE API of `lmms serve` (see cli/src/serve/routes.rs).
"use strict";

const TOKEN = new URLSearchParams(location.search).get("token") || "";
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- API helpers

function withToken(path) {
  if (!TOKEN) return path;
  return path + (path.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(TOKEN);
}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (TOKEN) headers["Authorization"] = "Bearer " + TOKEN;
  const res = await fetch(path, Object.assign({}, options, { headers }));
  return checked(res);
}

async function checked(res) {
  if (res.ok) return res;
  let message = res.status + " " + res.statusText;
  const text = await res.text();
  try {
    const body = JSON.parse(text);
    if (body && body.error) message = body.error;
  } catch (_) {
    if (text) message = text;
  }
  throw new Error(message);
}

async function postJson(path, body) {
  return api(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
}

// Reads a text/event-stream response body, calling onEvent(name, data) per event.
async function readSse(res, onEvent) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let name = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) name = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(name, JSON.parse(data.join("\n")));
    }
  }
}

function show(el, message) {
  el.textContent = message || "";
  el.classList.toggle("hidden", !message);
}

function fmtDuration(s) {
  if (s == null || !isFinite(s)) return "–";
  if (s < 10) return Math.max(0, s).toFixed(1) + "s";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  if (h) return h + "h " + String(m).padStart(2, "0") + "m";
  if (m) return m + "m " + String(sec).padStart(2, "0") + "s";
  return sec + "s";
}

function fmtNum(v, digits = 4) {
  if (v == null || !isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(2);
  return Number(v.toPrecision(digits)).toString();
}

// ---------------------------------------------------------------- workspace info

let catalog = { models: [], datasets: [], runs: [] };

function fillList(id, items) {
  const list = $(id);
  list.replaceChildren(...items.map((c) => {
    const o = document.createElement("option");
    o.value = c.value;
    if (c.label && c.label !== c.value) o.label = c.label;
    return o;
  }));
}

async function loadInfo() {
  try {
    const res = await api("api/info");
    const info = await res.json();
    $("workspace").textContent = info.workspace;
    $("conn").textContent = "connected";
    $("conn").className = "conn ok";
    show($("banner"), "");
    catalog = info.catalog;
    fillList("models", catalog.models);
    fillList("datasets", catalog.datasets);
    fillList("adapters", catalog.runs.filter((r) => r.kind === "adapter").map((r) => ({
      value: r.dir,
      label: r.dir + (r.model ? " ← " + r.model : "") + (r.steps ? " · " + r.steps + " steps" : ""),
    })));
    if (!$("t-model").value && catalog.models.length) $("t-model").value = catalog.models[0].value;
    if (!$("t-data").value && catalog.datasets.length) $("t-data").value = catalog.datasets[0].value;
    if (!$("c-model").value && catalog.models.length) $("c-model").value = catalog.models[0].value;
    suggestOutputDir();
    fillRuns(info.jobs);
    return info;
  } catch (e) {
    $("conn").textContent = "offline";
    $("conn").className = "conn bad";
    show($("banner"), "Cannot reach the server: " + e.message);
    return null;
  }
}

// A fresh output dir name when the default one already holds a run.
function suggestOutputDir() {
  const out = $("t-output");
  if (out.dataset.touched) return;
  const taken = new Set(catalog.runs.map((r) => r.dir));
  let n = 1;
  while (taken.has("output/run-" + n)) n++;
  out.value = "output/run-" + n;
}

// ---------------------------------------------------------------- training

const train = {
  id: null,
  source: null,
  status: "idle",
  info: null,
  metrics: [],
};

function num(id, integer) {
  const el = $(id);
  const raw = el.value.trim();
  el.classList.remove("invalid");
  if (raw === "") return null;
  const v = Number(raw);
  if (!isFinite(v) || (integer && !Number.isInteger(v))) {
    el.classList.add("invalid");
    throw new Error(el.parentElement.firstChild.textContent.trim() + ": not a valid number");
  }
  return v;
}

function text(id) {
  const v = $(id).value.trim();
  return v === "" ? null : v;
}

function trainForm() {
  return {
    model: $("t-model").value.trim(),
    data: $("t-data").value.trim(),
    image_folder: text("t-images"),
    output_dir: $("t-output").value.trim(),
    strategy: $("t-strategy").value,
    vision: $("t-vision").value,
    train_projector: $("t-projector").checked,
    epochs: num("t-epochs"),
    max_steps: num("t-steps", true),
    learning_rate: num("t-lr"),
    batch_size: num("t-batch", true),
    grad_accum: num("t-accum", true),
    lora_rank: num("t-rank", true),
    lora_alpha: num("t-alpha"),
    lora_dropout: num("t-dropout"),
    model_max_length: num("t-maxlen", true),
    lr_scheduler: text("t-sched"),
    warmup_ratio: num("t-warmup"),
    save_steps: num("t-save", true),
    seed: num("t-seed", true),
    device: text("t-device"),
    bf16: $("t-bf16").checked,
    overwrite: $("t-overwrite").checked,
    resume: $("t-resume").checked,
  };
}

function updateLoraFields() {
  const lora = $("t-strategy").value !== "full" || $("t-vision").value === "lora";
  for (const el of document.querySelectorAll(".lora")) {
    el.classList.toggle("off", !lora);
    el.querySelector("input").disabled = !lora;
  }
}

async function startTraining(ev) {
  ev.preventDefault();
  show($("t-error"), "");
  let form;
  try {
    form = trainForm();
    if (!form.model) throw new Error("Choose a model.");
    if (!form.data) throw new Error("Choose a data file.");
    if (!form.output_dir) throw new Error("Name an output dir.");
  } catch (e) {
    show($("t-error"), e.message);
    return;
  }
  const before = train.status;
  setStatus("starting");
  $("t-start").textContent = "Checking…";
  try {
    const res = await postJson("api/train", form);
    const { id } = await res.json();
    $("t-output").dataset.touched = "";
    attachRun(id, true);
    loadInfo();
  } catch (e) {
    show($("t-error"), e.message);
    setStatus(before);
  } finally {
    $("t-start").textContent = "Start training";
  }
}

function setStatus(status) {
  train.status = status;
  const badge = $("t-status");
  badge.textContent = status;
  badge.className = "badge " + status;
  const active = status === "running" || status === "stopping";
  $("t-start").disabled = active || status === "starting";
  $("t-stop").disabled = !active;
  $("t-stop").textContent = status === "stopping" ? "Force stop" : "Stop";
}

function fillRuns(jobs) {
  const sel = $("t-runs");
  if (!jobs.length) return;
  sel.replaceChildren(...jobs.slice().reverse().map((j) => {
    const o = document.createElement("option");
    o.value = String(j.info.id);
    o.textContent = "#" + j.info.id + " " + j.info.output_dir + " · " + j.status +
      " · " + j.step + "/" + j.total;
    return o;
  }));
  if (train.id != null) sel.value = String(train.id);
}

function attachRun(id, fresh) {
  if (train.source) train.source.close();
  train.id = id;
  train.metrics = [];
  $("t-log").replaceChildren();
  $("t-done").classList.add("hidden");
  if (fresh) setStatus("running");
  drawChart();
  const es = new EventSource(withToken("api/train/" + id + "/events"));
  train.source = es;
  es.addEventListener("update", (e) => applyUpdate(JSON.parse(e.data)));
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) {
      $("conn").textContent = "offline";
      $("conn").className = "conn bad";
    }
  };
}

function appendLog(lines) {
  if (!lines.length) return;
  const log = $("t-log");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 30;
  const frag = document.createDocumentFragment();
  for (const line of lines) {
    const div = document.createElement("div");
    if (/^error:|\bERROR\b|panicked/.test(line)) div.className = "err";
    else if (line.startsWith("[lmms serve]") || line.startsWith("$ ")) div.className = "meta";
    div.textContent = line;
    frag.appendChild(div);
  }
  log.appendChild(frag);
  while (log.childElementCount > 2000) log.firstChild.remove();
  if (atBottom) log.scrollTop = log.scrollHeight;
}

function applyUpdate(u) {
  if (u.id !== train.id) return;
  train.info = u.info;
  if (u.reset) train.metrics = [];
  train.metrics.push(...u.metrics);
  appendLog(u.logs);
  setStatus(u.status);
  $("t-summary").textContent = u.info.summary + " → " + u.info.output_dir;
  $("t-step").textContent = u.step + " / " + (u.total || "?");
  $("t-bar").style.width = (u.total ? Math.min(100, (100 * u.step) / u.total) : 0) + "%";
  $("t-loss").textContent = fmtNum(u.loss);
  $("t-lrnow").textContent = fmtNum(u.lr, 3);
  train.clock = { elapsed: u.elapsed, eta: u.eta, at: performance.now(), status: u.status };
  tickClock();
  drawChart();
  const ended = !(u.status === "running" || u.status === "stopping");
  if (ended) {
    train.source.close();
    $("t-message").textContent = u.message || u.status;
    $("t-done").classList.remove("hidden");
    const usable = u.status === "finished";
    $("t-chat").classList.toggle("hidden", !usable);
    if (u.status === "failed") show($("t-error"), u.message);
    loadInfo();
  }
}

// Elapsed time and ETA keep moving between updates (a step of a large model takes a while).
function tickClock() {
  const c = train.clock;
  if (!c) return;
  const running = c.status === "running";
  const since = running ? (performance.now() - c.at) / 1000 : 0;
  $("t-elapsed").textContent = fmtDuration(c.elapsed + since);
  $("t-eta").textContent = running && c.eta != null ? fmtDuration(Math.max(0, c.eta - since)) : "–";
}

async function stopTraining() {
  if (train.id == null) return;
  try {
    await api("api/train/" + train.id + "/stop", { method: "POST" });
  } catch (e) {
    show($("t-error"), e.message);
  }
}

function chatWithRun() {
  const info = train.info;
  if (!info) return;
  if (info.adapter) {
    $("c-model").value = info.model;
    $("c-adapter").value = info.output_dir;
  } else {
    $("c-model").value = info.output_dir;
    $("c-adapter").value = "";
  }
  $("c-input").focus();
}

// ---------------------------------------------------------------- chart

let chartGeom = null;

function css(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

function niceTicks(lo, hi, n) {
  if (!(hi > lo)) { hi = lo + 1; }
  const raw = (hi - lo) / n;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) ticks.push(v);
  return ticks;
}

function drawChart() {
  const canvas = $("chart");
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (!w || !h) return;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(h * dpr);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  let trainPts = train.metrics.filter((m) => m.split === "train" && isFinite(m.loss));
  canvas.dataset.points = String(trainPts.length);
  // Long runs: about two points per pixel are enough (the last one always kept).
  const stride = Math.ceil(trainPts.length / (2 * w));
  if (stride > 1) {
    trainPts = trainPts.filter((_, i) => i % stride === 0 || i === trainPts.length - 1);
  }
  const evalPts = train.metrics.filter((m) => m.split === "eval" && isFinite(m.loss));
  const lrPts = trainPts.filter((m) => m.lr != null);
  const pad = { l: 52, r: 56, t: 12, b: 28 };
  const pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;
  ctx.font = "11px system-ui, sans-serif";
  ctx.fillStyle = css("--muted");
  if (!trainPts.length && !evalPts.length) {
    ctx.textAlign = "center";
    ctx.fillText(train.id == null ? "The loss appears here once a run starts." : "Waiting for the first step…", w / 2, h / 2);
    chartGeom = null;
    return;
  }
  const all = trainPts.concat(evalPts);
  let x0 = Math.min(...all.map((m) => m.step)), x1 = Math.max(...all.map((m) => m.step));
  if (x1 === x0) x1 = x0 + 1;
  let y0 = Math.min(...all.map((m) => m.loss)), y1 = Math.max(...all.map((m) => m.loss));
  const span = y1 - y0 || Math.abs(y1) || 1;
  y0 -= span * 0.08; y1 += span * 0.08;
  const yt = niceTicks(y0, y1, 5);
  y0 = Math.min(y0, yt[0]); y1 = Math.max(y1, yt[yt.length - 1]);
  const l0 = 0, l1 = Math.max(...lrPts.map((m) => m.lr), 0) * 1.1 || 1;
  const X = (s) => pad.l + ((s - x0) / (x1 - x0)) * pw;
  const Y = (v) => pad.t + (1 - (v - y0) / (y1 - y0)) * ph;
  const L = (v) => pad.t + (1 - (v - l0) / (l1 - l0)) * ph;

  // Grid and axes.
  ctx.strokeStyle = css("--line");
  ctx.lineWidth = 1;
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const v of yt) {
    const y = Math.round(Y(v)) + 0.5;
    ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(w - pad.r, y); ctx.stroke();
    ctx.fillText(fmtNum(v, 3), pad.l - 6, y);
  }
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  for (const s of niceTicks(x0, x1, Math.max(2, Math.floor(pw / 80)))) {
    if (!Number.isInteger(s) && x1 - x0 > 5) continue;
    ctx.fillText(String(Math.round(s * 100) / 100), X(s), h - pad.b + 6);
  }
  if (lrPts.length) {
    ctx.textAlign = "left";
    ctx.textBaseline = "middle";
    for (const v of niceTicks(l0, l1, 4)) {
      if (v > l1) continue;
      ctx.fillText(v === 0 ? "0" : v.toExponential(0), w - pad.r + 6, L(v));
    }
  }
  ctx.save();
  ctx.translate(12, pad.t + ph / 2);
  ctx.rotate(-Math.PI / 2);
  ctx.textAlign = "center";
  ctx.fillText("loss", 0, 0);
  ctx.restore();
  ctx.textAlign = "right";
  ctx.textBaseline = "bottom";
  ctx.fillText("step", w - pad.r, h - 2);

  // Learning rate (dashed, right axis), then train loss, then eval points.
  if (lrPts.length > 1) {
    ctx.strokeStyle = css("--lr");
    ctx.setLineDash([4, 3]);
    ctx.lineWidth = 1.2;
    ctx.beginPath();
    lrPts.forEach((m, i) => (i ? ctx.lineTo(X(m.step), L(m.lr)) : ctx.moveTo(X(m.step), L(m.lr))));
    ctx.stroke();
    ctx.setLineDash([]);
  }
  ctx.strokeStyle = css("--loss");
  ctx.lineWidth = 2;
  ctx.lineJoin = "round";
  ctx.beginPath();
  trainPts.forEach((m, i) => (i ? ctx.lineTo(X(m.step), Y(m.loss)) : ctx.moveTo(X(m.step), Y(m.loss))));
  ctx.stroke();
  if (trainPts.length <= 60) {
    ctx.fillStyle = css("--loss");
    for (const m of trainPts) { ctx.beginPath(); ctx.arc(X(m.step), Y(m.loss), 2.2, 0, 7); ctx.fill(); }
  }
  ctx.fillStyle = css("--eval");
  for (const m of evalPts) { ctx.beginPath(); ctx.arc(X(m.step), Y(m.loss), 4, 0, 7); ctx.fill(); }
  chartGeom = { X, Y, x0, x1, pad, pw, trainPts };
}

function chartHover(ev) {
  const tip = $("tooltip");
  if (!chartGeom || !chartGeom.trainPts.length) { tip.classList.add("hidden"); return; }
  const rect = $("chart").getBoundingClientRect();
  const x = ev.clientX - rect.left;
  const g = chartGeom;
  const step = g.x0 + ((x - g.pad.l) / g.pw) * (g.x1 - g.x0);
  let best = g.trainPts[0];
  for (const m of g.trainPts) if (Math.abs(m.step - step) < Math.abs(best.step - step)) best = m;
  tip.textContent = "step " + best.step + " · loss " + fmtNum(best.loss) + (best.lr != null ? " · lr " + fmtNum(best.lr, 3) : "");
  tip.style.left = g.X(best.step) + "px";
  tip.style.top = g.Y(best.loss) + "px";
  tip.classList.remove("hidden");
}

// ---------------------------------------------------------------- chat

const chat = {
  history: [], // {role, content, images: [workspace paths]}
  pending: [], // attachments for the next message: {path, url, uploading}
  busy: false,
};

function renderAttachments() {
  const box = $("attachments");
  box.replaceChildren(...chat.pending.map((a, i) => {
    const chip = document.createElement("div");
    chip.className = "chip" + (a.path ? "" : " uploading");
    const img = document.createElement("img");
    img.src = a.url;
    img.alt = a.name;
    img.title = a.path || "uploading…";
    const x = document.createElement("button");
    x.type = "button";
    x.textContent = "×";
    x.title = "Remove";
    x.onclick = () => { chat.pending.splice(i, 1); renderAttachments(); };
    chip.append(img, x);
    return chip;
  }));
}

async function attachFiles() {
  const files = Array.from($("c-file").files);
  $("c-file").value = "";
  show($("c-error"), "");
  for (const file of files) {
    const item = { name: file.name, url: URL.createObjectURL(file), path: null };
    chat.pending.push(item);
    renderAttachments();
    try {
      const res = await api("api/upload?name=" + encodeURIComponent(file.name), {
        method: "POST",
        headers: { "Content-Type": "application/octet-stream" },
        body: file,
      });
      item.path = (await res.json()).path;
    } catch (e) {
      chat.pending.splice(chat.pending.indexOf(item), 1);
      show($("c-error"), "Upload of " + file.name + " failed: " + e.message);
    }
    renderAttachments();
  }
}

function addBubble(role, content, imageUrls) {
  $("c-empty")?.remove();
  const msg = document.createElement("div");
  msg.className = "msg " + role;
  if (imageUrls && imageUrls.length) {
    const imgs = document.createElement("div");
    imgs.className = "imgs";
    for (const u of imageUrls) {
      const img = document.createElement("img");
      img.src = u;
      img.alt = "attached image";
      imgs.appendChild(img);
    }
    msg.appendChild(imgs);
  }
  const t = document.createElement("div");
  t.className = "text";
  t.textContent = content;
  msg.appendChild(t);
  $("messages").appendChild(msg);
  scrollChat();
  return msg;
}

function scrollChat() {
  const box = $("messages");
  box.scrollTop = box.scrollHeight;
}

function chatOptions() {
  const n = (id) => { const v = $(id).value.trim(); return v === "" ? null : Number(v); };
  return {
    system: text("c-system"),
    max_new_tokens: n("c-max"),
    temperature: n("c-temp"),
    top_p: n("c-topp"),
    top_k: n("c-topk"),
    repetition_penalty: n("c-rep"),
  };
}

async function sendMessage(ev) {
  ev.preventDefault();
  if (chat.busy) return;
  const content = $("c-input").value.trim();
  show($("c-error"), "");
  if (!content) return;
  if (chat.pending.some((a) => !a.path)) {
    show($("c-error"), "An image is still uploading.");
    return;
  }
  const model = $("c-model").value.trim();
  if (!model) {
    show($("c-error"), "Choose a model first.");
    return;
  }
  const attached = chat.pending.splice(0);
  renderAttachments();
  const turn = { role: "user", content, images: attached.map((a) => a.path) };
  const userBubble = addBubble("user", content, attached.map((a) => a.url));
  const bot = addBubble("assistant", "");
  bot.classList.add("pending");
  const out = bot.querySelector(".text");
  const line = document.createElement("div");
  line.className = "stats-line";
  bot.appendChild(line);
  $("c-input").value = "";
  chat.busy = true;
  $("c-send").disabled = true;
  $("c-state").textContent = "";
  let reply = "";
  let finished = false;
  const fail = (message) => {
    bot.classList.remove("pending");
    bot.classList.add("failed");
    userBubble.classList.add("failed");
    const err = document.createElement("div");
    err.className = "err";
    err.textContent = message;
    bot.appendChild(err);
    // The turn did not happen: the message goes back to the box to retry.
    if (!$("c-input").value) $("c-input").value = content;
    chat.pending.push(...attached);
    renderAttachments();
  };
  try {
    const body = Object.assign(chatOptions(), {
      model,
      adapter: text("c-adapter"),
      messages: chat.history.concat([turn]),
    });
    const res = await postJson("api/chat", body);
    await readSse(res, (name, data) => {
      if (name === "status") {
        line.textContent = data.message;
        $("c-state").textContent = data.message;
      } else if (name === "text") {
        reply += data.text;
        out.textContent = reply;
        bot.dataset.pieces = String(Number(bot.dataset.pieces || 0) + 1);
        scrollChat();
      } else if (name === "done") {
        finished = true;
        bot.classList.remove("pending");
        line.textContent = data.tokens + " tokens · " + data.seconds.toFixed(2) + " s · " +
          data.tokens_per_second.toFixed(1) + " tokens/s · prompt " + data.prompt_tokens +
          " tokens · stopped at " + data.stop;
        $("c-state").textContent = "";
        chat.history.push(turn, { role: "assistant", content: reply, images: [] });
      } else if (name === "error") {
        finished = true;
        line.textContent = "";
        fail(data.error);
      }
    });
    if (!finished) fail("The answer stopped before it was complete (connection lost).");
  } catch (e) {
    line.textContent = "";
    fail(e.message);
  } finally {
    chat.busy = false;
    $("c-send").disabled = false;
    $("c-state").textContent = "";
    scrollChat();
  }
}

function clearChat() {
  if (chat.busy) return;
  chat.history = [];
  chat.pending = [];
  renderAttachments();
  show($("c-error"), "");
  const empty = document.createElement("div");
  empty.className = "empty";
  empty.id = "c-empty";
  empty.textContent = "New conversation.";
  $("messages").replaceChildren(empty);
  $("c-input").focus();
}

function onAdapterChange() {
  const run = catalog.runs.find((r) => r.dir === $("c-adapter").value.trim());
  if (run && run.model) $("c-model").value = run.model;
}

// ---------------------------------------------------------------- start

async function init() {
  $("train-form").addEventListener("submit", startTraining);
  $("t-stop").addEventListener("click", stopTraining);
  $("t-chat").addEventListener("click", chatWithRun);
  $("t-strategy").addEventListener("change", updateLoraFields);
  $("t-vision").addEventListener("change", updateLoraFields);
  $("t-output").addEventListener("input", () => { $("t-output").dataset.touched = "1"; });
  $("t-overwrite").addEventListener("change", () => { if ($("t-overwrite").checked) $("t-resume").checked = false; });
  $("t-resume").addEventListener("change", () => { if ($("t-resume").checked) $("t-overwrite").checked = false; });
  $("chat-form").addEventListener("submit", sendMessage);
  $("c-input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      $("chat-form").requestSubmit();
    }
  });
  $("c-file").addEventListener("change", attachFiles);
  $("c-clear").addEventListener("click", clearChat);
  $("c-adapter").addEventListener("change", onAdapterChange);
  $("t-runs").addEventListener("change", () => {
    const id = Number($("t-runs").value);
    if (id && id !== train.id) attachRun(id, false);
  });
  $("chart").addEventListener("mousemove", chartHover);
  $("chart").addEventListener("mouseleave", () => $("tooltip").classList.add("hidden"));
  window.addEventListener("resize", drawChart);
  setInterval(tickClock, 1000);
  updateLoraFields();
  drawChart();
  const info = await loadInfo();
  if (info && info.jobs.length) {
    // Follow the active run, or show the latest one.
    const job = info.jobs.find((j) => j.info.id === info.active) || info.jobs[info.jobs.length - 1];
    attachRun(job.info.id, false);
  }
}

document.addEventListener("DOMContentLoaded", init);
