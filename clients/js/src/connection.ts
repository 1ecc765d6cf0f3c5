/**
 * One connection to the gateway for one app's channels: picks a transport,
 * reconnects with backoff, and resumes every channel from where it stood.
 */

import { Backoff } from './backoff';
import { ResumeState } from './resume';
import type { Transport, TransportFactory, TransportRequest, TransportSink } from './transports/transport';
import type { BackoffOptions, ChannelRequest, ServerMessage, StateEvent, TransportName } from './types';

/**
 * Which transport to try next. A transport that never opened is given up
 * after `threshold` failed attempts in a row, for the next one (after the
 * last, the first again: the gateway may simply have been down). One that
 * opened once is kept: its failures mean the gateway is away, not blocked.
 */
export class TransportChooser {
  private index = 0;
  private failures = 0;
  private proven = new Set<TransportName>();

  constructor(private order: TransportName[], private threshold: number) {
    if (!order.length) throw new Error('no transport to use');
  }

  get current(): TransportName {
    return this.order[this.index];
  }

  opened(): void {
    this.proven.add(this.current);
    this.failures = 0;
  }

  /** An attempt failed before opening; returns the transport to try next. */
  failed(): TransportName {
    if (!this.proven.has(this.current) && ++this.failures >= this.threshold) {
      this.failures = 0;
      this.index = (this.index + 1) % this.order.length;
    }
    return this.current;
  }
}

export interface LinkOptions {
  factories: Partial<Record<TransportName, TransportFactory>>;
  order: TransportName[];
  fallbackAfter: number;
  backoff: BackoffOptions;
  random?: () => number;
}

interface Wanted {
  request: ChannelRequest;
  /** Subscribe without `since` next time (snapshots wanted). */
  fresh: boolean;
  /** False after an error ended it (e.g. `token_expired`) until a new token comes. */
  active: boolean;
}

export class Link {
  readonly positions = new ResumeState();
  state: StateEvent = { state: 'connecting' };
  private wanted = new Map<string, Wanted>();
  private chooser: TransportChooser;
  private backoff: Backoff;
  private transport?: Transport;
  private isOpen = false;
  /**
   * The WebSocket is open but its subscribe message not answered yet: the
   * subscription is not in effect (events published meanwhile are not for
   * it), so the state stays `connecting` until the gateway answers it (`ack`, or `error`).
   */
  private awaitingAnswer = false;
  private timer?: ReturnType<typeof setTimeout>;
  private paused = false;
  private stopped = false;

  constructor(
    readonly app: string,
    private options: LinkOptions,
    private onMessage: (m: ServerMessage) => void,
    private onState: (s: StateEvent) => void,
  ) {
    this.chooser = new TransportChooser(options.order, options.fallbackAfter);
    this.backoff = new Backoff(options.backoff, options.random);
  }

