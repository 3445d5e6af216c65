// genimg local console: plain JavaScript, no build step.
"use strict";

const main = document.getElementById("main");
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const usd = (v) => "$" + Number(v || 0).toFixed(4);
const ms = (v) => (v ? (v >= 1000 ? (v / 1000).toFixed(2) + " s" : v + " ms") : "");
const imgURL = (uri) => "api/object?uri=" + encodeURIComponent(uri);

async function api(path, opts) {
  const r = await fetch(path, opts);
  let body = null;
  try { body = await r.json(); } catch (e) { body = null; }
  if (!r.ok) throw new Error((body && body.error) || r.status + " " + r.statusText);
  return body;
}

// Words for what the model says.
const FINISH = {
  STOP: "The model finished normally.",
  MAX_TOKENS: "The answer hit the output token limit.",
  SAFETY: "The answer was stopped by a safety filter.",
  RECITATION: "The answer was stopped because it recited protected material.",
  IMAGE_SAFETY: "The image was withheld by the image safety filter.",
  IMAGE_PROHIBITED_CONTENT: "The image was withheld as prohibited content.",
  IMAGE_OTHER: "No image, for a reason the model did not name.",
  IMAGE_RECITATION: "The image was withheld because it recited protected material.",
  NO_IMAGE: "The model answered without an image.",
  PROHIBITED_CONTENT: "The answer was stopped as prohibited content.",
  BLOCKLIST: "The answer contained a blocked term.",
  OTHER: "The model stopped for another reason.",
};
const PROB = { NEGLIGIBLE: "negligible", LOW: "low", MEDIUM: "medium", HIGH: "high" };
const catName = (c) => String(c || "").replace(/^HARM_CATEGORY_/, "").replace(/_/g, " ").toLowerCase();

// ---- live updates ----
let onJobsChanged = null, onMessage = null, onSpendChanged = null;
const es = new EventSource("api/stream");
window.addEventListener("pagehide", () => es.close()); // free the connection at once
es.addEventListener("jobs", () => onJobsChanged && onJobsChanged());
es.addEventListener("message", (e) => onMessage && onMessage(JSON.parse(e.data)));
es.addEventListener("spend", () => { refreshBanner(); if (onSpendChanged) onSpendChanged(); });

async function refreshBanner() {
  try {
    const t = await api("api/spend");
    document.getElementById("paused-banner").hidden = !t.paused;
  } catch (e) { /* spend not available */ }
}

