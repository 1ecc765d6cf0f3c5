/**
 * Where a client's subscription goes: a hub of its own (`LocalPort`), or the
 * hub of the leader tab of its origin (`SharedPort`). The leader is elected
 * with `navigator.locks` where there is one (the lock passes to a waiting tab
 * when the leader's tab closes), else by heartbeats over the BroadcastChannel.
 * It holds the connections and relays every message over the channel;
 * followers send it their subscribe messages, with `since`. A new leader
 * announces itself, every tab sends its subscription again with `since`, and
 * the new connection resumes from the earliest point any tab needs.
 */

import { Hub, type HubOptions } from './hub';
import type { ServerMessage, StateEvent, SubscribeMessage, TransportName } from './types';

/** What a port needs from its client. */
export interface PortOwner {
  readonly tab: string;
  deliver(m: ServerMessage): void;
  state(s: StateEvent): void;
  /** A new leader: send the subscription again (with `since`). */
  resubscribe(): void;
}

export interface Port {
  put(m: SubscribeMessage, visible: boolean): void;
  visibility(visible: boolean, reason?: string): void;
  /** Sends a client message on this client's connection (a `LocalPort` only: a shared connection does not carry them). */
  send?(m: object): boolean;
  /** The transport this client's connection is open on. */
  transport?(): TransportName | undefined;
  close(): void;
}

function hubFor(options: HubOptions, owner: PortOwner, relay?: (to: string[], kind: 'msg' | 'state', body: unknown) => void): Hub {
  const split = (tabs: string[]) => [tabs.includes(owner.tab), tabs.filter((t) => t !== owner.tab)] as const;
  return new Hub(options, {
    message(tabs, m) {
      const [mine, others] = split(tabs);
      if (others.length) relay?.(others, 'msg', m);
      if (mine) owner.deliver(m);
    },
    state(tabs, s) {
      const [mine, others] = split(tabs);
      if (others.length) relay?.(others, 'state', s);
      if (mine) owner.state(s);
    },
  });
}

/** One client, one hub: no sharing. */
export class LocalPort implements Port {
  private hub: Hub;

  constructor(options: HubOptions, private owner: PortOwner) {
    this.hub = hubFor(options, owner);
  }

  put(m: SubscribeMessage, visible: boolean): void {
    this.hub.put(this.owner.tab, m, visible);
  }

  visibility(visible: boolean, reason?: string): void {
    this.hub.visibility(this.owner.tab, visible, reason);
  }

  send(m: object): boolean {
    return this.hub.send(this.owner.tab, m);
  }

  transport(): TransportName | undefined {
    return this.hub.transport(this.owner.tab);
  }

  close(): void {
    this.hub.close();
  }
}

/** Messages between tabs. */
type Wire =
  | { t: 'leader'; tab: string }
  | { t: 'claim'; tab: string }
  | { t: 'bye'; tab: string }
  | { t: 'put'; tab: string; m: SubscribeMessage; visible: boolean }
  | { t: 'vis'; tab: string; visible: boolean }
  | { t: 'remove'; tab: string }
  | { t: 'msg'; to: string[]; m: ServerMessage }
  | { t: 'state'; to: string[]; s: StateEvent };

const BEAT = 1000;

interface LockManagerLike {
  request(name: string, options: { signal?: AbortSignal }, fn: () => Promise<unknown>): Promise<unknown>;
}

export class SharedPort implements Port {
  private channel: BroadcastChannel;
  private hub?: Hub;
  private leader?: string;
  private last?: { m: SubscribeMessage; visible: boolean };
  private closed = false;
  private release?: () => void;
  private abort = new AbortController();
  private beat?: ReturnType<typeof setInterval>;
  private lastBeat = 0;
  private claiming?: number;

  constructor(
    private name: string,
    private options: HubOptions,
    private owner: PortOwner,
    locks: LockManagerLike | undefined = (globalThis.navigator as { locks?: LockManagerLike } | undefined)?.locks,
  ) {
    this.channel = new BroadcastChannel(`chouquette:${name}`);
    this.channel.onmessage = (e: MessageEvent<Wire>) => this.receive(e.data);
    if (locks) this.electWithLock(locks);
    else this.electWithBeats();
  }

