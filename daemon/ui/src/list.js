// Every VM in one table: this host's domains and each remote host's, with live state from the
// event stream, filters and bulk actions.

import { api, esc } from "./api.js";

const STATES = ["running", "paused", "shutoff", "starting", "shutting_down", "migrating", "suspended", "crashed"];
const ACTIONS = ["start", "shutdown", "destroy"];
// One collator for every comparison (String.localeCompare builds one per call).
const byText = new Intl.Collator().compare;

export function listView(main, onEvent) {
  const t0 = performance.now();
  const rows = new Map(); // key -> {key, host, provider, name, state, remote}
  const cells = new Map(); // key -> the row's state <td>
  const selected = new Set();
  let filters = { host: "", provider: "", state: "", name: "", tag: "" };
  let loaded = false;
  let reloadTimer = null;

  main.innerHTML = `
    <h2>Virtual machines</h2>
    <form class="filters" id="filters" role="search" aria-label="Filter virtual machines">
      <label>Name <input id="f-name" type="search" placeholder="part of a name"></label>
      <label>Host <select id="f-host"><option value="">all</option></select></label>
      <label>Provider <select id="f-provider"><option value="">all</option></select></label>
      <label>State <select id="f-state"><option value="">all</option>${STATES.map((s) => `<option>${s}</option>`).join("")}</select></label>
      <label>Tag <input id="f-tag" type="search" placeholder="exact tag (this host)"></label>
    </form>
    <div class="bulk" role="group" aria-label="Actions on the selected machines">
      <span id="sel-count" aria-live="polite">0 selected</span>
      ${ACTIONS.map((a) => `<button type="button" data-action="${a}" disabled>${a[0].toUpperCase() + a.slice(1)}</button>`).join("")}
    </div>
    <ul class="results" id="results" aria-live="polite" aria-label="Results of the last action"></ul>
    <p id="problems" class="error" role="alert"></p>
    <table id="vms">
      <caption>Machines <span id="count"></span></caption>
      <thead><tr>
        <th scope="col"><input type="checkbox" id="select-all" aria-label="Select all shown machines"></th>
        <th scope="col">Name</th><th scope="col">Host</th><th scope="col">Provider</th><th scope="col">State</th>
      </tr></thead>
      <tbody></tbody>
    </table>`;
  const $ = (s) => main.querySelector(s);
  const tbody = $("#vms tbody");

  const keyOf = (host, name) => (host === null ? `L:${name}` : `R:${host}:${name}`);

  function shown(r) {
    return (!filters.host || r.host === filters.host)
      && (!filters.provider || r.provider === filters.provider)
      && (!filters.state || r.state === filters.state)
      && (!filters.name || r.name.toLowerCase().includes(filters.name.toLowerCase()));
  }

  function render() {
    const list = [...rows.values()].filter(shown).sort((a, b) => byText(a.name, b.name) || byText(a.host, b.host));
    tbody.innerHTML = list.map((r) => `<tr data-key="${esc(r.key)}">
      <td><input type="checkbox" class="sel" aria-label="Select ${esc(r.name)} on ${esc(r.host)}"${selected.has(r.key) ? " checked" : ""}></td>
      <td>${r.remote ? esc(r.name) : `<a href="#/domain/${encodeURIComponent(r.name)}">${esc(r.name)}</a>`}</td>
      <td>${esc(r.host)}</td><td>${esc(r.provider)}</td>
      <td class="state" data-state="${esc(r.state)}">${esc(r.state)}</td></tr>`).join("");
    cells.clear();
    for (const tr of tbody.rows) cells.set(tr.dataset.key, tr.cells[4]);
    $("#count").textContent = `(${list.length} shown of ${rows.size})`;
    for (const [sel, key] of [["#f-host", "host"], ["#f-provider", "provider"]]) {
      const el = $(sel);
      const have = new Set([...el.options].map((o) => o.value));
      for (const v of new Set([...rows.values()].map((r) => r[key]))) {
        if (!have.has(v)) el.add(new Option(v, v));
      }
    }
    updateSelection();
  }

  function updateSelection() {
    for (const k of selected) if (!rows.has(k)) selected.delete(k);
    $("#sel-count").textContent = `${selected.size} selected`;
    main.querySelectorAll("button[data-action]").forEach((b) => (b.disabled = selected.size === 0));
  }

  async function load() {
    const problems = [];
    const tag = filters.tag ? `?tag=${encodeURIComponent(filters.tag)}` : "";
    const [local, hosts] = await Promise.all([
      api(`/v1/domains${tag}`),
      api("/v1/hosts").catch((e) => (problems.push(`remote hosts: ${e.message}`), { hosts: [] })),
    ]);
    rows.clear();
    for (const d of local) rows.set(keyOf(null, d.name), { key: keyOf(null, d.name), host: "local", provider: "kvm", name: d.name, state: d.state, remote: false });
    // A tag filter applies to this host's domains (remote VMs carry no NovaCron tags).
    if (!filters.tag) {
      await Promise.all((hosts.hosts || []).map(async (h) => {
        try {
          const r = await api(`/v1/hosts/${encodeURIComponent(h.name)}/domains`);
          if (r.stale) problems.push(`${h.name}: stale inventory (${r.stale.reason})`);
          for (const d of r.domains) rows.set(keyOf(h.name, d.name), { key: keyOf(h.name, d.name), host: h.name, provider: h.driver, name: d.name, state: d.state || "unknown", remote: true });
        } catch (e) {
          problems.push(`${h.name}: ${e.message}`);
        }
      }));
    }
    $("#problems").textContent = problems.join("; ");
    const r0 = performance.now();
    render();
    if (!loaded) {
      loaded = true;
      // Measured once data is in the DOM (layout included: offsetHeight forces it).
      void tbody.offsetHeight;
      window.novacron.tableBuildMs = performance.now() - r0;
      if (window.novacron.firstRenderMs === null) window.novacron.firstRenderMs = performance.now();
      window.novacron.listRenderMs = performance.now() - t0;
      performance.mark("novacron:list-rendered");
      // After the frame that shows the table has been painted: a task queued from the
      // animation frame runs once that frame is out (what the dashboard bench reads).
      requestAnimationFrame(() => setTimeout(() => {
        if (window.novacron.firstPaintMs === null) window.novacron.firstPaintMs = performance.now();
        performance.mark("novacron:list-painted");
      }, 0));
      main.dataset.loaded = "1";
    }
  }

  function reloadSoon() {
    clearTimeout(reloadTimer);
    reloadTimer = setTimeout(() => load().catch(showError), 200);
  }

  function setState(key, state, ev) {
    const r = rows.get(key);
    if (!r) return reloadSoon();
    r.state = state;
    const td = cells.get(key);
    if (td) {
      td.textContent = state;
      td.dataset.state = state;
    }
    if (filters.state) render();
    if (ev && ev.time_unix_ms) window.novacron.eventLatencies.push(Date.now() - ev.time_unix_ms);
  }

  const off = onEvent((ev) => {
    if (ev.event === "state_changed") setState(keyOf(null, ev.domain), ev.to, ev);
    else if (ev.event === "remote_state_changed") {
      if (ev.to === null || ev.from === null) reloadSoon();
      else setState(keyOf(ev.host, ev.domain), ev.to, ev);
    } else if (ev.event === "defined" || ev.event === "undefined") reloadSoon();
  });

  async function bulk(action) {
    const targets = [...selected].map((k) => rows.get(k)).filter(Boolean);
    const list = $("#results");
    list.innerHTML = "";
    await Promise.all(targets.map(async (r) => {
      const li = document.createElement("li");
      li.dataset.key = r.key;
      li.textContent = `${r.name} (${r.host}): ${action}…`;
      list.append(li);
      const base = r.remote
        ? `/v1/hosts/${encodeURIComponent(r.host)}/domains/${encodeURIComponent(r.name)}`
        : `/v1/domains/${encodeURIComponent(r.name)}`;
      try {
        const op = await api(`${base}/${action}?wait=false`, { method: "POST" });
        const done = op && op.id ? await settle(op) : op;
        const failed = done && done.status === "failed";
        li.className = failed ? "failed" : "ok";
        li.textContent = `${r.name} (${r.host}): ${action} ${failed ? `failed: ${done.error?.message || ""}` : "done"}`;
      } catch (e) {
        li.className = "failed";
        li.textContent = `${r.name} (${r.host}): ${action} refused: ${e.message}`;
      }
    }));
  }

  /** Polls an accepted operation until it finished (the state itself comes by event). */
  async function settle(op) {
    for (let i = 0; i < 1200 && op.status === "running"; i++) {
      await new Promise((ok) => setTimeout(ok, 250));
      op = await api(`/v1/operations/${encodeURIComponent(op.id)}`);
    }
    return op;
  }

  function showError(e) {
    $("#problems").textContent = `Cannot list machines: ${e.message}`;
  }

  let nameTimer = null;
  $("#filters").addEventListener("input", (e) => {
    const id = e.target.id;
    if (id === "f-tag") {
      filters.tag = e.target.value.trim();
      clearTimeout(nameTimer);
      nameTimer = setTimeout(() => load().catch(showError), 300);
      return;
    }
    filters = { ...filters, host: $("#f-host").value, provider: $("#f-provider").value, state: $("#f-state").value, name: $("#f-name").value.trim() };
    render();
  });
  $("#filters").addEventListener("submit", (e) => e.preventDefault());
  tbody.addEventListener("change", (e) => {
    if (!e.target.classList.contains("sel")) return;
    const key = e.target.closest("tr").dataset.key;
    if (e.target.checked) selected.add(key);
    else selected.delete(key);
    updateSelection();
  });
  $("#select-all").addEventListener("change", (e) => {
    for (const tr of tbody.rows) {
      tr.cells[0].firstElementChild.checked = e.target.checked;
      if (e.target.checked) selected.add(tr.dataset.key);
      else selected.delete(tr.dataset.key);
    }
    updateSelection();
  });
  main.querySelectorAll("button[data-action]").forEach((b) => b.addEventListener("click", () => bulk(b.dataset.action)));
  // "/" jumps to the name filter, as in many list UIs.
  const slash = (e) => {
    if (e.key === "/" && !["INPUT", "SELECT", "TEXTAREA"].includes(document.activeElement.tagName)) {
      e.preventDefault();
      $("#f-name").focus();
    }
  };
  document.addEventListener("keydown", slash);

  load().catch(showError);
  return () => {
    off();
    clearTimeout(reloadTimer);
    document.removeEventListener("keydown", slash);
  };
}
