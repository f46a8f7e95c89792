// Talking to novacrond: every call carries the token typed at login (kept in sessionStorage,
// so it is gone with the tab). The event stream is read with fetch, not EventSource: only
// fetch can send the Authorization header, so the token never goes into a URL or a log.

const KEY = "novacron.token";

export const token = () => sessionStorage.getItem(KEY);
export const setToken = (t) => sessionStorage.setItem(KEY, t);
export const clearToken = () => sessionStorage.removeItem(KEY);

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** One call; resolves to the parsed JSON (or text), rejects with an ApiError. */
// `tok`: a token being tried (login) instead of the session's; its 401 is the caller's to show.
export async function api(path, { method = "GET", body, accept = "application/json", tok } = {}) {
  const trying = tok !== undefined;
  if (!trying) tok = token();
  const headers = { Accept: accept, Authorization: `Bearer ${tok}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const type = r.headers.get("content-type") || "";
  const data = type.includes("json") ? await r.json().catch(() => null) : await r.text();
  if (!r.ok) {
    const e = data && data.error ? data.error : {};
    if (r.status === 401 && !trying) window.dispatchEvent(new Event("novacron:unauthorized"));
    throw new ApiError(r.status, e.code || String(r.status), e.message || r.statusText);
  }
  return data;
}

/** The bytes of a binary answer (the screenshot) as a Blob. */
export async function blob(path) {
  const r = await fetch(path, { headers: { Authorization: `Bearer ${token()}` } });
  if (!r.ok) throw new ApiError(r.status, String(r.status), r.statusText);
  return r.blob();
}

/**
 * Follows GET /v1/events until `signal` aborts: each event is passed to `onEvent`; after a
 * dropped stream it reconnects with Last-Event-ID so nothing is missed.
 * `onState(connected)` tells the header.
 */
export async function followEvents(onEvent, onState, signal) {
  let last = null;
  while (!signal.aborted) {
    try {
      const headers = { Authorization: `Bearer ${token()}`, Accept: "text/event-stream" };
      if (last !== null) headers["Last-Event-ID"] = String(last);
      const r = await fetch("/v1/events", { headers, signal });
      if (r.status === 401) {
        window.dispatchEvent(new Event("novacron:unauthorized"));
        return;
      }
      if (!r.ok) throw new Error(`events: ${r.status}`);
      onState(true);
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let end;
        while ((end = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, end);
          buf = buf.slice(end + 2);
          let data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("data: ")) data += line.slice(6);
            else if (line.startsWith("id: ")) last = Number(line.slice(4));
          }
          if (data) {
            try {
              onEvent(JSON.parse(data));
            } catch (e) {
              console.error("bad event", e);
            }
          }
        }
      }
    } catch (e) {
      if (signal.aborted) return;
    }
    onState(false);
    await new Promise((ok) => setTimeout(ok, 1000));
  }
}

/** HTML-escapes text for the template strings the views are built from. */
export function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
