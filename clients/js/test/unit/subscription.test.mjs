import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildSubscribe, identity, tokenClaims, validSubscribe } from '../../.build/subscription.js';
import { subscribe } from './fakes.mjs';

test('buildSubscribe: the backend message, with since where known and a fresh uuid', () => {
  const channels = {
    bornes: { filters: 'T1', extra: 1 },
    alarms: { filters: 'T2', since: { epoch: 'old', offset: 1 } },
  };
  const since = (name) => (name === 'bornes' ? { epoch: 'e1', offset: 41 } : undefined);
  const a = buildSubscribe('bluelib', channels, since);
  assert.deepEqual(a.channels, {
    bornes: { filters: 'T1', extra: 1, since: { epoch: 'e1', offset: 41 } },
    alarms: { filters: 'T2' },
  });
  assert.equal(a.class, 'subscribe');
  assert.equal(a.app_id, 'bluelib');
  assert.match(a.uuid, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.notEqual(buildSubscribe('bluelib', channels).uuid, a.uuid);
  assert.deepEqual(channels.bornes, { filters: 'T1', extra: 1 }, 'the input is left alone');
});

test('identity ignores expiry (a refreshed token shares its connection) but not filters', () => {
  assert.equal(identity(subscribe({ a: {} }, 100)), identity(subscribe({ a: {} }, 200)));
  assert.notEqual(identity(subscribe({ '*': { borne: ['B1'] } })), identity(subscribe({ '*': { borne: ['B2'] } })));
  assert.notEqual(identity(subscribe({ a: {} }, 1, 'x')), identity(subscribe({ a: {} }, 1, 'y')));
  assert.equal(tokenClaims('not a jwt'), undefined);
});

test('validSubscribe checks what getSubscription returned', () => {
  assert.equal(validSubscribe(subscribe()), true);
  assert.equal(validSubscribe({ class: 'subscribe', app_id: 'a', channels: { x: {} } }), false);
  assert.equal(validSubscribe(null), false);
  assert.equal(validSubscribe({ error: 'nope' }), false);
});
