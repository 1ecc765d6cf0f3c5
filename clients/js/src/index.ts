/**
 * @chouquette/client: the browser client of the Chouquette push gateway.
 *
 * ```js
 * import { Chouquette } from '@chouquette/client';
 * const client = new Chouquette({
 *   url: 'wss://push.example.com/ws',
 *   getSubscription: () => fetch('/api/get_subscription?borne=B1').then((r) => r.json()),
 * });
 * client.on('data', (event) => console.log(event.offset, event.data));
 * client.on('reset', () => refetchEverything());
 * client.connect();
 * ```
 */

export { CallError, Chouquette, MAX_LATTICES, MAX_PENDING_CALLS, notificationAckRequest, notificationsAckUrl, transportUrls } from './client';
export { MAX_SEEN_NOTIFICATIONS, SeenNotifications } from './notifications';
export { LatticeView, canonicalJson, mergeMap, mergeValue } from './lattice';
export type { LatticeChange, LatticeEvents, LatticeMap, LatticeValue } from './lattice';
export { Emitter } from './emitter';
export type * from './types';
