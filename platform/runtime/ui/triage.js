// rlad triage page: plain JS, no build step. Every data call sends the key from sessionStorage.
"use strict";
const base = location.pathname.replace(/\/ui\/?(index\.html)?$/, "");
const KEY = "rlad-api-key";
const state = { offset: 0 };
const $ = (id) => document.getElementById(id);

async function api(path, options = {}) {
  const headers = { "Content-Type": "application/json", ...(options.headers || {}) };
  const key = sessionStorage.getItem(KEY);
  if (key) headers["X-API-Key"] = key;
  const resp = await fetch(base + path, { ...options, headers });
  if (resp.status === 401) throw new AuthError();
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) throw new Error(typeof body.detail === "string" ? body.detail : `${resp.status} from ${path}`);
  return body;
}
class AuthError extends Error { constructor() { super("Wrong or missing API key: the server refused it. Enter the key of this server."); } }

function fail(err) {
  $("message").textContent = err.message;
  if (err instanceof AuthError) { $("data").hidden = true; $("rows").tBodies[0].replaceChildren(); }
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) (k === "class" ? (e.className = v) : e.setAttribute(k, v));
  e.append(...children);
  return e;
}
const fmt = (x, d = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(d));

function query() {
  const p = new URLSearchParams({ limit: $("f-limit").value, offset: state.offset, labelled: $("f-labelled").value });
  if ($("f-min").value !== "") p.set("min_score", $("f-min").value);
  if ($("f-since").value) p.set("since", new Date($("f-since").value).getTime() / 1000);
  return p;
}

async function loadRows() {
  const data = await api("/recent?" + query());
  const limit = Number($("f-limit").value);
  $("message").textContent = "";
  $("data").hidden = false;
  const tbody = $("rows").tBodies[0];
  tbody.replaceChildren(...data.rows.map(rowElement));
  const last = Math.min(state.offset + limit, data.total);
  $("page-info").textContent = data.total ? `rows ${state.offset + 1}–${last} of ${data.total}` : "no rows match";
  $("prev").disabled = state.offset === 0;
  $("next").disabled = last >= data.total;
  data.rows.forEach((r) => explainInto(r.id));
}

function rowElement(r) {
  const tr = el("tr", { "data-id": r.id, "data-score": r.score });
  const why = el("td", { class: "why", "data-col": "Why flagged" }, "…");
  const labelCell = el("td", { "data-col": "Label" });
  tr.append(el("td", { class: "num score", "data-col": "Score" }, fmt(r.score, 4)),
    el("td", { class: "num", "data-col": "P(anomaly)" }, fmt(r.proba)),
    el("td", { "data-col": "Scored" }, new Date(r.ts * 1000).toLocaleString()), why, labelCell);
  renderLabel(tr, labelCell, r);
  return tr;
}

function renderLabel(tr, cell, r) {
  tr.className = r.label ? `label-${r.label}` : "";
  const status = el("span", { class: "state", "aria-live": "polite" }, r.label ? `labelled ${r.label}` : "unlabelled");
  const buttons = ["anomaly", "normal"].map((label) => {
    const b = el("button", { type: "button", "aria-label": `Label row ${r.id.slice(0, 8)} ${label}` }, label === "anomaly" ? "Anomaly" : "Normal");
    b.addEventListener("click", () => label_(tr, cell, r, label, b));
    return b;
  });
  cell.replaceChildren(status, " ", ...buttons);
}

async function label_(tr, cell, r, label, button) {
  button.disabled = true;
  try {
    const body = { id: r.id, label, analyst: "triage-page" };
    if (r.weight) body.weight = r.weight;  // an audit row stands for the unlabelled rows it was drawn from
    await api("/feedback", { method: "POST", body: JSON.stringify(body) });
    renderLabel(tr, cell, { ...r, label });
    cell.querySelector("button")?.focus();
  } catch (err) { fail(err); button.disabled = false; }
}

