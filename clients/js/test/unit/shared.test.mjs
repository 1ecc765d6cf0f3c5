// Tab sharing without Web Locks (Node has BroadcastChannel but no navigator.locks): the heartbeat election.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SharedPort } from '../../.build/shared.js';
import { ResumeState } from '../../.build/resume.js';
import { ack, data, fakeTransport, subscribe, tick } from './fakes.mjs';

function tab(id, name, ws) {
  const got = [];
  const seen = new ResumeState();
  const request = () => {
    const m = subscribe();
    const since = seen.since('bornes');
    if (since) m.channels.bornes.since = since;
    return m;
  };
  const owner = {
    tab: id,
    deliver: (m) => {
      if (m.class === 'data' && !seen.accept(m)) return;
      if (m.class === 'ack' || m.class === '_position') seen.acknowledge(m);
      got.push(m.class === 'data' ? m.offset : m.class);
    },
    state: () => {},
    resubscribe: () => port.put(request(), true),
  };
  const port = new SharedPort(name, {
    factories: { websocket: ws }, order: ['websocket'], fallbackAfter: 1, backoff: { base: 1, max: 1 }, pollUrl: 'http://gw/poll',
    fetch: async () => new Response(JSON.stringify({ messages: [ack('e1', 2)], cursor: 'C' })),
  }, owner, null);
  return { port, got };
}

test('one leader holds the connection and relays; when it leaves, another resumes', { timeout: 15_000 }, async (t) => {
  const ws = fakeTransport('websocket');
  const a = tab('a', 'unit', ws);
  t.after(() => a.port.close());
  for (let i = 0; i < 100 && !a.port.isLeader; i++) await tick(50);
  assert.equal(a.port.isLeader, true, 'alone, a leads within ~2 s');
  a.port.put(subscribe(), true);
  const b = tab('b', 'unit', ws);
  t.after(() => b.port.close());
  b.port.put(subscribe(), true);
  await tick(100);
  assert.equal(a.port.isLeader, true);
  assert.equal(b.port.isLeader, false);
  // (A tab resending its subscription while the connection is still being
  // opened may restart that attempt: one connection stays.)
  const live = () => ws.log.filter((t) => !t.closedByClient);
  assert.equal(live().length, 1, 'one connection for both tabs');
  const first = live()[0];
  first.open();
  first.push(ack('e1', 2), data(3));
  await tick(50);
  assert.deepEqual(a.got, ['ack', 3]);
  // b joined a running connection: its snapshots and ack came from one poll.
  assert.deepEqual(b.got, ['ack', 'ack', 3]);

  a.port.close();
  await tick(2500);
  assert.equal(b.port.isLeader, true, 'b took over');
  assert.equal(first.closedByClient, true);
  assert.equal(live().length, 1);
  // b resubscribed with what it had seen.
  assert.deepEqual(live()[0].request.channels.bornes.since, { epoch: 'e1', offset: 3 });
  b.port.close();
});
