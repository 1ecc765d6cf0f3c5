// Lattice merging (docs/lattices.md): commutative, associative, idempotent; the view applies `full` and changes.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { LatticeView, canonicalJson, latticeValue, mergeMap, mergeValue } from '../../.build/lattice.js';

const values = [
  { counter: 0 }, { counter: 3 }, { counter: 7 },
  { set: [] }, { set: ['r1'] }, { set: ['r2', 'r1'] }, { set: ['r3'] },
  { register: { value: 'away', ts: 1 } }, { register: { value: 'here', ts: 1 } }, { register: { value: 'z', ts: 0.5 } },
  { register: { value: { b: 1, a: 2 }, ts: 2 } }, { register: { value: { a: 2, b: 1 }, ts: 2 } }, { register: { value: [1], ts: 2 } },
];
// Sets compare as sets (the view keeps them sorted).
const same = (a, b) => canonicalJson(latticeValue(a)) === canonicalJson(latticeValue(b));

test('merge is commutative, idempotent and associative over every pair and triple', () => {
  for (const a of values) {
    assert.ok(same(mergeValue(a, a), a), `idempotent ${canonicalJson(a)}`);
    for (const b of values) {
      assert.ok(same(mergeValue(a, b), mergeValue(b, a)), `commutative ${canonicalJson(a)} ${canonicalJson(b)}`);
      for (const c of values) {
        assert.ok(same(mergeValue(mergeValue(a, b), c), mergeValue(a, mergeValue(b, c))), 'associative');
      }
    }
  }
});

test('the rules: counter max, set union, register greatest ts then greater JSON text, type rank', () => {
  assert.deepEqual(mergeValue({ counter: 3 }, { counter: 7 }), { counter: 7 });
  assert.deepEqual(mergeValue({ set: ['r2', 'r1'] }, { set: ['r3', 'r1'] }), { set: ['r1', 'r2', 'r3'] });
  assert.deepEqual(mergeValue({ register: { value: 'z', ts: 0.5 } }, { register: { value: 'a', ts: 1 } }), { register: { value: 'a', ts: 1 } });
  // Equal ts: "here" > "away" as JSON text.
  assert.deepEqual(mergeValue({ register: { value: 'away', ts: 1 } }, { register: { value: 'here', ts: 1 } }), { register: { value: 'here', ts: 1 } });
  // Keys sorted before comparing: {"a":2,"b":1} (`{` > `[`).
  assert.equal(canonicalJson({ b: 1, a: 2 }), '{"a":2,"b":1}');
  assert.deepEqual(mergeValue({ register: { value: [1], ts: 2 } }, { register: { value: { b: 1, a: 2 }, ts: 2 } }).register.value, { b: 1, a: 2 });
  assert.deepEqual(mergeValue({ counter: 99 }, { set: [] }), { set: [] });
  assert.deepEqual(mergeValue({ register: { value: 0, ts: 0 } }, { set: ['x'] }), { register: { value: 0, ts: 0 } });
});

test('mergeMap reports only the keys that changed, and skips unknown forms', () => {
  const view = { total: { counter: 5 } };
  assert.deepEqual(mergeMap(view, { total: { counter: 3 }, rooms: { set: ['r1'] }, bad: { nope: 1 } }), { rooms: { set: ['r1'] } });
  assert.deepEqual(view, { total: { counter: 5 }, rooms: { set: ['r1'] } });
  assert.deepEqual(mergeMap(view, { total: { counter: 5 } }), {});
});

test('a view: full replaces, changes merge in any order and twice, a stale change before full does no harm', () => {
  const changes = [];
  const v = new LatticeView('unread');
  v.on('change', (c) => changes.push(c));
  v.apply({ class: 'lattice', namespace: 'unread', shared: { total: { counter: 9 } }, user: {} });
  v.apply({ class: 'lattice', namespace: 'unread', full: true, shared: { total: { counter: 7 } }, user: { rooms: { set: ['r1'] } } });
  assert.equal(v.ready, true);
  assert.deepEqual(v.shared, { total: { counter: 7 } });
  const d1 = { class: 'lattice', namespace: 'unread', shared: {}, user: { rooms: { set: ['r1', 'r2'] } } };
  const d2 = { class: 'lattice', namespace: 'unread', shared: { total: { counter: 8 } }, user: {} };
  v.apply(d2);
  v.apply(d1);
  v.apply(d1);
  v.apply({ class: 'lattice', namespace: 'unread', shared: {}, user: { rooms: { set: ['r1'] } } });
  assert.deepEqual(v.user, { rooms: { set: ['r1', 'r2'] } });
  assert.deepEqual(v.shared, { total: { counter: 8 } });
  // The two changes that changed something, after the first (pre-full) one and the full.
  assert.deepEqual(changes.map((c) => c.full), [false, true, false, false]);
  assert.deepEqual(changes.at(-1).user, { rooms: { set: ['r1', 'r2'] } });
});
