// Notifications to a user in Chromium, on two gateways sharing a real Redis:
// acknowledged from a page's UI (the user's tab on the other node sees it
// gone), pending ones after the page reconnects (closed and reopened, or its
// gateway killed and restarted) shown once each, a burst of a grouped kind
// shown as one notification with its count, and a hidden page disconnecting
// after `idle.hiddenAfter` and resuming with no gap when shown again; a
// user-to-user message sent with `sendMessage`, answered or refused.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { API_KEY, APP, Gateway, RedisServer, launchBrowser, openPage, received, startClient, waitFor } from './harness.mjs';

const T = { timeout: 120_000 };
/** The grouped kind, and its window: long enough for a burst posted from here, short enough for a test. */
const GROUPED = 'comment';
const WINDOW_SECS = 3;
const appConfig = ['[apps.notifications]', '[[apps.notifications.group]]', `kind = "${GROUPED}"`, `window = "${WINDOW_SECS}s"`];

const redis = new RedisServer();
let a;
let b;
let chrome;

before(async () => {
  await redis.start();
  a = new Gateway({ redis: redis.url, node: 'node-a', appConfig });
  b = new Gateway({ redis: redis.url, node: 'node-b', appConfig });
  await a.start();
  await b.start();
  chrome = await launchBrowser();
});

after(async () => {
  await chrome?.close();
  await a?.dispose();
  await b?.dispose();
  await redis.dispose();
});

let users = 0;
/** A user of this test alone (the tests share Redis, where pending lists outlive pages). */
const newUser = (what) => `${what}-${process.pid}-${++users}`;

/** `POST /api/v1/notify` on `gateway`; returns the notification's id. */
async function notify(gateway, users, { kind = 'alarm', title = 'Borne B1 offline', ...rest } = {}) {
  const res = await fetch(`${gateway.internalOrigin}/api/v1/notify`, {
    method: 'POST',
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify({ app_id: APP, users, kind, title, body: 'b', link: '/bornes/B1', ...rest }),
  });
  const body = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  return body.id;
}

/** A tab of `user` connected to `gateway` with its identity (a page of a context of its own, closed with the test). */
async function tab(t, gateway, user, options = {}, claims = {}) {
  const context = await chrome.browser.newContext();
  t.after(() => context.close().catch(() => {}));
  const page = await openPage(context, gateway, { bornes: ['B1'] });
  page.connect.sub = user;
  page.connect.claims = claims;
  await startClient(page, { identity: true, backoff: { base: 200, max: 1000 }, ...options });
  await waitFor('the identity', () => page.evaluate(() => window.log.connected.length > 0 && window.client.state.state === 'open'));
  page.context = context;
  return page;
}

/** The ids the client emitted (`notification` events), in order. */
const emitted = (page) => page.evaluate(() => window.log.notification.map((n) => n.id));
/** The ids the page shows (its notification list). */
const shown = (page) => page.evaluate(() => [...document.querySelectorAll('#notifications li')].map((li) => li.dataset.id));
/** The ids of the `notification` frames that came on the wire. */
const onWire = (page) => page.evaluate(() => window.wire.notification);

/**
 * Proof that nothing else is pending for `page`'s user: a marker notified
 * now arrives after whatever was pending at connect; returns what the page
 * emitted before it.
 */
async function beforeMarker(page, gateway, user) {
  const marker = await notify(gateway, [user], { kind: 'marker', title: 'marker' });
  await waitFor('the marker', async () => (await emitted(page)).includes(marker));
  const ids = await emitted(page);
  return ids.slice(0, ids.indexOf(marker));
}

