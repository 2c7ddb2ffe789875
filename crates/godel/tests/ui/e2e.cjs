// End-to-end test of the dashboard in headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core). Started by
// crates/godel/tests/ui_e2e.rs, which runs the daemon and passes:
//   GODEL_UI_URL      http://127.0.0.1:PORT (the TCP listener)
//   GODEL_UI_TOKEN    an admin token
//   GODEL_BIN, GODEL_HOME   to run the CLI against the same daemon
//   GODEL_UI_REPO     a git repository to spawn agents from
//   GODEL_UI_SHOTS    where to save a screenshot of each page
//   PLAYWRIGHT_CORE   the playwright-core package directory
// Prints one JSON line of measurements; exits non-zero on the first failure.
"use strict";
const { execFileSync, spawn } = require("child_process");
const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require(process.env.PLAYWRIGHT_CORE);

const URL = process.env.GODEL_UI_URL;
const SHOTS = process.env.GODEL_UI_SHOTS;
const WAIT = 15000; // fail-safe for each wait; the measured times are printed
// The CLI talks to the daemon's Unix socket under GODEL_HOME, as admin.
const cliEnv = { ...process.env };
delete cliEnv.GODEL_URL;
delete cliEnv.GODEL_TOKEN;
const cli = (...args) => execFileSync(process.env.GODEL_BIN, args, { env: cliEnv, encoding: "utf8" }).trim();
const cliAsync = (...args) =>
  new Promise((res, rej) => {
    const p = spawn(process.env.GODEL_BIN, args, { env: cliEnv });
    let out = "", err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    p.on("close", (c) => (c === 0 ? res(out.trim()) : rej(new Error("godel " + args.join(" ") + ": " + err))));
  });
const step = (s) => process.stderr.write("ui-e2e: " + s + "\n");

