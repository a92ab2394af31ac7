// The control UI in a real browser (Debian's chromium driven by playwright-core) against a real
// daemon and mock upstream with generated traffic. Screenshots go to app/ui/test-results/.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { chromium } from "playwright-core";
import { World, ARTIFACTS, CHROMIUM, easyPrompt, hardPrompt, runPool } from "./harness.mjs";

const world = new World();
let browser;
let page;
/** Every body the UI received from the daemon, to look for secrets in. */
const seen = [];

const shot = (name) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: false });

before(async () => {
  await world.start();
  await world.traffic();
  browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox", "--disable-dev-shm-usage"] });
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
  page = await context.newPage();
  page.on("response", async (r) => {
    if (!r.url().startsWith(world.base)) return;
    try {
      seen.push(`${r.url()}\n${JSON.stringify(await r.allHeaders())}\n${await r.text()}`);
    } catch {
      // Redirects and aborted loads have no body.
    }
  });
  page.on("pageerror", (e) => seen.push(`PAGE ERROR ${e.message}`));
});

after(async () => {
  await browser?.close();
  await world.stop();
});

test("the UI needs an admin key, and never a client one", async () => {
  const r = await fetch(`${world.base}/ui/`);
  assert.equal(r.status, 401);
  assert.match(await r.text(), /Sign in with an admin API key/);
  const api = await fetch(`${world.base}/admin/timeline`);
  assert.equal(api.status, 401);
  assert.match((await api.json()).error.message, /API key/);

  await page.goto(`${world.base}/ui/`);
  await page.fill('input[name="key"]', world.clientKey);
  await page.click('button[type="submit"]');
  await page.waitForSelector("text=not an admin key");
  await page.fill('input[name="key"]', "sy-wrong");
  await page.click('button[type="submit"]');
  await page.waitForSelector("text=not known here");
  await page.fill('input[name="key"]', world.adminKey);
  await page.click('button[type="submit"]');
  await page.waitForSelector("#page-overview");
  const cookies = await page.context().cookies();
  const session = cookies.find((c) => c.name === "switchyard_ui");
  assert.ok(session?.httpOnly, "the session cookie is HttpOnly");
  assert.equal(session.sameSite, "Strict");
  assert.ok(!session.value.includes(world.adminKey));

  // A cookie alone may read, but a write also needs the UI's header (a cross-site form can't).
  const jar = `switchyard_ui=${session.value}`;
  const read = await fetch(`${world.base}/admin/routing/policy`, { headers: { cookie: jar } });
  assert.equal(read.status, 200);
  const forged = await fetch(`${world.base}/admin/cache/purge`, {
    method: "POST",
    headers: { cookie: jar, "content-type": "application/json" },
    body: "{}",
  });
  assert.equal(forged.status, 403);
  assert.match((await forged.json()).error.message, /x-switchyard-ui/);
});

test("the overview charts render with data", async () => {
  await page.goto(`${world.base}/ui/#/overview`);
  for (const id of ["rate", "latency", "ttft", "where", "cost"]) {
    await page.waitForFunction(
      (id) => Number(document.querySelector(`#chart-${id}`)?.dataset.points ?? 0) > 0,
      id,
      { timeout: 20000 },
    );
  }
  // The canvases hold drawn pixels, not an empty frame.
  const inked = await page.evaluate(() =>
    [...document.querySelectorAll("canvas")].map((c) => {
      const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
      let n = 0;
      for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++;
      return n;
    }),
  );
  assert.ok(inked.length >= 5 && inked.every((n) => n > 500), `drawn pixels per chart: ${inked}`);
  const rps = await page.textContent("#kpi-rps .value");
  assert.notEqual(rps.trim(), "0", "requests/s over the last minute");
  assert.match(await page.textContent("#kpi-cost .value"), /\$/);
  await shot("overview");
  // The window can widen to the last hour (360 points).
  const [wide] = await Promise.all([
    page.waitForResponse((r) => r.url().includes("/admin/timeline?minutes=60")),
    page.selectOption("#overview-range", "60"),
  ]);
  assert.equal((await wide.json()).points.length, 360);
});

