// The Containarium dashboard: several daemons in tabs, their environments live over the event
// stream, create/resize/delete/collaborators/SSH config, a terminal, metrics, nodes, audit,
// security scans, alerts.
import { ApiError, Server } from "./api.js";
import { canGenerate, download, generateEd25519 } from "./sshkey.js";

const $ = (sel, root = document) => root.querySelector(sel);
const el = (tag, props = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null && v !== false) e.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) if (c !== null && c !== undefined) e.append(c);
  return e;
};
const STORAGE = "containarium.servers";
const ACTIVE = "containarium.active";

// ---------------------------------------------------------------------------- state ----
const state = {
  servers: [],
  server: null,
  abort: null,
  envs: new Map(),       // username -> Container
  cards: new Map(),      // username -> {card, row}
  admin: false,
  nodes: [],
  layout: "grid",
  selected: null,
  charts: {},
  operation: null,       // {id, username}
  deleted: new Map(),    // username -> when this page deleted it (late change events are ignored a while)
};
window.containarium = state; // for the end-to-end tests' measurements (and applyEvent below)

function loadServers() {
  try { state.servers = (JSON.parse(localStorage.getItem(STORAGE)) ?? []).map((s) => new Server(s)); } catch { state.servers = []; }
}
function saveServers() {
  localStorage.setItem(STORAGE, JSON.stringify(state.servers.map(({ id, name, url, token }) => ({ id, name, url, token }))));
}

function toast(text, bad = false) {
  const t = el("div", { class: "toast" + (bad ? " bad" : "") }, text);
  $("#toasts").append(t);
  setTimeout(() => t.remove(), bad ? 9000 : 4000);
}
const fail = (e) => toast(e instanceof ApiError ? `${e.code}: ${e.message}` : String(e.message ?? e), true);

// ----------------------------------------------------------------------- formatting ----
const MiB = 1 << 20, GiB = 1 << 30;
function bytes(n) {
  if (n === undefined || n === null) return "–";
  if (n >= GiB) return (n / GiB).toFixed(1) + " GiB";
  if (n >= MiB) return (n / MiB).toFixed(0) + " MiB";
  return (n / 1024).toFixed(0) + " KiB";
}
function parseSize(s) {
  const m = /^([\d.]+)\s*([KMGT]i?B)$/i.exec(s ?? "");
  if (!m) return null;
  const unit = m[2].toUpperCase(), base = unit.includes("I") ? 1024 : 1000;
  return Number(m[1]) * base ** ({ K: 1, M: 2, G: 3, T: 4 }[unit[0]]);
}
const stateName = (c) => (c.state ?? "").replace("CONTAINER_STATE_", "").toLowerCase();

// -------------------------------------------------------------------------- servers ----
function renderTabs() {
  const tabs = $("#server-tabs");
  tabs.replaceChildren(...state.servers.map((s) => el("li", {},
    el("button", { type: "button", role: "tab", "aria-selected": String(state.server?.id === s.id), onclick: () => activate(s.id) }, s.name))));
  $("#no-server").hidden = state.servers.length > 0;
  $("#workspace").hidden = !state.server;
}

async function activate(id) {
  state.abort?.abort();
  state.server = state.servers.find((s) => s.id === id) ?? null;
  localStorage.setItem(ACTIVE, state.server?.id ?? "");
  state.envs.clear();
  state.cards.clear();
  resetSecurity();
  if (secVisible()) renderSecurity();
  resetAlerts();
  if (alertsVisible()) renderAlerts();
  closeDetail();
  renderTabs();
  if (!state.server) return;
  const server = state.server;
  $("#server-status").textContent = `Connecting to ${server.url}…`;
  try {
    const info = await server.get("/v1/system/info");
    if (state.server !== server) return;
    $("#server-status").textContent = `${server.name}: Containarium ${info.version} on ${info.node}, backend ${info.backend}`;
  } catch (e) {
    $("#server-status").textContent = `${server.name}: ${e.message}`;
    fail(e);
    return;
  }
  state.abort = new AbortController();
  await Promise.all([loadEnvironments(), loadNodes(), loadCatalog()]);
  if (state.server === server && secVisible()) loadSecurity();
  if (state.server === server && alertsVisible()) loadAlerts();
  server.follow(onEvent, (up, err) => {
    if (state.server !== server) return;
    $("#server-status").dataset.live = up ? "yes" : "no";
    if (err) fail(err);
  }, state.abort.signal);
  // Usage figures change without events: refresh them (not the page) every 15 s.
  const signal = state.abort.signal;
  (async () => {
    while (!signal.aborted) {
      await new Promise((r) => setTimeout(r, 15_000));
      if (signal.aborted || state.server !== server) return;
      try { await loadEnvironments(false); } catch { /* shown on the next action */ }
    }
  })();
}

function openServerDialog() {
  const d = $("#server-dialog");
  $("#server-form").reset();
  $("#server-error").textContent = "";
  d.showModal();
}

async function addServer(event) {
  event.preventDefault();
  const f = new FormData(event.target);
  const server = new Server({ id: crypto.randomUUID(), name: f.get("name").trim(), url: f.get("url").trim(), token: f.get("token").trim() });
  try {
    await server.get("/v1/system/info");
  } catch (e) {
    $("#server-error").textContent = e.message;
    return;
  }
  state.servers.push(server);
  saveServers();
  $("#server-dialog").close();
  await activate(server.id);
}

function signOut() {
  if (!state.server) return;
  state.abort?.abort();
  state.servers = state.servers.filter((s) => s.id !== state.server.id);
  saveServers();
  state.server = null;
  activate(state.servers[0]?.id);
}

// ---------------------------------------------------------------------- environments ----
async function loadEnvironments(full = true) {
  const server = state.server;
  const list = await server.get("/v1/containers");
  if (state.server !== server) return;
  let metrics = [];
  try { metrics = (await server.get("/v1/metrics")).containers ?? []; } catch { /* optional */ }
  const usage = new Map(metrics.map((m) => [m.username, m]));
  if (full) state.envs.clear();
  const seen = new Set();
  for (const c of list.containers) {
    const m = usage.get(c.username);
    if (m?.cpuPercent != null) c.cpuPercent = m.cpuPercent;
    state.envs.set(c.username, c);
    seen.add(c.username);
  }
  for (const u of [...state.envs.keys()]) if (!seen.has(u)) state.envs.delete(u);
  renderEnvironments();
}

function filters() {
  return {
    q: $("#f-search").value.trim().toLowerCase(),
    node: $("#f-node").value, backend: $("#f-backend").value, state: $("#f-state").value, owner: $("#f-owner").value,
  };
}
function matches(c, f) {
  if (f.node && c.node !== f.node) return false;
  if (f.backend && c.backend !== f.backend) return false;
  if (f.state && stateName(c) !== f.state) return false;
  if (f.owner && c.owner !== f.owner) return false;
  if (f.q && ![c.name, c.username, c.owner, c.network?.ipAddress].some((v) => (v ?? "").toLowerCase().includes(f.q))) return false;
  return true;
}

function fillSelect(select, values) {
  const current = select.value;
  select.replaceChildren(el("option", { value: "" }, "all"), ...[...values].sort().map((v) => el("option", { value: v }, v)));
  select.value = values.has(current) ? current : "";
}

function renderEnvironments() {
  const started = performance.now();
  const envs = [...state.envs.values()].sort((a, b) => a.username.localeCompare(b.username));
  fillSelect($("#f-node"), new Set(envs.map((c) => c.node).filter(Boolean)));
  fillSelect($("#f-backend"), new Set(envs.map((c) => c.backend).filter(Boolean)));
  fillSelect($("#f-state"), new Set(envs.map(stateName)));
  fillSelect($("#f-owner"), new Set(envs.map((c) => c.owner).filter(Boolean)));
  const f = filters();
  const shown = envs.filter((c) => matches(c, f));
  state.cards.clear();
  const cards = [], rows = [];
  for (const c of shown) {
    const card = envCard(c), row = envRow(c);
    state.cards.set(c.username, { card, row });
    cards.push(card);
    rows.push(row);
  }
  $("#env-grid").replaceChildren(...cards);
  $("#env-table tbody").replaceChildren(...rows);
  $("#env-grid").hidden = state.layout !== "grid";
  $("#env-table").hidden = state.layout !== "list";
  $("#env-count").textContent = `${shown.length} of ${envs.length} environments`;
  state.lastRenderMs = performance.now() - started;
}

/** Replace one environment's card and row in place (live updates never re-render the page). */
function patchEnvironment(username) {
  const c = state.envs.get(username);
  const old = state.cards.get(username);
  if (!c) {
    old?.card.remove();
    old?.row.remove();
    state.cards.delete(username);
    $("#env-count").textContent = `${state.cards.size} of ${state.envs.size} environments`;
    return;
  }
  if (!matches(c, filters())) {
    old?.card.remove();
    old?.row.remove();
    state.cards.delete(username);
    return;
  }
  const card = envCard(c), row = envRow(c);
  if (old) {
    old.card.replaceWith(card);
    old.row.replaceWith(row);
  } else {
    renderEnvironments();
    return;
  }
  state.cards.set(username, { card, row });
  if (state.selected === username) renderDetailActions();
}

function usageBar(used, limit) {
  if (!used || !limit) return null;
  const pct = Math.min(100, (used / limit) * 100);
  return el("div", { class: "bar", role: "img", "aria-label": `${pct.toFixed(0)}% used` }, el("span", { style: null, dataset: { pct: pct.toFixed(0) } }));
}

function envCard(c) {
  const s = stateName(c);
  const memLimit = parseSize(c.resources?.memory), diskLimit = parseSize(c.resources?.disk);
  const card = el("article", { class: "card", dataset: { username: c.username }, "aria-label": c.name },
    el("h3", {}, el("span", {}, c.name), el("span", { class: `badge ${s}` }, s)),
    el("dl", {},
      el("dt", {}, "Owner"), el("dd", {}, c.owner || "–"),
      el("dt", {}, "Node"), el("dd", {}, c.node || "–"),
      el("dt", {}, "Backend"), el("dd", {}, c.backend || "–"),
      el("dt", {}, "IP"), el("dd", {}, c.network?.ipAddress || "–"),
      ...(c.endpoints?.rdp ? [el("dt", {}, "RDP"), el("dd", {}, c.endpoints.rdp)] : []),
      el("dt", {}, "CPU"), el("dd", {}, (c.cpuPercent != null ? `${c.cpuPercent.toFixed(1)}% of ` : "") + (c.resources?.cpu ? `${c.resources.cpu} CPU` : "no limit")),
      el("dt", {}, "Memory"), el("dd", {}, `${bytes(c.usage?.memoryBytes)} / ${c.resources?.memory || "no limit"}`),
      el("dt", {}, "Disk"), el("dd", {}, `${bytes(c.usage?.diskBytes)} / ${c.resources?.disk || "no limit"}`)),
    usageBar(c.usage?.memoryBytes, memLimit), usageBar(c.usage?.diskBytes, diskLimit),
    actions(c));
  for (const b of card.querySelectorAll(".bar > span")) b.style.width = b.dataset.pct + "%";
  return card;
}

