/** Exponential backoff with full jitter. */

import type { BackoffOptions } from './types';

export const DEFAULT_BACKOFF = { base: 500, max: 30_000 };

/**
 * The delay before retry number `attempt` (0 for the first): uniform in
 * [0, min(max, base * 2^attempt)).
 */
export function backoffDelay(attempt: number, options: BackoffOptions = {}, random: () => number = Math.random): number {
  const base = options.base ?? DEFAULT_BACKOFF.base;
  const max = options.max ?? DEFAULT_BACKOFF.max;
  const cap = Math.min(max, base * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * cap);
}

/** Counts attempts; `reset()` once a connection proved itself. */
export class Backoff {
  attempt = 0;

  constructor(private options: BackoffOptions = {}, private random: () => number = Math.random) {}

  /** The delay before the next attempt. */
  next(): number {
    return backoffDelay(this.attempt++, this.options, this.random);
  }

  reset(): void {
    this.attempt = 0;
  }
}
