// End-to-end: `chouquette dev ./public /api/=<backend>` (docs/edge.md), as a
// developer uses it: the page, its backend and push on one origin. The
// backend is a stand-in for Django on a port of its own: a login sets a
// session cookie, and `get_subscription` signs only for a logged-in user,
// with the secret `dev` printed. Chromium loads the page from the gateway,
// the page's API calls reach the backend through the proxy (cookie
// included), and the client receives the events its subscription allows.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, test } from 'node:test';
import { APP, CHANNEL, JS_ROOT, REPO, freePort, launchBrowser, sign, waitFor } from './harness.mjs';

const T = { timeout: 90_000 };
const BINARY = process.env.CHOUQUETTE_BIN
  ?? join(process.env.CARGO_TARGET_DIR ?? join(REPO, 'target'), 'debug', 'chouquette');

const PAGE = `<!doctype html>
<meta charset="utf-8">
<title>dev page</title>
<script type="module">
  import { Chouquette } from '/chouquette.js';
  window.log = { data: [], state: [], error: [] };
  window.start = async () => {
    const login = await fetch('/api/login', { method: 'POST' });
    if (!login.ok) throw new Error('login: ' + login.status);
    const client = new Chouquette({
      getSubscription: async () => {
        const answer = await fetch('/api/get_subscription?borne=B1');
        if (!answer.ok) throw new Error('get_subscription: ' + answer.status);
        return answer.json();
      },
    });
    for (const kind of ['data', 'state', 'error']) client.on(kind, (v) => window.log[kind].push(v));
    await client.connect();
  };
  window.ready = true;
</script>
`;

let site;
let backend;
let dev;
let chrome;
const seen = [];
const secrets = {};
let publicOrigin;
let internalOrigin;

/** The stand-in for Django: a session cookie, then a signed subscription. */
function startBackend() {
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    seen.push({ path: url.pathname, headers: req.headers });
    if (url.pathname === '/api/login') {
      res.writeHead(204, { 'set-cookie': 'sessionid=roger; Path=/; HttpOnly' }).end();
    } else if (url.pathname === '/api/get_subscription') {
      if (!(req.headers.cookie ?? '').includes('sessionid=roger')) return res.writeHead(401).end();
      const token = sign({
        app_id: APP, channel: CHANNEL, sub: 'roger',
        filters: { '*': { borne: [url.searchParams.get('borne')] } },
        exp: Math.floor(Date.now() / 1000) + 600,
      }, secrets.secret);
      const message = { class: 'subscribe', app_id: APP, channels: { [CHANNEL]: { filters: token } } };
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(message));
    } else {
      res.writeHead(404).end();
    }
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(server)));
}

/** Starts `chouquette dev`, reading the secrets it prints. */
async function startDev(backendPort) {
  if (!existsSync(BINARY)) throw new Error(`no gateway binary at ${BINARY}: run cargo build -p chouquette`);
  const [pub, internal] = [await freePort(), await freePort()];
  const child = spawn(BINARY, ['dev', site, `/api/=http://127.0.0.1:${backendPort}`, '--app', APP,
    '--public', `127.0.0.1:${pub}`, '--internal', `127.0.0.1:${internal}`],
  { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = new Promise((r) => child.once('exit', (code) => r(code)));
  createInterface({ input: child.stdout }).on('line', (line) => {
    const [, name, value] = line.trim().match(/^export (CHOUQUETTE_SECRET|CHOUQUETTE_API_KEY)=(.+)$/) ?? [];
    if (name === 'CHOUQUETTE_SECRET') secrets.secret = value;
    if (name === 'CHOUQUETTE_API_KEY') secrets.apiKey = value;
  });
  try {
    await waitFor('the secrets dev prints', () => secrets.secret && secrets.apiKey, 20_000);
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  }
  return { child, exited, pub, internal };
}

before(async () => {
  site = mkdtempSync(join(tmpdir(), 'chouquette-dev-site-'));
  writeFileSync(join(site, 'index.html'), PAGE);
  copyFileSync(join(JS_ROOT, 'dist', 'chouquette.js'), join(site, 'chouquette.js'));
  backend = await startBackend();
  dev = await startDev(backend.address().port);
  publicOrigin = `http://127.0.0.1:${dev.pub}`;
  internalOrigin = `http://127.0.0.1:${dev.internal}`;
  chrome = await launchBrowser();
});

after(async () => {
  await chrome?.close();
  if (dev) {
    dev.child.kill('SIGTERM');
    assert.equal(await dev.exited, 0, 'dev exits 0 on SIGTERM');
  }
  backend?.closeAllConnections();
  await new Promise((ok) => (backend ? backend.close(ok) : ok()));
  if (site) rmSync(site, { recursive: true, force: true });
});

async function publish(borne, n) {
  const event = { app_id: APP, channel: CHANNEL, event_kind: 'alarm', keywords: [`borne:${borne}`], data: { n } };
  const answer = await fetch(`${internalOrigin}/api/v1/publish`, {
    method: 'POST',
    headers: { authorization: `Bearer ${secrets.apiKey}`, 'content-type': 'application/json' },
    body: JSON.stringify(event),
  });
  assert.equal(answer.status, 200, await answer.text());
}

test('the page, its backend (with its session cookie) and push share one origin', T, async (t) => {
  const context = await chrome.browser.newContext();
  t.after(() => context.close().catch(() => {}));
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error('page error:', e));
  await page.goto(`${publicOrigin}/`);
  await page.waitForFunction(() => window.ready === true);
  await page.evaluate(() => window.start());
  await waitFor('the subscription', async () => (await page.evaluate(() => window.log.state)).some((s) => s.state === 'open'), 15_000);

  await publish('B2', 1);
  await publish('B1', 2);
  await waitFor('the B1 event', async () => (await page.evaluate(() => window.log.data)).length > 0);
  const data = await page.evaluate(() => window.log.data.map((m) => m.data.n));
  assert.deepEqual(data, [2], 'only what the signed filters allow');
  assert.deepEqual(await page.evaluate(() => window.log.error), []);

  const asked = seen.find((r) => r.path === '/api/get_subscription');
  assert.ok(asked, 'the backend was asked through the proxy');
  assert.match(asked.headers.cookie ?? '', /sessionid=roger/, 'the session cookie passed');
  assert.equal(asked.headers['x-forwarded-host'], `127.0.0.1:${dev.pub}`);
  assert.equal(asked.headers['x-forwarded-for'], '127.0.0.1');
});
