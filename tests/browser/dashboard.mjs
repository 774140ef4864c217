// Drives the dashboard in Debian's headless Chromium (never a downloaded browser).
// Usage: node dashboard.mjs URL CORRALCTL SOCKET UNIT SCREENSHOT
// Exits 0 when the unit is listed as running, and — after `corralctl stop UNIT` — the
// page shows it stopped without being reloaded.
import { chromium } from "playwright-core";
import { execFileSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, corralctl, socket, unit, screenshot] = process.argv.slice(2);
const profile = mkdtempSync(join(tmpdir(), "corral-chromium-"));
const browser = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-quic"],
});
try {
  const page = await browser.newPage();
  let loads = 0;
  page.on("load", () => { loads += 1; });
  await page.goto(url);
  const state = () => page.locator("#units tbody tr", { hasText: unit }).locator("td").nth(2);
  await state().filter({ hasText: "running" }).waitFor({ timeout: 30000 });
  // The live stream is connected once the marker changes from "snapshot".
  await page.locator("#live", { hasText: "live" }).waitFor({ timeout: 30000 });
  execFileSync(corralctl, ["--socket", socket, "stop", unit]);
  await state().filter({ hasText: "stopped" }).waitFor({ timeout: 30000 });
  if (loads !== 1) throw new Error(`the page was loaded ${loads} times; expected no reload`);
  await page.screenshot({ path: screenshot, fullPage: true });
  console.log("ok");
} finally {
  await browser.close();
}
