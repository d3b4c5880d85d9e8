// Keeps a run's ledger current: asks the provider for the prices of its instances (rarely: a price
// read is kept in the instance record) and re-derives the ledger (src/reconciler/ledger.ts) from
// the event log when events were appended, else re-costs the one it has. The budget
// (spec.budget.maxCostUSD) reads status.costUSD, which is the ledger's total.
import { RetryableError, type Provider } from '../providers/types.js';
import type { InstanceRecord, RunEvent, RunStatus } from '../state/types.js';
import { instanceCost, MIN_BILLED_SECONDS } from './ledger-cost.js';
import { buildLedger, timelineFromEvents, timelineOnly } from './ledger.js';

/**
 * How often a live instance's prices are read again. Spot prices move a few times a day at most
 * (EC2 user guide, "Spot Instance pricing history"); ten minutes keeps a run's cost within minutes
 * of the bill at one DescribeSpotPriceHistory per instance per ten minutes.
 */
export const PRICE_REFRESH_MS = 10 * 60_000;

/** After a transient failure, an instance's prices are asked for again no sooner than this. */
export const PRICE_RETRY_MS = 60_000;

// Per provider object (one per controller process): instance id -> epoch ms before which a price
// that failed transiently is not asked for again, so a throttled price API is not hammered.
const retryAfter = new WeakMap<Provider, Map<string, number>>();

/** True when the record's prices are missing, stale for a live instance, or do not yet cover its end. */
export function needsPrice(record: InstanceRecord, now: number): boolean {
  const price = record.price;
  if (!price) return true;
  const fetched = Date.parse(price.fetchedAt);
  if (record.endedAt) return fetched < Date.parse(record.endedAt);
  return now - fetched >= PRICE_REFRESH_MS;
}

/**
 * Reads the prices of the instances that need them. A transient failure keeps what was known and
 * is retried on a later pass: a price is bookkeeping, never a reason to stall a run. A provider
 * that cannot price (no priceInstance) leaves the records as they are.
 */
export async function priceInstances(provider: Provider, status: RunStatus, now: number): Promise<RunStatus> {
  if (!provider.priceInstance) return status;
  let backoff = retryAfter.get(provider);
  if (!backoff) retryAfter.set(provider, (backoff = new Map()));
  const due = status.instances.filter((r) => needsPrice(r, now) && (backoff.get(r.id) ?? 0) <= now);
  if (due.length === 0) return status;
  const instances = [...status.instances];
  for (const record of due) {
    // The billed window: EC2's 60-second minimum included, never past now.
    const launched = Date.parse(record.launchedAt);
    const end = record.endedAt ? Math.min(now, Math.max(Date.parse(record.endedAt), launched + MIN_BILLED_SECONDS * 1000)) : now;
    try {
      const price = await provider.priceInstance(record, { from: record.launchedAt, to: new Date(end).toISOString() }, status.spec);
      instances[instances.indexOf(record)] = { ...record, price };
      backoff.delete(record.id);
    } catch (err) {
      if (err instanceof RetryableError) backoff.set(record.id, now + PRICE_RETRY_MS);
      else {
        const message = err instanceof Error ? err.message : String(err);
        instances[instances.indexOf(record)] = { ...record, price: { unknown: message, source: status.spec.provider, fetchedAt: new Date(now).toISOString() } };
      }
    }
  }
  return { ...status, instances };
}

/**
 * The run with its ledger re-derived (from `events` when given, else from the ledger it has),
 * re-costed at `now`, each instance record's costUSD and the run's costUSD set from it.
 */
export function withLedger(status: RunStatus, now: number, events?: readonly RunEvent[]): RunStatus {
  const timeline = events ? timelineFromEvents(events) : (status.ledger?.attempts ?? []).map(timelineOnly);
  const instances = status.instances.map((r) => {
    const cost = instanceCost(r, now).costUSD;
    if (cost === r.costUSD) return r;
    const next = { ...r };
    if (cost === undefined) delete next.costUSD;
    else next.costUSD = cost;
    return next;
  });
  const ledger = buildLedger(timeline, instances, now);
  return { ...status, instances, ledger, costUSD: ledger.costUSD };
}
