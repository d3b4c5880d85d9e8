// Spot prices over an instance's life from EC2 DescribeSpotPriceHistory. With a StartTime the API
// returns every price change in the window and also "the last price change before the start time,
// which is the effective price as of the start time" (EC2 API reference), so the steps cover the
// instance from its launch. Prices are per instance type, Availability Zone and product
// description; runctl launches Linux images, billed as `Linux/UNIX` (the VPC variant's name on
// accounts that still list it is `Linux/UNIX (Amazon VPC)`).
import { DescribeSpotPriceHistoryCommand, type SpotPrice } from '@aws-sdk/client-ec2';
import type { PriceStep } from '../types.js';
import type { AwsClients } from './clients.js';
import { awsCall } from './errors.js';

export const LINUX_PRODUCTS = ['Linux/UNIX', 'Linux/UNIX (Amazon VPC)'] as const;

/**
 * Steps from DescribeSpotPriceHistory items for one type and zone, oldest first, a step kept only
 * where the price changes. Items of another type or zone are ignored; `Linux/UNIX` is used when
 * present, else the VPC variant.
 */
export function spotSteps(items: readonly SpotPrice[], instanceType: string, zone: string): { steps: PriceStep[]; product?: string } {
  const mine = items.filter((p) => p.InstanceType === instanceType && p.AvailabilityZone === zone && p.Timestamp && p.SpotPrice);
  const product = LINUX_PRODUCTS.find((d) => mine.some((p) => p.ProductDescription === d));
  const sorted = mine.filter((p) => p.ProductDescription === product).sort((a, b) => (a.Timestamp as Date).getTime() - (b.Timestamp as Date).getTime());
  const steps: PriceStep[] = [];
  for (const p of sorted) {
    const usd = Number(p.SpotPrice);
    if (!Number.isFinite(usd) || usd <= 0) continue;
    if (steps.at(-1)?.usdPerHour === usd) continue;
    steps.push({ from: (p.Timestamp as Date).toISOString(), usdPerHour: usd });
  }
  return product ? { steps, product } : { steps };
}

/**
 * The spot price steps of `instanceType` in `zone` over [from, to] (every page). Throws the
 * classified error when EC2 cannot be asked.
 */
export async function spotPriceHistory(clients: AwsClients, instanceType: string, zone: string, from: Date, to: Date): Promise<{ steps: PriceStep[]; product?: string }> {
  const items: SpotPrice[] = [];
  let token: string | undefined;
  do {
    const out = await awsCall({ service: 'ec2', operation: 'DescribeSpotPriceHistory', region: clients.region, instanceType }, () =>
      clients.ec2.send(
        new DescribeSpotPriceHistoryCommand({
          InstanceTypes: [instanceType as never],
          AvailabilityZone: zone,
          ProductDescriptions: [...LINUX_PRODUCTS],
          StartTime: from,
          EndTime: to,
          MaxResults: 1000,
          NextToken: token,
        }),
      ),
    );
    items.push(...(out.SpotPriceHistory ?? []));
    token = out.NextToken || undefined;
  } while (token);
  return spotSteps(items, instanceType, zone);
}

/** The current spot price of `instanceType` in every zone EC2 lists (for `plan`), USD/hour by zone. */
export async function currentSpotPrices(clients: AwsClients, instanceType: string): Promise<Map<string, number>> {
  const now = new Date();
  const out = await awsCall({ service: 'ec2', operation: 'DescribeSpotPriceHistory', region: clients.region, instanceType }, () =>
    clients.ec2.send(
      new DescribeSpotPriceHistoryCommand({ InstanceTypes: [instanceType as never], ProductDescriptions: [...LINUX_PRODUCTS], StartTime: now, EndTime: now, MaxResults: 1000 }),
    ),
  );
  const byZone = new Map<string, number>();
  const zones = new Set((out.SpotPriceHistory ?? []).map((p) => p.AvailabilityZone).filter((z): z is string => !!z));
  for (const zone of zones) {
    const { steps } = spotSteps(out.SpotPriceHistory ?? [], instanceType, zone);
    const last = steps.at(-1);
    if (last) byZone.set(zone, last.usdPerHour);
  }
  return byZone;
}
