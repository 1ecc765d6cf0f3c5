// The client end to end over a fake WebSocket: dedup across reconnects, since, token refresh.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Chouquette, transportUrls } from '../../.build/client.js';
import { FakeSocket, ack, data, subscribe, tick } from './fakes.mjs';

globalThis.WebSocket = FakeSocket;

function client(options = {}) {
  FakeSocket.reset();
  const c = new Chouquette({ url: 'ws://gw/ws', backoff: { base: 1, max: 1 }, ...options });
  const seen = [];
  for (const kind of ['data', 'snapshot', 'reset', 'error']) {
    c.on(kind, (v) => seen.push(`${kind}:${v.offset ?? v.reason ?? v.code}`));
  }
  return { c, seen };
}

test('transport URLs follow the WebSocket one', () => {
  assert.deepEqual(transportUrls({ url: 'wss://push.example/ws' }),
    { websocket: 'wss://push.example/ws', sse: 'https://push.example/sse', poll: 'https://push.example/poll' });
  assert.deepEqual(transportUrls({ url: 'ws://h:8080/push/ws', pollUrl: 'http://x/p' }),
    { websocket: 'ws://h:8080/push/ws', sse: 'http://h:8080/push/sse', poll: 'http://x/p' });
});

test('no duplicate reaches the app across a reconnection; since carries the last offset', async () => {
  const { c, seen } = client({ subscription: subscribe() });
  await c.connect();
  const s1 = FakeSocket.last();
  s1.accept();
  assert.equal(s1.subscribes()[0].channels.bornes.since, undefined);
  s1.push(data(2, { snapshot: true }), ack('e1', 4), data(5), data(6));
  s1.drop(1013, 'slow_consumer');
  await tick(10);
  const s2 = FakeSocket.last();
  assert.notEqual(s2, s1);
  s2.accept();
  assert.deepEqual(s2.subscribes()[0].channels.bornes.since, { epoch: 'e1', offset: 6 });
  s2.push(data(5), data(6), data(7), ack('e1', 7), data(8), [data(8), data(9)]);
  assert.deepEqual(seen, ['snapshot:2', 'data:5', 'data:6', 'data:7', 'data:8', 'data:9']);
  c.close();
});

test('reset: passed on (but not shutdown); after history_gap the new epoch counts from 1', async () => {
  const { c, seen } = client({ subscription: subscribe() });
  const states = [];
  c.on('state', (s) => states.push(s));
  await c.connect();
  const s1 = FakeSocket.last();
  s1.accept();
  s1.push(ack('e1', 40), data(41), { class: 'reset', reason: 'shutdown' });
  s1.drop(1001, 'shutdown');
  await tick(10);
  assert.equal(states.at(-2).reason, 'shutdown');
  const s2 = FakeSocket.last();
  s2.accept();
  assert.deepEqual(s2.subscribes()[0].channels.bornes.since, { epoch: 'e1', offset: 41 });
  s2.push({ class: 'reset', reason: 'history_gap', channel: 'bornes' }, ack('e2', 0), data(1), data(2));
  assert.deepEqual(seen, ['data:41', 'reset:history_gap', 'data:1', 'data:2']);
  c.close();
});

test('token_expired: getSubscription gives a fresh token, sent with since on the same socket', async () => {
  let calls = 0;
  const { c, seen } = client({ getSubscription: async () => subscribe({ '*': {} }, 1000 + ++calls) });
  await c.connect();
  const s = FakeSocket.last();
  s.accept();
  s.push(ack('e1', 3), data(4), { class: 'error', code: 'token_expired', channel: 'bornes', message: 'expired' });
  await tick(10);
  assert.equal(calls, 2);
  const [first, second] = s.subscribes();
  assert.notEqual(second.channels.bornes.filters, first.channels.bornes.filters);
  assert.deepEqual(second.channels.bornes.since, { epoch: 'e1', offset: 4 });
  assert.equal(FakeSocket.all.length, 1, 'no reconnection');
  s.push(data(4), data(5));
  assert.deepEqual(seen, ['data:4', 'data:5'], 'no error surfaced, no duplicate');
  c.close();
});

test('a static subscription cannot be refreshed: token_expired is an error event', async () => {
  const { c, seen } = client({ subscription: subscribe() });
  await c.connect();
  FakeSocket.last().accept();
  FakeSocket.last().push({ class: 'error', code: 'token_expired', channel: 'bornes', message: 'expired' });
  assert.deepEqual(seen, ['error:token_expired']);
  c.close();
});

