// Dashboard render benchmark: how long each page takes from navigation to
// drawn (the page's own measure: data fetched and the DOM written, then one
// animation frame so layout and paint are included), K times per page, on a
// daemon given by GODEL_UI_URL / GODEL_UI_TOKEN (scripts/bench-ui.sh starts
// one with N agents). Prints P50/P95/P99 per page; `--json` prints JSON.
"use strict";
const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require(process.env.PLAYWRIGHT_CORE);

const URL = process.env.GODEL_UI_URL, K = parseInt(process.env.GODEL_UI_ITERATIONS || "20", 10);
const json = process.argv.includes("--json");
const label = process.env.GODEL_UI_LABEL || "";

function summary(v) {
  v = v.slice().sort((a, b) => a - b);
  const at = (q) => v[Math.min(v.length, Math.max(1, Math.ceil(q * v.length))) - 1];
  const r = (x) => Math.round(x * 10) / 10;
  return { n: v.length, p50_ms: r(at(0.5)), p95_ms: r(at(0.95)), p99_ms: r(at(0.99)), min_ms: r(v[0]), max_ms: r(v[v.length - 1]) };
}

async function main() {
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "godel-ui-bench-"));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium", headless: true, viewport: { width: 1366, height: 900 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  try {
    const page = ctx.pages()[0] || (await ctx.newPage());
    await page.goto(URL + "/ui/");
    await page.fill("#token", process.env.GODEL_UI_TOKEN);
    await page.click("#login-form button[type=submit]");
    await page.waitForSelector("#ov-agents tr[data-id]", { timeout: 30000 });
    const agent = await page.getAttribute("#ov-agents tr[data-id]", "data-id");
    const routes = { overview: "#/overview", agent: "#/agents/" + agent, teams: "#/teams", benchmarks: "#/benchmarks" };
    const out = {};
    for (const [name, hash] of Object.entries(routes)) {
      const times = [];
      for (let i = 0; i < K + 2; i++) {
        await page.evaluate(() => { location.hash = "#/none"; });
        await page.waitForSelector('#page[aria-busy="false"]', { state: "attached" });
        const ms = await page.evaluate((h) => new Promise((res) => {
          const t0 = performance.now();
          const page = document.querySelector("#page");
          const obs = new MutationObserver(() => {
            if (page.getAttribute("aria-busy") === "false" && location.hash === h) {
              obs.disconnect();
              requestAnimationFrame(() => setTimeout(() => res(performance.now() - t0), 0));
            }
          });
          obs.observe(page, { attributes: true, attributeFilter: ["aria-busy"] });
          location.hash = h;
        }), hash);
        if (i >= 2) times.push(ms); // two warm-up rounds
      }
      out[name] = summary(times);
    }
    await page.evaluate(() => { location.hash = "#/overview"; });
    await page.waitForSelector("#ov-agents tr[data-id]");
    out.agents_rows_drawn = await page.$$eval("#ov-agents tr[data-id]", (r) => r.length);
    out.agents_total = await page.textContent("#card-agents .v");
    if (json) console.log(JSON.stringify({ label, iterations: K, pages: out }));
    else {
      console.log("dashboard render " + label + " (" + K + " iterations; navigation to drawn and painted)");
      for (const [k, s] of Object.entries(out)) {
        if (typeof s === "object") console.log("  " + k.padEnd(12) + " p50 " + String(s.p50_ms).padStart(7) + " ms   p95 " + String(s.p95_ms).padStart(7) + " ms   p99 " + String(s.p99_ms).padStart(7) + " ms   max " + String(s.max_ms).padStart(7) + " ms");
      }
      console.log("  agents " + out.agents_total + ", rows drawn " + out.agents_rows_drawn);
    }
  } finally {
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}
main().catch((e) => { console.error(e); process.exit(1); });
