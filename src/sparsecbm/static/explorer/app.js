// The sparsecbm explorer page: plain JS over the JSON API (see the README).
"use strict";

const state = { model: null, version: 0, page: 0, limit: 20, current: null, explanation: null, concept: null, preview: null };
const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v); else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  return e;
};
const pct = (x) => `${(100 * x).toFixed(1)}%`;

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

async function api(path, body) {
  const opts = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const res = await fetch(path, opts);
  const data = await res.json();
  if (typeof data.version === "number") state.version = data.version;
  if (!res.ok) { status(`${res.status}: ${data.error}`, true); throw new Error(data.error); }
  return data;
}

// ------------------------------------------------------------------ model overview

async function loadModel() {
  const m = await api("/api/model");
  state.model = m;
  $("model-line").textContent = `${m.kind} on ${m.backbone} · browsing ${m.split.name || "no split"} (${m.split.n}) · ${m.edits} kept edits` +
    (m.guard ? ` · guard ${m.guard.n} texts, caution ${m.guard.caution}` : " · no guard");
  const sel = $("filter-concept");
  if (sel.options.length === 1) for (const c of Object.keys(m.concepts)) sel.append(el("option", { value: c }, c));
  const meth = $("method");
  if (!meth.options.length) for (const x of m.methods) meth.append(el("option", { value: x }, x));
  const o = $("overview");
  o.replaceChildren();
  if (m.scores) {
    const t = el("table", {}, el("tr", {}, el("th", {}, `${m.split.name}`), el("th", {}, "accuracy"), el("th", {}, "macro-F1"), el("th", {}, "sparsity")));
    t.append(el("tr", {}, el("td", {}, "task"), el("td", {}, pct(m.scores.task.accuracy)), el("td", {}, pct(m.scores.task.macro_f1)), el("td", {}, "")));
    for (const c of Object.keys(m.concepts)) {
      const s = m.scores.concepts[c];
      t.append(el("tr", {}, el("td", {}, c), el("td", {}, pct(s.accuracy)), el("td", {}, pct(s.macro_f1)), el("td", {}, pct(m.sparsity[c]))));
    }
    o.append(t);
  }
  if (m.best_dev) o.append(el("p", { class: "small" }, `dev scores when trained (best epoch): task ${pct(m.best_dev.task.accuracy)}` +
    (m.best_dev.concepts ? `, concepts ${pct(m.best_dev.concepts.mean.accuracy)}` : "")));
  if (m.ceiling) o.append(el("p", { class: "small" }, `gold-concept ceiling (logistic regression on true concepts): task accuracy ${pct(m.ceiling.accuracy)}, macro-F1 ${pct(m.ceiling.macro_f1)}`));
  const j = Object.entries(m.jaccard).map(([pair, v]) => `${pair} ${v.toFixed(2)}`).join(", ");
  o.append(el("p", { class: "small" }, `overlap of kept weights (Jaccard): ${j}`));
}

// ------------------------------------------------------------------ examples

async function loadExamples() {
  const q = new URLSearchParams({ only: $("only-mistakes").checked ? "mistakes" : "all", sort: $("sort").value,
    offset: state.page * state.limit, limit: state.limit });
  if ($("filter-concept").value) q.set("concept", $("filter-concept").value);
  const data = await api(`/api/examples?${q}`);
  const body = $("examples").querySelector("tbody");
  body.replaceChildren();
  for (const r of data.rows) {
    const wrong = Object.entries(r.concepts).filter(([, c]) => c.true !== c.predicted).map(([n, c]) => `${n}: ${c.predicted}→${c.true}`);
    const tr = el("tr", { "data-index": r.index, onclick: () => select({ index: r.index, text: r.text, label: r.label }, tr) },
      el("td", {}, r.index), el("td", {}, r.text.length > 140 ? r.text.slice(0, 140) + "…" : r.text),
      el("td", { class: r.label !== r.predicted ? "wrong" : "" }, `${r.label} / ${r.predicted} (${pct(r.confidence)})`),
      el("td", { class: "wrong" }, wrong.join("; ")));
    body.append(tr);
  }
  const pages = Math.max(1, Math.ceil(data.total / state.limit));
  $("page-info").textContent = `page ${state.page + 1} of ${pages} (${data.total} rows)`;
}

function select(item, row) {
  document.querySelectorAll("#examples tr.selected").forEach((r) => r.classList.remove("selected"));
  if (row) row.classList.add("selected");
  state.current = item;
  state.preview = null;
  explainCurrent();
}

// ------------------------------------------------------------------ pathway

