// Fakes for the unit tests: sockets, transports, fetch. No network.
export const tick = (ms = 0) => new Promise((r) => setTimeout(r, ms));

/** A WebSocket stand-in; `FakeSocket.all` lists every instance. */
export class FakeSocket {
  static all = [];
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 3;
  CONNECTING = 0;
  OPEN = 1;
  CLOSED = 3;
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.all.push(this);
  }
  static reset() {
    FakeSocket.all = [];
  }
  static last() {
    return FakeSocket.all.at(-1);
  }
  // Server side
  accept() {
    this.readyState = 1;
    this.onopen?.({});
  }
  refuse() {
    this.readyState = 3;
    this.onerror?.({});
    this.onclose?.({ code: 1006, reason: '' });
  }
  push(...messages) {
    for (const m of messages) this.onmessage?.({ data: JSON.stringify(m) });
  }
  drop(code = 1006, reason = '') {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  subscribes() {
    return this.sent.map((s) => JSON.parse(s));
  }
  // Client side
  send(text) {
    this.sent.push(text);
  }
  close() {
    this.readyState = 3;
  }
}

/** A transport factory recording each instance: `opened()`, `push()`, `fail()`. */
export function fakeTransport(name, log = []) {
  const factory = (request, sink) => {
    const t = {
      name, request, sink, closedByClient: false, resubscribes: [],
      open: () => sink.opened(),
      push: (...ms) => ms.forEach((m) => sink.message(m)),
      fail: (info = {}) => sink.closed(info),
      resubscribe(r) {
        t.resubscribes.push(r);
        return name === 'websocket';
      },
      close() {
        t.closedByClient = true;
      },
    };
    log.push(t);
    return t;
  };
  factory.log = log;
  return factory;
}

export function jwt(claims) {
  const b = (x) => Buffer.from(JSON.stringify(x)).toString('base64url');
  return `${b({ alg: 'HS256' })}.${b(claims)}.sig`;
}

export function subscribe(filters = { '*': {} }, exp = 2e9, channel = 'bornes') {
  return { class: 'subscribe', app_id: 'bluelib', channels: { [channel]: { filters: jwt({ app_id: 'bluelib', channel, filters, exp }) } } };
}

export const data = (offset, extra = {}) => ({ class: 'data', channel: 'bornes', offset, event_kind: 'status', keywords: [], data: null, ...extra });
export const ack = (epoch, offset, channel = 'bornes') => ({ class: 'ack', channels: { [channel]: { epoch, offset, recovered: true } } });
/** A cursor as the gateway writes it: base64url JSON of `[app, channel, epoch, offset]` entries. */
export const cursorOf = (...entries) => Buffer.from(JSON.stringify(entries)).toString('base64url');
