// Identity, calls both ways, lattices, presence and notifications over a fake WebSocket.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { CallError, Chouquette, notificationAckRequest, notificationsAckUrl } from '../../.build/client.js';
import { FakeSocket, ack, jwt, subscribe, tick } from './fakes.mjs';

globalThis.WebSocket = FakeSocket;

const connectToken = (sub = 'roger', exp = 2e9) => ({ app_id: 'bluelib', token: jwt({ app_id: 'bluelib', sub, exp, groups: ['vb'] }) });
const sent = (s) => s.sent.map((t) => JSON.parse(t));

async function open(options = {}) {
  FakeSocket.reset();
  const tokens = [];
  const c = new Chouquette({
    url: 'ws://gw/ws', backoff: { base: 1, max: 1 }, subscription: subscribe(),
    getConnectToken: () => {
      const t = connectToken();
      tokens.push(t);
      return t;
    },
    ...options,
  });
  const events = [];
  for (const kind of ['connected', 'error', 'presence', 'user_message', 'subscribed', 'unsubscribed', 'notification', 'notification_acked']) {
    c.on(kind, (v) => events.push([kind, v]));
  }
  await c.connect();
  const s = FakeSocket.last();
  s.accept();
  return { c, s, events, tokens };
}

/** Answers the socket's connect (ack) and subscribe (ack with a position). */
function answer(s) {
  const [connect] = sent(s);
  s.push({ class: 'ack', ref: connect.uuid }, ack('e1', 4));
}

test('connect goes before the subscribe on every (re)connection; its ack gives the identity', async () => {
  const { c, s, events } = await open();
  assert.deepEqual(sent(s).map((m) => m.class), ['connect', 'subscribe']);
  assert.equal(sent(s)[0].app_id, 'bluelib');
  answer(s);
  assert.deepEqual(events.filter(([k]) => k === 'connected').map(([, v]) => v), [{ app_id: 'bluelib', user: 'roger', groups: ['vb'], via: 'token' }]);
  assert.equal(c.state.state, 'open', 'the connect ack is not taken for the subscribe ack');
  s.drop(1006);
  await tick(10);
  const s2 = FakeSocket.last();
  s2.accept();
  assert.deepEqual(sent(s2).map((m) => m.class), ['connect', 'subscribe']);
  c.close();
});

test('a refused connect is an error about connect; the subscription is untouched', async () => {
  const { c, s, events } = await open();
  const [connect] = sent(s);
  s.push({ class: 'error', code: 'invalid_token', message: 'bad signature', ref: connect.uuid }, ack('e1', 4));
  assert.deepEqual(events.filter(([k]) => k === 'error').map(([, v]) => [v.code, v.about]), [['invalid_token', 'connect']]);
  assert.equal(c.state.state, 'open');
  c.close();
});

test('the identity expiring (token_expired without channel) fetches a new token and connects again on the same socket', async () => {
  const { c, s, tokens } = await open();
  answer(s);
  s.push({ class: 'error', code: 'token_expired', message: 'expired' });
  await tick(5);
  assert.equal(tokens.length, 2);
  assert.deepEqual(sent(s).map((m) => m.class), ['connect', 'subscribe', 'connect']);
  assert.equal(FakeSocket.all.length, 1);
  c.close();
});

test('a short connect token is refreshed before its exp', async () => {
  const exp = Date.now() / 1000 + 1.2;
  FakeSocket.reset();
  let n = 0;
  const c = new Chouquette({ url: 'ws://gw/ws', subscription: subscribe(), getConnectToken: () => ((n += 1), connectToken('roger', exp)) });
  await c.connect();
  FakeSocket.last().accept();
  await tick(1150);
  assert.ok(n >= 2, `fetched again before exp (${n})`);
  assert.equal(sent(FakeSocket.last()).filter((m) => m.class === 'connect').length, n);
  c.close();
});

