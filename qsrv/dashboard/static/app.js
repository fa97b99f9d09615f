// qsrv dashboard: one server-sent event stream, rendered into plain DOM (no framework).
"use strict";

const state = { events: [], cluster: null, gateway: null, viewer: null, dead: new Map(), logsFor: null, source: null };
const STREAM_SECONDS = 60;
const MAX_EVENTS = 5000;

function $(id) { return document.getElementById(id); }

function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function fill(tableId, rows, render) {
  const body = $(tableId).querySelector("tbody");
  const fresh = document.createElement("tbody");
  for (const item of rows) render(fresh, item);
  body.replaceWith(fresh);
}

function fmtRes(obj) {
  if (!obj) return "";
  return Object.entries(obj).map(([k, v]) => k + "=" + v).join(", ");
}

function fmtTime(t) {
  if (t === null || t === undefined || t === "") return "";
  if (typeof t === "number") return new Date(t * 1000).toLocaleTimeString();
  return String(t);
}

function hue(name) {
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
  return Math.round((h % 1000) * 137.508) % 360;  // spread apart by the golden angle
}

function colour(name, ok) { return ok ? "hsl(" + hue(name) + ",65%,50%)" : "#c62828"; }

function showPage() {
  const page = (location.hash || "#cluster").slice(1);
  for (const el of document.querySelectorAll(".page")) el.classList.toggle("active", el.id === "page-" + page);
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.page === page);
  if (page === "tasks") drawStream();
}

function engines(info) {
  if (!info) return "";
  const out = [];
  const q = info.quantum;
  if (q && q.aer_version) out.push("aer " + q.aer_version + " (" + (q.devices || []).join("/") + ")");
  for (const engines of [info.engines, q && q.engines]) {
    if (!engines || typeof engines !== "object") continue;
    for (const [k, v] of Object.entries(engines)) {
      if (v && v.error) continue;  // not installed here
      out.push(k + (v && v.version ? " " + v.version : ""));
    }
  }
  if (Array.isArray(info.platforms)) out.push(...info.platforms.map(p => (p && p.name) || String(p)));
  return out.join(", ");
}

function store(info) {
  const s = info && info.store_stats;
  if (!s || typeof s !== "object") return "";
  if (typeof s.used === "number" && typeof s.capacity === "number") {
    return (s.used / 1048576).toFixed(1) + " / " + (s.capacity / 1048576).toFixed(0) + " MiB, " + (s.objects || 0) + " objects";
  }
  return "";
}

function renderCluster(c) {
  const st = c.status || {};
  const workers = st.workers || [];
  const extra = c.workers || {};
  const now = Date.now();
  for (const w of workers) state.dead.delete(String(w.id));
  for (const [id, w] of state.dead) if (now - w.gone > 120000) state.dead.delete(id);
  if (state.cluster) {
    const ids = new Set(workers.map(w => String(w.id)));
    for (const w of (state.cluster.status.workers || [])) {
      if (!ids.has(String(w.id)) && !state.dead.has(String(w.id))) state.dead.set(String(w.id), { worker: w, gone: now });
    }
  }
  $("count-workers").textContent = workers.length;
  $("count-executors").textContent = workers.reduce((n, w) => n + (w.executors || 0), 0);
  $("count-clients").textContent = st.clients ?? 0;
  $("count-objects").textContent = st.objects ?? 0;
  const lag = st.scheduler && st.scheduler.loop_lag_ms;
  $("loop-lag").textContent = lag ? lag.last.toFixed(1) : "–";
  const rows = workers.map(w => ({ w, dead: false })).concat([...state.dead.values()].map(d => ({ w: d.worker, dead: true })));
  fill("workers", rows, (body, { w, dead }) => {
    const tr = document.createElement("tr");
    tr.dataset.workerId = w.id;
    if (dead) tr.className = "dead";
    const x = extra[String(w.id)] || {};
    cell(tr, w.id); cell(tr, w.name + (dead ? " (gone)" : "")); cell(tr, w.pid);
    cell(tr, fmtRes(w.total)); cell(tr, fmtRes(w.free));
    const pulled = (c.transfers || {})[String(w.id)];
    cell(tr, w.executors); cell(tr, w.running); cell(tr, store(w.info));
    cell(tr, pulled ? pulled[0] + " (" + (pulled[1] / 1048576).toFixed(1) + " MiB)" : "0", "pulled");
    cell(tr, engines(w.info));
    cell(tr, dead ? "–" : (x.heartbeat_age ?? 0).toFixed(1));
    body.appendChild(tr);
  });
  fill("platforms", c.platforms || [], (body, p) => {
    const tr = document.createElement("tr");
    tr.dataset.platform = p.name;
    cell(tr, p.name); cell(tr, p.engine + " " + p.method + " (" + p.device + ")"); cell(tr, p.version);
    cell(tr, p.max_qubits); cell(tr, p.max_shots); cell(tr, p.availability, "status-" + p.availability);
    cell(tr, p.workers);
    body.appendChild(tr);
  });
  const exRows = [];
  for (const [wid, x] of Object.entries(extra)) for (const e of (x.executors || [])) exRows.push([wid, ...e]);
  fill("executors", exRows, (body, [wid, pid, running, queued]) => {
    const tr = document.createElement("tr");
    cell(tr, wid); cell(tr, pid); cell(tr, running || "idle"); cell(tr, queued);
    body.appendChild(tr);
  });
  const res = st.reservations;
  $("reservations-block").hidden = !Array.isArray(res);
  if (Array.isArray(res)) {
    fill("reservations", res, (body, r) => {
      const tr = document.createElement("tr");
      cell(tr, r.id); cell(tr, r.name); cell(tr, fmtRes(r.target)); cell(tr, r.worker);
      cell(tr, r.status, "status-" + r.status); cell(tr, r.holder);
      cell(tr, Array.isArray(r.tasks) ? r.tasks.length : r.tasks);
      body.appendChild(tr);
    });
  }
  renderTasks(c);
}

