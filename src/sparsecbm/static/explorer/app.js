// The sparsecbm explorer page: plain JS over the JSON API (docs/explorer.md).
"use strict";

const state = { model: null, version: 0, page: 0, limit: 20, current: null, explanation: null, concept: null, preview: null,
  annotationPage: 0 };
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
const HINT = "Click a concept value in the pathway to correct it.";

function status(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

class ApiError extends Error {
  constructor(code, message) { super(message); this.code = code; }
}

// The page adopts the server's model version only from a successful answer: a
// refused request (409: another edit came first) must not make a stale preview keepable.
async function api(path, body) {
  const opts = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const res = await fetch(path, opts);
  let data;
  try { data = await res.json(); } catch (err) { data = { error: `${res.status} ${res.statusText}` }; }
  if (!res.ok) { status(`${res.status}: ${data.error}`, true); throw new ApiError(res.status, data.error); }
  if (typeof data.version === "number") state.version = data.version;
  return data;
}

// Enter or Space on a focused row does what a click does.
function activate(node, action) {
  node.setAttribute("tabindex", "0");
  node.addEventListener("click", action);
  node.addEventListener("keydown", (ev) => {
    if (ev.target === node && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); action(); }
  });
  return node;
}

// ------------------------------------------------------------------ model overview

async function loadModel() {
  const m = await api("/api/model");
  state.model = m;
  $("model-line").textContent = `${m.kind} on ${m.backbone} · labels ${m.labels.join(", ")} · browsing ${m.split.name || "no split"} ` +
    `(${m.split.n}) · ${m.edits} kept edits` + (m.guard ? ` · guard ${m.guard.n} texts, caution ${m.guard.caution}` : " · no guard");
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
  o.append(el("p", { class: "small", id: "revision" }, `model folder: ${m.path || "none"} (revision ${m.revision})`));
}

// ------------------------------------------------------------------ examples

async function loadExamples() {
  const q = new URLSearchParams({ only: $("only-mistakes").checked ? "mistakes" : "all", sort: $("sort").value,
    offset: state.page * state.limit, limit: state.limit });
  if ($("filter-concept").value) q.set("concept", $("filter-concept").value);
  const data = await api(`/api/examples?${q}`);
  const pages = Math.max(1, Math.ceil(data.total / state.limit));
  if (state.page >= pages) { state.page = pages - 1; return loadExamples(); }  // the list shrank (e.g. after an edit)
  const body = $("examples").querySelector("tbody");
  body.replaceChildren();
  for (const r of data.rows) {
    const wrong = Object.entries(r.concepts).filter(([, c]) => c.true !== c.predicted).map(([n, c]) => `${n}: ${c.predicted}→${c.true}`);
    const tr = el("tr", { "data-index": r.index, "aria-label": `example ${r.index}: open its pathway` },
      el("td", {}, r.index), el("td", {}, r.text.length > 140 ? r.text.slice(0, 140) + "…" : r.text),
      el("td", { class: r.label !== r.predicted ? "wrong" : "" }, `${r.label} / ${r.predicted} (${pct(r.confidence)})`),
      el("td", { class: "wrong" }, wrong.join("; ")));
    activate(tr, () => select({ index: r.index, text: r.text, label: r.label, concepts: r.concepts }, tr));
    body.append(tr);
  }
  showPage(state.page, pages, data.total, "page-info", "prev-page", "next-page");
}

// "page 2 of 5 (93 rows)", with the arrows off at either end.
function showPage(page, pages, total, info, prev, next) {
  $(info).textContent = `page ${page + 1} of ${pages} (${total} rows)`;
  $(prev).disabled = page === 0;
  $(next).disabled = page + 1 >= pages;
}