function envRow(c) {
  const s = stateName(c);
  return el("tr", { dataset: { username: c.username } },
    el("th", { scope: "row" }, c.name), el("td", {}, el("span", { class: `badge ${s}` }, s)), el("td", {}, c.owner || "–"),
    el("td", {}, c.node || "–"), el("td", {}, c.backend || "–"), el("td", {}, c.network?.ipAddress || "–"),
    el("td", {}, c.cpuPercent != null ? `${c.cpuPercent.toFixed(1)}%` : (c.resources?.cpu || "–")),
    el("td", {}, bytes(c.usage?.memoryBytes)), el("td", {}, bytes(c.usage?.diskBytes)), el("td", {}, actions(c)));
}

function actions(c) {
  const s = stateName(c), u = c.username;
  const b = (label, fn, extra = {}) => el("button", { type: "button", "aria-label": `${label} ${c.name}`, onclick: fn, ...extra }, label);
  return el("div", { class: "actions" },
    s === "running" ? b("Stop", () => power(u, "stop")) : b("Start", () => power(u, "start"), { disabled: s === "creating" }),
    b("Terminal", () => openTerminal(u), { disabled: s !== "running" }),
    ...(c.type === "ENVIRONMENT_TYPE_VM" ? [b("Screen", () => openScreen(u), { disabled: s !== "running" })] : []),
    b("Metrics", () => openDetail(u)),
    b("Resize", () => openResize(u)),
    b("Collaborators", () => openCollaborators(u)),
    b("SSH config", () => showSSHConfig(u)),
    b("Delete", () => confirmDelete(u), { class: "danger" }));
}

async function power(u, action) {
  try {
    const c = await state.server.post(`/v1/containers/${u}/${action}`, action === "stop" ? { force: false } : undefined);
    state.envs.set(u, c);
    patchEnvironment(u);
    toast(`${action === "stop" ? "Stopped" : "Started"} ${c.name}`);
  } catch (e) { fail(e); }
}

async function refreshOne(u) {
  try {
    const c = await state.server.get(`/v1/containers/${u}`);
    if (Date.now() - (state.deleted.get(u) ?? 0) < 10_000) return;  // deleted meanwhile, from this page
    const prev = state.envs.get(u);
    if (prev?.cpuPercent !== undefined) c.cpuPercent = prev.cpuPercent;
    state.envs.set(u, c);
  } catch (e) {
    if (e.status === 404) state.envs.delete(u); else return;
  }
  patchEnvironment(u);
}

state.applyEvent = (type, e) => onEvent(type, e);
function onEvent(type, e) {
  const u = e.username;
  if ((type === "container.changed" || type === "container.removed") && u) {
    if (type === "container.removed") {
      state.envs.delete(u);
      patchEnvironment(u);
    } else if (Date.now() - (state.deleted.get(u) ?? 0) < 10_000) {
      // A change event of the stop that comes with a delete from this page: the environment is
      // going or gone; asking for it would only answer 404.
    } else {
      refreshOne(u);
    }
  } else if (type === "operation.progress" && state.operation && e.progress?.operationId === state.operation.id) {
    showStep(e.progress.step, e.progress.total, e.progress.message);
  } else if (type === "operation.finished" && state.operation && e.operation?.operationId === state.operation.id) {
    finishOperation(e.operation.state, e.operation.error || null);
  } else if (type === "security.scan") {
    sec.events++;
    // The tab shows one scanner: its reports change; so do queued scans' rows.
    if (e.scan?.scanner === sec.scanner && (secVisible() || sec.queued.size)) reloadSecuritySoon();
  } else if (type === "alert.firing" || type === "alert.resolved") {
    alerts.events++;
    if (alertsVisible()) reloadAlertsSoon();
  }
}

// --------------------------------------------------------------------------- create ----
let catalog = { osTypes: [], stacks: [] };
async function loadCatalog() {
  try { catalog = await state.server.get("/v1/catalog"); } catch { catalog = { osTypes: [], stacks: [] }; }
}

async function openCreate() {
  await loadCatalog();
  const form = $("#create-form");
  form.reset();
  $("#create-steps").replaceChildren();
  $("#create-error").textContent = "";
  $("#create-submit").disabled = false;
  $("#paste-label").hidden = true;
  form.osType.replaceChildren(el("option", { value: "" }, `default (${catalog.defaultImage ?? "node default"})`),
    ...(catalog.osTypes ?? []).map((o) => el("option", { value: o }, o)));
  form.stack.replaceChildren(el("option", { value: "" }, "none"),
    ...(catalog.stacks ?? []).map((s) => el("option", { value: s.name }, `${s.name}: ${s.description}`)));
  form.node.replaceChildren(el("option", { value: "" }, "Let the scheduler choose"),
    ...state.nodes.filter((n) => n.healthy && !n.draining).map((n) => el("option", { value: n.name }, n.name)));
  if (!(await canGenerate())) {
    form.keymode.value = "paste";
    $("#paste-label").hidden = false;
    $("#keygen-note").textContent = "This browser cannot make Ed25519 keys: paste a public key.";
  }
  $("#create-dialog").showModal();
  explain();
}

// The request as the API's CreateContainerRequest (proto3 JSON): the OS types the catalog
// offers are the node's configured names (os); sizes go under resources.
function createRequest(form) {
  const f = new FormData(form);
  const body = { username: f.get("username").trim(), async: true };
  const text = (k) => (f.get(k) ?? "").trim();
  if (text("osType")) body.os = text("osType");
  for (const k of ["stack", "node"]) if (text(k)) body[k] = text(k);
  const resources = {};
  for (const k of ["cpu", "memory", "disk"]) if (text(k)) resources[k] = text(k);
  if (Object.keys(resources).length) body.resources = resources;
  const gpus = Number(f.get("gpus") || 0);
  if (gpus > 0) body.gpus = gpus;
  return body;
}

let explainTimer = null;
function explain() {
  clearTimeout(explainTimer);
  explainTimer = setTimeout(async () => {
    const box = $("#explain");
    if (!state.admin) { box.textContent = "The scheduler's explanation needs an admin token."; return; }
    const r = createRequest($("#create-form"));
    const q = {};
    for (const k of ["resources", "os", "gpus", "node"]) if (r[k] !== undefined) q[k] = r[k];
    try {
      const x = await state.server.post("/v1/schedule/explain", q);
      box.replaceChildren(el("p", {}, x.chosen ? `The scheduler would choose ${x.chosen}.` : "No node can take it right now."),
        el("table", { class: "list" }, el("thead", {}, el("tr", {}, el("th", {}, "Node"), el("th", {}, "Score"), el("th", {}, "Why"))),
          el("tbody", {}, ...(x.verdicts ?? []).map((v) => el("tr", {}, el("td", {}, v.node), el("td", {}, v.score?.toFixed?.(2) || "–"),
            el("td", {}, v.filteredBecause?.length ? "filtered: " + v.filteredBecause.join(", ")
              : Object.entries(v.scoreParts ?? {}).map(([k, s]) => `${k} ${s.toFixed(1)}`).join(", ")))))));
    } catch (e) { box.textContent = e.message; }
  }, 250);
}

async function submitCreate(event) {
  event.preventDefault();
  const form = event.target;
  if (!form.reportValidity()) return;
  const body = createRequest(form);
  $("#create-error").textContent = "";
  $("#create-steps").replaceChildren();
  $("#create-submit").disabled = true;
  try {
    if (form.keymode.value === "generate") {
      showStep(0, 0, "Generating an Ed25519 key pair in the browser");
      const pair = await generateEd25519(`${body.username}@containarium`);
      download(`id_ed25519_${body.username}`, pair.privateKey);
      body.sshKeys = [pair.publicKey];
      state.lastGeneratedKey = pair.publicKey; // visible to the tests; the private key is not kept
    } else {
      const key = form.sshKey.value.trim();
      if (!key) throw new Error("paste a public key, or let the browser generate one");
      body.sshKeys = [key];
    }
    state.deleted.delete(body.username);
    const op = await state.server.post("/v1/containers", body);
    state.operation = { id: op.id, username: body.username };
    showStep(op.step ?? 0, op.total ?? 0, op.message || "accepted");
    // The event stream reports the steps; poll as a fallback in case it is reconnecting.
    const id = op.id;
    (async () => {
      while (state.operation?.id === id) {
        await new Promise((r) => setTimeout(r, 2000));
        if (state.operation?.id !== id) return;
        try {
          const o = await state.server.get(`/v1/operations/${id}`);
          if (o.state !== "OPERATION_STATE_RUNNING") finishOperation(o.state === "OPERATION_STATE_SUCCEEDED" ? "succeeded" : "failed", o.error?.message);
        } catch { /* keep waiting */ }
      }
    })();
  } catch (e) {
    $("#create-error").textContent = e.message;
    $("#create-submit").disabled = false;
  }
}

function showStep(step, total, message) {
  const list = $("#create-steps");
  for (const li of list.children) li.classList.add("done");
  list.append(el("li", {}, total ? `[${step}/${total}] ${message}` : message));
}

function finishOperation(result, error) {
  if (!state.operation) return;
  const { username } = state.operation;
  state.operation = null;
  const list = $("#create-steps");
  for (const li of list.children) li.classList.add("done");
  if (result === "succeeded") {
    list.append(el("li", { class: "done" }, `Created ${username}-container`));
    refreshOne(username);
  } else {
    list.append(el("li", { class: "failed" }, `Failed: ${error ?? "unknown error"}`));
    $("#create-error").textContent = error ?? "the create failed";
    $("#create-submit").disabled = false;
  }
}

