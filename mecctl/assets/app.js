// mecctl dashboard: the single page. Three views by hash (#/, #/clusters/<id>, #/create), each
// polling the dashboard server's /api (a 1:1 forward of the mecplane API) every 2 s. Everything is
// built with DOM calls and textContent: no HTML from data is ever parsed.
"use strict";

// Errors the page met (read by the end-to-end test; handy in the console too).
window.dashboardErrors = [];
window.addEventListener("error", (e) => window.dashboardErrors.push(String(e.message)));
window.addEventListener("unhandledrejection", (e) => window.dashboardErrors.push(String(e.reason)));

const STATUSES = ["CREATING", "ACTIVE", "UPDATING", "DEGRADED", "FAILED", "DELETING", "DELETED"];
const POLL_MS = 2000;
let csrf = null;
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
  const init = { method, headers: Object.assign({}, headers || {}), credentials: "same-origin", cache: "no-store" };
  if (method !== "GET") init.headers["X-Dashboard-Token"] = csrf;
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

function field(id, labelText, input, hint) {
  return h("div", { class: "field", id: "field-" + id },
    h("label", { for: input.id }, labelText),
    input,
    hint ? h("p", { class: "hint", id: "hint-" + id }, hint) : null,
    h("p", { class: "field-error", id: "err-" + id, hidden: true }));
}