async function main() {
  fs.mkdirSync(SHOTS, { recursive: true });
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "godel-ui-chromium-"));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1366, height: 900 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  const out = {};
  const errors = [];
  const page = ctx.pages()[0] || (await ctx.newPage());
  try {
    page.on("pageerror", (e) => errors.push(String(e)));
    // Failed requests, except the refused bad token at login.
    page.on("response", (r) => {
      if (r.status() >= 400 && !(r.status() === 401 && r.url().endsWith("/v1/health"))) errors.push(r.status() + " " + r.url());
    });
    page.on("console", (m) => { if (m.type() === "error" && !/Failed to load resource/.test(m.text())) errors.push(m.text()); });
    const shot = (name) => page.screenshot({ path: path.join(SHOTS, name + ".png"), fullPage: true });

    step("login");
    await page.goto(URL + "/ui");
    await page.waitForSelector("#login:not([hidden])", { timeout: WAIT });
    await page.fill("#token", "not-a-token");
    await page.press("#token", "Enter");
    await page.waitForSelector('#login-error:has-text("not accepted")', { timeout: WAIT });
    await shot("login");
    await page.fill("#token", process.env.GODEL_UI_TOKEN);
    await page.click("#login-form button[type=submit]");
    await page.waitForSelector("#ov-cards .card", { timeout: WAIT });
    await page.waitForSelector("#live:not(.off):not([hidden])", { timeout: WAIT });

    step("an agent spawned through the CLI appears live");
    const t0 = Date.now();
    // Watch the agents table from inside the page (a MutationObserver: the
    // page's CSP forbids the string evaluation waitForFunction polls with).
    const seen = Promise.race([
      page.evaluate(() => new Promise((res) => {
        const box = document.querySelector("#ov-agents");
        const check = () => {
          const ids = [...box.querySelectorAll("tr[data-id]")].map((r) => r.dataset.id);
          if (ids.length) res({ at: Date.now(), ids });
          return ids.length > 0;
        };
        if (check()) return;
        const obs = new MutationObserver(() => { if (check()) obs.disconnect(); });
        obs.observe(box, { childList: true, subtree: true });
      })),
      new Promise((_, rej) => setTimeout(() => rej(new Error("no agent row appeared")), WAIT)),
    ]);
    const id = (await cliAsync("spawn", "--repo", process.env.GODEL_UI_REPO, "--team", "alpha")).split("\n").pop().trim();
    const cliDone = Date.now();
    const first = await seen;
    if (!first.ids.includes(id)) {
      await page.waitForSelector('#ov-agents tr[data-id="' + id + '"]', { timeout: WAIT });
    }
    const appeared = first.ids.includes(id) ? first.at : Date.now();
    out.appear_after_spawn_start_ms = appeared - t0;
    out.seen_before_cli_returned = first.ids.includes(id);
    out.spawn_cli_ms = cliDone - t0;
    // Negative: the row was on the page before the CLI returned.
    out.appear_minus_cli_return_ms = appeared - cliDone;
    await page.waitForSelector('#ov-agents tr[data-id="' + id + '"] .s-running', { timeout: WAIT });
    await page.waitForSelector('#card-agents .v:text-is("1")', { timeout: WAIT });
    await shot("overview");

    step("open the agent");
    cli("exec", id, "--", "sh", "-c", "echo hello > greeting.txt");
    try { cli("exec", id, "--", "sh", "-c", "exit 3"); } catch (_) { /* exit code 3 expected */ }
    await page.click('#ov-agents a[href="#/agents/' + id + '"]');
    await page.waitForSelector("#ag-execs table", { timeout: WAIT });
    const execs = await page.textContent("#ag-execs");
    if (!execs.includes("sh -c exit 3") || !execs.includes("echo hello")) throw new Error("exec commands missing: " + execs);
    await page.waitForSelector("#ag-states table", { timeout: WAIT });
    // Two samples make the CPU chart; the page samples every 2 s.
    await page.waitForSelector("#ag-mem svg", { timeout: WAIT });
    await page.waitForSelector("#ag-cpu svg", { timeout: WAIT });

    step("take a snapshot and restore it");
    await page.click("#ag-snap");
    await page.waitForSelector("#ag-snaps button[data-restore]", { timeout: WAIT });
    await shot("agent");
    await page.click("#ag-snaps button[data-restore]");
    await page.waitForSelector('#status:has-text("Restored snapshot")', { timeout: WAIT });
    const restored = await page.getAttribute("#status a", "href");
    const newId = decodeURIComponent(restored.replace("#/agents/", ""));
    if (!newId || newId === id) throw new Error("no new agent from the restore");
    if (cli("read", newId, "greeting.txt") !== "hello") throw new Error("restored agent lacks the file");
    await page.click("#status a");
    await page.waitForSelector('#ag-id:text-is("' + newId + '")', { timeout: WAIT });
    await page.waitForSelector("#ag-state .s-running", { timeout: WAIT });
    await shot("agent-restored");
    out.restored = newId;

    step("teams: quota bars and the budget chart");
    cli("exec", id, "--", "sh", "-c", "sleep 1.5");
    await page.click('#nav a[data-page="teams"]');
    await page.waitForSelector("#tm-budgets .budget svg", { timeout: WAIT });
    const title = await page.textContent("#tm-budgets .budget svg title");
    if (!/budget of alpha/.test(title)) throw new Error("budget chart title: " + title);
    const lines = await page.textContent("#tm-budgets .budget .legend");
    if (!/80%/.test(lines) || !/100%/.test(lines)) throw new Error("budget chart lacks the 80% and 100% lines: " + lines);
    await page.waitForSelector('#tm-quota [role="meter"]', { timeout: WAIT });
    await page.waitForSelector("#tm-rt svg", { timeout: WAIT });
    await shot("teams");

    step("benchmarks: no results, then a result");
    await page.click('#nav a[data-page="benchmarks"]');
    await page.waitForSelector("#bm-empty", { timeout: WAIT });
    await shot("benchmarks-empty");
    const dir = path.join(process.env.GODEL_HOME, "bench-results");
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, "ui-fixture.json"), fs.readFileSync(process.env.GODEL_UI_BENCH_FIXTURE));
    await page.reload();
    await page.waitForSelector("#bm-list svg", { timeout: WAIT });
    await shot("benchmarks");

    step("keyboard: the skip link and the navigation are reachable by Tab");
    await page.goto(URL + "/ui/#/overview");
    await page.waitForSelector("#ov-cards .card", { timeout: WAIT });
    await page.keyboard.press("Tab");
    const f1 = await page.evaluate(() => document.activeElement.className);
    if (f1 !== "skip") throw new Error("first Tab stop is not the skip link: " + f1);
    await page.keyboard.press("Tab");
    const f2 = await page.evaluate(() => document.activeElement.textContent);
    if (f2 !== "Overview") throw new Error("second Tab stop is not the navigation: " + f2);

    if (errors.length) throw new Error("errors in the page: " + errors.join("; "));
    console.log(JSON.stringify(out));
  } catch (e) {
    const status = await page.textContent("#status").catch(() => "");
    await page.screenshot({ path: path.join(SHOTS, "failure.png"), fullPage: true }).catch(() => {});
    throw new Error(e.message + "\npage status line: " + status + "\nscreenshot: failure.png");
  } finally {
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error("ui-e2e FAILED: " + (e && e.stack ? e.stack : e));
  process.exit(1);
});
