/** The public types of the Chouquette client (wire protocol `chouquette.v1`). */

/** A transport, in the order the client tries them by default. */
export type TransportName = 'websocket' | 'sse' | 'poll';

/** Where a channel's stream stands: its epoch and the last offset seen. */
export interface Since {
  epoch: string;
  offset: number;
}

/** One channel of a subscribe message, as the backend signed it. */
export interface ChannelRequest {
  /** The subscription token (HS256 JWT). */
  filters: string;
  /** Added by the client when it resumes. */
  since?: Since;
  [extra: string]: unknown;
}

/** The subscribe message a backend hands its page (the Webchouquette flow). */
export interface SubscribeMessage {
  class: 'subscribe';
  app_id: string;
  uuid?: string;
  channels: Record<string, ChannelRequest>;
}

/** Any message from the gateway. */
export interface ServerMessage {
  class: string;
  timestamp?: string;
  uuid?: string;
  ref?: string;
  channel?: string;
  [field: string]: unknown;
}

/** An event of a channel (`class: "data"`). */
export interface DataMessage extends ServerMessage {
  class: 'data';
  channel: string;
  offset: number;
  event_kind: string;
  keywords: string[];
  data: unknown;
  /** True for last-known-state messages sent before the `ack`. */
  snapshot?: boolean;
}

/** `reset`: the view of `channel` (or of every channel) may be stale: refetch it. */
export interface ResetEvent {
  reason: string;
  channel?: string;
  message: ServerMessage;
}

/** How one transport last failed before opening (see the `unreachable` error). */
export interface TransportFailure {
  transport: TransportName;
  /** HTTP status, or WebSocket close code (1006: refused or cut before opening). */
  code?: number;
  /** What the browser said, e.g. `TypeError: Failed to fetch (...)` or `HTTP 403`. */
  reason?: string;
}

/**
 * `error`: from the gateway (its `code`: `invalid_token`, `not_allowed`,
 * ...), or from the client itself: `subscription_failed` (`getSubscription`
 * failed) and `unreachable` (no transport could open: `failures` says how
 * each failed).
 */
export interface ErrorEvent {
  code: string;
  message: string;
  channel?: string;
  ref?: string;
  /** With `unreachable`: each transport's last failure, in the order tried. */
  failures?: TransportFailure[];
  /**
   * What the error is about when it is not a subscription's: `connect` (the
   * identity was refused or `getConnectToken` failed) or `lattice` (a
   * `lattice_subscribe` was refused; `namespace` names it).
   */
  about?: 'connect' | 'lattice';
  namespace?: string;
}

/**
 * `open`: the subscription is in effect (the gateway took at least one of
 * its channels), so every event published from then on reaches the client
 * (once the gateway has answered the subscription; for a tab joining a
 * shared connection, once its snapshots are in). It stays `open` through a
 * token refresh.
 *
 * `refused`: the gateway refused every channel of the subscription
 * (`reason`: the `error` code, e.g. `invalid_token`); the connection is
 * dropped. With `getSubscription` the client asks it again after `delay` ms
 * and subscribes with what it gives; with a fixed `subscription` it tries
 * again only for a passing refusal (`rate_limited`, `unavailable`,
 * `disabled`, `too_many_subscriptions`), else `refused` is final.
 */
export type ConnectionState = 'connecting' | 'open' | 'reconnecting' | 'refused' | 'closed';

/** `state`: where the connection stands, and over which transport. */
export interface StateEvent {
  state: ConnectionState;
  transport?: TransportName;
  /** Why it closed, reconnects or was refused (`shutdown`, `hidden`, a close reason, the refusal's error code...). */
  reason?: string;
  /** WebSocket close code or HTTP status, when there was one. */
  code?: number;
  /** Reconnection attempt (1, 2, ...) and the delay before it, in ms (after `refused`: before asking again). */
  attempt?: number;
  delay?: number;
}

/** Every event a client emits, and its payload. */
export interface ClientEvents {
  data: DataMessage;
  snapshot: DataMessage;
  reset: ResetEvent;
  error: ErrorEvent;
  state: StateEvent;
  /** `connected`: the connection has an identity (connect auth by the backend, or a `connect` answered `ack`). */
  connected: ConnectedEvent;
  /** `presence` of a channel, with the set of users present after it. */
  presence: PresenceEvent;
  /** `message`: a backend's best-effort message to this user (`POST /api/v1/users/send`). */
  user_message: UserMessage;
  /** `subscribed`: a backend subscribed this user to `channel` (events follow `offset`). */
  subscribed: ServerMessage & { channel: string; epoch?: string; offset?: number };
  /** `unsubscribed`: a backend ended this user's subscription to `channel`. */
  unsubscribed: ServerMessage & { channel: string };
  /** A notification for this user, pending until acknowledged (`ackNotifications`). */
  notification: NotificationMessage;
  /** `notification_acked`: notifications acknowledged (by this or another connection of the user). */
  notification_acked: ServerMessage & { ids?: string[] };
  /** Any other message class. */
  message: ServerMessage;
}

/** Who the connection is, as the gateway knows it. */
export interface ConnectedEvent {
  app_id: string;
  /** The user: `user` of `connected`, or `sub` of the connect token. */
  user?: string;
  groups?: string[];
  /** `connect_auth`: the backend identified the connection at its upgrade; `token`: a `connect` was accepted. */
  via: 'connect_auth' | 'token';
}

