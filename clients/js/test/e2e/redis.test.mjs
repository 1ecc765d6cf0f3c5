// Several gateways on one Redis, as a browser sees them: events published on
// node A reach a page connected to node B; when Redis dies the page is told
// (`reset` `broker_unavailable`), when it is back (`broker_restored`), and
// new events flow even though Redis came back empty (offsets from 1 again).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Gateway, RedisServer, launchBrowser, openPage, pageLog, received, startClient, waitFor } from './harness.mjs';

const T = { timeout: 90_000 };
const redis = new RedisServer();
let a;
let b;
let chromium;

before(async () => {
  await redis.start();
  a = new Gateway({ redis: redis.url, node: 'node-a' });
  b = new Gateway({ redis: redis.url, node: 'node-b' });
  await a.start();
  await b.start();
  chromium = await launchBrowser();
});

after(async () => {
  await chromium?.close();
  await a?.dispose();
  await b?.dispose();
  await redis.dispose();
});

const ready = async (gateway) => (await fetch(`${gateway.internalOrigin}/readyz`)).status === 200;

test('a page on node B sees node A\'s events, a Redis outage and the return', T, async (t) => {
  const context = await chromium.browser.newContext();
  t.after(() => context.close().catch(() => {}));
  const page = await openPage(context, b, { bornes: ['R1'] });
  await startClient(page, { backoff: { base: 200, max: 1000 } });
  await waitFor('the connection to open', async () => (await pageLog(page)).state.at(-1)?.state === 'open');

  const first = [await a.publish('R1', { i: 1 }), await a.publish('R1', { i: 2 })];
  await waitFor('node A\'s events on node B', async () => (await received(page)).length === 2);
  assert.deepEqual(await received(page), first);

  await redis.kill();
  await waitFor('broker_unavailable', async () => (await pageLog(page)).reset.some((r) => r.reason === 'broker_unavailable'));
  // Each node notices the loss on its own link: node A, which serves no
  // page, may notice a moment after node B told the page.
  await waitFor('/readyz to fail on both nodes', async () => !(await ready(a)) && !(await ready(b)), 5_000);
  const refused = await fetch(`${a.internalOrigin}/api/v1/publish`, {
    method: 'POST',
    headers: { authorization: 'Bearer pub-key', 'content-type': 'application/json' },
    body: JSON.stringify({ app_id: 'bluelib', channel: 'bornes', event_kind: 'status', keywords: ['borne:R1'] }),
  });
  assert.equal(refused.status, 503, 'a publish is refused, never accepted and dropped');

  await redis.start();
  await waitFor('broker_restored', async () => (await pageLog(page)).reset.some((r) => r.reason === 'broker_restored'), 20_000);
  await waitFor('node A ready again', () => ready(a), 20_000);
  const resets = (await pageLog(page)).reset.map((r) => r.reason);
  assert.deepEqual(resets.filter((r) => r.startsWith('broker')), ['broker_unavailable', 'broker_restored']);

  // Redis came back empty: offsets start at 1 again, and are not taken for duplicates.
  const after = [await a.publish('R1', { i: 3 }), await a.publish('R1', { i: 4 })];
  assert.deepEqual(after, [1, 2]);
  await waitFor('events after the return', async () => (await received(page)).length === 4);
  assert.deepEqual(await received(page), [...first, ...after]);
});
