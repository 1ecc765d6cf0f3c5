/**
 * Server-Sent Events over `fetch` (not EventSource: the client decides when
 * and with which tokens and cursor to reconnect; the tokens and the cursor
 * go in a `POST` body, out of the URL). Each batch of messages ends with an
 * `id:` holding the gateway's cursor.
 */

import { fetchFailure, parseMessages, postRequest, type TransportFactory } from './transport';

export interface SseEvent {
  /** The joined `data:` lines; undefined for a block with only an `id:`. */
  data?: string;
  /** The `id:` of this block, if it had one. */
  id?: string;
}

/** An incremental parser of the event-stream format (comments, `retry:` and `event:` are ignored). */
export class SseParser {
  private buffer = '';
  private data: string[] = [];
  private id: string | undefined;

  feed(chunk: string): SseEvent[] {
    this.buffer += chunk;
    const events: SseEvent[] = [];
    let start = 0;
    for (;;) {
      const match = /\r\n|\r|\n/.exec(this.buffer.slice(start));
      if (!match) break;
      // A lone \r at the very end may be the first half of \r\n: wait for more.
      if (match[0] === '\r' && start + match.index + 1 === this.buffer.length) break;
      const line = this.buffer.slice(start, start + match.index);
      start += match.index + match[0].length;
      if (line === '') {
        if (this.data.length || this.id !== undefined) {
          events.push({ data: this.data.length ? this.data.join('\n') : undefined, id: this.id });
        }
        this.data = [];
        this.id = undefined;
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'data') this.data.push(value);
      else if (field === 'id' && !value.includes('\0')) this.id = value;
    }
    this.buffer = this.buffer.slice(start);
    return events;
  }
}

export function sseTransport(
  url: string,
  idleTimeout = 45_000,
  fetchFn: typeof fetch = (...a) => globalThis.fetch(...a),
): TransportFactory {
  return (request, sink) => {
    const abort = new AbortController();
    let done = false;
    let idle: ReturnType<typeof setTimeout> | undefined;
    let opened = false;
    const finish = (info: { code?: number; reason?: string }) => {
      clearTimeout(idle);
      if (done) return;
      done = true;
      abort.abort();
      sink.closed(info);
    };
    const watchdog = () => {
      clearTimeout(idle);
      idle = setTimeout(() => finish({ reason: 'idle stream' }), idleTimeout);
    };
    (async () => {
      const res = await fetchFn(...postRequest(url, request, undefined, {
        headers: { accept: 'text/event-stream' },
        cache: 'no-store',
        signal: abort.signal,
      }));
      const type = res.headers.get('content-type') ?? '';
      if (!res.ok || !res.body || !type.startsWith('text/event-stream')) {
        return finish({ code: res.status, reason: `HTTP ${res.status}` });
      }
      if (done) return;
      opened = true;
      sink.opened();
      watchdog();
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      const parser = new SseParser();
      for (;;) {
        const { value, done: end } = await reader.read();
        if (done) return;
        if (end) return finish({ reason: 'stream ended' });
        watchdog();
        for (const event of parser.feed(decoder.decode(value, { stream: true }))) {
          if (event.data !== undefined) {
            for (const m of parseMessages(event.data)) {
              if (done) return;
              sink.message(m);
            }
          }
          if (done) return;
          // The cursor covers the batch it ends: take it after its messages.
          if (event.id) sink.cursor(event.id);
        }
      }
    })().catch((e: unknown) => finish({ reason: opened ? String(e) : fetchFailure(url, e) }));
    return {
      name: 'sse',
      close() {
        done = true;
        clearTimeout(idle);
        abort.abort();
      },
    };
  };
}
