// End-to-end: the bundled client (dist/chouquette.js) in headless Chromium
// against a real gateway process. Pages are served by the gateway itself
// (`[static] dir`), so page and gateway share an origin.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Gateway, launchBrowser, openPage, pageLog, received, sleep, startClient, waitFor } from './harness.mjs';

const T = { timeout: 90_000 };
let gateway;
let chrome;

before(async () => {
  gateway = new Gateway();
  await gateway.start();
  chrome = await launchBrowser();
});

after(async () => {
  await chrome?.close();
  await gateway?.dispose();
});

/** A browser context closed when test `t` ends, pass or fail (a leftover connection would upset the next tests). */
async function newContext(t) {
  const context = await chrome.browser.newContext();
  t.after(() => context.close().catch(() => {}));
  return context;
}

/** A page in a context of its own (closed when `t` ends). */
async function soloPage(t, options) {
  const context = await newContext(t);
  const page = await openPage(context, gateway, options);
  return { context, page };
}

/**
 * Records the page's requests to the gateway's /sse and /poll, to check
 * that tokens travel in the POST body and never in a URL (which proxies log).
 */
function gatewayRequests(page) {
  const seen = [];
  page.on('request', (r) => {
    const path = new URL(r.url()).pathname;
    if (path === '/sse' || path === '/poll') seen.push({ method: r.method(), url: r.url(), body: r.postData() });
  });
  return seen;
}

function assertTokensInBodies(seen) {
  assert.ok(seen.length > 0, 'requests were made');
  for (const r of seen) {
    assert.equal(r.method, 'POST', r.url);
    assert.ok(!new URL(r.url).search, `no query string: ${r.url}`);
    assert.ok(JSON.parse(r.body).sub.length > 0, `tokens in the body: ${r.body}`);
  }
}

const lastState = (page) => page.evaluate(() => window.log.state.at(-1));
const waitOpen = (page, transport) =>
  waitFor(`the ${transport} connection to open`, async () => {
    const s = await lastState(page);
    return s?.state === 'open' && s.transport === transport;
  });
const waitReceived = (page, offsets, what = 'events') =>
  waitFor(what, async () => (await received(page)).length >= offsets.length, 15_000).then(() => received(page));

async function publishMany(borne, n, spacingMs = 0) {
  const offsets = [];
  for (let i = 0; i < n; i++) {
    offsets.push(await gateway.publish(borne, { i }));
    if (spacingMs) await sleep(spacingMs);
  }
  return offsets;
}

async function connectionsBecome(n) {
  await waitFor(`chouquette_connections ${n}`, async () => (await gateway.metric('chouquette_connections')) === n);
}

test('delivers snapshots, then live events in order, over WebSocket', T, async (t) => {
  const kept = await gateway.publish('D1', { status: 'charging' }, { key: 'borne:D1' });
  const { page } = await soloPage(t, { bornes: ['D1'] });
  await startClient(page);
  await waitOpen(page, 'websocket');
  await waitFor('the snapshot', async () => (await pageLog(page)).snapshot.length === 1);
  const log = await pageLog(page);
  assert.equal(log.snapshot[0].offset, kept);
  assert.equal(log.snapshot[0].snapshot, true);
  const offsets = await publishMany('D1', 5);
  assert.deepEqual(await waitReceived(page, offsets), offsets);
  assert.deepEqual((await pageLog(page)).error, []);
});

test('a page subscribed to B1 never gets B2 events', T, async (t) => {
  const one = await soloPage(t, { bornes: ['F-B1'] });
  const two = await soloPage(t, { bornes: ['F-B2'] });
  await startClient(one.page);
  await startClient(two.page);
  await waitOpen(one.page, 'websocket');
  await waitOpen(two.page, 'websocket');
  const b1 = [];
  const b2 = [];
  for (let i = 0; i < 6; i++) {
    b1.push(await gateway.publish('F-B1', { i }));
    b2.push(await gateway.publish('F-B2', { i }));
  }
  assert.deepEqual(await waitReceived(one.page, b1), b1);
  assert.deepEqual(await waitReceived(two.page, b2), b2);
  await sleep(300);
  const uids = (await pageLog(one.page)).data.map((m) => m.data.uid);
  assert.deepEqual([...new Set(uids)], ['F-B1']);
  assert.deepEqual(await received(two.page), b2);
});

