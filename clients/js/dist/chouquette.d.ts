// @chouquette/client: generated from clients/js/src by `npm run build`; do not edit.

// types.ts
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
    /** Any other message class (presence, lattice, result...). */
    message: ServerMessage;
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
    /** Close the connection after the page has been hidden this many ms; resume when shown. Default: never. */
    hiddenTimeout?: number;
    /** Long-poll wait asked of the gateway, in seconds; default 25. */
    pollTimeout?: number;
    /** An SSE stream silent this long (no event, no heartbeat) is reopened; default 45000 ms. */
    sseIdleTimeout?: number;
}

// emitter.ts
/** A small typed event emitter. */
export type Listener<T> = (value: T) => void;
export declare class Emitter<Events extends object> {
    private listeners;
    /** Calls `fn` on every `type` event; returns a function that removes it. */
    on<K extends keyof Events>(type: K, fn: Listener<Events[K]>): () => void;
    /** Calls `fn` on the next `type` event only. */
    once<K extends keyof Events>(type: K, fn: Listener<Events[K]>): () => void;
    off<K extends keyof Events>(type: K, fn: Listener<Events[K]>): void;
    /** Calls every listener; one that throws does not stop the others (its error is rethrown asynchronously). */
    protected emit<K extends keyof Events>(type: K, value: Events[K]): void;
}

// client.ts
/** The application's side: one subscription, its events, and no duplicates. */
/** The URLs of the three transports, from the WebSocket one. */
export declare function transportUrls(options: Pick<ChouquetteOptions, 'url' | 'sseUrl' | 'pollUrl'>): Record<TransportName, string>;
export declare class Chouquette extends Emitter<ClientEvents> {
    private options;
    /** This client's id among the tabs sharing a connection. */
    readonly tab: string;
    /** The latest state event. */
    state: StateEvent;
    private seen;
    private message?;
    private port?;
    private started;
    private closed;
    private refreshing;
    private refreshBackoff;
    private retryTimer?;
    private cleanup;
    constructor(options?: ChouquetteOptions);
    /** Fetches the subscription (if needed) and connects; resolves once it is sent on its way. */
    connect(): Promise<void>;
    /** Closes the connection (or leaves the shared one) for good. */
    close(): void;
    /** Where each channel stands (for debugging and tests). */
    since(channel: string): import("./types").Since | undefined;
    private deliver;
    private setState;
    /**
     * Every channel was refused. With `getSubscription`, ask the backend again
     * after a backoff delay (a refused token is usually one the backend must
     * replace: rotated secret, revoked rights); with a fixed subscription, try
     * it again only when the refusal may pass.
     */
    private afterRefusal;
    private resubscribe;
    /** The subscription to send: the backend's, with `since` for every channel this client has a position for. */
    private request;
    /** The subscribe message, from the options or the backend (retried with backoff). */
    private obtain;
    /** A token expired: get a fresh subscription and resume with `since`. */
    private refresh;
    /**
     * Gets the subscription again (from the backend, or the fixed one) and
     * sends it, with `since` for every channel this client has a position
     * for. Called with `refreshing` set; clears it.
     */
    private renew;
    private makePort;
    private visible;
    private watchPage;
}
