import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Backoff, backoffDelay } from '../../.build/backoff.js';

test('full jitter: the delay lies in [0, min(max, base * 2^attempt))', () => {
  const opts = { base: 100, max: 5000 };
  for (let attempt = 0; attempt < 12; attempt++) {
    const cap = Math.min(5000, 100 * 2 ** attempt);
    assert.equal(backoffDelay(attempt, opts, () => 0), 0);
    assert.equal(backoffDelay(attempt, opts, () => 0.9999999), cap - 1);
    for (let i = 0; i < 200; i++) {
      const d = backoffDelay(attempt, opts);
      assert.ok(d >= 0 && d < cap, `attempt ${attempt}: ${d} out of [0, ${cap})`);
    }
  }
});

test('the ceiling grows exponentially, then stays at max', () => {
  const half = () => 0.5;
  assert.deepEqual([0, 1, 2, 3, 4, 5, 6].map((a) => backoffDelay(a, { base: 100, max: 2000 }, half)), [50, 100, 200, 400, 800, 1000, 1000]);
  assert.equal(backoffDelay(1000, { base: 100, max: 2000 }, half), 1000, 'no overflow on huge attempts');
});

test('defaults: base 500 ms, max 30 s', () => {
  assert.equal(backoffDelay(0, {}, () => 0.9999999), 499);
  assert.equal(backoffDelay(20, {}, () => 0.9999999), 29_999);
});

test('Backoff counts attempts and resets', () => {
  const b = new Backoff({ base: 10, max: 1000 }, () => 0.5);
  assert.deepEqual([b.next(), b.next(), b.next()], [5, 10, 20]);
  assert.equal(b.attempt, 3);
  b.reset();
  assert.equal(b.next(), 5);
});