test('a dropped WebSocket resumes with since: contiguous, no duplicate', T, async (t) => {
  const { page } = await soloPage(t, { bornes: ['R1'] });
  await startClient(page, { backoff: { base: 1500, max: 3000 } });
  await waitOpen(page, 'websocket');
  const before = await publishMany('R1', 5);
  await waitReceived(page, before);
  // Cut the socket from the page side, then publish while it is away.
  await page.evaluate(() => window.sockets.at(-1).close());
  const during = await publishMany('R1', 10);
  const all = [...before, ...during];
  assert.deepEqual(await waitReceived(page, all), all);
  const log = await pageLog(page);
  assert.ok(log.state.some((s) => s.state === 'reconnecting'), 'it reconnected');
  assert.equal(await page.evaluate(() => window.sockets.length), 2);
  const after = await publishMany('R1', 3);
  assert.deepEqual(await waitReceived(page, [...all, ...after]), [...all, ...after]);
});

test('falls back to SSE when WebSocket is refused, and resumes over it', T, async (t) => {
  const { page } = await soloPage(t, { bornes: ['E1'] });
  // The gateway answers 404 to an upgrade on a path it does not serve: a real
  // refusal of the WebSocket handshake, as a proxy blocking WebSocket gives.
  const wsUrl = `${gateway.origin.replace('http', 'ws')}/blocked-ws`;
  const requests = gatewayRequests(page);
  await startClient(page, { url: wsUrl, sseUrl: `${gateway.origin}/sse`, pollUrl: `${gateway.origin}/poll`, fallbackAfter: 2, backoff: { base: 100, max: 500 } });
  await waitOpen(page, 'sse');
  const log = await pageLog(page);
  assert.ok(log.state.filter((s) => s.transport === 'websocket' && s.state === 'connecting').length >= 2);
  const offsets = await publishMany('E1', 5);
  assert.deepEqual(await waitReceived(page, offsets), offsets);
  assert.deepEqual((await pageLog(page)).error, []);
  assertTokensInBodies(requests);
});

test('long-polling delivers in order when forced', T, async (t) => {
  const { page } = await soloPage(t, { bornes: ['P1'] });
  const requests = gatewayRequests(page);
  await startClient(page, { transports: ['poll'], pollTimeout: 5 });
  await waitOpen(page, 'poll');
  const offsets = await publishMany('P1', 6, 50);
  assert.deepEqual(await waitReceived(page, offsets), offsets);
  assertTokensInBodies(requests);
});

// Issue 10: long-polling said `closed` (`no active subscription`) at every
// token refresh before reopening. A refresh is now seamless on every
// transport: no gap, and the state stays `open`.
for (const transport of ['websocket', 'sse', 'poll']) {
  test(`a token refresh is seamless: no gap, no closed state (${transport})`, T, async (t) => {
    // The first token lives 2-3 s; the ones after it, ten minutes.
    const { page } = await soloPage(t, { bornes: [`X-${transport}`], ttlSecs: 3 });
    await startClient(page, { transports: [transport] });
    await waitOpen(page, transport);
    page.sub.ttlSecs = 600;
    const offsets = await publishMany(`X-${transport}`, 40, 125);
    assert.deepEqual(await waitReceived(page, offsets), offsets);
    assert.ok(page.sub.calls >= 2, `getSubscription called ${page.sub.calls} times`);
    const log = await pageLog(page);
    assert.deepEqual(log.error, []);
    assert.deepEqual(log.reset, []);
    const opened = log.state.findIndex((s) => s.state === 'open');
    assert.deepEqual(log.state.slice(opened).map((s) => `${s.state}:${s.transport}`),
      [`open:${transport}`], 'open once, and never anything else after it');
  });
}