async function explainInto(id) {
  const cell = document.querySelector(`tr[data-id="${id}"] td.why`);
  try {
    const ex = await api("/explain?id=" + encodeURIComponent(id));
    const items = (ex.features || []).slice(0, 3).map((f) =>
      el("li", {}, `${f.feature} = ${fmt(f.value, 3)}: z ${fmt(f.z, 1)}, training quantile ${fmt(f.quantile * 100, 0)}%`));
    const list = el("ul", {}, ...items);
    const parts = [list];
    if (ex.attributes && ex.attributes.length)
      parts.push(el("div", {}, "explain(): " + ex.attributes.slice(0, 3).map((a) => `${a.feature} ${fmt(a.value, 2)}`).join(", ")));
    cell.replaceChildren(...parts);
  } catch (err) { if (err instanceof AuthError) fail(err); else cell.textContent = "no explanation: " + err.message; }
}

function bars(rows) {
  return el("div", { class: "bars" }, ...rows.map(([name, value, max, cls]) =>
    el("div", { class: "barrow" }, el("span", {}, name),
      el("div", { class: "bar " + (cls || ""), style: `width:${Math.max(1, (100 * value) / (max || 1))}%` }))));
}

async function loadModel() {
  const [models, drift] = await Promise.all([api("/models"), api("/drift")]);
  const live = models.versions.find((v) => v.version === models.live) || {};
  $("model-line").textContent = `live version ${models.live}${live.kind ? " (" + live.kind + ")" : ""}`;
  const metrics = Object.entries(live.metrics || {}).map(([k, v]) => `${k} ${fmt(v)}`).join(", ");
  $("model").replaceChildren(el("p", {}, `Live version ${models.live}. Metrics: ${metrics || "none recorded"}.`));
  const h = drift.score_hist;
  const max = Math.max(...h.recent, ...h.training, 1e-9);
  const rows = [];
  h.recent.forEach((v, i) => {
    const label = `${fmt(h.edges[i], 2)}–${fmt(h.edges[i + 1], 2)}`;
    rows.push([label + " recent", v, max], [label + " training", h.training[i], max, "train"]);
  });
  $("hist").replaceChildren(bars(rows.filter((r, i) => h.recent[i >> 1] > 0 || h.training[i >> 1] > 0)));
  const psi = Object.entries(drift.psi).sort((a, b) => b[1] - a[1]);
  $("psi").replaceChildren(psi.length ? bars(psi.slice(0, 12).map(([f, v]) => [`${f} ${fmt(v, 3)}`, v, Math.max(psi[0][1], 0.25)]))
    : el("p", {}, "no recent rows"));
  $("events").replaceChildren(models.events.length
    ? el("ul", {}, ...models.events.map((e) => el("li", {}, JSON.stringify(e))))
    : el("p", {}, "none recorded"));
}

async function loadAudit() {
  // n rows at random from the unlabelled ones scoring under the lowest score on this page: the rows
  // nobody reviews. Their labels (weighted) let the retraining gate see what the live model missed.
  const shown = [...document.querySelectorAll("#rows tbody tr")].map((tr) => Number(tr.dataset.score));
  const p = new URLSearchParams({ n: 10 });
  if (shown.length) p.set("below", Math.min(...shown));
  const data = await api("/audit?" + p);
  $("message").textContent = "";
  const rows = data.rows.map((r) => ({ ...r, weight: data.weight }));
  $("rows").tBodies[0].replaceChildren(...rows.map(rowElement));
  $("page-info").textContent = rows.length
    ? `audit: ${rows.length} of ${data.population} unlabelled rows drawn at random; each label counts ${fmt(data.weight, 1)} rows`
    : "no unlabelled rows to audit";
  $("prev").disabled = $("next").disabled = true;
  rows.forEach((r) => explainInto(r.id));
}

async function refresh() {
  try { await loadRows(); await loadModel(); } catch (err) { fail(err); }
}

$("key-form").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(KEY, $("api-key").value);
  state.offset = 0;
  refresh();
});
$("filters").addEventListener("submit", (e) => { e.preventDefault(); state.offset = 0; refresh(); });
$("audit").addEventListener("click", () => loadAudit().catch(fail));
$("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - Number($("f-limit").value)); refresh(); });
$("next").addEventListener("click", () => { state.offset += Number($("f-limit").value); refresh(); });
if (sessionStorage.getItem(KEY) !== null) { $("api-key").value = sessionStorage.getItem(KEY); refresh(); }
