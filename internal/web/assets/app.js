// Tally dashboard: edges and omissions live from the control plane's event
// stream, fault switches through its REST API. No dependencies.
"use strict";

const FAULT_KINDS = ["drop", "truncate", "corrupt", "delay", "abort", "misroute"];
const MAX_OMISSIONS = 100;

const edges = new Map(); // "source destination" -> edge
const omissions = [];    // newest first
let faultsOn = new Map(); // kind -> fault
let token = "";

const $ = (id) => document.getElementById(id);

// The admin token comes from the URL fragment (#token=...), which browsers
// never send to a server; it is kept for this tab only and removed from the
// address bar.
function readToken() {
  const params = new URLSearchParams(location.hash.slice(1));
  const t = params.get("token");
  if (t) {
    sessionStorage.setItem("tally-admin-token", t);
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("tally-admin-token") || "";
}

async function api(method, path, body) {
  const opts = { method, headers: {} };
  if (token) opts.headers["Authorization"] = "Bearer " + token;
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const resp = await fetch(path, opts);
  if (!resp.ok) {
    let msg = resp.status + " " + resp.statusText;
    try { msg = (await resp.json()).error || msg; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return resp.status === 204 ? null : resp.json();
}

// getAll follows a list's "next" cursors.
async function getAll(path) {
  const items = [];
  let cursor = "";
  for (;;) {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api("GET", path + sep + "limit=1000" + (cursor ? "&cursor=" + encodeURIComponent(cursor) : ""));
    items.push(...page.items);
    if (!page.next) return items;
    cursor = page.next;
  }
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

// total orders two states of one edge: every counter only grows.
function total(e) { return e.sent + e.confirmed + e.received + e.omitted; }

function fmt(n) { return Number(n).toLocaleString(); }

let renderPending = false;
function scheduleRender() {
  if (renderPending) return;
  renderPending = true;
  requestAnimationFrame(() => { renderPending = false; renderEdges(); });
}

function renderEdges() {
  const rows = [...edges.values()].sort((a, b) =>
    a.source.localeCompare(b.source) || a.destination.localeCompare(b.destination));
  const tbody = $("edges");
  tbody.replaceChildren(...rows.map((e) => {
    const tr = document.createElement("tr");
    tr.append(
      cell(e.source), cell(e.destination),
      cell(fmt(e.sent), "num"), cell(fmt(e.confirmed), "num"),
      cell(fmt(e.omitted), e.omitted > 0 ? "num bad" : "num"),
      cell(fmt(e.in_flight), "num"),
      cell(e.latency_ms.p99.toFixed(2), "num"),
    );
    return tr;
  }));
  $("edges-empty").hidden = rows.length > 0;
}

function omissionRow(ev, fresh) {
  const tr = document.createElement("tr");
  if (fresh) tr.className = "fresh";
  tr.append(
    cell(new Date(ev.detected_at).toLocaleTimeString()),
    cell(ev.kind, "bad"),
    cell(ev.source), cell(ev.destination),
    cell(ev.message_id || "—", "mono"),
    cell(ev.reporter),
    cell(ev.detail, "detail"),
  );
  tr.title = ev.detected_at + "  #" + ev.id;
  return tr;
}

// addOmission inserts ev in id order, newest first, keeping MAX_OMISSIONS.
function addOmission(ev, fresh) {
  if (omissions.some((o) => o.id === ev.id)) return;
  const id = Number(ev.id);
  let i = omissions.findIndex((o) => Number(o.id) < id);
  if (i < 0) i = omissions.length;
  if (i >= MAX_OMISSIONS) return;
  omissions.splice(i, 0, ev);
  const tbody = $("omissions");
  tbody.insertBefore(omissionRow(ev, fresh), tbody.children[i] || null);
  while (omissions.length > MAX_OMISSIONS) {
    omissions.pop();
    tbody.lastElementChild.remove();
  }
  $("omissions-empty").hidden = true;
}

function renderFaults() {
  const box = $("faults");
  box.replaceChildren(...FAULT_KINDS.map((kind) => {
    const on = faultsOn.has(kind);
    const b = document.createElement("button");
    b.type = "button";
    b.className = on ? "fault on" : "fault";
    b.textContent = on ? kind + " " + faultsOn.get(kind).percent + "%" : kind;
    b.title = on ? "switch " + kind + " off" : "switch " + kind + " on";
    b.disabled = !token;
    b.addEventListener("click", () => toggleFault(kind));
    return b;
  }));
  $("faults-hint").hidden = !!token;
  $("percent").disabled = !token;
}

async function loadFaults() {
  try {
    const page = await api("GET", "/api/v1/faults");
    faultsOn = new Map(page.items.map((f) => [f.kind, f]));
    renderFaults();
  } catch (err) {
    showFaultError(err);
  }
}

function showFaultError(err) {
  const p = $("faults-error");
  p.textContent = err ? String(err.message || err) : "";
  p.hidden = !err;
}

async function toggleFault(kind) {
  showFaultError(null);
  try {
    if (faultsOn.has(kind)) {
      await api("DELETE", "/api/v1/faults/" + kind);
    } else {
      const percent = Number($("percent").value);
      const body = { from: "*", to: "*", percent };
      if (kind === "delay") body.delay_ms = 500;
      await api("PUT", "/api/v1/faults/" + kind, body);
    }
  } catch (err) {
    showFaultError(err);
  }
  await loadFaults();
}

function setStatus(text, cls) {
  const s = $("status");
  s.textContent = text;
  s.className = "status " + cls;
}

function connect() {
  const es = new EventSource("/api/v1/events");
  es.addEventListener("open", () => setStatus("live", "live"));
  es.addEventListener("error", () => setStatus("reconnecting…", "down"));
  es.addEventListener("edge", (m) => {
    const e = JSON.parse(m.data);
    edges.set(e.source + " " + e.destination, e);
    scheduleRender();
  });
  es.addEventListener("omission", (m) => addOmission(JSON.parse(m.data), true));
}

async function main() {
  token = readToken();
  renderFaults();
  // Subscribe first so nothing that happens while loading is missed; the
  // initial lists then fill in (an edge from the stream is never older).
  connect();
  try {
    const cfg = await api("GET", "/api/v1/config");
    if (cfg.warning) {
      $("warning").textContent = "⚠ " + cfg.warning;
      $("warning").hidden = false;
    }
    for (const e of await getAll("/api/v1/edges")) {
      const k = e.source + " " + e.destination;
      if (!edges.has(k) || total(edges.get(k)) <= total(e)) edges.set(k, e);
    }
    scheduleRender();
    const latest = await api("GET", "/api/v1/omissions?order=desc&limit=" + MAX_OMISSIONS);
    for (const ev of latest.items) addOmission(ev, false);
  } catch (err) {
    setStatus("error: " + err.message, "down");
  }
  await loadFaults();
  setInterval(loadFaults, 5000);
}

main();
