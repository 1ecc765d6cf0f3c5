// The connection: transport fallback, reconnection with since, and the hub sharing it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Link, TransportChooser } from '../../.build/connection.js';
import { Hub } from '../../.build/hub.js';
import { decodeCursor } from '../../.build/resume.js';
import { ack, cursorOf, data, fakeTransport, subscribe, tick } from './fakes.mjs';

test('chooser: a transport that never opened is left after N failures, in order, then the first again', () => {
  const c = new TransportChooser(['websocket', 'sse', 'poll'], 2);
  assert.deepEqual([c.current, c.failed(), c.failed(), c.failed(), c.failed(), c.failed(), c.failed()],
    ['websocket', 'websocket', 'sse', 'sse', 'poll', 'poll', 'websocket']);
});

test('chooser: a transport that opened once is kept through failures (the gateway is away, not blocked)', () => {
  const c = new TransportChooser(['websocket', 'sse'], 1);
  c.opened();
  for (let i = 0; i < 5; i++) assert.equal(c.failed(), 'websocket');
  assert.throws(() => new TransportChooser([], 1));
});

function link(options = {}) {
  const ws = fakeTransport('websocket');
  const sse = fakeTransport('sse');
  const poll = fakeTransport('poll');
  const messages = [];
  const states = [];
  const l = new Link('bluelib', {
    factories: { websocket: ws, sse, poll }, order: options.order ?? ['websocket', 'sse', 'poll'],
    fallbackAfter: options.fallbackAfter ?? 2, backoff: { base: 1, max: 1 }, refreshable: options.refreshable,
  }, (m) => messages.push(m), (s) => states.push(s));
  return { l, ws: ws.log, sse: sse.log, poll: poll.log, messages, states };
}

test('link: WebSocket refused twice, SSE next; resumes with since and the same positions as a cursor', async () => {
  const { l, ws, sse, states } = link();
  l.want({ bornes: { filters: 'T' } });
  ws[0].fail({ code: 1006 });
  await tick(5);
  ws[1].fail({ code: 1006 });
  await tick(5);
  assert.equal(sse.length, 1);
  assert.deepEqual(sse[0].request, { app: 'bluelib', channels: { bornes: { filters: 'T' } }, cursor: undefined });
  sse[0].open();
  sse[0].push(ack('e1', 10));
  sse[0].sink.cursor(cursorOf(['bluelib', 'bornes', 'e1', 10]));
  sse[0].push(data(11), data(12));
  sse[0].fail({ reason: 'stream ended' });
  await tick(5);
  assert.equal(sse.length, 2, 'SSE opened once: kept');
  assert.deepEqual(sse[1].request.channels.bornes.since, { epoch: 'e1', offset: 12 });
  assert.deepEqual(decodeCursor(sse[1].request.cursor), [['bluelib', 'bornes', 'e1', 12]]);
  assert.deepEqual(states.map((s) => `${s.state}:${s.transport}`).slice(0, 6),
    ['connecting:websocket', 'reconnecting:websocket', 'connecting:websocket', 'reconnecting:sse', 'connecting:sse', 'open:sse']);
  l.close();
});

test('link: forced order is respected', async () => {
  const { l, ws, poll } = link({ order: ['poll'] });
  l.want({ bornes: { filters: 'T' } });
  assert.equal(ws.length, 0);
  assert.equal(poll.length, 1);
  l.close();
});

test('link: a new token goes on the open WebSocket with since; on SSE it reconnects with the cursor', async () => {
  const { l, ws } = link();
  l.want({ bornes: { filters: 'T1' } });
  ws[0].open();
  ws[0].push(ack('e1', 5), data(6));
  l.want({ bornes: { filters: 'T2', since: { epoch: 'e1', offset: 6 } } });
  assert.deepEqual(ws[0].resubscribes[0].channels, { bornes: { filters: 'T2', since: { epoch: 'e1', offset: 6 } } });
  l.close();

  const s = link({ order: ['sse'] });
  s.l.want({ bornes: { filters: 'T1' } });
  s.sse[0].open();
  s.sse[0].sink.cursor(Buffer.from(JSON.stringify([['bluelib', 'bornes', 'e1', 9]])).toString('base64url'));
  assert.deepEqual(s.messages.at(-1), { class: '_position', channels: { bornes: { epoch: 'e1', offset: 9 } } });
  s.l.want({ bornes: { filters: 'T2' } });
  assert.equal(s.sse[0].closedByClient, true);
  assert.deepEqual(s.sse[1].request.channels.bornes, { filters: 'T2', since: { epoch: 'e1', offset: 9 } });
  s.l.close();
});

