// Keeps a run's ledger current: asks the provider for the prices of its instances (rarely: a price
// read is kept in the instance record) and re-derives the ledger (src/reconciler/ledger.ts) from
// the event log when events were appended, else re-costs the one it has. The budget
// (spec.budget.maxCostUSD) reads status.costUSD, which is the ledger's total.
import { RetryableError, type Provider } from '../providers/types.js';
import type { InstanceRecord, RunEvent, RunStatus } from '../state/types.js';
import { instanceCost } from './ledger-cost.js';
import { buildLedger, timelineFromEvents, timelineOnly } from './ledger.js';

/**
 * How often a live instance's prices are read again. Spot prices move a few times a day at most
 * (EC2 user guide, "Spot Instance pricing history"); ten minutes keeps a run's cost within minutes
 * of the bill at one DescribeSpotPriceHistory per instance per ten minutes.
 */
export const PRICE_REFRESH_MS = 10 * 60_000;

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
  const due = status.instances.filter((r) => needsPrice(r, now));
  if (due.length === 0) return status;
  const instances = [...status.instances];
  for (const record of due) {
    const to = record.endedAt ?? new Date(now).toISOString();
    try {
      const price = await provider.priceInstance(record, { from: record.launchedAt, to }, status.spec);
      instances[instances.indexOf(record)] = { ...record, price };
    } catch (err) {
      if (!(err instanceof RetryableError)) {
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