// ------------------------------------------------------------ resize, delete, people ----
let target = null;
function openResize(u) {
  target = u;
  const c = state.envs.get(u);
  const form = $("#resize-form");
  form.reset();
  form.cpu.placeholder = c?.resources?.cpu || "unchanged";
  form.memory.placeholder = c?.resources?.memory || "unchanged";
  form.disk.placeholder = c?.resources?.disk || "unchanged";
  $(".error", form).textContent = "";
  $("#resize-title").textContent = `Resize ${u}-container`;
  $("#resize-dialog").showModal();
}
async function submitResize(event) {
  event.preventDefault();
  const f = new FormData(event.target), body = {};
  const resources = {};
  for (const k of ["cpu", "memory", "disk"]) { const v = f.get(k).trim(); if (v) resources[k] = v; }
  try {
    const c = await state.server.put(`/v1/containers/${target}/resize`, { resources });
    state.envs.set(target, c);
    patchEnvironment(target);
    $("#resize-dialog").close();
    toast(`Resized ${c.name}`);
  } catch (e) { $(".error", event.target).textContent = e.message; }
}

function confirmDelete(u) {
  const d = $("#confirm-dialog");
  $("#confirm-title").textContent = `Delete ${u}-container?`;
  $("#confirm-text").textContent = `The environment, its home directory and everything in it are removed. This cannot be undone.`;
  d.returnValue = "";
  d.onclose = async () => {
    if (d.returnValue !== "yes") return;
    try {
      state.deleted.set(u, Date.now());
      await state.server.del(`/v1/containers/${u}`);
      state.deleted.set(u, Date.now());
      state.envs.delete(u);
      patchEnvironment(u);
      if (state.selected === u) closeDetail();
      toast(`Deleted ${u}-container`);
    } catch (e) { state.deleted.delete(u); fail(e); }
  };
  d.showModal();
}

async function openCollaborators(u) {
  target = u;
  const form = $("#collab-form");
  form.reset();
  $(".error", form).textContent = "";
  $("#collab-title").textContent = `Collaborators on ${u}-container`;
  await listCollaborators();
  $("#collab-dialog").showModal();
}
async function listCollaborators() {
  const list = $("#collab-list");
  try {
    const r = await state.server.get(`/v1/containers/${target}/collaborators`);
    list.replaceChildren(...(r.collaborators.length ? r.collaborators.map((c) => el("li", {}, `${c.collaboratorUsername} (${c.sudo ? "full sudo" : "su to owner"}, added by ${c.addedBy}) `,
      el("button", { type: "button", class: "ghost", "aria-label": `Remove ${c.collaboratorUsername}`, onclick: async () => {
        try { await state.server.del(`/v1/containers/${target}/collaborators/${c.collaboratorUsername}`); await listCollaborators(); } catch (e) { fail(e); }
      } }, "Remove"))) : [el("li", { class: "muted" }, "No collaborators.")]));
  } catch (e) { list.replaceChildren(el("li", { class: "error" }, e.message)); }
}
async function addCollaborator(event) {
  event.preventDefault();
  const f = new FormData(event.target);
  try {
    await state.server.post(`/v1/containers/${target}/collaborators`, {
      collaboratorUsername: f.get("collaboratorUsername").trim(), sshPublicKey: f.get("sshPublicKey").trim(), sudo: f.get("sudo") === "on" });
    event.target.reset();
    $(".error", event.target).textContent = "";
    await listCollaborators();
  } catch (e) { $(".error", event.target).textContent = e.message; }
}

async function showSSHConfig(u) {
  try {
    const text = await state.server.get(`/v1/containers/${u}/ssh-config`);
    $("#ssh-config").textContent = typeof text === "string" ? text : text.config;
    $("#ssh-title").textContent = `SSH config for ${u}`;
    $("#ssh-dialog").showModal();
  } catch (e) { fail(e); }
}

// ------------------------------------------------------------------------- terminal ----
let term = null, socket = null;
function openTerminal(u) {
  const d = $("#term-dialog");
  $("#term-title").textContent = `Terminal: ${u}-container`;
  $("#term-status").textContent = "connecting…";
  d.showModal();
  const box = $("#terminal");
  box.replaceChildren();
  term = new window.Terminal({ cursorBlink: true, fontFamily: "DejaVu Sans Mono, monospace", fontSize: 14 });
  term.open(box);
  window.XtermFit.fit(term);
  socket = state.server.terminal(u, term.cols, term.rows);
  const decoder = new TextDecoder(), encoder = new TextEncoder();
  const ws = socket;
  ws.onopen = () => { $("#term-status").textContent = `connected as ${u}`; term.focus(); };
  ws.onmessage = (m) => {
    if (typeof m.data === "string") {
      const msg = JSON.parse(m.data);
      if (msg.type === "exit") $("#term-status").textContent = `session ended (exit ${msg.status ?? msg.signal ?? "?"})`;
      if (msg.type === "error") { $("#term-status").textContent = `error: ${msg.message}`; $("#term-status").dataset.final = "1"; }
    } else {
      term.write(decoder.decode(new Uint8Array(m.data), { stream: true }));
    }
  };
  ws.onclose = () => { if (!/ended|error/.test($("#term-status").textContent)) $("#term-status").textContent = "closed"; };
  term.on("data", (data) => { if (ws.readyState === WebSocket.OPEN) ws.send(encoder.encode(data)); });
  term.on("resize", ({ cols, rows }) => { if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "resize", cols, rows })); });
  window.containarium.term = term;
}
function closeTerminal() {
  socket?.close(1000, "closed by the user");
  socket = null;
  term?.destroy();
  term = null;
  $("#term-dialog").close();
}
window.addEventListener("resize", () => { if (term) window.XtermFit.fit(term); });

// --------------------------------------------------------------------- VM screen (VNC) ----
// noVNC (Debian's, loaded only when a screen is opened) over /v1/containers/{u}/vnc: the
// daemon relays the VM's VNC server, on its node or another; the token travels as a
// WebSocket subprotocol, as for the terminal.
let rfb = null;
async function openScreen(u) {
  const d = $("#vnc-dialog");
  $("#vnc-title").textContent = `Screen: ${u}-container`;
  $("#vnc-status").textContent = "connecting…";
  d.showModal();
  const box = $("#vnc-screen");
  box.replaceChildren();
  try {
    const { default: RFB } = await import("./vendor/novnc/core/rfb.js");
    const { url, protocols } = state.server.vnc(u);
    rfb = new RFB(box, url, { wsProtocols: protocols });
    rfb.scaleViewport = true;
    rfb.focusOnClick = true;
    rfb.addEventListener("connect", () => { $("#vnc-status").textContent = `connected to ${u}-container`; rfb.focus(); });
    rfb.addEventListener("disconnect", (e) => { $("#vnc-status").textContent = e.detail.clean ? "closed" : "disconnected"; });
    rfb.addEventListener("securityfailure", (e) => { $("#vnc-status").textContent = `refused: ${e.detail.reason ?? "security"}`; });
    window.containarium.rfb = rfb;
  } catch (e) {
    $("#vnc-status").textContent = `error: ${e.message}`;
  }
}
function closeScreen() {
  rfb?.disconnect();
  rfb = null;
  $("#vnc-dialog").close();
}

