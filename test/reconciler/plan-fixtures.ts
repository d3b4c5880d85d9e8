// A store holding runs in every situation a plan has to classify, made by driving real controllers
// over the in-memory cloud (so statuses, snapshots and specs are what the reconciler writes).
import type { LoadedRun } from '../../src/spec/types.js';
import { MemoryProvider } from '../support/memory-provider.js';
import { MemoryStore } from '../support/memory-store.js';
import { testRun } from '../support/runs.js';
import { harness } from './harness.js';

export interface PlanWorld {
  store: MemoryStore;
  /** The cloud of the runs still training (the finished ones' instances are gone). */
  provider: MemoryProvider;
  /** The specs as the store last saw them. */
  before: Record<string, LoadedRun>;
}

/**
 * bravo and hotel Completed; charlie, delta, echo and golf Training; foxtrot Suspended (it was
 * created with spec.suspend true).
 */
export async function planWorld(): Promise<PlanWorld> {
  const store = new MemoryStore();
  const before: Record<string, LoadedRun> = {
    bravo: testRun('bravo'),
    hotel: testRun('hotel'),
    charlie: testRun('charlie'),
    delta: testRun('delta'),
    echo: testRun('echo'),
    foxtrot: testRun('foxtrot', { suspend: true }),
    golf: testRun('golf'),
  };
  const finished = harness([before.bravo!, before.hotel!], { store, script: { totalSteps: 20 } });
  await finished.controller.runUntilSettled();
  await finished.controller.stop();

  const provider = new MemoryProvider({ totalSteps: 1_000_000, stepsPerTick: 1, checkpointEvery: 5 });
  const training = harness([before.charlie!, before.delta!, before.echo!, before.foxtrot!, before.golf!], { store, provider });
  await training.controller.resync();
  await waitFor(() => {
    const phases = new Map(training.controller.runs.map((s) => [s.run, s.phase]));
    return ['charlie', 'delta', 'echo', 'golf'].every((r) => phases.get(r) === 'Training') && phases.get('foxtrot') === 'Suspended';
  });
  await training.controller.stop();
  return { store, provider, before };
}

/** The edits a user made since: one of every kind a plan knows. */
export function editedRuns(w: PlanWorld, opts: { seed?: boolean } = {}): LoadedRun[] {
  return [
    testRun('alpha'),
    w.before.bravo!,
    testRun('charlie', { timeouts: { training: '72h' } }),
    testRun('delta', { run: 'python3 train.py --lr 0.1', recovery: { seedFromPreviousGeneration: opts.seed ?? false } }),
    testRun('echo', { suspend: true }),
    testRun('foxtrot', { suspend: false }),
  ];
}

export async function waitFor(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 2));
  }
}
