// What one instance cost: its billed price steps integrated over its life. Pure (the clock is an
// argument). The rules come from EC2's billing, not from runctl:
// - a spot instance pays the spot price in force for its type, zone and product description at
//   each moment, which DescribeSpotPriceHistory lists as steps (the first step is the price in
//   force at the window's start: "the operation also returns the last price change before the
//   start time", EC2 API reference); a price holds until the next step;
// - Linux instances are billed per second with a 60-second minimum (EC2 user guide, "Billing for
//   instance usage").
// A cost is never guessed: an instance without a known price has an unknown cost and says why.
import type { InstancePrice, PriceStep } from '../providers/types.js';
import type { InstanceRecord } from '../state/types.js';

/** EC2 per-second billing's minimum, in seconds (EC2 user guide). */
export const MIN_BILLED_SECONDS = 60;

/** What an instance cost over its life so far; USD amounts; unknown ones absent with a reason. */
export interface InstanceCost {
  /** Billed seconds: from launch to its end (or `now`), at least MIN_BILLED_SECONDS. */
  seconds: number;
  /** USD at the billed price; absent when the price is unknown. */
  costUSD?: number;
  /** Why costUSD is absent. */
  unknown?: string;
  /** What the same seconds cost on-demand (USD), when the on-demand price is known. */
  onDemandUSD?: number;
  /** The billed price in force at the end of the window (USD/hour). */
  usdPerHour?: number;
}

/**
 * USD for running from `fromMs` to `toMs` (epoch ms) at the stepped price. Steps are ordered by
 * `from`; each holds until the next. Returns undefined when the first step starts after `fromMs`
 * (the price at the start is not known; pricing that stretch would be a guess).
 */
export function integratePrice(steps: readonly PriceStep[], fromMs: number, toMs: number): number | undefined {
  if (toMs <= fromMs) return 0;
  const sorted = [...steps].sort((a, b) => Date.parse(a.from) - Date.parse(b.from));
  if (sorted.length === 0 || Date.parse(sorted[0]!.from) > fromMs) return undefined;
  let usd = 0;
  for (let i = 0; i < sorted.length; i++) {
    const start = Math.max(fromMs, Date.parse(sorted[i]!.from));
    const end = Math.min(toMs, i + 1 < sorted.length ? Date.parse(sorted[i + 1]!.from) : Infinity);
    if (end > start) usd += ((end - start) / 3_600_000) * sorted[i]!.usdPerHour;
  }
  return usd;
}

/** The step in force at `atMs`, if any. */
export function priceAt(steps: readonly PriceStep[], atMs: number): number | undefined {
  let found: PriceStep | undefined;
  for (const s of steps) if (Date.parse(s.from) <= atMs && (!found || Date.parse(s.from) >= Date.parse(found.from))) found = s;
  return found?.usdPerHour;
}

/**
 * The prices an instance record carries: `price` as the provider last read it, else (a record
 * written before the ledger) the single price read at launch, which held from its launch.
 */
export function recordedPrice(record: InstanceRecord): InstancePrice | undefined {
  if (record.price) return record.price;
  if (record.pricePerHour === undefined) return undefined;
  return { steps: [{ from: record.launchedAt, usdPerHour: record.pricePerHour }], source: 'price read at launch', fetchedAt: record.launchedAt };
}

/** The cost of one instance from launch to its end, or to `now` while it runs. */
export function instanceCost(record: InstanceRecord, now: number): InstanceCost {
  const from = Date.parse(record.launchedAt);
  const end = record.endedAt ? Date.parse(record.endedAt) : now;
  const to = Math.max(end, from + MIN_BILLED_SECONDS * 1000);
  const seconds = Math.max(0, (to - from) / 1000);
  const price = recordedPrice(record);
  const out: InstanceCost = { seconds };
  if (!price) {
    out.unknown = 'its price has not been read yet';
  } else if (!price.steps || price.steps.length === 0) {
    out.unknown = price.unknown ?? 'the provider gave no price';
  } else {
    const usd = integratePrice(price.steps, from, to);
    if (usd === undefined) out.unknown = `no price is recorded for its launch at ${record.launchedAt} (${price.source})`;
    else out.costUSD = roundUSD(usd);
    const at = priceAt(price.steps, to);
    if (at !== undefined) out.usdPerHour = at;
  }
  if (price?.onDemandUSDPerHour !== undefined) out.onDemandUSD = roundUSD((seconds / 3600) * price.onDemandUSDPerHour);
  return out;
}

/** Rounds to a millionth of a dollar: finer than any bill, coarse enough to compare. */
export function roundUSD(usd: number): number {
  return Math.round(usd * 1e6) / 1e6;
}
