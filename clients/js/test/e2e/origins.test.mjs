// End-to-end: a page on another origin than the gateway (issue 10, M5). With
// `[listen] allowed_origins` naming the page's origin, Chromium lets the page
// receive events over SSE and long-poll (CORS) and open the WebSocket; a page
// on an origin not listed gets none of them.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Gateway, PageServer, launchBrowser, openPage, pageLog, sleep, startClient, waitFor } from './harness.mjs';

const T = { timeout: 90_000 };
let gateway;
let listed;
let unlisted;
let chrome;

before(async () => {
  gateway = new Gateway();
  listed = new PageServer(gateway);
  unlisted = new PageServer(gateway);
  await listed.start();
  await unlisted.start();
  gateway.allowedOrigins = [listed.origin];
  await gateway.start();
  chrome = await launchBrowser();
});

after(async () => {
  await chrome?.close();
  await listed?.dispose();
  await unlisted?.dispose();
  await gateway?.dispose();
});

async function pageOn(t, origin, bornes) {
  const context = await chrome.browser.newContext();
  t.after(() => context.close().catch(() => {}));
  return openPage(context, gateway, { bornes, origin });
}

const wsUrl = () => `${gateway.origin.replace('http', 'ws')}/ws`;

for (const transport of ['sse', 'poll', 'websocket']) {
  test(`a page on a listed origin receives events over ${transport} from the gateway's origin`, T, async (t) => {
    assert.notEqual(listed.origin, gateway.origin, 'the page is cross-origin');
    const borne = `O-${transport}`;
    const page = await pageOn(t, listed.origin, [borne]);
    await startClient(page, { url: wsUrl(), transports: [transport], backoff: { base: 300, max: 600 } });
    await waitFor('the connection to open', async () => (await pageLog(page)).state.at(-1)?.state === 'open', 15_000);
    const offset = await gateway.publish(borne, { n: 1 });
    await waitFor('the event', async () => (await pageLog(page)).data.some((m) => m.offset === offset));
    const log = await pageLog(page);
    assert.equal(log.error.length, 0, `no error: ${JSON.stringify(log.error)}`);
  });

  test(`a page on an unlisted origin is kept out over ${transport}`, T, async (t) => {
    const borne = `X-${transport}`;
    const page = await pageOn(t, unlisted.origin, [borne]);
    await startClient(page, { url: wsUrl(), transports: [transport], backoff: { base: 100, max: 300 } });
    await waitFor('an unreachable error', async () => (await pageLog(page)).error.some((e) => e.code === 'unreachable'), 30_000);
    await gateway.publish(borne, { n: 1 });
    await sleep(500);
    const log = await pageLog(page);
    assert.ok(!log.state.some((s) => s.state === 'open'), `never open: ${log.order.join(' ')}`);
    assert.equal(log.data.length, 0, 'no event reaches it');
  });
}
