// edgead's operator page: plain JavaScript, no framework, no network beyond this daemon.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "edgead-token"; // sessionStorage: gone when the tab closes

function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }

async function api(method, path, body) {
  const headers = {};
  if (token()) headers["Authorization"] = "Bearer " + token();
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  let data = null;
  try { data = await r.json(); } catch (e) { data = null; }
  if (!r.ok) {
    const detail = data && data.detail ? data.detail : r.statusText;
    const err = new Error(r.status === 401 ? "refused: the token is missing or wrong (" + detail + ")" : detail);
    err.status = r.status;
    throw err;
  }
  return data;
}

const fmt = (x, d = 4) => (x === null || x === undefined ? "–" : Number(x).toPrecision(d));
const when = (ts) => (typeof ts === "number" ? new Date(ts * 1000) : new Date(ts)).toLocaleString();

function setDecision(el, decision) {
  el.textContent = decision === "reject" ? "REJECT" : decision === "ok" ? "OK" : "–";
  el.className = "decision " + (decision || "");
}

// -- pages -----------------------------------------------------------------------------------
const pages = { live: showLive, results: showResults, part: showPart, threshold: showThreshold, model: showModel };

function route() {
  const parts = (location.hash || "#/live").slice(2).split("/");
  let name = parts[0] || "live";
  if (name === "results" && parts[1]) name = "part";
  if (!pages[name]) name = "live";
  document.querySelectorAll("main > section").forEach((s) => { s.hidden = s.dataset.page !== name; });
  document.querySelectorAll("nav a").forEach((a) => {
    const current = a.dataset.page === name || (name === "part" && a.dataset.page === "results");
    if (current) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  });
  pages[name](parts[1]);
}

// -- live: server-sent events ------------------------------------------------------------------
let events = null;
const recent = []; // timestamps (ms) of the last parts, for throughput

function showLive() {
  if (events) return;
  events = new EventSource("/live/events");
  events.addEventListener("part", (e) => {
    const p = JSON.parse(e.data);
    setDecision($("live-decision"), p.decision);
    $("live-id").innerHTML = "";
    if (p.id !== null) {
      const a = document.createElement("a");
      a.href = "#/results/" + p.id; a.textContent = "#" + p.id;
      $("live-id").appendChild(a);
    } else $("live-id").textContent = "(not logged)";
    $("live-score").textContent = fmt(p.score);
    $("live-norm").textContent = fmt(p.normalized_score, 3);
    $("live-latency").textContent = p.latency_ms === null ? "–" : p.latency_ms.toFixed(1) + " ms";
    const now = Date.now();
    recent.push(now);
    while (recent.length > 1 && now - recent[0] > 60000) recent.shift();
    const span = (now - recent[0]) / 1000;
    $("live-rate").textContent = recent.length > 1 && span > 0 ? (60 * (recent.length - 1) / span).toFixed(1) + " parts/min" : "–";
    $("live-frame").src = "/live/frame.jpg?seq=" + p.seq;
    document.body.dataset.lastPart = String(p.id);
  });
  events.addEventListener("state", (e) => {
    const s = JSON.parse(e.data);
    $("live-ready").textContent = s.ready ? "ready" : "not ready (" + s.state + ")";
    $("live-camera").textContent = s.camera;
    $("live-queue").textContent = s.queue + " / " + s.queue_capacity;
    $("live-model").textContent = s.model.name + " " + s.model.version + " · threshold " + fmt(s.threshold);
  });
}

// -- results -------------------------------------------------------------------------------------
async function showResults() {
  const filter = $("results-filter").value;
  const body = $("results-body");
  const data = await api("GET", "/results?limit=100" + (filter ? "&decision=" + filter : ""));
  body.innerHTML = "";
  for (const r of data.results) {
    const tr = document.createElement("tr");
    const link = '<a href="#/results/' + r.id + '">#' + r.id + "</a>";
    const thumb = r.image_url ? '<img class="thumb" loading="lazy" alt="part ' + r.id + '" src="/results/' + r.id + '/thumb.jpg">' : "–";
    tr.innerHTML = "<td>" + link + "</td><td>" + when(r.timestamp) + '</td><td><span class="decision ' + r.decision + '">' +
      (r.decision === "reject" ? "REJECT" : "OK") + "</span></td><td>" + fmt(r.score) + "</td><td>" + fmt(r.normalized_score, 3) +
      "</td><td>" + thumb + "</td>";
    body.appendChild(tr);
  }
}

