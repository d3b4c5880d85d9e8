// Reading AWS's price answers (issue 12): the Price List API's GetProducts document (PriceList
// entries are JSON strings) and DescribeSpotPriceHistory items, from the recorded-shape fixtures
// in test/fixtures/pricing/; the on-demand cache and its TTL; `plan`'s price from rung quotes.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { PricingClient } from '@aws-sdk/client-pricing';
import { describe, expect, it } from 'vitest';
import { onDemandFilters, parseOnDemandPrice, PriceList, priceListEndpointRegion } from '../../../src/providers/aws/price-list.js';
import { spotSteps } from '../../../src/providers/aws/spot-history.js';
import { TerminalError } from '../../../src/providers/types.js';
import { priceFromQuotes } from '../../../src/reconciler/plan.js';
import { testSpec } from '../../support/runs.js';

const FIXTURES = path.resolve('test/fixtures/pricing');
const products = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'get-products-us-east-1.json'), 'utf8')) as { PriceList: string[] };

describe('on-demand prices from GetProducts', () => {
  it('reads terms.OnDemand.*.priceDimensions.*.pricePerUnit.USD from the JSON strings, ignoring Reserved terms', () => {
    const shared = products.PriceList.filter((p) => (JSON.parse(p) as { product: { attributes: { instanceType: string; tenancy: string } } }).product.attributes.tenancy === 'Shared');
    expect(parseOnDemandPrice(shared.filter((p) => p.includes('"g5.xlarge"')), 'us-east-1', 'g5.xlarge')).toEqual({ usdPerHour: 1.006 });
    expect(parseOnDemandPrice(shared.filter((p) => p.includes('"g6.xlarge"')), 'us-east-1', 'g6.xlarge')).toEqual({ usdPerHour: 0.8048 });
  });

  it('says why when there is no price, or when products disagree, instead of picking one', () => {
    expect(parseOnDemandPrice([], 'us-east-1', 'g5.xlarge')).toEqual({ unknown: 'the AWS price list has no on-demand hourly price for g5.xlarge (Linux, shared tenancy) in us-east-1' });
    // Unfiltered (Shared and Dedicated together): two prices, no guess.
    const both = products.PriceList.filter((p) => p.includes('"g5.xlarge"'));
    expect(parseOnDemandPrice(both, 'us-east-1', 'g5.xlarge')).toMatchObject({ unknown: expect.stringContaining('several on-demand prices') });
    expect(parseOnDemandPrice(['not json'], 'us-east-1', 'g5.xlarge')).toMatchObject({ unknown: expect.any(String) });
  });

  it('asks with the documented filters at the nearest of the three endpoints', () => {
    expect(Object.fromEntries(onDemandFilters('eu-west-1', 'g5.xlarge').map((f) => [f.Field, f.Value]))).toEqual({
      instanceType: 'g5.xlarge',
      regionCode: 'eu-west-1',
      operatingSystem: 'Linux',
      tenancy: 'Shared',
      preInstalledSw: 'NA',
      capacitystatus: 'Used',
    });
    expect(['us-west-2', 'eu-west-1', 'ap-northeast-1', 'sa-east-1'].map(priceListEndpointRegion)).toEqual(['us-east-1', 'eu-central-1', 'ap-south-1', 'us-east-1']);
  });

  it('keeps answers for a day, across processes through its cache file; a failure is thrown classified, not cached', async () => {
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-prices-')), 'price-list.json');
    let calls = 0;
    let fail = false;
    const client = (() => ({
      send: async () => {
        calls++;
        if (fail) throw Object.assign(new Error('User is not authorized to perform: pricing:GetProducts'), { name: 'AccessDeniedException', $metadata: { httpStatusCode: 400 } });
        return { FormatVersion: 'aws_v1', PriceList: products.PriceList.filter((p) => p.includes('"g5.xlarge"') && p.includes('"Shared"')) };
      },
    })) as unknown as (region: string) => PricingClient;
    let now = 1_000_000;
    const a = new PriceList(client, { cacheFile: file, now: () => now });
    expect(await a.onDemand('us-east-1', 'g5.xlarge')).toEqual({ usdPerHour: 1.006 });
    expect(await a.onDemand('us-east-1', 'g5.xlarge')).toEqual({ usdPerHour: 1.006 });
    expect(calls).toBe(1);
    // Another process reads the file instead of asking.
    expect(await new PriceList(client, { cacheFile: file, now: () => now }).onDemand('us-east-1', 'g5.xlarge')).toEqual({ usdPerHour: 1.006 });
    expect(calls).toBe(1);
    now += 24 * 3600_000;
    fail = true;
    const err = await a.onDemand('us-east-1', 'g5.xlarge').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TerminalError);
    expect((err as Error).message).toContain('pricing:GetProducts');
    fail = false;
    expect(await a.onDemand('us-east-1', 'g5.xlarge')).toEqual({ usdPerHour: 1.006 });
    expect(calls).toBe(3);
  });
});

