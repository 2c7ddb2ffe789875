// godel dashboard: the API client. Every call goes to /v1 with the token
// typed at the login form (kept in sessionStorage, never in a cookie).
"use strict";
window.G = window.G || {};
(function (G) {
  const KEY = "godel.token";
  G.token = () => sessionStorage.getItem(KEY);
  G.setToken = (t) => (t ? sessionStorage.setItem(KEY, t) : sessionStorage.removeItem(KEY));

  // An error answered by the API: {code, message}.
  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }
  G.ApiError = ApiError;

  G.call = async function (method, path, body, token) {
    const headers = { Authorization: "Bearer " + (token || G.token() || "") };
    const init = { method, headers };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    const text = await r.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = text; }
    }
    if (!r.ok) {
      const code = (data && data.code) || "HTTP_" + r.status;
      const msg = (data && data.message) || r.statusText;
      throw new ApiError(r.status, code, msg);
    }
    return data;
  };
  G.get = (path) => G.call("GET", path);
  G.post = (path, body) => G.call("POST", path, body === undefined ? {} : body);

  // Server-sent events over fetch (EventSource cannot send a bearer header).
  // Calls onEvent({kind, seq, data...}) for each event; onState(true|false)
  // when the stream opens or drops; reconnects after a drop. Returns a stop().
  G.events = function (onEvent, onState) {
    let stopped = false, ctrl = null, since = null;
    async function run() {
      while (!stopped) {
        ctrl = new AbortController();
        try {
          const q = since === null ? "" : "?since=" + since;
          const r = await fetch("/v1/events" + q, {
            headers: { Authorization: "Bearer " + G.token(), Accept: "text/event-stream" },
            signal: ctrl.signal,
          });
          if (!r.ok) throw new Error("events: HTTP " + r.status);
          onState(true);
          const reader = r.body.getReader();
          const dec = new TextDecoder();
          let buf = "";
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += dec.decode(value, { stream: true });
            let i;
            while ((i = buf.indexOf("\n\n")) >= 0) {
              const block = buf.slice(0, i);
              buf = buf.slice(i + 2);
              const data = block.split("\n").filter((l) => l.startsWith("data:"))
                .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
              if (!data) continue;
              try {
                const ev = JSON.parse(data);
                if (typeof ev.seq === "number") since = ev.seq;
                onEvent(ev);
              } catch (_) { /* keep-alive or partial */ }
            }
          }
        } catch (e) {
          if (stopped) return;
        }
        onState(false);
        if (!stopped) await new Promise((res) => setTimeout(res, 1000));
      }
    }
    run();
    return () => { stopped = true; if (ctrl) ctrl.abort(); };
  };

  // ---- formatting ----
  const ESC = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  G.esc = (s) => String(s === undefined || s === null ? "" : s).replace(/[&<>"']/g, (c) => ESC[c]);
  G.bytes = function (n) {
    if (n === undefined || n === null) return "–";
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (Math.abs(n) >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(n < 10 ? 2 : 1)) + " " + u[i];
  };
  G.usd = (n) => "$" + (n || 0).toFixed(n && Math.abs(n) < 1 ? 4 : 2);
  G.pct = (n) => (100 * (n || 0)).toFixed(1) + "%";
  G.num = (n, d) => (n === undefined || n === null ? "–" : Number(n).toFixed(d || 0));
  G.time = (t) => (t ? new Date(t).toLocaleString() : "–");
  G.clock = (t) => (t ? new Date(t).toLocaleTimeString() : "–");
  G.ms = (n) => (n === undefined || n === null ? "–" : n < 1000 ? n + " ms" : (n / 1000).toFixed(2) + " s");
  G.badge = (s) => '<span class="badge s-' + G.esc(s) + '">' + G.esc(s) + "</span>";
})(window.G);
