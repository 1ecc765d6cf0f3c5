/** The application's side: one subscription, its events, and no duplicates. */

import { Backoff, DEFAULT_BACKOFF } from './backoff';
import { SIDE_PREFIX } from './connection';
import { Emitter } from './emitter';
import type { HubOptions } from './hub';
import { LatticeView } from './lattice';
import { SeenNotifications } from './notifications';
import { ResumeState } from './resume';
import { LocalPort, SharedPort, type Port, type PortOwner } from './shared';
import { tokenClaims, uuid, validSubscribe } from './subscription';
import { pollTransport } from './transports/poll';
import { sseTransport } from './transports/sse';
import { websocketTransport } from './transports/ws';
import type {
  CallHandler,
  CallOptions,
  ChannelRequest,
  ConnectedEvent,
  ConnectToken,
  IncomingCall,
  ChouquetteOptions,
  MessageSent,
  OutgoingMessage,
  ClientEvents,
  DataMessage,
  ErrorEvent,
  ServerMessage,
  StateEvent,
  SubscribeMessage,
  TransportName,
} from './types';

/** Calls waiting for their answer, at most (a runaway loop of calls fails fast instead of growing the map). */
export const MAX_PENDING_CALLS = 1000;
/** Lattice namespaces one client follows, at most: the gateway's own limit per connection. */
export const MAX_LATTICES = 16;
/** The default `timeout` of `call`, in ms. */
export const DEFAULT_CALL_TIMEOUT = 30_000;

/** The `uuid` prefix of the client's user-to-user messages (`sendMessage`): their answers settle its promises. */
const MESSAGE_PREFIX = `${SIDE_PREFIX}message-`;

/**
 * A failed `call` (or `sendMessage`, `ackNotifications`): `code` is the gateway's or the
 * backend's error code (`not_allowed`, `backend_timeout`, the backend's own...),
 * or the client's: `timeout` (no answer in time), `disconnected` (the
 * connection closed first: calls are not retried, the backend may or may
 * not have run it), `not_connected` (no open WebSocket to send it on),
 * `too_many_calls` (MAX_PENDING_CALLS pending).
 */
export class CallError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = 'CallError';
  }
}

/** An `error` code a client may answer a backend's call with: 1 to 64 bytes of letters, digits, `_.-`. */
const ANSWER_CODE = /^[A-Za-z0-9_.-]{1,64}$/;

/**
 * The request acknowledging notifications over SSE or long-polling:
 * `POST <url>` with the connect token as bearer and `{"ids": [...]}`.
 */
export function notificationAckRequest(url: string, token: string, ids: string[]): [string, RequestInit] {
  return [
    new URL(url, globalThis.location?.href).toString(),
    {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ ids }),
      cache: 'no-store',
    },
  ];
}

/**
 * Refusals that may pass with time: with a fixed `subscription`, the client
 * tries again (with backoff) after these; other refusals are final.
 */
const PASSING_REFUSALS = new Set(['rate_limited', 'unavailable', 'disabled', 'too_many_subscriptions']);

/** The URLs of the three transports, from the WebSocket one. */
export function transportUrls(options: Pick<ChouquetteOptions, 'url' | 'sseUrl' | 'pollUrl'>): Record<TransportName, string> {
  const loc = globalThis.location;
  const ws = options.url ?? (loc ? `${loc.protocol === 'https:' ? 'wss' : 'ws'}://${loc.host}/ws` : undefined);
  if (!ws) throw new Error('Chouquette: `url` is required outside a page');
  const http = (path: string) => {
    const u = new URL(ws, loc?.href);
    u.protocol = u.protocol === 'wss:' ? 'https:' : u.protocol === 'ws:' ? 'http:' : u.protocol;
    u.pathname = /\/ws\/?$/.test(u.pathname) ? u.pathname.replace(/ws\/?$/, path) : `${u.pathname.replace(/\/$/, '')}/${path}`;
    return u.toString();
  };
  return { websocket: ws, sse: options.sseUrl ?? http('sse'), poll: options.pollUrl ?? http('poll') };
}

