// On-demand prices from the AWS Price List Query API (GetProducts). The API is served from three
// regions only (us-east-1, eu-central-1, ap-south-1: AWS Billing and Cost Management user guide,
// "Using the AWS Price List Query API") and answers for every region, so one client serves all.
// Prices change a few times a month at most, so answers are kept with a TTL, in memory and, when a
// file is given, on disk (`plan` in CI and a restarted controller then ask again only after it).
//
// The answer's shape (AWS Price List API reference, GetProducts; `aws pricing get-products`):
// PriceList is a list of JSON *strings*, one per product, each
//   {"product": {"attributes": {"instanceType", "regionCode", "operatingSystem", ...}, "sku"},
//    "terms": {"OnDemand": {"<sku>.<offerTermCode>": {"priceDimensions":
//       {"<sku>.<offerTermCode>.<rateCode>": {"unit": "Hrs", "pricePerUnit": {"USD": "1.0060000000"}}}}}}}
import fs from 'node:fs';
import path from 'node:path';
import { GetProductsCommand, type PricingClient } from '@aws-sdk/client-pricing';
import { awsCall } from './errors.js';

/** How long an on-demand price read from the price list is reused: a day. */
export const PRICE_LIST_TTL_MS = 24 * 3600_000;

/** The Price List API endpoint region nearest to `region` (it has only these three). */
export function priceListEndpointRegion(region: string): 'us-east-1' | 'eu-central-1' | 'ap-south-1' {
  if (region.startsWith('eu-') || region.startsWith('me-') || region.startsWith('af-') || region.startsWith('il-')) return 'eu-central-1';
  if (region.startsWith('ap-')) return 'ap-south-1';
  return 'us-east-1';
}

/**
 * The GetProducts filters for one Linux on-demand instance type in one region: shared tenancy, no
 * pre-installed software (SQL Server and the like are other products), capacitystatus Used (the
 * other values price unused reservations), as AWS's own examples filter.
 */
export function onDemandFilters(region: string, instanceType: string): { Type: 'TERM_MATCH'; Field: string; Value: string }[] {
  const term = (Field: string, Value: string) => ({ Type: 'TERM_MATCH' as const, Field, Value });
  return [
    term('instanceType', instanceType),
    term('regionCode', region),
    term('operatingSystem', 'Linux'),
    term('tenancy', 'Shared'),
    term('preInstalledSw', 'NA'),
    term('capacitystatus', 'Used'),
  ];
}

/** A price found in, or missing from, the price list. */
export type ListedPrice = { usdPerHour: number } | { unknown: string };

/**
 * The on-demand USD/hour in GetProducts' PriceList entries (JSON strings or already-parsed
 * objects), or why there is none: no product, no hourly USD price, or products disagreeing.
 * Products whose `operation` is not plain `RunInstances` (licensed variants) are set aside when a
 * plain one exists.
 */
export function parseOnDemandPrice(priceList: readonly unknown[], region: string, instanceType: string): ListedPrice {
  const what = `${instanceType} (Linux, shared tenancy) in ${region}`;
  const products: { operation?: string; usd: number }[] = [];
  for (const entry of priceList) {
    let doc: PriceDocument;
    try {
      doc = (typeof entry === 'string' ? JSON.parse(entry) : entry) as PriceDocument;
    } catch {
      continue;
    }
    const attrs = doc.product?.attributes ?? {};
    if (attrs.instanceType !== undefined && attrs.instanceType !== instanceType) continue;
    for (const term of Object.values(doc.terms?.OnDemand ?? {})) {
      for (const dim of Object.values(term.priceDimensions ?? {})) {
        const usd = Number(dim.pricePerUnit?.USD);
        if (dim.unit === 'Hrs' && Number.isFinite(usd) && usd > 0) products.push({ operation: attrs.operation, usd });
      }
    }
  }
  if (products.length === 0) return { unknown: `the AWS price list has no on-demand hourly price for ${what}` };
  const plain = products.filter((p) => p.operation === undefined || p.operation === 'RunInstances');
  const chosen = plain.length > 0 ? plain : products;
  const prices = [...new Set(chosen.map((p) => p.usd))];
  if (prices.length > 1) return { unknown: `the AWS price list gives several on-demand prices for ${what} (${prices.map((p) => `$${p}`).join(', ')})` };
  return { usdPerHour: prices[0] as number };
}

interface PriceDocument {
  product?: { attributes?: Record<string, string | undefined> };
  terms?: { OnDemand?: Record<string, { priceDimensions?: Record<string, { unit?: string; pricePerUnit?: { USD?: string } }> }> };
}

interface CacheEntry {
  at: number;
  price: ListedPrice;
}

/**
 * On-demand prices by region and instance type, read once per TTL. `cacheFile`, when given, keeps
 * them across processes (a corrupt or unreadable file is ignored and rewritten).
 */
export class PriceList {
  private readonly memory = new Map<string, CacheEntry>();
  private loaded = false;

  constructor(
    private readonly client: (endpointRegion: string) => PricingClient,
    private readonly opts: { cacheFile?: string; ttlMs?: number; now?: () => number } = {},
  ) {}

  /**
   * USD/hour for a Linux on-demand instance of `instanceType` in `region`, or why it is unknown.
   * Throws the classified error (RetryableError, TerminalError) when the API cannot be asked.
   */
  async onDemand(region: string, instanceType: string): Promise<ListedPrice> {
    const key = `${region}/${instanceType}`;
    const now = (this.opts.now ?? Date.now)();
    this.load();
    const hit = this.memory.get(key);
    if (hit && now - hit.at < (this.opts.ttlMs ?? PRICE_LIST_TTL_MS)) return hit.price;
    const endpoint = priceListEndpointRegion(region);
    const entries: unknown[] = [];
    let token: string | undefined;
    do {
      const out = await awsCall({ service: 'pricing', operation: 'GetProducts', region: endpoint, instanceType }, () =>
        this.client(endpoint).send(
          new GetProductsCommand({ ServiceCode: 'AmazonEC2', FormatVersion: 'aws_v1', Filters: onDemandFilters(region, instanceType), MaxResults: 100, NextToken: token }),
        ),
      );
      for (const p of (out.PriceList ?? []) as unknown[]) entries.push(typeof p === 'string' ? p : String(p));
      token = out.NextToken;
    } while (token);
    const price = parseOnDemandPrice(entries, region, instanceType);
    this.memory.set(key, { at: now, price });
    this.save();
    return price;
  }

  private load(): void {
    if (this.loaded || !this.opts.cacheFile) return;
    this.loaded = true;
    try {
      const doc = JSON.parse(fs.readFileSync(this.opts.cacheFile, 'utf8')) as Record<string, CacheEntry>;
      for (const [k, v] of Object.entries(doc)) {
        if (typeof v?.at === 'number' && v.price && ('usdPerHour' in v.price || 'unknown' in v.price)) this.memory.set(k, v);
      }
    } catch {
      // No cache yet, or a damaged one: ask the API and write a fresh one.
    }
  }

  private save(): void {
    const file = this.opts.cacheFile;
    if (!file) return;
    try {
      fs.mkdirSync(path.dirname(file), { recursive: true });
      const tmp = `${file}.${process.pid}.tmp`;
      fs.writeFileSync(tmp, JSON.stringify(Object.fromEntries(this.memory)));
      fs.renameSync(tmp, file);
    } catch {
      // A cache that cannot be written only costs a later GetProducts.
    }
  }
}
