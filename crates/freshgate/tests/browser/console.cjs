// The console in a real browser: headless Debian Chromium driven by playwright-core.
//
// Started by the Rust test `browser::the_console_in_headless_chromium` (tests/it/browser.rs),
// which runs the gateway and the emulator, seeds them, and passes their URLs here:
//   ADMIN_URL   console with a token     ADMIN_TOKEN   that token
//   OPEN_URL    console without a token  EMULATOR_ADMIN the emulator's /__emulator URL
//   DEAD_MESSAGE_ID  an event whose delivery is dead (its fault still injected)
//   SCREENSHOT_DIR   when set, a PNG of every page is written there (scripts/screenshots.sh)
// Exits non-zero with the failed check's message.
"use strict";

const { chromium } = require("playwright-core");
const assert = require("node:assert/strict");
const path = require("node:path");

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const ADMIN = env("ADMIN_URL");
const TOKEN = env("ADMIN_TOKEN");
const OPEN = env("OPEN_URL");
const EMULATOR_ADMIN = env("EMULATOR_ADMIN");
const DEAD = env("DEAD_MESSAGE_ID");
const SHOTS = process.env.SCREENSHOT_DIR || "";
const TIMEOUT = 30_000;

const errors = [];

function watch(page) {
  page.on("console", (msg) => {
    if (msg.type() === "error") errors.push(`${page.url()}: console: ${msg.text()}`);
  });
  page.on("pageerror", (e) => errors.push(`${page.url()}: ${e.message}`));
  page.setDefaultTimeout(TIMEOUT);
}

async function shot(page, name) {
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
}