test('a page acknowledges a notification from its UI; the same user\'s tab on another node sees it gone', T, async (t) => {
  const user = newUser('roger');
  const here = await tab(t, a, user);
  const there = await tab(t, b, user);
  const other = await tab(t, b, newUser('vb'));
  const id = await notify(a, [user], { title: 'Borne B1: ground fault' });
  for (const page of [here, there]) {
    await page.locator(`#notifications li[data-id="${id}"]`).waitFor({ timeout: 10_000 });
    assert.equal(await page.locator(`#notifications li[data-id="${id}"] .title`).textContent(), 'Borne B1: ground fault');
  }
  const [n] = await there.evaluate(() => window.log.notification);
  assert.deepEqual([n.kind, n.body, n.link, typeof n.created], ['alarm', 'b', '/bornes/B1', 'string']);

  await here.click(`#notifications li[data-id="${id}"] button.ack`);
  for (const page of [here, there]) {
    await waitFor('the notification gone from the page', async () => (await shown(page)).length === 0);
    assert.deepEqual(await page.evaluate(() => window.log.notification_acked.flatMap((m) => m.ids)), [id]);
  }
  assert.deepEqual(await here.evaluate(() => window.log.error), [], 'the acknowledgement was not refused');
  // Never again: a new tab of the user finds nothing pending; another user never saw it.
  const later = await tab(t, a, user);
  assert.deepEqual(await beforeMarker(later, b, user), []);
  assert.deepEqual(await emitted(other), []);
});

test('pending notifications reach a page that reconnects (reopened, or its gateway killed and restarted), each shown once', T, async (t) => {
  const user = newUser('roger');
  const first = await tab(t, a, user);
  const sent = [await notify(a, [user], { title: 'n1' }), await notify(b, [user], { title: 'n2' })];
  await waitFor('both, live', async () => (await emitted(first)).length === 2);
  // The tab closes without acknowledging; two more come meanwhile.
  await first.context.close();
  sent.push(await notify(b, [user], { title: 'n3' }), await notify(a, [user], { title: 'n4' }));

  const page = await tab(t, b, user);
  await waitFor('the four pending ones', async () => (await emitted(page)).length === 4);
  assert.deepEqual(await emitted(page), sent, 'every pending one, oldest first');

  // The network drops: node B dies (SIGKILL) while one more is notified on node A.
  b.process.kill('SIGKILL');
  await b.exited;
  await waitFor('the page to see its connection gone', () => page.evaluate(() => window.client.state.state !== 'open'));
  sent.push(await notify(a, [user], { title: 'n5' }));
  await b.start();
  await waitFor('the fifth after the reconnection', async () => (await emitted(page)).length === 5, 30_000);
  // The gateway sent the four unacknowledged ones again (at least once);
  // the client emitted each once, and the page shows each once.
  await waitFor('the resent ones on the wire', async () => (await onWire(page)).length >= 9);
  assert.deepEqual(await onWire(page), [...sent.slice(0, 4), ...sent], 'all five again after the reconnection');
  assert.deepEqual(await emitted(page), sent, 'none twice');
  assert.deepEqual(await shown(page), sent);

  // Acknowledged through the JS API: gone for good.
  await page.evaluate((ids) => window.client.ackNotifications(ids), sent);
  await waitFor('the page emptied', async () => (await shown(page)).length === 0);
  const later = await tab(t, a, user);
  assert.deepEqual(await beforeMarker(later, a, user), []);
});

test('a burst of a grouped kind is one grouped notification on the page; acknowledging it acknowledges them all', T, async (t) => {
  const user = newUser('roger');
  const page = await tab(t, a, user);
  const burst = await Promise.all(Array.from({ length: 20 }, (_, i) => notify(i % 2 ? a : b, [user], { kind: GROUPED, title: `comment ${i}` })));
  const alarm = await notify(a, [user], { title: 'not held back' });
  // The first of the burst at once, alone; the alarm at once; the other 19 in one group at the window's end.
  await waitFor('the alarm', async () => (await emitted(page)).includes(alarm));
  await waitFor('the group', () => page.evaluate(() => window.log.notification.some((n) => n.grouped)), (WINDOW_SECS + 10) * 1000);
  const notes = await page.evaluate(() => window.log.notification.map(({ id, kind, grouped, title }) => ({ id, kind, grouped, title })));
  const comments = notes.filter((n) => n.kind === GROUPED);
  assert.equal(comments.length, 2, JSON.stringify(notes));
  const [alone, group] = comments;
  assert.equal(alone.grouped, undefined);
  assert.equal(group.grouped.count, 19);
  assert.equal(group.id, group.grouped.ids[0]);
  assert.deepEqual([alone.id, ...group.grouped.ids].sort(), [...burst].sort(), 'nothing lost, counts exact');
  assert.equal(await page.locator(`#notifications li[data-id="${group.id}"] .count`).textContent(), '19');
  assert.equal(await page.locator('#notifications li').count(), 3, 'one item for the whole group');

  await page.click(`#notifications li[data-id="${group.id}"] button.ack`);
  await waitFor('the group gone', async () => !(await shown(page)).includes(group.id));
  assert.deepEqual((await shown(page)).sort(), [alone.id, alarm].sort());
  // What stays pending: the first of the burst and the alarm, none of the group.
  const later = await tab(t, b, user);
  assert.deepEqual((await beforeMarker(later, a, user)).sort(), [alone.id, alarm].sort());
});