describe('spot price steps from DescribeSpotPriceHistory', () => {
  it('orders the items oldest first for one type and zone, keeping only changes', () => {
    const xml = fs.readFileSync(path.join(FIXTURES, 'describe-spot-price-history-us-east-1.xml'), 'utf8');
    const items = [...xml.matchAll(/<item>([\s\S]*?)<\/item>/g)].map((m) => {
      const f = (n: string) => m[1]!.match(new RegExp(`<${n}>([^<]*)</${n}>`))?.[1] as string;
      return { InstanceType: f('instanceType') as never, ProductDescription: f('productDescription') as never, SpotPrice: f('spotPrice'), Timestamp: new Date(f('timestamp')), AvailabilityZone: f('availabilityZone') };
    });
    const repeat = { ...items[0]!, Timestamp: new Date('2025-06-20T18:30:00Z') };
    expect(spotSteps([...items, repeat], 'g5.xlarge', 'us-east-1a')).toEqual({
      product: 'Linux/UNIX',
      steps: [
        { from: '2025-06-20T11:03:55.000Z', usdPerHour: 0.3987 },
        { from: '2025-06-20T17:48:12.000Z', usdPerHour: 0.4115 },
      ],
    });
    expect(spotSteps(items, 'g5.xlarge', 'us-east-1c')).toEqual({ steps: [] });
  });
});

describe('plan price from rung quotes', () => {
  it('gives the first rung\'s hourly price, the range, and the most expensive case over spec.timeouts.training', () => {
    const spec = testSpec({ provider: 'aws', resources: { market: 'spot-then-on-demand', instanceTypes: ['g5.xlarge'] }, timeouts: { training: '10h' } });
    const price = priceFromQuotes(spec, [
      { market: 'spot', instanceType: 'g5.xlarge', zone: 'us-east-1a', usdPerHour: 0.4115, source: 'spot price history' },
      { market: 'on-demand', instanceType: 'g5.xlarge', usdPerHour: 1.006, source: 'price list us-east-1' },
    ]);
    expect(price.hourlyUSD).toBe(0.4115);
    // A spot rung may cost up to the on-demand price (EC2's default ceiling): 1.006 x 10 h.
    expect(price.worstCaseUSD).toBe(10.06);
    expect(price.note).toBe(
      '$0.4115/h (spot g5.xlarge us-east-1a, spot price history); $0.4115-$1.01/h over 2 rungs; most expensive case $1.01/h x 10h (spec.timeouts.training) = $10.06',
    );
    const capped = priceFromQuotes({ ...spec, resources: { ...spec.resources, market: 'spot', maxSpotPrice: 0.6 } }, [
      { market: 'spot', instanceType: 'g5.xlarge', zone: 'us-east-1a', usdPerHour: 0.4115, source: 'spot price history' },
    ]);
    expect(capped.worstCaseUSD).toBe(6);
  });

  it('names an unknown price and leaves the most expensive case unknown rather than guessing', () => {
    const spec = testSpec({ provider: 'aws', resources: { market: 'spot', instanceTypes: ['g5.xlarge'] } });
    const price = priceFromQuotes(spec, [{ market: 'spot', instanceType: 'g5.xlarge', zone: 'us-east-1a', usdPerHour: 0.4, source: 'spot price history' }]);
    expect(price.worstCaseUSD).toBeNull();
    expect(price.note).toContain('most expensive case unknown');
  });
});
