import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SseParser, sseTransport } from '../../.build/transports/sse.js';
import { pollTransport } from '../../.build/transports/poll.js';
import { tick } from './fakes.mjs';

test('SseParser: batches, the cursor on the last event, comments and retry ignored', () => {
  const p = new SseParser();
  const text = 'retry: 2000\n\n: heartbeat\n\ndata: {"a":1}\n\nid: CUR\ndata: {"b":2}\n\n';
  assert.deepEqual(p.feed(text), [{ data: '{"a":1}', id: undefined }, { data: '{"b":2}', id: 'CUR' }]);
});

test('SseParser: any split of the stream gives the same events', () => {
  const text = 'data: {"a":1}\r\n\r\nid: C1\r\ndata: x\r\ndata: y\r\n\r\nid: C2\n\n';
  const whole = new SseParser().feed(text);
  assert.deepEqual(whole, [{ data: '{"a":1}', id: undefined }, { data: 'x\ny', id: 'C1' }, { data: undefined, id: 'C2' }]);
  for (let cut = 1; cut < text.length; cut++) {
    const p = new SseParser();
    assert.deepEqual([...p.feed(text.slice(0, cut)), ...p.feed(text.slice(cut))], whole, `cut at ${cut}`);
  }
});

/** A fetch answering with `chunks` as a stream (then held open until aborted). */
function streamingFetch(chunks, { status = 200, type = 'text/event-stream' } = {}) {
  const calls = [];
  const fn = async (url, init) => {
    calls.push({ url: String(url), method: init.method, type: init.headers['content-type'], body: JSON.parse(init.body) });
    const body = new ReadableStream({
      start(c) {
        for (const chunk of chunks) c.enqueue(new TextEncoder().encode(chunk));
        init.signal.addEventListener('abort', () => c.error(new Error('aborted')));
      },
    });
    return new Response(body, { status, headers: { 'content-type': type } });
  };
  fn.calls = calls;
  return fn;
}

function recorder() {
  const events = [];
  return {
    events,
    opened: () => events.push('opened'),
    message: (m) => events.push(`message:${m.offset ?? m.class}`),
    cursor: (c) => events.push(`cursor:${c}`),
    closed: (i) => events.push(`closed:${i.code ?? i.reason}`),
  };
}

test('sseTransport: tokens and cursor in a POST body, not the URL; each cursor after the messages it covers', async () => {
  const fetchFn = streamingFetch(['retry: 2000\n\n', 'data: {"class":"data","offset":1}\n\nid: C1\ndata: {"class":"da', 'ta","offset":2}\n\n']);
  const sink = recorder();
  const t = sseTransport('http://gw/sse', 45_000, fetchFn)(
    { app: 'a', channels: { x: { filters: 'T1' }, y: { filters: 'T2' } }, cursor: 'CUR0' }, sink);
  await tick(20);
  assert.deepEqual(fetchFn.calls[0], {
    url: 'http://gw/sse', method: 'POST', type: 'application/json', body: { sub: ['T1', 'T2'], cursor: 'CUR0' },
  });
  assert.deepEqual(sink.events, ['opened', 'message:1', 'message:2', 'cursor:C1']);
  t.close();
  await tick(5);
  assert.equal(sink.events.length, 4, 'no closed callback after close()');
});

test('sseTransport: an answer that is not an event stream is a failure before opening', async () => {
  const sink = recorder();
  sseTransport('http://gw/sse', 45_000, streamingFetch([], { status: 503, type: 'application/json' }))(
    { app: 'a', channels: { x: { filters: 'T' } } }, sink);
  await tick(10);
  assert.deepEqual(sink.events, ['closed:503']);
});

test('sseTransport: a silent stream is given up after the idle timeout', async () => {
  const sink = recorder();
  sseTransport('http://gw/sse', 30, streamingFetch([': hi\n\n']))({ app: 'a', channels: { x: { filters: 'T' } } }, sink);
  await tick(100);
  assert.deepEqual(sink.events, ['opened', 'closed:idle stream']);
});

test('pollTransport: each request sends the cursor of the previous answer', async () => {
  const answers = [
    { messages: [{ class: 'data', offset: 1 }, { class: 'ack', channels: {} }], cursor: 'C1' },
    { messages: [{ class: 'data', offset: 2 }], cursor: 'C2' },
  ];
  const urls = [];
  let t;
  const fetchFn = async (url, init) => {
    urls.push([String(url), init.method, init.body]);
    const body = answers.shift();
    if (!body) {
      t.close();
      return new Response('{"messages":[],"cursor":"C2"}');
    }
    return new Response(JSON.stringify(body), { headers: { 'content-type': 'application/json' } });
  };
  const sink = recorder();
  t = pollTransport('http://gw/poll', 7, fetchFn)({ app: 'a', channels: { x: { filters: 'T' } } }, sink);
  await tick(20);
  const post = (body) => ['http://gw/poll', 'POST', JSON.stringify(body)];
  assert.deepEqual(urls, [
    post({ sub: ['T'], timeout: 7 }), post({ sub: ['T'], cursor: 'C1', timeout: 7 }), post({ sub: ['T'], cursor: 'C2', timeout: 7 }),
  ]);
  assert.deepEqual(sink.events, ['opened', 'message:1', 'message:ack', 'cursor:C1', 'message:2', 'cursor:C2']);
});

// Issue 10: a page on another origin than the gateway (no CORS) only saw
// "TypeError: Failed to fetch", over and over.
test('a fetch blocked cross-origin says it may be CORS (poll and SSE)', async () => {
  const page = { href: 'http://app.example/page', origin: 'http://app.example' };
  Object.defineProperty(globalThis, 'location', { value: page, configurable: true });
  try {
    const blocked = async () => {
      throw new TypeError('Failed to fetch');
    };
    const poll = recorder();
    pollTransport('http://gw.example/poll', 5, blocked)({ app: 'a', channels: { x: { filters: 'T' } } }, poll);
    const sse = recorder();
    sseTransport('http://gw.example/sse', 45_000, blocked)({ app: 'a', channels: { x: { filters: 'T' } } }, sse);
    const same = recorder();
    sseTransport('http://app.example/sse', 45_000, blocked)({ app: 'a', channels: { x: { filters: 'T' } } }, same);
    await tick(10);
    for (const sink of [poll, sse]) {
      assert.equal(sink.events.length, 1);
      assert.match(sink.events[0], /^closed:TypeError: Failed to fetch \(a cross-origin request from http:\/\/app\.example to http:\/\/gw\.example: .*CORS/);
    }
    assert.match(same.events[0], /^closed:TypeError: Failed to fetch \(the network or the gateway is down/);
  } finally {
    delete globalThis.location;
  }
});
