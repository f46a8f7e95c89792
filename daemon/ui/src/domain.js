// One domain: state and actions, its definition, live figures from /metrics, its serial
// console (xterm.js) and its screen (noVNC).

import { api, blob, esc } from "./api.js";
import { Chart, bytes } from "./chart.js";

const SAMPLE_MS = 2000;

export function domainView(main, name, onEvent) {
  const enc = encodeURIComponent(name);
  const cleanups = [];
  main.innerHTML = `
    <p><a href="#/">← All machines</a></p>
    <h2>${esc(name)} <small>state: <span id="state" role="status">…</span></small></h2>
    <div class="bulk" role="group" aria-label="Actions on ${esc(name)}">
      ${["start", "shutdown", "reboot", "destroy"].map((a) => `<button type="button" data-action="${a}">${a[0].toUpperCase() + a.slice(1)}</button>`).join("")}
      <span id="action-result" aria-live="polite"></span>
    </div>
    <section aria-labelledby="h-figures"><h3 id="h-figures">Figures</h3>
      <div class="grid" id="charts"></div>
      <p><small>Network rates: the daemon exports no per-NIC counters yet (see /metrics).</small></p>
    </section>
    <section aria-labelledby="h-console"><h3 id="h-console">Serial console</h3>
      <button type="button" id="open-console">Open serial console</button>
      <label><input type="checkbox" id="console-viewer"> read-only viewer</label>
      <p id="console-status" role="status"></p>
      <div id="term" class="term" hidden></div>
    </section>
    <section aria-labelledby="h-screen"><h3 id="h-screen">Screen</h3>
      <button type="button" id="open-screen">Open screen</button>
      <button type="button" id="snapshot">Screenshot</button>
      <p id="screen-status" role="status"></p>
      <img id="shot" alt="Screenshot of ${esc(name)}" hidden>
      <div id="screen" class="screen" hidden></div>
    </section>
    <section aria-labelledby="h-xml"><h3 id="h-xml">Definition</h3><pre class="xml" id="xml" tabindex="0" aria-label="Definition XML">…</pre></section>`;
  const $ = (s) => main.querySelector(s);

  const showState = (s) => {
    $("#state").textContent = s;
    $("#state").dataset.state = s;
  };
  api(`/v1/domains/${enc}`).then((d) => showState(d.state), (e) => showState(`unknown (${e.message})`));
  api(`/v1/domains/${enc}/xml`, { accept: "application/xml" }).then((x) => ($("#xml").textContent = x), (e) => ($("#xml").textContent = e.message));
  cleanups.push(onEvent((ev) => {
    if (ev.event === "state_changed" && ev.domain === name) showState(ev.to);
  }));

  main.querySelectorAll("button[data-action]").forEach((b) => b.addEventListener("click", async () => {
    const out = $("#action-result");
    out.textContent = `${b.dataset.action}…`;
    try {
      await api(`/v1/domains/${enc}/${b.dataset.action}?wait=false`, { method: "POST" });
      out.textContent = `${b.dataset.action} accepted`;
    } catch (e) {
      out.textContent = `${b.dataset.action} refused: ${e.message}`;
    }
  }));

  // Figures: rates between two scrapes of /metrics.
  const charts = $("#charts");
  const cpu = new Chart(charts, "CPU (vCPU time, % of one CPU)", (v) => `${v.toFixed(1)} %`);
  const mem = new Chart(charts, "Memory (QEMU resident)", bytes);
  const rd = new Chart(charts, "Disk read", (v) => `${bytes(v)}/s`);
  const wr = new Chart(charts, "Disk write", (v) => `${bytes(v)}/s`);
  let prev = null;
  async function sample() {
    try {
      const text = await api("/metrics", { accept: "text/plain" });
      const now = performance.now();
      const m = figures(text, name);
      if (prev) {
        const dt = (now - prev.at) / 1000;
        cpu.push(m.cpu === null || prev.cpu === null ? null : Math.max(0, ((m.cpu - prev.cpu) / dt) * 100));
        rd.push(Math.max(0, (m.read - prev.read) / dt));
        wr.push(Math.max(0, (m.write - prev.write) / dt));
      }
      mem.push(m.rss);
      prev = { ...m, at: now };
    } catch (e) {
      /* the next sample tries again */
    }
  }
  sample();
  const timer = setInterval(sample, SAMPLE_MS);
  cleanups.push(() => clearInterval(timer));

  $("#open-console").addEventListener("click", () => openConsole($, enc, cleanups));
  $("#open-screen").addEventListener("click", () => openScreen($, enc, cleanups));
  $("#snapshot").addEventListener("click", async () => {
    try {
      const img = $("#shot");
      if (img.src) URL.revokeObjectURL(img.src);
      img.src = URL.createObjectURL(await blob(`/v1/domains/${enc}/screenshot`));
      img.hidden = false;
    } catch (e) {
      $("#screen-status").textContent = `No screenshot: ${e.message}`;
    }
  });

  return () => cleanups.forEach((f) => f());
}