function select(item, row) {
  document.querySelectorAll("#examples tr.selected").forEach((r) => r.classList.remove("selected"));
  if (row) row.classList.add("selected");
  state.current = item;
  clearCorrection();
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
  const e = state.explanation, p = $("pathway"), truth = state.current.concepts;
  p.replaceChildren();
  p.append(el("p", {}, el("strong", { id: "predicted-label" }, `label ${e.label}`), ` (${pct(e.probabilities[e.label])})`,
    state.current.label ? ` · true label ${state.current.label}` : ""));
  const probs = el("table", { id: "label-probs", class: "small" }, el("caption", {}, "probability of each label"));
  for (const [lab, pr] of Object.entries(e.probabilities))
    probs.append(el("tr", {}, el("td", {}, lab), el("td", {}, el("span", { class: "bar prob", style: `width:${Math.round(120 * pr)}px` }), ` ${pct(pr)}`)));
  p.append(probs);
  const maxC = Math.max(1e-9, ...e.concepts.map((c) => Math.abs(c.contribution)));
  const head = el("tr", {}, el("th", {}, "concept"), el("th", {}, "predicted value (click another to correct)"));
  if (truth) head.append(el("th", {}, "true value"));
  head.append(el("th", {}, "probability"), el("th", {}, `push on label ${e.label}`));
  const t = el("table", { id: "concepts" }, head);
  for (const c of e.concepts) {
    const values = el("span", { class: "values" });
    const known = truth ? truth[c.name].true : null;
    for (const v of state.model.concepts[c.name]) {
      const cls = [v === c.value ? "predicted" : "", v === known ? "true" : ""].join(" ").trim();
      values.append(el("button", { class: cls, "data-concept": c.name, "data-value": v, title: v === known ? "the true value" : "",
        onclick: (ev) => { ev.stopPropagation(); previewCorrection(c.name, v); } }, v));
    }
    const w = Math.round(100 * Math.abs(c.contribution) / maxC);
    const row = el("tr", { class: "concept-row" + (c.name === state.concept ? " selected" : ""), "data-concept": c.name,
      "aria-label": `${c.name}: show the words it read` }, el("td", {}, c.name), el("td", {}, values));
    if (truth) row.append(el("td", { class: known !== c.value ? "wrong true-value" : "true-value" }, known));
    row.append(el("td", {}, pct(c.probability)),
      el("td", {}, el("span", { class: `bar ${c.contribution >= 0 ? "pos" : "neg"}`, style: `width:${w}px` }), ` ${c.contribution >= 0 ? "+" : ""}${c.contribution.toFixed(2)}`));
    activate(row, () => { state.concept = c.name; drawPathway(); $("concepts").querySelector(`tr[data-concept='${c.name}']`).focus(); });
    t.append(row);
  }
  p.append(t);
  const signed = (x) => `${x >= 0 ? "+" : ""}${x.toFixed(2)}`;
  p.append(el("p", { class: "small" }, `Push: how much each concept moved label ${e.label}'s score (green toward it, red against; ` +
    (e.side === null ? "" : `plus ${signed(e.side)} from the side channel, not explained by the concepts; `) +
    `plus a constant ${signed(e.bias)}).` + (truth ? " An outlined value is the true one." : "")));
  const decides = el("p", { class: "small", id: "decides" }, `The concept values carry ${pct(e.concept_share)} of the label's score.`);
  if (e.values_label !== e.label) decides.append(el("strong", {}, ` The concept values alone would give label ${e.values_label}.`));
  p.append(decides);
  if (e.truncated) p.append(el("p", { class: "small" }, "The text was longer than the model reads; later words were not read."));
  drawWords();
}

function drawWords() {
  const e = state.explanation, c = e.concepts.find((x) => x.name === state.concept);
  $("word-concept").textContent = `${c.name} (through its subnetwork)`;
  const box = $("words");
  box.replaceChildren();
  const top = Math.max(1e-12, ...c.tokens.map((w) => Math.abs(w.score)));
  for (const w of c.tokens) {
    const a = Math.min(1, Math.abs(w.score) / top).toFixed(2);
    const color = !e.signed ? `rgba(51,102,204,${a})` : w.score >= 0 ? `rgba(47,133,90,${a})` : `rgba(197,48,48,${a})`;
    box.append(el("span", { class: "w", title: w.score.toExponential(2), style: `background:${color}` }, w.text), " ");
  }
  $("word-legend").textContent = e.signed
    ? `Word scores (${e.method}): green words support the value ${c.value}, red ones argue against it; stronger colour = more.`
    : `Word scores (${e.method}, a size with no sign): darker blue = mattered more to the value ${c.value}. ` +
      "Pick grad_x_input or integrated_gradients to see which words argue for or against.";
}

// ------------------------------------------------------------------ corrections

function clearCorrection(text = HINT) {
  state.preview = null;
  $("correction").replaceChildren(el("p", { class: "hint" }, text));
}

function correctionBody(concept, value, version) {
  const body = { concept, value, version };
  if (state.current.index !== undefined) body.index = state.current.index; else body.text = state.current.text;
  if (state.current.label) body.label = state.current.label;
  return body;
}