async function explainCurrent() {
  if (!state.current) return;
  status("explaining…");
  const body = { method: $("method").value || "grad" };
  if (state.current.index !== undefined) body.index = state.current.index; else body.text = state.current.text;
  const e = await api("/api/explain", body);
  state.explanation = e;
  if (!state.concept || !e.concepts.some((c) => c.name === state.concept)) state.concept = e.concepts[0].name;
  drawPathway();
  status(`explained (model version ${state.version})`);
}

function drawPathway() {
  const e = state.explanation, p = $("pathway");
  p.replaceChildren();
  p.append(el("p", {}, el("strong", { id: "predicted-label" }, `label ${e.label}`), ` (${pct(e.probabilities[e.label])})`,
    state.current.label ? ` · true label ${state.current.label}` : ""));
  const probs = el("div", { class: "small" });
  for (const [lab, pr] of Object.entries(e.probabilities))
    probs.append(el("span", {}, `${lab} `), el("span", { class: "bar prob", style: `width:${Math.round(80 * pr)}px` }), " ");
  p.append(probs);
  const maxC = Math.max(1e-9, ...e.concepts.map((c) => Math.abs(c.contribution)));
  const t = el("table", { id: "concepts" }, el("tr", {}, el("th", {}, "concept"), el("th", {}, "value (click to correct)"),
    el("th", {}, "probability"), el("th", {}, `contribution to ${e.label}`)));
  for (const c of e.concepts) {
    const values = el("span", { class: "values" });
    for (const v of state.model.concepts[c.name]) {
      const b = el("button", { class: v === c.value ? "predicted" : "", "data-concept": c.name, "data-value": v,
        onclick: (ev) => { ev.stopPropagation(); previewCorrection(c.name, v); } }, v);
      values.append(b);
    }
    const w = Math.round(100 * Math.abs(c.contribution) / maxC);
    const row = el("tr", { class: "concept-row" + (c.name === state.concept ? " selected" : ""), "data-concept": c.name,
      onclick: () => { state.concept = c.name; drawPathway(); } },
      el("td", {}, c.name), el("td", {}, values), el("td", {}, pct(c.probability)),
      el("td", {}, el("span", { class: `bar ${c.contribution >= 0 ? "pos" : "neg"}`, style: `width:${w}px` }), ` ${c.contribution.toFixed(2)}`));
    t.append(row);
  }
  p.append(t);
  if (e.truncated) p.append(el("p", { class: "small" }, "The text was longer than the model reads; later words were not read."));
  drawWords();
}

function drawWords() {
  const e = state.explanation, c = e.concepts.find((x) => x.name === state.concept);
  $("word-concept").textContent = `${c.name} (through its subnetwork, ${e.method})`;
  const box = $("words");
  box.replaceChildren();
  const top = Math.max(1e-12, ...c.tokens.map((w) => Math.abs(w.score)));
  for (const w of c.tokens) {
    const a = Math.min(1, Math.abs(w.score) / top);
    const color = w.score >= 0 ? `rgba(47,133,90,${a.toFixed(2)})` : `rgba(197,48,48,${a.toFixed(2)})`;
    box.append(el("span", { class: "w", title: w.score.toExponential(2), style: `background:${color}` }, w.text), " ");
  }
}

// ------------------------------------------------------------------ corrections

function correctionBody(concept, value) {
  const body = { concept, value, version: state.version };
  if (state.current.index !== undefined) body.index = state.current.index; else body.text = state.current.text;
  if (state.current.label) body.label = state.current.label;
  return body;
}

async function previewCorrection(concept, value) {
  status(`previewing ${concept} = ${value}…`);
  const data = await api("/api/preview", correctionBody(concept, value));
  state.preview = { concept, value };
  const r = data.result, box = $("correction");
  box.replaceChildren();
  box.append(el("p", {}, el("strong", {}, `${concept}: ${r.before.value} → ${value}`), ` · ${r.fixed ? "fixed" : "not fixed"} · ${r.bits_flipped} bits flipped · ${r.outcome}`));
  const t = el("table", {}, el("tr", {}, el("th", {}, ""), el("th", {}, concept), el("th", {}, "label")));
  t.append(el("tr", {}, el("td", {}, "before"), el("td", {}, `${r.before.value} (${pct(r.before.probability)})`), el("td", {}, r.before.label)));
  t.append(el("tr", {}, el("td", {}, "after"), el("td", {}, `${r.after.value} (${pct(r.after.probability)})`), el("td", {}, r.after.label)));
  t.append(el("tr", {}, el("td", {}, "oracle"), el("td", {}, `${value} (set)`), el("td", {}, data.oracle.label)));
  box.append(t);
  const layers = Object.entries(r.per_layer).map(([n, d]) => `${n}: -${d.dropped} +${d.grown}`);
  if (layers.length) box.append(el("details", {}, el("summary", {}, `bits per layer (${layers.length} matrices)`), el("pre", { class: "small" }, layers.join("\n"))));
  if (r.guard) box.append(el("p", { class: r.guard.accepted ? "verdict-ok" : "verdict-bad" }, `guard: ${r.guard.accepted ? "accepts" : "refuses"} — ${r.guard.reason}`));
  box.append(el("div", { class: "controls" }, el("button", { id: "keep-btn", onclick: keepCorrection }, "Keep"),
    el("button", { id: "discard-btn", onclick: () => { state.preview = null; box.replaceChildren(el("p", { class: "hint" }, "Discarded; the model is unchanged.")); } }, "Discard")));
  status(`preview done (model unchanged, version ${state.version})`);
}