test('connect auth: `connected` gives the identity without any token', async () => {
  FakeSocket.reset();
  const c = new Chouquette({ url: 'ws://gw/ws', subscription: subscribe() });
  const seen = [];
  c.on('connected', (v) => seen.push(v));
  await c.connect();
  const s = FakeSocket.last();
  s.accept();
  assert.deepEqual(sent(s).map((m) => m.class), ['subscribe']);
  s.push({ class: 'connected', app_id: 'bluelib', user: 'roger', groups: [] }, ack('e1', 1));
  assert.deepEqual(seen, [{ app_id: 'bluelib', user: 'roger', groups: [], via: 'connect_auth' }]);
  assert.equal(c.identity.user, 'roger');
  c.close();
});

test('call: result resolves, error rejects with its code, disconnect rejects pending calls, timeout', async () => {
  const { c, s } = await open();
  answer(s);
  const ok = c.call('chat.send', ['lobby'], { text: 'hi' });
  const bad = c.call('chat.send', []);
  const lost = c.call('slow.op');
  const calls = sent(s).filter((m) => m.class === 'call');
  assert.deepEqual(calls.map((m) => [m.method, m.args, m.kwargs]), [['chat.send', ['lobby'], { text: 'hi' }], ['chat.send', [], {}], ['slow.op', [], {}]]);
  s.push({ class: 'result', id: calls[0].id, result: { sent: true } });
  s.push({ class: 'error', id: calls[1].id, code: 'backend_timeout', message: 'no answer', ref: calls[1].uuid });
  assert.deepEqual(await ok, { sent: true });
  await assert.rejects(bad, (e) => e instanceof CallError && e.code === 'backend_timeout');
  assert.equal(c.state.state, 'open', 'a call error ends no subscription');
  s.drop(1006);
  await assert.rejects(lost, (e) => e.code === 'disconnected');
  await tick(10);
  const s2 = FakeSocket.last();
  s2.accept();
  answer(s2);
  await assert.rejects(c.call('x', [], {}, { timeout: 20 }), (e) => e.code === 'timeout');
  c.close();
  await assert.rejects(c.call('x'), (e) => e.code === 'not_connected');
});

test('onCall answers the gateway\'s call with result or error', async () => {
  const { c, s } = await open();
  answer(s);
  c.onCall('device.status', async (args, kwargs) => ({ battery: 87, args, kwargs }));
  c.onCall('device.reboot', () => {
    throw Object.assign(new Error('updating firmware'), { code: 'busy' });
  });
  c.onCall('device.crash', () => {
    throw new Error('oops');
  });
  s.push({ class: 'call', id: '17-a', method: 'device.status', args: [1], kwargs: { verbose: true } });
  s.push({ class: 'call', id: '17-b', method: 'device.reboot', args: [], kwargs: {} });
  s.push({ class: 'call', id: '17-c', method: 'device.crash' });
  s.push({ class: 'call', id: '17-d', method: 'nobody.home' });
  await tick(5);
  const answers = Object.fromEntries(sent(s).filter((m) => m.id?.startsWith?.('17-')).map((m) => [m.id, m]));
  assert.deepEqual(answers['17-a'].result, { battery: 87, args: [1], kwargs: { verbose: true } });
  assert.equal(answers['17-a'].class, 'result');
  assert.deepEqual([answers['17-b'].class, answers['17-b'].code, answers['17-b'].message], ['error', 'busy', 'updating firmware']);
  assert.deepEqual([answers['17-c'].code, answers['17-c'].message], ['client_error', 'oops']);
  assert.equal(answers['17-d'].code, 'unknown_method');
  c.close();
});