export interface PresenceEvent {
  channel: string;
  /** Everyone present after this message (sorted). */
  present: string[];
  joined: string[];
  left: string[];
  message: ServerMessage;
}

export interface UserMessage extends ServerMessage {
  class: 'message';
  event_kind?: string;
  data?: unknown;
}

export interface NotificationMessage extends ServerMessage {
  class: 'notification';
  id: string;
  kind?: string;
  title?: string;
  body?: string;
  link?: string;
  data?: unknown;
  created?: string;
  /** Several notifications of a grouped kind delivered as one: its `id` is the first member's, its texts the last's; acknowledging it acknowledges them all. */
  grouped?: { count: number; ids: string[]; first: string; last: string };
  /** The sending user, for a user-to-user message (`sendMessage`); a backend's notification has none. */
  from?: string;
}

/**
 * A user-to-user message (`sendMessage`), delivered to each recipient as a
 * `notification` with `from`. `to` and `groups` are each optional, not both
 * empty; the connect token's `message` claim must name them.
 */
export interface OutgoingMessage {
  /** Users, by id. */
  to?: string[];
  /** Groups of the `message` claim: each reaches its members but the sender. */
  groups?: string[];
  /** 1 to 64 bytes; grouped like a backend's notification of that kind. */
  kind: string;
  /** At most 1,024 bytes. */
  title?: string;
  /** At most 8,192 bytes. */
  body?: string;
  /** At most 2,048 bytes. */
  link?: string;
  /** Any JSON, at most the gateway's `max_publish_bytes`. */
  data?: unknown;
}

/** The gateway's `ack` of a sent message. */
export interface MessageSent {
  /** The notification's id, as each recipient gets it. */
  id: string;
  /** Users it reached (groups counted by their members, each user once, the sender left out). */
  recipients: number;
}

/** A connect token for `connect` (`app_id`, `sub`, `exp`, `groups` claims; HS256). */
export interface ConnectToken {
  app_id: string;
  token: string;
}

/** A backend's call to this client (`POST /api/v1/calls`). */
export interface IncomingCall {
  id: string;
  method: string;
  args: unknown[];
  kwargs: Record<string, unknown>;
}

/** What an `onCall` handler returns (or resolves to) is the `result`; what it throws is the `error`. */
export type CallHandler = (args: unknown[], kwargs: Record<string, unknown>, call: IncomingCall) => unknown;

export interface CallOptions {
  /** Give up after this many ms (rejects with code `timeout`); default 30000. The gateway's own answer may still come: it is ignored. */
  timeout?: number;
}

/** Idle disconnection: a page nobody looks at or uses holds no connection. */
export interface IdleOptions {
  /** Disconnect once the page has been hidden this many ms; reconnect (resuming) when shown. Default: never. */
  hiddenAfter?: number;
  /** Disconnect after this many ms without user activity (pointer, key, wheel, touch, focus, visibility); reconnect on the next. Default: never. */
  inactiveAfter?: number;
}

export interface BackoffOptions {
  /** First retry within [0, base) ms; default 500. */
  base?: number;
  /** The ceiling of the delay, in ms; default 30000. */
  max?: number;
}

export interface ChouquetteOptions {
  /** WebSocket URL, e.g. `wss://push.example.com/ws`; default: `/ws` of the page's origin. */
  url?: string;
  /** SSE URL; default: `url` with an http(s) scheme and `/sse` for `/ws`. */
  sseUrl?: string;
  /** Long-polling URL; default: `url` with an http(s) scheme and `/poll` for `/ws`. */
  pollUrl?: string;
  /** A subscribe message, used as is (it cannot be refreshed when its tokens expire). */
  subscription?: SubscribeMessage;
  /** Fetches a subscribe message from the backend; called again when a token expires. */
  getSubscription?: () => Promise<SubscribeMessage> | SubscribeMessage;
  /** Transports to use, in order of preference; default `['websocket', 'sse', 'poll']`. */
  transports?: TransportName[];
  /** Failed connection attempts of a transport that never opened before trying the next; default 2. */
  fallbackAfter?: number;
  /** Reconnection backoff (exponential, full jitter). */
  backoff?: BackoffOptions;
  /**
   * Share one connection among the tabs of this origin (a leader tab holds it
   * and relays over a BroadcastChannel). `true`, or a string naming the
   * group; default false.
   */
  shared?: boolean | string;
  /** Same as `idle.hiddenAfter` (kept for compatibility; `idle` wins). */
  hiddenTimeout?: number;
  /** Disconnect idle pages (hidden, or without user activity), resume without gap when they come back. */
  idle?: IdleOptions;
  /**
   * Gives the connection an identity: fetches a connect token from the
   * backend; the client sends `connect` on every (re)connection before
   * subscribing, and fetches a fresh token before the current one's `exp`.
   * Needed for `call`, `onCall`, `lattice` and notifications (unless the
   * gateway identifies the connection itself: connect auth, `connected`).
   * WebSocket only (SSE and long-polling carry no `connect`); not with `shared`.
   */
  getConnectToken?: () => Promise<ConnectToken> | ConnectToken;
  /**
   * URL of `POST /notifications/ack` (used by `ackNotifications` over SSE and
   * long-polling); default: `url` with an http(s) scheme and `/notifications/ack` for `/ws`.
   */
  notificationsAckUrl?: string;
  /** Long-poll wait asked of the gateway, in seconds; default 25. */
  pollTimeout?: number;
  /** An SSE stream silent this long (no event, no heartbeat) is reopened; default 45000 ms. */
  sseIdleTimeout?: number;
}
