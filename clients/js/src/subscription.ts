/** Subscribe messages: resuming them with `since`, and telling them apart. */

import type { ChannelRequest, SubscribeMessage, Since } from './types';

/** A random v4 UUID (for `uuid` of client messages). */
export function uuid(): string {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  const hex = [...Array(32)].map(() => Math.floor(Math.random() * 16).toString(16));
  hex[12] = '4';
  hex[16] = ((parseInt(hex[16], 16) & 3) | 8).toString(16);
  const h = hex.join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/**
 * The subscribe message to send: the backend's, unchanged but for a fresh
 * `uuid` and, per channel, `since` where `since(channel)` knows one.
 */
export function buildSubscribe(
  app: string,
  channels: Record<string, ChannelRequest>,
  since: (channel: string) => Since | undefined = () => undefined,
): SubscribeMessage {
  const out: Record<string, ChannelRequest> = {};
  for (const [name, request] of Object.entries(channels)) {
    const { since: _ignored, ...rest } = request;
    const s = since(name);
    out[name] = s ? { ...rest, since: s } : { ...rest };
  }
  return { class: 'subscribe', app_id: app, uuid: uuid(), channels: out };
}

/** Checks the shape of what `getSubscription` returned. */
export function validSubscribe(m: unknown): m is SubscribeMessage {
  if (!m || typeof m !== 'object') return false;
  const s = m as SubscribeMessage;
  return (
    s.class === 'subscribe' && typeof s.app_id === 'string' && !!s.channels && typeof s.channels === 'object' &&
    Object.values(s.channels).every((c) => !!c && typeof c.filters === 'string')
  );
}

/** The claims of a JWT, read without verifying it (the gateway verifies). */
export function tokenClaims(token: string): Record<string, unknown> | undefined {
  try {
    const part = token.split('.')[1];
    const binary = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
    const claims: unknown = JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
    return claims && typeof claims === 'object' ? (claims as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * What a subscription asks for, whatever its tokens' expiry: two tabs with
 * the same identity can share one subscription on one connection; a
 * refreshed token keeps its identity.
 */
export function identity(m: SubscribeMessage): string {
  const channels = Object.keys(m.channels).sort().map((name) => {
    const token = m.channels[name].filters;
    const claims = tokenClaims(token);
    const what = claims ? { filters: claims.filters, sub: claims.sub ?? null, groups: claims.groups ?? null } : token;
    return [name, what];
  });
  return JSON.stringify([m.app_id, channels]);
}
