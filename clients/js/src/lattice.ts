/**
 * Lattices (docs/lattices.md): a namespace's values, shared and the user's
 * own, kept by merging. Merging is commutative, associative and idempotent,
 * so a change seen twice, late, or before a `full` that already holds it
 * does no harm: the view converges whatever the order.
 */

import { Emitter } from './emitter';
import type { ServerMessage } from './types';

/** One value of a lattice, in its wire form. */
export type LatticeValue =
  | { counter: number }
  | { set: string[] }
  | { register: { value: unknown; ts: number } };

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
  error: { code: string; message: string };
}

/** The rank of a value's type: a key changing type keeps the greater (counter < set < register). */
function rank(v: LatticeValue): number {
  return 'register' in v ? 2 : 'set' in v ? 1 : 0;
}

/** JSON text with object keys sorted (the order registers compare values in). */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value && typeof value === 'object') {
    const o = value as Record<string, unknown>;
    return `{${Object.keys(o).sort().filter((k) => o[k] !== undefined).map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** Compares two strings by their UTF-8 bytes, as the gateway does. */
function compareBytes(a: string, b: string): number {
  const x = new TextEncoder().encode(a);
  const y = new TextEncoder().encode(b);
  for (let i = 0; i < Math.min(x.length, y.length); i++) if (x[i] !== y[i]) return x[i] - y[i];
  return x.length - y.length;
}

/** A value in one of the three forms, or undefined (an unknown form is left out of the view). */
export function latticeValue(v: unknown): LatticeValue | undefined {
  if (!v || typeof v !== 'object') return undefined;
  const o = v as Record<string, unknown>;
  if (typeof o.counter === 'number' && Number.isFinite(o.counter)) return { counter: o.counter };
  if (Array.isArray(o.set) && o.set.every((e) => typeof e === 'string')) return { set: [...new Set(o.set as string[])].sort() };
  const r = o.register as { value?: unknown; ts?: unknown } | undefined;
  if (r && typeof r === 'object' && typeof r.ts === 'number' && Number.isFinite(r.ts)) return { register: { value: r.value ?? null, ts: r.ts } };
  return undefined;
}

/** The merge of two values: commutative, associative, idempotent. */
export function mergeValue(a: LatticeValue, b: LatticeValue): LatticeValue {
  const ra = rank(a);
  const rb = rank(b);
  if (ra !== rb) return ra > rb ? a : b;
  if ('counter' in a && 'counter' in b) return { counter: Math.max(a.counter, b.counter) };
  if ('set' in a && 'set' in b) return { set: [...new Set([...a.set, ...b.set])].sort() };
  const x = (a as { register: { value: unknown; ts: number } }).register;
  const y = (b as { register: { value: unknown; ts: number } }).register;
  if (x.ts !== y.ts) return x.ts > y.ts ? a : b;
  return compareBytes(canonicalJson(x.value), canonicalJson(y.value)) >= 0 ? a : b;
}

/** Merges `change` into `into` (in place); returns the keys whose value changed, with their merged value. */
export function mergeMap(into: LatticeMap, change: unknown): LatticeMap {
  const changed: LatticeMap = {};
  if (!change || typeof change !== 'object') return changed;
  for (const [key, raw] of Object.entries(change as Record<string, unknown>)) {
    const v = latticeValue(raw);
    if (!v) continue;
    const old = into[key];
    const merged = old ? mergeValue(old, v) : v;
    if (!old || canonicalJson(old) !== canonicalJson(merged)) {
      into[key] = merged;
      changed[key] = merged;
    }
  }
  return changed;
}

/**
 * A client's view of one lattice namespace. `shared` and `user` hold the
 * merged values; `change` fires after each message that changed something
 * (and after each `full` state). The client subscribes again after every
 * reconnection (the gateway then sends the full state again).
 */
export class LatticeView extends Emitter<LatticeEvents> {
  shared: LatticeMap = {};
  user: LatticeMap = {};
  /** True once a full state came. */
  ready = false;
  closed = false;

  constructor(readonly namespace: string, private onClose: (view: LatticeView) => void = () => {}) {
    super();
  }

  /** Applies a `lattice` message of this namespace: `full` replaces the view, a change is merged into it. */
  apply(m: ServerMessage): void {
    if (this.closed) return;
    const full = m.full === true;
    if (full) {
      this.shared = {};
      this.user = {};
      this.ready = true;
    }
    const shared = mergeMap(this.shared, m.shared);
    const user = mergeMap(this.user, m.user);
    if (full || Object.keys(shared).length || Object.keys(user).length) {
      this.emit('change', { namespace: this.namespace, full, shared: full ? { ...this.shared } : shared, user: full ? { ...this.user } : user });
    }
  }

  /** @internal The gateway refused the subscription. */
  refused(code: string, message: string): void {
    this.emit('error', { code, message });
  }

  /** Stops following the namespace (`lattice_unsubscribe`). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.onClose(this);
  }
}
