// Things people ask of a run from the CLI while a controller may be running elsewhere: read its
// logs, or rehearse an interruption. They read the store (never taking its lock) and speak to the
// provider that owns the run's instance.
import type { LogChunk, LogReadOptions } from '../providers/types.js';
import type { ProviderRegistry } from '../providers/registry.js';
import type { RunStatus, StateStore } from '../state/types.js';
import { attemptKey } from './reconcile.js';

export class RunNotFoundError extends Error {
  constructor(run: string, known: string[]) {
    super(
      `no run named "${run}" in the state store` +
        (known.length ? ` (known runs: ${known.join(', ')})` : ' (no runs yet: start one with `runctl reconcile`)'),
    );
    this.name = 'RunNotFoundError';
  }
}

export async function requireStatus(store: StateStore, run: string): Promise<RunStatus> {
  const status = await store.getStatus(run);
  if (!status) throw new RunNotFoundError(run, await store.listRuns());
  return status;
}

/** Delivers a simulated spot notice to the run's current instance (a rehearsal). */
export async function interruptRun(store: StateStore, providers: ProviderRegistry, run: string): Promise<{ instanceId: string; attempt: number }> {
  const status = await requireStatus(store, run);
  const live = status.instances.filter((i) => !i.endedAt && i.generation === status.generation && i.attempt === status.attempt);
  const instance = live.at(-1);
  if (!instance || !['Provisioning', 'Syncing', 'Installing', 'Training'].includes(status.phase)) {
    throw new Error(`run "${run}" has no running instance to interrupt (phase ${status.phase}); interrupt it while it trains`);
  }
  const provider = await providers.get(status.spec.provider);
  const key = attemptKey(status, status.generation, status.attempt);
  await provider.deliverSpotNotice(key, instance.id);
  return { instanceId: instance.id, attempt: status.attempt };
}

export interface LogReader {
  /** The generation whose logs this reader reads. */
  generation: number;
  /** Attempts that have (or may have) logs, oldest first. */
  attempts: number[];
  /** Generations that ran (have instances), oldest first. */
  generations: number[];
  /** True when no more output can come for this attempt (a later attempt or generation started, or the run settled). */
  ended(attempt: number): boolean;
  read(attempt: number, cursor?: string, opts?: LogReadOptions): Promise<LogChunk>;
}

/** No generation `generation` ran for this run. */
export class GenerationNotFoundError extends Error {
  constructor(run: string, generation: number, known: number[]) {
    super(`run "${run}" has no generation ${generation} with logs (generations: ${known.join(', ') || 'none yet'})`);
    this.name = 'GenerationNotFoundError';
  }
}

const SETTLED: readonly RunStatus['phase'][] = ['Completed', 'Failed', 'Suspended', 'Deleted'];

/**
 * Reads an attempt's logs from storage, whichever provider wrote them: the current generation's,
 * or `generation`'s (an earlier one, whose attempts are read from the run's instance history).
 */
export async function runLogs(
  store: StateStore,
  providers: ProviderRegistry,
  run: string,
  generation?: number,
): Promise<{ status: RunStatus; reader: LogReader }> {
  const status = await requireStatus(store, run);
  const provider = await providers.get(status.spec.provider);
  const generations = [...new Set(status.instances.map((i) => i.generation))].sort((a, b) => a - b);
  const gen = generation ?? status.generation;
  if (gen !== status.generation && !generations.includes(gen)) throw new GenerationNotFoundError(run, gen, generations);
  const attempts = [...new Set(status.instances.filter((i) => i.generation === gen).map((i) => i.attempt))].sort((a, b) => a - b);
  const current = gen === status.generation;
  if (current && status.attempt > 0 && !attempts.includes(status.attempt)) attempts.push(status.attempt);
  // An earlier generation's logs are read from the storage the current spec names: runctl keeps
  // only the current spec (a change of storage alone does not make a new generation).
  return {
    status,
    reader: {
      generation: gen,
      attempts,
      generations,
      ended: (attempt) => !current || attempt < status.attempt || SETTLED.includes(status.phase),
      read: (attempt, cursor, opts) => provider.readLogs(attemptKey(status, gen, attempt), status.spec, cursor, opts),
    },
  };
}