async function previewCorrection(concept, value) {
  status(`previewing ${concept} = ${value}…`);
  const data = await api("/api/preview", correctionBody(concept, value, state.version));
  state.preview = { concept, value, version: data.version };  // Keep is valid for this model version only
  const r = data.result, box = $("correction");
  box.replaceChildren();
  box.append(el("p", {}, el("strong", {}, `${concept}: ${r.before.value} → ${value}`), ` · ${r.fixed ? "the edit fixes it" : "the edit does not fix it"}` +
    ` · it changes ${r.bits_flipped} weights of ${concept}'s subnetwork (as many dropped as grown)`));
  const t = el("table", {}, el("tr", {}, el("th", {}, ""), el("th", {}, concept), el("th", {}, "label")));
  t.append(el("tr", {}, el("td", {}, "now"), el("td", {}, `${r.before.value} (${pct(r.before.probability)})`), el("td", {}, r.before.label)));
  t.append(el("tr", {}, el("td", {}, "after the edit"), el("td", {}, `${r.after.value} (${pct(r.after.probability)})`), el("td", {}, r.after.label)));
  t.append(el("tr", {}, el("td", {}, "if the concept were simply set"), el("td", {}, `${value}`), el("td", {}, data.oracle.label)));
  box.append(t);
  const layers = Object.entries(r.per_layer).map(([n, d]) => `${n}: -${d.dropped} +${d.grown}`);
  if (layers.length) box.append(el("details", {}, el("summary", {}, `weights changed per matrix (${layers.length} matrices)`), el("pre", { class: "small" }, layers.join("\n"))));
  if (r.guard) box.append(el("p", { class: r.guard.accepted ? "verdict-ok" : "verdict-bad" }, `guard: ${r.guard.accepted ? "accepts" : "refuses"} — ${r.guard.reason}`));
  box.append(el("p", { class: "hint" }, "Preview only: the model is unchanged until you press Keep."));
  box.append(el("div", { class: "controls" }, el("button", { id: "keep-btn", onclick: keepCorrection }, "Keep"),
    el("button", { id: "discard-btn", onclick: () => clearCorrection("Discarded; the model is unchanged.") }, "Discard")));
  status(`preview done (model unchanged, version ${state.version})`);
}

async function keepCorrection() {
  const { concept, value, version } = state.preview;
  status("keeping…");
  let data;
  try {
    data = await api("/api/keep", correctionBody(concept, value, version));
  } catch (err) {
    if (err.code !== 409) throw err;
    state.preview = null;
    $("correction").replaceChildren(
      el("p", { class: "verdict-bad", id: "stale-preview" }, "Not kept: the model changed since this preview (another edit or undo came first)."),
      el("button", { id: "repreview-btn", onclick: () => previewCorrection(concept, value) }, "Preview again on the current model"));
    await refreshAfterEdit();
    return;
  }
  const r = data.result;
  clearCorrection();
  $("correction").replaceChildren(el("p", { class: r.persisted ? "verdict-ok" : "verdict-bad" },
    r.persisted ? `Kept: ${concept} is now ${r.after.value} (${r.bits_flipped} weights changed).` : `Not kept: ${r.outcome}`));
  await refreshAfterEdit();
}

// Another window edited the model: show its current state, and let the user decide again.
async function staleVersion(err) {
  if (!(err.code === 409 && /stale version/.test(err.message))) throw err;
  await refreshAfterEdit();
  status("the model changed in another window or script; the page now shows it: check History and retry", true);
}

async function undoLast() {
  let data;
  try { data = await api("/api/undo", { version: state.version }); } catch (err) { return staleVersion(err); }
  clearCorrection(`Undone: ${data.undone.concept} = ${data.undone.values.join(", ")}.`);
  await refreshAfterEdit();
  status("undone");
}

async function save() {
  let data;
  try {
    data = await api("/api/save", { version: state.version });
  } catch (err) {
    if (err.code === 409 && /saved by someone else/.test(err.message)) { showConflict(); throw err; }
    return staleVersion(err);
  }
  $("conflict").replaceChildren();
  status(`saved ${data.edits} edits to ${data.path} (revision ${data.revision})`);
  await loadModel();
}

function showConflict() {
  $("conflict").replaceChildren(
    el("p", { class: "verdict-bad" }, "Not saved: another program saved the model folder since this page loaded it. " +
      "Reload it to work on its latest revision (the edits kept here and not saved are dropped), then redo them."),
    el("button", { id: "reload-btn", onclick: reloadModel }, "Reload the model from its folder"));
}

async function reloadModel() {
  const data = await api("/api/reload", { version: state.version });
  $("conflict").replaceChildren(el("p", { class: "verdict-ok" }, `Reloaded revision ${data.revision} of ${data.path} (${data.edits} logged edits).`));
  clearCorrection();
  await refreshAfterEdit();
  status("reloaded");
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
    ol.append(el("li", {}, `${e.concept} = ${e.values.join(", ")} · ${e.bits_flipped} weights · ${new Date(1000 * e.time).toLocaleString()}${verdict} · “${e.texts[0].slice(0, 60)}”`));
  }
}

// ------------------------------------------------------------------ subnetworks

