// A run's progress curve across attempts (issue 13): the history each attempt's agent keeps in
// storage, read through the provider port, so the curve survives the replacement of instances
// (an interrupted attempt's points stay next to its successor's). Read-only; used by the
// dashboard and anything else that plots a run.
import type { Provider, ProgressPoint } from '../providers/types.js';
import type { RunStatus } from '../state/types.js';
import { attemptKey } from './reconcile.js';

export type { ProgressPoint } from '../providers/types.js';

/** One attempt's progress history. */
export interface ProgressSeries {
  generation: number;
  attempt: number;
  /** Oldest first; empty when the attempt's agent recorded no progress (yet). */
  points: ProgressPoint[];
}

/**
 * Every attempt's progress series for the run's current generation (the incarnation's storage
 * prefix comes from `record.uid`), in attempt order: the attempts its instance history names,
 * plus the current one. An attempt with no stored history has an empty series. A provider without
 * `readProgressHistory` gives empty series. Throws what the provider throws (RetryableError when
 * storage cannot be read now or an object is damaged).
 */
export async function readProgressHistory(provider: Provider, record: RunStatus): Promise<ProgressSeries[]> {
  const generation = record.generation;
  const attempts = new Set(record.instances.filter((i) => i.generation === generation).map((i) => i.attempt));
  if (record.attempt > 0) attempts.add(record.attempt);
  const ordered = [...attempts].sort((a, b) => a - b);
  return Promise.all(
    ordered.map(async (attempt) => ({
      generation,
      attempt,
      points: (await provider.readProgressHistory?.(attemptKey(record, generation, attempt), record.spec)) ?? [],
    })),
  );
}
