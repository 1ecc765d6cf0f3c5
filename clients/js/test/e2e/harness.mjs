// Helpers of the browser tests: a real gateway process, tokens, publishing, Chromium.
import { spawn } from 'node:child_process';
import { createHmac } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
export const JS_ROOT = resolve(here, '..', '..');
export const REPO = resolve(JS_ROOT, '..', '..');
export const APP = 'bluelib';
export const CHANNEL = 'bornes';
export const SECRET = 's3cret-current';
export const API_KEY = 'pub-key';
export const ADMIN_KEY = 'admin-key';
export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function waitFor(what, check, timeoutMs = 10_000, everyMs = 50) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

export function freePort() {
  return new Promise((ok, fail) => {
    const s = createServer();
    s.unref();
    s.on('error', fail);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => ok(port));
    });
  });
}

const b64url = (x) => Buffer.from(x).toString('base64url');

/** An HS256 JWT. */
export function sign(claims, secret = SECRET) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const mac = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${mac}`;
}

/**
 * The subscribe message a backend would give a page watching `bornes` (by
 * their uid keyword); signed with `secret` (another than the gateway's makes
 * tokens it refuses, `invalid_token`).
 */
export function subscription(bornes, ttlSecs = 600, secret = SECRET) {
  const token = sign({
    app_id: APP,
    channel: CHANNEL,
    filters: { '*': { borne: bornes } },
    exp: Math.floor(Date.now() / 1000) + ttlSecs,
  }, secret);
  return { class: 'subscribe', app_id: APP, channels: { [CHANNEL]: { filters: token } } };
}

/**
 * A gateway process on fixed ports (so that it can be restarted on the same
 * ones); with `redis` (a URL), one node of several sharing that Redis.
 */
export class Gateway {
  /** `appConfig`: TOML lines appended to the app's section (`[[apps.rpc]]` routes, more channels). */
  constructor({ redis, node, appConfig = [] } = {}) {
    this.appConfig = appConfig;
    this.broker = redis
      ? ['[node]', `id = "${node ?? 'e2e'}"`, '[broker]', 'kind = "redis"', `url = "${redis}"`,
        'connect_timeout = "1s"', 'command_timeout = "1s"', 'reconnect_max = "500ms"']
      : [];
    this.dir = mkdtempSync(join(tmpdir(), 'chouquette-e2e-'));
    this.pages = join(this.dir, 'pages');
    mkdirSync(this.pages);
    copyFileSync(join(JS_ROOT, 'dist', 'chouquette.js'), join(this.pages, 'chouquette.js'));
    copyFileSync(join(here, 'pages', 'index.html'), join(this.pages, 'index.html'));
    // Cargo's own CARGO_TARGET_DIR is honoured, as `cargo build` honours it.
    this.binary = process.env.CHOUQUETTE_BIN ?? join(process.env.CARGO_TARGET_DIR ?? join(REPO, 'target'), 'debug', 'chouquette');
    if (!existsSync(this.binary)) throw new Error(`no gateway binary at ${this.binary}: run cargo build -p chouquette`);
    this.logs = [];
  }

  async start() {
    if (!this.public) {
      this.public = await freePort();
      this.internal = await freePort();
      this.config = join(this.dir, 'chouquette.toml');
      writeFileSync(this.config, [
        ...this.broker,
        '[listen]',
        `public = "127.0.0.1:${this.public}"`,
        `internal = "127.0.0.1:${this.internal}"`,
        // Page origins allowed from a browser (set before `start`).
        ...(this.allowedOrigins ? [`allowed_origins = ${JSON.stringify(this.allowedOrigins)}`] : []),
        // A stream whose browser went away is noticed at the next write:
        // short heartbeats and poll waits let the tests see connections
        // close within seconds (production defaults: 15 s and 25 s).
        '[transports]',
        'sse_heartbeat = "1s"',
        'poll_wait = "3s"',
        // Tokens end at their `exp` itself, so that the refresh tests see
        // a few-second token expire within their run (default: 5 s later).
        '[tokens]',
        'leeway = "0s"',
        '[admin]',
        `key = "${ADMIN_KEY}"`,
        '[static]',
        `dir = ${JSON.stringify(this.pages)}`,
        '[[apps]]',
        `id = "${APP}"`,
        `secrets = ["${SECRET}"]`,
        `api_key = "${API_KEY}"`,
        `[apps.channels.${CHANNEL}]`,
        'history = 1000',
        'keep_state = true',
        ...this.appConfig,
        '',
      ].join('\n'));
    }
    this.process = spawn(this.binary, ['serve', '--config', this.config], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'info' } });
    const keep = (chunk) => {
      this.logs.push(chunk.toString());
      if (this.logs.length > 2000) this.logs.shift();
    };
    this.process.stdout.on('data', keep);
    this.process.stderr.on('data', keep);
    this.exited = new Promise((r) => this.process.once('exit', (code, signal) => r({ code, signal })));
    await waitFor('the gateway to be ready', async () => {
      if (this.process.exitCode !== null) throw new Error(`gateway exited: ${this.logs.join('')}`);
      try {
        return (await fetch(`http://127.0.0.1:${this.internal}/healthz`)).ok;
      } catch {
        return false;
      }
    }, 20_000);
  }

  get origin() {
    return `http://127.0.0.1:${this.public}`;
  }

  /** The internal listener (publish API, admin API and console, metrics). */
  get internalOrigin() {
    return `http://127.0.0.1:${this.internal}`;
  }

  /** SIGTERM, and the exit status. */
  async stop() {
    if (!this.process || this.process.exitCode !== null || this.process.signalCode !== null) return this.exited;
    this.process.kill('SIGTERM');
    const timer = setTimeout(() => this.process.kill('SIGKILL'), 10_000);
    const status = await this.exited;
    clearTimeout(timer);
    return status;
  }

  async dispose() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Publishes one event to `borne`; returns its offset. */
  async publish(borne, data = {}, { key } = {}) {
    const res = await fetch(`http://127.0.0.1:${this.internal}/api/v1/publish`, {
      method: 'POST',
      headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({
        app_id: APP, channel: CHANNEL, event_kind: 'status', keywords: [`borne:${borne}`],
        ...(key ? { key } : {}), data: { uid: borne, ...data },
      }),
    });
    if (!res.ok) throw new Error(`publish: HTTP ${res.status} ${await res.text()}`);
    return (await res.json()).offset;
  }

  async metric(name) {
    const text = await (await fetch(`http://127.0.0.1:${this.internal}/metrics`)).text();
    const line = text.split('\n').find((l) => l.startsWith(`${name} `));
    return line === undefined ? undefined : Number(line.split(' ')[1]);
  }
}