// ---- routing ----
function route() {
  const h = location.hash || "#/jobs";
  onJobsChanged = null; onMessage = null; onSpendChanged = null;
  document.querySelectorAll("nav a").forEach((a) => a.setAttribute("aria-current", h.startsWith(a.getAttribute("href")) ? "page" : "false"));
  const m = h.match(/^#\/job\/(.+)$/);
  if (m) return jobPage(decodeURIComponent(m[1]));
  if (h.startsWith("#/submit")) return submitPage();
  if (h.startsWith("#/events")) return eventsPage();
  if (h.startsWith("#/spend")) return spendPage();
  return jobsPage();
}
window.addEventListener("hashchange", route);

// ---- jobs list ----
const listState = { offset: 0, limit: 50, outcome: "", trigger: "", q: "" };

function jobsPage() {
  main.innerHTML = `<h2>Jobs</h2>
  <form class="filters" id="filters" role="search">
    <div><label for="f-q">Search id or label</label><input id="f-q" name="q" type="search" value="${esc(listState.q)}"></div>
    <div><label for="f-outcome">Outcome</label><select id="f-outcome" name="outcome">
      ${["", "succeeded", "blocked", "failed", "pending"].map((o) => `<option value="${o}" ${o === listState.outcome ? "selected" : ""}>${o || "any"}</option>`).join("")}</select></div>
    <div><label for="f-trigger">Trigger</label><select id="f-trigger" name="trigger">
      ${["", "http", "pubsub", "upload", "batch"].map((o) => `<option value="${o}" ${o === listState.trigger ? "selected" : ""}>${o || "any"}</option>`).join("")}</select></div>
    <button type="submit">Apply</button>
  </form>
  <p id="jobs-status" class="na" role="status"></p>
  <table aria-describedby="jobs-status"><thead><tr><th scope="col">Job</th><th scope="col">State</th><th scope="col">Outcome</th><th scope="col">Trigger</th><th scope="col">Model</th><th scope="col">Cost</th><th scope="col">Duration</th><th scope="col">Arrived</th></tr></thead>
  <tbody id="jobs-body"></tbody></table>
  <div class="pager"><button type="button" class="secondary" id="prev">Newer</button><span id="page-info"></span><button type="button" class="secondary" id="next">Older</button></div>`;
  document.getElementById("filters").addEventListener("submit", (e) => {
    e.preventDefault();
    const f = new FormData(e.target);
    Object.assign(listState, { q: f.get("q"), outcome: f.get("outcome"), trigger: f.get("trigger"), offset: 0 });
    loadJobs();
  });
  document.getElementById("prev").onclick = () => { listState.offset = Math.max(0, listState.offset - listState.limit); loadJobs(); };
  document.getElementById("next").onclick = () => { listState.offset += listState.limit; loadJobs(); };
  onJobsChanged = loadJobs;
  loadJobs();
}

let loading = false, again = false;
async function loadJobs() {
  if (loading) { again = true; return; }
  loading = true;
  try {
    const p = new URLSearchParams({ offset: listState.offset, limit: listState.limit, outcome: listState.outcome, trigger: listState.trigger, q: listState.q });
    const res = await api("api/jobs?" + p);
    const body = document.getElementById("jobs-body");
    if (!body) return;
    body.innerHTML = res.jobs.map((j) => `<tr data-id="${esc(j.id)}" data-state="${esc(j.state)}">
      <td><a href="#/job/${encodeURIComponent(j.id)}">${esc(j.id)}</a></td>
      <td class="state s-${esc(j.state)}">${esc(j.state)}</td>
      <td class="o-${esc(j.outcome)}">${esc(j.outcome)}</td><td>${esc(j.trigger)}</td><td>${esc(j.model)}</td>
      <td class="num">${j.outcome ? usd(j.costUsd) : ""}</td><td class="num">${ms(j.durationMs)}</td>
      <td>${new Date(j.created).toLocaleTimeString()}</td></tr>`).join("") ||
      `<tr><td colspan="8" class="na">No jobs yet: submit one.</td></tr>`;
    document.getElementById("jobs-status").textContent = `${res.total} job(s); listed in ${res.tookMs} ms`;
    document.getElementById("page-info").textContent = res.total ? `${res.offset + 1}–${res.offset + res.jobs.length} of ${res.total}` : "";
    document.getElementById("prev").disabled = res.offset === 0;
    document.getElementById("next").disabled = res.offset + res.jobs.length >= res.total;
    document.getElementById("paused-banner").hidden = !res.paused;
    if (!window.firstRowsAt) window.firstRowsAt = performance.now();
  } catch (e) {
    const s = document.getElementById("jobs-status");
    if (s) { s.textContent = e.message; s.className = "error"; }
  } finally {
    loading = false;
    if (again) { again = false; loadJobs(); }
  }
}

// ---- a job ----
async function jobPage(id) {
  main.innerHTML = `<h2>Job <code>${esc(id)}</code></h2><div id="job"><p class="na">Loading…</p></div>`;
  let seq = 0;
  const render = async () => {
    const mine = ++seq;
    let j;
    try { j = await api("api/jobs/" + encodeURIComponent(id)); } catch (e) {
      document.getElementById("job").innerHTML = `<p class="error">${esc(e.message)}</p>`; return;
    }
    const el = document.getElementById("job");
    if (!el || mine !== seq) return;
    el.innerHTML = jobHTML(j);
    el.querySelectorAll("img[data-full]").forEach((img) => {
      img.parentElement.addEventListener("click", (e) => { e.preventDefault(); showFull(img.dataset.full, img.alt); });
    });
    const rerun = document.getElementById("rerun");
    if (rerun) rerun.onclick = async () => {
      const out = document.getElementById("actions-out");
      try { const r = await api(`api/jobs/${encodeURIComponent(id)}/rerun`, { method: "POST" }); out.innerHTML = `Rerun as <a href="#/job/${encodeURIComponent(r.jobId)}">${esc(r.jobId)}</a> ${esc(r.note || "")}`; out.className = ""; }
      catch (e) { out.textContent = e.message; out.className = "error"; }
    };
    const cont = document.getElementById("continue");
    if (cont) cont.onsubmit = async (e) => {
      e.preventDefault();
      const out = document.getElementById("actions-out");
      try { const r = await api(`api/jobs/${encodeURIComponent(id)}/continue`, { method: "POST", body: new FormData(cont) }); out.innerHTML = `Continued as <a href="#/job/${encodeURIComponent(r.jobId)}">${esc(r.jobId)}</a> ${esc(r.note || "")}`; out.className = ""; }
      catch (e2) { out.textContent = e2.message; out.className = "error"; }
    };
    if (j.state !== "done") onJobsChanged = render; else onJobsChanged = null;
  };
  onJobsChanged = render;
  render();
}

function showFull(url, alt) {
  let d = document.getElementById("full");
  if (!d) { d = document.createElement("dialog"); d.id = "full"; document.body.appendChild(d); }
  d.innerHTML = `<form method="dialog"><button type="submit" autofocus>Close</button></form><img src="${esc(url)}" alt="${esc(alt)}">`;
  d.showModal();
}

function jobHTML(j) {
  const r = j.record;
  const parts = [];
  parts.push(`<p>State: <strong class="state s-${esc(j.state)}" id="job-state">${esc(j.state)}</strong>${r ? ` · outcome <strong class="o-${esc(r.outcome)}" id="job-outcome">${esc(r.outcome)}</strong>` : ""} · arrived ${esc(new Date(j.created).toLocaleString())}</p>`);
  if (j.state === "held") parts.push(`<p class="banner">Held: the kill switch is on; the job runs when it is released.</p>`);
  if (j.state === "waiting") parts.push(`<p class="na">Waiting for a redelivery (its last attempt was turned away or failed retryably).</p>`);
  // Images and renditions.
  let imgs = `<p class="na">No images${r ? "" : " yet"}.</p>`;
  if (r && r.outputs && r.outputs.length) {
    imgs = `<div class="thumbs">` + r.outputs.map((o, i) => {
      const rend = o.renditions || [];
      const thumb = rend.length ? rend.reduce((a, b) => (a.bytes < b.bytes ? a : b)) : o;
      return `<figure><a href="${imgURL(o.uri)}"><img class="output" src="${imgURL(thumb.uri)}" data-full="${imgURL(o.uri)}" alt="Output image ${i + 1} (${o.width}×${o.height})"></a>
        <figcaption>${o.width}×${o.height} ${esc(o.mimeType)} · ${o.bytes} B${rend.length ? "<br>Renditions: " + rend.map((x) => `<a href="${imgURL(x.uri)}">${esc(x.mimeType)} ${x.width}×${x.height}</a>`).join(", ") : `<br><span class="na">Renditions: not available</span>`}</figcaption></figure>`;
    }).join("") + `</div>`;
  }
  parts.push(`<div class="grid"><section class="card"><h3>Images</h3>${imgs}</section>`);
  // Safety and finish.
  let safety = `<p class="na">Not available until the job is done.</p>`;
  if (r) {
    const lines = [];
    if (r.finishReason) lines.push(`<p><strong>${esc(r.finishReason)}</strong>: ${esc(FINISH[r.finishReason] || "See the model's documentation.")} ${esc(r.finishMessage || "")}</p>`);
    if (r.promptFeedback && r.promptFeedback.blockReason) lines.push(`<p class="error">The prompt was blocked (${esc(r.promptFeedback.blockReason)}). ${esc(r.promptFeedback.blockReasonMessage || "")}</p>`);
    const ratings = (r.safetyRatings || []).concat((r.promptFeedback && r.promptFeedback.safetyRatings) || []);
    if (ratings.length) lines.push(`<ul>` + ratings.map((s) => `<li>${esc(catName(s.category))}: ${esc(PROB[s.probability] || s.probability || "?")} probability${s.blocked ? " — <strong>blocked</strong>" : ""}</li>`).join("") + `</ul>`);
    if (r.error) lines.push(`<p class="error">Error (${esc(r.error.code || "")}${r.error.retryable ? ", retryable" : ""}): ${esc(r.error.message)}</p>`);
    safety = lines.join("") || `<p>No safety ratings reported.</p>`;
  }
  parts.push(`<section class="card"><h3>Safety and finish</h3>${safety}</section>`);
  // Usage and cost.
  if (r) {
    const u = r.usage || {};
    parts.push(`<section class="card"><h3>Usage and cost</h3><table><tbody>
      <tr><th scope="row">Cost</th><td class="num" id="job-cost">${usd(r.costUsd)}</td></tr>
      <tr><th scope="row">Model calls (attempts)</th><td class="num">${esc(r.attempts)}</td></tr>
      <tr><th scope="row">Prompt tokens</th><td class="num">${esc(u.promptTokens)}</td></tr>
      <tr><th scope="row">Output tokens</th><td class="num">${esc(u.candidatesTokens)}</td></tr>
      <tr><th scope="row">Total tokens</th><td class="num">${esc(u.totalTokens)}</td></tr>
      <tr><th scope="row">Model</th><td>${esc(r.model)} ${esc(r.modelVersion || "")}</td></tr>
      <tr><th scope="row">Trigger</th><td>${esc(r.trigger && r.trigger.kind)} ${esc(r.trigger && r.trigger.source)}</td></tr>
      <tr><th scope="row">Time</th><td class="num">total ${ms(r.timings && r.timings.totalMs)}, model ${ms(r.timings && r.timings.modelMs)}</td></tr>
      </tbody></table></section>`);
  } else {
    parts.push(`<section class="card"><h3>Usage and cost</h3><p class="na">Not available until the job is done.</p></section>`);
  }
  // Attempts: the claim.
  const c = j.claim;
  parts.push(`<section class="card"><h3>Attempts</h3>${c ? `<p>Attempt ${esc(c.attempt)} by ${esc(c.owner)}; lease ${new Date(c.expiresAt) > new Date() ? "live until" : "ran out at"} ${esc(new Date(c.expiresAt).toLocaleTimeString())}; model calls begun ${esc(c.calls)} (earlier attempts: ${esc(c.priorCalls)}).</p>` : `<p class="na">Not claimed.</p>`}${j.batch ? `<p>In a model batch: <code>${esc(JSON.stringify(j.batch))}</code></p>` : ""}</section>`);
  // Trace.
  let trace = `<p class="na">Not available: traces are not exported to the console yet.</p>`;
  if (j.trace && j.trace.length) {
    const t0 = Math.min(...j.trace.map((s) => Date.parse(s.start))), t1 = Math.max(...j.trace.map((s) => Date.parse(s.end)));
    const span = Math.max(t1 - t0, 1);
    trace = `<table class="waterfall"><tbody>` + j.trace.map((s) => {
      const a = Date.parse(s.start) - t0, b = Date.parse(s.end) - t0;
      return `<tr><th scope="row">${esc(s.name)}</th><td style="width:60%"><div class="bar" style="margin-left:${(100 * a) / span}%;width:${Math.max((100 * (b - a)) / span, 0.5)}%" title="${b - a} ms"></div></td><td class="num">${b - a} ms</td></tr>`;
    }).join("") + `</tbody></table>`;
  } else if (j.trace) trace = `<p class="na">No spans for this job.</p>`;
  if (j.traceError) trace += `<p class="error">${esc(j.traceError)}</p>`;
  parts.push(`<section class="card"><h3>Trace</h3>${trace}</section>`);
  // Callbacks and events.
  const cbs = r && r.callbacks;
  parts.push(`<section class="card"><h3>Callbacks</h3>${cbs && cbs.length ? `<pre>${esc(JSON.stringify(cbs, null, 2))}</pre>` : `<p class="na">Not available (no callback deliveries recorded).</p>`}
    <h3>Completion events</h3>${(j.events || []).length ? `<ul>${j.events.map((m) => `<li>${esc(m.attributes["ce-id"])} at ${esc(new Date(m.published).toLocaleTimeString())}</li>`).join("")}</ul>` : `<p class="na">None seen since the console started.</p>`}</section>`);
  // Parent and children.
  const parent = r && r.parent;
  parts.push(`<section class="card"><h3>Edit session</h3>${parent ? `<p>Continues <a href="#/job/${encodeURIComponent(parent)}">${esc(parent)}</a></p>` : `<p class="na">No parent.</p>`}
    ${j.children.length ? `<p>Continued by: ${j.children.map((c) => `<a href="#/job/${encodeURIComponent(c)}">${esc(c)}</a>`).join(", ")}</p>` : `<p class="na">No children.</p>`}
    <form id="continue"><label for="continue-prompt">Continue with a new prompt</label><input id="continue-prompt" name="prompt" size="30" required> <button type="submit">Continue</button></form>
    <p><button type="button" id="rerun" class="secondary" ${j.rerunnable ? "" : "disabled aria-describedby=rerun-why"}>Rerun with a new id</button>
    ${j.rerunnable ? "" : `<span id="rerun-why" class="na">Only jobs submitted from this console can be rerun (records keep no prompt).</span>`}</p>
    <p id="actions-out" role="status"></p></section></div>`);
  parts.push(`<details><summary>Record (JSON)</summary><pre>${esc(JSON.stringify(r, null, 2))}</pre></details>`);
  return parts.join("");
}

// ---- submit ----
async function submitPage() {
  main.innerHTML = `<h2>Submit a job</h2>
  <form id="submit" enctype="multipart/form-data">
    <div class="form-row"><label for="s-prompt">Prompt</label><textarea id="s-prompt" name="prompt" rows="3" cols="60" required></textarea></div>
    <div class="form-row"><label for="s-directive">Stand-in directive (steer the offline model)</label><select id="s-directive"><option value="">none</option></select></div>
    <div class="form-row"><label for="s-via">Trigger</label><select id="s-via" name="via"><option value="http">HTTP (POST /Generate)</option><option value="pubsub">Pub/Sub (requests topic)</option><option value="upload">Upload (input bucket, prompt in metadata)</option></select></div>
    <div class="form-row"><label for="s-image">Image (optional; required for upload)</label><input id="s-image" name="image" type="file" accept="image/*"></div>
    <div class="form-row"><label for="s-ratio">Aspect ratio</label><select id="s-ratio" name="aspectRatio"><option value="">model default</option>${["1:1", "16:9", "9:16", "4:3", "3:4", "3:2", "2:3", "21:9"].map((r) => `<option>${r}</option>`).join("")}</select></div>
    <div class="form-row"><label for="s-rend">Renditions (format:maxSize, comma separated, e.g. webp:512)</label><input id="s-rend" name="renditions" size="30"></div>
    <div class="form-row"><label for="s-cb">Callback URL</label><input id="s-cb" name="callback" type="url" size="40"></div>
    <div class="form-row"><label for="s-label">Label (key=value)</label><input id="s-label" name="label" size="30"></div>
    <div class="form-row"><label for="s-id">Job id (optional)</label><input id="s-id" name="id" size="30"></div>
    <button type="submit" id="s-go">Submit</button>
  </form>
  <p id="submit-out" role="status"></p>`;
  try {
    const ds = await api("api/directives");
    const sel = document.getElementById("s-directive");
    ds.forEach((d) => { const o = document.createElement("option"); o.value = d.text; o.textContent = d.text + " — " + d.says; sel.appendChild(o); });
    sel.onchange = () => { if (sel.value) { const p = document.getElementById("s-prompt"); p.value = (p.value + " " + sel.value).trim(); } };
  } catch (e) { /* no directives */ }
  document.getElementById("submit").onsubmit = async (e) => {
    e.preventDefault();
    const out = document.getElementById("submit-out");
    out.className = ""; out.textContent = "Submitting…";
    try {
      const r = await api("api/submit", { method: "POST", body: new FormData(e.target) });
      out.innerHTML = (r.jobId ? `Submitted <a id="submitted" href="#/job/${encodeURIComponent(r.jobId)}">${esc(r.jobId)}</a>` : "Submitted") + (r.status ? ` (HTTP ${r.status})` : "") + ` ${esc(r.note || "")} — <a href="#/jobs">see the jobs</a>`;
    } catch (err) { out.className = "error"; out.textContent = err.message; }
  };
}

// ---- events ----
async function eventsPage() {
  main.innerHTML = `<div class="grid"><section class="card"><h2>Completion topic</h2><ol id="ev-completion" reversed></ol></section>
    <section class="card"><h2>Dead-letter topic</h2><ol id="ev-dead" reversed></ol><p id="dead-out" role="status"></p></section></div>`;
  const item = (m) => {
    const li = document.createElement("li");
    const subject = m.attributes["ce-subject"] || "";
    const id = subject.startsWith("jobs/") ? subject.slice(5) : (m.data && m.data.id) || "";
    li.innerHTML = `<strong>${esc(m.attributes["ce-type"] || m.topic)}</strong> ${id ? `<a href="#/job/${encodeURIComponent(id)}">${esc(id)}</a>` : ""} ${esc(m.attributes["ce-outcome"] || "")} <small>${esc(new Date(m.published).toLocaleTimeString())}</small>`;
    if (m.topic === "dead-letter") {
      const b = document.createElement("button"); b.type = "button"; b.textContent = "Redeliver"; b.className = "secondary";
      b.onclick = async () => { const out = document.getElementById("dead-out");
        try { await api(`api/deadletters/${encodeURIComponent(m.id)}/redeliver`, { method: "POST" }); out.className = ""; out.textContent = "Republished to the requests topic."; }
        catch (e) { out.className = "error"; out.textContent = e.message; } };
      li.append(" ", b);
    }
    const d = document.createElement("details"); d.innerHTML = `<summary>Message</summary><pre>${esc(JSON.stringify(m, null, 2))}</pre>`; li.appendChild(d);
    return li;
  };
  try {
    const ev = await api("api/events");
    if (!ev.available) { main.innerHTML = `<p class="na">Events are not available.</p>`; return; }
    const c = document.getElementById("ev-completion"), d = document.getElementById("ev-dead");
    ev.completion.forEach((m) => c.prepend(item(m)));
    ev.deadLetter.forEach((m) => d.prepend(item(m)));
    if (!ev.completion.length) c.innerHTML = `<li class="na">Nothing yet since the console started.</li>`;
    if (!ev.deadLetter.length) d.innerHTML = `<li class="na">Nothing dead-lettered since the console started.</li>`;
    onMessage = (m) => { const l = document.getElementById(m.topic === "dead-letter" ? "ev-dead" : "ev-completion"); if (l) { l.querySelectorAll("li.na").forEach((x) => x.remove()); l.prepend(item(m)); } };
  } catch (e) { main.innerHTML = `<p class="error">${esc(e.message)}</p>`; }
}

// ---- spend ----
async function spendPage() {
  let seq = 0;
  const render = async () => {
    const mine = ++seq;
    let t;
    try { t = await api("api/spend"); } catch (e) { main.innerHTML = `<p class="na">Spend: ${esc(e.message)}</p>`; return; }
    if (mine !== seq || !location.hash.startsWith("#/spend")) return; // a later render owns the page
    const budget = (v) => (v > 0 ? usd(v) : "unlimited");
    main.innerHTML = `<h2>Spend</h2><table><thead><tr><th scope="col"></th><th scope="col">Spent</th><th scope="col">Budget</th></tr></thead><tbody>
      <tr><th scope="row">This hour (${esc(t.hour)} UTC)</th><td class="num" id="spend-hour">${usd(t.hourUsd)}</td><td class="num">${budget(t.hourlyBudgetUsd)}</td></tr>
      <tr><th scope="row">Today (UTC)</th><td class="num" id="spend-day">${usd(t.dayUsd)}</td><td class="num">${budget(t.dailyBudgetUsd)}</td></tr></tbody></table>
      <h3>Kill switch</h3><p id="ks-state">${t.paused ? "On: no model call starts; jobs are held." : "Off: model calls run."}</p>
      <button type="button" id="killswitch" class="${t.paused ? "" : "danger"}" aria-pressed="${t.paused}">${t.paused ? "Release (resume model calls)" : "Pause all model calls"}</button>
      <p id="ks-out" role="status"></p>`;
    document.getElementById("paused-banner").hidden = !t.paused;
    document.getElementById("killswitch").onclick = async () => {
      try { await api("api/spend/" + (t.paused ? "resume" : "pause"), { method: "POST" }); render(); }
      catch (e) { const o = document.getElementById("ks-out"); o.className = "error"; o.textContent = e.message; }
    };
  };
  onSpendChanged = render;
  render();
}

refreshBanner();
route();
