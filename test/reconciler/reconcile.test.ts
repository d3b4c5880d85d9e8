import { describe, expect, it } from 'vitest';
import { testRun } from '../support/runs.js';
import { harness } from './harness.js';
import { agentIn, checkpointsIn, launchesByName, launchesIn } from '../support/memory-provider.js';

const HAPPY_PATH = [
  'Pending -> Provisioning',
  'Provisioning -> Syncing',
  'Syncing -> Installing',
  'Installing -> Training',
  'Training -> Completed',
];

describe('reconciler against the in-memory cloud', () => {
  it('drives a run from Pending to Completed with one launch and terminates the instance', async () => {
    const h = harness([testRun('alpha')]);
    const summary = await h.controller.runUntilSettled();
    expect(summary.failed).toEqual([]);
    const status = summary.statuses[0]!;
    expect(status.phase).toBe('Completed');
    expect(status.attempt).toBe(1);
    expect(status.observedGeneration).toBe(1);
    expect(await h.transitions('alpha')).toEqual(HAPPY_PATH);
    expect(launchesByName(h.provider.world)).toEqual({ 'alpha/g1/a1': 1 });
    expect(h.provider.world.instances.every((i) => i.state === 'terminated')).toBe(true);
    expect(status.conditions.find((c) => c.type === 'Completed')).toMatchObject({ status: 'True', reason: 'JobSucceeded' });
    expect(status.progress).toEqual({ step: 100, total: 100 });
    expect(status.lastCheckpoint?.step).toBe(100);
  });

  it('resumes from the latest checkpoint on new capacity after a spot interruption', async () => {
    const h = harness([testRun('beta')], { script: { spotAt: [{ run: 'beta', attempt: 1, step: 50 }] } });
    const summary = await h.controller.runUntilSettled();
    const status = summary.statuses[0]!;
    expect(status.phase).toBe('Completed');
    expect(status.attempt).toBe(2);
    expect(status.interruptions).toBe(1);
    const transitions = await h.transitions('beta');
    expect(transitions).toEqual([
      'Pending -> Provisioning',
      'Provisioning -> Syncing',
      'Syncing -> Installing',
      'Installing -> Training',
      'Training -> Interrupted',
      'Interrupted -> Resuming',
      'Resuming -> Provisioning',
      'Provisioning -> Syncing',
      'Syncing -> Installing',
      'Installing -> Training',
      'Training -> Completed',
    ]);
    // The second attempt restarted from the checkpoint taken when the notice came (step 50).
    expect(agentIn(h.provider.world, 'beta', 1, 2)?.startStep).toBe(50);
    expect(launchesByName(h.provider.world)).toEqual({ 'beta/g1/a1': 1, 'beta/g1/a2': 1 });
    expect(status.conditions.find((c) => c.type === 'Interrupted')).toMatchObject({ status: 'False', reason: 'Recovered' });
  });

  it('retries a failed job maxRetriesOnError times, then fails with the log tail in the condition', async () => {
    const h = harness([testRun('gamma', { recovery: { maxRetriesOnError: 1 } })], {
      script: {
        failAt: [
          { run: 'gamma', attempt: 1, step: 30 },
          { run: 'gamma', attempt: 2, step: 40 },
        ],
      },
    });
    const summary = await h.controller.runUntilSettled();
    const status = summary.statuses[0]!;
    expect(summary.failed).toEqual(['gamma']);
    expect(status.phase).toBe('Failed');
    expect(status.attempt).toBe(2);
    expect(status.errorRetries).toBe(1);
    const failed = status.conditions.find((c) => c.type === 'Failed');
    expect(failed?.reason).toBe('JobFailed');
    expect(failed?.message).toContain('the job exited with code 1 on attempt 2');
    expect(failed?.message).toContain('Traceback: injected failure');
    expect(failed?.message).toContain('spec.recovery.maxRetriesOnError is 1');
    expect(h.provider.world.instances.every((i) => i.state === 'terminated')).toBe(true);
  });

  it('fails with a clear reason when interruptions exceed maxInterruptions', async () => {
    const h = harness([testRun('delta', { recovery: { maxInterruptions: 1 } })], {
      script: {
        spotAt: [
          { run: 'delta', attempt: 1, step: 20 },
          { run: 'delta', attempt: 2, step: 40 },
        ],
      },
    });
    const summary = await h.controller.runUntilSettled();
    const failed = summary.statuses[0]!.conditions.find((c) => c.type === 'Failed');
    expect(failed?.reason).toBe('TooManyInterruptions');
    expect(failed?.message).toContain('spec.recovery.maxInterruptions (1)');
  });

  it('absorbs retryable provider errors with backoff and launches exactly once', async () => {
    const h = harness([testRun('eps')], { script: { faults: [{ op: 'launch', kind: 'retryable', times: 2 }] } });
    const summary = await h.controller.runUntilSettled();
    expect(summary.statuses[0]!.phase).toBe('Completed');
    expect(launchesByName(h.provider.world)).toEqual({ 'eps/g1/a1': 1 });
    const errors = (await h.events('eps')).filter((e) => e.kind === 'error');
    expect(errors).toHaveLength(2);
    expect(errors[0]!.message).toContain('injected retryable fault on launch');
  });

  it('fails at once, with the provider message, on a terminal provider error', async () => {
    const h = harness([testRun('zeta')], { script: { faults: [{ op: 'launch', kind: 'terminal', times: 1 }] } });
    const summary = await h.controller.runUntilSettled();
    const failed = summary.statuses[0]!.conditions.find((c) => c.type === 'Failed');
    expect(failed).toMatchObject({ reason: 'LaunchFailed', message: 'injected terminal fault on launch' });
    expect(launchesByName(h.provider.world)).toEqual({});
  });

  it('detects an instance terminated out of band and resumes the run', async () => {
    const h = harness([testRun('eta')], { script: { killAt: [{ run: 'eta', attempt: 1, step: 60 }] } });
    const summary = await h.controller.runUntilSettled();
    const status = summary.statuses[0]!;
    expect(status.phase).toBe('Completed');
    expect(status.attempt).toBe(2);
    const interrupted = (await h.events('eta')).find((e) => e.action === 'Training -> Interrupted');
    expect(interrupted?.message).toMatch(/job process vanished|ended outside runctl/);
    expect(agentIn(h.provider.world, 'eta', 1, 2)?.startStep).toBe(60);
  });

  it('suspends with a checkpoint when spec.suspend turns true, and resumes from it when false', async () => {
    const run = testRun('theta', { recovery: { maxRetriesOnError: 0 } });
    const h = harness([run], { script: { totalSteps: 1000 } });
    const settled = h.controller.runUntilSettled();
    // Let it train a while, then suspend through the spec.
    await waitFor(() => (agentIn(h.provider.world, 'theta', 1, 1)?.step ?? 0) >= 100);
    run.run.spec = { ...run.run.spec, suspend: true };
    await h.controller.resync();
    const summary = await settled;
    const status = summary.statuses[0]!;
    expect(status.phase).toBe('Suspended');
    const stoppedAt = agentIn(h.provider.world, 'theta', 1, 1)!.step;
    expect(checkpointsIn(h.provider.world, 'theta', 1)?.at(-1)).toBe(stoppedAt);
    expect(h.provider.world.instances.every((i) => i.state === 'terminated')).toBe(true);

    run.run.spec = { ...run.run.spec, suspend: false };
    const resumed = await h.controller.runUntilSettled();
    expect(resumed.statuses[0]!.phase).toBe('Completed');
    expect(agentIn(h.provider.world, 'theta', 1, 2)?.startStep).toBe(stoppedAt);
    expect(resumed.statuses[0]!.interruptions).toBe(0);
  });

  it('starts a new generation when what is trained changes, after stopping the running attempt', async () => {
    const run = testRun('iota');
    const h = harness([run], { script: { totalSteps: 1000 } });
    const settled = h.controller.runUntilSettled();
    await waitFor(() => (agentIn(h.provider.world, 'iota', 1, 1)?.step ?? 0) >= 50);
    const changed = testRun('iota', { run: 'python3 train.py --lr 0.1' });
    h.desired.runs = [changed];
    await h.controller.resync();
    const summary = await settled;
    const status = summary.statuses[0]!;
    expect(status.phase).toBe('Completed');
    expect(status.generation).toBe(2);
    expect(status.observedGeneration).toBe(2);
    expect(status.spec.run).toBe('python3 train.py --lr 0.1');
    expect(agentIn(h.provider.world, 'iota', 1, 1)!.phase).toBe('stopped');
    expect(launchesIn(h.provider.world, 'iota', 2, 1)).toBe(1);
    // Not seeded: the new generation starts from scratch unless the spec asks otherwise.
    expect(agentIn(h.provider.world, 'iota', 2, 1)!.startStep).toBe(0);
    expect(await h.transitions('iota')).toContain('Training -> Terminating');
  });

  it('applies supervision changes in place without a new generation', async () => {
    const run = testRun('kappa');
    const h = harness([run], { script: { totalSteps: 300 } });
    const settled = h.controller.runUntilSettled();
    await waitFor(() => (agentIn(h.provider.world, 'kappa', 1, 1)?.step ?? 0) >= 50);
    run.run.spec = { ...run.run.spec, timeouts: { ...run.run.spec.timeouts, training: '72h' } };
    await h.controller.resync();
    const summary = await settled;
    const status = summary.statuses[0]!;
    expect(status.generation).toBe(1);
    expect(status.attempt).toBe(1);
    expect(status.spec.timeouts.training).toBe('72h');
  });

  it('ends a run whose training outlives spec.timeouts.training, naming the limit', async () => {
    const h = harness([testRun('lambda', { timeouts: { training: '30s' } })], { script: { totalSteps: 100_000, stepsPerTick: 1 } });
    const summary = await h.controller.runUntilSettled();
    const failed = summary.statuses[0]!.conditions.find((c) => c.type === 'Failed');
    expect(failed?.reason).toBe('TrainingTimeout');
    expect(failed?.message).toContain('spec.timeouts.training (30s)');
    expect(agentIn(h.provider.world, 'lambda', 1, 1)!.phase).toBe('stopped');
    expect(h.provider.world.instances.every((i) => i.state === 'terminated')).toBe(true);
  });

  it('leaves a run alone when its file is removed and prune is off', async () => {
    const h = harness([testRun('mu')]);
    await h.controller.runUntilSettled();
    h.desired.runs = [];
    const summary = await h.controller.runOnce();
    expect(summary.statuses.map((s) => s.phase)).toEqual(['Completed']);
    expect(await h.store.getStatus('mu')).toBeDefined();
  });

  it('with prune, a removed run goes through Terminating and its status is archived', async () => {
    const run = testRun('nu');
    // Another run stays: removing every run at once is refused by the deletion guard (watch tests).
    const stays = testRun('xi');
    const h = harness([run, stays], { prune: true, script: { totalSteps: 1000 } });
    const settled = h.controller.runUntilSettled();
    await waitFor(() => (agentIn(h.provider.world, 'nu', 1, 1)?.step ?? 0) >= 30);
    h.desired.runs = [stays];
    await h.controller.resync();
    await settled;
    expect(await h.store.getStatus('nu')).toBeUndefined();
    const transitions = await h.transitions('nu');
    // Two runs share the simulated world, so the phase nu was last seen in before the removal
    // depends on scheduling; what matters is that it stops through Terminating.
    expect(transitions.filter((t) => t.endsWith('-> Terminating'))).toHaveLength(1);
    expect(transitions.at(-1)).toBe('Terminating -> Deleted');
    expect(agentIn(h.provider.world, 'nu', 1, 1)!.phase).toBe('stopped');
    expect(h.provider.world.instances.every((i) => i.state === 'terminated')).toBe(true);
  });

  it('observes all runs with one batched call per pass in steady state', async () => {
    const runs = Array.from({ length: 20 }, (_, i) => testRun(`run-${i}`));
    const h = harness(runs, { tickMs: 0.01, script: { totalSteps: 1_000_000, stepsPerTick: 1 } });
    void h.controller.runUntilSettled();
    const agents = () => Object.values(h.provider.world.agents);
    await waitFor(() => agents().length === 20 && agents().every((a) => a.phase === 'training'));
    await waitFor(() => h.controller.runs.every((s) => s.phase === 'Training'));
    const before = { ...h.provider.world.calls };
    await waitFor(() => h.provider.world.calls.readAgentStatus! - before.readAgentStatus! >= 400);
    const reconciles = h.provider.world.calls.readAgentStatus! - before.readAgentStatus!;
    const observes = h.provider.world.calls.observe! - before.observe!;
    await h.controller.stop();
    // 400 run-reconciles are 20 passes over 20 runs; allow for passes that straddle a refresh.
    expect(observes).toBeLessThanOrEqual((reconciles / 20) * 2);
    expect(Object.keys(h.provider.world.launches)).toHaveLength(20);
  });
});

async function waitFor(cond: () => boolean, timeoutMs = 10_000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 2));
  }
}
