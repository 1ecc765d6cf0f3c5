/** What a transport is to the connection that drives it. */

import type { ChannelRequest, ServerMessage, TransportName } from '../types';

/** What to subscribe to: one app's channels, each with its `since` when resuming. */
export interface TransportRequest {
  app: string;
  channels: Record<string, ChannelRequest>;
  /** The same positions as a cursor, for SSE and long-polling. */
  cursor?: string;
  /** WebSocket: messages sent on opening before the subscribe message (`connect`). */
  before?: object[];
  /** WebSocket: messages sent on opening after it (`lattice_subscribe`). */
  after?: object[];
}

/** Callbacks of one transport instance. `closed` comes once, last, unless `close()` was called. */
export interface TransportSink {
  opened(): void;
  message(m: ServerMessage): void;
  cursor(cursor: string): void;
  closed(info: { code?: number; reason?: string }): void;
}

export interface Transport {
  readonly name: TransportName;
  /** Subscribes again on the open connection (WebSocket only; the others reconnect). */
  resubscribe?(request: TransportRequest): boolean;
  /** Sends a client message on the open connection (WebSocket only); false when it cannot. */
  send?(m: object): boolean;
  /** Closes without calling `closed`. */
  close(): void;
}

export type TransportFactory = (request: TransportRequest, sink: TransportSink) => Transport;

/** Parses a text payload: one message, or an array of them (batching). */
export function parseMessages(text: string): ServerMessage[] {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return [];
  }
  return toMessages(value);
}

/** The messages in a decoded payload: one object, or an array of them. */
export function toMessages(value: unknown): ServerMessage[] {
  const list = Array.isArray(value) ? value : [value];
  return list.filter((m): m is ServerMessage => !!m && typeof m === 'object' && typeof (m as ServerMessage).class === 'string');
}

/**
 * A `POST` of the request as the JSON body `/sse` and `/poll` take:
 * `{"sub": [<token>, ...], "cursor": "...", "timeout": <s>}`. The tokens
 * stay out of the URL, and so out of proxies' access logs.
 */
export function postRequest(
  base: string,
  request: TransportRequest,
  timeoutSecs?: number,
  init: RequestInit = {},
): [string, RequestInit] {
  const body: { sub: string[]; cursor?: string; timeout?: number } = {
    sub: Object.values(request.channels).map((c) => c.filters),
  };
  if (request.cursor) body.cursor = request.cursor;
  if (timeoutSecs !== undefined) body.timeout = timeoutSecs;
  const headers = { ...(init.headers as Record<string, string> | undefined), 'content-type': 'application/json' };
  const url = new URL(base, globalThis.location?.href).toString();
  return [url, { ...init, method: 'POST', headers, body: JSON.stringify(body) }];
}

/**
 * Why a `fetch` of `url` failed, as far as the page can tell. A browser
 * answers a request its CORS rules block with the same bare `TypeError` as a
 * network failure ("Failed to fetch", "NetworkError when attempting to fetch
 * resource", "Load failed"), and shows the details only in its console: so
 * say what it may be, and whether the request was cross-origin.
 */
export function fetchFailure(url: string, e: unknown): string {
  const what = String(e);
  if (!(e instanceof TypeError)) return what;
  const page = globalThis.location;
  let target: string | undefined;
  try {
    target = new URL(url, page?.href).origin;
  } catch {
    /* not a URL: the TypeError says so */
  }
  if (page && target && target !== page.origin) {
    return `${what} (a cross-origin request from ${page.origin} to ${target}: blocked unless the gateway allows this origin (CORS); or the network or the gateway is down)`;
  }
  return `${what} (the network or the gateway is down, or a proxy refused the request)`;
}