/** The URL of `POST /notifications/ack`, from the WebSocket one (or the option). */
export function notificationsAckUrl(options: Pick<ChouquetteOptions, 'url' | 'notificationsAckUrl'>): string {
  if (options.notificationsAckUrl) return options.notificationsAckUrl;
  const poll = new URL(transportUrls({ url: options.url }).poll);
  poll.pathname = poll.pathname.replace(/poll$/, 'notifications/ack');
  return poll.toString();
}

export class Chouquette extends Emitter<ClientEvents> {
  /** This client's id among the tabs sharing a connection. */
  readonly tab = uuid();
  /** The latest state event. */
  state: StateEvent = { state: 'closed' };
  private seen = new ResumeState();
  private message?: SubscribeMessage;
  private port?: Port;
  private started = false;
  private closed = false;
  private refreshing = false;
  private refreshBackoff: Backoff;
  private retryTimer?: ReturnType<typeof setTimeout>;
  private cleanup: (() => void)[] = [];
  /** The connect token in use (`getConnectToken`). */
  private connectToken?: ConnectToken;
  private connectTimer?: ReturnType<typeof setTimeout>;
  private connectRefreshing = false;
  private connectBackoff: Backoff;
  private connectSeq = 0;
  /** Who the open connection is, once the gateway said so (`connected`, or the `ack` of `connect`). */
  identity?: ConnectedEvent;
  private callSeq = 0;
  private pending = new Map<string, { resolve: (v: unknown) => void; reject: (e: CallError) => void; timer: ReturnType<typeof setTimeout> }>();
  private handlers = new Map<string, CallHandler>();
  private lattices = new Map<string, LatticeView>();
  /** Who is present on each presence channel (bounded by the gateway: 10,000 names per channel, channels of the subscription). */
  private presence = new Map<string, Set<string>>();
  /** With `idle`: false once the page is idle (the connection is closed until it wakes). */
  private awake = true;
  /** Notifications already emitted: one delivered again (at-least-once) is not emitted twice. */
  private notifications = new SeenNotifications();