test('idle: a page hidden for idle.hiddenAfter disconnects; shown again it resumes with no gap and gets what is pending', T, async (t) => {
  const user = newUser('roger');
  const page = await tab(t, a, user, { idle: { hiddenAfter: 500 } });
  const firstEvent = await a.publish('B1', { n: 0 });
  await waitFor('the first event', async () => (await received(page)).includes(firstEvent));
  // Hidden briefly: nothing happens.
  await page.evaluate(() => window.setVisibility('hidden'));
  await page.evaluate(() => window.setVisibility('visible'));
  await new Promise((r) => setTimeout(r, 800));
  assert.equal(await page.evaluate(() => window.client.state.state), 'open', 'shown again before hiddenAfter: still connected');

  await page.evaluate(() => window.setVisibility('hidden'));
  await waitFor('the hidden close', () => page.evaluate(() => window.log.state.at(-1)?.state === 'closed' && window.log.state.at(-1)?.reason === 'hidden'));
  await waitFor('node A to see it gone', async () => (await a.metric('chouquette_connections')) === 0);
  const missed = [];
  for (let i = 1; i <= 3; i++) missed.push(await b.publish('B1', { n: i }));
  const pending = await notify(b, [user], { title: 'while hidden' });
  assert.deepEqual(await received(page), [firstEvent], 'nothing arrives while hidden');
  assert.deepEqual(await emitted(page), []);

  await page.evaluate(() => window.setVisibility('visible'));
  await waitFor('the events missed while hidden', async () => (await received(page)).length >= 4);
  await waitFor('the pending notification', async () => (await emitted(page)).includes(pending));
  assert.deepEqual(await received(page), [firstEvent, ...missed], 'resumed where it stood: no gap, no duplicate');
  assert.deepEqual(await emitted(page), [pending]);
  assert.equal(await page.evaluate(() => window.client.state.state), 'open');
});

test('sendMessage: a user\'s message reaches another user on the other node, a group\'s offline member at connect; a refusal rejects with its code', T, async (t) => {
  const [roger, ana, carl] = [newUser('roger'), newUser('ana'), newUser('carl')];
  const claim = { message: { users: [ana], groups: { team: [roger, ana, carl] } } };
  const sender = await tab(t, a, roger, {}, claim);
  const reader = await tab(t, b, ana);
  const send = (m) => sender.evaluate((m) => window.client.sendMessage(m).then((ok) => ({ ok }), (e) => ({ name: e.name, code: e.code })), m);

  const direct = await send({ to: [ana], kind: 'chat', title: 'Hi', body: 'lunch?', data: { room: 'r1' } });
  assert.equal(direct.ok?.recipients, 1, JSON.stringify(direct));
  await waitFor('the message, on node B', async () => (await emitted(reader)).includes(direct.ok.id));
  const [n] = await reader.evaluate(() => window.log.notification);
  assert.deepEqual([n.from, n.kind, n.title, n.body, n.data], [roger, 'chat', 'Hi', 'lunch?', { room: 'r1' }]);

  const refused = await send({ to: [newUser('zoe')], kind: 'chat' });
  assert.deepEqual(refused, { name: 'CallError', code: 'not_allowed' });
  assert.deepEqual(await send({ kind: 'chat' }), { name: 'CallError', code: 'bad_message' }, 'no recipient');

  const team = await send({ groups: ['team'], kind: 'chat', title: 'standup' });
  assert.equal(team.ok?.recipients, 2, 'ana and carl, not the sender');
  const late = await tab(t, a, carl);
  assert.deepEqual(await beforeMarker(late, b, carl), [team.ok.id], 'pending for the member who was offline');
  assert.deepEqual(await sender.evaluate(() => window.log.notification), [], 'the sender is no recipient');
});