test('link: an expired channel is left out of polls until a new token comes', async () => {
  const { l, poll } = link({ order: ['poll'] });
  l.want({ bornes: { filters: 'T1' }, other: { filters: 'O' } });
  poll[0].open();
  poll[0].push(ack('e1', 3), { class: 'error', code: 'token_expired', channel: 'bornes' });
  await tick(1);
  assert.deepEqual(Object.keys(poll[1].request.channels), ['other']);
  l.want({ bornes: { filters: 'T2', since: { epoch: 'e1', offset: 3 } } });
  assert.deepEqual(poll[2].request.channels.bornes, { filters: 'T2', since: { epoch: 'e1', offset: 3 } });
  l.close();
});

// Race: \`open\` came when the socket opened, before the gateway had taken the
// subscribe message sent then; events published in between were not for it.
test('link: a WebSocket is open once its subscribe is acked; SSE and poll once their first cursor is in', () => {
  const { l, ws, states } = link({ order: ['websocket', 'sse'], fallbackAfter: 1 });
  l.want({ bornes: { filters: 'T' } });
  ws[0].open();
  assert.deepEqual(states.at(-1), { state: 'connecting', transport: 'websocket' });
  ws[0].push(data(3, { snapshot: true }));
  assert.equal(states.at(-1).state, 'connecting', 'snapshots come before the ack');
  ws[0].push(ack('e1', 4));
  assert.deepEqual(states.at(-1), { state: 'open', transport: 'websocket' });
  ws[0].push(data(5), ack('e1', 5));
  assert.equal(states.filter((s) => s.state === 'open').length, 1);
  l.close();

  const sse = link({ order: ['sse'] });
  sse.l.want({ bornes: { filters: 'T' } });
  sse.sse[0].open();
  assert.deepEqual(sse.states.at(-1), { state: 'connecting', transport: 'sse' }, 'the stream is open, its answer not in');
  sse.sse[0].push(ack('e1', 4));
  sse.sse[0].sink.cursor(cursorOf(['bluelib', 'bornes', 'e1', 4]));
  assert.deepEqual(sse.states.at(-1), { state: 'open', transport: 'sse' });
  sse.l.close();
});

// Issue 10: a token signed with the wrong secret was answered \`error\`
// \`invalid_token\` (no ack), and the client said \`open\` for good.
test('link: a subscribe whose every channel is refused is not reported open (websocket): error, then refused', () => {
  const { l, ws, states, messages } = link({ order: ['websocket'] });
  l.want({ bornes: { filters: 'BAD' } });
  ws[0].open();
  ws[0].push({ class: 'error', code: 'invalid_token', channel: 'bornes', message: 'bad signature' });
  assert.equal(messages.at(-1).code, 'invalid_token', 'the error is passed on');
  assert.deepEqual(states.at(-1), { state: 'refused', transport: 'websocket', reason: 'invalid_token' });
  assert.ok(!states.some((s) => s.state === 'open'));
  assert.equal(ws[0].closedByClient, true, 'nothing left to listen to: the socket is closed');
  // New tokens: a new connection, and open once acked.
  l.want({ bornes: { filters: 'GOOD' } });
  assert.equal(ws.length, 2);
  ws[1].open();
  ws[1].push(ack('e1', 0));
  assert.deepEqual(states.at(-1), { state: 'open', transport: 'websocket' });
  l.close();

  // Some channels refused, one taken: open (the errors name the others).
  const partial = link({ order: ['websocket'] });
  partial.l.want({ bornes: { filters: 'BAD' }, other: { filters: 'OK' } });
  partial.ws[0].open();
  partial.ws[0].push({ class: 'error', code: 'invalid_token', channel: 'bornes' });
  assert.equal(partial.states.at(-1).state, 'connecting');
  partial.ws[0].push(ack('e1', 0, 'other'));
  assert.deepEqual(partial.states.at(-1), { state: 'open', transport: 'websocket' });
  partial.l.close();

  // An error naming no channel (unknown app) refuses the whole message.
  const app = link({ order: ['websocket'] });
  app.l.want({ bornes: { filters: 'T' } });
  app.ws[0].open();
  app.ws[0].push({ class: 'error', code: 'unknown_app', ref: 'x' });
  assert.deepEqual(app.states.at(-1), { state: 'refused', transport: 'websocket', reason: 'unknown_app' });
  app.l.close();
});

