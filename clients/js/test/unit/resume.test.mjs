import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ResumeState, decodeCursor, encodeCursor } from '../../.build/resume.js';
import { ack, data } from './fakes.mjs';

test('drops every data message at or below the last offset of its channel', () => {
  const r = new ResumeState();
  assert.deepEqual([1, 2, 2, 3, 1, 5, 4, 6].map((o) => r.accept(data(o))), [true, true, false, true, false, true, false, true]);
  assert.equal(r.accept(data(6, { channel: 'other' })), true, 'channels are counted apart');
});

test('since is known once an ack names the epoch; it rises with data and acks', () => {
  const r = new ResumeState();
  r.accept(data(3, { snapshot: true }));
  assert.equal(r.since('bornes'), undefined, 'no epoch yet');
  r.acknowledge(ack('e1', 10));
  assert.deepEqual(r.since('bornes'), { epoch: 'e1', offset: 10 });
  assert.equal(r.accept(data(9)), false, 'covered by the ack');
  r.accept(data(12));
  assert.deepEqual(r.since('bornes'), { epoch: 'e1', offset: 12 });
  r.acknowledge(ack('e1', 11));
  assert.deepEqual(r.since('bornes'), { epoch: 'e1', offset: 12 }, 'never goes down in one epoch');
});

test('a new epoch replaces the mark (offsets start again)', () => {
  const r = new ResumeState();
  r.acknowledge(ack('e1', 40));
  r.acknowledge(ack('e2', 2));
  assert.deepEqual(r.since('bornes'), { epoch: 'e2', offset: 2 });
  assert.equal(r.accept(data(3)), true);
});

test('reset forgets the channel, except for shutdown', () => {
  const r = new ResumeState();
  r.acknowledge(ack('e1', 40));
  r.reset(undefined, 'shutdown');
  assert.deepEqual(r.since('bornes'), { epoch: 'e1', offset: 40 });
  r.reset('bornes', 'history_gap');
  assert.equal(r.since('bornes'), undefined);
  assert.equal(r.accept(data(1)), true, 'the new epoch numbers from 1 again');
  r.acknowledge(ack('e1', 40, 'a'));
  r.acknowledge(ack('e1', 40, 'b'));
  r.reset(undefined, 'broker_restored');
  assert.equal(r.since('a'), undefined);
  assert.equal(r.since('b'), undefined);
});

test('lower: a shared connection resumes from the earliest tab', () => {
  const r = new ResumeState();
  assert.equal(r.lower('bornes', { epoch: 'e1', offset: 30 }), true);
  assert.equal(r.lower('bornes', { epoch: 'e1', offset: 35 }), false);
  assert.equal(r.lower('bornes', { epoch: 'e1', offset: 20 }), true);
  assert.equal(r.lower('bornes', { epoch: 'zz', offset: 1 }), false, 'another epoch does not move it');
  assert.deepEqual(r.since('bornes'), { epoch: 'e1', offset: 20 });
});

test('cursors: the gateway format (base64url, no padding, of [[app, channel, epoch, offset]])', () => {
  const entries = [['bluelib', 'bornes', 'e5f1', 41], ['bluelib', 'été', 'e2', 7]];
  const gateway = Buffer.from(JSON.stringify(entries)).toString('base64url');
  assert.equal(encodeCursor(entries), gateway);
  assert.deepEqual(decodeCursor(gateway), entries);
  for (const bad of ['!!', '', Buffer.from('{}').toString('base64url'), Buffer.from('[["a","b","c","4"]]').toString('base64url')]) {
    assert.equal(decodeCursor(bad), undefined, bad);
  }
});

test('absorbCursor takes the positions of its app; cursor() encodes those with an epoch', () => {
  const r = new ResumeState();
  const c = encodeCursor([['bluelib', 'bornes', 'e1', 41], ['other', 'bornes', 'e9', 99]]);
  assert.deepEqual(r.absorbCursor('bluelib', c), { bornes: { epoch: 'e1', offset: 41 } });
  assert.equal(r.accept(data(41)), false);
  r.accept(data(1, { channel: 'noepoch' }));
  assert.deepEqual(decodeCursor(r.cursor('bluelib', ['bornes', 'noepoch'])), [['bluelib', 'bornes', 'e1', 41]]);
  assert.equal(r.cursor('bluelib', ['noepoch']), undefined);
  assert.equal(r.absorbCursor('bluelib', 'garbage!'), undefined);
});
