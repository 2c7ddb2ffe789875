// godel dashboard: the four pages. Each page has enter(el, arg) that draws
// its skeleton and loads data, optional onEvent(ev) for live events, and
// leave() that stops its timers.
"use strict";
(function (G) {
  const $ = (sel, el) => (el || document).querySelector(sel);
  const every = (fn, ms) => { const t = setInterval(fn, ms); return () => clearInterval(t); };
  G.pages = {};

  // ------------------------------------------------------------ overview
  const ov = { timers: [], shown: 200 };
  G.pages.overview = ov;
  ov.title = "Overview";
  ov.enter = async function (el) {
    el.innerHTML =
      '<h1>Overview</h1>' +
      '<div class="cards" id="ov-cards"></div>' +
      '<div class="grid">' +
      '<section class="panel" aria-labelledby="h-by"><h2 id="h-by">Agents by team, runtime and state</h2><div id="ov-by"></div></section>' +
      '<section class="panel" aria-labelledby="h-rt"><h2 id="h-rt">Runtimes</h2><div id="ov-rt"></div></section>' +
      '<section class="panel" aria-labelledby="h-pool"><h2 id="h-pool">Warm pools and queues</h2><div id="ov-pool"></div></section>' +
      "</div>" +
      '<section class="panel" aria-labelledby="h-agents"><h2 id="h-agents">Agents</h2>' +
      '<div class="toolbar"><label for="ov-filter">Filter</label>' +
      '<input id="ov-filter" type="search" placeholder="id, team, runtime or state">' +
      '<span id="ov-count" class="muted" aria-live="polite"></span></div><div id="ov-agents"></div></section>';
    $("#ov-filter").addEventListener("input", () => ov.drawAgents());
    // The agents are loaded once per sign-in and kept current by the event stream.
    await Promise.all([ov.loadOverview(), G.agentsLoaded ? null : G.loadAgents()]);
    ov.draw();
    ov.timers.push(every(() => ov.loadOverview().then(() => ov.drawSummary()).catch(G.fail), 5000));
  };
  ov.leave = () => { ov.timers.forEach((t) => t()); ov.timers = []; };
  ov.loadOverview = async () => { ov.data = await G.get("/v1/overview"); };
  ov.onEvent = () => {
    G.soon("ov", () => ov.draw(), 150);
    G.soon("ov-data", () => ov.loadOverview().then(() => ov.drawSummary()).catch(G.fail), 1000);
  };
  ov.draw = function () { ov.drawSummary(); ov.drawAgents(); };

  ov.drawSummary = function () {
    if (!$("#ov-cards")) return;
    const o = ov.data || { spawns: {}, circuits: [], pools: [], queues: [], runtimes: [] };
    const agents = [...G.agents.values()];
    const running = agents.filter((a) => a.state === "running").length;
    const queued = o.queues.reduce((n, q) => n + q.depth, 0);
    const card = (k, v, id) => '<div class="card"' + (id ? ' id="' + id + '"' : "") + '><div class="v">' + G.esc(v) + '</div><div class="k">' + G.esc(k) + "</div></div>";
    $("#ov-cards").innerHTML =
      card("agents", agents.length, "card-agents") + card("running", running) +
      card("spawns / min (5 min)", G.num(o.spawns.per_minute, 1)) +
      card("spawn error rate", G.pct(o.spawns.error_rate)) + card("queued spawns", queued);
    const by = new Map();
    for (const a of agents) {
      const k = a.team + "\u0000" + a.runtime + "\u0000" + a.state;
      by.set(k, (by.get(k) || 0) + 1);
    }
    const rows = [...by.entries()].sort((a, b) => a[0].localeCompare(b[0]));
    $("#ov-by").innerHTML = rows.length
      ? "<table><thead><tr><th>team</th><th>runtime</th><th>state</th><th class=num>agents</th></tr></thead><tbody>" +
        rows.map(([k, n]) => { const [t, r, s] = k.split("\u0000"); return "<tr><td>" + G.esc(t) + "</td><td>" + G.esc(r) + "</td><td>" + G.badge(s) + '</td><td class="num">' + n + "</td></tr>"; }).join("") +
        "</tbody></table>"
      : '<p class="empty">No agents.</p>';
    const circ = new Map(o.circuits.map((c) => [c.runtime, c.state]));
    const names = [...new Set([...o.runtimes, ...circ.keys()])].sort();
    $("#ov-rt").innerHTML = names.length
      ? "<table><thead><tr><th>runtime</th><th>circuit breaker</th><th class=num>agents</th></tr></thead><tbody>" +
        names.map((n) => "<tr><td>" + G.esc(n) + "</td><td>" + G.badge(circ.get(n) || "closed") + '</td><td class="num">' + agents.filter((a) => a.runtime === n).length + "</td></tr>").join("") +
        "</tbody></table>"
      : '<p class="empty">No runtimes registered.</p>';
    $("#ov-pool").innerHTML =
      (o.pools.length
        ? "<table><thead><tr><th>pool</th><th>ready</th></tr></thead><tbody>" +
          o.pools.map((p) => "<tr><td>" + G.esc(p.pool || p.runtime) + "</td><td>" + G.meter("warm pool " + (p.pool || p.runtime), p.ready, p.size) + "</td></tr>").join("") + "</tbody></table>"
        : '<p class="empty">No warm pools configured.</p>') +
      (o.queues.some((q) => q.depth > 0)
        ? "<table><thead><tr><th>team</th><th class=num>waiting spawns</th></tr></thead><tbody>" +
          o.queues.map((q) => "<tr><td>" + G.esc(q.team) + '</td><td class="num">' + q.depth + "</td></tr>").join("") + "</tbody></table>"
        : '<p class="muted">Queue depth: 0 (no spawn waiting for quota).</p>');
  };

  ov.drawAgents = function () {
    const box = $("#ov-agents");
    if (!box) return;
    const f = ($("#ov-filter").value || "").trim().toLowerCase();
    let list = [...G.agents.values()];
    if (f) list = list.filter((a) => (a.id + " " + a.team + " " + a.runtime + " " + a.state).toLowerCase().includes(f));
    list.sort((a, b) => (b.created_at || "").localeCompare(a.created_at || ""));
    const total = list.length;
    list = list.slice(0, ov.shown);
    $("#ov-count").textContent = total > list.length ? "showing " + list.length + " of " + total + " (newest first; filter to narrow)" : total + " shown";
    box.innerHTML = total
      ? "<table><thead><tr><th>id</th><th>team</th><th>runtime</th><th>state</th><th>created</th></tr></thead><tbody>" +
        list.map((a) => '<tr data-id="' + G.esc(a.id) + '"><td><a class="mono" href="#/agents/' + encodeURIComponent(a.id) + '">' + G.esc(a.id) + "</a></td><td>" + G.esc(a.team) +
          "</td><td>" + G.esc(a.runtime) + "</td><td>" + G.badge(a.state) + "</td><td>" + G.esc(G.time(a.created_at)) + "</td></tr>").join("") +
        "</tbody></table>"
      : '<p class="empty">' + (f ? "No agent matches the filter." : "No agents yet: spawn one with <code>godel spawn</code>.") + "</p>";
  };

  // ------------------------------------------------------------ agent
  const ag = { timers: [] };
  G.pages.agent = ag;
  ag.title = "Agent";
  ag.enter = async function (el, id) {
    ag.id = id;
    el.innerHTML =
      '<p><a href="#/overview">← Overview</a></p>' +
      '<h1>Agent <span class="mono" id="ag-id"></span> <span id="ag-state"></span></h1>' +
      '<div class="toolbar" id="ag-actions">' +
      '<button type="button" id="ag-snap">Take snapshot</button>' +
      '<button type="button" class="secondary" id="ag-pause">Pause</button>' +
      '<button type="button" class="secondary" id="ag-resume">Resume</button></div>' +
      '<div class="cards" id="ag-cards"></div>' +
      '<div class="grid">' +
      '<section class="panel" aria-labelledby="h-cpu"><h2 id="h-cpu">CPU</h2><div id="ag-cpu"></div></section>' +
      '<section class="panel" aria-labelledby="h-mem"><h2 id="h-mem">Memory</h2><div id="ag-mem"></div></section>' +
      '<section class="panel" aria-labelledby="h-disk"><h2 id="h-disk">Disk</h2><div id="ag-disk"></div></section>' +
      "</div><div class=\"grid\">" +
      '<section class="panel" aria-labelledby="h-snaps"><h2 id="h-snaps">Snapshots</h2><div id="ag-snaps"></div></section>' +
      '<section class="panel" aria-labelledby="h-states"><h2 id="h-states">State history</h2><div id="ag-states"></div></section>' +
      "</div>" +
      '<section class="panel" aria-labelledby="h-execs"><h2 id="h-execs">Recent commands</h2><div id="ag-execs"></div></section>' +
      '<section class="panel" aria-labelledby="h-events"><h2 id="h-events">Events</h2><div id="ag-events"></div></section>';
    $("#ag-id").textContent = id;
    $("#ag-snap").addEventListener("click", () => G.act("Snapshot taken", async () => {
      const s = await G.post("/v1/runtimes/" + encodeURIComponent(id) + "/snapshots", {});
      await ag.loadSnaps();
      return "Snapshot " + G.esc(s.id) + " taken.";
    }));
    $("#ag-pause").addEventListener("click", () => G.act("Paused", async () => { await G.post("/v1/runtimes/" + encodeURIComponent(id) + "/pause"); await ag.load(); return "Paused."; }));
    $("#ag-resume").addEventListener("click", () => G.act("Resumed", async () => { await G.post("/v1/runtimes/" + encodeURIComponent(id) + "/resume"); await ag.load(); return "Resumed."; }));
    $("#ag-snaps").addEventListener("click", ag.onSnapClick);
    await Promise.all([ag.load(), ag.loadSnaps()]);
    ag.timers.push(every(() => ag.load().catch(G.fail), 2000));
  };
  ag.leave = () => { ag.timers.forEach((t) => t()); ag.timers = []; };
  ag.onEvent = (ev) => {
    if (ev.runtime_id !== ag.id) return;
    if (ev.kind === "snapshot_created" || ev.kind === "snapshot_deleted") G.soon("ag-s", () => ag.loadSnaps().catch(G.fail), 100);
    G.soon("ag", () => ag.load().catch(G.fail), 200);
  };

  ag.load = async function () {
    const a = await G.get("/v1/runtimes/" + encodeURIComponent(ag.id) + "/activity");
    if (!$("#ag-state")) return;
    const r = a.runtime;
    $("#ag-state").innerHTML = G.badge(r.state);
    $("#ag-pause").disabled = r.state !== "running";
    $("#ag-resume").disabled = r.state !== "paused";
    $("#ag-snap").disabled = r.state !== "running" && r.state !== "paused";
    const u = r.usage || {};
    const card = (k, v, small) => '<div class="card"><div class="v' + (small ? " small" : "") + '">' + G.esc(v) + '</div><div class="k">' + G.esc(k) + "</div></div>";
    $("#ag-cards").innerHTML = card("team", r.team) + card("runtime", r.runtime) + card("created", G.time(r.created_at), true) +
      card("memory now", G.bytes(u.memory_bytes)) + card("CPU time", G.num(u.cpu_seconds, 2) + " s") + card("processes", u.pids === undefined ? "–" : u.pids) +
      (r.restored_from ? card("restored from", r.restored_from, true) : "");
    const s = a.samples.map((x) => ({ t: Date.parse(x.at), ...x }));
    const cpu = [];
    for (let i = 1; i < s.length; i++) {
      const dt = (s[i].t - s[i - 1].t) / 1000;
      if (dt > 0) cpu.push([s[i].t, Math.max(0, (100 * (s[i].cpu_seconds - s[i - 1].cpu_seconds)) / dt)]);
    }
    const wait = "Samples appear while this page is open (one every 2 s).";
    $("#ag-cpu").innerHTML = G.lineChart({ title: "CPU use, % of one core", series: [{ name: "CPU %", points: cpu }], yFmt: (v) => v.toFixed(v < 10 ? 1 : 0) + "%", empty: wait });
    $("#ag-mem").innerHTML = G.lineChart({ title: "Memory in use", series: [{ name: "memory", points: s.map((x) => [x.t, x.memory_bytes]) }], yFmt: G.bytes, empty: wait });
    $("#ag-disk").innerHTML = G.lineChart({ title: "Disk in use", series: [{ name: "disk", points: s.map((x) => [x.t, x.disk_bytes]) }], yFmt: G.bytes, empty: wait });
    $("#ag-states").innerHTML = a.states.length
      ? "<table><thead><tr><th>time</th><th>state</th><th>detail</th></tr></thead><tbody>" +
        a.states.slice().reverse().map((e) => "<tr><td>" + G.esc(G.time(e.time)) + "</td><td>" + G.badge(e.data.state || "?") + "</td><td>" + G.esc(e.data.reason || e.data.runtime || "") + "</td></tr>").join("") +
        "</tbody></table>"
      : '<p class="empty">No state changes recorded.</p>';
    $("#ag-execs").innerHTML = a.execs.length
      ? "<table><thead><tr><th>started</th><th>command</th><th class=num>exit code</th><th class=num>duration</th></tr></thead><tbody>" +
        a.execs.map((x) => "<tr><td>" + G.esc(G.time(x.started_at)) + '</td><td class="mono">' + G.esc(x.cmd.join(" ")) + '</td><td class="num">' +
          (x.error ? '<span class="badge s-error">error</span> ' + G.esc(x.error) : x.exit_code === undefined ? '<span class="muted">running</span>' : '<span class="badge s-' + (x.exit_code === 0 ? "ok" : "error") + '">' + x.exit_code + "</span>" + (x.timed_out ? " (timed out)" : "")) +
          '</td><td class="num">' + G.esc(G.ms(x.duration_ms)) + "</td></tr>").join("") + "</tbody></table>"
      : '<p class="empty">No commands since the daemon started.</p>';
    $("#ag-events").innerHTML = a.events.length
      ? "<table><thead><tr><th class=num>#</th><th>time</th><th>kind</th><th>data</th></tr></thead><tbody>" +
        a.events.slice().reverse().map((e) => '<tr><td class="num">' + e.seq + "</td><td>" + G.esc(G.time(e.time)) + "</td><td>" + G.esc(e.kind) + '</td><td class="mono">' + G.esc(JSON.stringify(e.data)) + "</td></tr>").join("") +
        "</tbody></table>"
      : '<p class="empty">No events.</p>';
  };

  ag.loadSnaps = async function () {
    const list = await G.get("/v1/snapshots?runtime_id=" + encodeURIComponent(ag.id));
    if (!$("#ag-snaps")) return;
    list.sort((a, b) => b.created_at.localeCompare(a.created_at));
    $("#ag-snaps").innerHTML = list.length
      ? "<table><thead><tr><th>snapshot</th><th>taken</th><th class=num>size</th><th>actions</th></tr></thead><tbody>" +
        list.map((s) => '<tr><td class="mono">' + G.esc(s.id) + (s.name ? " (" + G.esc(s.name) + ")" : "") + "</td><td>" + G.esc(G.time(s.created_at)) + '</td><td class="num">' + G.esc(G.bytes(s.size_bytes)) +
          '</td><td><div class="row-actions"><button type="button" data-restore="' + G.esc(s.id) + '" aria-label="Restore snapshot ' + G.esc(s.id) + '">Restore</button>' +
          '<label class="vh" for="fork-' + G.esc(s.id) + '">Copies to fork from ' + G.esc(s.id) + "</label>" +
          '<input id="fork-' + G.esc(s.id) + '" type="number" min="1" max="100" value="1">' +
          '<button type="button" class="secondary" data-fork="' + G.esc(s.id) + '" aria-label="Fork snapshot ' + G.esc(s.id) + '">Fork</button></div></td></tr>').join("") +
        "</tbody></table>"
      : '<p class="empty">No snapshots of this agent. Take one with the button above.</p>';
  };

  ag.onSnapClick = function (e) {
    const b = e.target.closest("button");
    if (!b) return;
    const link = (r) => '<a class="mono" href="#/agents/' + encodeURIComponent(r.id) + '">' + G.esc(r.id) + "</a>";
    if (b.dataset.restore) {
      const sid = b.dataset.restore;
      G.act("Restored", async () => {
        const r = await G.post("/v1/snapshots/" + encodeURIComponent(sid) + "/restore");
        G.agents.set(r.id, r);
        return 'Restored snapshot ' + G.esc(sid) + " as agent " + link(r) + ".";
      }, b);
    } else if (b.dataset.fork) {
      const sid = b.dataset.fork;
      const n = parseInt(document.getElementById("fork-" + sid).value, 10) || 1;
      G.act("Forked", async () => {
        const rs = await G.post("/v1/snapshots/" + encodeURIComponent(sid) + "/fork", { count: n });
        rs.forEach((r) => G.agents.set(r.id, r));
        return "Forked " + rs.length + " agent" + (rs.length === 1 ? "" : "s") + ": " + rs.map(link).join(", ") + ".";
      }, b);
    }
  };

  // ------------------------------------------------------------ teams
  const tm = { timers: [] };
  G.pages.teams = tm;
  tm.title = "Teams";
  tm.enter = async function (el) {
    el.innerHTML = "<h1>Teams</h1>" +
      '<section class="panel" aria-labelledby="h-quota"><h2 id="h-quota">Quota use</h2><div id="tm-quota"></div></section>' +
      '<h2 class="section">Budgets</h2><div class="grid" id="tm-budgets"></div>' +
      '<div class="grid">' +
      '<section class="panel" aria-labelledby="h-cost-rt"><h2 id="h-cost-rt">Cost by runtime (all time)</h2><div id="tm-rt"></div></section>' +
      '<section class="panel" aria-labelledby="h-cost-day"><h2 id="h-cost-day">Cost by day (last 30 days)</h2><div id="tm-day"></div></section></div>';
    await tm.load();
    tm.timers.push(every(() => tm.load().catch(G.fail), 10000));
  };
  tm.leave = () => { tm.timers.forEach((t) => t()); tm.timers = []; };
  const day = (d) => d.toISOString().slice(0, 10);
  function periodStart(period, now) {
    const d = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()));
    if (period === "monthly") d.setUTCDate(1);
    if (period === "weekly") d.setUTCDate(d.getUTCDate() - ((d.getUTCDay() + 6) % 7));
    return d;
  }
  tm.load = async function () {
    const since30 = day(new Date(Date.now() - 29 * 86400000));
    const now = new Date();
    // Each budget's spend by day this period, fetched as soon as the budgets are known.
    const withUsage = G.get("/v1/budgets").then((bs) => Promise.all(bs.map(async (b) => {
      const start = periodStart(b.period, now);
      const u = b.agent ? null : await G.get("/v1/usage?by=day&team=" + encodeURIComponent(b.team) + "&since=" + day(start));
      return { b, start, u };
    })));
    const [o, budgets, byRt, byDay] = await Promise.all([
      G.get("/v1/overview"), withUsage, G.get("/v1/usage?by=runtime"), G.get("/v1/usage?by=day&since=" + since30),
    ]);
    if (!$("#tm-quota")) return;
    const cores = (v) => G.num(v, v % 1 ? 1 : 0);
    $("#tm-quota").innerHTML = o.teams.length
      ? "<table><thead><tr><th>team</th><th>agents</th><th>vCPUs</th><th>memory</th><th>disk</th></tr></thead><tbody>" +
        o.teams.map((t) => "<tr><th scope=row>" + G.esc(t.team) + "</th><td>" + G.meter(t.team + " agents", t.agents.used, t.agents.limit) + "</td><td>" +
          G.meter(t.team + " vCPUs", t.cpu.used, t.cpu.limit, cores) + "</td><td>" + G.meter(t.team + " memory", t.memory_bytes.used, t.memory_bytes.limit, G.bytes) +
          "</td><td>" + G.meter(t.team + " disk", t.disk_bytes.used, t.disk_bytes.limit, G.bytes) + "</td></tr>").join("") + "</tbody></table>"
      : '<p class="empty">No teams.</p>';
    const charts = budgets.map(({ b, start, u }) => {
      const pts = [[start.getTime(), 0]];
      let sum = 0;
      if (u) {
        for (const r of u.rows.slice().sort((x, y) => x.key.localeCompare(y.key))) {
          sum += r.cost;
          const end = Date.parse(r.key + "T23:59:59Z");
          pts.push([Math.min(end, now.getTime()), sum]);
        }
      }
      if (pts.length === 1) pts.push([now.getTime(), b.spent_usd]);
      const who = b.team + (b.agent ? " / agent " + b.agent : "");
      return '<section class="panel budget" aria-labelledby="h-b-' + G.esc(who) + '"><h2 id="h-b-' + G.esc(who) + '">Budget burn-down: ' + G.esc(who) + " " + G.badge(b.level) + "</h2>" +
        G.meter("budget " + who, b.spent_usd, b.limit_usd, G.usd) +
        '<p class="muted">' + G.esc(b.period + " period " + b.period_key + ", policy " + b.policy + ", " + b.percent.toFixed(1) + "% spent") + "</p>" +
        G.lineChart({ title: "Spend this period against the budget of " + who, series: [{ name: "cumulative spend", points: pts }], yFmt: G.usd,
          xFmt: (t) => new Date(t).toISOString().slice(5, 16).replace("T", " "),
          hLines: [{ y: 0.8 * b.limit_usd, label: "80% " + G.usd(0.8 * b.limit_usd), color: "#8a5300" }, { y: b.limit_usd, label: "100% " + G.usd(b.limit_usd), color: "#b3261e" }] }) +
        "</section>";
    });
    $("#tm-budgets").innerHTML = charts.length ? charts.join("") : '<p class="empty">No budgets set (<code>godel budget set TEAM LIMIT</code>).</p>';
    $("#tm-rt").innerHTML = G.barChart({ title: "Cost by runtime", labels: byRt.rows.map((r) => r.key), series: [{ name: "cost", values: byRt.rows.map((r) => r.cost) }], yFmt: G.usd, empty: "No usage yet." }) +
      usageTable(byRt, "runtime");
    const days = [];
    for (let i = 29; i >= 0; i--) days.push(day(new Date(Date.now() - i * 86400000)));
    const cost = new Map(byDay.rows.map((r) => [r.key, r.cost]));
    $("#tm-day").innerHTML = G.barChart({ title: "Cost by day", labels: days.map((d) => d.slice(5)), series: [{ name: "cost", values: days.map((d) => cost.get(d) || 0) }], yFmt: G.usd });
  };
  function usageTable(rep, what) {
    if (!rep.rows.length) return "";
    return "<table><thead><tr><th>" + what + '</th><th class="num">run time</th><th class="num">vCPU·s</th><th class="num">GiB·s</th><th class="num">cost</th></tr></thead><tbody>' +
      rep.rows.map((r) => "<tr><td>" + G.esc(r.key) + '</td><td class="num">' + G.num(r.run_seconds, 0) + ' s</td><td class="num">' + G.num(r.vcpu_seconds, 1) +
        '</td><td class="num">' + G.num(r.gib_seconds, 1) + '</td><td class="num">' + G.usd(r.cost) + "</td></tr>").join("") +
      '<tr><th scope=row>total</th><td></td><td></td><td></td><td class="num">' + G.usd(rep.total.cost) + "</td></tr></tbody></table>";
  }

  // ------------------------------------------------------------ benchmarks
  const bm = {};
  G.pages.benchmarks = bm;
  bm.title = "Benchmarks";
  // Every latency summary ({p50_ms, p95_ms, p99_ms}) in a result, with the path to it.
  function summaries(v, path, out) {
    if (v && typeof v === "object") {
      if (typeof v.p50_ms === "number" && typeof v.p95_ms === "number") {
        out.push({ name: path.join(" ") || "result", s: v });
        return out;
      }
      if (Array.isArray(v)) {
        v.forEach((x, i) => summaries(x, path.concat([(x && (x.name || x.label || x.runtime)) || String(i)]), out));
      } else {
        for (const [k, x] of Object.entries(v)) if (k !== "machine") summaries(x, path.concat([k]), out);
      }
    }
    return out;
  }
  bm.enter = async function (el) {
    el.innerHTML = "<h1>Benchmarks</h1><p class=muted>The latest result of each <code>godel bench</code> suite saved on this machine.</p><div id=bm-list></div>";
    const list = await G.get("/v1/benchmarks");
    const box = $("#bm-list");
    if (!box) return;
    if (!list.length) {
      box.innerHTML = '<p class="empty" id="bm-empty">No results yet. Run <code>godel bench spawn</code> (or another suite) on this machine.</p>';
      return;
    }
    box.innerHTML = list.map((b) => {
      const r = b.result || {};
      const found = summaries(r, [], []).slice(0, 40);
      const m = r.machine ? Object.entries(r.machine).map(([k, v]) => k + ": " + (typeof v === "object" ? JSON.stringify(v) : v)).join(", ") : "";
      return '<section class="panel" aria-labelledby="bm-' + G.esc(b.suite) + '"><h2 id="bm-' + G.esc(b.suite) + '">' + G.esc(b.suite) + "</h2>" +
        '<p class="muted">' + G.esc("finished " + G.time(r.finished_at || b.modified)) + (m ? "<br>" + G.esc(m) : "") + "</p>" +
        (found.length
          ? G.barChart({ title: b.suite + ": latency P50, P95 and P99 (ms)", labels: found.map((f) => f.name), height: 260,
              series: [{ name: "P50", values: found.map((f) => f.s.p50_ms) }, { name: "P95", values: found.map((f) => f.s.p95_ms) }, { name: "P99", values: found.map((f) => f.s.p99_ms) }],
              yFmt: (v) => (v >= 100 ? v.toFixed(0) : v.toFixed(2)) + " ms" }) +
            "<table><thead><tr><th>measurement</th><th class=num>n</th><th class=num>P50</th><th class=num>P95</th><th class=num>P99</th></tr></thead><tbody>" +
            found.map((f) => "<tr><td>" + G.esc(f.name) + '</td><td class="num">' + G.esc(f.s.n) + '</td><td class="num">' + G.num(f.s.p50_ms, 2) + ' ms</td><td class="num">' + G.num(f.s.p95_ms, 2) + ' ms</td><td class="num">' + G.num(f.s.p99_ms, 2) + " ms</td></tr>").join("") + "</tbody></table>"
          : '<p class="empty">No latency summaries in this result.</p>') +
        "<details><summary>Raw JSON</summary><pre>" + G.esc(JSON.stringify(r, null, 2)) + "</pre></details></section>";
    }).join("");
  };
})(window.G);