test('link: a refused SSE or poll subscription is not reported open (its first cursor names no channel)', async () => {
  const sse = link({ order: ['sse'] });
  sse.l.want({ bornes: { filters: 'GARBAGE' } });
  sse.sse[0].open();
  // A token whose claims cannot be read is refused without a channel name.
  sse.sse[0].push({ class: 'error', code: 'invalid_token', message: 'token has no readable claims' });
  sse.sse[0].sink.cursor(cursorOf());
  assert.deepEqual(sse.states.at(-1), { state: 'refused', transport: 'sse', reason: 'invalid_token' });
  assert.ok(!sse.states.some((s) => s.state === 'open'));
  assert.equal(sse.sse[0].closedByClient, true);
  sse.l.close();

  const poll = link({ order: ['poll'] });
  poll.l.want({ bornes: { filters: 'BAD' } });
  poll.poll[0].open();
  poll.poll[0].push({ class: 'error', code: 'invalid_token', channel: 'bornes' });
  poll.poll[0].sink.cursor(cursorOf());
  assert.deepEqual(poll.states.at(-1), { state: 'refused', transport: 'poll', reason: 'invalid_token' });
  assert.ok(!poll.states.some((s) => s.state === 'open'));
  assert.equal(poll.poll.length, 1, 'no more polls with a refused token');
  poll.l.close();

  // One token unreadable, the other taken: open, and later polls leave the refused one out.
  const partial = link({ order: ['poll'] });
  partial.l.want({ bornes: { filters: 'GARBAGE' }, other: { filters: 'OK' } });
  partial.poll[0].open();
  partial.poll[0].push({ class: 'error', code: 'invalid_token' }, ack('e1', 2, 'other'));
  partial.poll[0].sink.cursor(cursorOf(['bluelib', 'other', 'e1', 2]));
  assert.deepEqual(partial.states.at(-1), { state: 'open', transport: 'poll' });
  await tick(1);
  assert.deepEqual(Object.keys(partial.poll[1].request.channels), ['other']);
  partial.l.close();
});

// Issue 10: long-polling said \`closed\` (\`no active subscription\`) at every
// token refresh before reopening.
for (const transport of ['websocket', 'sse', 'poll']) {
  test(`link: a token refresh is seamless, no closed state (${transport})`, async () => {
    const t = link({ order: [transport], refreshable: true });
    const log = t[transport === 'websocket' ? 'ws' : transport];
    t.l.want({ bornes: { filters: 'T1' } });
    log[0].open();
    log[0].push(ack('e1', 3));
    if (transport !== 'websocket') log[0].sink.cursor(cursorOf(['bluelib', 'bornes', 'e1', 3]));
    assert.deepEqual(t.states.at(-1), { state: 'open', transport });
    const before = t.states.length;
    log[0].push(data(4), { class: 'error', code: 'token_expired', channel: 'bornes' });
    await tick(5);
    t.l.want({ bornes: { filters: 'T2', since: { epoch: 'e1', offset: 4 } } });
    const last = log.at(-1);
    if (transport === 'websocket') {
      assert.equal(log.length, 1, 'the same socket');
      assert.equal(last.resubscribes[0].channels.bornes.filters, 'T2');
    } else {
      assert.equal(log[0].closedByClient, true);
      assert.equal(log.length, 2, 'one new request, with the cursor');
      assert.deepEqual(last.request.channels.bornes, { filters: 'T2', since: { epoch: 'e1', offset: 4 } });
      last.open();
      last.push(data(5));
      last.sink.cursor(cursorOf(['bluelib', 'bornes', 'e1', 5]));
    }
    assert.deepEqual(t.states.slice(before), [], 'no state change at all: still open');
    t.l.close();
  });
}

