// Code bundles no live instance runs are deleted from storage after a grace period; those live
// instances run, those whose use cannot be known yet, and recent ones are kept.
import { describe, expect, it, vi } from 'vitest';
import { planBundleSweeps } from '../../src/reconciler/bundle-sweep.js';
import { Controller, type ControllerNotice, type ControllerOptions } from '../../src/reconciler/controller.js';
import type { LoadedRun } from '../../src/spec/types.js';
import type { InstanceRecord, RunStatus } from '../../src/state/types.js';
import { MemoryProvider } from '../support/memory-provider.js';
import { MemoryStore } from '../support/memory-store.js';
import { testRun, testSpec } from '../support/runs.js';

const A = 'a'.repeat(64);
const B = 'b'.repeat(64);

function status(run: string, instances: Partial<InstanceRecord>[], extra: Partial<RunStatus> = {}): RunStatus {
  return {
    run,
    spec: testSpec(),
    instances: instances.map((i, n) => ({ id: `i-${run}-${n}`, generation: 1, attempt: n + 1, launchedAt: '2026-01-01T00:00:00Z', ...i })),
    ...extra,
  } as RunStatus;
}

describe('planBundleSweeps', () => {
  it('references the bundles of live instances only, per storage location', () => {
    const plan = planBundleSweeps([
      status('done', [{ codeBundle: A, endedAt: '2026-01-02T00:00:00Z' }]),
      status('live', [{ codeBundle: A, endedAt: '2026-01-02T00:00:00Z' }, { codeBundle: B }]),
      status('elsewhere', [{ codeBundle: A }], { spec: testSpec({ checkpoints: { storage: 'file:///tmp/other' } }) }),
    ]);
    expect(plan.skipped).toEqual([]);
    expect(plan.sweeps.map((s) => [s.storage, [...s.referenced]])).toEqual([
      ["the local provider's default storage", [B]],
      ['file:///tmp/other', [A]],
    ]);
  });

  it('leaves a location alone while a live instance has no recorded bundle or a launch or deploy is in flight', () => {
    const unrecorded = planBundleSweeps([status('old', [{}]), status('done', [{ codeBundle: A, endedAt: '2026-01-02T00:00:00Z' }])]);
    expect(unrecorded.sweeps).toEqual([]);
    expect(unrecorded.skipped).toEqual([{ storage: "the local provider's default storage", reason: 'old has instance i-old-0 without a recorded code bundle' }]);

    const deploying = planBundleSweeps([
      status('next', [], { pending: { transitionId: 't', phaseAfter: 'Syncing', effects: [{ type: 'deployAgent' }], snapshotAfter: {} } }),
    ]);
    expect(deploying.skipped.map((s) => s.reason)).toEqual(['next is launching or deploying']);
  });
});

describe('the controller’s bundle sweep', () => {
  const script = { totalSteps: 100, stepsPerTick: 10, checkpointEvery: 20 };

  function rig() {
    const provider = new MemoryProvider(script);
    const store = new MemoryStore();
    const notices: ControllerNotice[] = [];
    const controller = (runs: LoadedRun[], opts: Partial<ControllerOptions> = {}) =>
      new Controller({
        store,
        provider: async () => provider,
        load: async () => ({ runs, diagnostics: [], invalidFiles: [] }),
        controller: 'test',
        repoRoot: process.cwd(),
        prune: false,
        onNotice: (n) => notices.push(n),
        ...opts,
      });
    const stored = () => Object.keys(provider.world.bundles ?? {}).map((k) => k.split('|')[1]);
    return { provider, store, notices, controller, stored };
  }

  async function untilTraining(c: (runs: LoadedRun[], opts?: Partial<ControllerOptions>) => Controller, runs: LoadedRun[], store: MemoryStore, run: string) {
    for (let pass = 0; pass < 30; pass++) {
      const controller = c(runs, { bundleSweepIntervalMs: 0 });
      await controller.runOnce();
      await controller.stop();
      if ((await store.getStatus(run))?.phase === 'Training') return;
    }
    throw new Error(`${run} never reached Training`);
  }

  it('deletes the bundle of a completed run and keeps the one a training run uses', async () => {
    const { notices, controller, store, stored } = rig();
    const first = controller([testRun('alpha')], { bundleSweepIntervalMs: 0 });
    await first.runUntilSettled();
    await first.stop();
    const alphaBundle = MemoryProvider.codeBundleOf('alpha', 1);
    const betaBundle = MemoryProvider.codeBundleOf('beta', 1);
    expect((await store.getStatus('alpha'))?.instances[0]?.codeBundle).toBe(alphaBundle);

    const runs = [testRun('alpha'), testRun('beta')];
    await untilTraining(controller, runs, store, 'beta');
    expect(stored().sort()).toEqual([alphaBundle, betaBundle].sort());

    const sweeper = controller(runs, { bundleMinAgeMs: 0 });
    await sweeper.runOnce();
    await sweeper.stop();
    expect(stored()).toEqual([betaBundle]);
    expect(notices).toContainEqual({ kind: 'bundles-deleted', message: "deleted 1 code bundle no run uses any more from the local provider's default storage" });
  });

  it('keeps unused bundles stored less than a day ago by default', async () => {
    const { controller, stored } = rig();
    const c = controller([testRun('alpha')]);
    await c.runUntilSettled();
    await c.stop();
    const again = controller([testRun('alpha')]);
    await again.runOnce();
    await again.stop();
    expect(stored()).toEqual([MemoryProvider.codeBundleOf('alpha', 1)]);
  });

  it('sweeps at most once per interval however often the runs are reloaded', async () => {
    const { provider, controller } = rig();
    const first = controller([testRun('alpha')], { bundleSweepIntervalMs: 0 });
    await first.runUntilSettled();
    await first.stop();
    const spy = vi.spyOn(provider, 'pruneBundles');
    const c = controller([testRun('alpha')], { bundleMinAgeMs: 0, bundleSweepIntervalMs: 60_000 });
    await c.runUntilSettled();
    await c.resync();
    await c.resync();
    await c.stop();
    expect(spy).toHaveBeenCalledTimes(1);
  });

  it('reports a sweep that fails as a notice and goes on reconciling', async () => {
    const { provider, controller, notices } = rig();
    const first = controller([testRun('alpha')], { bundleSweepIntervalMs: 0 });
    await first.runUntilSettled();
    await first.stop();
    vi.spyOn(provider, 'pruneBundles').mockRejectedValue(new Error('AccessDenied: s3:DeleteObject on arn:aws:s3:::bucket/bundles/*'));
    const c = controller([testRun('alpha'), testRun('gamma')], { bundleMinAgeMs: 0 });
    const summary = await c.runUntilSettled();
    await c.stop();
    expect(summary.statuses.map((s) => [s.run, s.phase])).toEqual([
      ['alpha', 'Completed'],
      ['gamma', 'Completed'],
    ]);
    expect(notices).toContainEqual({
      kind: 'bundle-sweep-error',
      message: 'could not clean up unused code bundles: AccessDenied: s3:DeleteObject on arn:aws:s3:::bucket/bundles/* (tried again later)',
    });
  });
});