async function keepCorrection() {
  const { concept, value } = state.preview;
  status("keeping…");
  const data = await api("/api/keep", correctionBody(concept, value));
  const r = data.result;
  $("correction").replaceChildren(el("p", { class: r.persisted ? "verdict-ok" : "verdict-bad" },
    r.persisted ? `Kept: ${concept} is now ${r.after.value} (${r.bits_flipped} bits).` : `Not kept: ${r.outcome}`));
  await refreshAfterEdit();
}

async function undoLast() {
  await api("/api/undo", { version: state.version });
  status("undone");
  await refreshAfterEdit();
}

async function save() {
  const data = await api("/api/save", { version: state.version });
  status(`saved ${data.edits} edits to ${data.path} (revision ${data.revision})`);
}

async function refreshAfterEdit() {
  await Promise.all([loadHistory(), loadModel(), loadExamples()]);
  if (state.current) await explainCurrent();
}

async function loadHistory() {
  const data = await api("/api/history");
  const ol = $("history");
  ol.replaceChildren();
  for (const e of data.edits) {
    const verdict = e.guard ? ` · guard: ${e.guard.accepted ? "accepted" : "refused"}` : "";
    ol.append(el("li", {}, `${e.concept} = ${e.values.join(", ")} · ${e.bits_flipped} bits · ${new Date(1000 * e.time).toLocaleString()}${verdict} · “${e.texts[0].slice(0, 60)}”`));
  }
}

// ------------------------------------------------------------------ subnetworks

async function loadSubnetworks() {
  const data = await api("/api/subnetworks");
  const box = $("subnetworks");
  box.replaceChildren();
  for (const [c, s] of Object.entries(data.concepts)) {
    const d = el("details", {}, el("summary", {}, `${c}: ${pct(s.kept)} of prunable weights kept`));
    const layers = el("table", { class: "small" });
    for (const [n, k] of Object.entries(s.layers))
      layers.append(el("tr", {}, el("td", {}, n), el("td", {}, el("span", { class: "bar prob", style: `width:${Math.round(100 * k)}px` }), ` ${pct(k)}`)));
    d.append(layers);
    const grid = el("div", { class: "heat-grid" });
    for (const [n, h] of Object.entries(s.heatmaps || {})) grid.append(heatmap(h, n));
    d.append(grid);
    box.append(d);
  }
}

function heatmap(h, title) {
  const cell = 4, c = el("canvas", { class: "heat", width: h[0].length * cell, height: h.length * cell, title });
  const ctx = c.getContext("2d");
  h.forEach((row, i) => row.forEach((v, j) => {
    const g = Math.round(255 * (1 - v));
    ctx.fillStyle = `rgb(${g},${g},255)`;
    ctx.fillRect(j * cell, i * cell, cell, cell);
  }));
  return c;
}

// ------------------------------------------------------------------ wiring

function wire() {
  $("only-mistakes").addEventListener("change", () => { state.page = 0; loadExamples(); });
  $("filter-concept").addEventListener("change", () => { state.page = 0; loadExamples(); });
  $("sort").addEventListener("change", () => { state.page = 0; loadExamples(); });
  $("prev-page").addEventListener("click", () => { if (state.page > 0) { state.page--; loadExamples(); } });
  $("next-page").addEventListener("click", () => { state.page++; loadExamples(); });
  $("method").addEventListener("change", explainCurrent);
  $("explain-btn").addEventListener("click", () => {
    const text = $("free-text").value;
    if (!text.trim()) { status("type a text first", true); return; }
    select({ text }, null);
  });
  $("undo-btn").addEventListener("click", undoLast);
  $("save-btn").addEventListener("click", save);
}

wire();
loadModel().then(() => Promise.all([loadExamples(), loadHistory(), loadSubnetworks()])).then(() => status("ready"))
  .catch((e) => status(String(e), true));
