/**
 * One connection to the gateway for one app's channels: picks a transport,
 * reconnects with backoff, and resumes every channel from where it stood.
 */

import { Backoff } from './backoff';
import { ResumeState } from './resume';
import type { Transport, TransportFactory, TransportRequest, TransportSink } from './transports/transport';
import type { BackoffOptions, ChannelRequest, ServerMessage, StateEvent, TransportFailure, TransportName } from './types';

/**
 * Which transport to try next. A transport that never opened is given up
 * after `threshold` failed attempts in a row, for the next one (after the
 * last, the first again: the gateway may simply have been down). One that
 * opened once is kept: its failures mean the gateway is away, not blocked.
 */
export class TransportChooser {
  /** Full rounds of the order in which no transport opened. */
  cycles = 0;
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
      if (this.index === 0) this.cycles += 1;
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
  /**
   * A fresh token follows a `token_expired` (the client has
   * `getSubscription`): a connection whose every channel expired waits for
   * it quietly. Otherwise an expiry ends the subscription like a refusal.
   */
  refreshable?: boolean;
  /**
   * Client messages to send on each WebSocket opening, before and after the
   * subscribe message (the client's `connect`, its `lattice_subscribe`s).
   */
  greeting?: () => { before: object[]; after: object[] };
}

/** The `uuid` prefix of the client's own messages other than `subscribe` (connect, calls, lattices, acks). */
export const SIDE_PREFIX = 'cq-';

/**
 * A reply to one of those messages, or a call and its answer: not part of
 * the subscription's answer (an `ack` of a `connect` is not the subscribe's
 * `ack`; a `call`'s `error` ends no channel).
 */
export function sideMessage(m: ServerMessage): boolean {
  return (
    (typeof m.ref === 'string' && m.ref.startsWith(SIDE_PREFIX)) ||
    m.class === 'result' || m.class === 'call' || (m.class === 'error' && m.id !== undefined)
  );
}

interface Wanted {
  request: ChannelRequest;
  /** Subscribe without `since` next time (snapshots wanted). */
  fresh: boolean;
  /** False after an error ended it (e.g. `token_expired`) until a new token comes. */
  active: boolean;
  /** The error code that ended it. */
  ended?: string;
}

/** Error codes a client may see that the gateway does not send (see `unreachable()`). */
export const UNREACHABLE = 'unreachable';

export class Link {
  readonly positions = new ResumeState();
  state: StateEvent = { state: 'connecting' };
  private wanted = new Map<string, Wanted>();
  private chooser: TransportChooser;
  private backoff: Backoff;
  private transport?: Transport;
  private isOpen = false;
  /**
   * The transport is open but the gateway has not answered its subscription
   * yet: it is not in effect (events published meanwhile are not for it),
   * so the state stays `connecting`. A WebSocket's answer ends with the
   * `ack` (none when every channel is refused: only errors); an SSE or
   * long-poll answer ends with its first cursor, which lists the channels
   * subscribed.
   */
  private awaitingAnswer = false;
  /** The channels the current transport asked for. */
  private asked: string[] = [];
  /**
   * The next connection replaces an open one for the same subscription (new
   * tokens, resumed with `since`/cursor): nothing is lost, the state stays
   * `open` (no `connecting`), unless it fails.
   */
  private seamless = false;
  /** The last failure of each transport since one last opened (for `unreachable`). */
  private failures = new Map<TransportName, TransportFailure>();
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
      this.wanted.set(name, { request, fresh: old ? old.fresh && !since : !since, active: true, ended: undefined });
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
  send(m: object): boolean {
    return !!(this.isOpen && this.transport?.send?.(m));
  }

