// Drives a Controller against the in-memory cloud and store, for reconciler tests.
import { Controller, type DesiredState } from '../../src/reconciler/controller.js';
import type { LoadedRun } from '../../src/spec/types.js';
import type { RunEvent } from '../../src/state/types.js';
import { MemoryProvider, type Script } from '../support/memory-provider.js';
import { MemoryStore } from '../support/memory-store.js';

export interface Harness {
  controller: Controller;
  provider: MemoryProvider;
  store: MemoryStore;
  desired: DesiredState;
  /** Simulated clock (epoch ms); advances `tickMs` on every read so deadlines come in finite time. */
  clock: { now: number };
  transitions(run: string): Promise<string[]>;
  events(run: string): Promise<RunEvent[]>;
}

export const defaultScript: Script = { totalSteps: 100, stepsPerTick: 10, checkpointEvery: 20 };

export function harness(
  runs: LoadedRun[],
  opts: { script?: Partial<Script>; prune?: boolean; tickMs?: number; store?: MemoryStore; provider?: MemoryProvider } = {},
): Harness {
  const provider = opts.provider ?? new MemoryProvider({ ...defaultScript, ...opts.script });
  const store = opts.store ?? new MemoryStore();
  const desired: DesiredState = { runs, diagnostics: [], invalidFiles: [] };
  const clock = { now: Date.parse('2026-01-01T00:00:00Z') };
  const tickMs = opts.tickMs ?? 1000;
  const controller = new Controller({
    store,
    provider: async () => provider,
    load: async () => desired,
    controller: 'test',
    repoRoot: process.cwd(),
    prune: opts.prune ?? false,
    workers: 2,
    now: () => (clock.now += tickMs),
  });
  return {
    controller,
    provider,
    store,
    desired,
    clock,
    async events(run) {
      return store.readEvents(run);
    },
    async transitions(run) {
      return (await store.readEvents(run)).filter((e) => e.kind === 'transition').map((e) => e.action);
    },
  };
}
