"use strict";
// The rqlite console: talks to this node's HTTP API only.

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
};

async function api(path, body) {
  const opts = body === undefined ? {} : {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  };
  const r = await fetch(path, opts);
  const text = await r.text();
  if (!r.ok) throw new Error(`${r.status}: ${text.trim()}`);
  return text;
}
const json = async (path, body) => JSON.parse(await api(path, body));

// One SQL statement through /db/request; returns its result object.
async function sql(stmt, level = "weak") {
  const j = await json(`/db/request?timings&level=${level}`, [stmt]);
  return j.results[0];
}
const quote = (name) => `"${String(name).replace(/"/g, '""')}"`;

function resultTable(r) {
  if (r.error) return el("p", { class: "error" }, r.error);
  if (!r.columns) {
    return el("p", {}, `${r.rows_affected ?? 0} rows affected, last insert id ${r.last_insert_id ?? 0}`);
  }
  const head = el("tr", {}, ...r.columns.map((c) => el("th", {}, c)));
  const rows = (r.values || []).map((row) => el("tr", {}, ...row.map((v) => el("td", {}, v === null ? "NULL" : v))));
  return el("table", { class: "result" }, el("thead", {}, head), el("tbody", {}, ...rows));
}

// Query tab.
const HISTORY = "rqlite-console-history";
function history() {
  try { return JSON.parse(localStorage.getItem(HISTORY)) || []; } catch { return []; }
}
function showHistory() {
  $("#history").replaceChildren(...history().map((s) => el("li", { onclick: () => { $("#sql").value = s; } }, s)));
}
async function run() {
  const stmt = $("#sql").value.trim();
  if (!stmt) return;
  const started = performance.now();
  $("#results").replaceChildren(el("p", { class: "muted" }, "Running..."));
  try {
    const j = await json(`/db/request?timings&level=${$("#level").value}`, [stmt]);
    const took = performance.now() - started;
    $("#results").replaceChildren(...j.results.map(resultTable));
    const server = j.time !== undefined ? `${(j.time * 1000).toFixed(3)} ms on the server, ` : "";
    $("#timing").textContent = `${server}${took.toFixed(1)} ms in all`;
  } catch (e) {
    $("#results").replaceChildren(el("p", { class: "error" }, e.message));
    $("#timing").textContent = "";
  }
  const h = [stmt, ...history().filter((s) => s !== stmt)].slice(0, 50);
  localStorage.setItem(HISTORY, JSON.stringify(h));
  showHistory();
}

// Tables tab.
async function loadTables() {
  const r = await sql("SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%' ORDER BY name");
  const items = (r.values || []).map(([name, type]) =>
    el("li", { "data-table": name, onclick: () => showTable(name) }, name, type === "view" ? " (view)" : ""));
  $("#table-list").replaceChildren(...items);
  if (!items.length) $("#table-list").replaceChildren(el("li", { class: "muted" }, "No tables."));
}
async function showTable(name) {
  for (const li of document.querySelectorAll("#table-list li")) li.classList.toggle("active", li.dataset.table === name);
  const d = $("#table-detail");
  try {
    const [count, schema, indexes, rows] = await Promise.all([
      sql(`SELECT COUNT(*) FROM ${quote(name)}`),
      sql(`SELECT sql FROM sqlite_master WHERE name = '${name.replace(/'/g, "''")}'`),
      sql(`SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = '${name.replace(/'/g, "''")}' ORDER BY name`),
      sql(`SELECT * FROM ${quote(name)} LIMIT 100`),
    ]);
    const idx = (indexes.values || []).map(([iname, isql]) => el("li", {},
      el("code", {}, isql || `${iname} (automatic)`), " ",
      isql ? el("button", { class: "drop-index", onclick: () => dropIndex(name, iname) }, "Drop") : ""));
    const colsInput = el("input", { id: "index-columns", placeholder: "columns, e.g. a, b" });
    const nameInput = el("input", { id: "index-name", placeholder: "index name" });
    d.replaceChildren(
      el("h2", {}, name),
      el("p", { id: "row-count" }, `${count.values[0][0]} rows`),
      el("pre", { id: "schema" }, schema.values?.[0]?.[0] ?? ""),
      el("h3", {}, "Indexes"),
      el("ul", { id: "indexes" }, ...idx),
      el("p", {}, nameInput, " ", colsInput, " ",
        el("button", { id: "create-index", onclick: () => createIndex(name, nameInput.value, colsInput.value) }, "Create index")),
      el("h3", {}, "First 100 rows"),
      resultTable(rows));
  } catch (e) {
    d.replaceChildren(el("p", { class: "error" }, e.message));
  }
}
async function write(stmt) {
  const r = await sql(stmt);
  if (r.error) alert(r.error);
}
async function createIndex(table, name, cols) {
  if (!name || !cols) return;
  await write(`CREATE INDEX ${quote(name)} ON ${quote(table)} (${cols})`);
  await showTable(table);
}
async function dropIndex(table, name) {
  await write(`DROP INDEX ${quote(name)}`);
  await showTable(table);
}

