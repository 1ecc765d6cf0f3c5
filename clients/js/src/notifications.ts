/**
 * Notification ids a client has already emitted. The gateway delivers a
 * notification at least once: again at every connect until it is
 * acknowledged (a reconnection, a page resuming after idling), so without
 * this a page would show the same notification twice.
 */

/**
 * Ids remembered at most: the gateway's default `max_pending` per user. Past
 * it the oldest id is forgotten (a notification that old delivered again is
 * emitted again: at least once, never lost).
 */
export const MAX_SEEN_NOTIFICATIONS = 1000;

export class SeenNotifications {
  /** Insertion-ordered: the first is the oldest. */
  private ids = new Set<string>();

  constructor(private max = MAX_SEEN_NOTIFICATIONS) {}

  /** True the first time `id` is seen (it is then remembered). */
  first(id: string): boolean {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    if (this.ids.size > this.max) {
      const oldest = this.ids.values().next().value;
      if (oldest !== undefined) this.ids.delete(oldest);
    }
    return true;
  }

  /** Acknowledged ids never come back: no need to remember them. */
  forget(ids: Iterable<string>): void {
    for (const id of ids) this.ids.delete(id);
  }

  get size(): number {
    return this.ids.size;
  }
}
