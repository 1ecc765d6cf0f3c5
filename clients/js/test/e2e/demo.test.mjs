// The supervision demo in Chromium: `chouquette demo` really runs, Roger's
// page only ever receives borne B1 (and only its critical alarms), VB's page
// receives the whole fleet, each point shown online as a device with its
// command buttons; the backend's notifications show on the page, a
// burst grouped as one with its count, and an acknowledged one never comes
// back. Saves a screenshot of each view.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { JS_ROOT, REPO, freePort, launchBrowser, waitFor } from './harness.mjs';

const ARTIFACTS = join(JS_ROOT, 'test', 'artifacts');
let demo;
let exited;
let origin;
let browser;

before(async () => {
  const binary = process.env.CHOUQUETTE_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(REPO, 'target'), 'debug', 'chouquette');
  if (!existsSync(binary)) throw new Error(`no gateway binary at ${binary}: run cargo build -p chouquette`);
  const [pub, internal] = [await freePort(), await freePort()];
  demo = spawn(binary, ['demo', '--public', `127.0.0.1:${pub}`, '--internal', `127.0.0.1:${internal}`,
                        '--rate', '60'], { stdio: ['ignore', 'pipe', 'pipe'] });
  exited = new Promise((r) => demo.once('exit', (code) => r(code)));
  let out = '';
  demo.stdout.on('data', (c) => { out += c; });
  demo.stderr.on('data', () => {});
  await waitFor('the demo to print its URL', () => out.includes('open http://'), 20_000);
  origin = `http://127.0.0.1:${pub}`;
  assert.ok(out.includes(`open ${origin}/`), out);
  browser = await launchBrowser();
  mkdirSync(ARTIFACTS, { recursive: true });
});

after(async () => {
  await browser?.close();
  if (demo && demo.exitCode === null) {
    demo.kill('SIGTERM');
    assert.equal(await exited, 0, 'the demo exits 0 on SIGTERM');
  }
});

/** A page (in a context of its own) closed when test `t` ends, pass or fail. */
async function view(t, user) {
  const page = await browser.browser.newPage({ viewport: { width: 1400, height: 900 } });
  t.after(() => page.close().catch(() => {}));
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(`${origin}/?user=${user}`);
  return { page, errors };
}

const received = (page) => page.evaluate(() => window.__demo.received);

/**
 * Saves a screenshot of `page` once its client is closed: a page redrawing
 * 60 changes a second can keep a loaded machine from ever settling on a
 * frame to capture.
 */
async function screenshot(page, file) {
  await page.evaluate(() => window.__demo.client.close());
  await page.screenshot({ path: join(ARTIFACTS, file), timeout: 60_000 });
}

test("Roger only ever receives borne B1, and only its critical alarms", async (t) => {
  const { page, errors } = await view(t, 'roger');
  // Live (not snapshot) events for B1 arrive at ~1/8 of the demo's rate.
  await waitFor('Roger to receive live events', async () =>
    (await received(page)).filter((m) => !m.snapshot).length >= 8, 30_000);
  const all = await received(page);
  assert.ok(all.length >= 8);
  for (const m of all) {
    // B1's own events, and B1's liveness as a device (device_online, ...).
    assert.ok(m.keywords.includes('borne:B1') || m.keywords.includes('device:B1'), `Roger received ${JSON.stringify(m)}`);
    if (m.kind === 'alarm') assert.ok(m.keywords.includes('level:critical'), JSON.stringify(m));
  }
  const offsets = all.filter((m) => !m.snapshot).map((m) => m.offset);
  assert.deepEqual(offsets, [...offsets].sort((a, b) => a - b), 'offsets in order');
  assert.equal(new Set(offsets).size, offsets.length, 'no duplicates');
  assert.equal(await page.locator('#bornes tbody tr').count(), 1, 'one row: B1');
  await screenshot(page, 'demo-roger.png');
  assert.deepEqual(errors, []);
});

test('VB receives the whole fleet', async (t) => {
  const { page, errors } = await view(t, 'vb');
  await waitFor('the fleet snapshot', async () =>
    (await page.locator('#bornes tbody tr').count()) === 200, 20_000);
  await waitFor('events of other bornes', async () =>
    (await received(page)).some((m) => !m.snapshot && !m.keywords.includes('borne:B1')), 20_000);
  // Every point is a device of the gateway: its link is known (online, or
  // silent/offline during the demo's outages), with command buttons.
  await waitFor("every point's link", async () =>
    (await page.locator('#bornes td.link-cell:not([data-link="unknown"])').count()) === 200, 20_000);
  assert.equal(await page.locator('#bornes button.command').count(), 400);
  await screenshot(page, 'demo-vb.png');
  assert.deepEqual(errors, []);
});

test("the backend's notifications: a burst of reports is one grouped notification with its count, acknowledged from the page", async (t) => {
  const { page, errors } = await view(t, 'roger');
  const notes = () => page.evaluate(() => window.__demo.notifications);
  // The demo sends 12 reports in a burst, grouped within 3 s: the first alone, then one of 11.
  await waitFor('the grouped reports', async () => (await notes()).some((n) => n.kind === 'report' && n.count === 11), 30_000);
  const group = (await notes()).find((n) => n.kind === 'report' && n.count === 11);
  const item = page.locator(`#notifications li[data-id="${group.id}"]`);
  assert.equal(await item.locator('.count').textContent(), '×11');
  assert.ok((await notes()).some((n) => n.kind === 'report' && n.count === 1), 'the first report of the burst, alone');
  await page.screenshot({ path: join(ARTIFACTS, 'demo-notifications.png'), timeout: 60_000 }).catch(() => {});
  await item.locator('button.ack').click();
  await item.waitFor({ state: 'detached', timeout: 10_000 });
  // Acknowledged for good: a new page of the user gets the others again, not this one.
  const again = await view(t, 'roger');
  await waitFor('the pending reports', async () =>
    (await again.page.evaluate(() => window.__demo.notifications)).some((n) => n.kind === 'report'), 20_000);
  const ids = (await again.page.evaluate(() => window.__demo.notifications)).map((n) => n.id);
  assert.ok(!ids.includes(group.id), `${group.id} came back: ${ids}`);
  assert.deepEqual(errors, []);
  assert.deepEqual(again.errors, []);
});
