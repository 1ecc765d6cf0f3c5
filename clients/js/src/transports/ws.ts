/** WebSocket transport: sends the subscribe message (with `since`) as a text frame. */

import { buildSubscribe } from '../subscription';
import { parseMessages, type TransportFactory, type TransportRequest } from './transport';

type SocketClass = new (url: string) => WebSocket;

export function websocketTransport(url: string, Socket: SocketClass | undefined = globalThis.WebSocket): TransportFactory {
  return (request, sink) => {
    let done = false;
    const finish = (info: { code?: number; reason?: string }) => {
      if (done) return;
      done = true;
      sink.closed(info);
    };
    const subscribe = (r: TransportRequest) =>
      JSON.stringify(buildSubscribe(r.app, r.channels, (name) => r.channels[name].since));
    let ws: WebSocket;
    try {
      if (!Socket) throw new Error('no WebSocket here');
      ws = new Socket(url);
    } catch (e) {
      queueMicrotask(() => finish({ reason: String(e) }));
      return { name: 'websocket', close: () => void (done = true) };
    }
    ws.onopen = () => {
      if (done) return;
      sink.opened();
      for (const m of request.before ?? []) ws.send(JSON.stringify(m));
      ws.send(subscribe(request));
      for (const m of request.after ?? []) ws.send(JSON.stringify(m));
    };
    ws.onmessage = (e: MessageEvent) => {
      if (done || typeof e.data !== 'string') return;
      for (const m of parseMessages(e.data)) {
        if (done) return;
        sink.message(m);
      }
    };
    ws.onclose = (e: CloseEvent) => finish({ code: e.code, reason: e.reason });
    ws.onerror = () => {
      // A close event follows (with its code: let it come first); some
      // environments only fire error: close anyway.
      if (ws.readyState === ws.CLOSED) setTimeout(() => finish({}), 0);
    };
    return {
      name: 'websocket',
      resubscribe(r) {
        if (done || ws.readyState !== ws.OPEN) return false;
        ws.send(subscribe(r));
        return true;
      },
      send(m) {
        if (done || ws.readyState !== ws.OPEN) return false;
        ws.send(JSON.stringify(m));
        return true;
      },
      close() {
        done = true;
        ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
        try {
          ws.close(1000);
        } catch {
          /* already closed */
        }
      },
    };
  };
}
