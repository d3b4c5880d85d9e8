// Things people ask of a run from the CLI while a controller may be running elsewhere: read its
// logs, or rehearse an interruption. They read the store (never taking its lock) and speak to the
// provider that owns the run's instance.
import type { LogChunk } from '../providers/types.js';
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
  /** Attempts that have (or may have) logs, oldest first. */
  attempts: number[];
  read(attempt: number, cursor?: string): Promise<LogChunk>;
}

/** Reads an attempt's logs from storage, whichever provider wrote them. */
export async function runLogs(store: StateStore, providers: ProviderRegistry, run: string): Promise<{ status: RunStatus; reader: LogReader }> {
  const status = await requireStatus(store, run);
  const provider = await providers.get(status.spec.provider);
  const attempts = [...new Set(status.instances.filter((i) => i.generation === status.generation).map((i) => i.attempt))].sort((a, b) => a - b);
  if (status.attempt > 0 && !attempts.includes(status.attempt)) attempts.push(status.attempt);
  return {
    status,
    reader: {
      attempts,
      read: (attempt, cursor) => provider.readLogs(attemptKey(status, status.generation, attempt), status.spec, cursor),
    },
  };
}
