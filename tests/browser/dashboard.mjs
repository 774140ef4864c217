// Drives the dashboard in Debian's headless Chromium (never a downloaded browser).
// Usage: node dashboard.mjs URL CORRALCTL SOCKET TOKEN SHOT_DIR
// Expects corrald to run units `web` and `talker` (which prints `tick N` lines), with
// http.token = TOKEN. Exits 0 when every check passed:
// - `web` is listed running and, after `corralctl stop web`, shown stopped without a reload;
// - the queue and pool charts are drawn (SVG lines) from /api/history;
// - with the token entered in the page, its start button starts `web` again and a pool
//   job's cancel button cancels the job; without the token the buttons are disabled;
// - the unit page draws CPU and memory charts; the log page follows `talker` live.
// Saves dashboard.png, unit.png and log.png in SHOT_DIR.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, corralctl, socket, token, shots] = process.argv.slice(2);
const ctl = (...args) => execFileSync(corralctl, ["--socket", socket, ...args]).toString();
const T = { timeout: 30000 };
// An SVG line may be flat (no height): "visible" would never hold for it.
const IN_DOM = { state: "attached", timeout: 30000 };
const profile = mkdtempSync(join(tmpdir(), "corral-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1280, height: 900 },
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic"],
});
function check(ok, what) { if (!ok) throw new Error(what); }
// Names the step that failed in the error.
async function step(what, f) {
  try { return await f(); } catch (e) { e.message = `${what}: ${e.message}`; throw e; }
}
try {
  const page = await browser.newPage();
  // Nothing is loaded from anywhere but this corrald.
  const origin = new URL(url).origin;
  const foreign = [];
  page.on("request", (r) => { if (!r.url().startsWith(origin)) foreign.push(r.url()); });
  let loads = 0;
  page.on("load", () => { loads += 1; });

  // Activity for the charts: a queue with items, a slow pool job.
  for (let i = 0; i < 7; i++) ctl("queue", "put", "jobs", String(i));
  const job = ctl("pool", "map", "--detach", "-j", "1", "--name", "slow", "--", "sleep", "3",
    ":::", ...Array.from({ length: 40 }, (_, i) => String(i))).trim().split(/\s+/).pop();
  check(/^\d+$/.test(job), `pool map --detach printed no job id: ${job}`);

  await page.goto(url);
  const row = (unit) => page.locator("#units tbody tr", { hasText: unit }).first();
  const state = (unit) => row(unit).locator("td").nth(2);
  await step("web listed running", () => state("web").filter({ hasText: "running" }).waitFor(T));
  await step("the live stream connected", () => page.locator("#live", { hasText: "live" }).waitFor(T));
  ctl("stop", "web");
  await step("web shown stopped after corralctl stop", () => state("web").filter({ hasText: "stopped" }).waitFor(T));

  // Charts: a line needs two samples (2 s apart); the depth chart's legend shows 7.
  await step("the queue depth line", () => page.locator('[data-chart="queue-jobs"] polyline').waitFor(IN_DOM));
  await step("the queue depth legend at 7", () => page.locator('[data-chart="queue-jobs"] .legend', { hasText: "depth 7" }).waitFor(T));
  await step("the queue rate chart", () => page.locator('[data-chart="queue-rate-jobs"] svg').waitFor(IN_DOM));
  await step("the pool progress line", () => page.locator(`[data-chart="pool-${job}"] polyline`).waitFor(IN_DOM));

  // Controls: disabled without the token; with it, start web and cancel the job.
  const start = row("web").locator('button[data-action="start"]');
  check(await start.isDisabled(), "the start button works without a token");
  await page.fill("#token", token);
  await page.click("#token-form button[type=submit]");
  await step("the token accepted", () => page.locator("#token-state", { hasText: "token set" }).waitFor(T));
  check(await page.locator("#token").inputValue() === "", "the token stays in the input field");
  await start.click();
  await step("web running again after the start button", () => state("web").filter({ hasText: "running" }).waitFor(T));
  await page.locator(`#pools tbody tr`, { hasText: "slow" }).locator("button.cancel").click();
  await page.locator(`#pools tbody tr`, { hasText: "slow" }).locator("td").nth(2)
    .filter({ hasText: "cancelled" }).waitFor(T);
  const jobState = JSON.parse(ctl("--json", "pool", "status", job)).state;
  check(jobState === "cancelled", `corrald says job ${job} is ${jobState}`);
  check(loads === 1, `the page was loaded ${loads} times; expected no reload`);
  await page.screenshot({ path: join(shots, "dashboard.png"), fullPage: true });

  // The unit page: CPU and memory of each instance.
  await page.goto(`${origin}/units/talker`);
  await step("the CPU chart", () => page.locator('[data-chart="cpu-0"] svg').waitFor(IN_DOM));
  await step("the memory line", () => page.locator('[data-chart="rss-0"] polyline').waitFor(IN_DOM));
  await step("the memory legend", () => page.locator('[data-chart="rss-0"] .legend', { hasText: /rss \d/ }).waitFor(T));
  await page.screenshot({ path: join(shots, "unit.png"), fullPage: true });

  // The log page follows: a tick newer than any shown at first appears without a reload.
  await page.locator("#instances a", { hasText: "follow" }).first().click();
  await page.waitForURL(/\/units\/talker\/0\/logs$/, T);
  const log = page.locator("#log");
  await log.filter({ hasText: /tick \d+/ }).waitFor(T);
  const ticks = async () => [...(await log.textContent()).matchAll(/tick (\d+)/g)].map((m) => Number(m[1]));
  const first = Math.max(...(await ticks()));
  await page.waitForFunction((n) => [...document.getElementById("log").textContent.matchAll(/tick (\d+)/g)]
    .some((m) => Number(m[1]) >= n + 3), first, T);
  const seen = await ticks();
  check(seen.every((t, i) => i === 0 || t === seen[i - 1] + 1), `ticks out of order or repeated: ${seen}`);
  await page.screenshot({ path: join(shots, "log.png"), fullPage: true });
  check(foreign.length === 0, `requests left corrald: ${foreign.join(", ")}`);
  console.log("ok");
} finally {
  await browser.close();
}
