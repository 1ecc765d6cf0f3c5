// The operator console (`/admin/` on the internal listener) in Chromium,
// against a real gateway: the key is asked for and kept in the tab, the
// numbers and charts move while events are published, a channel is switched
// off only once the confirmation is accepted (and then listed), a user
// disconnect goes through its confirmation. Saves a screenshot in
// test/artifacts/ (copy it over docs/images/admin-console.png to refresh the
// docs, as with the demo's), so that a test run leaves the tree clean.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import {
  ADMIN_KEY, API_KEY, APP, CHANNEL, Gateway, JS_ROOT, launchBrowser, openPage, sleep, startClient, waitFor,
} from './harness.mjs';

const IMAGES = join(JS_ROOT, 'test', 'artifacts');
let gateway;
let browser;
let publishing;

/** Publishes one event of `kind` on `channel` of the app. */
async function publish(channel, kind, keywords, data) {
  const res = await fetch(`${gateway.internalOrigin}/api/v1/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ app_id: APP, channel, event_kind: kind, keywords, data }),
  });
  if (!res.ok) throw new Error(`publish: HTTP ${res.status} ${await res.text()}`);
}

/** Publishes in the background (bornes ~15/s, alarms ~3/s) until stopped. */
function startPublishing() {
  let stopped = false;
  const done = (async () => {
    for (let i = 0; !stopped; i += 1) {
      await publish(CHANNEL, 'status', [`borne:B${(i % 3) + 1}`], { uid: `B${(i % 3) + 1}`, i });
      if (i % 5 === 0) await publish('alarms', 'alarm', ['level:critical'], { i });
      await sleep(60);
    }
  })();
  return async () => {
    stopped = true;
    await done;
  };
}

before(async () => {
  gateway = new Gateway();
  await gateway.start();
  browser = await launchBrowser();
  mkdirSync(IMAGES, { recursive: true });
});

after(async () => {
  await publishing?.();
  await browser?.close();
  await gateway?.dispose();
});

const value = (page, id) => page.locator(`#${id}`).getAttribute('data-value').then((v) => (v === null || v === '' ? null : Number(v)));

test('the console shows live numbers, switches a channel off after confirmation, and disconnects a user', async (t) => {
  const context = await browser.browser.newContext({ viewport: { width: 1440, height: 1180 } });
  t.after(() => context.close().catch(() => {}));

  // Two browser clients of the app, so there is something to see.
  for (const bornes of [['B1'], ['B1', 'B2', 'B3']]) {
    const client = await openPage(context, gateway, { bornes });
    await startClient(client);
  }

  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  // A refused key's 403 is logged by Chromium as a failed load: expected here.
  page.on('console', (m) => { if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) errors.push(m.text()); });
  await page.goto(`${gateway.internalOrigin}/admin/`);

  // No key yet: only the key form. A wrong key is said to be wrong.
  assert.equal(await page.locator('#console').isHidden(), true);
  await page.fill('#key', 'not-the-key');
  await page.click('#connect');
  await waitFor('the wrong key to be refused', async () =>
    (await page.locator('#key-error').textContent()).includes('Wrong admin key'));
  assert.equal(await page.locator('#console').isHidden(), true);
  assert.equal(await page.evaluate(() => sessionStorage.getItem('chouquette.admin.key')), null);

  await page.fill('#key', ADMIN_KEY);
  await page.click('#connect');
  await page.locator('#console').waitFor({ state: 'visible' });
  assert.equal(await page.evaluate(() => sessionStorage.getItem('chouquette.admin.key')), ADMIN_KEY);
  assert.equal(await page.locator('#conn-state').textContent(), 'live');
  await waitFor('both clients to show', async () => (await value(page, 'v-connections')) === 2);
  assert.equal(await page.locator('#broker-kind').textContent(), 'memory');
  assert.equal(await page.locator('#broker-state').textContent(), 'connected');

  // Live numbers move while events are published.
  const before = await value(page, 'v-published-total');
  publishing = startPublishing();
  await waitFor('the published total to grow', async () => (await value(page, 'v-published-total')) > before + 20, 15_000);
  await waitFor('a published rate', async () => (await value(page, 'v-published-rate')) > 1, 15_000);
  await waitFor('a delivered rate', async () => (await value(page, 'v-delivered-rate')) > 1, 15_000);
  await waitFor('latency quantiles', async () => (await value(page, 'v-p99')) > 0, 15_000);
  const p50 = await value(page, 'v-p50');
  const p99 = await value(page, 'v-p99');
  assert.ok(p50 > 0 && p50 <= p99 && p99 < 1000, `p50 ${p50} ms, p99 ${p99} ms`);
  await waitFor('both channels in the table', async () => {
    const text = await page.locator('#channels tbody').textContent();
    return text.includes(CHANNEL) && text.includes('alarms');
  });
  assert.match(await page.locator('#apps tbody').textContent(), /bluelib/);
  assert.match(await page.locator('#broker tbody').textContent(), /publish/);
  const samples = await page.evaluate(() => window.__console.series.length);
  assert.ok(samples >= 3, `${samples} chart samples`);
  // Some seconds of history for the charts in the screenshot.
  await sleep(8000);

  // Switching a channel off: a dismissed confirmation changes nothing...
  await page.selectOption('#sw-scope', 'channel');
  await page.fill('#sw-app', APP);
  await page.fill('#sw-channel', CHANNEL);
  const dismissed = new Promise((resolve) => page.once('dialog', async (d) => {
    resolve(d.message());
    await d.dismiss();
  }));
  await page.click('#sw-off');
  assert.match(await dismissed, /Switch off channel, app bluelib, channel bornes\?/);
  await waitFor('the cancellation', async () => (await page.locator('#switch-result').textContent()) === 'Cancelled.');
  let listed = await (await fetch(`${gateway.internalOrigin}/admin/switches`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })).json();
  assert.deepEqual(listed.switches, []);

  // ...an accepted one puts the switch in force, and the console lists it.
  const accepted = new Promise((resolve) => page.once('dialog', async (d) => {
    resolve(d.type());
    await d.accept();
  }));
  await page.click('#sw-off');
  assert.equal(await accepted, 'confirm');
  await waitFor('the switch to be listed', async () => {
    const text = await page.locator('#switches tbody').textContent();
    return text.includes('channel') && text.includes(CHANNEL) && !text.includes('none in force');
  });
  assert.match(await page.locator('#switch-result').textContent(), /in force, 2 connection\(s\) affected/);
  listed = await (await fetch(`${gateway.internalOrigin}/admin/switches`, { headers: { authorization: `Bearer ${ADMIN_KEY}` } })).json();
  assert.deepEqual(listed.switches, [{ scope: 'channel', app: APP, channel: CHANNEL }]);
  await waitFor('the subscriptions to end', async () => (await gateway.metric('chouquette_disabled_resets_total')) === 2);

  // Disconnect by user, also behind a confirmation.
  await page.fill('#du-app', APP);
  await page.fill('#du-user', 'roger');
  page.once('dialog', (d) => d.accept());
  await page.click('#du-go');
  await waitFor('the disconnect answer', async () =>
    (await page.locator('#user-result').textContent()).includes('0 connection(s) of roger closed'));

  // The picture: deliveries fall to nothing once the channel is off; publishing goes on.
  await sleep(1500);
  await page.screenshot({ path: join(IMAGES, 'admin-console.png'), fullPage: true });

  // Lifting it, confirmed, empties the list again.
  page.once('dialog', (d) => d.accept());
  await page.locator('#switches tbody button').click();
  await waitFor('the switch to be lifted', async () =>
    (await page.locator('#switches tbody').textContent()).includes('none in force'));

  // The key stays in the tab across a reload; "Forget key" drops it.
  await page.reload();
  await page.locator('#console').waitFor({ state: 'visible' });
  await page.click('#forget');
  assert.equal(await page.evaluate(() => sessionStorage.getItem('chouquette.admin.key')), null);
  assert.equal(await page.locator('#key-form').isVisible(), true);

  await publishing();
  publishing = undefined;
  assert.deepEqual(errors, []);
});