/** This domain's figures from a Prometheus text scrape. */
export function figures(text, name) {
  const label = `domain="${name.replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n")}"`;
  const m = { cpu: null, rss: null, read: 0, write: 0 };
  for (const line of text.split("\n")) {
    if (!line.includes(label)) continue;
    const value = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (line.startsWith("novacron_domain_vcpu_seconds_total{")) m.cpu = (m.cpu ?? 0) + value;
    else if (line.startsWith("novacron_domain_memory_rss_bytes{")) m.rss = value;
    else if (line.startsWith("novacron_domain_block_read_bytes_total{")) m.read += value;
    else if (line.startsWith("novacron_domain_block_write_bytes_total{")) m.write += value;
  }
  return m;
}

const wsUrl = (path) => `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${path}`;

async function ticket(enc, kind) {
  const t = await api(`/v1/domains/${enc}/${kind}/ticket`, { method: "POST" });
  return encodeURIComponent(t.ticket);
}

async function openConsole($, enc, cleanups) {
  const status = $("#console-status");
  let Terminal;
  try {
    ({ Terminal } = await import("./vendor/xterm/xterm.mjs"));
  } catch (e) {
    status.textContent = "xterm.js is not built into this daemon (run ./quickstart.sh).";
    return;
  }
  if (!document.querySelector("link[data-xterm]")) {
    const link = document.createElement("link");
    link.rel = "stylesheet";
    link.href = "vendor/xterm/xterm.css";
    link.dataset.xterm = "1";
    document.head.append(link);
  }
  try {
    const mode = $("#console-viewer").checked ? "viewer" : "writer";
    const ws = new WebSocket(wsUrl(`/v1/domains/${enc}/console?ticket=${await ticket(enc, "console")}&mode=${mode}`));
    ws.binaryType = "arraybuffer";
    const el = $("#term");
    el.hidden = false;
    el.innerHTML = "";
    const term = new Terminal({ convertEol: false, scrollback: 5000, screenReaderMode: true });
    term.open(el);
    term.focus();
    window.novacron.term = term;
    const keys = new TextEncoder();
    term.onData((d) => ws.readyState === WebSocket.OPEN && ws.send(keys.encode(d)));
    ws.onopen = () => (status.textContent = `connected (${mode})`);
    ws.onmessage = (m) => term.write(new Uint8Array(m.data));
    ws.onclose = (e) => (status.textContent = `disconnected${e.reason ? `: ${e.reason}` : ""}`);
    cleanups.push(() => {
      ws.close();
      term.dispose();
    });
  } catch (e) {
    status.textContent = `Cannot open the console: ${e.message}`;
  }
}

async function openScreen($, enc, cleanups) {
  const status = $("#screen-status");
  let RFB;
  try {
    ({ default: RFB } = await import("./vendor/novnc/core/rfb.js"));
  } catch (e) {
    status.textContent = "noVNC is not built into this daemon (run ./quickstart.sh).";
    return;
  }
  try {
    const el = $("#screen");
    el.hidden = false;
    el.innerHTML = "";
    const rfb = new RFB(el, wsUrl(`/v1/domains/${enc}/vnc?ticket=${await ticket(enc, "vnc")}`));
    rfb.scaleViewport = true;
    window.novacron.rfb = rfb;
    rfb.addEventListener("connect", () => (status.textContent = "connected"));
    rfb.addEventListener("disconnect", (e) => (status.textContent = e.detail.clean ? "disconnected" : "connection lost"));
    cleanups.push(() => rfb.disconnect());
  } catch (e) {
    status.textContent = `Cannot open the screen: ${e.message}`;
  }
}
