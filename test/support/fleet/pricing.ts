// The two price reads of the cost ledger, answered as AWS answers them (moto has no Price List API,
// and its spot price history ignores the time window). Test support, not a product feature.
// - AWSPriceListService.GetProducts: the products of test/fixtures/pricing/get-products-*.json
//   that match every TERM_MATCH filter, as JSON strings in PriceList;
// - EC2 DescribeSpotPriceHistory: the recorded steps of test/fixtures/pricing/*.xml plus any a
//   test adds (setSpotPrice), with EC2's window rule: every change inside [StartTime, EndTime] and
//   the last change before StartTime (the price in force at the start), newest first.
import fs from 'node:fs';
import path from 'node:path';
import { errorResponse, jsonResponse, listParam, type AwsRequest, type WireError } from './aws-wire.js';

const FIXTURES = path.resolve(import.meta.dirname, '../../fixtures/pricing');

export interface SpotStep {
  instanceType: string;
  zone: string;
  product: string;
  at: Date;
  usd: number;
}

export class PriceModel {
  private readonly products: { attributes: Record<string, string>; json: string }[] = [];
  private readonly spot: SpotStep[] = [];
  /** GetProducts requests answered, with their filters (for tests to check what was asked). */
  readonly getProductsCalls: { Field: string; Value: string }[][] = [];

  constructor() {
    const doc = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'get-products-us-east-1.json'), 'utf8')) as { PriceList: string[] };
    for (const json of doc.PriceList) {
      const attributes = (JSON.parse(json) as { product: { attributes: Record<string, string> } }).product.attributes;
      this.products.push({ attributes, json });
    }
    const xml = fs.readFileSync(path.join(FIXTURES, 'describe-spot-price-history-us-east-1.xml'), 'utf8');
    for (const item of xml.matchAll(/<item>([\s\S]*?)<\/item>/g)) {
      const field = (name: string) => item[1]!.match(new RegExp(`<${name}>([^<]*)</${name}>`))?.[1] ?? '';
      this.spot.push({
        instanceType: field('instanceType'),
        zone: field('availabilityZone'),
        product: field('productDescription'),
        at: new Date(field('timestamp')),
        usd: Number(field('spotPrice')),
      });
    }
  }

  /** A spot price change for a type in a zone (Linux/UNIX) at `at`, as EC2 would list it from then on. */
  setSpotPrice(instanceType: string, zone: string, at: Date, usd: number): void {
    this.spot.push({ instanceType, zone, product: 'Linux/UNIX', at, usd });
  }

  /** The recorded steps for a type and zone, oldest first (what a test integrates to check a cost). */
  spotSteps(instanceType: string, zone: string): { at: Date; usd: number }[] {
    return this.spot
      .filter((s) => s.instanceType === instanceType && s.zone === zone && s.product === 'Linux/UNIX')
      .sort((a, b) => a.at.getTime() - b.at.getTime())
      .map(({ at, usd }) => ({ at, usd }));
  }

  /** The on-demand USD/hour the fixture lists for a shared-tenancy Linux type in us-east-1. */
  onDemand(instanceType: string): number | undefined {
    const p = this.products.find((x) => x.attributes.instanceType === instanceType && x.attributes.tenancy === 'Shared');
    if (!p) return undefined;
    const doc = JSON.parse(p.json) as { terms: { OnDemand: Record<string, { priceDimensions: Record<string, { pricePerUnit: { USD: string } }> }> } };
    const term = Object.values(doc.terms.OnDemand)[0]!;
    return Number(Object.values(term.priceDimensions)[0]!.pricePerUnit.USD);
  }

  answer(aws: AwsRequest): WireError | undefined {
    if (aws.service === 'pricing' && aws.action === 'GetProducts') return this.getProducts(aws);
    if (aws.service === 'ec2' && aws.action === 'DescribeSpotPriceHistory') return this.spotHistory(aws);
    return undefined;
  }

  private getProducts(aws: AwsRequest): WireError {
    const json = aws.json ?? {};
    if (json.ServiceCode !== 'AmazonEC2') {
      return errorResponse('pricing', 400, 'InvalidParameterException', 'Input validation failed: ServiceCode must be AmazonEC2 in this simulator');
    }
    const filters = ((json.Filters as { Type?: string; Field?: string; Value?: string }[] | undefined) ?? []).map((f) => ({ Field: String(f.Field), Value: String(f.Value) }));
    this.getProductsCalls.push(filters);
    const list = this.products
      .filter((p) => filters.every((f) => p.attributes[f.Field] !== undefined && p.attributes[f.Field]!.toLowerCase() === f.Value.toLowerCase()))
      .map((p) => p.json);
    return jsonResponse({ FormatVersion: 'aws_v1', PriceList: list }, 'application/x-amz-json-1.1');
  }

  private spotHistory(aws: AwsRequest): WireError {
    const types = listParam(aws.params, 'InstanceType');
    const products = listParam(aws.params, 'ProductDescription');
    const zone = aws.params.AvailabilityZone;
    const start = aws.params.StartTime ? Date.parse(aws.params.StartTime) : -Infinity;
    const end = aws.params.EndTime ? Date.parse(aws.params.EndTime) : Infinity;
    const groups = new Map<string, SpotStep[]>();
    for (const s of this.spot) {
      if (types.length && !types.includes(s.instanceType)) continue;
      if (products.length && !products.includes(s.product)) continue;
      if (zone && s.zone !== zone) continue;
      const key = `${s.instanceType}/${s.zone}/${s.product}`;
      groups.set(key, [...(groups.get(key) ?? []), s]);
    }
    const items: SpotStep[] = [];
    for (const steps of groups.values()) {
      const sorted = steps.sort((a, b) => a.at.getTime() - b.at.getTime());
      const before = sorted.filter((s) => s.at.getTime() < start).at(-1);
      if (before) items.push(before);
      items.push(...sorted.filter((s) => s.at.getTime() >= start && s.at.getTime() <= end));
    }
    items.sort((a, b) => b.at.getTime() - a.at.getTime());
    const body =
      `<?xml version="1.0" encoding="UTF-8"?>\n<DescribeSpotPriceHistoryResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">` +
      `<requestId>fleet-${Date.now()}</requestId><spotPriceHistorySet>` +
      items
        .map(
          (s) =>
            `<item><instanceType>${s.instanceType}</instanceType><productDescription>${s.product}</productDescription>` +
            `<spotPrice>${s.usd.toFixed(6)}</spotPrice><timestamp>${s.at.toISOString()}</timestamp><availabilityZone>${s.zone}</availabilityZone></item>`,
        )
        .join('') +
      `</spotPriceHistorySet><nextToken/></DescribeSpotPriceHistoryResponse>`;
    return { status: 200, headers: { 'content-type': 'text/xml;charset=UTF-8' }, body };
  }
}
