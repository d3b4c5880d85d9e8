// The delivery ledger: what the run's event log says about each notification owed. Pure.
//
// A run event stamped with `data.notify` (receivers.ts) owes one message to each receiver listed.
// Each attempt to send it leaves records in the same event log, with ids derived from the
// delivery key `<event id>><receiver id>` and the attempt number, so a replayed append is a no-op:
//   <key>:a<n>:handoff   the whole request was handed to the network (written before the answer)
//   <key>:a<n>:<outcome> how attempt n ended: delivered | retry | failed | unconfirmed | skipped
// A delivery is settled by any outcome but `retry`. One with a `handoff` and no outcome was in
// flight when its controller died: the receiver may have it, so it is not sent again (settled as
// `unconfirmed`). docs/notifications.md states the guarantee this gives.
import type { RunEvent } from '../state/types.js';
import { notificationOf, stampedReceivers, type NotificationEvent } from './receivers.js';

export const DELIVERY_OUTCOMES = ['delivered', 'retry', 'failed', 'unconfirmed', 'skipped'] as const;
export type DeliveryOutcome = (typeof DELIVERY_OUTCOMES)[number];

/** One notification owed and not settled yet. */
export interface OwedDelivery {
  /** `<event id>><receiver id>`; also the Idempotency-Key header of every attempt. */
  key: string;
  source: RunEvent;
  receiverId: string;
  event: NotificationEvent;
  /** Attempts that ended in `retry` so far; the next attempt is number failedAttempts + 1. */
  failedAttempts: number;
  /** Epoch ms before which the next attempt must not start (backoff), if any. */
  notBefore?: number;
  /** The next attempt was handed to the network and never answered (its controller stopped). */
  handedOff: boolean;
}

export function deliveryKey(sourceId: string, receiverId: string): string {
  return `${sourceId}>${receiverId}`;
}

export function recordId(key: string, attempt: number, stage: 'handoff' | DeliveryOutcome): string {
  return `${key}:a${attempt}:${stage}`;
}

/** Every notification the log owes and has not settled, in log order. */
export function owedDeliveries(events: readonly RunEvent[]): OwedDelivery[] {
  const records = new Map<string, { retries: number; notBefore?: number; settled: boolean; handoffs: Set<number> }>();
  for (const e of events) {
    if (e.kind !== 'notification') continue;
    const key = typeof e.data?.key === 'string' ? e.data.key : undefined;
    const attempt = Number(e.data?.attempt);
    if (!key || !Number.isInteger(attempt)) continue;
    let r = records.get(key);
    if (!r) records.set(key, (r = { retries: 0, settled: false, handoffs: new Set() }));
    if (e.data?.stage === 'handoff') {
      r.handoffs.add(attempt);
      continue;
    }
    const outcome = e.data?.outcome;
    if (outcome === 'retry') {
      r.retries = Math.max(r.retries, attempt);
      const at = Date.parse(String(e.data?.retryAt ?? ''));
      if (Number.isFinite(at)) r.notBefore = Math.max(r.notBefore ?? 0, at);
    } else if (typeof outcome === 'string') {
      r.settled = true;
    }
  }
  const owed: OwedDelivery[] = [];
  for (const e of events) {
    const ids = stampedReceivers(e);
    if (ids.length === 0) continue;
    const event = notificationOf(e);
    if (!event) continue;
    for (const receiverId of ids) {
      const key = deliveryKey(e.id, receiverId);
      const r = records.get(key);
      if (r?.settled) continue;
      const failedAttempts = r?.retries ?? 0;
      owed.push({
        key,
        source: e,
        receiverId,
        event,
        failedAttempts,
        ...(r?.notBefore !== undefined ? { notBefore: r.notBefore } : {}),
        handedOff: r?.handoffs.has(failedAttempts + 1) ?? false,
      });
    }
  }
  return owed;
}