  /** Whether this tab holds the connections. */
  get isLeader(): boolean {
    return this.hub !== undefined;
  }

  put(m: SubscribeMessage, visible: boolean): void {
    this.last = { m, visible };
    if (this.hub) this.hub.put(this.owner.tab, m, visible);
    else this.post({ t: 'put', tab: this.owner.tab, m, visible });
  }

  visibility(visible: boolean): void {
    if (this.last) this.last.visible = visible;
    if (this.hub) this.hub.visibility(this.owner.tab, visible);
    else this.post({ t: 'vis', tab: this.owner.tab, visible });
  }

  close(): void {
    if (this.closed) return;
    if (this.hub) {
      this.hub.close();
      this.hub = undefined;
      this.post({ t: 'bye', tab: this.owner.tab });
    } else {
      this.post({ t: 'remove', tab: this.owner.tab });
    }
    this.closed = true;
    clearInterval(this.beat);
    this.abort.abort();
    this.release?.();
    this.channel.close();
  }

  private electWithLock(locks: LockManagerLike): void {
    locks
      .request(`chouquette:${this.name}`, { signal: this.abort.signal }, () => {
        if (this.closed) return Promise.resolve();
        this.lead();
        return new Promise<void>((resolve) => (this.release = resolve));
      })
      .catch(() => {
        /* aborted: this client closed while waiting */
      });
  }

  /** Without Web Locks: the leader beats every second; a tab that hears none for 3 s claims, the smallest id wins. */
  private electWithBeats(): void {
    this.lastBeat = Date.now() - 2 * BEAT;
    this.beat = setInterval(() => {
      const now = Date.now();
      if (this.hub) return this.post({ t: 'leader', tab: this.owner.tab });
      if (this.claiming !== undefined) {
        if (now - this.claiming >= BEAT / 2) {
          this.claiming = undefined;
          this.lead();
        }
      } else if (now - this.lastBeat > 3 * BEAT) {
        this.claiming = now;
        this.post({ t: 'claim', tab: this.owner.tab });
      }
    }, BEAT / 2);
  }

  private lead(): void {
    if (this.hub || this.closed) return;
    this.leader = this.owner.tab;
    this.hub = hubFor(this.options, this.owner, (to, kind, body) =>
      this.post(kind === 'msg' ? { t: 'msg', to, m: body as ServerMessage } : { t: 'state', to, s: body as StateEvent }),
    );
    this.post({ t: 'leader', tab: this.owner.tab });
    // Our own subscription first, with `since` from what this tab has seen.
    if (this.last) this.owner.resubscribe();
  }

  private stepDown(): void {
    this.hub?.close();
    this.hub = undefined;
  }

  private receive(d: Wire): void {
    if (this.closed || !d || typeof d !== 'object') return;
    const hub = this.hub;
    switch (d.t) {
      case 'put':
        return hub?.put(d.tab, d.m, d.visible);
      case 'vis':
        return hub?.visibility(d.tab, d.visible);
      case 'remove':
        return hub?.remove(d.tab);
      case 'claim':
        if (hub) this.post({ t: 'leader', tab: this.owner.tab });
        else if (this.claiming !== undefined && d.tab < this.owner.tab) {
          this.claiming = undefined;
          this.lastBeat = Date.now();
        }
        return;
      case 'leader':
        this.lastBeat = Date.now();
        this.claiming = undefined;
        if (hub) {
          // Two leaders (beats only): the smaller id keeps the role.
          if (d.tab < this.owner.tab) this.stepDown();
          else return;
        }
        if (this.leader !== d.tab) {
          this.leader = d.tab;
          this.owner.resubscribe();
        }
        return;
      case 'bye':
        if (d.tab === this.leader) {
          this.leader = undefined;
          this.lastBeat = 0;
          this.owner.state({ state: 'reconnecting', reason: 'leader tab closed' });
        }
        return;
      case 'msg':
        if (d.to.includes(this.owner.tab)) this.owner.deliver(d.m);
        return;
      case 'state':
        if (d.to.includes(this.owner.tab)) this.owner.state(d.s);
        return;
    }
  }

  private post(message: Wire): void {
    if (!this.closed) this.channel.postMessage(message);
  }
}
