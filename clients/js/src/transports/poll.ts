/**
 * Long-polling: each request subscribes afresh and resumes from the cursor
 * of the previous answer, `{"messages": [...], "cursor": "..."}`. Tokens and
 * cursor go in each request's `POST` body, out of the URL.
 */

import { fetchFailure, postRequest, toMessages, type TransportFactory } from './transport';

export function pollTransport(
  url: string,
  timeoutSecs = 25,
  fetchFn: typeof fetch = (...a) => globalThis.fetch(...a),
): TransportFactory {
  return (request, sink) => {
    let done = false;
    let abort: AbortController | undefined;
    let cursor = request.cursor;
    const finish = (info: { code?: number; reason?: string }) => {
      if (done) return;
      done = true;
      sink.closed(info);
    };
    let opened = false;
    (async () => {
      while (!done) {
        abort = new AbortController();
        // A request that outlives its wait by far is a dead network.
        const guard = setTimeout(() => abort?.abort(), (timeoutSecs + 15) * 1000);
        let res: Response;
        let body: { messages?: unknown; cursor?: unknown };
        try {
          res = await fetchFn(...postRequest(url, { ...request, cursor }, timeoutSecs, {
            cache: 'no-store',
            signal: abort.signal,
          }));
          if (!res.ok) return finish({ code: res.status, reason: `HTTP ${res.status}` });
          body = await res.json();
        } finally {
          clearTimeout(guard);
        }
        if (done) return;
        if (!opened) {
          opened = true;
          sink.opened();
        }
        const messages = Array.isArray(body.messages) ? body.messages : [];
        for (const m of toMessages(messages)) {
          if (done) return;
          sink.message(m);
        }
        if (done) return;
        if (typeof body.cursor === 'string' && body.cursor) {
          cursor = body.cursor;
          sink.cursor(cursor);
        }
      }
    })().catch((e: unknown) => finish({ reason: opened ? String(e) : fetchFailure(url, e) }));
    return {
      name: 'poll',
      close() {
        done = true;
        abort?.abort();
      },
    };
  };
}