async function step(name, f) {
  process.stdout.write(`- ${name}\n`);
  await f();
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    watch(page);

    await step("a console with a token sends a browser to the login page", async () => {
      await page.goto(ADMIN + "/");
      assert.equal(new URL(page.url()).pathname, "/login");
      await shot(page, "login");
    });

    await step("a wrong token is refused", async () => {
      await page.fill("#token", "not-the-token");
      await page.click("#login");
      await page.waitForSelector("#login-error");
      assert.equal(new URL(page.url()).pathname, "/login");
    });

    await step("the token logs in", async () => {
      await page.fill("#token", TOKEN);
      await Promise.all([page.waitForURL(ADMIN + "/"), page.click("#login")]);
      await page.waitForSelector("#destinations");
    });

    await step("the overview shows the figures the API returns", async () => {
      const o = await (await page.request.get(ADMIN + "/api/v1/overview")).json();
      assert.ok(o.destinations.some((d) => d.kinds.some((k) => k.event_type === "track" && k.pending > 0)),
        JSON.stringify(o.destinations));
      for (const d of o.destinations) {
        const card = page.locator(`section.card[data-destination="${d.destination}"]`);
        assert.equal(await card.locator('td[data-field="pending"]').innerText(), String(d.pending));
        assert.equal(await card.locator('td[data-field="dead"]').innerText(), String(d.dead));
        for (const k of d.kinds) {
          const row = card.locator(`tr[data-kind="${k.event_type}"]`);
          assert.equal(await row.locator('td[data-field="kind_pending"]').innerText(), String(k.pending));
        }
        const left = await card.locator('td[data-field="left_this_hour"]').innerText();
        assert.ok(left.startsWith(`${d.budget.left_this_hour} of ${d.budget.hour_cap}`), left);
      }
      const ingested = o.ingest_per_minute.reduce((n, m) => n + m.count, 0);
      assert.ok(ingested > 0);
      assert.equal(await page.locator("#ingest-chart").getAttribute("data-total"), String(ingested));
      await shot(page, "overview");
    });

    await step("search an event by userId and open its trace", async () => {
      await page.click('nav a[href="/events"]');
      await page.fill('input[name="user"]', "ann");
      await Promise.all([page.waitForURL(/user=ann/), page.click("#search")]);
      const rows = page.locator("#events tbody tr");
      assert.equal(await rows.count(), 2);
      await shot(page, "events");
      await Promise.all([page.waitForURL(/\/events\/ann-1$/), page.click('a[href="/events/ann-1"]')]);
      await page.waitForSelector("section.trace");
      const mapped = page.locator('table.mapping tr[data-trait="Lifetime Value"]');
      assert.match(await mapped.innerText(), /cf_lifetime_value/);
      assert.match(await page.locator('table.mapping tr[data-trait="favourite"]').innerText(), /no field matches/);
      assert.match(await page.locator(".attempt").first().innerText(), /200/);
      await shot(page, "trace");
    });

    await step("replay a dead letter after fixing its cause in the emulator", async () => {
      await page.goto(ADMIN + "/dead-letters");
      const row = page.locator("#dead-letters tbody tr", { hasText: DEAD });
      assert.equal(await row.count(), 1);
      await shot(page, "dead-letters");
      const cleared = await fetch(EMULATOR_ADMIN + "/faults", { method: "DELETE" });
      assert.ok(cleared.ok, "clearing the emulator's faults");
      await row.locator("button.replay-one").click();
      await page.waitForSelector("#replay-result:has-text('1 dead letter put back')");
      await page.waitForSelector(`#dead-letters tbody tr.requeued:has-text("${DEAD}")`);
      const until = Date.now() + TIMEOUT;
      for (;;) {
        const t = await (await page.request.get(`${ADMIN}/api/v1/events/${DEAD}`)).json();
        if (t[0].event.deliveries[0].status === "delivered") break;
        assert.ok(Date.now() < until, "the replayed dead letter was not delivered");
        await new Promise((r) => setTimeout(r, 250));
      }
    });

    await step("the mapping preview for a label-keyed custom field", async () => {
      await page.click('nav a[href="/destinations"]');
      const section = page.locator("section.destination").first();
      await section.locator("button.test-connection").click();
      await section.locator(".test-result:has-text('the key works')").waitFor();
      await section.locator('textarea[name="traits"]').fill(
        JSON.stringify({ email: "Preview@Example.com", "Lifetime Value": "42", firstName: "Pre" }));
      await section.locator('form.preview button[type="submit"]').click();
      const body = section.locator("pre.preview-body");
      await body.waitFor();
      const sent = JSON.parse(await body.innerText());
      assert.equal(sent.contact.custom_field.cf_lifetime_value, 42);
      assert.equal(sent.contact.emails, "preview@example.com");
      // A contact freshgate has not written yet is keyed by its userId (the identity rule).
      assert.ok(sent.unique_identifier.external_id, JSON.stringify(sent));
      assert.match(await section.locator('tr[data-trait="Lifetime Value"]').innerText(), /matched by label/);
      await shot(page, "destinations");
    });

    await step("every page renders with no JavaScript error", async () => {
      for (const p of ["/", "/events", "/events/ann-1", "/dead-letters", "/rejected", "/unmapped-traits", "/destinations"]) {
        const r = await page.goto(ADMIN + p);
        assert.equal(r.status(), 200, p);
        await page.waitForLoadState("load");
        if (p === "/rejected") await shot(page, "rejected");
        if (p === "/unmapped-traits") await shot(page, "unmapped-traits");
      }
    });

    await step("a console without a token needs no login", async () => {
      const open = await browser.newPage();
      watch(open);
      await open.goto(OPEN + "/");
      assert.equal(new URL(open.url()).pathname, "/");
      await open.waitForSelector("#destinations");
      await open.close();
    });

    assert.deepEqual(errors, [], "JavaScript errors");
    process.stdout.write("console ok\n");
  } finally {
    await browser.close();
  }
})().catch((e) => {
  process.stderr.write(`FAILED: ${e.stack || e}\n`);
  if (errors.length) process.stderr.write(`JavaScript errors:\n${errors.join("\n")}\n`);
  process.exit(1);
});
