// The dashboard: login, then a hash router over two views (the list, a domain's page).
// One event stream for the whole session; views subscribe to it.

import { api, token, setToken, clearToken, followEvents, esc, ApiError } from "./api.js";
import { listView } from "./list.js";
import { domainView } from "./domain.js";

// What tests and measurements read (first render, event-to-screen latency).
window.novacron = { firstRenderMs: null, firstPaintMs: null, eventLatencies: [] };

const main = document.getElementById("main");
const conn = document.getElementById("conn");
const logoutButton = document.getElementById("logout");
const listeners = new Set();
let stream = null;
let teardown = null;

/** Views call this to hear every event; returns the unsubscribe function. */
export function onEvent(f) {
  listeners.add(f);
  return () => listeners.delete(f);
}

function startStream() {
  if (stream) return;
  stream = new AbortController();
  followEvents(
    (ev) => listeners.forEach((f) => f(ev)),
    (up) => {
      conn.textContent = up ? "live" : "reconnecting…";
      document.body.dataset.live = up ? "1" : "0";
    },
    stream.signal,
  );
}

function logout() {
  clearToken();
  if (stream) stream.abort();
  stream = null;
  location.hash = "#/";
  route();
}

function loginView(message) {
  logoutButton.hidden = true;
  conn.textContent = "";
  main.innerHTML = `
    <form class="login" id="login" aria-labelledby="login-title">
      <h2 id="login-title">Log in</h2>
      <label for="token">API token</label>
      <input id="token" name="token" type="password" autocomplete="current-password" required>
      <p id="login-error" class="error" role="alert">${esc(message || "")}</p>
      <button type="submit">Log in</button>
    </form>`;
  const form = main.querySelector("#login");
  const input = form.querySelector("#token");
  input.focus();
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const t = input.value.trim();
    try {
      // Any read proves the token; the host's summary is the cheapest.
      await api("/v1/host", { tok: t });
      setToken(t);
      route();
    } catch (err) {
      const why = err instanceof ApiError && err.status === 401 ? "That token was not accepted." : `Cannot log in: ${err.message}`;
      form.querySelector("#login-error").textContent = why;
      input.select();
    }
  });
}

function route() {
  if (teardown) teardown();
  teardown = null;
  if (!token()) return loginView();
  logoutButton.hidden = false;
  startStream();
  const hash = decodeURIComponent(location.hash.slice(1) || "/");
  const m = hash.match(/^\/domain\/(.+)$/);
  teardown = m ? domainView(main, m[1], onEvent) : listView(main, onEvent);
}

window.addEventListener("hashchange", route);
window.addEventListener("novacron:unauthorized", () => {
  clearToken();
  if (stream) stream.abort();
  stream = null;
  loginView("The token is no longer accepted; log in again.");
});
logoutButton.addEventListener("click", logout);
route();