  /** The transport of the open connection, if any. */
  get openTransport(): TransportName | undefined {
    return this.isOpen ? this.transport?.name : undefined;
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
    const seamless = this.seamless;
    this.seamless = false;
    if (this.stopped || this.paused) return;
    const request: TransportRequest = { ...this.request(), ...this.options.greeting?.() };
    // Nothing active: every channel waits for a fresh token (or was refused,
    // which `settle()` reported). `want()` connects again.
    if (!Object.keys(request.channels).length) return;
    const name = this.chooser.current;
    const factory = this.options.factories[name];
    if (!factory) throw new Error(`transport ${name} is not available`);
    this.isOpen = false;
    this.awaitingAnswer = false;
    this.asked = Object.keys(request.channels);
    this.lastError = undefined;
    if (!(seamless && this.state.state === 'open')) this.setState({ state: 'connecting', transport: name });
    let transport: Transport | undefined;
    const mine = () => transport !== undefined && this.transport === transport;
    const sink: TransportSink = {
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
        if (mine() && this.awaitingAnswer && name === 'websocket' && m.class === 'ack') this.answered(name);
      },
      cursor: (cursor) => {
        if (!mine()) return;
        const seen = this.positions.absorbCursor(this.app, cursor);
        if (seen && Object.keys(seen).length) this.onMessage({ class: '_position', channels: seen });
        if (!mine() || !this.awaitingAnswer || !seen) return;
        // The first cursor of an SSE stream or a poll closes the gateway's
        // answer to the subscription in the URL, and names every channel it
        // took: one missing was refused (by an error naming it, or naming no
        // channel when the token could not even be read).
        let refused = false;
        for (const channel of this.asked) {
          const w = this.wanted.get(channel);
          if (w?.active && !Object.prototype.hasOwnProperty.call(seen, channel)) {
            w.active = false;
            w.ended = this.lastError ?? 'invalid_token';
            refused = true;
          }
        }
        if (refused) {
          if (!this.settle()) return;
          if (name === 'poll') this.restartSoon();
        }
        this.answered(name);
      },
      closed: (info) => {
        if (!mine()) return;
        this.transport = undefined;
        let cycled = false;
        if (!this.isOpen) {
          this.failures.set(name, { transport: name, code: info.code, reason: info.reason || undefined });
          const cycles = this.chooser.cycles;
          this.chooser.failed();
          cycled = this.chooser.cycles > cycles;
        }
        this.isOpen = false;
        this.awaitingAnswer = false;
        if (cycled) this.unreachable();
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
  /** The code of the last error of the current answer that named no channel. */
  private lastError?: string;

  /** The gateway answered the subscription and took at least one channel: it is in effect. */
  private answered(name: TransportName): void {
    this.awaitingAnswer = false;
    this.lastError = undefined;
    if (this.state.state !== 'open' || this.state.transport !== name) this.setState({ state: 'open', transport: name });
  }

  /**
   * After channels were ended or refused: true while some channel is still
   * active. When none is, either every one expired and a fresh token is on
   * its way (nothing to report: SSE and long-polling stop and reopen with the
   * cursor when it comes, a WebSocket sends it on the same socket), or the
   * subscription was refused: the connection is dropped and the state says
   * `refused` with the code, until `want()` brings new tokens.
   */
  private settle(): boolean {
    const wanted = [...this.wanted.values()];
    if (wanted.some((w) => w.active)) return true;
    const codes = wanted.map((w) => w.ended ?? 'refused');
    if (this.options.refreshable && codes.every((c) => c === 'token_expired')) {
      if (this.transport && this.transport.name !== 'websocket') {
        this.seamless = this.state.state === 'open';
        this.drop();
      }
      return false;
    }
    const transport = this.transport?.name ?? this.chooser.current;
    this.drop();
    this.setState({ state: 'refused', transport, reason: codes.find((c) => c !== 'token_expired') ?? codes[0] });
    return false;
  }

  /**
   * A whole round of the transports failed before any opened: tell the app
   * (an `error` `unreachable`), with each transport's last failure as far as
   * the browser lets it know (a CORS refusal and a network error look alike
   * to a page); the reconnection goes on with backoff.
   */
  private unreachable(): void {
    const failures = this.options.order.flatMap((t) => this.failures.get(t) ?? []);
    const what = (f: TransportFailure) =>
      `${f.transport}: ${f.reason ?? (f.code !== undefined ? `closed (code ${f.code})` : 'failed')}${
        f.transport === 'websocket' && f.code === 1006 && !f.reason ? ' before opening (refused, or blocked on the way)' : ''
      }`;
    this.onMessage({
      class: 'error',
      code: UNREACHABLE,
      message: `the gateway cannot be reached from this page (${failures.map(what).join('; ')}); retrying with backoff`,
      failures,
    });
  }

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
        const code = String(m.code ?? 'error');
        const ended: Wanted[] = [];
        if (m.channel !== undefined) {
          const w = this.wanted.get(m.channel);
          if (w?.active) ended.push(w);
        } else if (this.awaitingAnswer) {
          this.lastError = code;
          // A WebSocket's subscribe answered by an error naming no channel
          // (unknown app, rate limited): the whole message was refused.
          if (this.transport?.name === 'websocket') {
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
        // The error first, then what it does to the state.
        this.onMessage(m);
        if (ended.length && this.settle() && this.transport?.name === 'poll') this.restartSoon();
        return;
      }
    }
    this.onMessage(m);
  }

  /** Polls carry their tokens: once this one's answer is handled, poll again without the ended channels. */
  private restartSoon(): void {
    const transport = this.transport;
    queueMicrotask(() => transport && transport === this.transport && this.restart());
  }

  /** Reconnects at once with the current request (not a failure: no backoff, and an open state stays open). */
  private restart(): void {
    this.seamless = this.state.state === 'open';
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
