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
    subscribed: ServerMessage & {
        channel: string;
        epoch?: string;
        offset?: number;
    };
    /** `unsubscribed`: a backend ended this user's subscription to `channel`. */
    unsubscribed: ServerMessage & {
        channel: string;
    };
    /** A notification for this user, pending until acknowledged (`ackNotifications`). */
    notification: NotificationMessage;
    /** `notification_acked`: notifications acknowledged (by this or another connection of the user). */
    notification_acked: ServerMessage & {
        ids?: string[];
    };
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
    grouped?: {
        count: number;
        ids: string[];
        first: string;
        last: string;
    };
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

// lattice.ts
/**
 * Lattices (docs/lattices.md): a namespace's values, shared and the user's
 * own, kept by merging. Merging is commutative, associative and idempotent,
 * so a change seen twice, late, or before a `full` that already holds it
 * does no harm: the view converges whatever the order.
 */
/** One value of a lattice, in its wire form. */
export type LatticeValue = {
    counter: number;
} | {
    set: string[];
} | {
    register: {
        value: unknown;
        ts: number;
    };
};
/** Keys to values, as `shared` and `user` of a `lattice` message carry them. */
export type LatticeMap = Record<string, LatticeValue>;
/** `change`: what a `lattice` message changed in the view (each key with its merged value). */
export interface LatticeChange {
    namespace: string;
    /** True when the view was replaced by a full state (after a (re)subscription). */
    full: boolean;
    shared: LatticeMap;
    user: LatticeMap;
}
export interface LatticeEvents {
    change: LatticeChange;
    /** The gateway refused the subscription (`not_allowed`, `bad_message`, `too_many_subscriptions`, `unavailable`). */
    error: {
        code: string;
        message: string;
    };
}
/** JSON text with object keys sorted (the order registers compare values in). */
export declare function canonicalJson(value: unknown): string;
/** A value in one of the three forms, or undefined (an unknown form is left out of the view). */
export declare function latticeValue(v: unknown): LatticeValue | undefined;
/** The merge of two values: commutative, associative, idempotent. */
export declare function mergeValue(a: LatticeValue, b: LatticeValue): LatticeValue;
/** Merges `change` into `into` (in place); returns the keys whose value changed, with their merged value. */
export declare function mergeMap(into: LatticeMap, change: unknown): LatticeMap;
/**
 * A client's view of one lattice namespace. `shared` and `user` hold the
 * merged values; `change` fires after each message that changed something
 * (and after each `full` state). The client subscribes again after every
 * reconnection (the gateway then sends the full state again).
 */
export declare class LatticeView extends Emitter<LatticeEvents> {
    readonly namespace: string;
    private onClose;
    shared: LatticeMap;
    user: LatticeMap;
    /** True once a full state came. */
    ready: boolean;
    closed: boolean;
    constructor(namespace: string, onClose?: (view: LatticeView) => void);
    /** Applies a `lattice` message of this namespace: `full` replaces the view, a change is merged into it. */
    apply(m: ServerMessage): void;
    /** @internal The gateway refused the subscription. */
    refused(code: string, message: string): void;
    /** Stops following the namespace (`lattice_unsubscribe`). */
    close(): void;
}

// client.ts
/** The application's side: one subscription, its events, and no duplicates. */
/** Calls waiting for their answer, at most (a runaway loop of calls fails fast instead of growing the map). */
export declare const MAX_PENDING_CALLS = 1000;
/** Lattice namespaces one client follows, at most: the gateway's own limit per connection. */
export declare const MAX_LATTICES = 16;
/** The default `timeout` of `call`, in ms. */
export declare const DEFAULT_CALL_TIMEOUT = 30000;
/**
 * A failed `call` (or `sendMessage`, `ackNotifications`): `code` is the gateway's or the
 * backend's error code (`not_allowed`, `backend_timeout`, the backend's own...),
 * or the client's: `timeout` (no answer in time), `disconnected` (the
 * connection closed first: calls are not retried, the backend may or may
 * not have run it), `not_connected` (no open WebSocket to send it on),
 * `too_many_calls` (MAX_PENDING_CALLS pending).
 */
export declare class CallError extends Error {
    readonly code: string;
    constructor(code: string, message: string);
}
/**
 * The request acknowledging notifications over SSE or long-polling:
 * `POST <url>` with the connect token as bearer and `{"ids": [...]}`.
 */