  constructor(private options: ChouquetteOptions = {}) {
    super();
    if (!options.subscription && !options.getSubscription) {
      throw new Error('Chouquette: give `subscription` or `getSubscription`');
    }
    if (options.getConnectToken && options.shared) {
      throw new Error('Chouquette: `getConnectToken` (an identity) cannot be used with `shared`');
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
  call<T = unknown>(method: string, args: unknown[] = [], kwargs: Record<string, unknown> = {}, options: CallOptions = {}): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      if (this.pending.size >= MAX_PENDING_CALLS) {
        return reject(new CallError('too_many_calls', `${MAX_PENDING_CALLS} calls are already waiting for their answer`));
      }
      const id = `c${++this.callSeq}`;
      const sent = this.port?.send?.({ class: 'call', uuid: `${SIDE_PREFIX}call-${id}`, id, method, args, kwargs });
      if (!sent) {
        return reject(new CallError('not_connected', 'no open WebSocket connection to call on (calls need one: not SSE, long-polling or shared)'));
      }
      const timeout = options.timeout ?? DEFAULT_CALL_TIMEOUT;
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) reject(new CallError('timeout', `no answer to ${method} within ${timeout} ms`));
      }, timeout);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
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
  sendMessage(message: OutgoingMessage, options: CallOptions = {}): Promise<MessageSent> {
    return new Promise<MessageSent>((resolve, reject) => {
      if (this.pending.size >= MAX_PENDING_CALLS) {
        return reject(new CallError('too_many_calls', `${MAX_PENDING_CALLS} calls and messages are already waiting for their answer`));
      }
      const id = `m${++this.callSeq}`;
      const sent = this.port?.send?.({ ...message, class: 'message', uuid: `${MESSAGE_PREFIX}${id}` });
      if (!sent) {
        return reject(new CallError('not_connected', 'no open WebSocket connection to send the message on (messages need one: not SSE, long-polling or shared)'));
      }
      const timeout = options.timeout ?? DEFAULT_CALL_TIMEOUT;
      const timer = setTimeout(() => {
        if (this.pending.delete(id)) reject(new CallError('timeout', `no answer to the message within ${timeout} ms`));
      }, timeout);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
    });
  }

  /**
   * Answers the backend's calls of `method` (`POST /api/v1/calls`, WebSocket
   * only): what `handler` returns (or resolves to) is the `result`; what it
   * throws is an `error` with its `code` (when valid, else `client_error`)
   * and message. Returns a function that removes the handler. A call of a
   * method without handler is answered `error` `unknown_method`.
   */
  onCall(method: string, handler: CallHandler): () => void {
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
  lattice(namespace: string): LatticeView {
    const known = this.lattices.get(namespace);
    if (known) return known;
    if (this.lattices.size >= MAX_LATTICES) throw new Error(`Chouquette: at most ${MAX_LATTICES} lattices`);
    const view = new LatticeView(namespace, (v) => {
      if (this.lattices.get(namespace) !== v) return;
      this.lattices.delete(namespace);
      this.port?.send?.({ class: 'lattice_unsubscribe', namespace, uuid: `${SIDE_PREFIX}lattice:${namespace}` });
    });
    this.lattices.set(namespace, view);
    this.port?.send?.(this.latticeSubscribe(namespace));
    return view;
  }

  /** Who is present on `channel` (a presence channel of the subscription), sorted. */
  present(channel: string): string[] {
    return [...(this.presence.get(channel) ?? [])].sort();
  }

  /**
   * Acknowledges notifications: a `notification_ack` message over a
   * WebSocket; over SSE or long-polling, `POST /notifications/ack` with the
   * connect token. Rejects with a `CallError` when it could not be sent.
   */
  async ackNotifications(ids: string[], fetchFn: typeof fetch = (...a) => globalThis.fetch(...a)): Promise<void> {
    if (!ids.length) return;
    if (this.port?.transport?.() === 'websocket') {
      if (this.port.send?.({ class: 'notification_ack', ids, uuid: `${SIDE_PREFIX}ack-${++this.callSeq}` })) return;
    }
    const token = this.connectToken?.token;
    if (!token) throw new CallError('not_connected', 'acknowledging over SSE or long-polling needs a connect token (getConnectToken)');
    const res = await fetchFn(...notificationAckRequest(notificationsAckUrl(this.options), token, ids));
    if (!res.ok) {
      const body = (await res.json().catch(() => ({}))) as { code?: unknown; message?: unknown };
      throw new CallError(typeof body.code === 'string' ? body.code : `http_${res.status}`, String(body.message ?? `HTTP ${res.status}`));
    }
  }

  /** Fetches the subscription (if needed) and connects; resolves once it is sent on its way. */
  async connect(): Promise<void> {
    if (this.started) return;
    this.started = true;
    this.state = { state: 'connecting' };
    this.emit('state', this.state);
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
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.connectTimer);
    this.failCalls('the client was closed');
    for (const undo of this.cleanup) undo();
    this.port?.close();
    this.state = { state: 'closed', reason: 'closed' };
    this.emit('state', this.state);
  }

  /** Where each channel stands (for debugging and tests). */
  since(channel: string) {
    return this.seen.since(channel);
  }

  // Messages from the hub (this tab's, or the leader tab's)

  private deliver(m: ServerMessage): void {
    if (this.closed) return;
    if (typeof m.ref === 'string' && m.ref.startsWith(MESSAGE_PREFIX) && (m.class === 'ack' || m.class === 'error')) {
      this.messageAnswered(m, m.ref.slice(MESSAGE_PREFIX.length));
      return;
    }
    if (typeof m.ref === 'string' && m.ref.startsWith(SIDE_PREFIX) && m.class !== 'lattice' && m.id === undefined) {
      this.sideReply(m, m.ref.slice(SIDE_PREFIX.length));
      return;
    }
    switch (m.class) {
      case 'result':
      case 'call':
        return m.class === 'result' ? this.answered(m) : this.incomingCall(m);
      case 'connected': {
        const groups = Array.isArray(m.groups) ? (m.groups as string[]) : undefined;
        this.identity = { app_id: String(m.app_id ?? ''), user: typeof m.user === 'string' ? m.user : undefined, groups, via: 'connect_auth' };
        this.emit('connected', this.identity);
        return;
      }
      case 'lattice':
        this.lattices.get(String(m.namespace))?.apply(m);
        return;
      case 'presence':
        return this.presenceMessage(m);
      case 'message':
        this.emit('user_message', m as never);
        return;
      case 'subscribed':
      case 'unsubscribed':
        if (m.class === 'unsubscribed' && typeof m.channel === 'string') this.presence.delete(m.channel);
        if (typeof m.channel === 'string') this.emit(m.class, m as never);
        return;
      case 'notification':
        // Delivered again at each connect until acknowledged: emitted once.
        if (typeof m.id === 'string' && !this.notifications.first(m.id)) return;
        this.emit('notification', m as never);
        return;
      case 'notification_acked':
        if (Array.isArray(m.ids)) this.notifications.forget(m.ids.filter((id): id is string => typeof id === 'string'));
        this.emit('notification_acked', m as never);
        return;
      case 'data': {
        const d = m as DataMessage;
        if (this.seen.accept(d)) this.emit(d.snapshot ? 'snapshot' : 'data', d);
        return;
      }
      case 'ack':
      case '_position':
        this.seen.acknowledge(m);
        // The gateway took the subscription (an ack, or a cursor naming its channels).
        this.refreshBackoff.reset();
        return;
      case 'reset': {
        const reason = String(m.reason ?? '');
        this.seen.reset(m.channel, reason);
        // `shutdown` is no loss: the connection resumes by itself (see the `state` event).
        if (reason !== 'shutdown') this.emit('reset', { reason, channel: m.channel, message: m });
        return;
      }
      case 'error': {
        if (m.id !== undefined) return this.answered(m);
        const code = String(m.code ?? 'error');
        if (code === 'token_expired' && m.channel === undefined && this.options.getConnectToken) {
          // The identity expired (a subscription's expiry names its channel): connect again.
          this.identity = undefined;
          void this.refreshConnect();
          return;
        }
        if (code === 'token_expired' && this.options.getSubscription) {
          this.refresh();
          return;
        }
        const failures = Array.isArray(m.failures) ? { failures: m.failures as ErrorEvent['failures'] } : {};
        this.emit('error', { code, message: String(m.message ?? ''), channel: m.channel, ref: m.ref, ...failures });
        return;
      }
      default:
        this.emit('message', m);
    }
  }

  /** A reply to one of the client's own messages (`connect`, `lattice_subscribe`, `notification_ack`). */
  private sideReply(m: ServerMessage, what: string): void {
    const code = String(m.code ?? 'error');
    if (what.startsWith('connect-')) {
      if (m.class === 'ack') {
        const claims = tokenClaims(this.connectToken?.token ?? '') ?? {};
        const groups = Array.isArray(claims.groups) ? (claims.groups as string[]) : undefined;
        this.identity = { app_id: this.connectToken?.app_id ?? '', user: typeof claims.sub === 'string' ? claims.sub : undefined, groups, via: 'token' };
        this.connectBackoff.reset();
        this.emit('connected', this.identity);
      } else if (m.class === 'error') {
        this.emit('error', { code, message: String(m.message ?? ''), ref: m.ref, about: 'connect' });
        // An expired token (clock skew, a slow tab): fetch another one.
        if (code === 'token_expired') void this.refreshConnect();
      }
    } else if (what.startsWith('lattice:') && m.class === 'error') {
      const namespace = what.slice('lattice:'.length);
      this.lattices.get(namespace)?.refused(code, String(m.message ?? ''));
      this.emit('error', { code, message: String(m.message ?? ''), ref: m.ref, about: 'lattice', namespace });
    } else if (m.class === 'error') {
      this.emit('error', { code, message: String(m.message ?? ''), ref: m.ref });
    }
  }

  /** The answer (`result` or `error` with its `id`) to one of this client's calls. */
  private answered(m: ServerMessage): void {
    const id = typeof m.id === 'string' ? m.id : undefined;
    const call = id === undefined ? undefined : this.pending.get(id);
    if (!call || id === undefined) return;
    this.pending.delete(id);
    clearTimeout(call.timer);
    if (m.class === 'result') call.resolve(m.result ?? null);
    else call.reject(new CallError(String(m.code ?? 'error'), String(m.message ?? '')));
  }

  /** The gateway's answer to the message sent as `id`: its `ack`, or an `error` with the refusal's code. */
  private messageAnswered(m: ServerMessage, id: string): void {
    const pending = this.pending.get(id);
    if (!pending) return;
    this.pending.delete(id);
    clearTimeout(pending.timer);
    if (m.class === 'ack') pending.resolve({ id: String(m.id ?? ''), recipients: Number(m.recipients ?? 0) } satisfies MessageSent);
    else pending.reject(new CallError(String(m.code ?? 'error'), String(m.message ?? '')));
  }

  /** Rejects every pending call (the connection they went on is gone). */
  private failCalls(why: string): void {
    for (const [id, call] of this.pending) {
      clearTimeout(call.timer);
      this.pending.delete(id);
      call.reject(new CallError('disconnected', `${why}: the call was not retried (the backend may have run it)`));
    }
  }

  /** A backend's call: the handler's result or error goes back with the call's `id`. */
  private incomingCall(m: ServerMessage): void {
    if (typeof m.id !== 'string' || typeof m.method !== 'string') return;
    const call: IncomingCall = {
      id: m.id,
      method: m.method,
      args: Array.isArray(m.args) ? m.args : [],
      kwargs: m.kwargs && typeof m.kwargs === 'object' ? (m.kwargs as Record<string, unknown>) : {},
    };
    const reply = (body: object) => this.port?.send?.({ ...body, id: call.id, uuid: `${SIDE_PREFIX}answer-${++this.callSeq}` });
    const handler = this.handlers.get(call.method);
    if (!handler) {
      reply({ class: 'error', code: 'unknown_method', message: `no handler for ${call.method}` });
      return;
    }
    Promise.resolve()
      .then(() => handler(call.args, call.kwargs, call))
      .then(
        (result) => reply({ class: 'result', result: result === undefined ? null : result }),
        (e: unknown) => {
          const err = e as { code?: unknown; message?: unknown } | undefined;
          const code = typeof err?.code === 'string' && ANSWER_CODE.test(err.code) ? err.code : 'client_error';
          reply({ class: 'error', code, message: String(err?.message ?? e).slice(0, 1024) });
        },
      );
  }

  /** `present` replaces a channel's set; `joined` and `left` update it (as set operations). */
  private presenceMessage(m: ServerMessage): void {
    if (typeof m.channel !== 'string') return;
    const names = (v: unknown) => (Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : []);
    let set = this.presence.get(m.channel);
    if (Array.isArray(m.present) || !set) {
      set = new Set(names(m.present));
      this.presence.set(m.channel, set);
    }
    const joined = names(m.joined);
    const left = names(m.left);
    for (const u of joined) set.add(u);
    for (const u of left) set.delete(u);
    this.emit('presence', { channel: m.channel, present: [...set].sort(), joined, left, message: m });
  }

  /** Fetches a connect token and sends `connect` on the open connection (if any); schedules the next before `exp`. */
  private async refreshConnect(): Promise<void> {
    const get = this.options.getConnectToken;
    if (!get || this.connectRefreshing || this.closed) return;
    this.connectRefreshing = true;
    clearTimeout(this.connectTimer);
    try {
      const t = await get();
      if (!t || typeof t.token !== 'string' || typeof t.app_id !== 'string') throw new Error('getConnectToken did not give {app_id, token}');
      this.connectToken = t;
      this.port?.send?.(this.connectMessage());
      const exp = tokenClaims(t.token)?.exp;
      if (typeof exp === 'number') {
        // Before `exp`: 30 s before, or at nine tenths of a short token's life; never in a loop.
        const left = exp * 1000 - Date.now();
        // (Timers hold 2^31 - 1 ms at most: a longer one would fire at once.)
        const delay = Math.min(2 ** 31 - 1, Math.max(1000, left - Math.min(30_000, left / 10)));
        this.connectTimer = setTimeout(() => void this.refreshConnect(), delay);
      }
    } catch (e) {
      this.emit('error', { code: 'connect_failed', message: String((e as Error)?.message ?? e), about: 'connect' });
      this.connectTimer = setTimeout(() => void this.refreshConnect(), this.connectBackoff.next());
    } finally {
      this.connectRefreshing = false;
    }
  }

  private connectMessage(): object {
    const t = this.connectToken!;
    return { class: 'connect', app_id: t.app_id, token: t.token, uuid: `${SIDE_PREFIX}connect-${++this.connectSeq}` };
  }

  private latticeSubscribe(namespace: string): object {
    return { class: 'lattice_subscribe', namespace, uuid: `${SIDE_PREFIX}lattice:${namespace}` };
  }

  /** What the client sends on each WebSocket opening: `connect` before subscribing, lattices after. */
  private greeting(): { before: object[]; after: object[] } {
    return {
      before: this.connectToken ? [this.connectMessage()] : [],
      after: [...this.lattices.keys()].map((ns) => this.latticeSubscribe(ns)),
    };
  }

  private setState(s: StateEvent): void {
    if (s.state !== 'open') {
      // The connection is gone (or not yet answered): its identity and calls with it.
      if (s.state !== 'connecting' || this.state.state !== 'connecting') this.identity = undefined;
      if (this.pending.size && s.state !== 'connecting') this.failCalls(`the connection closed (${s.reason ?? s.state})`);
    }
    if (s.state === 'refused' && !this.closed) s = this.afterRefusal(s);
    this.state = s;
    this.emit('state', s);
  }

  /**
   * Every channel was refused. With `getSubscription`, ask the backend again
   * after a backoff delay (a refused token is usually one the backend must
   * replace: rotated secret, revoked rights); with a fixed subscription, try
   * it again only when the refusal may pass.
   */
  private afterRefusal(s: StateEvent): StateEvent {
    const { getSubscription } = this.options;
    if (!getSubscription && !PASSING_REFUSALS.has(s.reason ?? '')) return s;
    clearTimeout(this.retryTimer);
    const delay = this.refreshBackoff.next();
    this.retryTimer = setTimeout(() => {
      if (this.closed || this.refreshing) return;
      this.refreshing = true;
      void this.renew();
    }, delay);
    return { ...s, attempt: this.refreshBackoff.attempt, delay };
  }

  private resubscribe(): void {
    if (this.message && !this.closed) this.port?.put(this.request(), this.visible());
  }

  // Internals

  /** The subscription to send: the backend's, with `since` for every channel this client has a position for. */
  private request(): SubscribeMessage {
    const m = this.message!;
    const channels: Record<string, ChannelRequest> = {};
    for (const [name, c] of Object.entries(m.channels)) {
      const since = this.seen.since(name);
      const { since: _old, ...rest } = c;
      channels[name] = since ? { ...rest, since } : rest;
    }
    return { ...m, channels };
  }

  /** The subscribe message, from the options or the backend (retried with backoff). */
  private async obtain(): Promise<SubscribeMessage | undefined> {
    const { subscription, getSubscription } = this.options;
    if (!getSubscription) return subscription;
    for (;;) {
      if (this.closed) return undefined;
      try {
        const m = await getSubscription();
        if (validSubscribe(m)) return m;
        throw new Error('getSubscription did not give a subscribe message');
      } catch (e) {
        this.emit('error', { code: 'subscription_failed', message: String((e as Error)?.message ?? e) });
        await new Promise((r) => setTimeout(r, this.refreshBackoff.next()));
      }
    }
  }

  /** A token expired: get a fresh subscription and resume with `since`. */
  private refresh(): void {
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
  private async renew(): Promise<void> {
    const m = await this.obtain();
    this.refreshing = false;
    if (!m || this.closed) return;
    this.message = m;
    this.port?.put(this.request(), this.visible());
  }

  private makePort(): Port {
    const o = this.options;
    const urls = transportUrls(o);
    const order = o.transports?.length ? o.transports : (['websocket', 'sse', 'poll'] as TransportName[]);
    const hub: HubOptions = {
      factories: {
        websocket: websocketTransport(urls.websocket),
        sse: sseTransport(urls.sse, o.sseIdleTimeout),
        poll: pollTransport(urls.poll, o.pollTimeout),
      },
      order,
      fallbackAfter: o.fallbackAfter ?? 2,
      backoff: o.backoff ?? DEFAULT_BACKOFF,
      hiddenTimeout: o.hiddenTimeout,
      idleManaged: !!o.idle,
      pollUrl: urls.poll,
      refreshable: !!o.getSubscription,
      greeting: () => this.greeting(),
    };
    const owner: PortOwner = {
      tab: this.tab,
      deliver: (m) => this.deliver(m),
      state: (s) => this.setState(s),
      resubscribe: () => this.resubscribe(),
    };
    if (o.shared && typeof BroadcastChannel !== 'undefined') {
      const name = typeof o.shared === 'string' ? o.shared : 'default';
      return new SharedPort(name, hub, owner);
    }
    return new LocalPort(hub, owner);
  }

  /** Whether the page counts as in use: visible, or (with `idle`) not idle. */
  private visible(): boolean {
    if (this.options.idle) return this.awake;
    return typeof document === 'undefined' || document.visibilityState !== 'hidden';
  }

  /**
   * With `idle`: the page falls asleep when hidden `hiddenAfter` ms or
   * without user activity `inactiveAfter` ms (the connection closes, state
   * `closed` with reason `hidden` or `inactive`), and wakes at the next
   * activity or when shown (it reconnects and resumes every channel with
   * `since`: no event is lost meanwhile, within the channel's history).
   */
  private watchIdle(): void {
    const { hiddenAfter = this.options.hiddenTimeout, inactiveAfter } = this.options.idle ?? {};
    let lastActivity = Date.now();
    let hiddenTimer: ReturnType<typeof setTimeout> | undefined;
    let inactiveTimer: ReturnType<typeof setTimeout> | undefined;
    const pageHidden = () => document.visibilityState === 'hidden';
    const sleep = (reason: string) => {
      if (!this.awake || this.closed) return;
      this.awake = false;
      this.port?.visibility(false, reason);
    };
    const checkInactive = () => {
      clearTimeout(inactiveTimer);
      if (!inactiveAfter || inactiveAfter <= 0) return;
      const left = lastActivity + inactiveAfter - Date.now();
      if (left <= 0) sleep('inactive');
      else inactiveTimer = setTimeout(checkInactive, left);
    };
    const activity = () => {
      lastActivity = Date.now();
      if (pageHidden()) return;
      clearTimeout(hiddenTimer);
      hiddenTimer = undefined;
      if (!this.awake && !this.closed) {
        this.awake = true;
        this.port?.visibility(true);
      }
      if (!inactiveTimer) checkInactive();
    };
    const onVisibility = () => {
      if (!pageHidden()) return activity();
      clearTimeout(hiddenTimer);
      if (hiddenAfter !== undefined && hiddenAfter >= 0) hiddenTimer = setTimeout(() => sleep('hidden'), hiddenAfter);
    };
    const events = ['pointerdown', 'pointermove', 'keydown', 'wheel', 'touchstart', 'focus'];
    for (const e of events) addEventListener(e, activity, { passive: true, capture: true });
    document.addEventListener('visibilitychange', onVisibility);
    this.cleanup.push(() => {
      clearTimeout(hiddenTimer);
      clearTimeout(inactiveTimer);
      for (const e of events) removeEventListener(e, activity, { capture: true });
      document.removeEventListener('visibilitychange', onVisibility);
    });
    onVisibility();
    checkInactive();
  }

  private watchPage(): void {
    if (typeof document === 'undefined' || typeof addEventListener === 'undefined') return;
    if (this.options.idle) this.watchIdle();
    const onVisibility = () => !this.options.idle && this.port?.visibility(this.visible());
    const onHide = (e: PageTransitionEvent) => {
      // Leaving for good: let another tab take the shared connection now.
      if (!e.persisted && this.options.shared) this.close();
    };
    document.addEventListener('visibilitychange', onVisibility);
    addEventListener('pagehide', onHide);
    this.cleanup.push(
      () => document.removeEventListener('visibilitychange', onVisibility),
      () => removeEventListener('pagehide', onHide),
    );
  }
}