async function showPart(id) {
  const r = await api("GET", "/results/" + encodeURIComponent(id));
  $("part-id").textContent = "#" + r.id;
  setDecision($("part-decision"), r.decision);
  $("part-score").textContent = fmt(r.score);
  $("part-norm").textContent = fmt(r.normalized_score, 3);
  $("part-threshold").textContent = fmt(r.threshold);
  $("part-time").textContent = when(r.timestamp);
  $("part-source").textContent = r.source || "–";
  $("part-model").textContent = r.model.name + " " + r.model.version;
  $("part-frame-fig").hidden = !r.image_url;
  $("part-heatmap-fig").hidden = !r.heatmap_url;
  $("part-nostore").hidden = Boolean(r.image_url || r.heatmap_url);
  if (r.image_url) { $("part-frame").src = "/results/" + r.id + "/image"; $("part-download").href = "/results/" + r.id + "/image"; }
  if (r.heatmap_url) $("part-heatmap").src = "/results/" + r.id + "/heatmap.png";
  // only a stored reject can be taught from: its frame is what joins the model
  $("good-form").hidden = !(r.decision === "reject" && r.image_url);
  $("good-form").dataset.id = r.id;
  $("good-result").textContent = "";
}

const TEACH_END = ["done", "failed", "cancelled"];

// Poll a teach job until it ends; the daemon swaps the taught model in itself.
async function followTeach(job, show) {
  while (!TEACH_END.includes(job.state)) {
    show("Teaching: " + job.state + "…");
    await new Promise((ok) => setTimeout(ok, 1000));
    job = await api("GET", "/model/teach/" + encodeURIComponent(job.id));
  }
  if (job.state === "done") show("Taught: the line now runs version " + job.version + " (threshold " + fmt(job.threshold) + ").");
  else show("Teaching " + job.state + (job.error ? ": " + job.error : "") + ". The model in use is unchanged.");
  return job;
}

async function markGood() {
  const show = (text) => { $("good-result").textContent = text; };
  try {
    const job = await api("POST", "/results/" + encodeURIComponent($("good-form").dataset.id) + "/good");
    await followTeach(job, show);
  } catch (e) {
    show(e.status === 403 ? "Teaching is off on this daemon ([teach] enabled = false)." : e.message);
  }
}

// -- threshold -----------------------------------------------------------------------------------
let scores = [];
let decisions = []; // as logged: the colours show what the line did, the lines what a threshold would do
let current = null;

async function showThreshold() {
  const [data, model] = await Promise.all([api("GET", "/results?limit=1000"), api("GET", "/model")]);
  scores = data.results.map((r) => r.score);
  decisions = data.results.map((r) => r.decision);
  current = model.threshold;
  $("thr-count").textContent = scores.length;
  if (!$("thr-value").value) $("thr-value").value = current;
  drawHistogram();
}

function drawHistogram() {
  const svg = $("thr-hist");
  const proposed = Number($("thr-value").value) || current;
  const hi = Math.max(current * 2, proposed * 1.2, ...scores, 1e-9);
  const bins = 40, counts = Array(bins).fill(0), rejects = Array(bins).fill(0);
  scores.forEach((s, i) => {
    const b = Math.min(bins - 1, Math.floor((s / hi) * bins));
    if (decisions[i] === "reject") rejects[b]++; else counts[b]++;
  });
  const top = Math.max(1, ...counts.map((c, i) => c + rejects[i]));
  let out = "";
  for (let i = 0; i < bins; i++) {
    const x = 10 + (i * 580) / bins, w = 580 / bins - 1;
    const hg = (counts[i] / top) * 190, hr = (rejects[i] / top) * 190;
    out += '<rect class="good" x="' + x + '" y="' + (200 - hg) + '" width="' + w + '" height="' + hg + '"></rect>';
    out += '<rect class="reject" x="' + x + '" y="' + (200 - hg - hr) + '" width="' + w + '" height="' + hr + '"></rect>';
  }
  const line = (t, cls) => { const x = 10 + (t / hi) * 580; return '<line class="' + cls + '" x1="' + x + '" x2="' + x + '" y1="0" y2="205"></line>'; };
  out += line(current, "current") + (proposed !== current ? line(proposed, "proposed") : "");
  out += '<text x="10" y="218">0</text><text x="560" y="218">' + fmt(hi, 3) + "</text>";
  out += '<text x="420" y="14">green: passed · red: rejected</text>';
  svg.innerHTML = out;
  const flips = scores.filter((s) => (s > current) !== (s > proposed)).length;
  $("thr-preview").textContent = proposed === current ? "This is the threshold in use." :
    flips + " of " + scores.length + " recent parts would change decision at " + fmt(proposed) + ".";
}