test('lattice: subscribed now and after each reconnection (after the subscribe), full then merged changes; refusal', async () => {
  const { c, s, events } = await open();
  answer(s);
  const view = c.lattice('unread');
  assert.equal(c.lattice('unread'), view);
  const changes = [];
  view.on('change', (ch) => changes.push(ch));
  const sub = sent(s).at(-1);
  assert.deepEqual([sub.class, sub.namespace], ['lattice_subscribe', 'unread']);
  s.push({ class: 'lattice', ref: sub.uuid, namespace: 'unread', full: true, shared: { total: { counter: 7 } }, user: { rooms: { set: ['r1'] } } });
  s.push({ class: 'lattice', namespace: 'unread', shared: {}, user: { rooms: { set: ['r2'] } } });
  assert.deepEqual(view.user, { rooms: { set: ['r1', 'r2'] } });
  s.drop(1006);
  await tick(10);
  const s2 = FakeSocket.last();
  s2.accept();
  assert.deepEqual(sent(s2).map((m) => m.class), ['connect', 'subscribe', 'lattice_subscribe']);
  const other = c.lattice('bad ns');
  const errors = [];
  other.on('error', (e) => errors.push(e.code));
  s2.push({ class: 'error', code: 'bad_message', message: 'namespace', ref: sent(s2).at(-1).uuid });
  assert.deepEqual(errors, ['bad_message']);
  assert.deepEqual(events.filter(([k]) => k === 'error').map(([, v]) => [v.code, v.about, v.namespace]), [['bad_message', 'lattice', 'bad ns']]);
  view.close();
  assert.deepEqual([sent(s2).at(-1).class, sent(s2).at(-1).namespace], ['lattice_unsubscribe', 'unread']);
  assert.equal(changes.length, 2);
  c.close();
});

test('presence keeps each channel\'s set; message, subscribed, unsubscribed, notifications are surfaced', async () => {
  const { c, s, events } = await open();
  answer(s);
  s.push({ class: 'presence', channel: 'chat', present: ['roger', 'vb'] });
  s.push({ class: 'presence', channel: 'chat', joined: ['ana', 'vb'], left: ['roger'] });
  assert.deepEqual(c.present('chat'), ['ana', 'vb']);
  const p = events.filter(([k]) => k === 'presence').map(([, v]) => v.present);
  assert.deepEqual(p, [['roger', 'vb'], ['ana', 'vb']]);
  s.push({ class: 'presence', channel: 'chat', present: ['zed'] });
  assert.deepEqual(c.present('chat'), ['zed']);
  s.push({ class: 'message', event_kind: 'chat.typing', data: { room: 'lobby' } });
  s.push({ class: 'subscribed', channel: 'alarms', epoch: 'e9', offset: 41 }, { class: 'unsubscribed', channel: 'chat' });
  s.push({ class: 'notification', id: 'n-1', kind: 'comment' }, { class: 'notification_acked', ids: ['n-1'] });
  assert.deepEqual(c.present('chat'), []);
  assert.deepEqual(events.filter(([k]) => k !== 'presence' && k !== 'connected').map(([k]) => k),
    ['user_message', 'subscribed', 'unsubscribed', 'notification', 'notification_acked']);
  await c.ackNotifications(['n-1']);
  assert.deepEqual(sent(s).at(-1).class, 'notification_ack');
  assert.deepEqual(sent(s).at(-1).ids, ['n-1']);
  c.close();
});

test('a notification delivered again (a reconnection before its acknowledgement) is emitted once', async () => {
  const { c, s, events } = await open();
  answer(s);
  const n1 = { class: 'notification', id: 'n-1', kind: 'comment' };
  const group = { class: 'notification', id: 'n-3', kind: 'comment', grouped: { count: 2, ids: ['n-3', 'n-4'], first: 'a', last: 'b' } };
  s.push(n1, group, n1, group);
  const got = () => events.filter(([k]) => k.startsWith('notification')).map(([k, v]) => `${k}:${v.id ?? v.ids}`);
  assert.deepEqual(got(), ['notification:n-1', 'notification:n-3']);
  s.push({ class: 'notification_acked', ids: ['n-1'] }, n1);
  assert.deepEqual(got(), ['notification:n-1', 'notification:n-3', 'notification_acked:n-1', 'notification:n-1'],
    'an acknowledged id is forgotten (the gateway never sends it again)');
  c.close();
});

