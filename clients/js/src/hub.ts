/**
 * The connections of one page, or of every tab of an origin when shared:
 * tabs asking for the same subscription (same app, channels and filters,
 * whatever their tokens' expiry) share one connection; messages go to every
 * tab of it, and each tab drops what it has already seen.
 */

import { Link, type LinkOptions } from './connection';
import { identity } from './subscription';
import { postRequest, toMessages } from './transports/transport';
import type { ServerMessage, StateEvent, SubscribeMessage, TransportName } from './types';

export interface HubOutput {
  message(tabs: string[], m: ServerMessage): void;
  state(tabs: string[], s: StateEvent): void;
}

export interface HubOptions extends LinkOptions {
  hiddenTimeout?: number;
  /**
   * The clients time idleness themselves (`idle` option): a tab reported not
   * visible is idle already, and the connections close as soon as every tab is.
   */
  idleManaged?: boolean;
  /** Where to fetch snapshots for a tab joining a running connection (one long-poll request). */
  pollUrl: string;
  fetch?: typeof fetch;
}

interface Group {
  link: Link;
  tabs: Set<string>;
  /** The tab whose token is in use: it alone is told `token_expired`, and refreshes. */
  owner: string;
  /** Tabs waiting for their snapshots, and what came for them meanwhile. */
  priming: Map<string, ServerMessage[]>;
}

export class Hub {
  private groups = new Map<string, Group>();
  private tabGroup = new Map<string, string>();
  private hidden = new Set<string>();
  private hideTimer?: ReturnType<typeof setTimeout>;
  private paused = false;

  constructor(private options: HubOptions, private out: HubOutput) {}

  /** A tab's subscription (new, refreshed, or resumed with `since`). */
  put(tab: string, m: SubscribeMessage, visible = true): void {
    const id = identity(m);
    const previous = this.tabGroup.get(tab);
    if (previous !== undefined && previous !== id) this.leave(tab);
    let group = this.groups.get(id);
    if (!group) {
      const tabs = new Set<string>();
      const g: Group = {
        tabs,
        owner: tab,
        priming: new Map(),
        link: new Link(
          m.app_id,
          this.options,
          (message) => this.route(g, message),
          // A tab waiting for its snapshots learns the state once it has them.
          (s) => this.out.state([...tabs].filter((t) => !g.priming.has(t)), s),
        ),
      };
      group = g;
      this.groups.set(id, g);
      if (this.paused) g.link.pause(this.pauseReason);
    }
    let channels = m.channels;
    if (!group.tabs.has(tab) && group.tabs.size) {
      // Joining a running connection: keep its tokens (same filters), only
      // move its resume point back if this tab needs earlier events.
      const link = group.link;
      // Without `since`, the tab is told the state (`open`) only once its
      // snapshots are in: its subscription starts at their position, so
      // what is published before that is not for it.
      if (Object.values(m.channels).some((c) => !c.since)) this.prime(group, tab, m);
      else this.out.state([tab], link.state);
      channels = Object.fromEntries(
        Object.entries(m.channels).map(([name, c]) => [name, { ...c, filters: link.token(name) ?? c.filters }]),
      );
    }
    group.tabs.add(tab);
    group.owner = tab;
    this.tabGroup.set(tab, id);
    group.link.want(channels);
    this.setVisible(tab, visible);
  }

  /** Sends a client message on the connection of `tab`'s subscription; false when it cannot (not open, not a WebSocket). */
  send(tab: string, m: object): boolean {
    const id = this.tabGroup.get(tab);
    return id !== undefined && !!this.groups.get(id)?.link.send(m);
  }

  /** The transport `tab`'s connection is open on, if it is. */
  transport(tab: string): TransportName | undefined {
    const id = this.tabGroup.get(tab);
    return id === undefined ? undefined : this.groups.get(id)?.link.openTransport;
  }

  /** A tab is gone (closed, or its client closed). */
  remove(tab: string): void {
    this.leave(tab);
    this.hidden.delete(tab);
    this.checkVisibility();
  }

  /** A tab was shown or hidden: close the connections once every tab has been hidden `hiddenTimeout` ms. */
  visibility(tab: string, visible: boolean, reason = 'hidden'): void {
    this.pauseReason = reason;
    this.setVisible(tab, visible);
  }

  /** Why the connections close when every tab is hidden or idle (`hidden`, `inactive`). */
  private pauseReason = 'hidden';

  get tabs(): string[] {
    return [...this.tabGroup.keys()];
  }

  close(): void {
    clearTimeout(this.hideTimer);
    for (const g of this.groups.values()) g.link.close();
    this.groups.clear();
    this.tabGroup.clear();
  }

  private route(g: Group, m: ServerMessage): void {
    let tabs = [...g.tabs];
    if (m.class === 'error' && m.code === 'token_expired') tabs = [g.owner];
    const now: string[] = [];
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
  private prime(g: Group, tab: string, m: SubscribeMessage): void {
    const waiting: ServerMessage[] = [];
    g.priming.set(tab, waiting);
    const request = { app: m.app_id, channels: m.channels };
    const fetchFn = this.options.fetch ?? ((...a: Parameters<typeof fetch>) => globalThis.fetch(...a));
    fetchFn(...postRequest(this.options.pollUrl, request, 0, { cache: 'no-store' }))
      .then((res) => (res.ok ? res.json() : Promise.reject(new Error(`HTTP ${res.status}`))))
      .then(
        (body: { messages?: unknown }) => toMessages(body.messages ?? []),
        () => [{ class: 'reset', reason: 'snapshot_unavailable' } as ServerMessage],
      )
      .then((first) => {
        if (g.priming.get(tab) !== waiting) return;
        g.priming.delete(tab);
        if (!g.tabs.has(tab)) return;
        for (const message of [...first, ...waiting]) this.out.message([tab], message);
        this.out.state([tab], g.link.state);
      });
  }

  private leave(tab: string): void {
    const id = this.tabGroup.get(tab);
    if (id === undefined) return;
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

  private setVisible(tab: string, visible: boolean): void {
    if (visible) this.hidden.delete(tab);
    else this.hidden.add(tab);
    this.checkVisibility();
  }

  private checkVisibility(): void {
    const managed = !!this.options.idleManaged;
    const limit = managed ? 0 : this.options.hiddenTimeout;
    if (!managed && (!limit || limit <= 0)) return;
    const allHidden = this.tabGroup.size > 0 && [...this.tabGroup.keys()].every((t) => this.hidden.has(t));
    if (!allHidden) {
      clearTimeout(this.hideTimer);
      this.hideTimer = undefined;
      if (this.paused) {
        this.paused = false;
        for (const g of this.groups.values()) g.link.resume();
      }
    } else if (!this.paused && !this.hideTimer) {
      const pause = () => {
        this.hideTimer = undefined;
        this.paused = true;
        for (const g of this.groups.values()) g.link.pause(this.pauseReason);
      };
      if (managed) pause();
      else this.hideTimer = setTimeout(pause, limit);
    }
  }
}