function list(text) {
  return text.split(",").map((s) => s.trim()).filter(Boolean);
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
  const search = h("input", { id: "filter-search", type: "search", placeholder: "name, id or region", autocomplete: "off" });
  const summary = h("div", { class: "summary" });
  const tbody = h("tbody", { id: "clusters-body" });
  main.append(
    h("div", { class: "title" }, h("h1", {}, "Fleet"), h("a", { class: "button primary", href: "#/create" }, "Create cluster")),
    summary,
    h("div", { class: "filters" }, field("status", "Status", status), field("search", "Search", search)),
    h("div", { class: "table-wrap" },
      h("table", { class: "clusters" },
        h("thead", {}, h("tr", {}, ["Name", "Status", "Stage", "Nodes ready", "Region", "Channel", "Age"].map((c) => h("th", { scope: "col" }, c)))),
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
      (!term || [c.spec.name, c.id, c.spec.region].some((v) => v.toLowerCase().includes(term))));
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

function row(c) {
  const ready = c.nodes.filter((n) => n.state === "ready").length;
  const total = c.spec.control_planes + c.spec.workers;
  const failure = c.failure ? `${c.failure.stage}: ${c.failure.reason}` : null;
  return h("tr", { "data-id": c.id },
    h("td", {}, h("a", { href: "#/clusters/" + encodeURIComponent(c.id) }, c.spec.name),
      h("div", { class: "sub mono" }, c.id)),
    h("td", { title: failure }, badge(c.status),
      failure && c.status === "FAILED" ? h("div", { class: "sub reason" }, failure) : null,
      c.degraded ? h("div", { class: "sub reason" }, c.degraded.reason) : null),
    h("td", {}, c.stage || "—"),
    h("td", {}, `${ready}/${total}`),
    h("td", {}, c.spec.region),
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
  const change = async (label, body) => {
    say(label + "…");
    const res = await api("PATCH", path, body, etag ? { "If-Match": etag } : {});
    if (res.status === 412) say("The cluster changed meanwhile: check it and try again.", true);
    else if (res.ok) say(res.status === 200 ? "Nothing to change." : label + " started.");
    else say(errorText(res), true);
  };
  const changeable = () => record && (record.status === "ACTIVE" || record.status === "DEGRADED");

  const buildActions = () => {
    const workers = h("input", { id: "act-workers", type: "number", min: 0, inputmode: "numeric", value: record.spec.workers });
    const channel = h("input", { id: "act-channel", type: "text", value: record.spec.microk8s_channel, autocomplete: "off" });
    const addons = h("input", { id: "act-addons", type: "text", value: record.spec.addons.join(", "), autocomplete: "off" });
    const confirmName = h("input", { id: "act-confirm", type: "text", autocomplete: "off", "aria-describedby": "hint-confirm" });
    const del = h("button", { type: "submit", id: "act-delete", class: "danger", disabled: true }, "Delete cluster");
    confirmName.addEventListener("input", () => { del.disabled = confirmName.value !== record.spec.name; });
    const form = (name, onsubmit, ...kids) => h("form", { class: "action", "aria-label": name, onsubmit: (e) => { e.preventDefault(); onsubmit(); } }, kids);
    actions.append(
      form("Scale", () => change("Scale", { workers: Number(workers.value) }),
        field("workers", "Workers", workers), h("button", { type: "submit", class: "needs-active" }, "Scale")),
      form("Upgrade", () => change("Upgrade", { microk8s_channel: channel.value.trim() }),
        field("channel", "MicroK8s channel", channel, "One minor up, e.g. 1.33/stable"), h("button", { type: "submit", class: "needs-active" }, "Upgrade")),
      form("Add-ons", () => change("Add-ons change", { addons: list(addons.value) }),
        field("addons", "Add-ons", addons, "Comma-separated, e.g. dns, ingress"), h("button", { type: "submit", class: "needs-active" }, "Save add-ons")),
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
      h("thead", {}, h("tr", {}, ["Role", "Index", "Instance", "Private IP", "Public IP", "State", "Channel", ""].map((c) => h("th", { scope: "col" }, c)))), nodes))),
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
    const fact = (k, v) => [h("dt", {}, k), h("dd", {}, v)];
    facts.replaceChildren(...[
      fact("Id", h("span", { class: "mono" }, c.id)),
      fact("Stage", c.stage || "—"),
      fact("Region", c.spec.region),
      fact("Nodes", `${c.spec.control_planes} control plane${c.spec.control_planes > 1 ? "s" : ""}, ${c.spec.workers} worker${c.spec.workers === 1 ? "" : "s"}`),
      fact("Instance type", `${c.spec.instance_type} (${c.spec.arch})`),
      fact("MicroK8s", c.spec.microk8s_channel),
      fact("Add-ons", c.spec.addons.join(", ") || "none"),
      fact("API endpoint", c.endpoint || "—"),
      fact("API allowed from", c.spec.api_allowed_cidrs.join(", ") || "nowhere"),
      fact("Created", when(c.created_at)),
    ].flat());
    nodes.replaceChildren(...c.nodes.map((n) => h("tr", {},
      h("td", {}, n.role), h("td", {}, n.index), h("td", { class: "mono nowrap" }, n.instance_id),
      h("td", { class: "mono nowrap" }, n.private_ip || "—"), h("td", { class: "mono nowrap" }, n.public_ip || "—"),
      h("td", {}, h("span", { class: "state st-" + n.state }, n.state)), h("td", {}, n.channel || "—"),
      h("td", {}, h("button", { type: "button", class: "small needs-active", "aria-label": `Replace ${n.role} ${n.index} (${n.instance_id})`, disabled: !changeable(), onclick: () => replace(n) }, "Replace")))));
    if (c.nodes.length === 0) nodes.append(h("tr", {}, h("td", { colspan: 8, class: "muted" }, "No nodes yet.")));
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
        h("td", {}, u.kind), h("td", { class: "mono" }, JSON.stringify(u.params)),
        h("td", {}, h("span", { class: "state st-" + u.status.toLowerCase() }, u.status)),
        h("td", {}, when(u.started_at)), h("td", {}, when(u.finished_at)),
        h("td", {}, u.failure ? `${u.failure.stage}: ${u.failure.reason}` : "—"))));
      if (up.data.updates.length === 0) updates.append(h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No changes yet.")));
    }
  });
}

// ---- create -----------------------------------------------------------------------------------

const CREATE_FIELDS = ["name", "region", "control_planes", "workers", "instance_type", "microk8s_channel", "addons", "api_allowed_cidrs", "tags"];