async function loadSubnetworks() {
  const data = await api("/api/subnetworks");
  const box = $("subnetworks");
  box.replaceChildren(el("p", { class: "small" }, "Per concept, each weight matrix of the backbone downsampled to a grid; a cell's colour is the share of its weights the concept keeps: ",
    el("span", { class: "scale-end" }, "0%"), el("span", { class: "scale", id: "heat-scale" }), el("span", { class: "scale-end" }, "100%")));
  for (const [c, s] of Object.entries(data.concepts)) {
    const d = el("details", {}, el("summary", {}, `${c}: ${pct(s.kept)} of prunable weights kept`));
    const layers = el("table", { class: "small" });
    for (const [n, k] of Object.entries(s.layers))
      layers.append(el("tr", {}, el("td", {}, n), el("td", {}, el("span", { class: "bar prob", style: `width:${Math.round(100 * k)}px` }), ` ${pct(k)}`)));
    d.append(layers);
    const grid = el("div", { class: "heat-grid" });
    for (const [n, h] of Object.entries(s.heatmaps || {})) grid.append(heatmap(h, n, s.layers[n]));
    d.append(grid);
    box.append(d);
  }
}

// 'encoder.layer.0.attention.self.query.weight' -> 'layer 0 query'
function shortName(name) {
  const m = name.match(/\.(\d+)\.(.+?)(?:\.weight)?$/);
  if (!m) return name;
  const parts = m[2].split(".").filter((x) => x !== "dense" && x !== "self");
  return `layer ${m[1]} ${parts.join(".")}`;
}

function heatmap(h, name, kept) {
  const cell = 4, c = el("canvas", { class: "heat", width: h[0].length * cell, height: h.length * cell, title: name, "aria-label": name });
  const ctx = c.getContext("2d");
  h.forEach((row, i) => row.forEach((v, j) => {
    const g = Math.round(255 * (1 - v));
    ctx.fillStyle = `rgb(${g},${g},255)`;
    ctx.fillRect(j * cell, i * cell, cell, cell);
  }));
  return el("figure", { class: "heat" }, c, el("figcaption", {}, shortName(name), el("br"), kept === undefined ? "" : `${pct(kept)} kept`));
}

// ------------------------------------------------------------------ an annotated file (sparsecbm annotate)

async function loadAnnotations() {
  if (!state.model.annotations) return;
  $("annotations-panel").hidden = false;
  const q = new URLSearchParams({ offset: state.annotationPage * state.limit, limit: state.limit });
  if ($("annotation-concept").value) q.set("concept", $("annotation-concept").value);
  const data = await api(`/api/annotations?${q}`);
  $("annotations-path").textContent = data.path;
  const sel = $("annotation-concept");
  if (sel.options.length === 1) for (const c of Object.keys(data.concepts)) sel.append(el("option", { value: c }, c));
  const body = $("annotations").querySelector("tbody");
  body.replaceChildren();
  for (const r of data.rows) {
    const cells = el("td", { class: "annotation-cells" });
    for (const [name, cell] of Object.entries(r.concepts)) {
      const choice = el("select", { "aria-label": `row ${r.row}: ${name}`, "data-concept": name });
      for (const v of data.concepts[name]) choice.append(el("option", { value: v }, v));
      choice.value = cell.value;
      choice.addEventListener("change", () => fixAnnotation(r, name, choice));
      cells.append(el("label", { class: cell.confidence < 0.5 ? "low" : "" }, `${name} `, choice, ` ${pct(cell.confidence)}`), " ");
    }
    body.append(el("tr", { "data-index": r.index }, el("td", {}, r.row),
      el("td", {}, r.text.length > 200 ? r.text.slice(0, 200) + "…" : r.text), cells));
  }
  showPage(state.annotationPage, Math.max(1, Math.ceil(data.total / state.limit)), data.total,
    "annotations-info", "annotations-prev", "annotations-next");
}

async function fixAnnotation(row, concept, choice) {
  try {
    const r = await api("/api/annotations/fix", { index: row.index, concept, value: choice.value });
    status(`row ${r.fixed.row}: ${concept} = ${r.fixed.value}, written to ${r.fixed.path}`);
  } catch (err) {
    if (err.code === 409) loadAnnotations();  // the file changed on disk: show what it holds now
    else choice.value = row.concepts[concept].value;
  }
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
  $("annotation-concept").addEventListener("change", () => { state.annotationPage = 0; loadAnnotations(); });
  $("annotations-prev").addEventListener("click", () => { if (state.annotationPage > 0) { state.annotationPage--; loadAnnotations(); } });
  $("annotations-next").addEventListener("click", () => { state.annotationPage++; loadAnnotations(); });
  $("undo-btn").addEventListener("click", undoLast);
  $("save-btn").addEventListener("click", save);
}

wire();
loadModel().then(() => Promise.all([loadExamples(), loadHistory(), loadSubnetworks(), loadAnnotations()])).then(() => status("ready"))
  .catch((e) => status(String(e), true));