export declare function notificationAckRequest(url: string, token: string, ids: string[]): [string, RequestInit];
/** The URLs of the three transports, from the WebSocket one. */
export declare function transportUrls(options: Pick<ChouquetteOptions, 'url' | 'sseUrl' | 'pollUrl'>): Record<TransportName, string>;
/** The URL of `POST /notifications/ack`, from the WebSocket one (or the option). */
export declare function notificationsAckUrl(options: Pick<ChouquetteOptions, 'url' | 'notificationsAckUrl'>): string;
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
    /** The connect token in use (`getConnectToken`). */
    private connectToken?;
    private connectTimer?;
    private connectRefreshing;
    private connectBackoff;
    private connectSeq;
    /** Who the open connection is, once the gateway said so (`connected`, or the `ack` of `connect`). */
    identity?: ConnectedEvent;
    private callSeq;
    private pending;
    private handlers;
    private lattices;
    /** Who is present on each presence channel (bounded by the gateway: 10,000 names per channel, channels of the subscription). */
    private presence;
    /** With `idle`: false once the page is idle (the connection is closed until it wakes). */
    private awake;
    /** Notifications already emitted: one delivered again (at-least-once) is not emitted twice. */
    private notifications;
    constructor(options?: ChouquetteOptions);
    /**
     * Calls `method` of the app's backends (the connection needs an identity:
     * `getConnectToken`, or connect auth). Resolves with the backend's
     * `result`; rejects with a `CallError` carrying the error's `code`. A call
     * pending when the connection closes is rejected `disconnected`, not
     * retried (the backend may have run it: retry yourself if it is
     * idempotent).
     */
    call<T = unknown>(method: string, args?: unknown[], kwargs?: Record<string, unknown>, options?: CallOptions): Promise<T>;
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
    sendMessage(message: OutgoingMessage, options?: CallOptions): Promise<MessageSent>;
    /**
     * Answers the backend's calls of `method` (`POST /api/v1/calls`, WebSocket
     * only): what `handler` returns (or resolves to) is the `result`; what it
     * throws is an `error` with its `code` (when valid, else `client_error`)
     * and message. Returns a function that removes the handler. A call of a
     * method without handler is answered `error` `unknown_method`.
     */
    onCall(method: string, handler: CallHandler): () => void;
    /**
     * Follows the lattice `namespace` (the connection needs an identity): a
     * view merging the gateway's full state and changes, subscribed again
     * after every reconnection. The same view for the same namespace;
     * at most MAX_LATTICES.
     */
    lattice(namespace: string): LatticeView;
    /** Who is present on `channel` (a presence channel of the subscription), sorted. */
    present(channel: string): string[];
    /**
     * Acknowledges notifications: a `notification_ack` message over a
     * WebSocket; over SSE or long-polling, `POST /notifications/ack` with the
     * connect token. Rejects with a `CallError` when it could not be sent.
     */
    ackNotifications(ids: string[], fetchFn?: typeof fetch): Promise<void>;
    /** Fetches the subscription (if needed) and connects; resolves once it is sent on its way. */
    connect(): Promise<void>;
    /** Closes the connection (or leaves the shared one) for good. */
    close(): void;
    /** Where each channel stands (for debugging and tests). */
    since(channel: string): import("./types").Since | undefined;
    private deliver;
    /** A reply to one of the client's own messages (`connect`, `lattice_subscribe`, `notification_ack`). */
    private sideReply;
    /** The answer (`result` or `error` with its `id`) to one of this client's calls. */
    private answered;
    /** The gateway's answer to the message sent as `id`: its `ack`, or an `error` with the refusal's code. */
    private messageAnswered;
    /** Rejects every pending call (the connection they went on is gone). */
    private failCalls;
    /** A backend's call: the handler's result or error goes back with the call's `id`. */
    private incomingCall;
    /** `present` replaces a channel's set; `joined` and `left` update it (as set operations). */
    private presenceMessage;
    /** Fetches a connect token and sends `connect` on the open connection (if any); schedules the next before `exp`. */
    private refreshConnect;
    private connectMessage;
    private latticeSubscribe;
    /** What the client sends on each WebSocket opening: `connect` before subscribing, lattices after. */
    private greeting;
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
    /** Whether the page counts as in use: visible, or (with `idle`) not idle. */
    private visible;
    /**
     * With `idle`: the page falls asleep when hidden `hiddenAfter` ms or
     * without user activity `inactiveAfter` ms (the connection closes, state
     * `closed` with reason `hidden` or `inactive`), and wakes at the next
     * activity or when shown (it reconnects and resumes every channel with
     * `since`: no event is lost meanwhile, within the channel's history).
     */
    private watchIdle;
    private watchPage;
}
