// Notifications delivered again (at least once) reach the app once.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { MAX_SEEN_NOTIFICATIONS, SeenNotifications } from '../../.build/notifications.js';

test('an id is new once; an acknowledged id is forgotten', () => {
  const seen = new SeenNotifications();
  assert.equal(seen.first('n-1'), true);
  assert.equal(seen.first('n-1'), false);
  assert.equal(seen.first('n-2'), true);
  seen.forget(['n-1', 'n-unknown']);
  assert.equal(seen.size, 1);
  assert.equal(seen.first('n-1'), true, 'forgotten once acknowledged');
});

test('bounded: past the bound the oldest id is forgotten first', () => {
  const seen = new SeenNotifications(3);
  for (const id of ['a', 'b', 'c', 'd']) assert.equal(seen.first(id), true);
  assert.equal(seen.size, 3);
  assert.equal(seen.first('d'), false);
  assert.equal(seen.first('b'), false);
  assert.equal(seen.first('a'), true, 'the oldest was forgotten');
  assert.equal(MAX_SEEN_NOTIFICATIONS, 1000);
});