// Prometheus text: [{name, labels, value}].
function parseMetrics(text) {
  const out = [];
  for (const line of text.split("\n")) {
    const m = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})?\s+(\S+)/.exec(line);
    if (!m) continue;
    const labels = {};
    for (const l of (m[2] || "").matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    out.push({ name: m[1], labels, value: Number(m[3]) });
  }
  return out;
}
const sum = (ms, name, match = () => true) =>
  ms.filter((m) => m.name === name && match(m.labels)).reduce((a, m) => a + m.value, 0);

// Cluster tab.
async function loadCluster() {
  const [nodes, status, metrics] = await Promise.all([
    json("/nodes?ver=2&nonvoters"),
    json("/status"),
    api("/metrics").then(parseMetrics).catch(() => []),
  ]);
  const lag = {};
  for (const m of metrics) if (m.name === "rqlite_raft_replication_lag_entries") lag[m.labels.node] = m.value;
  const rows = nodes.nodes.map((n) => el("tr", { "data-node": n.id, class: n.leader ? "leader" : "" },
    el("td", {}, n.id),
    el("td", { class: "role" }, n.leader ? "leader" : n.voter ? "follower" : "read replica"),
    el("td", {}, n.api_addr || ""),
    el("td", {}, n.addr),
    el("td", {}, n.reachable ? "yes" : `no${n.error ? `: ${n.error}` : ""}`),
    el("td", {}, n.version || ""),
    el("td", {}, n.leader ? "" : (lag[n.id] ?? "-"))));
  $("#nodes tbody").replaceChildren(...rows);
  const raft = status.store.raft;
  $("#cluster-info").replaceChildren(el("p", {},
    `This node: ${status.store.node_id}, ${raft.state}, term ${raft.term}, applied index ${raft.applied_index}, `,
    `commit index ${raft.commit_index}, last log index ${raft.last_log_index}; `,
    `HTTP TLS ${status.http.tls?.enabled === "true" ? "on" : "off"}.`));
}

// Backup tab.
function restore() {
  const f = $("#restore-file").files[0];
  if (!f) return;
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/db/load");
  xhr.setRequestHeader("Content-Type", "application/octet-stream");
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) $("#restore-progress").value = (100 * e.loaded) / e.total; };
  xhr.onload = () => {
    $("#restore-progress").value = 100;
    $("#restore-status").textContent = xhr.status === 200 ? "Restored." : `Failed: ${xhr.status} ${xhr.responseText}`;
  };
  xhr.onerror = () => { $("#restore-status").textContent = "Failed: the connection broke."; };
  $("#restore-status").textContent = "Uploading...";
  xhr.send(f);
}

// Charts tab: series over the last five minutes.
const WINDOW = 300;
const charts = { t: [], rate: { execute: [], query: [], request: [] }, p50: [], p99: [], commit: [], lag: {}, prev: null, plots: null };
window.rqConsole = { samples: 0 };

function quantile(buckets, q) {
  // buckets: sorted [le, cumulative count]
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (!total) return null;
  const rank = q * total;
  let prevLe = 0, prevCount = 0;
  for (const [le, count] of buckets) {
    if (count >= rank) {
      if (!isFinite(le)) return prevLe;
      return prevLe + ((le - prevLe) * (rank - prevCount)) / Math.max(count - prevCount, 1);
    }
    prevLe = le; prevCount = count;
  }
  return prevLe;
}

function makePlots() {
  const width = Math.min(900, window.innerWidth - 60);
  const opts = (title, series) => ({ title, width, height: 200, series: [{}, ...series.map((label) => ({ label, stroke: color(label) }))] });
  return {
    rate: new uPlot(opts("Requests per second", ["execute", "query", "request"]), [[], [], [], []], $("#chart-rate")),
    latency: new uPlot(opts("Request latency (ms)", ["p50", "p99"]), [[], [], []], $("#chart-latency")),
    raft: new uPlot(opts("Raft commit index", ["commit"]), [[], []], $("#chart-raft")),
    lag: null,
  };
}
function color(label) {
  const palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];
  let h = 0;
  for (const c of label) h = (h * 31 + c.charCodeAt(0)) >>> 0;
  return palette[h % palette.length];
}

