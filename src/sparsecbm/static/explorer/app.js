// The sparsecbm explorer page: plain JS over the JSON API (docs/explorer.md).
"use strict";

const state = { model: null, version: 0, page: 0, limit: 20, current: null, explanation: null, concept: null, preview: null,
  annotationPage: 0, busy: false, edits: 0, rows: [], polling: null };
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

// Every handler runs through here: an API error is already in the status line, anything
// else goes there too; nothing is left as an uncaught error in the console.
const guarded = (fn) => (...args) => Promise.resolve().then(() => fn(...args)).catch((err) => {
  if (!(err instanceof ApiError)) status(String(err), true);
});

// One change of the model at a time: while a keep, undo, save or reload runs, their buttons
// are off (a double-click keeps once and says nothing about a stale preview).
async function exclusive(fn) {
  if (state.busy) return;
  state.busy = true;
  setButtons();
  try { await fn(); } finally { state.busy = false; setButtons(); }
}

function setButtons() {
  $("undo-btn").disabled = state.busy || state.edits === 0;
  $("undo-btn").title = state.edits === 0 ? "no kept edits to undo" : "";
  $("save-btn").disabled = state.busy || !(state.model && state.model.unsaved);
  $("save-btn").title = state.model && !state.model.unsaved ? "the model folder already holds every kept edit" : "";
  for (const b of document.querySelectorAll("#keep-btn, #discard-btn, #concepts .values button")) b.disabled = state.busy;
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
  state.edits = m.edits;
  $("model-line").textContent = `${m.kind} on ${m.backbone} · labels ${m.labels.join(", ")} · browsing ${m.split.name || "no split"} ` +
    `(${m.split.n}) · ${m.edits} kept edits${m.unsaved ? " (unsaved changes)" : ""}` +
    (m.guard ? ` · guard ${m.guard.n} texts, caution ${m.guard.caution}` : " · no guard");
  $("model-line").title = $("model-line").textContent;
  $("free-text").maxLength = m.max_text;
  countText();
  setButtons();
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
  if (m.pending) o.prepend(el("p", { class: "small", id: "pending" }, "Updating the split's scores after the edit…"));
  return m;
}

// After an edit the split's predictions of the edited concept are recomputed on the server in
// the background: poll until they are ready, then show them (rows stay where they are).
function watchPending() {
  if (state.polling || !state.model || !state.model.pending) return;
  state.polling = setTimeout(guarded(async () => {
    state.polling = null;
    const m = await loadModel();
    if (m.pending) { watchPending(); return; }
    await refreshRows();
    if (!state.busy) status(`the split's scores are up to date (model version ${state.version})`);
  }), 700);
}

// ------------------------------------------------------------------ examples

async function loadExamples() {
  const q = new URLSearchParams({ only: $("only-mistakes").checked ? "mistakes" : "all", sort: $("sort").value,
    offset: state.page * state.limit, limit: state.limit });
  if ($("filter-concept").value) q.set("concept", $("filter-concept").value);
  const data = await api(`/api/examples?${q}`);
  const pages = Math.max(1, Math.ceil(data.total / state.limit));
  if (state.page >= pages && state.page > 0) { state.page = pages - 1; return loadExamples(); }  // the list shrank
  drawRows(data.rows);
  $("list-note").hidden = true;
  showPage(state.page, pages, data.total, "page-info", "prev-page", "next-page");
}

// The rows on screen again, in the same order, with the model's new predictions: an edit
// never reorders or filters the list under the user (Refresh list does, when asked).
async function refreshRows() {
  if (!state.rows.length) return;
  const data = await api(`/api/examples?rows=${state.rows.join(",")}`);
  drawRows(data.rows);
  $("list-note").hidden = false;
}

function drawRows(rows) {
  state.rows = rows.map((r) => r.index);
  const body = $("examples").querySelector("tbody");
  body.replaceChildren();
  for (const r of rows) {
    const wrong = Object.entries(r.concepts).filter(([, c]) => c.true !== c.predicted).map(([n, c]) => `${n}: ${c.predicted}→${c.true}`);
    const tr = el("tr", { "data-index": r.index, "aria-label": `example ${r.index}: open its pathway` },
      el("td", {}, r.index), el("td", {}, r.text.length > 140 ? r.text.slice(0, 140) + "…" : r.text),
      el("td", { class: r.label !== r.predicted ? "wrong" : "" }, `${r.label} / ${r.predicted} (${pct(r.confidence)})`),
      el("td", { class: "wrong" }, wrong.join("; ")));
    if (state.current && state.current.index === r.index) {
      tr.classList.add("selected");
      state.current.concepts = r.concepts;
    }
    activate(tr, guarded(() => select({ index: r.index, text: r.text, label: r.label, concepts: r.concepts }, tr)));
    body.append(tr);
  }
}