/**
 * The test page on an origin of its own (another port than the gateway's),
 * as an app's page would be: its requests to the gateway are cross-origin.
 * Anything under `/forbidden/` is answered 403, as a proxy refusing a path.
 */
export class PageServer {
  constructor(gateway) {
    this.files = {
      '/index.html': ['text/html', readFileSync(join(gateway.pages, 'index.html'))],
      '/chouquette.js': ['text/javascript', readFileSync(join(gateway.pages, 'chouquette.js'))],
    };
    this.requests = [];
  }

  async start() {
    this.server = createHttpServer((req, res) => {
      const path = new URL(req.url, 'http://x').pathname;
      this.requests.push(path);
      const file = this.files[path];
      if (path.startsWith('/forbidden/')) res.writeHead(403, { 'content-type': 'text/plain' }).end('forbidden');
      else if (file) res.writeHead(200, { 'content-type': file[0], 'cache-control': 'no-store' }).end(file[1]);
      else res.writeHead(404).end();
    });
    await new Promise((ok) => this.server.listen(0, '127.0.0.1', ok));
    this.origin = `http://127.0.0.1:${this.server.address().port}`;
  }

  async dispose() {
    this.server?.closeAllConnections();
    await new Promise((ok) => (this.server ? this.server.close(ok) : ok()));
  }
}

