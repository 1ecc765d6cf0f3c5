// End-to-end: identity (connect), calls both ways, lattices and idle disconnection,
// the bundled client in headless Chromium against a real gateway process. The
// app's RPC backend is a small node HTTP server of this test.
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { after, before, test } from 'node:test';
import { API_KEY, APP, Gateway, freePort, launchBrowser, openPage, received, startClient, waitFor } from './harness.mjs';

const T = { timeout: 90_000 };
let gateway;
let chrome;
let backend;
const backendCalls = [];

before(async () => {
  // The RPC backend: `echo.*` answers what it got (with the caller's identity); `echo.fail` refuses with a code.
  const port = await freePort();
  backend = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      const call = JSON.parse(body);
      backendCalls.push(call);
      if (call.method === 'echo.fail') {
        res.writeHead(409, { 'content-type': 'application/json' }).end(JSON.stringify({ code: 'nope', message: 'not today' }));
      } else {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ got: call.args, kw: call.kwargs, user: call.user.user_id }));
      }
    });
  });
  await new Promise((ok) => backend.listen(port, '127.0.0.1', ok));
  gateway = new Gateway({ appConfig: ['[[apps.rpc]]', 'prefix = "echo."', `url = "http://127.0.0.1:${port}/rpc"`, 'timeout = "5s"'] });
  await gateway.start();
  chrome = await launchBrowser();
});

after(async () => {
  await chrome?.close();
  await gateway?.dispose();
  await new Promise((ok) => (backend ? backend.close(ok) : ok()));
});

async function identifiedPage(t, options = {}) {
  const context = await chrome.browser.newContext();
  t.after(() => context.close().catch(() => {}));
  const page = await openPage(context, gateway, { bornes: ['B1'] });
  await startClient(page, { identity: true, ...options });
  await waitFor('the identity', () => page.evaluate(() => window.log.connected.length > 0 && window.client.state.state === 'open'));
  return page;
}

async function api(path, body) {
  const res = await fetch(`${gateway.internalOrigin}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

/** Runs `client.call` in the page: `{result}` or `{code, message}`. */
const callIn = (page, method, args, kwargs) => page.evaluate(([m, a, k]) =>
  window.client.call(m, a, k).then((result) => ({ result }), (e) => ({ code: e.code, message: e.message, name: e.name })), [method, args, kwargs]);

test('connect gives the page its identity; its calls reach the backend as that user', T, async (t) => {
  const page = await identifiedPage(t);
  const [identity] = await page.evaluate(() => window.log.connected);
  assert.deepEqual([identity.user, identity.via, identity.app_id], ['roger', 'token', APP]);
  assert.deepEqual(await callIn(page, 'echo.hi', [1, 'two'], { three: 3 }), { result: { got: [1, 'two'], kw: { three: 3 }, user: 'roger' } });
  assert.deepEqual(await callIn(page, 'echo.fail', [], {}), { code: 'nope', message: 'not today', name: 'CallError' });
  // No route for it: the gateway's own refusal.
  assert.equal((await callIn(page, 'other.x', [], {})).code, 'unavailable');
  assert.ok(backendCalls.some((c) => c.method === 'echo.hi' && c.user.app_id === APP));
});

test('a backend calls the page (POST /api/v1/calls); onCall answers result or error', T, async (t) => {
  const page = await identifiedPage(t);
  await page.evaluate(() => {
    window.client.onCall('device.status', (args, kwargs) => ({ battery: 87, args, kwargs }));
    window.client.onCall('device.reboot', () => {
      throw Object.assign(new Error('updating firmware'), { code: 'busy' });
    });
  });
  const ok = await api('/api/v1/calls', { app_id: APP, user: 'roger', method: 'device.status', args: [1], kwargs: { verbose: true }, timeout: '5s' });
  assert.deepEqual(ok, { status: 200, body: { result: { battery: 87, args: [1], kwargs: { verbose: true } } } });
  const busy = await api('/api/v1/calls', { app_id: APP, user: 'roger', method: 'device.reboot', timeout: '5s' });
  assert.deepEqual(busy, { status: 200, body: { error: { code: 'busy', message: 'updating firmware' } } });
});

test('a lattice view: full state, merged changes, the full state again after a reconnection', T, async (t) => {
  const page = await identifiedPage(t);
  await page.evaluate(() => {
    window.changes = [];
    window.view = window.client.lattice('unread');
    window.view.on('change', (c) => window.changes.push(c));
  });
  await waitFor('the full state', () => page.evaluate(() => window.changes.some((c) => c.full)));
  const merge = (body) => api('/api/v1/lattices', { app_id: APP, namespace: 'unread', shared: {}, users: {}, ...body });
  assert.equal((await merge({ shared: { total: { counter: 3 } }, users: { roger: { rooms: { set: ['r1'] } }, ana: { rooms: { set: ['x'] } } } })).status, 200);
  const view = () => page.evaluate(() => ({ shared: window.view.shared, user: window.view.user }));
  await waitFor('the change', async () => (await view()).user.rooms);
  assert.deepEqual(await view(), { shared: { total: { counter: 3 } }, user: { rooms: { set: ['r1'] } } });
  // Cut the socket: the client reconnects, connects and subscribes again, and gets the full state again.
  const fulls = await page.evaluate(() => window.changes.filter((c) => c.full).length);
  await page.evaluate(() => window.sockets.at(-1).close());
  await waitFor('the full state after reconnecting', () => page.evaluate((n) => window.changes.filter((c) => c.full).length > n, fulls));
  await merge({ shared: { total: { counter: 2 } }, users: { roger: { rooms: { set: ['r2'] } } } });
  await waitFor('the second change', async () => (await view()).user.rooms.set.length === 2);
  assert.deepEqual(await view(), { shared: { total: { counter: 3 } }, user: { rooms: { set: ['r1', 'r2'] } } });
});

test('idle: no user activity closes the connection; activity resumes it with no gap', T, async (t) => {
  const page = await identifiedPage(t, { idle: { inactiveAfter: 1500 } });
  const first = await gateway.publish('B1', { n: 0 });
  await waitFor('the first event', async () => (await received(page)).includes(first));
  await waitFor('the idle close', () => page.evaluate(() => window.log.state.at(-1)?.state === 'closed' && window.log.state.at(-1)?.reason === 'inactive'), 10_000);
  await waitFor('the gateway to see it gone', async () => (await gateway.metric('chouquette_connections')) === 0);
  const missed = [];
  for (let i = 1; i <= 3; i++) missed.push(await gateway.publish('B1', { n: i }));
  assert.deepEqual(await received(page), [first], 'nothing arrives while idle');
  await page.mouse.move(10, 10);
  await page.mouse.move(20, 20);
  await waitFor('the events missed while idle', async () => (await received(page)).length >= 4);
  assert.deepEqual(await received(page), [first, ...missed], 'resumed from where it stood: no gap, no duplicate');
  assert.equal(await page.evaluate(() => window.client.state.state), 'open');
});