test('link: token_expired with no refresh to come ends the subscription: refused', () => {
  const { l, poll, states } = link({ order: ['poll'], refreshable: false });
  l.want({ bornes: { filters: 'T1' } });
  poll[0].open();
  poll[0].push(ack('e1', 3));
  poll[0].sink.cursor(cursorOf(['bluelib', 'bornes', 'e1', 3]));
  poll[0].push({ class: 'error', code: 'token_expired', channel: 'bornes' });
  assert.deepEqual(states.at(-1), { state: 'refused', transport: 'poll', reason: 'token_expired' });
  assert.ok(!states.some((s) => s.state === 'closed'));
  l.close();
});

// Issue 10: with every transport blocked (CORS, HTTP 403) the client retried
// silently on "TypeError: Failed to fetch".
test('link: every transport failing before opening gives an error unreachable with each cause; retries go on', async () => {
  const { l, ws, sse, poll, messages, states } = link({ fallbackAfter: 1 });
  l.want({ bornes: { filters: 'T' } });
  ws[0].fail({ code: 1006, reason: '' });
  await tick(5);
  sse[0].fail({ reason: 'TypeError: Failed to fetch (a cross-origin request ...)' });
  await tick(5);
  assert.equal(messages.filter((m) => m.code === 'unreachable').length, 0, 'not before every transport failed');
  poll[0].fail({ code: 403, reason: 'HTTP 403' });
  const errors = messages.filter((m) => m.code === 'unreachable');
  assert.equal(errors.length, 1);
  assert.equal(errors[0].class, 'error');
  assert.deepEqual(errors[0].failures, [
    { transport: 'websocket', code: 1006, reason: undefined },
    { transport: 'sse', code: undefined, reason: 'TypeError: Failed to fetch (a cross-origin request ...)' },
    { transport: 'poll', code: 403, reason: 'HTTP 403' },
  ]);
  assert.match(errors[0].message, /cannot be reached from this page/);
  assert.match(errors[0].message, /websocket: closed \(code 1006\).*sse: TypeError: Failed to fetch.*poll: HTTP 403/);
  assert.equal(states.at(-1).state, 'reconnecting', 'and it goes on');
  await tick(5);
  assert.equal(ws.length, 2, 'retrying from the first transport');
  l.close();

  // A gateway that was reached once and is now away is not "unreachable".
  const away = link({ order: ['websocket'], fallbackAfter: 1 });
  away.l.want({ bornes: { filters: 'T' } });
  away.ws[0].open();
  away.ws[0].push(ack('e1', 0));
  away.ws[0].fail({ code: 1006 });
  for (let i = 1; i < 4; i++) {
    await tick(5);
    away.ws[i].fail({ code: 1006 });
  }
  assert.equal(away.messages.filter((m) => m.code === 'unreachable').length, 0);
  away.l.close();
});

test('link: pause closes, resume reconnects with since', async () => {
  const { l, ws, states } = link();
  l.want({ bornes: { filters: 'T' } });
  ws[0].open();
  ws[0].push(ack('e1', 4));
  l.pause('hidden');
  assert.equal(ws[0].closedByClient, true);
  assert.deepEqual(states.at(-1), { state: 'closed', reason: 'hidden' });
  l.resume();
  assert.deepEqual(ws[1].request.channels.bornes.since, { epoch: 'e1', offset: 4 });
  l.close();
});

function hub(options = {}) {
  const ws = fakeTransport('websocket');
  const out = [];
  const states = [];
  const h = new Hub({
    factories: { websocket: ws }, order: ['websocket'], fallbackAfter: 1, backoff: { base: 1, max: 1 },
    pollUrl: 'http://gw/poll', ...options,
  }, {
    message: (tabs, m) => out.push([tabs.join(','), m.class === 'data' ? m.offset : m.class]),
    state: (tabs, s) => states.push([tabs.join(','), s.state]),
  });
  return { h, ws: ws.log, out, states };
}

