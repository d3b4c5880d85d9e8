// What a new generation does to a running attempt, as plan announces it and as the reconciler
// does it: checkpoint, stop, then start the new generation, seeded from the previous generation's
// latest checkpoint only when the spec says so (also when edits came faster than the stop).
import { describe, expect, it } from 'vitest';
import { planChanges } from '../../src/reconciler/plan.js';
import { testRun } from '../support/runs.js';
import { harness } from './harness.js';
import { waitFor } from './plan-fixtures.js';
import { agentIn, checkpointsIn } from '../support/memory-provider.js';

const LONG = { totalSteps: 1_000_000, stepsPerTick: 1, checkpointEvery: 5 };

describe('generation change', () => {
  it('seeded: the new generation starts from the old generation\'s latest checkpoint, as the plan said', async () => {
    const h = harness([testRun('seedy', { recovery: { seedFromPreviousGeneration: true } })], { script: LONG });
    void h.controller.runUntilSettled();
    await waitFor(() => (agentIn(h.provider.world, 'seedy', 1, 1)?.step ?? 0) >= 30);
    const edited = testRun('seedy', { run: 'python3 train.py --epochs 2', recovery: { seedFromPreviousGeneration: true } });
    const plan = planChanges({ desired: { runs: [edited], diagnostics: [], invalidFiles: [] }, statuses: [(await h.store.getStatus('seedy'))!], prune: false });
    expect(plan.runs[0]!.effect).toMatch(/checkpointed and stopped .* then generation 2 starts seeded from generation 1's latest checkpoint/);

    h.desired.runs = [edited];
    await h.controller.resync();
    await waitFor(() => agentIn(h.provider.world, 'seedy', 2, 1) !== undefined);
    await h.controller.stop();
    const lastOfG1 = checkpointsIn(h.provider.world, 'seedy', 1)!.at(-1)!;
    expect(agentIn(h.provider.world, 'seedy', 1, 1)!.phase).toBe('stopped');
    expect(agentIn(h.provider.world, 'seedy', 1, 1)!.step).toBe(lastOfG1);
    expect(agentIn(h.provider.world, 'seedy', 2, 1)!.startStep).toBe(lastOfG1);
  });

  it('a second edit while the first is still stopping skips a generation, and still seeds from the one that ran', async () => {
    // The stop request fails a few times (throttling), so the second edit lands while generation 2 waits.
    const h = harness([testRun('quick', { recovery: { seedFromPreviousGeneration: true } })], {
      script: { ...LONG, faults: [{ op: 'requestStop', kind: 'retryable', times: 2 }] },
    });
    void h.controller.runUntilSettled();
    await waitFor(() => (agentIn(h.provider.world, 'quick', 1, 1)?.step ?? 0) >= 30);
    h.desired.runs = [testRun('quick', { run: 'python3 train.py --v2', recovery: { seedFromPreviousGeneration: true } })];
    await h.controller.resync();
    await waitFor(() => h.provider.world.calls.requestStop === 1);
    h.desired.runs = [testRun('quick', { run: 'python3 train.py --v3', recovery: { seedFromPreviousGeneration: true } })];
    await h.controller.resync();
    await waitFor(() => agentIn(h.provider.world, 'quick', 3, 1) !== undefined, 20_000);
    await h.controller.stop();
    const status = (await h.store.getStatus('quick'))!;
    expect(status.generation).toBe(3);
    expect(status.spec.run).toBe('python3 train.py --v3');
    expect(agentIn(h.provider.world, 'quick', 2, 1)).toBeUndefined();
    expect(agentIn(h.provider.world, 'quick', 3, 1)!.startStep).toBe(checkpointsIn(h.provider.world, 'quick', 1)!.at(-1));
  });
});
