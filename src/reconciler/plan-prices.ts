// Prices for `plan`: for the runs a pass would launch capacity for, the provider's hourly quote of
// each rung of the run's ladder (Provider.quoteSpec: spot price now, on-demand from the price
// list) and the most expensive case (plan.ts, priceFromQuotes). Like the preflight checks, runs
// that keep going cost no call, and a quote that cannot be had is reported, never guessed.
import type { Provider, RungQuote } from '../providers/types.js';
import type { RunSpec } from '../spec/types.js';
import type { DesiredState } from './controller.js';
import { priceFromQuotes, type Plan, type PlanAction } from './plan.js';

const LAUNCHING: ReadonlySet<PlanAction> = new Set(['create', 'new-generation', 'resume']);

/** The plan with priced runs, and the runs whose prices could not be asked for (with why). */
export async function pricePlan(
  desired: DesiredState,
  plan: Plan,
  provider: (name: RunSpec['provider']) => Promise<Provider>,
): Promise<{ plan: Plan; unpriced: Array<{ run: string; message: string }> }> {
  const byName = new Map(desired.runs.map((r) => [r.run.metadata.name, r.run.spec]));
  const asked = new Map<string, Promise<RungQuote[] | { error: string }>>();
  const unpriced: Array<{ run: string; message: string }> = [];
  const runs = await Promise.all(
    plan.runs.map(async (r) => {
      const spec = byName.get(r.run);
      if (!spec || !LAUNCHING.has(r.action)) return r;
      let answer: Promise<RungQuote[] | { error: string }> | undefined;
      try {
        const p = await provider(spec.provider);
        if (!p.quoteSpec) return r;
        const key = JSON.stringify([spec.provider, spec.resources.region, spec.resources.market, spec.resources.instanceTypes, spec.resources.availabilityZones, spec.resources.subnetId]);
        answer = asked.get(key);
        if (!answer) {
          answer = p.quoteSpec(spec).catch((err: unknown) => ({ error: err instanceof Error ? err.message : String(err) }));
          asked.set(key, answer);
        }
      } catch (err) {
        answer = Promise.resolve({ error: err instanceof Error ? err.message : String(err) });
      }
      const got = await answer;
      if ('error' in got) {
        unpriced.push({ run: r.run, message: got.error });
        return r;
      }
      return { ...r, price: priceFromQuotes(spec, got) };
    }),
  );
  unpriced.sort((a, b) => a.run.localeCompare(b.run));
  return { plan: { ...plan, runs }, unpriced };
}