test("routing: a threshold moved and replayed changes the projection; applied, it routes the next call", async () => {
  const ask = async (prompt) => {
    const r = await world.chat({ model: "auto", max_tokens: 8, messages: [{ role: "user", content: prompt }] });
    assert.equal(r.status, 200);
    await r.arrayBuffer();
    return r.headers.get("x-switchyard-route");
  };
  assert.match(await ask(hardPrompt(3)), /^large/, "a hard prompt goes to the strong tier at threshold 0.5");
  const before = await ask(easyPrompt(3));
  assert.match(before, /^small/, "an easy one to the weak tier");

  await page.goto(`${world.base}/ui/#/routing`);
  await page.waitForSelector("#threshold");
  assert.equal(await page.inputValue("#threshold"), "0.5");
  await page.click("#run-whatif");
  await page.waitForSelector("#whatif-share-large");
  const largeAt = async () => page.textContent("#whatif-share-large");
  const shareBefore = await largeAt();
  assert.notEqual(shareBefore, "0%", "some recent calls went to the large tier");
  assert.notEqual(shareBefore, "100%", "and some to the small one");

  // Drag the slider all the way down: every score is at or above 0, so all go strong.
  const slider = await page.$("#threshold-slider");
  const box = await slider.boundingBox();
  await page.mouse.click(box.x + 1, box.y + box.height / 2);
  await page.keyboard.press("Home");
  assert.equal(await page.inputValue("#threshold"), "0");
  await page.click("#run-whatif");
  await page.waitForFunction((was) => document.querySelector("#whatif-share-large")?.textContent !== was, shareBefore);
  assert.equal(await largeAt(), "100%");
  assert.notEqual(await page.textContent("#whatif-changed"), "0");
  await shot("routing-whatif");

  await page.click("#apply-policy");
  await page.waitForSelector("#policy-applied");
  const after = await ask(easyPrompt(3));
  assert.match(after, /^large/, `after applying threshold 0 the easy prompt goes to the strong tier (was ${before})`);

  // The history shows the new version; rolling back restores the old routing.
  await page.waitForSelector("#history tr[data-version='2']");
  await page.click("#rollback-1");
  await page.waitForSelector("text=Rolled back to version 1");
  assert.match(await ask(easyPrompt(3)), /^small/);
});

test("routing: an invalid value shows an error at its field and changes nothing", async () => {
  await page.goto(`${world.base}/ui/#/routing`);
  await page.waitForSelector("#threshold");
  await page.fill("#threshold", "1.5");
  await page.click("#apply-policy");
  const err = await page.waitForSelector("#error-threshold");
  assert.match(await err.textContent(), /\[0, 1\]/);
  await shot("routing-field-error");

  // One only the daemon can catch: a tier naming a model it does not know.
  await page.fill("#threshold", "0.5");
  await page.fill("#tier-model-large", "no-such-model");
  await page.click("#apply-policy");
  const tierErr = await page.waitForSelector("#error-tiers_large");
  assert.match(await tierErr.textContent(), /unknown model/);
  const policy = await (await fetch(`${world.base}/admin/routing/policy`, { headers: { authorization: `Bearer ${world.adminKey}` } })).json();
  assert.equal(policy.tiers.large, "large", "the refused policy changed nothing");
});