async function setThreshold(value) {
  try {
    const r = await api("PUT", "/threshold", { threshold: value });
    $("thr-result").textContent = "Threshold is now " + fmt(r.threshold) + " (was " + fmt(r.previous) + ").";
    $("thr-value").value = r.threshold;
    await showThreshold();
  } catch (e) {
    $("thr-result").textContent = e.message;
  }
}

// -- model ---------------------------------------------------------------------------------------
async function showModel() {
  const m = await api("GET", "/model");
  const facts = { Name: m.name, Version: m.version, Precision: m.precision, Method: m.method, Search: m.search,
    "Input size": (m.input_size || []).join(" x "), Threshold: fmt(m.threshold) + " (" + m.threshold_source + ")",
    "Model's threshold": fmt(m.artifact_threshold), Path: m.path, "SHA-256": m.sha256 };
  const dl = $("model-facts");
  dl.innerHTML = "";
  for (const [k, v] of Object.entries(facts)) {
    const dt = document.createElement("dt"); dt.textContent = k;
    const dd = document.createElement("dd"); dd.textContent = v === null || v === undefined ? "–" : v;
    dl.append(dt, dd);
  }
  $("model-parity").textContent = m.parity ? JSON.stringify(m.parity, null, 2) : "not recorded";
  await showVersions();
}

async function showVersions() {
  const body = $("versions-body");
  body.innerHTML = "";
  let list;
  try {
    list = await api("GET", "/model/versions");
  } catch (e) {
    $("versions-table").hidden = true;
    $("versions-state").textContent = e.status === 403 ? "Teaching is off on this daemon: no versions are kept." : e.message;
    return;
  }
  $("versions-table").hidden = list.length === 0;
  $("versions-state").textContent = list.length ? list.length + " kept" : "No versions kept yet: the first teach keeps one.";
  for (const v of list.slice().reverse()) {
    const tr = document.createElement("tr");
    for (const text of [v.version + (v.current ? " (in use)" : ""), v.created || "–", v.added || "–", fmt(v.threshold)]) {
      const td = document.createElement("td"); td.textContent = text; tr.appendChild(td);
    }
    const td = document.createElement("td");
    if (!v.current) {
      const b = document.createElement("button");
      b.type = "button"; b.textContent = "Roll back to this"; b.dataset.version = v.version;
      b.addEventListener("click", () => rollback(v.version));
      td.appendChild(b);
    }
    tr.appendChild(td);
    body.appendChild(tr);
  }
}

async function rollback(version) {
  try {
    const r = await api("POST", "/model/rollback", { version });
    $("rollback-result").textContent = "Serving version " + r.version + ".";
    await showModel();
  } catch (e) {
    $("rollback-result").textContent = e.message;
  }
}

// -- wiring --------------------------------------------------------------------------------------
$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const value = $("token").value.trim();
  if (value) sessionStorage.setItem(TOKEN_KEY, value); else sessionStorage.removeItem(TOKEN_KEY);
  $("token").value = "";
  $("token-state").textContent = value ? "token set for this tab" : "no token";
});
$("token-state").textContent = token() ? "token set for this tab" : "no token";
$("results-filter").addEventListener("change", showResults);
$("thr-value").addEventListener("input", drawHistogram);
$("thr-form").addEventListener("submit", (e) => { e.preventDefault(); setThreshold(Number($("thr-value").value)); });
$("thr-reset").addEventListener("click", () => setThreshold(null));
$("good-form").addEventListener("submit", (e) => { e.preventDefault(); markGood(); });
$("reload-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const path = $("reload-path").value.trim();
  try {
    const r = await api("POST", "/model/reload", path ? { path } : undefined);
    $("reload-result").textContent = "Serving " + r.model.name + " " + r.model.version + ".";
    showModel();
  } catch (err) {
    $("reload-result").textContent = err.message;
  }
});
window.addEventListener("hashchange", route);
route();