function createView(main) {
  const input = (id, attrs) => h("input", Object.assign({ id: "c-" + id, name: id, type: "text", autocomplete: "off" }, attrs || {}));
  const cps = h("select", { id: "c-control_planes", name: "control_planes" }, h("option", { value: "1" }, "1"), h("option", { value: "3" }, "3 (high availability)"));
  const general = h("p", { id: "create-error", class: "alert bad", role: "alert", hidden: true });
  const submit = h("button", { type: "submit", class: "primary", id: "create-submit" }, "Create cluster");
  const form = h("form", { id: "create-form", class: "card create", novalidate: true },
    general,
    field("name", "Name", input("name", { required: true, "aria-required": "true", placeholder: "edge-1" }), "Lowercase letters, digits and '-'; unique among live clusters."),
    field("region", "Region", input("region", { placeholder: "the API's region" }), "Default: the API's region."),
    field("control_planes", "Control planes", cps, "1, or 3 for high availability."),
    field("workers", "Workers", input("workers", { type: "number", min: 0, inputmode: "numeric", value: "0" }), "Default 0 (at most 50, and the deployment's node limit)."),
    field("instance_type", "Instance type", input("instance_type", { value: "t4g.medium" }), "Default t4g.medium; the architecture follows from it."),
    field("microk8s_channel", "MicroK8s channel", input("microk8s_channel", { value: "1.32/stable" }), "Default 1.32/stable."),
    field("addons", "Add-ons", input("addons", { value: "dns" }), "Comma-separated; default dns."),
    field("api_allowed_cidrs", "Kubernetes API allowed from", input("api_allowed_cidrs", { placeholder: "203.0.113.0/24" }), "Comma-separated IPv4 CIDRs; default none."),
    field("tags", "Tags", input("tags", { placeholder: "team=edge, env=dev" }), "Comma-separated key=value."),
    h("div", { class: "form-actions" }, submit, h("a", { href: "#/" }, "Cancel")));
  main.append(h("div", { class: "title" }, h("h1", {}, "Create a cluster")), form);

  const clearErrors = () => {
    general.hidden = true;
    for (const f of CREATE_FIELDS) {
      const err = document.getElementById("err-" + f);
      err.hidden = true;
      err.textContent = "";
      const el = document.getElementById("c-" + f);
      el.removeAttribute("aria-invalid");
      el.setAttribute("aria-describedby", "hint-" + f);
    }
  };

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors();
    const v = (f) => document.getElementById("c-" + f).value.trim();
    const spec = { name: v("name"), control_planes: Number(v("control_planes")) };
    if (v("region")) spec.region = v("region");
    if (v("workers")) spec.workers = Number(v("workers"));
    for (const f of ["instance_type", "microk8s_channel"]) if (v(f)) spec[f] = v(f);
    spec.addons = list(v("addons"));
    if (v("api_allowed_cidrs")) spec.api_allowed_cidrs = list(v("api_allowed_cidrs"));
    if (v("tags")) {
      spec.tags = {};
      for (const pair of list(v("tags"))) {
        const at = pair.indexOf("=");
        spec.tags[at < 0 ? pair : pair.slice(0, at).trim()] = at < 0 ? "" : pair.slice(at + 1).trim();
      }
    }
    submit.disabled = true;
    try {
      const res = await api("POST", "/clusters", spec);
      if (res.ok) {
        location.hash = "#/clusters/" + encodeURIComponent(res.data.id);
        return;
      }
      const err = (res.data && res.data.error) || {};
      const root = String(err.field || "").split(/[.[]/)[0];
      if (CREATE_FIELDS.includes(root)) {
        const slot = document.getElementById("err-" + root);
        slot.textContent = err.message;
        slot.hidden = false;
        const el = document.getElementById("c-" + root);
        el.setAttribute("aria-invalid", "true");
        el.setAttribute("aria-describedby", `err-${root} hint-${root}`);
        el.focus();
      } else {
        general.textContent = errorText(res);
        general.hidden = false;
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

async function start() {
  const r = await fetch("/session", { credentials: "same-origin", cache: "no-store" });
  if (!r.ok) {
    setLive("Not signed in: open the URL mecctl dashboard printed.", true);
    return;
  }
  csrf = (await r.json()).csrf;
  window.addEventListener("hashchange", route);
  route();
}

start();