test('ackNotifications over SSE/poll: POST /notifications/ack with the connect token', async () => {
  assert.equal(notificationsAckUrl({ url: 'wss://push.example/ws' }), 'https://push.example/notifications/ack');
  assert.equal(notificationsAckUrl({ url: 'ws://h/push/ws' }), 'http://h/push/notifications/ack');
  const [url, init] = notificationAckRequest('https://push.example/notifications/ack', 'TOKEN', ['n-1', 'n-2']);
  assert.equal(url, 'https://push.example/notifications/ack');
  assert.equal(init.method, 'POST');
  assert.equal(init.headers.authorization, 'Bearer TOKEN');
  assert.equal(init.headers['content-type'], 'application/json');
  assert.deepEqual(JSON.parse(init.body), { ids: ['n-1', 'n-2'] });
  // A client whose connection is not a WebSocket (here: none open) posts it.
  FakeSocket.reset();
  const t = connectToken();
  const c = new Chouquette({ url: 'ws://gw/ws', subscription: subscribe(), getConnectToken: () => t });
  await c.connect();
  const requests = [];
  const fetchFn = async (u, i) => (requests.push([u, i]), new Response('{}', { status: 200 }));
  await c.ackNotifications(['n-3'], fetchFn);
  assert.equal(requests[0][0], 'http://gw/notifications/ack');
  assert.equal(requests[0][1].headers.authorization, `Bearer ${t.token}`);
  const refuse = async () => new Response('{"code":"not_allowed","message":"no"}', { status: 403 });
  await assert.rejects(c.ackNotifications(['n-3'], refuse), (e) => e.code === 'not_allowed');
  c.close();
});

test('sendMessage: the ack resolves with id and recipients, an error rejects with its code, a lost connection rejects', async () => {
  const { c, s, events } = await open();
  answer(s);
  const ok = c.sendMessage({ to: ['ana'], groups: ['team-7'], kind: 'chat', title: 'Hi', body: 'lunch?', data: { room: 'r1' } });
  const refused = c.sendMessage({ to: ['zoe'], kind: 'chat' });
  const lost = c.sendMessage({ to: ['ana'], kind: 'chat' });
  const messages = sent(s).filter((m) => m.class === 'message');
  assert.deepEqual(messages[0], { to: ['ana'], groups: ['team-7'], kind: 'chat', title: 'Hi', body: 'lunch?', data: { room: 'r1' }, class: 'message', uuid: messages[0].uuid });
  assert.equal(new Set(messages.map((m) => m.uuid)).size, 3, 'each its own uuid');
  s.push({ class: 'ack', ref: messages[0].uuid, id: 'n-42', recipients: 3 });
  s.push({ class: 'error', ref: messages[1].uuid, code: 'not_allowed', message: 'zoe is not in the claim' });
  assert.deepEqual(await ok, { id: 'n-42', recipients: 3 });
  await assert.rejects(refused, (e) => e instanceof CallError && e.code === 'not_allowed' && /zoe/.test(e.message));
  assert.equal(c.state.state, 'open', 'a refused message ends no subscription');
  assert.deepEqual(events.filter(([k]) => k === 'error'), [], 'answers are the promise\'s, not error events');
  assert.deepEqual(c.since('bornes'), { epoch: 'e1', offset: 4 }, 'the message ack is not taken for a subscription\'s');
  s.drop(1006);
  await assert.rejects(lost, (e) => e.code === 'disconnected');
  await tick(10);
  const s2 = FakeSocket.last();
  s2.accept();
  answer(s2);
  await assert.rejects(c.sendMessage({ to: ['ana'], kind: 'chat' }, { timeout: 20 }), (e) => e.code === 'timeout');
  c.close();
  await assert.rejects(c.sendMessage({ to: ['ana'], kind: 'chat' }), (e) => e.code === 'not_connected');
});
