// mecctl dashboard: the single page. Three views by hash (#/, #/clusters/<id>, #/create), each
// polling the dashboard server's /api (a 1:1 forward of the mecplane API) every 2 s. Everything is
// built with DOM calls and textContent: no HTML from data is ever parsed.
"use strict";

// Errors the page met (read by the end-to-end test; handy in the console too).
window.dashboardErrors = [];
window.addEventListener("error", (e) => window.dashboardErrors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) => window.dashboardErrors.push(String(e.reason)));
document.addEventListener("securitypolicyviolation", (e) => window.dashboardErrors.push("CSP: " + e.violatedDirective + " " + e.blockedURI));

const STATUSES = ["CREATING", "ACTIVE", "UPDATING", "DEGRADED", "FAILED", "DELETING", "DELETED"];
const POLL_MS = 2000;
// The session secret: exchanged once for the URL's one-time token, kept in this tab's
// sessionStorage (this origin's only), sent in a header with every call. No cookie.
const SESSION_KEY = "mecctl-dashboard-session";
let session = null;
let timer = null;

// ---- helpers ----------------------------------------------------------------------------------

// h("a", {href: "#/", class: "x", onclick: f}, "text", child, [children]) builds an element.
function h(tag, attrs, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

async function api(method, path, body, headers) {
  const init = { method, headers: Object.assign({}, headers || {}), credentials: "omit", cache: "no-store" };
  init.headers["X-Dashboard-Session"] = session;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch("/api" + path, init);
  let data = null;
  try { data = await r.json(); } catch (_) { data = null; }
  return { status: r.status, ok: r.ok, data, etag: r.headers.get("ETag") };
}

function errorText(res) {
  const e = res.data && res.data.error;
  if (e) return `${e.code || res.status}: ${e.message}`;
  if (res.data && res.data.message) return `${res.status}: ${res.data.message}`;
  return `HTTP ${res.status}`;
}

function setLive(text, bad) {
  const live = document.getElementById("live");
  live.textContent = text;
  live.classList.toggle("bad", Boolean(bad));
}

// Runs fn now and every POLL_MS while the view is shown; never two at once.
function every(fn) {
  let busy = false;
  const tick = async () => {
    if (busy) return;
    busy = true;
    try {
      await fn();
      setLive("Live · updated " + new Date().toLocaleTimeString());
    } catch (e) {
      setLive("Not connected: " + e.message, true);
    } finally {
      busy = false;
    }
  };
  tick();
  timer = setInterval(tick, POLL_MS);
}

function badge(status) {
  return h("span", { class: "badge s-" + String(status).toLowerCase() }, status);
}

function age(iso) {
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return Math.floor(s) + "s";
  if (s < 3600) return Math.floor(s / 60) + "m";
  if (s < 86400) return Math.floor(s / 3600) + "h";
  return Math.floor(s / 86400) + "d";
}

function duration(ms) {
  const s = Math.round(ms / 1000);
  return s < 60 ? s + " s" : Math.floor(s / 60) + " min " + (s % 60) + " s";
}

function when(iso) {
  return iso ? new Date(iso).toLocaleString() : "—";
}

// A labelled control with its hint and an error slot: ids field-<key>, hint-<key>, err-<key>.
function field(key, labelText, input, hint) {
  if (hint && !input.hasAttribute("aria-describedby")) input.setAttribute("aria-describedby", "hint-" + key);
  return h("div", { class: "field", id: "field-" + key },
    h("label", { for: input.id }, labelText),
    input,
    hint ? h("p", { class: "hint", id: "hint-" + key }, hint) : null,
    h("p", { class: "field-error", id: "err-" + key, hidden: true }));
}

// A checkbox with its label on the same line, then its hint and error slot.
function checkField(key, labelText, input, hint) {
  if (hint) input.setAttribute("aria-describedby", "hint-" + key);
  return h("div", { class: "field check", id: "field-" + key },
    h("div", { class: "check-line" }, input, h("label", { for: input.id }, labelText)),
    hint ? h("p", { class: "hint", id: "hint-" + key }, hint) : null,
    h("p", { class: "field-error", id: "err-" + key, hidden: true }));
}

// Shows `message` in the error slot of field <key> and marks `input` invalid (described by it).
function markInvalid(key, input, message, focus) {
  const slot = document.getElementById("err-" + key);
  slot.textContent = message;
  slot.hidden = false;
  input.setAttribute("aria-invalid", "true");
  const hint = document.getElementById("hint-" + key);
  input.setAttribute("aria-describedby", hint ? `err-${key} hint-${key}` : `err-${key}`);
  if (focus !== false) input.focus();
}

// Hides every field error under `root` and unmarks its controls.
function clearInvalid(root) {
  for (const slot of root.querySelectorAll(".field-error")) {
    slot.hidden = true;
    slot.textContent = "";
  }
  for (const el of root.querySelectorAll("[aria-invalid]")) {
    el.removeAttribute("aria-invalid");
    const kept = (el.getAttribute("aria-describedby") || "").split(" ").filter((t) => t && !t.startsWith("err-"));
    if (kept.length) el.setAttribute("aria-describedby", kept.join(" "));
    else el.removeAttribute("aria-describedby");
  }
}

// The API's 422 names a field as the user wrote it: `workers`, `api_allowed_cidrs[1]`,
// `tags.env`, `exposed_ports[0].cidrs[1]`. Its first name, and the rest (`[1]`, `.env`, …).
function splitField(name) {
  const root = String(name || "").split(/[.[]/)[0];
  return [root, String(name || "").slice(root.length)];
}

function list(text) {
  return text.split(",").map((s) => s.trim()).filter(Boolean);
}

// The entries of a comma-separated list field, as `list` reads them, for naming one in an error.
function nth(text, i) {
  return list(text)[i];
}

// One exposed port as the spec shows it: "443/tcp from 203.0.113.0/24".
function portText(p) {
  return `${p.port}/${p.protocol || "tcp"} from ${(p.cidrs || []).join(", ")}${p.allow_anywhere ? " (anywhere allowed)" : ""}`;
}

// An update's params (`{"workers": {"from": 1, "to": 2}}`) as lines: "workers: 1 → 2".
function asked(params) {
  const text = (v) => {
    if (Array.isArray(v)) return v.length ? v.map((x) => (x && x.port !== undefined ? portText(x) : text(x))).join("; ") : "none";
    if (v && typeof v === "object") return JSON.stringify(v);
    return String(v);
  };
  return Object.entries(params || {}).map(([k, v]) => h("div", {}, `${k}: `,
    v && typeof v === "object" && "from" in v && "to" in v ? `${text(v.from)} → ${text(v.to)}` : text(v)));
}

// ---- exposed ports editor ---------------------------------------------------------------------

// A repeatable row editor for `exposed_ports` (the create form and the cluster page's action):
// port or range, protocol, CIDRs, allow_anywhere, one row per entry. Row i's controls have ids
// `<prefix>-<i>-port|protocol|cidrs|allow_anywhere`, each with its error slot `err-<that id>`,
// so a 422 naming `exposed_ports[1].cidrs[0]` is shown beside row 2's CIDRs.
function portsEditor(prefix, legendText, initial) {
  let rows = (initial || []).map((p) => ({
    port: String(p.port), protocol: p.protocol || "tcp", cidrs: (p.cidrs || []).join(", "), allow_anywhere: Boolean(p.allow_anywhere),
  }));
  const body = h("div", { class: "port-rows", id: prefix + "-rows" });
  const add = h("button", { type: "button", class: "small", id: prefix + "-add" }, "Add port");
  const el = h("fieldset", { class: "ports", id: "field-" + prefix },
    h("legend", {}, legendText),
    h("p", { class: "hint", id: "hint-" + prefix },
      "A port (443) or a range (30000-32767), tcp or udp, opened to comma-separated IPv4 CIDRs. Never 22 or MicroK8s' own ports; 0.0.0.0/0 only with “allow from anywhere”."),
    h("p", { class: "field-error", id: "err-" + prefix, hidden: true }),
    body, add);
  const id = (i, f) => `${prefix}-${i}-${f}`;
  const read = () => {
    rows = rows.map((_, i) => ({
      port: document.getElementById(id(i, "port")).value.trim(),
      protocol: document.getElementById(id(i, "protocol")).value,
      cidrs: document.getElementById(id(i, "cidrs")).value,
      allow_anywhere: document.getElementById(id(i, "allow_anywhere")).checked,
    }));
  };
  const render = () => {
    body.replaceChildren(...rows.map((r, i) => {
      const port = h("input", { id: id(i, "port"), type: "text", value: r.port, placeholder: "443 or 30000-32767", autocomplete: "off", spellcheck: "false" });
      const protocol = h("select", { id: id(i, "protocol") },
        ["tcp", "udp"].map((p) => h("option", { value: p, selected: r.protocol === p }, p)));
      const cidrs = h("input", { id: id(i, "cidrs"), type: "text", value: r.cidrs, placeholder: "203.0.113.0/24", autocomplete: "off", spellcheck: "false" });
      const anywhere = h("input", { id: id(i, "allow_anywhere"), type: "checkbox", checked: r.allow_anywhere });
      const remove = h("button", { type: "button", class: "small", id: id(i, "remove"), "aria-label": `Remove port ${i + 1}` }, "Remove");
      remove.addEventListener("click", () => {
        read();
        rows.splice(i, 1);
        render();
        const next = document.getElementById(id(Math.min(i, rows.length - 1), "port"));
        (next || add).focus();
      });
      return h("fieldset", { class: "port-row", id: `${prefix}-${i}` },
        h("legend", {}, `Port ${i + 1}`),
        field(id(i, "port"), "Port or range", port),
        field(id(i, "protocol"), "Protocol", protocol),
        field(id(i, "cidrs"), "From CIDRs", cidrs),
        checkField(id(i, "allow_anywhere"), "Allow from anywhere", anywhere),
        h("div", { class: "row-actions" }, remove));
    }));
    if (rows.length === 0) body.append(h("p", { class: "muted", id: prefix + "-none" }, "None."));
  };
  add.addEventListener("click", () => {
    read();
    rows.push({ port: "", protocol: "tcp", cidrs: "", allow_anywhere: false });
    render();
    document.getElementById(id(rows.length - 1, "port")).focus();
  });
  render();
  return {
    el,
    // The entries as the API takes them (a number for one port, the text for a range).
    value() {
      read();
      return rows.map((r) => {
        const entry = { port: /^\d+$/.test(r.port) ? Number(r.port) : r.port, protocol: r.protocol, cidrs: list(r.cidrs) };
        if (r.allow_anywhere) entry.allow_anywhere = true;
        return entry;
      });
    },
    // Shows the error of `exposed_ports<rest>` beside its control; false if it names none here.
    show(rest, message) {
      if (rest === "") {
        markInvalid(prefix, rows.length ? document.getElementById(id(0, "port")) : add, message);
        return true;
      }
      const m = rest.match(/^\[(\d+)\]\.(port|protocol|cidrs|allow_anywhere)(?:\[(\d+)\])?$/);
      const input = m && document.getElementById(id(m[1], m[2]));
      if (!input) return false;
      const entry = m[3] !== undefined ? nth(input.value, Number(m[3])) : undefined;
      markInvalid(id(m[1], m[2]), input, entry !== undefined ? `“${entry}”: ${message}` : message);
      return true;
    },
  };
}

// ---- fleet ------------------------------------------------------------------------------------

async function allClusters() {
  let out = [];
  let token = null;
  for (let page = 0; page < 20; page++) {
    const q = "?max_results=100" + (token ? "&next_token=" + encodeURIComponent(token) : "");
    const res = await api("GET", "/clusters" + q);
    if (!res.ok) throw new Error(errorText(res));
    out = out.concat(res.data.clusters);
    token = res.data.next_token;
    if (!token) break;
  }
  return out;
}

function counts(title, entries) {
  return h("section", { class: "counts", "aria-label": title },
    h("h2", {}, title),
    entries.length === 0 ? h("p", { class: "muted" }, "None") :
      h("ul", {}, entries.map(([k, n, cls]) => h("li", { class: cls || "" }, h("span", { class: "n" }, n), " ", k))));
}

function fleetView(main) {
  const status = h("select", { id: "filter-status" },
    h("option", { value: "" }, "All statuses"), STATUSES.map((s) => h("option", { value: s }, s)));
  const search = h("input", { id: "filter-search", type: "search", placeholder: "name, id, region or zone", autocomplete: "off" });
  const summary = h("div", { class: "summary" });
  const tbody = h("tbody", { id: "clusters-body" });
  main.append(
    h("div", { class: "title" }, h("h1", {}, "Fleet"), h("a", { class: "button primary", href: "#/create" }, "Create cluster")),
    summary,
    h("div", { class: "filters" }, field("status", "Status", status), field("search", "Search", search)),
    h("div", { class: "table-wrap" },
      h("table", { class: "clusters" },
        h("thead", {}, h("tr", {}, ["Name", "Status", "Stage", "Nodes ready", "Region / zone", "Channel", "Age"].map((c) => h("th", { scope: "col" }, c)))),
        tbody)));
  let clusters = [];
  const draw = () => {
    const byStatus = {};
    const byRegion = {};
    for (const c of clusters) {
      byStatus[c.status] = (byStatus[c.status] || 0) + 1;
      byRegion[c.spec.region] = (byRegion[c.spec.region] || 0) + 1;
    }
    summary.replaceChildren(
      counts("By status", STATUSES.filter((s) => byStatus[s]).map((s) => [s, byStatus[s], "s-" + s.toLowerCase()])),
      counts("By region", Object.keys(byRegion).sort().map((r) => [r, byRegion[r]])));
    const want = status.value;
    const term = search.value.trim().toLowerCase();
    const shown = clusters.filter((c) => (!want || c.status === want) &&
      (!term || [c.spec.name, c.id, c.spec.region, ...zones(c)].some((v) => v.toLowerCase().includes(term))));
    tbody.replaceChildren(...shown.map(row));
    if (shown.length === 0) {
      tbody.append(h("tr", {}, h("td", { colspan: 7, class: "muted" },
        clusters.length ? "No cluster matches." : "No clusters yet. ", clusters.length ? null : h("a", { href: "#/create" }, "Create one"))));
    }
  };
  status.addEventListener("change", draw);
  search.addEventListener("input", draw);
  every(async () => {
    const asked = status.value === "DELETED" ? await api("GET", "/clusters?status=DELETED&max_results=100") : null;
    clusters = await allClusters();
    if (asked && asked.ok) clusters = clusters.concat(asked.data.clusters);
    draw();
  });
}

// A node's zone, a Local or Wavelength zone with its type.
function zoneText(n) {
  if (!n.zone) return "—";
  return n.zone_type && n.zone_type !== "availability-zone" ? `${n.zone} (${n.zone_type})` : n.zone;
}

// The root volumes' size and the EBS types the nodes got (gp2 where a Wavelength zone offers no gp3).
function rootVolumeText(c) {
  const types = [...new Set(c.nodes.map((n) => n.volume_type).filter(Boolean))].sort();
  return `${c.spec.root_volume_gib} GiB${types.length ? " " + types.join(", ") : ""}`;
}

// The distinct availability zones of a cluster's nodes (records before zones were kept have none).
function zones(c) {
  return [...new Set(c.nodes.map((n) => n.zone).filter(Boolean))].sort();
}

// Nodes ready / nodes the spec asks for.
function readyText(c) {
  const ready = c.nodes.filter((n) => n.state === "ready").length;
  return `${ready}/${c.spec.control_planes + c.spec.workers}`;
}

function row(c) {
  const az = zones(c);
  const failure = c.failure ? `${c.failure.stage}: ${c.failure.reason}` : null;
  return h("tr", { "data-id": c.id },
    h("td", {}, h("a", { href: "#/clusters/" + encodeURIComponent(c.id) }, c.spec.name),
      h("div", { class: "sub mono" }, c.id)),
    h("td", { title: failure }, badge(c.status),
      failure && c.status === "FAILED" ? h("div", { class: "sub reason" }, failure) : null,
      c.degraded ? h("div", { class: "sub reason" }, c.degraded.reason) : null),
    h("td", {}, c.stage || "—"),
    h("td", {}, readyText(c)),
    h("td", {}, c.spec.region, az.length ? h("div", { class: "sub" }, az.join(", ")) : null),
    h("td", {}, c.spec.microk8s_channel),
    h("td", { title: when(c.created_at) }, age(c.created_at)));
}

// ---- one cluster ------------------------------------------------------------------------------

// Events → one entry per run of a stage: started, ended, how it ended, the last detail.
function timeline(events) {
  const out = [];
  for (const e of events) {
    let run = null;
    for (let i = out.length - 1; i >= 0; i--) {
      if (out[i].stage === e.stage) { run = out[i]; break; }
    }
    if (!run || (e.phase === "started" && run.end)) {
      // The stages run one after the other: a new one ends any still open (e.g. "api").
      for (const open of out) {
        if (!open.end) { open.end = e.time; open.state = "done"; }
      }
      run = { stage: e.stage, start: e.time, end: null, state: "running", detail: "" };
      out.push(run);
    }
    if (e.phase === "finished" || e.phase === "failed") {
      run.end = e.time;
      run.state = e.phase;
    }
    if (e.detail) run.detail = e.detail;
  }
  return out;
}

function clusterView(main, id) {
  const path = "/clusters/" + encodeURIComponent(id);
  const head = h("div", { class: "title" }, h("h1", {}, id));
  const alerts = h("div", { class: "alerts" });
  const facts = h("dl", { class: "facts" });
  const nodes = h("tbody", { id: "nodes-body" });
  const stages = h("tbody", { id: "stages-body" });
  const updates = h("tbody", { id: "updates-body" });
  const message = h("p", { id: "action-message", class: "message", role: "status", "aria-live": "polite" });
  const actions = h("section", { class: "card actions", "aria-labelledby": "actions-h" }, h("h2", { id: "actions-h" }, "Actions"), message);
  let record = null;
  let etag = null;
  let built = false;

  const say = (text, bad) => {
    message.textContent = text;
    message.classList.toggle("bad", Boolean(bad));
  };
  // One PATCH with If-Match; a 422 naming a field of `form` is shown beside it (`show` routes
  // the field's name and message to its control, and answers whether it found one).
  const change = async (label, body, form, show) => {
    clearInvalid(form);
    say(label + "…");
    const res = await api("PATCH", path, body, etag ? { "If-Match": etag } : {});
    if (res.status === 412) return say("The cluster changed meanwhile: check it and try again.", true);
    if (res.ok) return say(res.status === 200 ? "Nothing to change." : label + " started.");
    const err = (res.data && res.data.error) || {};
    const shown = res.status === 422 && err.field && show(err.field, err.message);
    say(shown ? `${label} not accepted: see ${err.field}.` : errorText(res), true);
  };
  const changeable = () => record && (record.status === "ACTIVE" || record.status === "DEGRADED");

  const buildActions = () => {
    const workers = h("input", { id: "act-workers", type: "number", min: 0, inputmode: "numeric", value: record.spec.workers });
    const channel = h("input", { id: "act-channel", type: "text", value: record.spec.microk8s_channel, autocomplete: "off" });
    const unavailable = h("input", { id: "act-max_unavailable", type: "number", min: 1, max: 10, inputmode: "numeric", value: 1 });
    const addons = h("input", { id: "act-addons", type: "text", value: record.spec.addons.join(", "), autocomplete: "off" });
    const ports = portsEditor("act-ports", "Exposed ports", record.spec.exposed_ports || []);
    const confirmName = h("input", { id: "act-confirm", type: "text", autocomplete: "off", "aria-describedby": "hint-confirm" });
    const del = h("button", { type: "submit", id: "act-delete", class: "danger", disabled: true }, "Delete cluster");
    confirmName.addEventListener("input", () => { del.disabled = confirmName.value !== record.spec.name; });
    const form = (name, onsubmit, ...kids) => {
      const f = h("form", { class: "action", id: "form-" + name.toLowerCase().replace(/\W+/g, "-"), "aria-label": name, novalidate: true }, kids);
      f.addEventListener("submit", (e) => { e.preventDefault(); onsubmit(f); });
      return f;
    };
    // Routes a 422's field to a control of an action's form (see `change`).
    const only = (known) => (name, message) => {
      const [root, rest] = splitField(name);
      if (root === "exposed_ports" && known.exposed_ports) return ports.show(rest, message);
      const at = known[root];
      if (!at) return false;
      const entry = rest.match(/^\[(\d+)\]$/) ? nth(at[1].value, Number(rest.slice(1, -1))) : undefined;
      markInvalid(at[0], at[1], entry !== undefined ? `“${entry}”: ${message}` : message);
      return true;
    };
    actions.append(
      form("Scale", (f) => change("Scale", { workers: Number(workers.value) }, f, only({ workers: ["workers", workers] })),
        field("workers", "Workers", workers), h("button", { type: "submit", id: "act-scale", class: "needs-active" }, "Scale")),
      form("Upgrade", (f) => change("Upgrade", { microk8s_channel: channel.value.trim(), max_unavailable: Number(unavailable.value) }, f,
        only({ microk8s_channel: ["channel", channel], max_unavailable: ["max_unavailable", unavailable] })),
        field("channel", "MicroK8s channel", channel, "One minor up, e.g. 1.33/stable"),
        field("max_unavailable", "Workers upgraded at once", unavailable, "1 to 10, default 1; control planes go one at a time."),
        h("button", { type: "submit", id: "act-upgrade", class: "needs-active" }, "Upgrade")),
      form("Add-ons", (f) => change("Add-ons change", { addons: list(addons.value) }, f, only({ addons: ["addons", addons] })),
        field("addons", "Add-ons", addons, "Comma-separated, e.g. dns, ingress"), h("button", { type: "submit", id: "act-addons-save", class: "needs-active" }, "Save add-ons")),
      form("Exposed ports", (f) => change("Exposed ports change", { exposed_ports: ports.value() }, f, only({ exposed_ports: true })),
        ports.el, h("button", { type: "submit", id: "act-ports-save", class: "needs-active" }, "Save exposed ports")),
      h("div", { class: "action" },
        h("p", { class: "hint" }, "Admin credentials: treat the file as a secret."),
        h("button", { type: "button", id: "act-kubeconfig", class: "needs-active", onclick: download }, "Download kubeconfig")),
      form("Delete", async () => {
        say("Deleting…");
        const res = await api("DELETE", path);
        say(res.ok ? "Delete started." : errorText(res), !res.ok);
      }, field("confirm", `Type “${record.spec.name}” to delete`, confirmName, "Terminates every instance of the cluster."), del));
  };

  const download = async () => {
    const res = await api("GET", path + "/kubeconfig");
    if (!res.ok) return say(errorText(res), true);
    const url = URL.createObjectURL(new Blob([res.data.kubeconfig], { type: "application/yaml" }));
    const a = h("a", { href: url, download: `${res.data.name}.kubeconfig` });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
    say("Kubeconfig downloaded.");
  };

  const replace = async (node) => {
    if (!window.confirm(`Replace ${node.role} ${node.index} (${node.instance_id}) with a new instance?`)) return;
    say("Replacing " + node.instance_id + "…");
    const res = await api("POST", `${path}/nodes/${encodeURIComponent(node.instance_id)}/replace`, undefined, etag ? { "If-Match": etag } : {});
    say(res.ok ? "Replacement started." : errorText(res), !res.ok);
  };

  main.append(head, alerts,
    h("section", { class: "card" }, h("h2", {}, "Overview"), facts),
    h("section", { class: "card" }, h("h2", {}, "Nodes"), h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Role", "Index", "Instance", "Zone", "Private IP", "Public / carrier IP", "State", "Channel", ""].map((c) => h("th", { scope: "col" }, c)))), nodes))),
    actions,
    h("section", { class: "card" }, h("h2", {}, "Stages"), h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Stage", "Result", "Started", "Took", "Detail"].map((c) => h("th", { scope: "col" }, c)))), stages))),
    h("section", { class: "card" }, h("h2", {}, "Updates"), h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Kind", "Asked", "Status", "Started", "Finished", "Failure"].map((c) => h("th", { scope: "col" }, c)))), updates))));

  every(async () => {
    const res = await api("GET", path);
    if (res.status === 404) {
      head.replaceChildren(h("h1", {}, "No such cluster"));
      return;
    }
    if (!res.ok) throw new Error(errorText(res));
    record = res.data;
    etag = res.etag;
    const c = record;
    document.title = c.spec.name + " · mecplane";
    head.replaceChildren(h("h1", {}, c.spec.name), h("span", { id: "cluster-status" }, badge(c.status)));
    alerts.replaceChildren(...[
      c.failure ? h("div", { class: "alert bad", role: "alert" }, h("strong", {}, "Failed"),
        ` at stage ${c.failure.stage} (${c.failure.error}): ${c.failure.reason}`) : null,
      c.degraded ? h("div", { class: "alert warn" }, h("strong", {}, "Degraded"),
        `: ${c.degraded.reason} (nodes ${c.degraded.nodes.join(", ")}, since ${when(c.degraded.since)})`) : null,
    ].filter(Boolean));
    const fact = (k, v, id) => [h("dt", {}, k), h("dd", { id }, v)];
    const az = zones(c);
    facts.replaceChildren(...[
      fact("Id", h("span", { class: "mono" }, c.id)),
      fact("Stage", c.stage || "—"),
      fact("Region", az.length ? `${c.spec.region} (${az.join(", ")})` : c.spec.region),
      fact("Nodes", `${c.spec.control_planes} control plane${c.spec.control_planes > 1 ? "s" : ""}, ${c.spec.workers} worker${c.spec.workers === 1 ? "" : "s"}`),
      fact("Nodes ready", readyText(c), "fact-ready"),
      fact("Instance type", `${c.spec.instance_type} (${c.spec.arch})`),
      fact("Ubuntu", c.spec.ubuntu_release),
      fact("Image", c.spec.ami_id || "Ubuntu's, looked up"),
      fact("Root volume", rootVolumeText(c), "fact-root-volume"),
      fact("Subnets", (c.spec.subnet_ids || []).join(", ") || c.spec.subnet_id || "the default VPC's"),
      fact("Worker subnets", (c.spec.worker_subnet_ids || []).join(", ") || "the subnets above"),
      fact("MicroK8s", c.spec.microk8s_channel),
      fact("Add-ons", c.spec.addons.join(", ") || "none"),
      fact("API endpoint", `${c.endpoint || "—"}${c.spec.api_endpoint === "nlb" ? " (network load balancer)" : ""}`),
      fact("Extra certificate names", (c.spec.extra_sans || []).join(", ") || "none"),
      fact("Pod security", c.spec.pod_security ? `${c.spec.pod_security}, enforced outside the add-ons' namespaces` : "—"),
      fact("API allowed from", c.spec.api_allowed_cidrs.join(", ") || "nowhere"),
      fact("Exposed ports", (c.spec.exposed_ports || []).length ? h("ul", { class: "plain" }, c.spec.exposed_ports.map((p) => h("li", {}, portText(p)))) : "none", "fact-exposed-ports"),
      fact("Tags", Object.entries(c.spec.tags || {}).map(([k, v]) => `${k}=${v}`).join(", ") || "none"),
      fact("Retain on failure", c.spec.retain_on_failure ? "yes" : "no"),
      fact("Created", when(c.created_at)),
    ].flat());
    nodes.replaceChildren(...c.nodes.map((n) => h("tr", {},
      h("td", {}, n.role), h("td", {}, n.index), h("td", { class: "mono nowrap" }, n.instance_id),
      h("td", { class: "nowrap" }, zoneText(n)), h("td", { class: "mono nowrap" }, n.private_ip || "—"),
      h("td", { class: "mono nowrap" }, n.public_ip || (n.carrier_ip ? `${n.carrier_ip} (carrier)` : "—")),
      h("td", {}, h("span", { class: "state st-" + n.state }, n.state)), h("td", {}, n.channel || "—"),
      h("td", {}, h("button", { type: "button", class: "small needs-active", "aria-label": `Replace ${n.role} ${n.index} (${n.instance_id})`, disabled: !changeable(), onclick: () => replace(n) }, "Replace")))));
    if (c.nodes.length === 0) nodes.append(h("tr", {}, h("td", { colspan: 9, class: "muted" }, "No nodes yet.")));
    if (!built) { buildActions(); built = true; }
    for (const b of actions.querySelectorAll(".needs-active")) b.disabled = !changeable();
    const del = document.getElementById("act-delete");
    const confirmName = document.getElementById("act-confirm");
    confirmName.disabled = c.status === "DELETED";
    del.disabled = confirmName.value !== c.spec.name || c.status === "DELETED";

    const [ev, up] = await Promise.all([api("GET", path + "/events"), api("GET", path + "/updates")]);
    if (ev.ok) {
      const now = Date.now();
      stages.replaceChildren(...timeline(ev.data.events).map((s) => h("tr", {},
        h("td", {}, s.stage),
        h("td", {}, h("span", { class: "state st-" + s.state }, s.state)),
        h("td", { class: "nowrap" }, new Date(s.start).toLocaleTimeString()),
        h("td", { class: "nowrap" }, duration((s.end ? Date.parse(s.end) : now) - Date.parse(s.start))),
        h("td", { class: "detail" }, s.detail))));
    }
    if (up.ok) {
      updates.replaceChildren(...up.data.updates.map((u) => h("tr", {},
        h("td", {}, u.kind), h("td", {}, asked(u.params)),
        h("td", {}, h("span", { class: "state st-" + u.status.toLowerCase() }, u.status)),
        h("td", {}, when(u.started_at)), h("td", {}, when(u.finished_at)),
        h("td", {}, u.failure ? `${u.failure.stage}: ${u.failure.reason}` : "—"))));
      if (up.data.updates.length === 0) updates.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No changes yet.")));
    }
  });
}

// ---- create -----------------------------------------------------------------------------------

// Every field of a create request (mecplane's ClusterRequest) the form has a control for, with
// the defaults the API fills in (mecplane/src/spec.rs) shown in the controls and hints.
const CREATE_FIELDS = ["name", "region", "control_planes", "workers", "instance_type", "ubuntu_release", "ami_id", "microk8s_channel", "addons",
  "subnet_ids", "worker_subnet_ids", "api_allowed_cidrs", "allow_api_from_anywhere", "api_endpoint", "extra_sans", "pod_security", "exposed_ports", "root_volume_gib", "tags", "retain_on_failure"];
const DEFAULTS = { instance_type: "t4g.medium", ubuntu_release: "24.04", microk8s_channel: "1.32/stable", addons: "dns", root_volume_gib: 20 };
const UBUNTU_RELEASES = ["22.04", "24.04"];
const INSTANCE_TYPES = ["t3.medium", "t3.large", "t4g.medium", "t4g.large", "m6i.large", "m7g.large", "c6i.large", "c7g.large"];

function createView(main) {
  // An idempotency key per distinct request while the form is open: a double click or a retry of
  // the same request is one cluster, an edited request is a new one.
  const sent = { body: null, key: null };
  const keyFor = (body) => {
    const text = JSON.stringify(body);
    if (sent.body !== text) Object.assign(sent, { body: text, key: "dashboard-" + crypto.randomUUID() });
    return sent.key;
  };
  const input = (id, attrs) => h("input", Object.assign({ id: "c-" + id, name: id, type: "text", autocomplete: "off", spellcheck: "false" }, attrs || {}));
  const check = (id) => h("input", { id: "c-" + id, name: id, type: "checkbox" });
  const cps = h("select", { id: "c-control_planes", name: "control_planes" }, h("option", { value: "1" }, "1"), h("option", { value: "3" }, "3 (high availability)"));
  const ubuntu = h("select", { id: "c-ubuntu_release", name: "ubuntu_release" },
    UBUNTU_RELEASES.map((r) => h("option", { value: r, selected: r === DEFAULTS.ubuntu_release }, `Ubuntu ${r} LTS`)));
  const types = h("datalist", { id: "instance-types" }, INSTANCE_TYPES.map((t) => h("option", { value: t })));
  const ports = portsEditor("c-exposed_ports", "Exposed ports", []);
  const general = h("p", { id: "create-error", class: "alert bad", role: "alert", tabindex: "-1", hidden: true });
  const submit = h("button", { type: "submit", class: "primary", id: "create-submit" }, "Create cluster");
  const form = h("form", { id: "create-form", class: "card create", novalidate: true },
    general,
    field("name", "Name", input("name", { required: true, "aria-required": "true", placeholder: "edge-1" }), "Required. Lowercase letters, digits and '-'; unique among live clusters."),
    field("region", "Region", input("region", { placeholder: "the API's region" }), "Default: the API's region."),
    field("control_planes", "Control planes", cps, "Default 1, or 3 for high availability."),
    field("workers", "Workers", input("workers", { type: "number", min: 0, inputmode: "numeric", value: "0" }), "Default 0 (at most 50, and the deployment's node limit)."),
    field("instance_type", "Instance type", input("instance_type", { value: DEFAULTS.instance_type, list: "instance-types" }), `Default ${DEFAULTS.instance_type}; the architecture follows from it. The deployment may allow only some types.`),
    types,
    field("ubuntu_release", "Ubuntu release", ubuntu, `Default ${DEFAULTS.ubuntu_release}.`),
    field("ami_id", "Image (AMI)", input("ami_id", { placeholder: "ami-0123456789abcdef0" }), "Default: the Ubuntu image of the release and architecture, looked up. Your own must exist in the region, fit the instance type's architecture and be of an owner the deployment allows."),
    field("microk8s_channel", "MicroK8s channel", input("microk8s_channel", { value: DEFAULTS.microk8s_channel }), `Default ${DEFAULTS.microk8s_channel}.`),
    field("addons", "Add-ons", input("addons", { value: DEFAULTS.addons }), `Comma-separated; default ${DEFAULTS.addons}.`),
    field("subnet_ids", "Subnets", input("subnet_ids", { placeholder: "subnet-0123456789abcdef0, subnet-…" }), "Comma-separated, of one VPC: control planes one per subnet in order (one per zone), workers round-robin. Default: a subnet of the default VPC."),
    field("worker_subnet_ids", "Worker subnets", input("worker_subnet_ids", { placeholder: "subnet-… (e.g. a Local Zone's)" }), "Comma-separated; the workers alone go there, round-robin. Default: the subnets above."),
    field("api_allowed_cidrs", "Kubernetes API allowed from", input("api_allowed_cidrs", { placeholder: "203.0.113.0/24" }), "Comma-separated IPv4 CIDRs; default none."),
    checkField("allow_api_from_anywhere", "Allow the Kubernetes API from anywhere", check("allow_api_from_anywhere"), "Needed for 0.0.0.0/0 above; default off."),
    field("api_endpoint", "API endpoint", h("select", { id: "c-api_endpoint", name: "api_endpoint" },
      h("option", { value: "node", selected: true }, "The first control plane's address"),
      h("option", { value: "nlb" }, "A network load balancer (stable name)")),
      "Default: the first control plane's address. A network load balancer forwards to every control plane; its DNS name is the kubeconfig's server."),
    field("extra_sans", "Extra certificate names", input("extra_sans", { placeholder: "k8s.example.com, 203.0.113.9" }), "Comma-separated DNS names or IPs the API certificate also carries (at most 10); default none."),
    field("pod_security", "Pod security", h("select", { id: "c-pod_security", name: "pod_security" },
      h("option", { value: "baseline", selected: true }, "baseline (no host namespaces or privileged pods)"),
      h("option", { value: "restricted" }, "restricted"),
      h("option", { value: "privileged" }, "privileged (nothing enforced)")),
      "Default baseline: the Pod Security Standard enforced in every namespace but the add-ons' own (kube-system, ingress, metallb-system, …)."),
    ports.el,
    field("root_volume_gib", "Root volume (GiB)", input("root_volume_gib", { type: "number", min: 8, inputmode: "numeric", value: String(DEFAULTS.root_volume_gib) }), `Default ${DEFAULTS.root_volume_gib} (at least 8, at most the deployment's limit, default 100).`),
    field("tags", "Tags", input("tags", { placeholder: "team=edge, env=dev" }), "Comma-separated key=value; default none."),
    checkField("retain_on_failure", "Keep the resources of a failed create", check("retain_on_failure"), "For inspection; default off (a failed create cleans up)."),
    h("div", { class: "form-actions" }, submit, h("a", { href: "#/" }, "Cancel")));
  main.append(h("div", { class: "title" }, h("h1", {}, "Create a cluster")), form);

  const v = (f) => document.getElementById("c-" + f).value.trim();
  const checked = (f) => document.getElementById("c-" + f).checked;
  const request = () => {
    const spec = { name: v("name"), control_planes: Number(v("control_planes")), ubuntu_release: v("ubuntu_release") };
    if (v("region")) spec.region = v("region");
    for (const f of ["workers", "root_volume_gib"]) if (v(f)) spec[f] = Number(v(f));
    for (const f of ["instance_type", "microk8s_channel", "ami_id"]) if (v(f)) spec[f] = v(f);
    for (const f of ["subnet_ids", "worker_subnet_ids"]) if (v(f)) spec[f] = list(v(f));
    spec.addons = list(v("addons"));
    if (v("api_allowed_cidrs")) spec.api_allowed_cidrs = list(v("api_allowed_cidrs"));
    if (v("api_endpoint") !== "node") spec.api_endpoint = v("api_endpoint");
    if (v("extra_sans")) spec.extra_sans = list(v("extra_sans"));
    if (v("pod_security") !== "baseline") spec.pod_security = v("pod_security");
    for (const f of ["allow_api_from_anywhere", "retain_on_failure"]) if (checked(f)) spec[f] = true;
    const exposed = ports.value();
    if (exposed.length) spec.exposed_ports = exposed;
    if (v("tags")) {
      spec.tags = {};
      for (const pair of list(v("tags"))) {
        const at = pair.indexOf("=");
        spec.tags[at < 0 ? pair : pair.slice(0, at).trim()] = at < 0 ? "" : pair.slice(at + 1).trim();
      }
    }
    return spec;
  };

  // The 422's field beside its control: `api_allowed_cidrs[1]` and `tags.env` name the entry,
  // `exposed_ports[0].cidrs[1]` goes to that row's control. False if the form has no such field.
  const showError = (name, message) => {
    const [root, rest] = splitField(name);
    if (root === "exposed_ports") return ports.show(rest, message);
    if (!CREATE_FIELDS.includes(root)) return false;
    const el = document.getElementById("c-" + root);
    const index = rest.match(/^\[(\d+)\]$/);
    const entry = index ? nth(el.value, Number(index[1])) : rest.startsWith(".") ? rest.slice(1) : undefined;
    markInvalid(root, el, entry !== undefined ? `“${entry}”: ${message}` : message);
    return true;
  };

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    general.hidden = true;
    clearInvalid(form);
    const spec = request();
    submit.disabled = true;
    try {
      const res = await api("POST", "/clusters", spec, { "Idempotency-Key": keyFor(spec) });
      if (res.ok) {
        location.hash = "#/clusters/" + encodeURIComponent(res.data.id);
        return;
      }
      const err = (res.data && res.data.error) || {};
      if (!(err.field && showError(err.field, err.message))) {
        general.textContent = errorText(res);
        general.hidden = false;
        general.focus();
      }
    } finally {
      submit.disabled = false;
    }
  });
  document.getElementById("c-name").focus();
}

// ---- routing ----------------------------------------------------------------------------------

function route() {
  clearInterval(timer);
  const main = document.getElementById("main");
  main.replaceChildren();
  document.title = "mecplane dashboard";
  const hash = location.hash || "#/";
  const m = hash.match(/^#\/clusters\/([^/]+)$/);
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === hash) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  if (hash === "#/create") createView(main);
  else if (m) clusterView(main, decodeURIComponent(m[1]));
  else fleetView(main);
}

// The URL's #token=… is taken out of the address bar at once, then spent: POST /session answers
// the session secret for it, once. A reload finds the secret in sessionStorage instead.
async function signIn() {
  let token = null;
  if (location.hash.startsWith("#token=")) {
    token = decodeURIComponent(location.hash.slice("#token=".length));
    history.replaceState(null, "", location.pathname + "#/");
  }
  if (token) {
    const r = await fetch("/session", { method: "POST", headers: { "X-Dashboard-Token": token }, credentials: "omit", cache: "no-store" });
    if (r.ok) {
      const secret = (await r.json()).session;
      sessionStorage.setItem(SESSION_KEY, secret);
      return secret;
    }
  }
  const stored = sessionStorage.getItem(SESSION_KEY);
  if (!stored) return null;
  const r = await fetch("/session", { headers: { "X-Dashboard-Session": stored }, credentials: "omit", cache: "no-store" });
  return r.ok ? stored : null;
}

async function start() {
  session = await signIn();
  if (!session) {
    sessionStorage.removeItem(SESSION_KEY);
    setLive("Not signed in: its URL works once; restart mecctl dashboard for a new one.", true);
    return;
  }
  setLive("Connected");
  window.addEventListener("hashchange", route);
  route();
}

start();