  /**
   * Subscribes to `channels` (new ones, refreshed tokens, or an earlier
   * `since`); starts the connection if needed. A channel given without
   * `since` is subscribed fresh (snapshots).
   */
  want(channels: Record<string, ChannelRequest>): void {
    const changed: string[] = [];
    for (const [name, { since, ...request }] of Object.entries(channels)) {
      const old = this.wanted.get(name);
      let needed = !old || !old.active || old.request.filters !== request.filters;
      if (since && this.positions.lower(name, since)) needed = true;
      this.wanted.set(name, { request, fresh: old ? old.fresh && !since : !since, active: true });
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

  /** The token in use for `channel`, while its subscription is active. */
  token(channel: string): string | undefined {
    const w = this.wanted.get(channel);
    return w?.active ? w.request.filters : undefined;
  }

  /** Closes the connection until `resume()` (a hidden page). */
  pause(reason: string): void {
    if (this.paused || this.stopped) return;
    this.paused = true;
    this.drop();
    this.setState({ state: 'closed', reason });
  }

  resume(): void {
    if (!this.paused || this.stopped) return;
    this.paused = false;
    this.backoff.reset();
    this.connect();
  }

  close(): void {
    if (this.stopped) return;
    this.drop();
    this.stopped = true;
    this.setState({ state: 'closed', reason: 'closed' });
  }

  /** What to subscribe to: the named channels (default: every active one), each with its `since`. */
  request(names: Iterable<string> = this.wanted.keys()): TransportRequest {
    const channels: Record<string, ChannelRequest> = {};
    const resumed: string[] = [];
    for (const name of names) {
      const w = this.wanted.get(name);
      if (!w?.active) continue;
      const since = w.fresh ? undefined : this.positions.since(name);
      channels[name] = since ? { ...w.request, since } : { ...w.request };
      if (!w.fresh) resumed.push(name);
      w.fresh = false;
    }
    return { app: this.app, channels, cursor: this.positions.cursor(this.app, resumed) };
  }

  private connect(): void {
    this.timer = undefined;
    if (this.stopped || this.paused) return;
    const request = this.request();
    if (!Object.keys(request.channels).length) {
      this.setState({ state: 'closed', reason: 'no active subscription' });
      return;
    }
    const name = this.chooser.current;
    const factory = this.options.factories[name];
    if (!factory) throw new Error(`transport ${name} is not available`);
    this.isOpen = false;
    this.awaitingAnswer = false;
    this.setState({ state: 'connecting', transport: name });
    let transport: Transport | undefined;
    const mine = () => transport !== undefined && this.transport === transport;
    const sink: TransportSink = {
      opened: () => {
        if (!mine()) return;
        this.isOpen = true;
        this.chooser.opened();
        // SSE and long-polling carry the subscription in the request: it is in
        // effect once they open. A WebSocket sends it after opening.
        if (name === 'websocket') this.awaitingAnswer = true;
        else this.setState({ state: 'open', transport: name });
      },
      message: (m) => {
        if (!mine()) return;
        if (this.awaitingAnswer && (m.class === 'ack' || m.class === 'error')) {
          this.awaitingAnswer = false;
          this.setState({ state: 'open', transport: name });
        }
        this.handle(m);
      },
      cursor: (cursor) => {
        if (!mine()) return;
        const seen = this.positions.absorbCursor(this.app, cursor);
        if (seen && Object.keys(seen).length) this.onMessage({ class: '_position', channels: seen });
      },
      closed: (info) => {
        if (!mine()) return;
        this.transport = undefined;
        if (!this.isOpen) this.chooser.failed();
        this.isOpen = false;
        this.awaitingAnswer = false;
        const delay = this.backoff.next();
        this.setState({
          state: 'reconnecting',
          transport: this.chooser.current,
          reason: this.shutdown ? 'shutdown' : info.reason || undefined,
          code: info.code,
          attempt: this.backoff.attempt,
          delay,
        });
        this.shutdown = false;
        this.timer = setTimeout(() => this.connect(), delay);
      },
    };
    transport = factory(request, sink);
    this.transport = transport;
  }

  private shutdown = false;

  private handle(m: ServerMessage): void {
    switch (m.class) {
      case 'data':
        this.positions.accept(m as never);
        this.backoff.reset();
        break;
      case 'ack':
        this.positions.acknowledge(m);
        this.backoff.reset();
        break;
      case 'reset':
        this.positions.reset(m.channel, String(m.reason));
        if (m.reason === 'shutdown') this.shutdown = true;
        break;
      case 'error': {
        // The gateway refused or ended this channel: leave it out until a new request for it.
        const w = m.channel === undefined ? undefined : this.wanted.get(m.channel);
        if (w) {
          w.active = false;
          if (this.transport?.name === 'poll') queueMicrotask(() => this.restart());
        }
        break;
      }
    }
    this.onMessage(m);
  }

  /** Reconnects at once with the current request (not a failure: no backoff). */
  private restart(): void {
    this.drop();
    this.connect();
  }

  private drop(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    this.transport?.close();
    this.transport = undefined;
    this.isOpen = false;
    this.awaitingAnswer = false;
  }

  private setState(s: StateEvent): void {
    this.state = s;
    this.onState(s);
  }
}