test('tabs share one connection, and a new leader resumes when the first tab closes', T, async (t) => {
  await connectionsBecome(0);
  const context = await newContext(t);
  const first = await openPage(context, gateway, { bornes: ['S1'] });
  const second = await openPage(context, gateway, { bornes: ['S1'] });
  await startClient(first, { shared: 'e2e' });
  await waitOpen(first, 'websocket');
  await startClient(second, { shared: 'e2e' });
  await waitOpen(second, 'websocket');
  const offsets = await publishMany('S1', 5);
  assert.deepEqual(await waitReceived(first, offsets), offsets);
  assert.deepEqual(await waitReceived(second, offsets), offsets);
  assert.equal(await gateway.metric('chouquette_connections'), 1);
  const sockets = async (p) => p.evaluate(() => window.sockets.length);
  assert.deepEqual([await sockets(first), await sockets(second)], [1, 0], 'the first tab leads');

  // The leader's tab closes while events are published: the second takes over and resumes with since.
  const publishing = publishMany('S1', 15, 30);
  await sleep(150);
  await first.close({ runBeforeUnload: true });
  const more = await publishing;
  const all = [...offsets, ...more];
  assert.deepEqual(await waitReceived(second, all), all);
  assert.equal(await sockets(second), 1);
  await connectionsBecome(1);
});

test('a page hidden long enough closes its connection, and resumes when shown', T, async (t) => {
  await connectionsBecome(0);
  const { page } = await soloPage(t, { bornes: ['H1'] });
  await startClient(page, { hiddenTimeout: 300 });
  await waitOpen(page, 'websocket');
  const before = await publishMany('H1', 3);
  await waitReceived(page, before);
  await page.evaluate(() => window.setVisibility('hidden'));
  await waitFor('the hidden close', async () => (await lastState(page))?.reason === 'hidden');
  await connectionsBecome(0);
  const during = await publishMany('H1', 4);
  await sleep(200);
  assert.deepEqual(await received(page), before, 'nothing arrives while hidden');
  await page.evaluate(() => window.setVisibility('visible'));
  const all = [...before, ...during];
  assert.deepEqual(await waitReceived(page, all), all);
});

test('a gateway restart: reset history_gap (new epoch), then new events flow', T, async (t) => {
  const { page } = await soloPage(t, { bornes: ['G1'] });
  await startClient(page, { backoff: { base: 200, max: 1000 } });
  await waitOpen(page, 'websocket');
  const before = await publishMany('G1', 3);
  await waitReceived(page, before);

  const status = await gateway.stop();
  assert.deepEqual(status, { code: 0, signal: null }, 'SIGTERM exits 0');
  await waitFor('the shutdown notice', async () => (await pageLog(page)).state.some((s) => s.reason === 'shutdown'));
  await gateway.start();
  await waitFor('the reset', async () => (await pageLog(page)).reset.length > 0, 20_000);
  const log = await pageLog(page);
  assert.equal(log.reset[0].reason, 'history_gap');
  assert.equal(log.reset[0].channel, 'bornes');
  assert.ok(!log.reset.some((r) => r.reason === 'shutdown'), 'shutdown is handled, not passed on as a reset');
  await waitOpen(page, 'websocket');

  // The memory broker starts again at offset 1: the client must not take these for duplicates.
  const afterRestart = await publishMany('G1', 4);
  const all = [...before, ...afterRestart];
  assert.deepEqual(await waitReceived(page, all), all);
  const order = (await pageLog(page)).order.filter((o) => o.startsWith('data') || o.startsWith('reset'));
  assert.equal(order.indexOf('reset:history_gap'), before.length, 'the reset comes between the old and the new events');
});
