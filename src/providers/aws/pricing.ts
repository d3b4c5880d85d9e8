// The hourly price recorded for cost accounting. Spot: the newest price in DescribeSpotPriceHistory
// for the instance's type and zone. On-demand: unknown (the Price List API is a separate service
// in two regions only); runctl records no number rather than a guessed one.
import { DescribeSpotPriceHistoryCommand } from '@aws-sdk/client-ec2';
import type { MarketKind } from '../types.js';
import type { AwsClients } from './clients.js';

const CACHE_MS = 10 * 60 * 1000;
const LINUX = ['Linux/UNIX', 'Linux/UNIX (Amazon VPC)'];

export class SpotPrices {
  private readonly cache = new Map<string, { at: number; price: number | undefined }>();

  /** USD per hour, or undefined when unknown. Never throws: a price is bookkeeping, not a reason to fail a launch. */
  async pricePerHour(clients: AwsClients, market: MarketKind, type?: string, zone?: string): Promise<number | undefined> {
    if (market !== 'spot' || !type || !zone) return undefined;
    const key = `${clients.region}/${type}/${zone}`;
    const hit = this.cache.get(key);
    if (hit && Date.now() - hit.at < CACHE_MS) return hit.price;
    let price: number | undefined;
    try {
      const out = await clients.ec2.send(
        new DescribeSpotPriceHistoryCommand({
          InstanceTypes: [type as never],
          AvailabilityZone: zone,
          ProductDescriptions: LINUX,
          StartTime: new Date(),
          MaxResults: 20,
        }),
      );
      const newest = (out.SpotPriceHistory ?? [])
        .filter((p) => p.InstanceType === type && p.AvailabilityZone === zone && p.SpotPrice)
        .sort((a, b) => (b.Timestamp?.getTime() ?? 0) - (a.Timestamp?.getTime() ?? 0))[0];
      const parsed = newest ? Number(newest.SpotPrice) : NaN;
      price = Number.isFinite(parsed) && parsed > 0 ? parsed : undefined;
    } catch {
      price = undefined;
    }
    this.cache.set(key, { at: Date.now(), price });
    return price;
  }
}