async function sample() {
  let ms;
  try { ms = parseMetrics(await api("/metrics")); } catch { return; }
  const now = Date.now() / 1000;
  const totals = {};
  for (const kind of ["execute", "query", "request"]) totals[kind] = sum(ms, "rqlite_http_requests_total", (l) => l.endpoint === kind);
  const buckets = {};
  for (const m of ms) {
    if (m.name !== "rqlite_http_request_seconds_bucket" || !["execute", "query", "request"].includes(m.labels.endpoint)) continue;
    const le = m.labels.le === "+Inf" ? Infinity : Number(m.labels.le);
    buckets[le] = (buckets[le] || 0) + m.value;
  }
  const prev = charts.prev;
  charts.prev = { now, totals, buckets };
  if (!prev) return;
  const dt = Math.max(now - prev.now, 0.001);
  charts.t.push(now);
  for (const kind of Object.keys(totals)) charts.rate[kind].push((totals[kind] - prev.totals[kind]) / dt);
  const delta = Object.keys(buckets).map(Number).sort((a, b) => a - b).map((le) => [le, buckets[le] - (prev.buckets[le] || 0)]);
  const ms1000 = (v) => (v === null ? null : v * 1000);
  charts.p50.push(ms1000(quantile(delta, 0.5)));
  charts.p99.push(ms1000(quantile(delta, 0.99)));
  charts.commit.push(sum(ms, "rqlite_raft_commit_index"));
  const lags = {};
  for (const m of ms) if (m.name === "rqlite_raft_replication_lag_entries") lags[m.labels.node] = m.value;
  for (const node of new Set([...Object.keys(charts.lag), ...Object.keys(lags)])) {
    charts.lag[node] ??= new Array(charts.t.length - 1).fill(null);
    charts.lag[node].push(lags[node] ?? null);
  }
  if (charts.t.length > WINDOW) {
    charts.t.shift(); charts.p50.shift(); charts.p99.shift(); charts.commit.shift();
    for (const s of Object.values(charts.rate)) s.shift();
    for (const s of Object.values(charts.lag)) s.shift();
  }
  window.rqConsole.samples += 1;
  window.rqConsole.last = { rate: Object.fromEntries(Object.entries(charts.rate).map(([k, v]) => [k, v[v.length - 1]])), commit: charts.commit[charts.commit.length - 1] };
  draw();
}

function draw() {
  if (!$("#charts").classList.contains("active")) return;
  charts.plots ??= makePlots();
  const p = charts.plots;
  p.rate.setData([charts.t, charts.rate.execute, charts.rate.query, charts.rate.request]);
  p.latency.setData([charts.t, charts.p50, charts.p99]);
  p.raft.setData([charts.t, charts.commit]);
  const nodes = Object.keys(charts.lag).sort();
  if (nodes.length && (!p.lag || p.lagNodes !== nodes.join())) {
    p.lag?.destroy();
    $("#chart-lag").replaceChildren();
    p.lag = new uPlot({ title: "Replication lag per follower (entries)", width: Math.min(900, window.innerWidth - 60), height: 200,
      series: [{}, ...nodes.map((n) => ({ label: n, stroke: color(n) }))] }, [[]], $("#chart-lag"));
    p.lagNodes = nodes.join();
  }
  p.lag?.setData([charts.t, ...nodes.map((n) => charts.lag[n])]);
}

// Tabs.
function showTab(name) {
  for (const b of document.querySelectorAll("nav button")) b.classList.toggle("active", b.dataset.tab === name);
  for (const s of document.querySelectorAll(".tab")) s.classList.toggle("active", s.id === name);
  if (name === "tables") loadTables();
  if (name === "cluster") loadCluster();
  if (name === "charts") draw();
}

document.addEventListener("DOMContentLoaded", async () => {
  for (const b of document.querySelectorAll("nav button")) b.addEventListener("click", () => showTab(b.dataset.tab));
  $("#run").addEventListener("click", run);
  $("#sql").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) run(); });
  $("#restore").addEventListener("click", restore);
  showHistory();
  try {
    const s = await json("/status");
    $("#node-info").textContent = `${s.store.node_id} · ${s.store.raft.state} · ${s.build.version}`;
  } catch (e) {
    $("#node-info").textContent = e.message;
  }
  sample();
  setInterval(sample, 1000);
});
