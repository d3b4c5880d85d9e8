// The loss (and other metrics) history the page plots: every attempt's series of the current
// generation, as the agents recorded them in storage (src/reconciler/progress-history.ts).
import type { Provider } from '../providers/types.js';
import { readProgressHistory } from '../reconciler/progress-history.js';
import type { RunStatus } from '../state/types.js';
import type { SeriesView } from './view.js';

/** Each attempt's points, oldest first; attempts in order. Throws what the provider throws. */
export async function progressHistory(provider: Provider, status: RunStatus): Promise<SeriesView[]> {
  const series = await readProgressHistory(provider, status);
  return series.map((s) => ({
    generation: s.generation,
    attempt: s.attempt,
    points: s.points.map((p) => ({ time: p.time, step: p.step, ...(p.total !== undefined ? { total: p.total } : {}), metrics: { ...p.metrics } })),
  }));
}