/** A `redis-server` of the tests' own on a free port, nothing on disk; kill and restart it at will. */
export class RedisServer {
  async start() {
    if (!this.port) {
      this.port = await freePort();
      this.dir = mkdtempSync(join(tmpdir(), 'chouquette-e2e-redis-'));
    }
    this.process = spawn('redis-server', ['--port', String(this.port), '--bind', '127.0.0.1',
      '--save', '', '--appendonly', 'no', '--dir', this.dir], { stdio: 'ignore' });
    this.exited = new Promise((r) => this.process.once('exit', r));
    this.process.once('error', (e) => { throw new Error(`redis-server (Debian package redis-server): ${e.message}`); });
    await waitFor('redis-server to answer', () => new Promise((ok) => {
      const socket = createConnection(this.port, '127.0.0.1');
      socket.once('connect', () => { socket.end(); ok(true); });
      socket.once('error', () => ok(false));
    }), 10_000);
  }

  get url() {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** SIGKILL: a crash, as clients see it. */
  async kill() {
    if (this.process && this.process.exitCode === null && this.process.signalCode === null) {
      this.process.kill('SIGKILL');
      await this.exited;
    }
  }

  async dispose() {
    await this.kill();
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * Headless Chromium with a fresh profile. playwright-core refuses
 * `--user-data-dir` in `launch()`: it always gives the browser a new temporary
 * profile of its own (and removes it on close). The temp folder below is
 * where it goes (TMPDIR), so nothing is left behind.
 */
export async function launchBrowser() {
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: run scripts/install-browser.sh`);
  const profile = mkdtempSync(join(tmpdir(), 'chouquette-chromium-'));
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
    ],
    env: { ...process.env, TMPDIR: profile },
    timeout: 30_000,
  });
  return {
    browser,
    async close() {
      await browser.close().catch(() => {});
      rmSync(profile, { recursive: true, force: true });
    },
  };
}

/**
 * A page of `context` running the client from the gateway's origin (or from
 * `origin`, e.g. a `PageServer`'s). The page's `getSubscription` asks this
 * process, which signs with the given bornes, ttl and secret (changeable
 * through `page.sub`).
 */
export async function openPage(context, gateway, { bornes, ttlSecs = 600, secret = SECRET, origin = gateway.origin } = {}) {
  const page = await context.newPage();
  page.sub = { bornes, ttlSecs, secret, calls: 0 };
  await page.exposeFunction('nodeGetSubscription', () => {
    page.sub.calls += 1;
    return subscription(page.sub.bornes, page.sub.ttlSecs, page.sub.secret);
  });
  // `claims`: more claims of the connect token (e.g. `message`).
  page.connect = { sub: 'roger', ttlSecs: 600, calls: 0, claims: {} };
  await page.exposeFunction('nodeGetConnectToken', () => {
    page.connect.calls += 1;
    const exp = Math.floor(Date.now() / 1000) + page.connect.ttlSecs;
    return { app_id: APP, token: sign({ ...page.connect.claims, app_id: APP, sub: page.connect.sub, exp }) };
  });
  page.on('pageerror', (e) => console.error('page error:', e));
  await page.goto(`${origin}/index.html`);
  await page.waitForFunction(() => window.ready === true);
  return page;
}

/** Starts a client in the page; `options` go to `new Chouquette` (getSubscription is added). */
export async function startClient(page, options = {}) {
  await page.evaluate((o) => window.startClient(o), options);
}

export const received = (page) => page.evaluate(() => window.log.data.map((m) => m.offset));
export const pageLog = (page) => page.evaluate(() => window.log);
