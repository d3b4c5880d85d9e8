// Issue 11, fault 3 (second half): the controller's sweep terminates instances carrying its tags
// whose run is finished or unknown, never those of a run it is working on, and says so.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Controller, type ControllerNotice } from '../../src/reconciler/controller.js';
import { RunctlMetrics } from '../../src/reconciler/metrics.js';
import type { LoadedRun } from '../../src/spec/types.js';
import { awsSpec, startRig, type AwsRig } from '../providers/aws/harness.js';
import { MemoryStore } from '../support/memory-store.js';
import { testRun } from '../support/runs.js';

let rig: AwsRig;
beforeAll(async () => {
  rig = await startRig({ bootDelayMs: 3_600_000 });
});
afterAll(async () => {
  await rig?.release();
});

function run(name: string, suspend: boolean): LoadedRun {
  const base = testRun(name);
  return { ...base, run: { ...base.run, spec: { ...awsSpec(rig.bucket, { resources: { market: 'on-demand' } }), suspend } } };
}

describe('orphan sweep', () => {
  it('terminates the instances of a finished run and of an unknown run, leaves an active run alone, with events, notices and a metric', async () => {
    const { provider, controller: tag } = rig.provider();
    const spec = awsSpec(rig.bucket, { resources: { market: 'on-demand' } });
    // An instance of a run nobody knows (its state was lost) and one of a run that is Suspended.
    const ghost = await provider.launch({ run: 'ghost', generation: 1, attempt: 1, controller: tag, spec });

    const store = new MemoryStore();
    const notices: ControllerNotice[] = [];
    const metrics = new RunctlMetrics();
    // Eleven minutes on: past the grace an unknown run's instance gets.
    const clock = { now: Date.now() + 11 * 60_000 };
    const controller = new Controller({
      store,
      provider: async () => provider,
      load: async () => ({ runs: [run('parked', true), run('active', false)], diagnostics: [], invalidFiles: [] }),
      controller: tag,
      repoRoot: process.cwd(),
      prune: false,
      now: () => (clock.now += 1),
      metrics,
      onNotice: (n) => notices.push(n),
    });
    // The first pass creates the runs (parked: Suspended; active: launches); the second sweeps.
    await controller.runOnce();
    const active = (await store.getStatus('active'))?.instances[0]?.id as string;
    expect(active).toMatch(/^i-/);
    // An instance of the Suspended run, of this very incarnation, that nothing will terminate.
    const uid = (await store.getStatus('parked'))?.uid as string;
    const leftover = await provider.launch({ run: 'parked', uid, generation: 1, attempt: 0, controller: tag, spec });
    clock.now += 11 * 60_000;
    await controller.runOnce();
    await controller.stop();

    expect(await rig.fleet.liveInMoto('ghost')).toEqual([]);
    expect(await rig.fleet.liveInMoto('parked')).toEqual([]);
    expect(await rig.fleet.liveInMoto('active')).toEqual([active]);
    const messages = notices.filter((n) => n.kind === 'orphan-terminated').map((n) => n.message);
    expect(messages).toEqual(
      expect.arrayContaining([
        expect.stringContaining(`terminated orphaned instance ${ghost.instance.id} (generation 1, attempt 1): run ghost is unknown`),
        expect.stringContaining(`terminated orphaned instance ${leftover.instance.id} (generation 1, attempt 0): run parked is Suspended`),
      ]),
    );
    expect(messages).toHaveLength(2);
    expect((await store.readEvents('parked')).some((e) => e.action === 'terminate' && e.message?.includes(leftover.instance.id))).toBe(true);
    expect(metrics.registry.render()).toMatch(/runctl_orphaned_instances_terminated_total 2/);
    await provider.terminate(active);
  }, 120_000);
});
