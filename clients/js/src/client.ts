/** The application's side: one subscription, its events, and no duplicates. */

import { Backoff, DEFAULT_BACKOFF } from './backoff';
import { Emitter } from './emitter';
import type { HubOptions } from './hub';
import { ResumeState } from './resume';
import { LocalPort, SharedPort, type Port, type PortOwner } from './shared';
import { uuid, validSubscribe } from './subscription';
import { pollTransport } from './transports/poll';
import { sseTransport } from './transports/sse';
import { websocketTransport } from './transports/ws';
import type {
  ChannelRequest,
  ChouquetteOptions,
  ClientEvents,
  DataMessage,
  ErrorEvent,
  ServerMessage,
  StateEvent,
  SubscribeMessage,
  TransportName,
} from './types';

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

  constructor(private options: ChouquetteOptions = {}) {
    super();
    if (!options.subscription && !options.getSubscription) {
      throw new Error('Chouquette: give `subscription` or `getSubscription`');
    }
    this.refreshBackoff = new Backoff(options.backoff ?? DEFAULT_BACKOFF);
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
    this.port = this.makePort();
    this.watchPage();
    this.port.put(this.request(), this.visible());
  }

  /** Closes the connection (or leaves the shared one) for good. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    clearTimeout(this.retryTimer);
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
    switch (m.class) {
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
        const code = String(m.code ?? 'error');
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

  private setState(s: StateEvent): void {
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
      pollUrl: urls.poll,
      refreshable: !!o.getSubscription,
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

  private visible(): boolean {
    return typeof document === 'undefined' || document.visibilityState !== 'hidden';
  }

  private watchPage(): void {
    if (typeof document === 'undefined' || typeof addEventListener === 'undefined') return;
    const onVisibility = () => this.port?.visibility(this.visible());
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
