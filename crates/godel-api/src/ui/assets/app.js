// godel dashboard: login, hash routing (#/overview, #/agents/ID, #/teams,
// #/benchmarks), the live event stream and the shared list of agents.
"use strict";
(function (G) {
  const $ = (sel) => document.querySelector(sel);
  G.agents = new Map();
  let current = null, stopEvents = null;

  // Run fn once after `ms`, however often it is asked for meanwhile.
  const pending = {};
  G.soon = (key, fn, ms) => {
    if (pending[key]) return;
    pending[key] = setTimeout(() => { delete pending[key]; fn(); }, ms);
  };

  G.say = function (html, isError) {
    const s = $("#status");
    s.className = "status" + (isError ? " err" : "");
    s.innerHTML = html;
  };
  G.fail = function (e) {
    if (e && e.status === 401) return logout("Your token was refused: sign in again.");
    G.say(G.esc((e && e.code ? e.code + ": " : "") + (e && e.message ? e.message : String(e))), true);
  };
  // Run an action from a button: disable it meanwhile, report the outcome.
  G.act = async function (_what, fn, button) {
    if (button) button.disabled = true;
    try {
      G.say(await fn());
    } catch (e) {
      G.fail(e);
    } finally {
      if (button) button.disabled = false;
    }
  };

  G.loadAgents = async function () {
    const list = await G.get("/v1/runtimes");
    G.agents = new Map(list.map((a) => [a.id, a]));
    G.agentsLoaded = true;
  };

  function onEvent(ev) {
    const id = ev.runtime_id;
    if (id && ev.kind === "state_changed" && ev.data && ev.data.state) {
      const a = G.agents.get(id);
      if (ev.data.state === "stopped") {
        G.agents.delete(id);
      } else if (a) {
        a.state = ev.data.state;
        if (ev.data.runtime) a.runtime = ev.data.runtime;
      } else {
        // A new agent: show it at once from the event, then fill in its record.
        G.agents.set(id, { id, team: ev.team || "", runtime: ev.data.runtime || "", state: ev.data.state, created_at: ev.time });
        G.get("/v1/runtimes/" + encodeURIComponent(id)).then((r) => {
          if (G.agents.has(id)) G.agents.set(id, r);
          if (current && current.onEvent) current.onEvent(ev);
        }).catch(() => {});
      }
    }
    if (current && current.onEvent) current.onEvent(ev);
  }

  function setLive(on) {
    // Events may have been missed while the stream was down: reload the agents.
    if (on && G.wasOff) G.loadAgents().then(() => current && current.onEvent && current.onEvent({})).catch(G.fail);
    G.wasOff = !on;
    const l = $("#live");
    l.hidden = false;
    l.classList.toggle("off", !on);
    $("#live-text").textContent = on ? "live" : "reconnecting…";
  }

  async function route() {
    if (!G.token()) return showLogin();
    const h = location.hash || "#/overview";
    const m = h.match(/^#\/agents\/(.+)$/);
    const name = m ? "agent" : (h.slice(2) in G.pages ? h.slice(2) : "overview");
    if (current && current.leave) current.leave();
    current = G.pages[name];
    document.querySelectorAll("#nav a").forEach((a) => {
      if (a.dataset.page === name) a.setAttribute("aria-current", "page");
      else a.removeAttribute("aria-current");
    });
    document.title = current.title + " · godel";
    G.say("");
    const page = $("#page");
    page.setAttribute("aria-busy", "true");
    const t0 = performance.now();
    try {
      await current.enter(page, m ? decodeURIComponent(m[1]) : undefined);
    } catch (e) {
      G.fail(e);
    }
    page.setAttribute("aria-busy", "false");
    // The time from navigation to a drawn page (read by the benchmark).
    G.lastRender = { page: name, ms: performance.now() - t0 };
    page.dataset.renderMs = G.lastRender.ms.toFixed(1);
  }

  function showLogin(msg) {
    $("#login").hidden = false;
    $("#page").innerHTML = "";
    $("#nav").hidden = $("#logout").hidden = $("#live").hidden = true;
    $("#who").textContent = "";
    $("#login-error").textContent = msg || "";
    $("#token").focus();
  }

  // After a sign-in, focus moves to the page (a reload leaves it alone).
  async function start(focusMain) {
    $("#login").hidden = true;
    $("#nav").hidden = $("#logout").hidden = false;
    // Admin tokens may read /metrics; team tokens are refused it.
    const r = await fetch("/metrics", { headers: { Authorization: "Bearer " + G.token() } });
    G.admin = r.ok;
    $("#who").textContent = G.admin ? "admin" : "team token";
    if (stopEvents) stopEvents();
    stopEvents = G.events(onEvent, setLive);
    await route();
    if (focusMain) $("#main").focus();
  }

  function logout(msg) {
    G.setToken(null);
    if (stopEvents) stopEvents();
    stopEvents = null;
    if (current && current.leave) current.leave();
    current = null;
    G.agents = new Map();
    G.agentsLoaded = false;
    showLogin(msg);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("#login-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const t = $("#token").value.trim();
      try {
        await G.call("GET", "/v1/health", undefined, t);
      } catch (err) {
        $("#login-error").textContent = err.status === 401 ? "That token was not accepted." : err.message;
        return;
      }
      G.setToken(t);
      $("#token").value = "";
      start(true).catch(G.fail);
    });
    $("#logout").addEventListener("click", () => logout());
    window.addEventListener("hashchange", () => { if (G.token()) route(); });
    if (G.token()) start().catch(G.fail);
    else showLogin();
  });
})(window.G);
