/**
 * Offset bookkeeping: what each channel has seen, so that a reconnection
 * resumes where the stream stopped (`since`, or the SSE/poll cursor) and no
 * event reaches the application twice.
 */

import type { DataMessage, ServerMessage, Since } from './types';

interface Position {
  /** Unknown until an ack or a cursor names it. */
  epoch?: string;
  /** The last offset seen (delivered, or covered by an ack or cursor). */
  offset: number;
}

export class ResumeState {
  private channels = new Map<string, Position>();

  /**
   * Whether a data message is new to its channel (offset above the last
   * seen); records it if so. Offsets of one channel only grow within an
   * epoch, so anything at or below the mark is a duplicate.
   */
  accept(m: DataMessage): boolean {
    const p = this.channels.get(m.channel);
    if (p && m.offset <= p.offset) return false;
    this.channels.set(m.channel, { epoch: p?.epoch, offset: m.offset });
    return true;
  }

  /**
   * Records that `channel` stands at `offset` of `epoch` (an ack or a
   * cursor). Within the known epoch the mark only rises; another epoch
   * replaces it (the history was lost: offsets start again).
   */
  position(channel: string, epoch: string, offset: number): void {
    const p = this.channels.get(channel);
    if (!p || p.epoch === undefined || p.epoch === epoch) {
      this.channels.set(channel, { epoch, offset: Math.max(offset, p?.offset ?? 0) });
    } else {
      this.channels.set(channel, { epoch, offset });
    }
  }

  /** Takes in every position an `ack` (or a synthetic `_position`) lists. */
  acknowledge(m: ServerMessage): void {
    const channels = m.channels as Record<string, { epoch?: unknown; offset?: unknown }> | undefined;
    if (!channels || typeof channels !== 'object') return;
    for (const [name, c] of Object.entries(channels)) {
      if (c && typeof c.epoch === 'string' && typeof c.offset === 'number') this.position(name, c.epoch, c.offset);
    }
  }

  /**
   * A `reset`: forgets the channel (or every channel when none is named), so
   * the events that follow, numbered in a new epoch, are not taken for
   * duplicates. `shutdown` is no reset of the stream: the position is kept to
   * resume from.
   */
  reset(channel: string | undefined, reason: string): void {
    if (reason === 'shutdown') return;
    if (channel === undefined) this.channels.clear();
    else this.channels.delete(channel);
  }

  /** Where to resume `channel` from, once its epoch is known. */
  since(channel: string): Since | undefined {
    const p = this.channels.get(channel);
    return p?.epoch === undefined ? undefined : { epoch: p.epoch, offset: p.offset };
  }

  /**
   * Moves the mark down to `since` (same epoch), or takes it when nothing is
   * known; true when it changed. A shared connection resumes from the
   * earliest point any of its tabs needs; each tab drops what it already has.
   */
  lower(channel: string, since: Since): boolean {
    const p = this.channels.get(channel);
    if (!p || p.epoch === undefined) {
      this.channels.set(channel, { epoch: since.epoch, offset: Math.min(since.offset, p?.offset ?? since.offset) });
      return true;
    }
    if (p.epoch === since.epoch && since.offset < p.offset) {
      p.offset = since.offset;
      return true;
    }
    return false;
  }

  /** Takes in a cursor the gateway issued (SSE `id:`, poll `cursor`), for `app`. */
  absorbCursor(app: string, cursor: string): Record<string, Since> | undefined {
    const entries = decodeCursor(cursor);
    if (!entries) return undefined;
    const seen: Record<string, Since> = {};
    for (const [a, channel, epoch, offset] of entries) {
      if (a !== app) continue;
      this.position(channel, epoch, offset);
      seen[channel] = this.since(channel)!;
    }
    return seen;
  }

  /** A cursor for `app`'s `channels`, from what this state knows (those without an epoch are left out). */
  cursor(app: string, channels: Iterable<string>): string | undefined {
    const entries: CursorEntry[] = [];
    for (const name of channels) {
      const s = this.since(name);
      if (s) entries.push([app, name, s.epoch, s.offset]);
    }
    return entries.length ? encodeCursor(entries) : undefined;
  }
}

/** One subscription's position in a cursor: `[app, channel, epoch, offset]`. */
export type CursorEntry = [string, string, string, number];

/** Cursors are base64url (no padding) of the JSON list of entries. */
export function encodeCursor(entries: CursorEntry[]): string {
  const bytes = new TextEncoder().encode(JSON.stringify(entries));
  let binary = '';
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/** The entries of a cursor; undefined if it is not one the gateway issues. */
export function decodeCursor(cursor: string): CursorEntry[] | undefined {
  try {
    const binary = atob(cursor.trim().replace(/-/g, '+').replace(/_/g, '/'));
    const bytes = Uint8Array.from(binary, (c) => c.charCodeAt(0));
    const entries: unknown = JSON.parse(new TextDecoder().decode(bytes));
    if (!Array.isArray(entries)) return undefined;
    const valid = entries.every(
      (e) =>
        Array.isArray(e) && e.length === 4 && typeof e[0] === 'string' && typeof e[1] === 'string' &&
        typeof e[2] === 'string' && typeof e[3] === 'number',
    );
    return valid ? (entries as CursorEntry[]) : undefined;
  } catch {
    return undefined;
  }
}