function renderTasks(c) {
  const counts = (c.status && c.status.tasks) || {};
  for (const k of ["waiting", "queued", "running", "infeasible"]) $("count-" + k).textContent = counts[k] ?? 0;
  const t = c.totals || {};
  $("total-submitted").textContent = t.submitted ?? 0;
  $("total-done").textContent = t.done ?? 0;
  $("total-failed").textContent = t.failed ?? 0;
  $("rate-finished").textContent = (c.rates && c.rates.finished !== undefined) ? c.rates.finished : "–";
  $("rate-submitted").textContent = (c.rates && c.rates.submitted !== undefined) ? c.rates.submitted : "–";
  $("failure-kinds").textContent = Object.entries(c.failure_kinds || {}).map(([k, n]) => k + ": " + n).join(", ");
  if (c.reset_events) state.events = [];
  for (const e of (c.events || [])) state.events.push(e);
  if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
  fill("functions", c.functions || [], (body, f) => {
    const tr = document.createElement("tr");
    cell(tr, f.function); cell(tr, f.submitted); cell(tr, f.done); cell(tr, f.failed);
    cell(tr, f.mean.toFixed(4)); cell(tr, f.max.toFixed(4)); cell(tr, f.seconds.toFixed(3));
    body.appendChild(tr);
  });
  fill("infeasible", (c.status && c.status.infeasible) || [], (body, i) => {
    const tr = document.createElement("tr");
    cell(tr, fmtRes(i.target)); cell(tr, i.count); cell(tr, i.reason);
    body.appendChild(tr);
  });
  const box = $("failures");
  box.replaceChildren();
  for (const f of (c.failures || []).slice().reverse()) {
    const d = document.createElement("details");
    d.className = "failure";
    const s = document.createElement("summary");
    const where = f.worker ? " on worker " + f.worker + (f.pid ? " (executor " + f.pid + ")" : "") : "";
    s.textContent = fmtTime(f.at) + "  " + f.function + "  task " + f.task_id.toString(16) + where + "  [" + (f.kind || "error") + "]";
    d.dataset.kind = f.kind || "error";
    const pre = document.createElement("pre");
    pre.textContent = f.traceback;
    d.append(s, pre);
    box.appendChild(d);
  }
  drawStream();
}

function drawStream() {
  const canvas = $("stream");
  if (!canvas || !canvas.offsetParent) return;
  const w = canvas.clientWidth, h = canvas.clientHeight;
  if (canvas.width !== w) canvas.width = w;
  if (canvas.height !== h) canvas.height = h;
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, w, h);
  const end = state.cluster && state.cluster.now ? state.cluster.now : Date.now() / 1000;
  const start = end - STREAM_SECONDS;
  const lanes = new Map();
  const recent = state.events.filter(e => e[0] >= start);
  for (const e of recent) {
    const key = e[4] + ":" + e[5];
    if (!lanes.has(key)) lanes.set(key, lanes.size);
  }
  const laneH = Math.max(4, Math.min(24, (h - 20) / Math.max(1, lanes.size)));
  ctx.font = "10px sans-serif";
  ctx.fillStyle = "#6b7280";
  for (const [key, i] of lanes) ctx.fillText(key, 2, 10 + i * laneH + laneH / 2);
  const left = 60, span = w - left - 4;
  const names = new Map();
  for (const e of recent) {
    const [t, elapsed, , name, wid, pid, ok] = e;
    const i = lanes.get(wid + ":" + pid);
    const x0 = left + ((t - elapsed - start) / STREAM_SECONDS) * span;
    const x1 = left + ((t - start) / STREAM_SECONDS) * span;
    ctx.fillStyle = colour(name, ok);
    ctx.fillRect(Math.max(left, x0), 4 + i * laneH, Math.max(1, x1 - Math.max(left, x0)), laneH - 2);
    names.set(name, true);
  }
  const legend = $("legend");
  legend.replaceChildren();
  for (const name of names.keys()) {
    const s = document.createElement("span");
    const i = document.createElement("i");
    i.style.background = colour(name, true);
    s.append(i, document.createTextNode(name));
    legend.appendChild(s);
  }
}