test('hub: tabs with the same subscription share one connection; other filters get their own', async () => {
  const fetchFn = async () => new Response(JSON.stringify({ messages: [ack('e1', 0)], cursor: 'C' }));
  const { h, ws, out } = hub({ fetch: fetchFn });
  h.put('A', subscribe({ '*': { borne: ['B1'] } }, 100));
  h.put('B', subscribe({ '*': { borne: ['B1'] } }, 200));
  h.put('C', subscribe({ '*': { borne: ['B2'] } }));
  await tick(5);
  assert.equal(ws.length, 2);
  assert.equal(ws[0].request.channels.bornes.filters, subscribe({ '*': { borne: ['B1'] } }, 100).channels.bornes.filters,
    'a joining tab does not replace the token in use');
  ws[0].open();
  ws[0].push(data(7), { class: 'error', code: 'token_expired', channel: 'bornes' });
  assert.deepEqual(out, [['B', 'ack'], ['A,B', 7], ['B', 'error']], 'token_expired goes to one tab only, the latest');
  h.remove('A');
  h.remove('B');
  assert.equal(ws[0].closedByClient, true, 'the last tab gone closes the connection');
  h.close();
});

test('hub: a tab joining a running connection gets its snapshots from one poll, then what was held back', async () => {
  let release;
  const fetchFn = (url, init) => new Promise((r) => {
    assert.equal(String(url), 'http://gw/poll');
    assert.equal(init.method, 'POST');
    assert.equal(JSON.parse(init.body).timeout, 0);
    release = () => r(new Response(JSON.stringify({ messages: [data(3, { snapshot: true }), ack('e1', 8)], cursor: 'C' })));
  });
  const { h, ws, out } = hub({ fetch: fetchFn });
  h.put('A', subscribe());
  ws[0].open();
  ws[0].push(ack('e1', 5));
  h.put('B', subscribe());
  ws[0].push(data(9));
  assert.deepEqual(out, [['A', 'ack'], ['A', 9]]);
  release();
  await tick(5);
  assert.deepEqual(out.slice(2), [['B', 3], ['B', 'ack'], ['B', 9]]);
  assert.equal(ws.length, 1);
  h.close();
});

// Race: the joining tab was told `open` at once, before its snapshot poll had
// answered; events published meanwhile were then covered by the poll's ack
// (dropped as already seen) although the tab never got them.
test('hub: a tab joining without since is told open only once its snapshots are in', async () => {
  let release;
  const fetchFn = () => new Promise((r) => {
    release = () => r(new Response(JSON.stringify({ messages: [ack('e1', 8)], cursor: 'C' })));
  });
  const { h, ws, out, states } = hub({ fetch: fetchFn });
  h.put('A', subscribe());
  ws[0].open();
  ws[0].push(ack('e1', 5));
  assert.deepEqual(states.at(-1), ['A', 'open']);
  const before = states.length;
  h.put('B', subscribe());
  assert.deepEqual(states.slice(before), [], 'nothing for B while its snapshots are on their way');
  release();
  await tick(5);
  assert.deepEqual(out.filter(([tab]) => tab === 'B'), [['B', 'ack']]);
  assert.deepEqual(states.slice(before), [['B', 'open']], 'open once the ack is in');
  // A tab joining with since needs no snapshot: it is told the state at once.
  h.put('C', { ...subscribe(), channels: { bornes: { ...subscribe().channels.bornes, since: { epoch: 'e1', offset: 5 } } } });
  assert.deepEqual(states.at(-1), ['C', 'open']);
  h.close();
});

test('hub: every tab hidden for hiddenTimeout pauses; one shown resumes', async () => {
  const { h, ws } = hub({ hiddenTimeout: 20 });
  h.put('A', subscribe(), true);
  h.put('B', subscribe({ x: {} }), false);
  ws[0].open();
  h.visibility('A', false);
  await tick(40);
  assert.equal(ws[0].closedByClient, true);
  assert.equal(ws[1].closedByClient, true);
  h.visibility('B', true);
  assert.equal(ws.length, 4, 'both reconnect');
  h.close();
});