test('getSubscription failing is retried with backoff and reported', async () => {
  let calls = 0;
  const { c, seen } = client({
    getSubscription: async () => {
      if (++calls < 3) throw new Error('backend down');
      return subscribe();
    },
  });
  await c.connect();
  assert.equal(calls, 3);
  assert.deepEqual(seen, ['error:subscription_failed', 'error:subscription_failed']);
  assert.equal(FakeSocket.all.length, 1);
  c.close();
  assert.throws(() => new Chouquette({ url: 'ws://x/ws' }), /getSubscription/);
});

test('on() returns an unsubscribe function', async () => {
  const { c } = client({ subscription: subscribe() });
  const got = [];
  const off = c.on('data', (m) => got.push(m.offset));
  await c.connect();
  const s = FakeSocket.last();
  s.accept();
  s.push(data(1));
  off();
  s.push(data(2));
  assert.deepEqual(got, [1]);
  c.close();
});

// Issue 10: a token signed with the wrong secret got `error` `invalid_token`,
// then the client said `open` for good.
test('a refused subscription is not reported open: error, state refused, the backend asked again, then open', async () => {
  let calls = 0;
  const { c, seen } = client({
    backoff: { base: 20, max: 20 },
    getSubscription: async () => subscribe({ '*': {} }, 1000 + ++calls),
  });
  const states = [];
  c.on('state', (s) => states.push(s));
  await c.connect();
  const s1 = FakeSocket.last();
  s1.accept();
  s1.push({ class: 'error', code: 'invalid_token', channel: 'bornes', message: 'no secret gives this signature' });
  assert.deepEqual(seen, ['error:invalid_token']);
  const refused = states.at(-1);
  assert.equal(refused.state, 'refused');
  assert.equal(refused.reason, 'invalid_token');
  assert.equal(refused.attempt, 1);
  assert.ok(refused.delay >= 0 && refused.delay < 20);
  assert.equal(c.state, refused);
  assert.ok(!states.some((s) => s.state === 'open'), 'never open');
  assert.equal(s1.readyState, 3, 'the socket is let go');
  await tick(40);
  assert.equal(calls, 2, 'getSubscription asked again');
  const s2 = FakeSocket.last();
  assert.notEqual(s2, s1);
  s2.accept();
  assert.notEqual(s2.subscribes()[0].channels.bornes.filters, s1.subscribes()[0].channels.bornes.filters);
  s2.push(ack('e1', 0), data(1));
  assert.deepEqual(states.at(-1), { state: 'open', transport: 'websocket' });
  assert.deepEqual(seen, ['error:invalid_token', 'data:1']);
  c.close();
});

test('a fixed subscription refused is refused for good; a passing refusal (rate_limited) is tried again', async () => {
  const { c } = client({ subscription: subscribe() });
  await c.connect();
  FakeSocket.last().accept();
  FakeSocket.last().push({ class: 'error', code: 'invalid_token', channel: 'bornes' });
  assert.deepEqual(c.state, { state: 'refused', transport: 'websocket', reason: 'invalid_token' }, 'no delay: final');
  await tick(20);
  assert.equal(FakeSocket.all.length, 1, 'no new attempt');
  c.close();

  const passing = client({ subscription: subscribe() });
  await passing.c.connect();
  FakeSocket.last().accept();
  FakeSocket.last().push({ class: 'error', code: 'rate_limited', channel: 'bornes' });
  assert.equal(passing.c.state.state, 'refused');
  assert.equal(typeof passing.c.state.delay, 'number');
  await tick(20);
  assert.equal(FakeSocket.all.length, 2, 'tried again');
  FakeSocket.last().accept();
  FakeSocket.last().push(ack('e1', 0));
  assert.equal(passing.c.state.state, 'open');
  passing.c.close();
});

test('an unreachable gateway is an error event (code unreachable, with each failure), while retries go on', async () => {
  const { c, seen } = client({ subscription: subscribe(), transports: ['websocket'], fallbackAfter: 2 });
  let error;
  c.on('error', (e) => (error = e));
  await c.connect();
  FakeSocket.last().refuse();
  await tick(10);
  assert.deepEqual(seen, []);
  FakeSocket.last().refuse();
  assert.deepEqual(seen, ['error:unreachable']);
  assert.deepEqual(error.failures, [{ transport: 'websocket', code: 1006, reason: undefined }]);
  assert.match(error.message, /cannot be reached from this page/);
  await tick(10);
  assert.equal(FakeSocket.all.length, 3, 'still retrying');
  c.close();
});