function renderByUser(rows) {
  $("nav-gateway").hidden = false;
  $("by-user-block").hidden = false;
  $("user-jobs-block").hidden = true;
  fill("by-user", rows, (body, r) => {
    const tr = document.createElement("tr");
    tr.dataset.user = r.user;
    cell(tr, r.user); cell(tr, r.kind); cell(tr, r.status, "status-" + r.status); cell(tr, r.count);
    body.appendChild(tr);
  });
}

function renderGateway(g) {
  $("nav-gateway").hidden = false;
  $("user-jobs-block").hidden = false;
  $("jobs-by-status").textContent = (g.by_status || []).map(r => r.kind + " " + r.status + ": " + r.count).join(", ");
  fill("jobs", g.jobs || [], (body, j) => {
    const tr = document.createElement("tr");
    tr.dataset.jobId = j.job_id;
    cell(tr, j.job_id); cell(tr, j.program); cell(tr, j.status, "status-" + j.status);
    cell(tr, fmtTime(j.created_at)); cell(tr, fmtTime(j.finished_at));
    const td = document.createElement("td");
    const b = document.createElement("button");
    b.className = "link"; b.textContent = "logs"; b.dataset.jobId = j.job_id;
    b.addEventListener("click", () => loadLogs(j.job_id));
    td.appendChild(b); tr.appendChild(td);
    body.appendChild(tr);
  });
  const now = Date.now() / 1000;
  fill("sessions", g.sessions || [], (body, s) => {
    const tr = document.createElement("tr");
    tr.dataset.sessionId = s.id;
    const started = s.started_at || s.created_at;
    const deadline = (typeof started === "number" && s.max_duration_s) ? started + s.max_duration_s : null;
    const last = s.last_job_at || started;
    const idle = (typeof last === "number" && s.max_idle_duration_s) ? Math.max(0, last + s.max_idle_duration_s - now) : null;
    cell(tr, s.id); cell(tr, s.platform); cell(tr, s.status, "status-" + s.status);
    cell(tr, deadline ? fmtTime(deadline) : ""); cell(tr, idle === null ? "" : idle.toFixed(0));
    body.appendChild(tr);
  });
  fill("batches", g.batches || [], (body, b) => {
    const tr = document.createElement("tr");
    tr.dataset.batchId = b.id;
    const jobs = b.jobs || [];
    const done = jobs.filter(j => ["DONE", "ERROR", "CANCELED", "TIMED_OUT"].includes(String(j.status).toUpperCase().replace("QSTATUS.", ""))).length;
    cell(tr, b.id); cell(tr, b.platform); cell(tr, b.status, "status-" + b.status); cell(tr, b.open);
    cell(tr, done + " / " + jobs.length);
    const td = document.createElement("td");
    const bar = document.createElement("span"); bar.className = "bar";
    const fillEl = document.createElement("i"); fillEl.style.width = (jobs.length ? 100 * done / jobs.length : 0) + "%";
    bar.appendChild(fillEl); td.appendChild(bar); tr.appendChild(td);
    body.appendChild(tr);
  });
  const notes = ["jobs_error", "sessions_error", "batches_error"].filter(k => g[k]).map(k => g[k]);
  $("gateway-note").textContent = notes.join("; ");
  const logs = g.logs;
  if (logs && logs.job_id === state.logsFor) {  // pushed with each update: no polling
    $("job-logs-title").textContent = "Logs of " + logs.job_id;
    $("job-logs").textContent = logs.error ? "(" + logs.error + ")" : logs.text;
  }
}

function loadLogs(jobId) {
  state.logsFor = jobId;  // the stream now carries this job's logs
  $("job-logs-title").textContent = "Logs of " + jobId;
  $("job-logs").textContent = "…";
  connect();
}

function onUpdate(ev) {
  const view = JSON.parse(ev.data);
  state.viewer = view.viewer;
  $("viewer").textContent = view.viewer ? view.viewer.name : "";
  const live = $("live");
  const c = view.cluster;
  if (c && c.error) { live.textContent = c.error; live.className = "live bad"; }
  else { live.textContent = "live"; live.className = "live ok"; }
  $("nav-cluster").hidden = !c; $("nav-tasks").hidden = !c;
  if (c && c.status) { renderCluster(c); state.cluster = c; }
  if (view.gateway) { state.gateway = view.gateway; renderGateway(view.gateway); }
  else if (view.by_user) renderByUser(view.by_user);
  else $("nav-gateway").hidden = true;
  if (!c && location.hash !== "#gateway") location.hash = "#gateway";
  document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
}

function connect() {
  if (state.source) state.source.close();
  const url = "api/stream" + (state.logsFor ? "?logs=" + encodeURIComponent(state.logsFor) : "");
  const source = new EventSource(url);
  state.source = source;
  source.addEventListener("update", onUpdate);
  source.onerror = () => { const live = $("live"); live.textContent = "reconnecting…"; live.className = "live bad"; };
}

window.addEventListener("hashchange", showPage);
window.addEventListener("resize", drawStream);
document.addEventListener("DOMContentLoaded", () => { showPage(); connect(); });