// "page 2 of 5 (93 rows)", with the arrows off at either end.
function showPage(page, pages, total, info, prev, next) {
  $(info).textContent = `page ${page + 1} of ${pages} (${total} rows)`;
  $(prev).disabled = page === 0;
  $(next).disabled = page + 1 >= pages;
}

// Open an example (or a typed text): its pathway, with the focus on its first concept so that
// the keyboard goes on from there.
async function select(item, row) {
  document.querySelectorAll("#examples tr.selected").forEach((r) => r.classList.remove("selected"));
  if (row) row.classList.add("selected");
  state.current = item;
  clearCorrection();
  await explainCurrent();
  const first = document.querySelector("#concepts tr.concept-row");
  if (first) first.focus();
}

// ------------------------------------------------------------------ pathway

async function explainCurrent() {
  if (!state.current) return;
  status("explaining…");
  const body = { method: $("method").value || "grad" };
  if (state.current.index !== undefined) body.index = state.current.index; else body.text = state.current.text;
  let e;
  try { e = await api("/api/explain", body); } catch (err) { showExplainError(err.message); throw err; }
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
  head.append(el("th", {}, "probability"), el("th", {}, `push on label ${e.label}`),
    el("th", {}, "had the text said another value: the label"));
  const t = el("table", { id: "concepts" }, head);
  for (const c of e.concepts) {
    const values = el("span", { class: "values" });
    const known = truth ? truth[c.name].true : null;
    for (const v of state.model.concepts[c.name]) {
      const cls = [v === c.value ? "predicted" : "", v === known ? "true" : ""].join(" ").trim();
      values.append(el("button", { class: cls, "data-concept": c.name, "data-value": v, title: v === known ? "the true value" : "",
        onclick: (ev) => { ev.stopPropagation(); guarded(previewCorrection)(c.name, v); } }, v));
    }
    const w = Math.round(100 * Math.abs(c.contribution) / maxC);
    const row = el("tr", { class: "concept-row" + (c.name === state.concept ? " selected" : ""), "data-concept": c.name,
      "aria-label": `${c.name}: show the words it read` }, el("td", {}, c.name), el("td", {}, values));
    if (truth) row.append(el("td", { class: known !== c.value ? "wrong true-value" : "true-value" }, known));
    row.append(el("td", {}, pct(c.probability)),
      el("td", {}, el("span", { class: `bar ${c.contribution >= 0 ? "pos" : "neg"}`, style: `width:${w}px` }), ` ${c.contribution >= 0 ? "+" : ""}${c.contribution.toFixed(2)}`),
      el("td", { class: "small what-if" }, Object.entries(e.what_if[c.name] || {})
        .map(([v, w]) => `${v} \u2192 ${w.label} (${pct(w.probability)})`).join(" \u00b7 ")));
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
  setButtons();
}

// A text the model cannot read: say so where its pathway would be, not only in the header.
function showExplainError(message) {
  state.explanation = null;
  $("pathway").replaceChildren(el("p", { class: "verdict-bad", id: "explain-error" }, `No pathway: ${message}`));
  $("words").replaceChildren();
  $("word-legend").textContent = "";
  clearCorrection();
}

function countText() {
  const n = $("free-text").value.length, max = state.model ? state.model.max_text : 0;
  $("text-count").textContent = max ? `${n} / ${max} characters` : "";
  $("text-count").className = max && n >= max ? "small wrong" : "small";
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
  $("correction").replaceChildren(el("p", { class: "hint", tabindex: "-1" }, text));
}

function correctionBody(concept, value, version) {
  const body = { concept, value, version };
  if (state.current.index !== undefined) body.index = state.current.index; else body.text = state.current.text;
  if (state.current.label) body.label = state.current.label;
  return body;
}

// What the edit does to the concept, in words that do not claim a fix the data cannot confirm.
function verdict(concept, value, reached) {
  const known = state.current.concepts ? state.current.concepts[concept].true : null;
  if (known === value) return reached ? "the edit fixes it: the model now reads the true value" : "the edit does not fix it";
  const read = reached ? `the edit makes the model read ${value}` : `the edit does not reach ${value}`;
  return known === null ? read : `${read} (the data set's value is ${known})`;
}

async function previewCorrection(concept, value) {
  if (state.busy) return;
  status(`previewing ${concept} = ${value}…`);
  const data = await api("/api/preview", correctionBody(concept, value, state.version));
  state.preview = { concept, value, version: data.version };  // Keep is valid for this model version only
  const r = data.result, box = $("correction");
  box.replaceChildren();
  box.append(el("p", {}, el("strong", {}, `${concept}: ${r.before.value} → ${value}`), ` · ${verdict(concept, value, r.fixed)}` +
    ` · it changes ${r.bits_flipped} weights of ${concept}'s subnetwork (as many dropped as grown)`));
  const t = el("table", {}, el("tr", {}, el("th", {}, ""), el("th", {}, concept), el("th", {}, "label")));
  t.append(el("tr", {}, el("td", {}, "now"), el("td", {}, `${r.before.value} (${pct(r.before.probability)})`), el("td", {}, r.before.label)));
  t.append(el("tr", {}, el("td", {}, "after the edit"), el("td", {}, `${r.after.value} (${pct(r.after.probability)})`), el("td", {}, r.after.label)));
  t.append(el("tr", {}, el("td", {}, "if the concept were simply set"), el("td", {}, `${value}`), el("td", {}, data.oracle.label)));
  box.append(t);
  const layers = Object.entries(r.per_layer).map(([n, d]) => `${n}: -${d.dropped} +${d.grown}`);
  if (layers.length) box.append(el("details", {}, el("summary", {}, `weights changed per matrix (${layers.length} matrices)`), el("pre", { class: "small" }, layers.join("\n"))));
  if (r.guard) box.append(el("p", { class: r.guard.accepted ? "verdict-ok" : "verdict-bad" }, `guard: ${r.guard.accepted ? "accepts" : "refuses"} — ${r.guard.reason}`));
  if (r.guard && r.guard.texts.length) {
    const broken = r.guard.broken.length, fixed = r.guard.fixed.length;
    box.append(textList("guard-texts", `guard texts whose ${concept} the edit changes: ${broken} turned wrong, ${fixed} turned right`,
      r.guard.texts.map((t) => `${t.effect === "broken" ? "turned wrong" : "turned right"}: ${t.before} → ${t.after} (true ${t.truth})`), r.guard.texts, broken > 0));
  }
  if (r.nearby) {
    const near = r.nearby;
    box.append(textList("nearby", `of the ${near.n} texts of ${state.model.split.name || "the browsed split"} most like this one, the edit changes ${concept} on ${near.changed || "none"}`,
      near.texts.map((t) => `${t.before} → ${t.after}`), near.texts, near.changed > 0));
  }
  box.append(el("p", { class: "hint" }, "Preview only: the model is unchanged until you press Keep."));
  box.append(el("div", { class: "controls" }, el("button", { id: "keep-btn", onclick: guarded(() => exclusive(keepCorrection)) }, "Keep"),
    el("button", { id: "discard-btn", onclick: () => clearCorrection("Discarded; the model is unchanged.") }, "Discard")));
  setButtons();
  $("keep-btn").focus();  // the next step is one key away, and in view
  status(`preview done (model unchanged, version ${state.version})`);
}

// A heading and the texts an edit changes, each with what changed (open when there is something to see).
function textList(id, heading, changes, texts, open) {
  const list = el("ul", { class: "small" }, ...texts.map((t, i) => el("li", {}, `${changes[i]}: “${t.text}”`)));
  const box = el("details", { id }, el("summary", {}, heading), texts.length ? list : el("p", { class: "hint" }, "none"));
  if (open) box.setAttribute("open", "");
  return box;
}

async function keepCorrection() {
  if (!state.preview) return;
  const { concept, value, version } = state.preview;
  state.preview = null;  // a preview is kept once
  status("keeping…");
  let data;
  try {
    data = await api("/api/keep", correctionBody(concept, value, version));
  } catch (err) {
    if (err.code !== 409) throw err;
    await refreshAfterEdit();  // first the model as it is now, then the choice (no click is lost to a busy page)
    $("correction").replaceChildren(
      el("p", { class: "verdict-bad", id: "stale-preview" }, "Not kept: the model changed since this preview (another edit or undo came first)."),
      el("button", { id: "repreview-btn", onclick: guarded(() => previewCorrection(concept, value)) }, "Preview again on the current model"));
    $("repreview-btn").focus();
    return;
  }
  const r = data.result;
  await refreshAfterEdit();
  $("correction").replaceChildren(el("p", { class: r.persisted ? "verdict-ok" : "verdict-bad", id: "kept", tabindex: "-1" },
    r.persisted ? `Kept: ${concept} is now ${r.after.value} (${r.bits_flipped} weights changed).` : `Not kept: ${r.outcome}`));
  const row = document.querySelector(`#concepts tr.concept-row[data-concept='${concept}']`);
  (row || $("kept")).focus();
  status(r.persisted ? `kept (model version ${state.version})` : "not kept: the model is unchanged");
}

// Another window edited the model: show its current state, and let the user decide again.
async function staleVersion(err) {
  if (!(err.code === 409 && /stale version/.test(err.message))) throw err;
  await refreshAfterEdit();
  status("the model changed in another window or script; the page now shows it: check History and retry", true);
}

async function undoLast() {
  if (state.edits === 0) return;
  status("undoing…");
  let data;
  try { data = await api("/api/undo", { version: state.version }); } catch (err) { return staleVersion(err); }
  await refreshAfterEdit();
  clearCorrection(`Undone: ${data.undone.concept} = ${data.undone.values.join(", ")}.`);
  status("undone");
  // The button was off while it worked, which drops the focus: put it back, or on the message once nothing is left.
  (state.edits ? $("undo-btn") : $("correction").querySelector("p")).focus();
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
  status(data.saved ? `saved ${data.edits} edits to ${data.path} (revision ${data.revision})` : data.message);
  await Promise.all([loadModel(), loadHistory()]);
}

function showConflict() {
  $("conflict").replaceChildren(
    el("p", { class: "verdict-bad" }, "Not saved: another program saved the model folder since this page loaded it. " +
      "Reload it to work on its latest revision (the edits kept here and not saved are dropped), then redo them."),
    el("button", { id: "reload-btn", onclick: guarded(() => exclusive(reloadModel)) }, "Reload the model from its folder"));
}

async function reloadModel() {
  status("reloading…");
  const data = await api("/api/reload", { version: state.version });
  $("conflict").replaceChildren(el("p", { class: "verdict-ok" }, `Reloaded revision ${data.revision} of ${data.path} (${data.edits} logged edits).`));
  clearCorrection();
  await refreshAfterEdit();
  status("reloaded");
}

// What an edit can change: the pathway on screen, the history, the model line and the rows on
// screen (in place). The split's scores follow in the background (watchPending).
async function refreshAfterEdit() {
  await Promise.all([loadHistory(), loadModel(), refreshRows(), state.current ? explainCurrent() : null]);
  watchPending();
}

async function loadHistory() {
  const data = await api("/api/history");
  state.edits = data.edits.length;
  const ol = $("history");
  ol.replaceChildren();
  for (const e of data.edits) {
    const guardNote = e.guard ? ` · guard: ${e.guard.accepted ? "accepted" : "refused"}` : "";
    ol.append(el("li", { class: e.saved ? "saved" : "unsaved" }, `${e.concept} = ${e.values.join(", ")} · ${e.bits_flipped} weights · ` +
      `${new Date(1000 * e.time).toLocaleString()}${guardNote} · “${e.texts[0].slice(0, 60)}” · `,
      el("span", { class: "small" }, e.saved ? "saved" : "not saved yet")));
  }
  $("history-note").textContent = data.edits.length ? (data.unsaved ? "Edits marked “not saved yet” live in this explorer only until you save." : "Every edit is saved in the model folder.")
    : (data.unsaved ? "The model folder holds edits undone here: Save writes the model without them." : "No kept edits.");
  setButtons();
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
      choice.addEventListener("change", guarded(() => fixAnnotation(r, name, choice)));
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

function on(id, event, fn) { $(id).addEventListener(event, guarded(fn)); }

function wire() {
  const relist = () => { state.page = 0; return loadExamples(); };
  on("only-mistakes", "change", relist);
  on("filter-concept", "change", relist);
  on("sort", "change", relist);
  on("refresh-list", "click", loadExamples);
  on("prev-page", "click", () => { if (state.page > 0) { state.page--; return loadExamples(); } });
  on("next-page", "click", () => { state.page++; return loadExamples(); });
  on("method", "change", explainCurrent);
  on("free-text", "input", countText);
  on("explain-btn", "click", () => {
    const text = $("free-text").value, max = state.model.max_text;
    if (!text.trim()) { status("type a text first", true); return; }
    if (text.length > max) { showExplainError(`the text has ${text.length} characters; the explorer reads at most ${max}`); return; }
    return select({ text }, null);
  });
  on("annotation-concept", "change", () => { state.annotationPage = 0; return loadAnnotations(); });
  on("annotations-prev", "click", () => { if (state.annotationPage > 0) { state.annotationPage--; return loadAnnotations(); } });
  on("annotations-next", "click", () => { state.annotationPage++; return loadAnnotations(); });
  on("undo-btn", "click", () => exclusive(undoLast));
  on("save-btn", "click", () => exclusive(save));
}

wire();
guarded(async () => {
  await loadModel();
  await Promise.all([loadExamples(), loadHistory(), loadSubnetworks(), loadAnnotations()]);
  status("ready");
  watchPending();
})();
