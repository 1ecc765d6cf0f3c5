// @chouquette/client: generated from clients/js/src by `npm run build`; do not edit.

// src/backoff.ts
var DEFAULT_BACKOFF = { base: 500, max: 3e4 };
function backoffDelay(attempt, options = {}, random = Math.random) {
  const base = options.base ?? DEFAULT_BACKOFF.base;
  const max = options.max ?? DEFAULT_BACKOFF.max;
  const cap = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * cap);
}
var Backoff = class {
  constructor(options = {}, random = Math.random) {
    this.options = options;
    this.random = random;
    this.attempt = 0;
  }
  /** The delay before the next attempt. */
  next() {
    return backoffDelay(this.attempt++, this.options, this.random);
  }
  reset() {
    this.attempt = 0;
  }
};

// src/resume.ts
var ResumeState = class {
  constructor() {
    this.channels = /* @__PURE__ */ new Map();
  }
  /**
   * Whether a data message is new to its channel (offset above the last
   * seen); records it if so. Offsets of one channel only grow within an
   * epoch, so anything at or below the mark is a duplicate.
   */
  accept(m) {
    const p = this.channels.get(m.channel);
    if (p && m.offset <= p.offset) return false;
    this.channels.set(m.channel, { epoch: p?.epoch, offset: m.offset });
    return true;
  }
  /**
   * Records that `channel` stands at `offset` of `epoch` (an ack or a
   * cursor). Within the known epoch the mark only rises; another epoch
   * replaces it (the history was lost: offsets start again).
   */
  position(channel, epoch, offset) {
    const p = this.channels.get(channel);
    if (!p || p.epoch === void 0 || p.epoch === epoch) {
      this.channels.set(channel, { epoch, offset: Math.max(offset, p?.offset ?? 0) });
    } else {
      this.channels.set(channel, { epoch, offset });
    }
  }
  /** Takes in every position an `ack` (or a synthetic `_position`) lists. */
  acknowledge(m) {
    const channels = m.channels;
    if (!channels || typeof channels !== "object") return;
    for (const [name, c] of Object.entries(channels)) {
      if (c && typeof c.epoch === "string" && typeof c.offset === "number") this.position(name, c.epoch, c.offset);
    }
  }
  /**
   * A `reset`: forgets the channel (or every channel when none is named), so
   * the events that follow, numbered in a new epoch, are not taken for
   * duplicates. `shutdown` is no reset of the stream: the position is kept to
   * resume from.
   */
  reset(channel, reason) {
    if (reason === "shutdown") return;
    if (channel === void 0) this.channels.clear();
    else this.channels.delete(channel);
  }
  /** Where to resume `channel` from, once its epoch is known. */
  since(channel) {
    const p = this.channels.get(channel);
    return p?.epoch === void 0 ? void 0 : { epoch: p.epoch, offset: p.offset };
  }
  /**
   * Moves the mark down to `since` (same epoch), or takes it when nothing is
   * known; true when it changed. A shared connection resumes from the
   * earliest point any of its tabs needs; each tab drops what it already has.
   */
  lower(channel, since) {
    const p = this.channels.get(channel);
    if (!p || p.epoch === void 0) {
      this.channels.set(channel, { epoch: since.epoch, offset: Math.min(since.offset, p?.offset ?? since.offset) });
      return true;
    }
    if (p.epoch === since.epoch && since.offset < p.offset) {
      p.offset = since.offset;
      return true;
    }
    return false;
  }
  /** Takes in a cursor the gateway issued (SSE `id:`, poll `cursor`), for `app`. */
  absorbCursor(app, cursor) {
    const entries = decodeCursor(cursor);
    if (!entries) return void 0;
    const seen = {};
    for (const [a, channel, epoch, offset] of entries) {
      if (a !== app) continue;
      this.position(channel, epoch, offset);
      seen[channel] = this.since(channel);
    }
    return seen;
  }
  /** A cursor for `app`'s `channels`, from what this state knows (those without an epoch are left out). */
  cursor(app, channels) {
    const entries = [];
    for (const name of channels) {
      const s = this.since(name);
      if (s) entries.push([app, name, s.epoch, s.offset]);
    }
    return entries.length ? encodeCursor(entries) : void 0;
  }
};
function encodeCursor(entries) {
  const bytes = new TextEncoder().encode(JSON.stringify(entries));
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
function decodeCursor(cursor) {
  try {
    const binary = atob(cursor.trim().replace(/-/g, "+").replace(/_/g, "/"));
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const entries = JSON.parse(new TextDecoder().decode(bytes));
    if (!Array.isArray(entries)) return void 0;
    const valid = entries.every(
      (e) => Array.isArray(e) && e.length === 4 && typeof e[0] === "string" && typeof e[1] === "string" && typeof e[2] === "string" && typeof e[3] === "number"
    );
    return valid ? entries : void 0;
  } catch {
    return void 0;
  }
}

// src/connection.ts
var TransportChooser = class {
  constructor(order, threshold) {
    this.order = order;
    this.threshold = threshold;
    /** Full rounds of the order in which no transport opened. */
    this.cycles = 0;
    this.index = 0;
    this.failures = 0;
    this.proven = /* @__PURE__ */ new Set();
    if (!order.length) throw new Error("no transport to use");
  }
  get current() {
    return this.order[this.index];
  }
  opened() {
    this.proven.add(this.current);
    this.failures = 0;
  }
  /** An attempt failed before opening; returns the transport to try next. */
  failed() {
    if (!this.proven.has(this.current) && ++this.failures >= this.threshold) {
      this.failures = 0;
      this.index = (this.index + 1) % this.order.length;
      if (this.index === 0) this.cycles += 1;
    }
    return this.current;
  }
};
var SIDE_PREFIX = "cq-";
function sideMessage(m) {
  return typeof m.ref === "string" && m.ref.startsWith(SIDE_PREFIX) || m.class === "result" || m.class === "call" || m.class === "error" && m.id !== void 0;
}
var UNREACHABLE = "unreachable";
var Link = class {
  constructor(app, options, onMessage, onState) {
    this.app = app;
    this.options = options;
    this.onMessage = onMessage;
    this.onState = onState;
    this.positions = new ResumeState();
    this.state = { state: "connecting" };
    this.wanted = /* @__PURE__ */ new Map();
    this.isOpen = false;
    /**
     * The transport is open but the gateway has not answered its subscription
     * yet: it is not in effect (events published meanwhile are not for it),
     * so the state stays `connecting`. A WebSocket's answer ends with the
     * `ack` (none when every channel is refused: only errors); an SSE or
     * long-poll answer ends with its first cursor, which lists the channels
     * subscribed.
     */
    this.awaitingAnswer = false;
    /** The channels the current transport asked for. */
    this.asked = [];
    /**
     * The next connection replaces an open one for the same subscription (new
     * tokens, resumed with `since`/cursor): nothing is lost, the state stays
     * `open` (no `connecting`), unless it fails.
     */
    this.seamless = false;
    /** The last failure of each transport since one last opened (for `unreachable`). */
    this.failures = /* @__PURE__ */ new Map();
    this.paused = false;
    this.stopped = false;
    this.shutdown = false;
    this.chooser = new TransportChooser(options.order, options.fallbackAfter);
    this.backoff = new Backoff(options.backoff, options.random);
  }
  /**
   * Subscribes to `channels` (new ones, refreshed tokens, or an earlier
   * `since`); starts the connection if needed. A channel given without
   * `since` is subscribed fresh (snapshots).
   */
  want(channels) {
    const changed = [];
    for (const [name, { since, ...request }] of Object.entries(channels)) {
      const old = this.wanted.get(name);
      let needed = !old || !old.active || old.request.filters !== request.filters;
      if (since && this.positions.lower(name, since)) needed = true;
      this.wanted.set(name, { request, fresh: old ? old.fresh && !since : !since, active: true, ended: void 0 });
      if (needed) changed.push(name);
    }
    if (!changed.length || this.stopped || this.paused) return;
    if (!this.transport) {
      if (!this.timer) this.connect();
      return;
    }
    if (this.isOpen && this.transport.resubscribe?.(this.request(changed))) return;
    this.restart();
  }
  /** Sends a client message on the open connection; false when there is none, or it is not a WebSocket. */
  send(m) {
    return !!(this.isOpen && this.transport?.send?.(m));
  }
  /** The transport of the open connection, if any. */
  get openTransport() {
    return this.isOpen ? this.transport?.name : void 0;
  }
  /** The token in use for `channel`, while its subscription is active. */
  token(channel) {
    const w = this.wanted.get(channel);
    return w?.active ? w.request.filters : void 0;
  }
  /** Closes the connection until `resume()` (a hidden page). */
  pause(reason) {
    if (this.paused || this.stopped) return;
    this.paused = true;
    this.drop();
    this.setState({ state: "closed", reason });
  }
  resume() {
    if (!this.paused || this.stopped) return;
    this.paused = false;
    this.backoff.reset();
    this.connect();
  }
  close() {
    if (this.stopped) return;
    this.drop();
    this.stopped = true;
    this.setState({ state: "closed", reason: "closed" });
  }
  /** What to subscribe to: the named channels (default: every active one), each with its `since`. */
  request(names = this.wanted.keys()) {
    const channels = {};
    const resumed = [];
    for (const name of names) {
      const w = this.wanted.get(name);
      if (!w?.active) continue;
      const since = w.fresh ? void 0 : this.positions.since(name);
      channels[name] = since ? { ...w.request, since } : { ...w.request };
      if (!w.fresh) resumed.push(name);
      w.fresh = false;
    }
    return { app: this.app, channels, cursor: this.positions.cursor(this.app, resumed) };
  }
  connect() {
    this.timer = void 0;
    const seamless = this.seamless;
    this.seamless = false;
    if (this.stopped || this.paused) return;
    const request = { ...this.request(), ...this.options.greeting?.() };
    if (!Object.keys(request.channels).length) return;
    const name = this.chooser.current;
    const factory = this.options.factories[name];
    if (!factory) throw new Error(`transport ${name} is not available`);
    this.isOpen = false;
    this.awaitingAnswer = false;
    this.asked = Object.keys(request.channels);
    this.lastError = void 0;
    if (!(seamless && this.state.state === "open")) this.setState({ state: "connecting", transport: name });
    let transport;
    const mine = () => transport !== void 0 && this.transport === transport;
    const sink = {
      opened: () => {
        if (!mine()) return;
        this.isOpen = true;
        this.chooser.opened();
        this.failures.clear();
        this.awaitingAnswer = true;
      },
      message: (m) => {
        if (!mine()) return;
        if (sideMessage(m)) return this.onMessage(m);
        this.handle(m);
        if (mine() && this.awaitingAnswer && name === "websocket" && m.class === "ack") this.answered(name);
      },
      cursor: (cursor) => {
        if (!mine()) return;
        const seen = this.positions.absorbCursor(this.app, cursor);
        if (seen && Object.keys(seen).length) this.onMessage({ class: "_position", channels: seen });
        if (!mine() || !this.awaitingAnswer || !seen) return;
        let refused = false;
        for (const channel of this.asked) {
          const w = this.wanted.get(channel);
          if (w?.active && !Object.prototype.hasOwnProperty.call(seen, channel)) {
            w.active = false;
            w.ended = this.lastError ?? "invalid_token";
            refused = true;
          }
        }
        if (refused) {
          if (!this.settle()) return;
          if (name === "poll") this.restartSoon();
        }
        this.answered(name);
      },
      closed: (info) => {
        if (!mine()) return;
        this.transport = void 0;
        let cycled = false;
        if (!this.isOpen) {
          this.failures.set(name, { transport: name, code: info.code, reason: info.reason || void 0 });
          const cycles = this.chooser.cycles;
          this.chooser.failed();
          cycled = this.chooser.cycles > cycles;
        }
        this.isOpen = false;
        this.awaitingAnswer = false;
        if (cycled) this.unreachable();
        const delay = this.backoff.next();
        this.setState({
          state: "reconnecting",
          transport: this.chooser.current,
          reason: this.shutdown ? "shutdown" : info.reason || void 0,
          code: info.code,
          attempt: this.backoff.attempt,
          delay
        });
        this.shutdown = false;
        this.timer = setTimeout(() => this.connect(), delay);
      }
    };
    transport = factory(request, sink);
    this.transport = transport;
  }
  /** The gateway answered the subscription and took at least one channel: it is in effect. */
  answered(name) {
    this.awaitingAnswer = false;
    this.lastError = void 0;
    if (this.state.state !== "open" || this.state.transport !== name) this.setState({ state: "open", transport: name });
  }
  /**
   * After channels were ended or refused: true while some channel is still
   * active. When none is, either every one expired and a fresh token is on
   * its way (nothing to report: SSE and long-polling stop and reopen with the
   * cursor when it comes, a WebSocket sends it on the same socket), or the
   * subscription was refused: the connection is dropped and the state says
   * `refused` with the code, until `want()` brings new tokens.
   */
  settle() {
    const wanted = [...this.wanted.values()];
    if (wanted.some((w) => w.active)) return true;
    const codes = wanted.map((w) => w.ended ?? "refused");
    if (this.options.refreshable && codes.every((c) => c === "token_expired")) {
      if (this.transport && this.transport.name !== "websocket") {
        this.seamless = this.state.state === "open";
        this.drop();
      }
      return false;
    }
    const transport = this.transport?.name ?? this.chooser.current;
    this.drop();
    this.setState({ state: "refused", transport, reason: codes.find((c) => c !== "token_expired") ?? codes[0] });
    return false;
  }
  /**
   * A whole round of the transports failed before any opened: tell the app
   * (an `error` `unreachable`), with each transport's last failure as far as
   * the browser lets it know (a CORS refusal and a network error look alike
   * to a page); the reconnection goes on with backoff.
   */
  unreachable() {
    const failures = this.options.order.flatMap((t) => this.failures.get(t) ?? []);
    const what = (f) => `${f.transport}: ${f.reason ?? (f.code !== void 0 ? `closed (code ${f.code})` : "failed")}${f.transport === "websocket" && f.code === 1006 && !f.reason ? " before opening (refused, or blocked on the way)" : ""}`;
    this.onMessage({
      class: "error",
      code: UNREACHABLE,
      message: `the gateway cannot be reached from this page (${failures.map(what).join("; ")}); retrying with backoff`,
      failures
    });
  }
  handle(m) {
    switch (m.class) {
      case "data":
        this.positions.accept(m);
        this.backoff.reset();
        break;
      case "ack":
        this.positions.acknowledge(m);
        this.backoff.reset();
        break;
      case "reset":
        this.positions.reset(m.channel, String(m.reason));
        if (m.reason === "shutdown") this.shutdown = true;
        break;
      case "error": {
        const code = String(m.code ?? "error");
        const ended = [];
        if (m.channel !== void 0) {
          const w = this.wanted.get(m.channel);
          if (w?.active) ended.push(w);
        } else if (this.awaitingAnswer) {
          this.lastError = code;
          if (this.transport?.name === "websocket") {
            for (const name of this.asked) {
              const w = this.wanted.get(name);
              if (w?.active) ended.push(w);
            }
          }
        }
        for (const w of ended) {
          w.active = false;
          w.ended = code;
        }
        this.onMessage(m);
        if (ended.length && this.settle() && this.transport?.name === "poll") this.restartSoon();
        return;
      }
    }
    this.onMessage(m);
  }
  /** Polls carry their tokens: once this one's answer is handled, poll again without the ended channels. */
  restartSoon() {
    const transport = this.transport;
    queueMicrotask(() => transport && transport === this.transport && this.restart());
  }
  /** Reconnects at once with the current request (not a failure: no backoff, and an open state stays open). */
  restart() {
    this.seamless = this.state.state === "open";
    this.drop();
    this.connect();
  }
  drop() {
    clearTimeout(this.timer);
    this.timer = void 0;
    this.transport?.close();
    this.transport = void 0;
    this.isOpen = false;
    this.awaitingAnswer = false;
  }
  setState(s) {
    this.state = s;
    this.onState(s);
  }
};

// src/emitter.ts
var Emitter = class {
  constructor() {
    this.listeners = /* @__PURE__ */ new Map();
  }
  /** Calls `fn` on every `type` event; returns a function that removes it. */
  on(type, fn) {
    let set = this.listeners.get(type);
    if (!set) this.listeners.set(type, set = /* @__PURE__ */ new Set());
    set.add(fn);
    return () => this.off(type, fn);
  }
  /** Calls `fn` on the next `type` event only. */
  once(type, fn) {
    const off = this.on(type, (value) => {
      off();
      fn(value);
    });
    return off;
  }
  off(type, fn) {
    this.listeners.get(type)?.delete(fn);
  }
  /** Calls every listener; one that throws does not stop the others (its error is rethrown asynchronously). */
  emit(type, value) {
    const set = this.listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(value);
      } catch (e) {
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
};

// src/lattice.ts
function rank(v) {
  return "register" in v ? 2 : "set" in v ? 1 : 0;
}
function canonicalJson(value) {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value && typeof value === "object") {
    const o = value;
    return `{${Object.keys(o).sort().filter((k) => o[k] !== void 0).map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}
function compareBytes(a, b) {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}
function latticeValue(v) {
  if (!v || typeof v !== "object") return void 0;
  const o = v;
  if (typeof o.counter === "number" && Number.isFinite(o.counter)) return { counter: o.counter };
  if (Array.isArray(o.set) && o.set.every((e) => typeof e === "string")) return { set: [...new Set(o.set)].sort() };
  const r = o.register;
  if (r && typeof r === "object" && typeof r.ts === "number" && Number.isFinite(r.ts)) return { register: { value: r.value ?? null, ts: r.ts } };
  return void 0;
}
function mergeValue(a, b) {
  const ra = rank(a);
  const rb = rank(b);
  if (ra !== rb) return ra > rb ? a : b;
  if ("counter" in a && "counter" in b) return { counter: Math.max(a.counter, b.counter) };
  if ("set" in a && "set" in b) return { set: [.../* @__PURE__ */ new Set([...a.set, ...b.set])].sort() };
  const x = a.register;
  const y = b.register;
  if (x.ts !== y.ts) return x.ts > y.ts ? a : b;
  return compareBytes(canonicalJson(x.value), canonicalJson(y.value)) >= 0 ? a : b;
}
function mergeMap(into, change) {
  const changed = {};
  if (!change || typeof change !== "object") return changed;
  for (const [key, raw] of Object.entries(change)) {
    const v = latticeValue(raw);
    if (!v) continue;
    const old = into[key];
    const merged = old ? mergeValue(old, v) : v;
    if (!old || canonicalJson(old) !== canonicalJson(merged)) {
      into[key] = merged;
      changed[key] = merged;
    }
  }
  return changed;
}
var LatticeView = class extends Emitter {
  constructor(namespace, onClose = () => {
  }) {
    super();
    this.namespace = namespace;
    this.onClose = onClose;
    this.shared = {};
    this.user = {};
    /** True once a full state came. */
    this.ready = false;
    this.closed = false;
  }
  /** Applies a `lattice` message of this namespace: `full` replaces the view, a change is merged into it. */
  apply(m) {
    if (this.closed) return;
    const full = m.full === true;
    if (full) {
      this.shared = {};
      this.user = {};
      this.ready = true;
    }
    const shared = mergeMap(this.shared, m.shared);
    const user = mergeMap(this.user, m.user);
    if (full || Object.keys(shared).length || Object.keys(user).length) {
      this.emit("change", { namespace: this.namespace, full, shared: full ? { ...this.shared } : shared, user: full ? { ...this.user } : user });
    }
  }
  /** @internal The gateway refused the subscription. */
  refused(code, message) {
    this.emit("error", { code, message });
  }
  /** Stops following the namespace (`lattice_unsubscribe`). */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.onClose(this);
  }
};

// src/notifications.ts
var MAX_SEEN_NOTIFICATIONS = 1e3;
var SeenNotifications = class {
  constructor(max = MAX_SEEN_NOTIFICATIONS) {
    this.max = max;
    /** Insertion-ordered: the first is the oldest. */
    this.ids = /* @__PURE__ */ new Set();
  }
  /** True the first time `id` is seen (it is then remembered). */
  first(id) {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    if (this.ids.size > this.max) {
      const oldest = this.ids.values().next().value;
      if (oldest !== void 0) this.ids.delete(oldest);
    }
    return true;
  }
  /** Acknowledged ids never come back: no need to remember them. */
  forget(ids) {
    for (const id of ids) this.ids.delete(id);
  }
  get size() {
    return this.ids.size;
  }
};

// src/subscription.ts
function uuid() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  const hex = [...Array(32)].map(() => Math.floor(Math.random() * 16).toString(16));
  hex[12] = "4";
  hex[16] = (parseInt(hex[16], 16) & 3 | 8).toString(16);
  const h = hex.join("");
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}
function buildSubscribe(app, channels, since = () => void 0) {
  const out = {};
  for (const [name, request] of Object.entries(channels)) {
    const { since: _ignored, ...rest } = request;
    const s = since(name);
    out[name] = s ? { ...rest, since: s } : { ...rest };
  }
  return { class: "subscribe", app_id: app, uuid: uuid(), channels: out };
}
function validSubscribe(m) {
  if (!m || typeof m !== "object") return false;
  const s = m;
  return s.class === "subscribe" && typeof s.app_id === "string" && !!s.channels && typeof s.channels === "object" && Object.values(s.channels).every((c) => !!c && typeof c.filters === "string");
}
function tokenClaims(token) {
  try {
    const part = token.split(".")[1];
    const binary = atob(part.replace(/-/g, "+").replace(/_/g, "/"));
    const claims = JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
    return claims && typeof claims === "object" ? claims : void 0;
  } catch {
    return void 0;
  }
}
function identity(m) {
  const channels = Object.keys(m.channels).sort().map((name) => {
    const token = m.channels[name].filters;
    const claims = tokenClaims(token);
    const what = claims ? { filters: claims.filters, sub: claims.sub ?? null, groups: claims.groups ?? null } : token;
    return [name, what];
  });
  return JSON.stringify([m.app_id, channels]);
}

// src/transports/transport.ts
function parseMessages(text) {
  let value;
  try {
    value = JSON.parse(text);
  } catch {
    return [];
  }
  return toMessages(value);
}
function toMessages(value) {
  const list = Array.isArray(value) ? value : [value];
  return list.filter((m) => !!m && typeof m === "object" && typeof m.class === "string");
}
function postRequest(base, request, timeoutSecs, init = {}) {
  const body = {
    sub: Object.values(request.channels).map((c) => c.filters)
  };
  if (request.cursor) body.cursor = request.cursor;
  if (timeoutSecs !== void 0) body.timeout = timeoutSecs;
  const headers = { ...init.headers, "content-type": "application/json" };
  const url = new URL(base, globalThis.location?.href).toString();
  return [url, { ...init, method: "POST", headers, body: JSON.stringify(body) }];
}
function fetchFailure(url, e) {
  const what = String(e);
  if (!(e instanceof TypeError)) return what;
  const page = globalThis.location;
  let target;
  try {
    target = new URL(url, page?.href).origin;
  } catch {
  }
  if (page && target && target !== page.origin) {
    return `${what} (a cross-origin request from ${page.origin} to ${target}: blocked unless the gateway allows this origin (CORS); or the network or the gateway is down)`;
  }
  return `${what} (the network or the gateway is down, or a proxy refused the request)`;
}

// src/hub.ts
var Hub = class {
  constructor(options, out) {
    this.options = options;
    this.out = out;
    this.groups = /* @__PURE__ */ new Map();
    this.tabGroup = /* @__PURE__ */ new Map();
    this.hidden = /* @__PURE__ */ new Set();
    this.paused = false;
    /** Why the connections close when every tab is hidden or idle (`hidden`, `inactive`). */
    this.pauseReason = "hidden";
  }
  /** A tab's subscription (new, refreshed, or resumed with `since`). */
  put(tab, m, visible = true) {
    const id = identity(m);
    const previous = this.tabGroup.get(tab);
    if (previous !== void 0 && previous !== id) this.leave(tab);
    let group = this.groups.get(id);
    if (!group) {
      const tabs = /* @__PURE__ */ new Set();
      const g = {
        tabs,
        owner: tab,
        priming: /* @__PURE__ */ new Map(),
        link: new Link(
          m.app_id,
          this.options,
          (message) => this.route(g, message),
          // A tab waiting for its snapshots learns the state once it has them.
          (s) => this.out.state([...tabs].filter((t) => !g.priming.has(t)), s)
        )
      };
      group = g;
      this.groups.set(id, g);
      if (this.paused) g.link.pause(this.pauseReason);
    }
    let channels = m.channels;
    if (!group.tabs.has(tab) && group.tabs.size) {
      const link = group.link;
      if (Object.values(m.channels).some((c) => !c.since)) this.prime(group, tab, m);
      else this.out.state([tab], link.state);
      channels = Object.fromEntries(
        Object.entries(m.channels).map(([name, c]) => [name, { ...c, filters: link.token(name) ?? c.filters }])
      );
    }
    group.tabs.add(tab);
    group.owner = tab;
    this.tabGroup.set(tab, id);
    group.link.want(channels);
    this.setVisible(tab, visible);
  }
  /** Sends a client message on the connection of `tab`'s subscription; false when it cannot (not open, not a WebSocket). */
  send(tab, m) {
    const id = this.tabGroup.get(tab);
    return id !== void 0 && !!this.groups.get(id)?.link.send(m);
  }
  /** The transport `tab`'s connection is open on, if it is. */
  transport(tab) {
    const id = this.tabGroup.get(tab);
    return id === void 0 ? void 0 : this.groups.get(id)?.link.openTransport;
  }
  /** A tab is gone (closed, or its client closed). */
  remove(tab) {
    this.leave(tab);
    this.hidden.delete(tab);
    this.checkVisibility();
  }
  /** A tab was shown or hidden: close the connections once every tab has been hidden `hiddenTimeout` ms. */
  visibility(tab, visible, reason = "hidden") {
    this.pauseReason = reason;
    this.setVisible(tab, visible);
  }
  get tabs() {
    return [...this.tabGroup.keys()];
  }
  close() {
    clearTimeout(this.hideTimer);
    for (const g of this.groups.values()) g.link.close();
    this.groups.clear();
    this.tabGroup.clear();
  }
  route(g, m) {
    let tabs = [...g.tabs];
    if (m.class === "error" && m.code === "token_expired") tabs = [g.owner];
    const now = [];
    for (const tab of tabs) {
      const waiting = g.priming.get(tab);
      if (waiting) waiting.push(m);
      else now.push(tab);
    }
    if (now.length) this.out.message(now, m);
  }
  /**
   * A tab joins a connection already running without `since`: it needs the
   * snapshots, which a fresh subscription gets. One long-poll request without
   * cursor answers them at once, with the ack; what the connection relays
   * meanwhile is held back and follows (the tab drops what the ack covers).
   */
  prime(g, tab, m) {
    const waiting = [];
    g.priming.set(tab, waiting);
    const request = { app: m.app_id, channels: m.channels };
    const fetchFn = this.options.fetch ?? ((...a) => globalThis.fetch(...a));
    fetchFn(...postRequest(this.options.pollUrl, request, 0, { cache: "no-store" })).then((res) => res.ok ? res.json() : Promise.reject(new Error(`HTTP ${res.status}`))).then(
      (body) => toMessages(body.messages ?? []),
      () => [{ class: "reset", reason: "snapshot_unavailable" }]
    ).then((first) => {
      if (g.priming.get(tab) !== waiting) return;
      g.priming.delete(tab);
      if (!g.tabs.has(tab)) return;
      for (const message of [...first, ...waiting]) this.out.message([tab], message);
      this.out.state([tab], g.link.state);
    });
  }
  leave(tab) {
    const id = this.tabGroup.get(tab);
    if (id === void 0) return;
    this.tabGroup.delete(tab);
    const g = this.groups.get(id);
    if (!g) return;
    g.tabs.delete(tab);
    g.priming.delete(tab);
    if (!g.tabs.size) {
      g.link.close();
      this.groups.delete(id);
    } else if (g.owner === tab) {
      g.owner = [...g.tabs][0];
    }
  }
  setVisible(tab, visible) {
    if (visible) this.hidden.delete(tab);
    else this.hidden.add(tab);
    this.checkVisibility();
  }
  checkVisibility() {
    const managed = !!this.options.idleManaged;
    const limit = managed ? 0 : this.options.hiddenTimeout;
    if (!managed && (!limit || limit <= 0)) return;
    const allHidden = this.tabGroup.size > 0 && [...this.tabGroup.keys()].every((t) => this.hidden.has(t));
    if (!allHidden) {
      clearTimeout(this.hideTimer);
      this.hideTimer = void 0;
      if (this.paused) {
        this.paused = false;
        for (const g of this.groups.values()) g.link.resume();
      }
    } else if (!this.paused && !this.hideTimer) {
      const pause = () => {
        this.hideTimer = void 0;
        this.paused = true;
        for (const g of this.groups.values()) g.link.pause(this.pauseReason);
      };
      if (managed) pause();
      else this.hideTimer = setTimeout(pause, limit);
    }
  }
};

// src/shared.ts
function hubFor(options, owner, relay) {
  const split = (tabs) => [tabs.includes(owner.tab), tabs.filter((t) => t !== owner.tab)];
  return new Hub(options, {
    message(tabs, m) {
      const [mine, others] = split(tabs);
      if (others.length) relay?.(others, "msg", m);
      if (mine) owner.deliver(m);
    },
    state(tabs, s) {
      const [mine, others] = split(tabs);
      if (others.length) relay?.(others, "state", s);
      if (mine) owner.state(s);
    }
  });
}
var LocalPort = class {
  constructor(options, owner) {
    this.owner = owner;
    this.hub = hubFor(options, owner);
  }
  put(m, visible) {
    this.hub.put(this.owner.tab, m, visible);
  }
  visibility(visible, reason) {
    this.hub.visibility(this.owner.tab, visible, reason);
  }
  send(m) {
    return this.hub.send(this.owner.tab, m);
  }
  transport() {
    return this.hub.transport(this.owner.tab);
  }
  close() {
    this.hub.close();
  }
};
var BEAT = 1e3;
var SharedPort = class {
  constructor(name, options, owner, locks = globalThis.navigator?.locks) {
    this.name = name;
    this.options = options;
    this.owner = owner;
    this.closed = false;
    this.abort = new AbortController();
    this.lastBeat = 0;
    this.channel = new BroadcastChannel(`chouquette:${name}`);
    this.channel.onmessage = (e) => this.receive(e.data);
    if (locks) this.electWithLock(locks);
    else this.electWithBeats();
  }
  /** Whether this tab holds the connections. */
  get isLeader() {
    return this.hub !== void 0;
  }
  put(m, visible) {
    this.last = { m, visible };
    if (this.hub) this.hub.put(this.owner.tab, m, visible);
    else this.post({ t: "put", tab: this.owner.tab, m, visible });
  }
  visibility(visible) {
    if (this.last) this.last.visible = visible;
    if (this.hub) this.hub.visibility(this.owner.tab, visible);
    else this.post({ t: "vis", tab: this.owner.tab, visible });
  }
  close() {
    if (this.closed) return;
    if (this.hub) {
      this.hub.close();
      this.hub = void 0;
      this.post({ t: "bye", tab: this.owner.tab });
    } else {
      this.post({ t: "remove", tab: this.owner.tab });
    }
    this.closed = true;
    clearInterval(this.beat);
    this.abort.abort();
    this.release?.();
    this.channel.close();
  }
  electWithLock(locks) {
    locks.request(`chouquette:${this.name}`, { signal: this.abort.signal }, () => {
      if (this.closed) return Promise.resolve();
      this.lead();
      return new Promise((resolve) => this.release = resolve);
    }).catch(() => {
    });
  }
  /** Without Web Locks: the leader beats every second; a tab that hears none for 3 s claims, the smallest id wins. */
  electWithBeats() {
    this.lastBeat = Date.now() - 2 * BEAT;
    this.beat = setInterval(() => {
      const now = Date.now();
      if (this.hub) return this.post({ t: "leader", tab: this.owner.tab });
      if (this.claiming !== void 0) {
        if (now - this.claiming >= BEAT / 2) {
          this.claiming = void 0;
          this.lead();
        }
      } else if (now - this.lastBeat > 3 * BEAT) {
        this.claiming = now;
        this.post({ t: "claim", tab: this.owner.tab });
      }
    }, BEAT / 2);
  }
  lead() {
    if (this.hub || this.closed) return;
    this.leader = this.owner.tab;
    this.hub = hubFor(
      this.options,
      this.owner,
      (to, kind, body) => this.post(kind === "msg" ? { t: "msg", to, m: body } : { t: "state", to, s: body })
    );
    this.post({ t: "leader", tab: this.owner.tab });
    if (this.last) this.owner.resubscribe();
  }
  stepDown() {
    this.hub?.close();
    this.hub = void 0;
  }
  receive(d) {
    if (this.closed || !d || typeof d !== "object") return;
    const hub = this.hub;
    switch (d.t) {
      case "put":
        return hub?.put(d.tab, d.m, d.visible);
      case "vis":
        return hub?.visibility(d.tab, d.visible);
      case "remove":
        return hub?.remove(d.tab);
      case "claim":
        if (hub) this.post({ t: "leader", tab: this.owner.tab });
        else if (this.claiming !== void 0 && d.tab < this.owner.tab) {
          this.claiming = void 0;
          this.lastBeat = Date.now();
        }
        return;
      case "leader":
        this.lastBeat = Date.now();
        this.claiming = void 0;
        if (hub) {
          if (d.tab < this.owner.tab) this.stepDown();
          else return;
        }
        if (this.leader !== d.tab) {
          this.leader = d.tab;
          this.owner.resubscribe();
        }
        return;
      case "bye":
        if (d.tab === this.leader) {
          this.leader = void 0;
          this.lastBeat = 0;
          this.owner.state({ state: "reconnecting", reason: "leader tab closed" });
        }
        return;
      case "msg":
        if (d.to.includes(this.owner.tab)) this.owner.deliver(d.m);
        return;
      case "state":
        if (d.to.includes(this.owner.tab)) this.owner.state(d.s);
        return;
    }
  }
  post(message) {
    if (!this.closed) this.channel.postMessage(message);
  }
};

// src/transports/poll.ts
function pollTransport(url, timeoutSecs = 25, fetchFn = (...a) => globalThis.fetch(...a)) {
  return (request, sink) => {
    let done = false;
    let abort;
    let cursor = request.cursor;
    const finish = (info) => {
      if (done) return;
      done = true;
      sink.closed(info);
    };
    let opened = false;
    (async () => {
      while (!done) {
        abort = new AbortController();
        const guard = setTimeout(() => abort?.abort(), (timeoutSecs + 15) * 1e3);
        let res;
        let body;
        try {
          res = await fetchFn(...postRequest(url, { ...request, cursor }, timeoutSecs, {
            cache: "no-store",
            signal: abort.signal
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
        if (typeof body.cursor === "string" && body.cursor) {
          cursor = body.cursor;
          sink.cursor(cursor);
        }
      }
    })().catch((e) => finish({ reason: opened ? String(e) : fetchFailure(url, e) }));
    return {
      name: "poll",
      close() {
        done = true;
        abort?.abort();
      }
    };
  };
}

// src/transports/sse.ts
var SseParser = class {
  constructor() {
    this.buffer = "";
    this.data = [];
  }
  feed(chunk) {
    this.buffer += chunk;
    const events = [];
    let start = 0;
    for (; ; ) {
      const match = /\r\n|\r|\n/.exec(this.buffer.slice(start));
      if (!match) break;
      if (match[0] === "\r" && start + match.index + 1 === this.buffer.length) break;
      const line = this.buffer.slice(start, start + match.index);
      start += match.index + match[0].length;
      if (line === "") {
        if (this.data.length || this.id !== void 0) {
          events.push({ data: this.data.length ? this.data.join("\n") : void 0, id: this.id });
        }
        this.data = [];
        this.id = void 0;
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "data") this.data.push(value);
      else if (field === "id" && !value.includes("\0")) this.id = value;
    }
    this.buffer = this.buffer.slice(start);
    return events;
  }
};
function sseTransport(url, idleTimeout = 45e3, fetchFn = (...a) => globalThis.fetch(...a)) {
  return (request, sink) => {
    const abort = new AbortController();
    let done = false;
    let idle;
    let opened = false;
    const finish = (info) => {
      clearTimeout(idle);
      if (done) return;
      done = true;
      abort.abort();
      sink.closed(info);
    };
    const watchdog = () => {
      clearTimeout(idle);
      idle = setTimeout(() => finish({ reason: "idle stream" }), idleTimeout);
    };
    (async () => {
      const res = await fetchFn(...postRequest(url, request, void 0, {
        headers: { accept: "text/event-stream" },
        cache: "no-store",
        signal: abort.signal
      }));
      const type = res.headers.get("content-type") ?? "";
      if (!res.ok || !res.body || !type.startsWith("text/event-stream")) {
        return finish({ code: res.status, reason: `HTTP ${res.status}` });
      }
      if (done) return;
      opened = true;
      sink.opened();
      watchdog();
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      const parser = new SseParser();
      for (; ; ) {
        const { value, done: end } = await reader.read();
        if (done) return;
        if (end) return finish({ reason: "stream ended" });
        watchdog();
        for (const event of parser.feed(decoder.decode(value, { stream: true }))) {
          if (event.data !== void 0) {
            for (const m of parseMessages(event.data)) {
              if (done) return;
              sink.message(m);
            }
          }
          if (done) return;
          if (event.id) sink.cursor(event.id);
        }
      }
    })().catch((e) => finish({ reason: opened ? String(e) : fetchFailure(url, e) }));
    return {
      name: "sse",
      close() {
        done = true;
        clearTimeout(idle);
        abort.abort();
      }
    };
  };
}

// src/transports/ws.ts
function websocketTransport(url, Socket = globalThis.WebSocket) {
  return (request, sink) => {
    let done = false;
    const finish = (info) => {
      if (done) return;
      done = true;
      sink.closed(info);
    };
    const subscribe = (r) => JSON.stringify(buildSubscribe(r.app, r.channels, (name) => r.channels[name].since));
    let ws;
    try {
      if (!Socket) throw new Error("no WebSocket here");
      ws = new Socket(url);
    } catch (e) {
      queueMicrotask(() => finish({ reason: String(e) }));
      return { name: "websocket", close: () => void (done = true) };
    }
    ws.onopen = () => {
      if (done) return;
      sink.opened();
      for (const m of request.before ?? []) ws.send(JSON.stringify(m));
      ws.send(subscribe(request));
      for (const m of request.after ?? []) ws.send(JSON.stringify(m));
    };
    ws.onmessage = (e) => {
      if (done || typeof e.data !== "string") return;
      for (const m of parseMessages(e.data)) {
        if (done) return;
        sink.message(m);
      }
    };
    ws.onclose = (e) => finish({ code: e.code, reason: e.reason });
    ws.onerror = () => {
      if (ws.readyState === ws.CLOSED) setTimeout(() => finish({}), 0);
    };
    return {
      name: "websocket",
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
          ws.close(1e3);
        } catch {
        }
      }
    };
  };
}

// src/client.ts
var MAX_PENDING_CALLS = 1e3;
var MAX_LATTICES = 16;
var DEFAULT_CALL_TIMEOUT = 3e4;
var MESSAGE_PREFIX = `${SIDE_PREFIX}message-`;
var CallError = class extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
    this.name = "CallError";
  }
};
var ANSWER_CODE = /^[A-Za-z0-9_.-]{1,64}$/;
function notificationAckRequest(url, token, ids) {
  return [
    new URL(url, globalThis.location?.href).toString(),
    {
      method: "POST",
      headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
      body: JSON.stringify({ ids }),
      cache: "no-store"
    }
  ];
}
var PASSING_REFUSALS = /* @__PURE__ */ new Set(["rate_limited", "unavailable", "disabled", "too_many_subscriptions"]);
function transportUrls(options) {
  const loc = globalThis.location;
  const ws = options.url ?? (loc ? `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws` : void 0);
  if (!ws) throw new Error("Chouquette: `url` is required outside a page");
  const http = (path) => {
    const u = new URL(ws, loc?.href);
    u.protocol = u.protocol === "wss:" ? "https:" : u.protocol === "ws:" ? "http:" : u.protocol;
    u.pathname = /\/ws\/?$/.test(u.pathname) ? u.pathname.replace(/ws\/?$/, path) : `${u.pathname.replace(/\/$/, "")}/${path}`;
    return u.toString();
  };
  return { websocket: ws, sse: options.sseUrl ?? http("sse"), poll: options.pollUrl ?? http("poll") };
}
function notificationsAckUrl(options) {
  if (options.notificationsAckUrl) return options.notificationsAckUrl;
  const poll = new URL(transportUrls({ url: options.url }).poll);
  poll.pathname = poll.pathname.replace(/poll$/, "notifications/ack");
  return poll.toString();
}
var Chouquette = class extends Emitter {
  constructor(options = {}) {
    super();
    this.options = options;
    /** This client's id among the tabs sharing a connection. */
    this.tab = uuid();
    /** The latest state event. */
    this.state = { state: "closed" };
    this.seen = new ResumeState();
    this.started = false;
    this.closed = false;
    this.refreshing = false;
    this.cleanup = [];
    this.connectRefreshing = false;
    this.connectSeq = 0;
    this.callSeq = 0;
    this.pending = /* @__PURE__ */ new Map();
    this.handlers = /* @__PURE__ */ new Map();
    this.lattices = /* @__PURE__ */ new Map();
    /** Who is present on each presence channel (bounded by the gateway: 10,000 names per channel, channels of the subscription). */
    this.presence = /* @__PURE__ */ new Map();
    /** With `idle`: false once the page is idle (the connection is closed until it wakes). */
    this.awake = true;
    /** Notifications already emitted: one delivered again (at-least-once) is not emitted twice. */
    this.notifications = new SeenNotifications();
    if (!options.subscription && !options.getSubscription) {
      throw new Error("Chouquette: give `subscription` or `getSubscription`");
    }
    if (options.getConnectToken && options.shared) {
      throw new Error("Chouquette: `getConnectToken` (an identity) cannot be used with `shared`");
    }
    this.refreshBackoff = new Backoff(options.backoff ?? DEFAULT_BACKOFF);
    this.connectBackoff = new Backoff(options.backoff ?? DEFAULT_BACKOFF);
  }
  /**
   * Calls `method` of the app's backends (the connection needs an identity:
   * `getConnectToken`, or connect auth). Resolves with the backend's
   * `result`; rejects with a `CallError` carrying the error's `code`. A call
   * pending when the connection closes is rejected `disconnected`, not
   * retried (the backend may have run it: retry yourself if it is
   * idempotent).
   */
  call(method, args = [], kwargs = {}, options = {}) {
    return new Promise((resolve, reject) => {
      if (this.pending.size >= MAX_PENDING_CALLS) {
        return reject(new CallError("too_many_calls", `${MAX_PENDING_CALLS} calls are already waiting for their answer`));
      }
      const id = `c${++this.callSeq}`;
      const sent = this.port?.send?.({ class: "call", uuid: `${SIDE_PREFIX}call-${id}`, id, method, args, kwargs });
      if (!sent) {
        return reject(new CallError("not_connected", "no open WebSocket connection to call on (calls need one: not SSE, long-polling or shared)"));
      }
      const timeout = options.timeout ?? DEFAULT_CALL_TIMEOUT;
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) reject(new CallError("timeout", `no answer to ${method} within ${timeout} ms`));
      }, timeout);
      this.pending.set(id, { resolve, reject, timer });
    });
  }
  /**
   * Sends a user-to-user message (docs/notifications.md, "User-to-user
   * messages"): each recipient gets it as a `notification` with `from`, this
   * user, pending until acknowledged. The connection needs an identity whose
   * connect token's `message` claim names the recipients, over a WebSocket.
   * Resolves with the gateway's `ack` (`id`: the notification's, `recipients`:
   * how many users it reached, groups counted by their members); rejects with
   * a `CallError` carrying the gateway's code (`not_allowed`, `disabled`,
   * `too_many_recipients`, `rate_limited`, `bad_message`: nothing was sent) or
   * the client's (`not_connected`, `timeout`, `disconnected`: it may have been
   * sent; not retried, since a retry would notify the recipients twice).
   */
  sendMessage(message, options = {}) {
    return new Promise((resolve, reject) => {
      if (this.pending.size >= MAX_PENDING_CALLS) {
        return reject(new CallError("too_many_calls", `${MAX_PENDING_CALLS} calls and messages are already waiting for their answer`));
      }
      const id = `m${++this.callSeq}`;
      const sent = this.port?.send?.({ ...message, class: "message", uuid: `${MESSAGE_PREFIX}${id}` });
      if (!sent) {
        return reject(new CallError("not_connected", "no open WebSocket connection to send the message on (messages need one: not SSE, long-polling or shared)"));
      }
      const timeout = options.timeout ?? DEFAULT_CALL_TIMEOUT;
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) reject(new CallError("timeout", `no answer to the message within ${timeout} ms`));
      }, timeout);
      this.pending.set(id, { resolve, reject, timer });
    });
  }
  /**
   * Answers the backend's calls of `method` (`POST /api/v1/calls`, WebSocket
   * only): what `handler` returns (or resolves to) is the `result`; what it
   * throws is an `error` with its `code` (when valid, else `client_error`)
   * and message. Returns a function that removes the handler. A call of a
   * method without handler is answered `error` `unknown_method`.
   */
  onCall(method, handler) {
    this.handlers.set(method, handler);
    return () => {
      if (this.handlers.get(method) === handler) this.handlers.delete(method);
    };
  }
  /**
   * Follows the lattice `namespace` (the connection needs an identity): a
   * view merging the gateway's full state and changes, subscribed again
   * after every reconnection. The same view for the same namespace;
   * at most MAX_LATTICES.
   */
  lattice(namespace) {
    const known = this.lattices.get(namespace);
    if (known) return known;
    if (this.lattices.size >= MAX_LATTICES) throw new Error(`Chouquette: at most ${MAX_LATTICES} lattices`);
    const view = new LatticeView(namespace, (v) => {
      if (this.lattices.get(namespace) !== v) return;
      this.lattices.delete(namespace);
      this.port?.send?.({ class: "lattice_unsubscribe", namespace, uuid: `${SIDE_PREFIX}lattice:${namespace}` });
    });
    this.lattices.set(namespace, view);
    this.port?.send?.(this.latticeSubscribe(namespace));
    return view;
  }
  /** Who is present on `channel` (a presence channel of the subscription), sorted. */
  present(channel) {
    return [...this.presence.get(channel) ?? []].sort();
  }
  /**
   * Acknowledges notifications: a `notification_ack` message over a
   * WebSocket; over SSE or long-polling, `POST /notifications/ack` with the
   * connect token. Rejects with a `CallError` when it could not be sent.
   */
  async ackNotifications(ids, fetchFn = (...a) => globalThis.fetch(...a)) {
    if (!ids.length) return;
    if (this.port?.transport?.() === "websocket") {
      if (this.port.send?.({ class: "notification_ack", ids, uuid: `${SIDE_PREFIX}ack-${++this.callSeq}` })) return;
    }
    const token = this.connectToken?.token;
    if (!token) throw new CallError("not_connected", "acknowledging over SSE or long-polling needs a connect token (getConnectToken)");
    const res = await fetchFn(...notificationAckRequest(notificationsAckUrl(this.options), token, ids));
    if (!res.ok) {
      const body = await res.json().catch(() => ({}));
      throw new CallError(typeof body.code === "string" ? body.code : `http_${res.status}`, String(body.message ?? `HTTP ${res.status}`));
    }
  }
  /** Fetches the subscription (if needed) and connects; resolves once it is sent on its way. */
  async connect() {
    if (this.started) return;
    this.started = true;
    this.state = { state: "connecting" };
    this.emit("state", this.state);
    const message = await this.obtain();
    if (!message || this.closed) return;
    this.message = message;
    if (this.options.getConnectToken) await this.refreshConnect();
    if (this.closed) return;
    this.port = this.makePort();
    this.watchPage();
    this.port.put(this.request(), this.visible());
  }
  /** Closes the connection (or leaves the shared one) for good. */
  close() {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.connectTimer);
    this.failCalls("the client was closed");
    for (const undo of this.cleanup) undo();
    this.port?.close();
    this.state = { state: "closed", reason: "closed" };
    this.emit("state", this.state);
  }
  /** Where each channel stands (for debugging and tests). */
  since(channel) {
    return this.seen.since(channel);
  }
  // Messages from the hub (this tab's, or the leader tab's)
  deliver(m) {
    if (this.closed) return;
    if (typeof m.ref === "string" && m.ref.startsWith(MESSAGE_PREFIX) && (m.class === "ack" || m.class === "error")) {
      this.messageAnswered(m, m.ref.slice(MESSAGE_PREFIX.length));
      return;
    }
    if (typeof m.ref === "string" && m.ref.startsWith(SIDE_PREFIX) && m.class !== "lattice" && m.id === void 0) {
      this.sideReply(m, m.ref.slice(SIDE_PREFIX.length));
      return;
    }
    switch (m.class) {
      case "result":
      case "call":
        return m.class === "result" ? this.answered(m) : this.incomingCall(m);
      case "connected": {
        const groups = Array.isArray(m.groups) ? m.groups : void 0;
        this.identity = { app_id: String(m.app_id ?? ""), user: typeof m.user === "string" ? m.user : void 0, groups, via: "connect_auth" };
        this.emit("connected", this.identity);
        return;
      }
      case "lattice":
        this.lattices.get(String(m.namespace))?.apply(m);
        return;
      case "presence":
        return this.presenceMessage(m);
      case "message":
        this.emit("user_message", m);
        return;
      case "subscribed":
      case "unsubscribed":
        if (m.class === "unsubscribed" && typeof m.channel === "string") this.presence.delete(m.channel);
        if (typeof m.channel === "string") this.emit(m.class, m);
        return;
      case "notification":
        if (typeof m.id === "string" && !this.notifications.first(m.id)) return;
        this.emit("notification", m);
        return;
      case "notification_acked":
        if (Array.isArray(m.ids)) this.notifications.forget(m.ids.filter((id) => typeof id === "string"));
        this.emit("notification_acked", m);
        return;
      case "data": {
        const d = m;
        if (this.seen.accept(d)) this.emit(d.snapshot ? "snapshot" : "data", d);
        return;
      }
      case "ack":
      case "_position":
        this.seen.acknowledge(m);
        this.refreshBackoff.reset();
        return;
      case "reset": {
        const reason = String(m.reason ?? "");
        this.seen.reset(m.channel, reason);
        if (reason !== "shutdown") this.emit("reset", { reason, channel: m.channel, message: m });
        return;
      }
      case "error": {
        if (m.id !== void 0) return this.answered(m);
        const code = String(m.code ?? "error");
        if (code === "token_expired" && m.channel === void 0 && this.options.getConnectToken) {
          this.identity = void 0;
          void this.refreshConnect();
          return;
        }
        if (code === "token_expired" && this.options.getSubscription) {
          this.refresh();
          return;
        }
        const failures = Array.isArray(m.failures) ? { failures: m.failures } : {};
        this.emit("error", { code, message: String(m.message ?? ""), channel: m.channel, ref: m.ref, ...failures });
        return;
      }
      default:
        this.emit("message", m);
    }
  }
  /** A reply to one of the client's own messages (`connect`, `lattice_subscribe`, `notification_ack`). */
  sideReply(m, what) {
    const code = String(m.code ?? "error");
    if (what.startsWith("connect-")) {
      if (m.class === "ack") {
        const claims = tokenClaims(this.connectToken?.token ?? "") ?? {};
        const groups = Array.isArray(claims.groups) ? claims.groups : void 0;
        this.identity = { app_id: this.connectToken?.app_id ?? "", user: typeof claims.sub === "string" ? claims.sub : void 0, groups, via: "token" };
        this.connectBackoff.reset();
        this.emit("connected", this.identity);
      } else if (m.class === "error") {
        this.emit("error", { code, message: String(m.message ?? ""), ref: m.ref, about: "connect" });
        if (code === "token_expired") void this.refreshConnect();
      }
    } else if (what.startsWith("lattice:") && m.class === "error") {
      const namespace = what.slice("lattice:".length);
      this.lattices.get(namespace)?.refused(code, String(m.message ?? ""));
      this.emit("error", { code, message: String(m.message ?? ""), ref: m.ref, about: "lattice", namespace });
    } else if (m.class === "error") {
      this.emit("error", { code, message: String(m.message ?? ""), ref: m.ref });
    }
  }
  /** The answer (`result` or `error` with its `id`) to one of this client's calls. */
  answered(m) {
    const id = typeof m.id === "string" ? m.id : void 0;
    const call = id === void 0 ? void 0 : this.pending.get(id);
    if (!call || id === void 0) return;
    this.pending.delete(id);
    clearTimeout(call.timer);
    if (m.class === "result") call.resolve(m.result ?? null);
    else call.reject(new CallError(String(m.code ?? "error"), String(m.message ?? "")));
  }
  /** The gateway's answer to the message sent as `id`: its `ack`, or an `error` with the refusal's code. */
  messageAnswered(m, id) {
    const pending = this.pending.get(id);
    if (!pending) return;
    this.pending.delete(id);
    clearTimeout(pending.timer);
    if (m.class === "ack") pending.resolve({ id: String(m.id ?? ""), recipients: Number(m.recipients ?? 0) });
    else pending.reject(new CallError(String(m.code ?? "error"), String(m.message ?? "")));
  }
  /** Rejects every pending call (the connection they went on is gone). */
  failCalls(why) {
    for (const [id, call] of this.pending) {
      clearTimeout(call.timer);
      this.pending.delete(id);
      call.reject(new CallError("disconnected", `${why}: the call was not retried (the backend may have run it)`));
    }
  }
  /** A backend's call: the handler's result or error goes back with the call's `id`. */
  incomingCall(m) {
    if (typeof m.id !== "string" || typeof m.method !== "string") return;
    const call = {
      id: m.id,
      method: m.method,
      args: Array.isArray(m.args) ? m.args : [],
      kwargs: m.kwargs && typeof m.kwargs === "object" ? m.kwargs : {}
    };
    const reply = (body) => this.port?.send?.({ ...body, id: call.id, uuid: `${SIDE_PREFIX}answer-${++this.callSeq}` });
    const handler = this.handlers.get(call.method);
    if (!handler) {
      reply({ class: "error", code: "unknown_method", message: `no handler for ${call.method}` });
      return;
    }
    Promise.resolve().then(() => handler(call.args, call.kwargs, call)).then(
      (result) => reply({ class: "result", result: result === void 0 ? null : result }),
      (e) => {
        const err = e;
        const code = typeof err?.code === "string" && ANSWER_CODE.test(err.code) ? err.code : "client_error";
        reply({ class: "error", code, message: String(err?.message ?? e).slice(0, 1024) });
      }
    );
  }
  /** `present` replaces a channel's set; `joined` and `left` update it (as set operations). */
  presenceMessage(m) {
    if (typeof m.channel !== "string") return;
    const names = (v) => Array.isArray(v) ? v.filter((x) => typeof x === "string") : [];
    let set = this.presence.get(m.channel);
    if (Array.isArray(m.present) || !set) {
      set = new Set(names(m.present));
      this.presence.set(m.channel, set);
    }
    const joined = names(m.joined);
    const left = names(m.left);
    for (const u of joined) set.add(u);
    for (const u of left) set.delete(u);
    this.emit("presence", { channel: m.channel, present: [...set].sort(), joined, left, message: m });
  }
  /** Fetches a connect token and sends `connect` on the open connection (if any); schedules the next before `exp`. */
  async refreshConnect() {
    const get = this.options.getConnectToken;
    if (!get || this.connectRefreshing || this.closed) return;
    this.connectRefreshing = true;
    clearTimeout(this.connectTimer);
    try {
      const t = await get();
      if (!t || typeof t.token !== "string" || typeof t.app_id !== "string") throw new Error("getConnectToken did not give {app_id, token}");
      this.connectToken = t;
      this.port?.send?.(this.connectMessage());
      const exp = tokenClaims(t.token)?.exp;
      if (typeof exp === "number") {
        const left = exp * 1e3 - Date.now();
        const delay = Math.min(2 ** 31 - 1, Math.max(1e3, left - Math.min(3e4, left / 10)));
        this.connectTimer = setTimeout(() => void this.refreshConnect(), delay);
      }
    } catch (e) {
      this.emit("error", { code: "connect_failed", message: String(e?.message ?? e), about: "connect" });
      this.connectTimer = setTimeout(() => void this.refreshConnect(), this.connectBackoff.next());
    } finally {
      this.connectRefreshing = false;
    }
  }
  connectMessage() {
    const t = this.connectToken;
    return { class: "connect", app_id: t.app_id, token: t.token, uuid: `${SIDE_PREFIX}connect-${++this.connectSeq}` };
  }
  latticeSubscribe(namespace) {
    return { class: "lattice_subscribe", namespace, uuid: `${SIDE_PREFIX}lattice:${namespace}` };
  }
  /** What the client sends on each WebSocket opening: `connect` before subscribing, lattices after. */
  greeting() {
    return {
      before: this.connectToken ? [this.connectMessage()] : [],
      after: [...this.lattices.keys()].map((ns) => this.latticeSubscribe(ns))
    };
  }
  setState(s) {
    if (s.state !== "open") {
      if (s.state !== "connecting" || this.state.state !== "connecting") this.identity = void 0;
      if (this.pending.size && s.state !== "connecting") this.failCalls(`the connection closed (${s.reason ?? s.state})`);
    }
    if (s.state === "refused" && !this.closed) s = this.afterRefusal(s);
    this.state = s;
    this.emit("state", s);
  }
  /**
   * Every channel was refused. With `getSubscription`, ask the backend again
   * after a backoff delay (a refused token is usually one the backend must
   * replace: rotated secret, revoked rights); with a fixed subscription, try
   * it again only when the refusal may pass.
   */
  afterRefusal(s) {
    const { getSubscription } = this.options;
    if (!getSubscription && !PASSING_REFUSALS.has(s.reason ?? "")) return s;
    clearTimeout(this.retryTimer);
    const delay = this.refreshBackoff.next();
    this.retryTimer = setTimeout(() => {
      if (this.closed || this.refreshing) return;
      this.refreshing = true;
      void this.renew();
    }, delay);
    return { ...s, attempt: this.refreshBackoff.attempt, delay };
  }
  resubscribe() {
    if (this.message && !this.closed) this.port?.put(this.request(), this.visible());
  }
  // Internals
  /** The subscription to send: the backend's, with `since` for every channel this client has a position for. */
  request() {
    const m = this.message;
    const channels = {};
    for (const [name, c] of Object.entries(m.channels)) {
      const since = this.seen.since(name);
      const { since: _old, ...rest } = c;
      channels[name] = since ? { ...rest, since } : rest;
    }
    return { ...m, channels };
  }
  /** The subscribe message, from the options or the backend (retried with backoff). */
  async obtain() {
    const { subscription, getSubscription } = this.options;
    if (!getSubscription) return subscription;
    for (; ; ) {
      if (this.closed) return void 0;
      try {
        const m = await getSubscription();
        if (validSubscribe(m)) return m;
        throw new Error("getSubscription did not give a subscribe message");
      } catch (e) {
        this.emit("error", { code: "subscription_failed", message: String(e?.message ?? e) });
        await new Promise((r) => setTimeout(r, this.refreshBackoff.next()));
      }
    }
  }
  /** A token expired: get a fresh subscription and resume with `since`. */
  refresh() {
    if (this.refreshing || this.closed) return;
    this.refreshing = true;
    const delay = this.refreshBackoff.attempt ? this.refreshBackoff.next() : (this.refreshBackoff.next(), 0);
    setTimeout(() => void this.renew(), delay);
  }
  /**
   * Gets the subscription again (from the backend, or the fixed one) and
   * sends it, with `since` for every channel this client has a position
   * for. Called with `refreshing` set; clears it.
   */
  async renew() {
    const m = await this.obtain();
    this.refreshing = false;
    if (!m || this.closed) return;
    this.message = m;
    this.port?.put(this.request(), this.visible());
  }
  makePort() {
    const o = this.options;
    const urls = transportUrls(o);
    const order = o.transports?.length ? o.transports : ["websocket", "sse", "poll"];
    const hub = {
      factories: {
        websocket: websocketTransport(urls.websocket),
        sse: sseTransport(urls.sse, o.sseIdleTimeout),
        poll: pollTransport(urls.poll, o.pollTimeout)
      },
      order,
      fallbackAfter: o.fallbackAfter ?? 2,
      backoff: o.backoff ?? DEFAULT_BACKOFF,
      hiddenTimeout: o.hiddenTimeout,
      idleManaged: !!o.idle,
      pollUrl: urls.poll,
      refreshable: !!o.getSubscription,
      greeting: () => this.greeting()
    };
    const owner = {
      tab: this.tab,
      deliver: (m) => this.deliver(m),
      state: (s) => this.setState(s),
      resubscribe: () => this.resubscribe()
    };
    if (o.shared && typeof BroadcastChannel !== "undefined") {
      const name = typeof o.shared === "string" ? o.shared : "default";
      return new SharedPort(name, hub, owner);
    }
    return new LocalPort(hub, owner);
  }
  /** Whether the page counts as in use: visible, or (with `idle`) not idle. */
  visible() {
    if (this.options.idle) return this.awake;
    return typeof document === "undefined" || document.visibilityState !== "hidden";
  }
  /**
   * With `idle`: the page falls asleep when hidden `hiddenAfter` ms or
   * without user activity `inactiveAfter` ms (the connection closes, state
   * `closed` with reason `hidden` or `inactive`), and wakes at the next
   * activity or when shown (it reconnects and resumes every channel with
   * `since`: no event is lost meanwhile, within the channel's history).
   */
  watchIdle() {
    const { hiddenAfter = this.options.hiddenTimeout, inactiveAfter } = this.options.idle ?? {};
    let lastActivity = Date.now();
    let hiddenTimer;
    let inactiveTimer;
    const pageHidden = () => document.visibilityState === "hidden";
    const sleep = (reason) => {
      if (!this.awake || this.closed) return;
      this.awake = false;
      this.port?.visibility(false, reason);
    };
    const checkInactive = () => {
      clearTimeout(inactiveTimer);
      if (!inactiveAfter || inactiveAfter <= 0) return;
      const left = lastActivity + inactiveAfter - Date.now();
      if (left <= 0) sleep("inactive");
      else inactiveTimer = setTimeout(checkInactive, left);
    };
    const activity = () => {
      lastActivity = Date.now();
      if (pageHidden()) return;
      clearTimeout(hiddenTimer);
      hiddenTimer = void 0;
      if (!this.awake && !this.closed) {
        this.awake = true;
        this.port?.visibility(true);
      }
      if (!inactiveTimer) checkInactive();
    };
    const onVisibility = () => {
      if (!pageHidden()) return activity();
      clearTimeout(hiddenTimer);
      if (hiddenAfter !== void 0 && hiddenAfter >= 0) hiddenTimer = setTimeout(() => sleep("hidden"), hiddenAfter);
    };
    const events = ["pointerdown", "pointermove", "keydown", "wheel", "touchstart", "focus"];
    for (const e of events) addEventListener(e, activity, { passive: true, capture: true });
    document.addEventListener("visibilitychange", onVisibility);
    this.cleanup.push(() => {
      clearTimeout(hiddenTimer);
      clearTimeout(inactiveTimer);
      for (const e of events) removeEventListener(e, activity, { capture: true });
      document.removeEventListener("visibilitychange", onVisibility);
    });
    onVisibility();
    checkInactive();
  }
  watchPage() {
    if (typeof document === "undefined" || typeof addEventListener === "undefined") return;
    if (this.options.idle) this.watchIdle();
    const onVisibility = () => !this.options.idle && this.port?.visibility(this.visible());
    const onHide = (e) => {
      if (!e.persisted && this.options.shared) this.close();
    };
    document.addEventListener("visibilitychange", onVisibility);
    addEventListener("pagehide", onHide);
    this.cleanup.push(
      () => document.removeEventListener("visibilitychange", onVisibility),
      () => removeEventListener("pagehide", onHide)
    );
  }
};
export {
  CallError,
  Chouquette,
  Emitter,
  LatticeView,
  MAX_LATTICES,
  MAX_PENDING_CALLS,
  MAX_SEEN_NOTIFICATIONS,
  SeenNotifications,
  canonicalJson,
  mergeMap,
  mergeValue,
  notificationAckRequest,
  notificationsAckUrl,
  transportUrls
};