test("requests: the ledger pages, filters and explains one call's route", async () => {
  await page.goto(`${world.base}/ui/#/requests`);
  await page.waitForSelector("#requests tbody tr");
  await page.fill("#filter-model", "auto");
  await page.click("#apply-filters");
  await page.waitForFunction(() => [...document.querySelectorAll("#requests tbody tr")].every((r) => r.textContent.includes("auto")));
  await page.click("#requests tbody tr a");
  const why = await page.waitForSelector("#route-explanation");
  assert.match(await why.textContent(), /scorer rated the prompt|rule #/);
  await shot("request-detail");
});

test("providers, cache, keys and jobs pages show their state", async () => {
  await page.goto(`${world.base}/ui/#/providers`);
  const card = await page.waitForSelector("[data-provider='up']");
  const text = await card.textContent();
  assert.match(text, /healthy/);
  assert.match(text, /breaker closed/);
  assert.match(text, /Requests\/min: \d+ \/ 100,000/);
  await shot("providers");

  await page.goto(`${world.base}/ui/#/keys`);
  await page.waitForSelector("#keys tbody tr");
  assert.match(await page.textContent("#keys"), /acme/);
  await page.waitForSelector("[data-budget='tenant:acme']");
  await shot("keys");

  // A job with progress: a batch of three chat calls.
  const submit = await fetch(`${world.base}/v1/jobs`, {
    method: "POST",
    headers: { authorization: `Bearer ${world.clientKey}`, "content-type": "application/json" },
    body: JSON.stringify({
      operation: "requests",
      requests: [1, 2, 3].map((i) => ({ custom_id: `c${i}`, url: "/v1/chat/completions", body: { model: "gpt-mock", messages: [{ role: "user", content: `job ${i}` }] } })),
    }),
  });
  const jobBody = await submit.text();
  assert.ok(submit.ok, jobBody);
  const job = JSON.parse(jobBody);
  await page.goto(`${world.base}/ui/#/jobs`);
  const row = await page.waitForSelector(`[data-job='${job.id}']`);
  await page.waitForFunction((id) => document.querySelector(`[data-job='${id}']`)?.textContent.includes("succeeded"), job.id, { timeout: 60000 });
  assert.equal(await row.$eval("progress", (p) => p.value), 1);
  await shot("jobs");

  await page.goto(`${world.base}/ui/#/cache`);
  await page.waitForSelector("#kpi-cache-entries");
  await shot("cache");
});

test("no secret ever reaches the UI", async () => {
  assert.ok(seen.length > 20, `responses seen: ${seen.length}`);
  const all = seen.join("\n");
  for (const [name, secret] of [["admin key", world.adminKey], ["client key", world.clientKey], ["provider key", world.upstreamKey]]) {
    assert.ok(!all.includes(secret), `the ${name} was sent to the UI`);
  }
  assert.ok(!all.includes("PAGE ERROR"), all.split("\n").filter((l) => l.startsWith("PAGE ERROR")).join("\n"));
  const log = world.daemonLog();
  for (const secret of [world.adminKey, world.clientKey, world.upstreamKey]) assert.ok(!log.includes(secret), "a secret is in the daemon's log");
});

test("100k ledger records: the requests page loads one page at a time and stays quick", { timeout: 900000 }, async () => {
  const target = Number(process.env.UI_LEDGER_RECORDS ?? 100000);
  const have = async () =>
    (await (await fetch(`${world.base}/admin/stats`, { headers: { authorization: `Bearer ${world.adminKey}` } })).json()).ledger.records;
  const started = Date.now();
  const missing = Math.max(0, target - (await have()));
  const body = JSON.stringify({ model: "gpt-mock", max_tokens: 4, messages: [{ role: "user", content: "load" }] });
  const jobs = Array.from({ length: missing }, () => () =>
    fetch(`${world.base}/v1/chat/completions`, {
      method: "POST",
      headers: { authorization: `Bearer ${world.clientKey}`, "content-type": "application/json" },
      body,
    }),
  );
  await runPool(jobs, 32);
  let records = await have();
  for (let i = 0; i < 50 && records < target; i++) {
    await new Promise((r) => setTimeout(r, 200));
    records = await have();
  }
  assert.ok(records >= target, `ledger records: ${records}`);
  console.log(`# ${missing} calls written in ${((Date.now() - started) / 1000).toFixed(1)} s; ${records} records`);

  const t0 = Date.now();
  await page.goto(`${world.base}/ui/#/requests`);
  await page.waitForSelector("#requests tbody tr");
  const firstPageMs = Date.now() - t0;
  assert.equal(await page.$$eval("#requests tbody tr", (r) => r.length), 100, "one page of 100 rows, not the whole ledger");
  const t1 = Date.now();
  for (let p = 2; p <= 5; p++) {
    await page.click("#next-page");
    await page.waitForFunction((p) => document.querySelector("#page-number")?.textContent === `page ${p}`, p);
    await page.waitForFunction(() => !document.querySelector("#requests.loading"));
  }
  const pageMs = (Date.now() - t1) / 4;
  // Overview still answers (the timeline is in memory, not a ledger scan).
  const t2 = Date.now();
  await page.goto(`${world.base}/ui/#/overview`);
  await page.waitForFunction(() => Number(document.querySelector("#chart-rate")?.dataset.points ?? 0) > 0);
  const overviewMs = Date.now() - t2;
  console.log(`# with ${records} records: first page ${firstPageMs} ms, next pages ${pageMs.toFixed(0)} ms each, overview ${overviewMs} ms`);
  // Generous bounds: these catch "loads everything" (tens of seconds), not machine speed.
  assert.ok(firstPageMs < 10000 && pageMs < 10000 && overviewMs < 10000);
  await shot("requests-100k");
});
