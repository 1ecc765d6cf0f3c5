// End-to-end: what the page is told when the gateway refuses it or cannot be
// reached from it (issue 10, "A newcomer's first hour"): a refused
// subscription is never reported `open`, and a gateway the browser's policy
// keeps out (CORS, HTTP 403, a refused WebSocket) gives an `error`.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Gateway, PageServer, SECRET, launchBrowser, openPage, pageLog, sleep, startClient, waitFor } from './harness.mjs';

const T = { timeout: 90_000 };
let gateway;
let pages;
let chrome;

before(async () => {
  gateway = new Gateway();
  await gateway.start();
  pages = new PageServer(gateway);
  await pages.start();
  chrome = await launchBrowser();
});

after(async () => {
  await chrome?.close();
  await pages?.dispose();
  await gateway?.dispose();
});

async function soloPage(t, options) {
  const context = await chrome.browser.newContext();
  t.after(() => context.close().catch(() => {}));
  return openPage(context, gateway, options);
}

// Was: `error` `invalid_token`, then `state` `open` for good.
for (const transport of ['websocket', 'sse', 'poll']) {
  test(`a token signed with the wrong secret is refused, never reported open; a good one then opens (${transport})`, T, async (t) => {
    const page = await soloPage(t, { bornes: [`W-${transport}`], secret: 'not-the-gateway-secret' });
    await startClient(page, { transports: [transport], backoff: { base: 300, max: 600 } });
    await waitFor('the refusal', async () => (await pageLog(page)).state.some((s) => s.state === 'refused'));
    let log = await pageLog(page);
    assert.equal(log.error[0]?.code, 'invalid_token', 'the error is passed on');
    const refused = log.state.find((s) => s.state === 'refused');
    assert.equal(refused.reason, 'invalid_token');
    assert.equal(refused.transport, transport);
    assert.equal(typeof refused.delay, 'number', 'getSubscription will be asked again');
    assert.ok(log.order.indexOf('error:invalid_token') < log.order.indexOf('state:refused'), 'the error, then the state');
    // It asks the backend again (still a bad token): refused again, never open.
    await waitFor('a second try', () => page.sub.calls >= 2);
    await sleep(500);
    log = await pageLog(page);
    assert.ok(!log.state.some((s) => s.state === 'open'), `never open: ${log.order.join(' ')}`);

    // The backend is fixed: the next try opens, and events flow.
    page.sub.secret = SECRET;
    await waitFor('the connection to open', async () => (await pageLog(page)).state.at(-1)?.state === 'open', 15_000);
    const offset = await gateway.publish(`W-${transport}`, { ok: true });
    await waitFor('the event', async () => (await pageLog(page)).data.some((m) => m.offset === offset));
  });
}

// Was: `TypeError: Failed to fetch` in a silent loop of reconnections.
test('a gateway the page may not reach (refused WebSocket, CORS, HTTP 403) gives an unreachable error; retries go on', T, async (t) => {
  // The page is on another origin than the gateway, which allows none (no CORS).
  const page = await soloPage(t, { bornes: ['U1'], origin: pages.origin });
  await startClient(page, {
    url: `${gateway.origin.replace('http', 'ws')}/blocked-ws`, // the handshake answered 404
    sseUrl: `${gateway.origin}/sse`, // cross-origin, no Access-Control-Allow-Origin
    pollUrl: `${pages.origin}/forbidden/poll`, // HTTP 403
    fallbackAfter: 1,
    backoff: { base: 100, max: 300 },
  });
  await waitFor('two unreachable errors', async () => (await pageLog(page)).error.filter((e) => e.code === 'unreachable').length >= 2, 30_000);
  const log = await pageLog(page);
  const [error] = log.error;
  assert.equal(error.code, 'unreachable');
  assert.match(error.message, /^the gateway cannot be reached from this page/);
  const [ws, sse, poll] = error.failures;
  assert.deepEqual([ws.transport, ws.code], ['websocket', 1006]);
  assert.equal(sse.transport, 'sse');
  assert.match(sse.reason, /^TypeError: Failed to fetch \(a cross-origin request from http:\/\/127\.0\.0\.1:\d+ to http:\/\/127\.0\.0\.1:\d+: .*CORS/);
  assert.deepEqual([poll.transport, poll.code, poll.reason], ['poll', 403, 'HTTP 403']);
  assert.ok(!log.state.some((s) => s.state === 'open'));
  assert.ok(log.state.filter((s) => s.state === 'reconnecting').length >= 6, 'it keeps trying, with backoff');
  assert.ok(pages.requests.filter((p) => p === '/forbidden/poll').length >= 2);
});