// -------------------------------------------------------------------------- metrics ----
function closeDetail() {
  state.selected = null;
  $("#detail").hidden = true;
  for (const c of Object.values(state.charts)) c.destroy();
  state.charts = {};
}
function renderDetailActions() {
  const c = state.envs.get(state.selected);
  if (c) $("#detail-actions").replaceChildren(actions(c));
}
async function openDetail(u) {
  closeDetail();
  state.selected = u;
  $("#detail-title").textContent = `${u}-container: the last hour`;
  $("#detail").hidden = false;
  renderDetailActions();
  await drawMetrics(u);
  $("#detail").scrollIntoView({ block: "nearest" });
}
function lineChart(id, label, points, color, limit) {
  const ctx = $(id);
  state.charts[id]?.destroy();
  const datasets = [{ label, data: points.map((p) => p.v), borderColor: color, backgroundColor: color, pointRadius: 0, tension: 0.2 }];
  if (limit !== undefined) datasets.push({ label: "capacity", data: points.map(() => limit), borderColor: "#a40e26", borderDash: [6, 4], pointRadius: 0 });
  state.charts[id] = new window.Chart(ctx, {
    type: "line",
    data: { labels: points.map((p) => p.t), datasets },
    options: { animation: false, responsive: true, maintainAspectRatio: false, plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } } },
  });
}
async function drawMetrics(u) {
  let samples = [];
  try { samples = (await state.server.get(`/v1/containers/${u}/metrics`)).samples ?? []; } catch (e) { fail(e); }
  const t = (s) => new Date(s.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  lineChart("#chart-cpu", "CPU %", samples.map((s) => ({ t: t(s), v: s.cpuPercent ?? 0 })), "#0b5cad");
  lineChart("#chart-mem", "Memory MiB", samples.map((s) => ({ t: t(s), v: (s.memoryBytes ?? 0) / MiB })), "#116329");
  lineChart("#chart-disk", "Disk MiB", samples.map((s) => ({ t: t(s), v: (s.diskBytes ?? 0) / MiB })), "#8a4b00");
  lineChart("#chart-net", "KiB/s", samples.map((s) => ({ t: t(s), v: ((s.rxBytesPerSecond ?? 0) + (s.txBytesPerSecond ?? 0)) / 1024 })), "#6a1b9a");
}

// ---------------------------------------------------------------------------- nodes ----
async function loadNodes() {
  const server = state.server;
  try {
    state.nodes = (await server.get("/v1/nodes")).nodes ?? [];
    state.admin = true;
  } catch (e) {
    state.nodes = [];
    state.admin = false;
  }
  if (state.server !== server) return;
  syncAdminViews();
  renderNodes();
  if (state.admin) {
    try {
      const m = await server.get("/v1/metrics/node");
      const t = (x) => new Date(x.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
      lineChart("#chart-node-cpu", "CPU %", (m.samples ?? []).map((x) => ({ t: t(x), v: x.cpuPercent })), "#0b5cad", (m.capacity?.cpus ?? 0) * 100);
      lineChart("#chart-node-mem", "Memory GiB", (m.samples ?? []).map((x) => ({ t: t(x), v: x.memoryBytes / GiB })), "#116329", (m.capacity?.memoryBytes ?? 0) / GiB);
    } catch { /* shown as empty charts */ }
  }
  try {
    const plugins = (await server.get("/v1/plugins")).plugins ?? [];
    $("#plugins-table tbody").replaceChildren(...plugins.map((p) => el("tr", {},
      el("th", { scope: "row" }, p.id ?? p.name), el("td", {}, p.version || "–"), el("td", {}, p.abi || "–"),
      el("td", {}, (p.capabilities ?? []).join(", ")), el("td", {}, p.state || p.status || "–"))));
  } catch (e) {
    $("#plugins-table tbody").replaceChildren(el("tr", {}, el("td", { colspan: "5" }, e.message)));
  }
}
function meter(label, used, cap, fmt) {
  const pct = cap ? Math.min(100, (used / cap) * 100) : 0;
  const span = el("span");
  span.style.width = pct + "%";
  return [el("span", {}, label), el("div", { class: "bar", role: "img", "aria-label": `${label} ${pct.toFixed(0)}% reserved` }, span),
    el("span", {}, `${fmt(used)} of ${fmt(cap)}`)];
}
function renderNodes() {
  const box = $("#nodes");
  if (!state.admin) { box.replaceChildren(el("p", { class: "muted" }, "Nodes are shown to admin tokens.")); return; }
  const cores = (m) => (m / 1000).toFixed(1) + " CPU";
  box.replaceChildren(el("h2", {}, "Nodes"), ...state.nodes.map((n) => el("article", { class: "nodecard", "aria-label": `Node ${n.name}` },
    el("h3", {}, n.name, el("span", { class: `badge ${n.healthy ? "running" : "error"}` }, n.healthy ? "healthy" : "unhealthy"),
      n.draining ? el("span", { class: "badge stopped" }, "draining") : null, n.local ? el("span", { class: "muted" }, "(this daemon)") : null),
    el("p", { class: "muted" }, `kinds ${n.kinds.join(", ")} · ${n.environments} environments` + (n.pool ? ` · pool ${n.pool}` : "") +
      (n.preemptible ? " · preemptible" : "") + (n.sshGateway ? ` · SSH gateway ${n.sshGateway}` : "") +
      (Object.keys(n.labels ?? {}).length ? " · " + Object.entries(n.labels).map(([k, v]) => `${k}=${v}`).join(", ") : "")),
    el("div", { class: "meters" },
      ...meter("CPU", n.used.cpuMillis, n.capacity.cpuMillis, cores),
      ...meter("Memory", n.used.memoryBytes, n.capacity.memoryBytes, bytes),
      ...meter("Disk", n.used.diskBytes, n.capacity.diskBytes, bytes)),
    n.gpus?.length ? el("p", {}, "GPUs: " + n.gpus.map((g) => `${g.model} at ${g.pciAddress}` + (g.attachedTo ? ` (${g.attachedTo})` : " (free)")).join("; ")) : null,
    (n.plugins ?? []).length ? el("p", { class: "muted" }, "Plugins: " + n.plugins.map((p) => `${p.id} ${p.version} (ABI ${p.abi}, ${p.state})`).join("; ")) : null,
    el("div", { class: "actions" }, el("button", { type: "button", onclick: () => drain(n.name, !n.draining) }, n.draining ? "Undrain" : "Drain")))));
}
async function drain(name, on) {
  try {
    await state.server.post(`/v1/nodes/${name}/${on ? "drain" : "undrain"}`);
    await loadNodes();
  } catch (e) { fail(e); }
}

// ---------------------------------------------------------------------------- audit ----
async function loadAudit(event) {
  event?.preventDefault();
  const f = new FormData($("#audit-filters"));
  const q = new URLSearchParams({ limit: "200" });
  for (const k of ["actor", "action", "target", "result"]) { const v = f.get(k).trim(); if (v) q.set(k, v); }
  const since = f.get("since");
  if (since) q.set("since", new Date(since).toISOString().replace(/\.\d+Z$/, "Z"));
  const body = $("#audit-table tbody");
  try {
    const entries = (await state.server.get(`/v1/audit?${q}`)).entries ?? [];
    body.replaceChildren(...entries.map((a) => el("tr", {}, el("td", {}, new Date(a.at).toLocaleString()), el("td", {}, a.actor), el("td", {}, a.action),
      el("td", {}, a.target), el("td", {}, el("span", { class: `badge ${a.result === "ok" ? "running" : "error"}` }, a.result)), el("td", {}, a.source), el("td", {}, a.detail))));
  } catch (e) {
    body.replaceChildren(el("tr", {}, el("td", { colspan: "7" }, e.status === 403 ? "The audit log is shown to admin tokens." : e.message)));
  }
}

// ------------------------------------------------------------------------- security ----
// The scanners' reports (/v1/security/{clamav,trivy}-…): the latest report of each
// environment, its history when expanded, "Scan now" (async; the security.scan event, or a
// slow poll while the stream is down, brings the report), "Scan all" (admins), CSV export.
const SCANNERS = { clamav: "ClamAV", trivy: "Trivy" };
const STATUSES = ["clean", "findings", "incomplete", "failed"];
const SEVERITY = { critical: 0, high: 1, medium: 2, low: 3 };
const sec = {
  scanner: "clamav",
  summary: null,         // the scanner's SecuritySummary, or null before it loads
  error: null,           // why the summary did not load
  seq: 0,                // answers to an older request are dropped
  queued: new Map(),     // `${scanner}:${username}` -> the latest report id when it was asked for
  open: null,            // the environment whose reports are expanded
  history: null,         // {username, scanner, reports} or {username, scanner, error} of `open`
  openReports: new Set(),// report ids whose <details> are open
  events: 0,             // security.scan events seen (the tests read it)
  reloadTimer: null,
  watching: false,
};
state.security = sec;

const secVisible = () => !$("#view-security").hidden;
const secName = (u) => state.envs.get(u)?.name || `${u}-container`;
const when = (t) => (t ? new Date(t).toLocaleString() : "–");
const secLatest = () => new Map((sec.summary?.latest ?? []).map((r) => [r.username, r]));

function resetSecurity() {
  sec.seq++;
  sec.summary = null;
  sec.error = null;
  sec.queued.clear();
  sec.open = null;
  sec.history = null;
  sec.openReports.clear();
}

async function loadSecurity() {
  const server = state.server, scanner = sec.scanner, seq = ++sec.seq;
  if (!server) return;
  try {
    const summary = await server.get(`/v1/security/${scanner}-summary`);
    if (seq !== sec.seq || state.server !== server) return;
    sec.summary = summary;
    sec.error = null;
  } catch (e) {
    if (seq !== sec.seq || state.server !== server) return;
    sec.summary = null;
    sec.error = e;
  }
  if (sec.open) await loadHistory(sec.open, false);
  renderSecurity();
}

/** Reload soon (a round of scans sends an event per environment: one reload for them all). */
function reloadSecuritySoon() {
  clearTimeout(sec.reloadTimer);
  sec.reloadTimer = setTimeout(loadSecurity, 300);
}

async function loadHistory(u, render = true) {
  const server = state.server, scanner = sec.scanner;
  let history;
  try {
    const r = await server.get(`/v1/security/${scanner}-reports?${new URLSearchParams({ username: u, limit: "20" })}`);
    history = { username: u, scanner, reports: r.reports ?? [] };
  } catch (e) {
    history = { username: u, scanner, error: e };
  }
  if (state.server !== server || sec.scanner !== scanner || sec.open !== u) return;
  sec.history = history;
  if (render) renderSecurity();
}

/** Queued scans whose report has come (the latest report is another one now) are done. */
function settleQueued() {
  if (!sec.summary) return;
  const latest = secLatest(), done = [];
  for (const [key, before] of sec.queued) {
    const [scanner, u] = key.split(":");
    const r = scanner === sec.scanner ? latest.get(u) : null;
    if (r && r.id !== before) {
      sec.queued.delete(key);
      done.push(r);
    }
  }
  const label = SCANNERS[sec.scanner];
  if (done.length > 3) {
    // A round (Scan all): one toast, not one per environment.
    const by = {};
    for (const r of done) by[r.status] = (by[r.status] ?? 0) + 1;
    toast(`${label}: ${done.length} scans ended (` + Object.entries(by).map(([k, n]) => `${n} ${k}`).join(", ") + ")", done.some((r) => r.status !== "clean"));
  } else {
    for (const r of done) {
      toast(`${label} scan of ${secName(r.username)}: ${r.status}` + (r.findingsCount ? ` (${r.findingsCount} findings)` : ""), r.status !== "clean");
    }
  }
}

function secRowsData() {
  const latest = secLatest();
  const names = new Set([...state.envs.keys(), ...latest.keys()]);
  const rows = [...names].map((u) => ({ username: u, report: latest.get(u) ?? null, env: state.envs.get(u) ?? null }));
  // Newest report first; environments never scanned after them, by name.
  const t = (r) => (r.report?.startedAt ? Date.parse(r.report.startedAt) : -Infinity);
  rows.sort((a, b) => (t(b) - t(a)) || a.username.localeCompare(b.username));
  return rows;
}

function renderSecurity() {
  settleQueued();
  const label = SCANNERS[sec.scanner];
  const active = document.activeElement;
  const focusKey = active?.closest?.("#view-security") ? active.dataset.key : undefined;
  $("#sec-scan-all").hidden = !state.admin;
  const s = sec.summary;
  const summary = $("#sec-summary");
  if (sec.error) {
    summary.textContent = "";
    const e = sec.error;
    $("#sec-error").textContent = `Could not load the ${label} reports: ${e.message}` +
      (e.status === 404 ? " (this daemon has no security routes: update it)" : e.status === 0 ? " (check the address and that the daemon runs, then Refresh)" : "");
  } else {
    $("#sec-error").textContent = "";
    if (!s) summary.textContent = `Loading the ${label} reports…`;
    else if (!s.environments) {
      summary.textContent = `${label}: no scans yet.` + (!state.envs.size ? ""
        : state.admin ? " Scan now scans one environment; Scan all scans every one." : " Scan now scans an environment.");
    }
    else {
      summary.textContent = `${label}: ${s.environments} environment${s.environments === 1 ? "" : "s"} scanned, ` +
        `${s.clean ?? 0} clean, ${s.withFindings ?? 0} with findings, ${s.incomplete ?? 0} incomplete, ${s.failed ?? 0} failed; ` +
        `${s.findings ?? 0} finding${s.findings === 1 ? "" : "s"} in the latest reports; last scan ${when(s.lastScanAt)}.`;
    }
  }
  const all = secRowsData();
  const node = (r) => r.report?.node || r.env?.node || "";
  // Per node: how the latest reports of its environments went.
  const perNode = new Map();
  for (const r of all) {
    const n = node(r) || "unknown";
    const c = perNode.get(n) ?? { environments: 0, none: 0, clean: 0, findings: 0, incomplete: 0, failed: 0 };
    c.environments++;
    c[r.report ? (STATUSES.includes(r.report.status) ? r.report.status : "failed") : "none"]++;
    perNode.set(n, c);
  }
  fillSelect($("#sec-node"), new Set(all.map(node).filter(Boolean)));
  $("#sec-nodes").replaceChildren(...(s ? [...perNode.keys()].sort() : []).map((n) => {
    const c = perNode.get(n);
    const parts = [["clean", c.clean], ["with findings", c.findings], ["incomplete", c.incomplete], ["failed", c.failed], ["not scanned", c.none]]
      .filter(([, k]) => k).map(([w, k]) => `${k} ${w}`);
    return el("li", { dataset: { node: n } }, el("strong", {}, n), `: ${c.environments} environment${c.environments === 1 ? "" : "s"}` + (parts.length ? ` (${parts.join(", ")})` : ""));
  }));
  const fNode = $("#sec-node").value, fStatus = $("#sec-status").value;
  const shown = !s ? [] : all.filter((r) => (!fNode || node(r) === fNode) && (!fStatus || (r.report?.status ?? "none") === fStatus));
  const rows = [];
  for (const r of shown) {
    rows.push(secRow(r, node(r)));
    if (sec.open === r.username) rows.push(secDetailRow(r.username));
  }
  $("#sec-table tbody").replaceChildren(...rows);
  $("#sec-table").hidden = shown.length === 0;
  const empty = $("#sec-empty");
  empty.hidden = shown.length > 0 || !s;
  empty.textContent = all.length === 0
    ? "No environments yet: create one under Environments, then scan it here."
    : "No environment matches these filters: choose another node or status.";
  if (focusKey) document.querySelector(`#view-security [data-key="${CSS.escape(focusKey)}"]`)?.focus();
}

function statusBadge(status) {
  const known = [...STATUSES, "queued", "none"].includes(status);
  return el("span", { class: `badge scan-${known ? status : "failed"}` }, status === "none" ? "not scanned" : status);
}

function secRow({ username: u, report: r, env }, node) {
  const name = secName(u), queued = sec.queued.has(`${sec.scanner}:${u}`);
  const open = sec.open === u;
  const status = el("td", {}, statusBadge(r?.status ?? "none"));
  if (queued) status.append(" ", statusBadge("queued"));
  if (r?.status === "failed" && r.error) status.append(el("div", { class: "scan-error" }, r.error));
  if (r?.status === "incomplete") status.append(el("div", { class: "muted" }, "a check could not run: see Reports"));
  return el("tr", { dataset: { username: u, status: r?.status ?? "none" } },
    el("th", { scope: "row" }, name, env ? null : el("div", { class: "muted" }, "the environment is gone")),
    status,
    el("td", {}, r && r.status !== "failed" ? String(r.findingsCount ?? 0) : "–"),
    el("td", {}, node || "–"),
    el("td", {}, r ? when(r.startedAt) : "–"),
    el("td", {}, r?.trigger || "–"),
    el("td", {}, el("div", { class: "actions" },
      el("button", { type: "button", "aria-label": `Reports ${name}`, "aria-expanded": String(open), "aria-controls": `sec-detail-${u}`,
        dataset: { key: `open:${u}` }, onclick: () => toggleReports(u) }, open ? "Hide reports" : "Reports"),
      // While queued it stays focusable (aria-disabled), so a keyboard user's focus stays put.
      el("button", { type: "button", "aria-label": `Scan now ${name}`, dataset: { key: `scan:${u}` }, "aria-disabled": queued ? "true" : null,
        disabled: !env, onclick: () => { if (!sec.queued.has(`${sec.scanner}:${u}`)) scanNow(u); } }, queued ? "Queued…" : "Scan now"))));
}

function secDetailRow(u) {
  const h = sec.history;
  let body;
  if (!h || h.username !== u || h.scanner !== sec.scanner) body = [el("p", { class: "muted" }, "Loading the reports…")];
  else if (h.error) body = [el("p", { class: "error" }, `Could not load the reports: ${h.error.message}`)];
  else if (!h.reports.length) body = [el("p", { class: "muted" }, `No ${SCANNERS[sec.scanner]} scans of ${secName(u)} yet: Scan now runs one.`)];
  else {
    const [latest, ...older] = h.reports;
    body = [el("h3", {}, `Latest report (${when(latest.startedAt)})`), reportView(latest)];
    if (older.length) {
      body.push(el("h3", {}, "Earlier reports, newest first"), ...older.map((r) => {
        const d = el("details", { open: sec.openReports.has(r.id), dataset: { report: r.id } },
          el("summary", {}, statusBadge(r.status), ` ${when(r.startedAt)} · ${r.findingsCount ?? 0} findings · ${r.trigger || "–"} · ${r.node || "–"}`),
          reportView(r));
        d.addEventListener("toggle", () => { if (d.open) sec.openReports.add(r.id); else sec.openReports.delete(r.id); });
        return d;
      }));
    }
  }
  return el("tr", { class: "sec-detail" }, el("td", { colspan: "7", id: `sec-detail-${u}`, role: "region", "aria-label": `${SCANNERS[sec.scanner]} reports of ${secName(u)}` }, ...body));
}

/** One report: what failed or could not run, stated plainly, then its findings. */
function reportView(r) {
  const box = el("div", { class: "report", dataset: { report: r.id } });
  if (r.status === "failed") box.append(el("p", { class: "error" }, `Scan failed: ${r.error || "no reason given"}`));
  const dbs = Object.entries(r.databases ?? {});
  for (const [kind, d] of dbs.filter(([, d]) => d.status !== "ok")) {
    box.append(el("p", { class: "warn" }, `The ${kind} database is ${d.status || "not ready"}` + (d.detail ? `: ${d.detail}` : "") +
      `. The ${kind} check did not run, so this report says nothing about ${kind}.`));
  }
  if (r.notes?.length) box.append(el("ul", { class: "notes", "aria-label": "Notes" }, ...r.notes.map((n) => el("li", {}, n))));
  const facts = [];
  if (r.scannerVersion) facts.push(`${r.scanner || SCANNERS[sec.scanner]} ${r.scannerVersion}`);
  if (r.filesScanned !== undefined) facts.push(`${Number(r.filesScanned)} files`);
  if (r.bytesScanned !== undefined) facts.push(bytes(Number(r.bytesScanned)));
  if (r.durationMs !== undefined) facts.push(`${(Number(r.durationMs) / 1000).toFixed(1)} s`);
  const ok = dbs.filter(([, d]) => d.status === "ok").map(([k, d]) => `${k} database ${d.version || "ok"}`);
  facts.push(...ok);
  facts.push(`${r.trigger || "–"} scan on ${r.node || "–"}`, `report ${r.id}`);
  box.append(el("p", { class: "muted" }, facts.join(" · ")));
  const findings = [...(r.findings ?? [])].sort((a, b) => (SEVERITY[a.severity] ?? 4) - (SEVERITY[b.severity] ?? 4));
  if (!findings.length) {
    if (r.status === "clean") box.append(el("p", {}, "Nothing found."));
    return box;
  }
  box.append(el("table", { class: "list findings" },
    el("caption", { class: "sr-only" }, `Findings of report ${r.id}, most severe first`),
    el("thead", {}, el("tr", {}, ...["Path", "Rule", "Category", "Severity", "Title or package"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, ...findings.map((f) => el("tr", {},
      el("td", { class: "path" }, f.path + (f.line ? `:${f.line}` : "")),
      el("td", {}, f.rule || "–"),
      el("td", {}, f.category || "–"),
      el("td", {}, f.severity ? el("span", { class: `badge sev-${SEVERITY[f.severity] !== undefined ? f.severity : "other"}` }, f.severity) : "–"),
      el("td", {}, [f.title, f.package ? `${f.package} ${f.installedVersion || ""}` + (f.fixedVersion ? ` (fixed in ${f.fixedVersion})` : "") : ""]
        .filter(Boolean).join(" · ") || "–"))))));
  return box;
}

function toggleReports(u) {
  if (sec.open === u) { sec.open = null; sec.history = null; renderSecurity(); return; }
  sec.open = u;
  sec.history = null;
  renderSecurity();
  loadHistory(u);
}

async function scanNow(u) {
  const scanner = sec.scanner, key = `${scanner}:${u}`;
  sec.queued.set(key, secLatest().get(u)?.id ?? "");
  renderSecurity();
  try {
    await state.server.post(`/v1/security/${scanner}-scan`, { username: u, async: true });
    toast(`${SCANNERS[scanner]} scan of ${secName(u)} queued`);
    watchQueued();
  } catch (e) {
    sec.queued.delete(key);
    renderSecurity();
    fail(e);
  }
}

async function scanAll() {
  const scanner = sec.scanner, before = secLatest();
  const button = $("#sec-scan-all");
  button.disabled = true;
  try {
    const r = await state.server.post(`/v1/security/${scanner}-scan`, { all: true, async: true });
    for (const u of r.queued ?? []) sec.queued.set(`${scanner}:${u}`, before.get(u)?.id ?? "");
    toast(`${SCANNERS[scanner]}: ${(r.queued ?? []).length} environments queued`);
    renderSecurity();
    watchQueued();
  } catch (e) { fail(e); } finally { button.disabled = false; }
}

/** The events bring the reports; while the stream is down (or an event was missed), poll. */
async function watchQueued() {
  if (sec.watching) return;
  sec.watching = true;
  const server = state.server;
  let since = 0;
  try {
    while (sec.queued.size && state.server === server) {
      await new Promise((r) => setTimeout(r, 1000));
      since += 1000;
      const live = $("#server-status").dataset.live === "yes";
      if (since >= (live ? 20_000 : 5_000)) { since = 0; await loadSecurity(); }
    }
  } finally { sec.watching = false; }
}

async function exportCSV() {
  const scanner = sec.scanner;
  try {
    const text = await state.server.getText(`/v1/security/${scanner}-reports.csv`);
    download(`${scanner}-reports-${new Date().toISOString().slice(0, 10)}.csv`, text);
  } catch (e) { fail(e); }
}

// --------------------------------------------------------------------------- alerts ----
// Built-in alerting (/v1/alerts, /v1/alert-deliveries, /v1/system/alerting; admins only):
// the rules with what fires now, "Add a rule", Test, Enable/Disable and Delete per rule; the
// webhooks (edited here, sent with "Save webhooks": a secret is write-only, and one left blank
// keeps the webhook's current secret); the delivery log; links to Grafana and Prometheus
// (/v1/system/monitoring). The alert.firing and alert.resolved events reload it.
const METRICS = ["environment_memory_percent", "environment_disk_percent", "environment_cpu_percent", "environment_processes",
  "node_unhealthy", "node_memory_percent", "node_disk_percent", "scan_findings"];
const OPERATORS = [">", ">=", "<", "<="];
const SEVERITIES = ["info", "warning", "critical"];
const FORMATS = ["generic", "slack", "zulip"];
const alerts = {
  rules: null,           // the rules, or null before they load
  error: null,           // why the rules did not load
  deliveries: null,      // the newest 50 tries
  deliveriesError: null,
  config: null,          // AlertingConfig as saved
  configError: null,
  monitoring: null,      // MonitoringInfo
  monitoringError: null,
  draft: [],             // the webhooks as edited here (a typed secret is kept only until Save)
  dirty: false,          // the draft or the retry settings differ from what is saved
  testing: new Set(),    // rules whose test is under way
  seq: 0,                // answers to an older request are dropped
  events: 0,             // alert.firing and alert.resolved events seen (the tests read it)
  reloadTimer: null,
};
state.alerts = alerts;

const alertsVisible = () => !$("#view-alerts").hidden;
const ruleState = (r) => {
  const inst = r.instances ?? [];
  const firing = inst.filter((i) => i.state === "firing").length, pending = inst.filter((i) => i.state === "pending").length;
  return { firing, pending, state: r.disabled ? "disabled" : firing ? "firing" : pending ? "pending" : "ok" };
};
const num = (v) => String(Math.round(Number(v ?? 0) * 100) / 100);
const condition = (r) => `${r.metric} ${r.operator} ${Number(r.threshold ?? 0)} for ${r.duration || "0s"}`;

/** The Alerts tab is offered to admin tokens only (the routes answer 403 to others). */
function syncAdminViews() {
  $("#alerts-tab-item").hidden = !state.admin;
  if (!state.admin && alertsVisible()) showView("envs");
}

function resetAlerts() {
  alerts.seq++;
  clearTimeout(alerts.reloadTimer);
  Object.assign(alerts, { rules: null, error: null, deliveries: null, deliveriesError: null, config: null, configError: null,
    monitoring: null, monitoringError: null, draft: [], dirty: false });
  alerts.testing.clear();
}

async function loadAlerts() {
  const server = state.server, seq = ++alerts.seq;
  if (!server) return;
  const settle = (p) => p.then((value) => ({ value }), (error) => ({ error }));
  const rules = await settle(server.get("/v1/alerts"));
  if (seq !== alerts.seq || state.server !== server) return;
  alerts.rules = rules.error ? null : (rules.value.rules ?? []);
  alerts.error = rules.error ?? null;
  if (!rules.error) {
    const [deliveries, config, monitoring] = await Promise.all([settle(server.get("/v1/alert-deliveries?limit=50")),
      settle(server.get("/v1/system/alerting")), settle(server.get("/v1/system/monitoring"))]);
    if (seq !== alerts.seq || state.server !== server) return;
    alerts.deliveries = deliveries.error ? alerts.deliveries : (deliveries.value.deliveries ?? []);
    alerts.deliveriesError = deliveries.error ?? null;
    alerts.configError = config.error ?? null;
    if (!config.error) applyAlertingConfig(config.value, false);
    alerts.monitoring = monitoring.error ? null : monitoring.value;
    alerts.monitoringError = monitoring.error ?? null;
  }
  renderAlerts();
}

async function loadDeliveries() {
  const server = state.server;
  try {
    const r = await server.get("/v1/alert-deliveries?limit=50");
    if (state.server !== server) return;
    alerts.deliveries = r.deliveries ?? [];
    alerts.deliveriesError = null;
  } catch (e) {
    if (state.server !== server) return;
    alerts.deliveriesError = e;
  }
  renderAlerts();
}

/** Reload soon (a round of evaluations can fire or resolve many targets: one reload for them all). */
function reloadAlertsSoon() {
  clearTimeout(alerts.reloadTimer);
  alerts.reloadTimer = setTimeout(loadAlerts, 300);
}

/** The saved config; the draft follows it unless it has unsaved changes (or `force`, after a Save). */
function applyAlertingConfig(config, force) {
  alerts.config = config;
  if (alerts.dirty && !force) return;
  alerts.draft = (config.webhooks ?? []).map((w) => ({ ...w, secret: "" }));
  alerts.dirty = false;
  const form = $("#alerting-form");
  form.maxAttempts.value = String(config.maxAttempts || 5);
  form.initialBackoffSeconds.value = String(config.initialBackoffSeconds || 2);
}

function renderAlerts() {
  const active = document.activeElement;
  const focusKey = active?.closest?.("#view-alerts") ? active.dataset.key : undefined;
  const summary = $("#alerts-summary"), rules = alerts.rules;
  if (alerts.error) {
    summary.textContent = "";
    const e = alerts.error;
    $("#alerts-error").textContent = `Could not load the alert rules: ${e.message}` +
      (e.status === 403 ? " (alerts are shown to admin tokens)" : e.status === 404 ? " (this daemon has no alerting routes: update it)"
        : e.status === 0 ? " (check the address and that the daemon runs, then Refresh)" : "");
  } else {
    $("#alerts-error").textContent = "";
    if (!rules) summary.textContent = "Loading the alert rules…";
    else if (!rules.length) summary.textContent = "No rules yet: add one under Add a rule.";
    else {
      const c = { firing: 0, pending: 0, ok: 0, disabled: 0 };
      for (const r of rules) c[ruleState(r).state]++;
      summary.textContent = `${rules.length} rule${rules.length === 1 ? "" : "s"}: ${c.firing} firing, ${c.pending} pending, ` +
        `${c.ok} ok, ${c.disabled} disabled.`;
    }
  }
  $("#alerts-body").hidden = !rules || !!alerts.error;
  const sorted = [...(rules ?? [])].sort((a, b) => a.name.localeCompare(b.name));
  const rows = [];
  for (const r of sorted) {
    rows.push(ruleRow(r));
    if ((r.instances ?? []).length) rows.push(instancesRow(r));
  }
  $("#alerts-table tbody").replaceChildren(...rows);
  $("#alerts-table").hidden = sorted.length === 0;
  const empty = $("#alerts-empty");
  empty.hidden = sorted.length > 0;
  empty.textContent = "No rules yet. A rule is a metric, a comparison and a threshold held for a while: add one below.";
  renderRuleWebhooks();
  renderWebhooks();
  renderDeliveries();
  renderMonitoring();
  if (focusKey) document.querySelector(`#view-alerts [data-key="${CSS.escape(focusKey)}"]`)?.focus();
}

function ruleBadges(r) {
  const { firing, pending, state: s } = ruleState(r);
  if (s === "disabled") return [el("span", { class: "badge alert-disabled" }, "disabled")];
  if (s === "ok") return [el("span", { class: "badge alert-ok" }, "ok")];
  const out = [];
  if (firing) out.push(el("span", { class: "badge alert-firing" }, `firing ${firing}`));
  if (pending) out.push(" ", el("span", { class: "badge alert-pending" }, `pending ${pending}`));
  return out;
}

function ruleRow(r) {
  const name = r.name, testing = alerts.testing.has(name);
  const sev = SEVERITIES.includes(r.severity) ? r.severity : "info";
  const hooks = r.webhooks ?? [];
  return el("tr", { dataset: { rule: name, state: ruleState(r).state } },
    el("th", { scope: "row" }, name, r.description ? el("div", { class: "muted" }, r.description) : null),
    el("td", { class: "condition" }, condition(r)),
    el("td", {}, el("span", { class: `badge alert-sev-${sev}` }, r.severity || "info")),
    el("td", {}, r.username || "all", el("div", { class: "muted" }, hooks.length ? `webhooks: ${hooks.join(", ")}` : "every webhook")),
    el("td", {}, ...ruleBadges(r)),
    el("td", {}, el("div", { class: "actions" },
      // While a test runs it stays focusable (aria-disabled), so a keyboard user's focus stays put.
      el("button", { type: "button", "aria-label": `Test ${name}`, dataset: { key: `test:${name}` }, "aria-disabled": testing ? "true" : null,
        onclick: () => testRule(name) }, testing ? "Testing…" : "Test"),
      el("button", { type: "button", "aria-label": `${r.disabled ? "Enable" : "Disable"} ${name}`, dataset: { key: `toggle:${name}` },
        onclick: () => toggleRule(name) }, r.disabled ? "Enable" : "Disable"),
      el("button", { type: "button", class: "danger", "aria-label": `Delete ${name}`, dataset: { key: `delete:${name}` },
        onclick: () => confirmDeleteRule(name) }, "Delete"))));
}

function instancesRow(r) {
  const inst = [...(r.instances ?? [])].sort((a, b) => (a.state === b.state ? a.target.localeCompare(b.target) : a.state === "firing" ? -1 : 1));
  return el("tr", { class: "alert-instances", dataset: { instancesOf: r.name } }, el("td", { colspan: "6" },
    el("ul", { "aria-label": `What ${r.name} fires for now` }, ...inst.map((i) => el("li", { dataset: { target: i.target, state: i.state } },
      el("span", { class: `badge alert-${i.state === "firing" ? "firing" : "pending"}` }, i.state === "firing" ? "firing" : "pending"),
      " ", el("strong", {}, i.target || "–"), `: ${num(i.value)} since ${when(i.since)}`)))));
}

/** The rule form's webhook checkboxes: the saved webhooks (checks survive a redraw). */
function renderRuleWebhooks() {
  const box = $("#rule-webhooks");
  const checked = new Set([...box.querySelectorAll("input:checked")].map((i) => i.value));
  const names = (alerts.config?.webhooks ?? []).map((w) => w.name).sort();
  box.replaceChildren(box.querySelector("legend"), ...(names.length
    ? names.map((n) => {
      // Checked as a property, not an attribute: the form's reset after an add unchecks it.
      const box = el("input", { type: "checkbox", name: "webhooks", value: n });
      box.checked = checked.has(n);
      return el("label", {}, box, ` ${n}`);
    })
    : [el("span", { class: "muted" }, "none saved yet")]));
}

function renderWebhooks() {
  const e = alerts.configError;
  $("#webhooks-error").textContent = e ? `Could not load the webhooks: ${e.message}` : "";
  const saved = new Map((alerts.config?.webhooks ?? []).map((w) => [w.name, w]));
  const draft = [...alerts.draft].sort((a, b) => a.name.localeCompare(b.name));
  $("#webhooks-table tbody").replaceChildren(...draft.map((w) => {
    const before = saved.get(w.name);
    const changed = !before || w.secret || ["url", "format", "zulipBotEmail", "zulipStream", "zulipTopic"].some((k) => (before[k] ?? "") !== (w[k] ?? ""));
    let secret;
    if (w.secret) secret = el("span", { class: "badge alert-pending" }, "new secret");
    else if (w.hasSecret) secret = el("span", { class: "badge alert-ok" }, "secret set");
    else secret = el("span", { class: "muted" }, "none");
    return el("tr", { dataset: { webhook: w.name, unsaved: changed ? "yes" : "no" } },
      el("th", { scope: "row" }, w.name, changed ? el("div", { class: "warn" }, "not saved yet") : null),
      el("td", {}, w.format || "generic"),
      el("td", { class: "path" }, w.url, w.format === "zulip" ? el("div", { class: "muted" },
        `bot ${w.zulipBotEmail || "–"}, stream ${w.zulipStream || "–"}` + (w.zulipTopic ? `, topic ${w.zulipTopic}` : "")) : null),
      el("td", {}, secret),
      el("td", {}, el("div", { class: "actions" },
        el("button", { type: "button", "aria-label": `Edit webhook ${w.name}`, dataset: { key: `wh-edit:${w.name}` }, onclick: () => editWebhook(w.name) }, "Edit"),
        el("button", { type: "button", "aria-label": `Remove webhook ${w.name}`, dataset: { key: `wh-remove:${w.name}` }, onclick: () => removeWebhook(w.name) }, "Remove"))));
  }));
  $("#webhooks-table").hidden = draft.length === 0;
  const empty = $("#webhooks-empty");
  empty.hidden = draft.length > 0;
  empty.textContent = "No webhooks: rules fire, but nobody is told. Add one below, then Save webhooks.";
  // Removals are unsaved changes too.
  const removed = [...saved.keys()].filter((n) => !alerts.draft.some((w) => w.name === n));
  $("#alerting-dirty").textContent = alerts.dirty
    ? "Unsaved changes: Save webhooks applies them." + (removed.length ? ` Removed: ${removed.join(", ")}.` : "") : "";
  syncWebhookForm();
}

function renderDeliveries() {
  const e = alerts.deliveriesError;
  $("#deliveries-error").textContent = e ? `Could not load the delivery log: ${e.message}` : "";
  const list = alerts.deliveries ?? [];
  $("#deliveries-table tbody").replaceChildren(...list.map((d) => el("tr", { dataset: { event: d.event ?? "", rule: d.rule ?? "", result: d.error ? "failed" : "delivered" } },
    el("td", {}, when(d.at)),
    el("td", {}, d.event || "–"),
    el("td", {}, d.rule || "–"),
    el("td", {}, d.target || "–"),
    el("td", {}, d.webhook || "–"),
    el("td", {}, String(d.attempt ?? 1)),
    el("td", {}, d.status ? String(d.status) : "no answer"),
    el("td", {}, d.error ? el("span", { class: "delivery-error" }, d.error) : el("span", { class: "badge alert-ok" }, "delivered"),
      d.willRetry ? [" ", el("span", { class: "badge alert-pending" }, "retrying")] : null,
      d.milliseconds !== undefined ? el("div", { class: "muted" }, `${Number(d.milliseconds)} ms`) : null))));
  $("#deliveries-table").hidden = list.length === 0;
  const empty = $("#deliveries-empty");
  empty.hidden = list.length > 0 || !alerts.deliveries;
  empty.textContent = "No deliveries yet: Test on a rule sends a test notification to its webhooks.";
}

/** Only http and https addresses become links; anything else is shown as text. */
function safeLink(url) {
  try {
    const u = new URL(url);
    if (u.protocol === "http:" || u.protocol === "https:") return el("a", { href: u.href, target: "_blank", rel: "noopener noreferrer" }, url);
  } catch { /* not a URL */ }
  return el("span", {}, url);
}

function renderMonitoring() {
  const m = alerts.monitoring, box = $("#monitoring");
  if (alerts.monitoringError) {
    box.replaceChildren(el("li", { class: "error" }, `Could not load the monitoring links: ${alerts.monitoringError.message}`));
    return;
  }
  if (!m) { box.replaceChildren(); return; }
  const items = [];
  if (m.grafanaUrl) items.push(el("li", {}, "Grafana: ", safeLink(m.grafanaUrl)));
  if (m.prometheusUrl) items.push(el("li", {}, "Prometheus: ", safeLink(m.prometheusUrl)));
  if (!m.grafanaUrl && !m.prometheusUrl) items.push(el("li", { class: "muted" }, "No Grafana or Prometheus address is configured (the config's monitoring block)."));
  items.push(el("li", {}, `This daemon's metrics: ${m.metricsPath || "/metrics"} (${m.metricsEnabled ? "enabled; a metrics or admin token reads them" : "disabled"})`));
  if (m.dashboards?.length) items.push(el("li", {}, `Shipped dashboards and rules: ${m.dashboards.join(", ")}`));
  box.replaceChildren(...items);
}

// The server's checks, made here first so that a mistake is said at once, next to its field.
// The server checks again; when it refuses, its message is shown as it is.
function durationSeconds(s) {
  if (!/^(\d+(\.\d+)?[hms])+$/.test(s)) return null;
  let total = 0;
  for (const [, n, unit] of s.matchAll(/(\d+(?:\.\d+)?)([hms])/g)) total += Number(n) * { h: 3600, m: 60, s: 1 }[unit];
  return total;
}
function checkRule(b) {
  if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(b.name)) return ["name", "name must be 1-63 of a-z 0-9 - (starting with a letter or digit)"];
  if ((alerts.rules ?? []).some((r) => r.name === b.name)) return ["name", `a rule named ${b.name} exists: delete it first, or choose another name`];
  if (!METRICS.includes(b.metric)) return ["metric", `metric must be one of ${METRICS.join(", ")}`];
  if (!OPERATORS.includes(b.operator)) return ["operator", "operator must be >, >=, < or <="];
  if (!Number.isFinite(b.threshold)) return ["threshold", "threshold must be a number"];
  const d = durationSeconds(b.duration);
  if (d === null || d > 86_400) return ["duration", "duration must be 0s to 24h, as 90s, 5m or 1h"];
  if (!SEVERITIES.includes(b.severity)) return ["severity", "severity must be info, warning or critical"];
  if (b.username && !/^[a-z_][a-z0-9_-]{0,31}$/.test(b.username)) return ["username", `username '${b.username}' is not a valid username`];
  if (b.username && b.metric.startsWith("node_")) return ["username", "username limits environment metrics and scan_findings only: leave it empty for a node metric"];
  const known = new Set((alerts.config?.webhooks ?? []).map((w) => w.name));
  const unknown = b.webhooks.filter((w) => !known.has(w));
  if (unknown.length) return ["webhooks", `no webhook named ${unknown.join(", ")}`];
  return null;
}

/** Show a form's error in its alert paragraph, and mark and focus the field it is about. */
function formError(form, message, field) {
  for (const i of form.querySelectorAll("[aria-invalid]")) i.removeAttribute("aria-invalid");
  $(".error", form).textContent = message;
  const input = field && form.elements[field];
  if (input instanceof HTMLElement) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
  }
}

async function addRule(event) {
  event.preventDefault();
  const form = event.target, f = new FormData(form);
  const text = (k) => (f.get(k) ?? "").trim();
  const body = {
    name: text("name"), metric: text("metric"), operator: text("operator"),
    threshold: text("threshold") === "" ? NaN : Number(text("threshold")), duration: text("duration"), severity: text("severity"),
    description: text("description"), disabled: f.get("disabled") === "on", username: text("username"), webhooks: f.getAll("webhooks"),
  };
  const bad = checkRule(body);
  if (bad) { formError(form, bad[1], bad[0]); return; }
  formError(form, "");
  const button = $("button[type=submit]", form);
  button.disabled = true;
  try {
    const rule = await state.server.post("/v1/alerts", body);
    alerts.rules = [...(alerts.rules ?? []).filter((r) => r.name !== rule.name), rule];
    form.reset();
    toast(`Added the alert rule ${rule.name}`);
    renderAlerts();
  } catch (e) {
    formError(form, e.message);
  } finally { button.disabled = false; }
}

function ruleBody(r, changes = {}) {
  return { name: r.name, metric: r.metric, operator: r.operator, threshold: r.threshold ?? 0, duration: r.duration || "0s",
    severity: r.severity || "info", description: r.description ?? "", disabled: !!r.disabled, username: r.username ?? "",
    webhooks: r.webhooks ?? [], ...changes };
}

async function toggleRule(name) {
  const r = alerts.rules?.find((x) => x.name === name);
  if (!r) return;
  try {
    const rule = await state.server.put(`/v1/alerts/${encodeURIComponent(name)}`, ruleBody(r, { disabled: !r.disabled }));
    alerts.rules = alerts.rules.map((x) => (x.name === name ? rule : x));
    toast(`${rule.disabled ? "Disabled" : "Enabled"} the alert rule ${name}`);
    renderAlerts();
  } catch (e) { fail(e); }
}

async function testRule(name) {
  if (alerts.testing.has(name)) return;
  alerts.testing.add(name);
  renderAlerts();
  try {
    const d = (await state.server.post(`/v1/alerts/${encodeURIComponent(name)}/test`, {})).deliveries ?? [];
    const failed = d.filter((x) => x.error);
    if (!d.length) toast(`Test of ${name}: no webhook to tell (add one under Webhooks, then Save webhooks)`, true);
    else {
      toast(`Test of ${name}: ${d.length - failed.length} of ${d.length} webhook${d.length === 1 ? "" : "s"} took it` +
        (failed.length ? ` (${failed.map((x) => `${x.webhook}: ${x.error}`).join("; ")})` : ""), failed.length > 0);
    }
  } catch (e) { fail(e); } finally { alerts.testing.delete(name); }
  await loadDeliveries();
}

function confirmDeleteRule(name) {
  const d = $("#confirm-dialog");
  $("#confirm-title").textContent = `Delete the alert rule ${name}?`;
  $("#confirm-text").textContent = "The rule goes; what it fires for now resolves without a notification. The delivery log keeps its tries.";
  d.returnValue = "";
  d.onclose = async () => {
    if (d.returnValue !== "yes") return;
    try {
      await state.server.del(`/v1/alerts/${encodeURIComponent(name)}`);
      alerts.rules = (alerts.rules ?? []).filter((r) => r.name !== name);
      toast(`Deleted the alert rule ${name}`);
      renderAlerts();
      $("#rule-form").elements.name.focus();
    } catch (e) { fail(e); }
  };
  d.showModal();
}

function checkWebhook(w, existing) {
  if (!/^[a-z0-9][a-z0-9_-]{0,62}$/.test(w.name)) return ["name", `webhook name '${w.name}' must be 1-63 of a-z 0-9 _ - (starting with a letter or digit)`];
  let u = null;
  try { u = new URL(w.url); } catch { /* checked below */ }
  if (!u || !["http:", "https:"].includes(u.protocol) || !u.hostname || w.url.length > 2048) return ["url", `webhook ${w.name}: url must be an http:// or https:// URL with a host`];
  if (u.username || u.password) return ["url", `webhook ${w.name}: put no credentials in the url (use secret, or zulip_bot_email and secret for Zulip)`];
  if (w.secret && (w.secret.length > 256 || /[\r\n]/.test(w.secret))) return ["secret", `webhook ${w.name}: secret must be 1-256 characters on one line`];
  if (w.format === "zulip") {
    if (!w.zulipBotEmail || !w.zulipBotEmail.includes("@") || w.zulipBotEmail.length > 254 || /[\s:]/.test(w.zulipBotEmail)) {
      return ["zulipBotEmail", `webhook ${w.name}: a zulip webhook needs zulip_bot_email (the bot's e-mail address)`];
    }
    if (!w.secret && !existing?.hasSecret) return ["secret", `webhook ${w.name}: a zulip webhook needs secret (the bot's API key)`];
    if (!w.zulipStream || w.zulipStream.length > 60) return ["zulipStream", `webhook ${w.name}: a zulip webhook needs zulip_stream (1-60 characters)`];
    if (w.zulipTopic.length > 60) return ["zulipTopic", `webhook ${w.name}: zulip_topic must be 1-60 characters`];
  }
  return null;
}

/** Add the form's webhook to the draft, or change the one of that name (a blank secret keeps its secret). */
function upsertWebhook(event) {
  event.preventDefault();
  const form = event.target, f = new FormData(form);
  const text = (k) => (f.get(k) ?? "").trim();
  const format = FORMATS.includes(text("format")) ? text("format") : "generic";
  const w = { name: text("name"), url: text("url"), format, secret: f.get("secret") ?? "" };
  if (format === "zulip") Object.assign(w, { zulipBotEmail: text("zulipBotEmail"), zulipStream: text("zulipStream"), zulipTopic: text("zulipTopic") });
  const existing = alerts.draft.find((x) => x.name === w.name);
  const bad = checkWebhook(w, existing);
  if (bad) { formError(form, bad[1], bad[0]); return; }
  formError(form, "");
  w.hasSecret = !!existing?.hasSecret;
  alerts.draft = [...alerts.draft.filter((x) => x.name !== w.name), w];
  alerts.dirty = true;
  form.reset();
  renderAlerts();
  toast(`${existing ? "Changed" : "Added"} the webhook ${w.name}: Save webhooks to apply`);
}

function editWebhook(name) {
  const w = alerts.draft.find((x) => x.name === name);
  if (!w) return;
  const form = $("#webhook-form");
  form.reset();
  formError(form, "");
  for (const k of ["name", "url", "zulipBotEmail", "zulipStream", "zulipTopic"]) form.elements[k].value = w[k] ?? "";
  form.elements.format.value = w.format || "generic";
  form.elements.secret.value = w.secret ?? "";
  syncWebhookForm();
  form.elements.url.focus();
}

function removeWebhook(name) {
  alerts.draft = alerts.draft.filter((x) => x.name !== name);
  alerts.dirty = true;
  renderAlerts();
  toast(`Removed the webhook ${name}: Save webhooks to apply`);
  $("#webhook-form").elements.name.focus();
}

/** The webhook form follows its name (add or change) and format (Zulip's fields). */
function syncWebhookForm() {
  const form = $("#webhook-form");
  const existing = alerts.draft.find((x) => x.name === form.elements.name.value.trim());
  $("#webhook-submit").textContent = existing ? "Change webhook" : "Add webhook";
  form.elements.secret.placeholder = existing?.hasSecret || existing?.secret ? "blank keeps the current secret" : "";
  $("#webhook-zulip").hidden = form.elements.format.value !== "zulip";
}

async function saveAlerting(event) {
  event.preventDefault();
  const form = event.target;
  const maxAttempts = Number(form.maxAttempts.value), backoff = Number(form.initialBackoffSeconds.value);
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1 || maxAttempts > 10) { formError(form, "max attempts must be 1 to 10", "maxAttempts"); return; }
  if (form.initialBackoffSeconds.value.trim() === "" || !Number.isFinite(backoff) || backoff < 0 || backoff > 60) {
    formError(form, "the initial backoff must be 0 to 60 seconds", "initialBackoffSeconds");
    return;
  }
  formError(form, "");
  // A webhook's secret goes only when one was typed: left out, the daemon keeps the current one.
  const webhooks = alerts.draft.map((w) => {
    const out = { name: w.name, url: w.url, format: w.format || "generic" };
    if (w.secret) out.secret = w.secret;
    if (out.format === "zulip") for (const k of ["zulipBotEmail", "zulipStream", "zulipTopic"]) if (w[k]) out[k] = w[k];
    return out;
  });
  const button = $("button[type=submit]", form);
  button.disabled = true;
  try {
    const config = await state.server.put("/v1/system/alerting", { webhooks, maxAttempts, initialBackoffSeconds: backoff });
    applyAlertingConfig(config, true);
    toast(`Saved ${webhooks.length} webhook${webhooks.length === 1 ? "" : "s"}`);
    renderAlerts();
  } catch (e) {
    formError(form, e.message);
  } finally { button.disabled = false; }
}

// ------------------------------------------------------------------------- wiring ----
function showView(name) {
  for (const b of document.querySelectorAll("[data-view]")) b.setAttribute("aria-selected", String(b.dataset.view === name));
  for (const v of ["envs", "nodes", "audit", "security", "alerts"]) $(`#view-${v}`).hidden = v !== name;
  if (name === "audit") loadAudit();
  if (name === "nodes") loadNodes();
  if (name === "security") { renderSecurity(); loadSecurity(); }
  if (name === "alerts") { renderAlerts(); loadAlerts(); }
}

document.addEventListener("DOMContentLoaded", () => {
  loadServers();
  $("#add-server").addEventListener("click", openServerDialog);
  for (const b of document.querySelectorAll("[data-action=add-server]")) b.addEventListener("click", openServerDialog);
  $("#server-form").addEventListener("submit", addServer);
  for (const b of document.querySelectorAll("dialog [data-close]")) b.addEventListener("click", (e) => e.target.closest("dialog").close());
  $("#sign-out").addEventListener("click", signOut);
  for (const b of document.querySelectorAll("[data-view]")) b.addEventListener("click", () => showView(b.dataset.view));
  for (const id of ["#f-search", "#f-node", "#f-backend", "#f-state", "#f-owner"]) $(id).addEventListener("input", renderEnvironments);
  for (const r of document.querySelectorAll("input[name=layout]")) r.addEventListener("change", () => { state.layout = r.value; renderEnvironments(); });
  $("#open-create").addEventListener("click", openCreate);
  $("#create-form").addEventListener("submit", submitCreate);
  $("#create-form").addEventListener("input", (e) => {
    if (e.target.name === "keymode") $("#paste-label").hidden = e.target.value !== "paste";
    else explain();
  });
  $("#create-dialog").addEventListener("close", () => { state.operation = null; });
  $("#resize-form").addEventListener("submit", submitResize);
  $("#collab-form").addEventListener("submit", addCollaborator);
  $("#copy-ssh").addEventListener("click", async () => {
    try { await navigator.clipboard.writeText($("#ssh-config").textContent); toast("Copied"); } catch { toast("Select the text and copy it", true); }
  });
  $("#term-close").addEventListener("click", closeTerminal);
  $("#term-dialog").addEventListener("cancel", (e) => { e.preventDefault(); closeTerminal(); });
  $("#vnc-close").addEventListener("click", closeScreen);
  $("#vnc-keys").addEventListener("click", () => rfb?.sendCtrlAltDel());
  $("#vnc-dialog").addEventListener("cancel", (e) => { e.preventDefault(); closeScreen(); });
  $("#close-detail").addEventListener("click", closeDetail);
  $("#audit-filters").addEventListener("submit", loadAudit);
  for (const r of document.querySelectorAll("input[name=scanner]")) r.addEventListener("change", () => {
    sec.scanner = r.value;
    sec.summary = null;
    sec.error = null;
    sec.history = null;
    renderSecurity();
    loadSecurity();
  });
  for (const id of ["#sec-node", "#sec-status"]) $(id).addEventListener("input", renderSecurity);
  $("#sec-scan-all").addEventListener("click", scanAll);
  $("#sec-csv").addEventListener("click", exportCSV);
  $("#sec-refresh").addEventListener("click", loadSecurity);
  $("#alerts-refresh").addEventListener("click", loadAlerts);
  $("#rule-form").addEventListener("submit", addRule);
  $("#webhook-form").addEventListener("submit", upsertWebhook);
  $("#webhook-form").addEventListener("input", syncWebhookForm);
  $("#alerting-form").addEventListener("submit", saveAlerting);
  $("#alerting-form").addEventListener("input", () => { alerts.dirty = true; renderWebhooks(); });
  renderTabs();
  const active = localStorage.getItem(ACTIVE);
  activate(state.servers.find((s) => s.id === active)?.id ?? state.servers[0]?.id);
});
