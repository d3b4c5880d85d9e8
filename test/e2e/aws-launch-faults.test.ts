// Issue 11 through the reconciler, on moto behind the fleet proxy: quota refusals that wait and then
// launch (fault 1), an instance profile that never becomes valid (fault 2), exactly-once launch
// across rungs after a crash (fault 8), and a suspend right after a launch while EC2 does not know
// the new instance yet (fault 3). Instances never become SSM-ready here (long boot), so each run
// stays in Provisioning unless the test moves it on; the clock is simulated for the reconciler.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { AwsProvider } from '../../src/providers/aws/index.js';
import type { InstanceObservation } from '../../src/providers/types.js';
import type { Desired } from '../../src/reconciler/derive.js';
import { reconcileRun, type ReconcileDeps } from '../../src/reconciler/reconcile.js';
import type { LoadedRun, RunSpec } from '../../src/spec/types.js';
import type { RunStatus } from '../../src/state/types.js';
import { awsSpec, PROFILE, startRig, type AwsRig } from '../providers/aws/harness.js';
import { ec2Errors } from '../support/fleet/ec2-errors.js';
import { MemoryStore } from '../support/memory-store.js';
import { testRun } from '../support/runs.js';

let rig: AwsRig;
beforeAll(async () => {
  rig = await startRig({ bootDelayMs: 3_600_000 });
});
afterAll(async () => {
  await rig?.release();
});
afterEach(() => {
  rig.fleet.clearFaults();
});

class Crash extends Error {}

function loaded(name: string, resources: Partial<RunSpec['resources']>, rest: Partial<RunSpec> = {}): LoadedRun {
  const base = testRun(name);
  return { ...base, run: { ...base.run, spec: awsSpec(rig.bucket, { resources, ...rest }) } };
}

interface World {
  store: MemoryStore;
  clock: { now: number };
  deps(provider: AwsProvider, boundary?: (label: string) => void): ReconcileDeps;
}

function world(controller: string): World {
  const store = new MemoryStore();
  const clock = { now: Date.now() };
  return {
    store,
    clock,
    deps: (provider, boundary) => ({
      store,
      provider: async () => provider,
      observe: async (p, run): Promise<InstanceObservation[]> => (await p.observe([run])).get(run) ?? [],
      controller,
      repoRoot: process.cwd(),
      // Every read moves the clock on a little, as real time does, so "observed after the effect" holds.
      now: () => (clock.now += 1),
      ...(boundary ? { boundary } : {}),
    }),
  };
}

const desired = (run: LoadedRun, prune = false): Desired => ({ loaded: run, prune });

function condition(status: RunStatus | undefined, type: string) {
  return status?.conditions.find((c) => c.type === type);
}

describe('quota refusals through the reconciler (fault 1)', () => {
  it('waits with a QuotaExceeded condition naming the quotas, retries with backoff, and launches once the quota frees', async () => {
    const { provider, recorder, controller } = rig.provider();
    const w = world(controller);
    const run = loaded('quota-wait', { market: 'on-demand', instanceTypes: ['p4d.24xlarge', 'g5.48xlarge'] });
    const stop = rig.fleet.injectFault(ec2Errors.vcpuLimitExceeded());

    let result = await reconcileRun(w.deps(provider), 'quota-wait', desired(run));
    expect(result.status?.phase).toBe('Provisioning');
    const blocked = condition(result.status, 'CapacityAvailable');
    expect(blocked).toMatchObject({ status: 'False', reason: 'QuotaExceeded' });
    expect(blocked?.message).toContain('"Running On-Demand P instances"');
    expect(blocked?.message).toContain('"Running On-Demand G and VT instances"');
    expect(blocked?.message).toContain('request-service-quota-increase');
    expect(result.requeueAfterMs).toBeGreaterThan(0);
    expect(await rig.fleet.liveInMoto('quota-wait')).toEqual([]);

    // Before the retry time nothing is asked; after it, one more walk of the ladder, still refused.
    const asked = recorder.count('ec2', 'RunInstances');
    w.clock.now += 1_000;
    await reconcileRun(w.deps(provider), 'quota-wait', desired(run));
    expect(recorder.count('ec2', 'RunInstances')).toBe(asked);
    w.clock.now += 20_000;
    result = await reconcileRun(w.deps(provider), 'quota-wait', desired(run));
    expect(recorder.count('ec2', 'RunInstances')).toBe(asked + 2);
    expect(result.status?.launchBlocked?.failures).toBe(2);

    stop(); // vCPUs freed
    w.clock.now += 60_000;
    result = await reconcileRun(w.deps(provider), 'quota-wait', desired(run));
    expect(result.status?.phase).toBe('Provisioning');
    expect(result.status?.launchBlocked).toBeUndefined();
    expect(condition(result.status, 'CapacityAvailable')).toBeUndefined();
    const live = await rig.fleet.liveInMoto('quota-wait');
    expect(live).toHaveLength(1);
    expect(result.status?.instances.map((i) => [i.id, i.type])).toEqual([[live[0], 'p4d.24xlarge']]);
    await provider.terminate(live[0] as string);
  }, 120_000);
});

describe('an instance profile EC2 never accepts (fault 2)', () => {
  it('is retried until spec.timeouts.provisioning, then fails saying both possibilities', async () => {
    const { provider, recorder, controller } = rig.provider();
    const w = world(controller);
    const run = loaded('profile-wait', { market: 'on-demand' }, { timeouts: { provisioning: '2m', installing: '30m', training: '48h' } });
    rig.fleet.injectFault(ec2Errors.invalidInstanceProfile(PROFILE));

    let result = await reconcileRun(w.deps(provider), 'profile-wait', desired(run));
    expect(condition(result.status, 'InstanceProfileReady')).toMatchObject({ status: 'False', reason: 'InstanceProfileNotReady' });
    for (let i = 0; i < 10 && result.status?.phase === 'Provisioning'; i++) {
      w.clock.now += 30_000;
      result = await reconcileRun(w.deps(provider), 'profile-wait', desired(run));
    }
    expect(recorder.count('ec2', 'RunInstances')).toBeGreaterThan(1);
    expect(result.status?.phase).toBe('Failed');
    const failed = condition(result.status, 'Failed');
    expect(failed?.reason).toBe('InstanceProfileNotFound');
    expect(failed?.message).toMatch(/within spec\.timeouts\.provisioning \(2m\)/);
    expect(failed?.message).toMatch(/does not exist in this account/);
    expect(failed?.message).toMatch(/created moments ago and IAM has not propagated it/);
    expect(await rig.fleet.liveInMoto('profile-wait')).toEqual([]);
  }, 120_000);
});

describe('exactly-once launch across rungs after a crash (fault 8)', () => {
  it('replays the recorded rung and token first: one instance, even when the first rung has capacity again', async () => {
    const first = rig.provider();
    const w = world(first.controller);
    const run = loaded('crash-rungs', { market: 'on-demand', instanceTypes: ['g5.xlarge', 'g6.xlarge'] });
    const noA = rig.fleet.injectFault({ kind: 'insufficient-capacity', instanceTypes: ['g5.xlarge'] });

    // Rung A refuses, rung B launches, and the controller dies before recording the launch.
    const crash = (label: string) => {
      if (label.startsWith('after-effect:') && label.endsWith(':launch')) throw new Crash(label);
    };
    await expect(reconcileRun(w.deps(first.provider, crash), 'crash-rungs', desired(run))).rejects.toBeInstanceOf(Crash);
    const launched = await rig.fleet.liveInMoto('crash-rungs');
    expect(launched).toHaveLength(1);
    const stored = await w.store.getStatus('crash-rungs');
    expect(stored?.instances).toEqual([]);
    expect(stored?.pending?.effects[0]?.params?.inFlight).toMatchObject({ rung: 'on-demand/g6.xlarge/*' });

    // Restart: EC2 does not show B to tag filters yet, and A has capacity again.
    noA();
    const unhide = rig.fleet.hideNewInstances(3_600_000);
    try {
      const second = rig.provider({ controller: first.controller });
      const result = await reconcileRun(w.deps(second.provider), 'crash-rungs', desired(run));
      expect(second.recorder.calls.filter((c) => c.operation === 'RunInstances').map((c) => c.input.InstanceType)).toEqual(['g6.xlarge']);
      expect(result.status?.instances.map((i) => i.id)).toEqual(launched);
      expect(await rig.fleet.liveInMoto('crash-rungs')).toEqual(launched);
    } finally {
      unhide();
    }
    await first.provider.terminate(launched[0] as string);
  }, 120_000);
});

describe('suspend right after a launch, while EC2 does not know the instance yet (fault 3)', () => {
  it('retries TerminateInstances through InvalidInstanceID.NotFound: no instance left running', async () => {
    const { provider, recorder, controller } = rig.provider();
    const w = world(controller);
    const run = loaded('early-suspend', { market: 'on-demand' });
    let result = await reconcileRun(w.deps(provider), 'early-suspend', desired(run));
    const id = result.status?.instances[0]?.id as string;
    expect(await rig.fleet.liveInMoto('early-suspend')).toEqual([id]);

    // The first three TerminateInstances calls are answered as EC2 may in the first seconds.
    rig.fleet.injectFault(ec2Errors.terminateNotFound([id], 3));
    const unhide = rig.fleet.hideNewInstances(3_600_000);
    const suspended: LoadedRun = { ...run, run: { ...run.run, spec: { ...run.run.spec, suspend: true } } };
    try {
      for (let i = 0; i < 10 && result.status?.phase !== 'Suspended'; i++) {
        w.clock.now += 2_000;
        result = await reconcileRun(w.deps(provider), 'early-suspend', desired(suspended)).catch((err: unknown) => {
          expect((err as Error).message).toMatch(/InvalidInstanceID\.NotFound .*eventually consistent/);
          return result;
        });
      }
    } finally {
      unhide();
    }
    expect(result.status?.phase).toBe('Suspended');
    expect(rig.fleet.faults.injected['error:InvalidInstanceID.NotFound']).toBe(3);
    expect(recorder.count('ec2', 'TerminateInstances')).toBe(4);
    expect(await rig.fleet.liveInMoto('early-suspend')).toEqual([]);
  }, 120_000);
});

describe('EC2 taking an instance away or failing it at launch (fault 5)', () => {
  async function settle(w: World, provider: AwsProvider, run: LoadedRun, until: (s: RunStatus | undefined) => boolean) {
    let status: RunStatus | undefined;
    for (let i = 0; i < 12; i++) {
      w.clock.now += 2_000;
      status = (await reconcileRun(w.deps(provider), run.run.metadata.name, desired(run))).status;
      if (until(status)) return status;
    }
    return status;
  }

  it.each([
    ['a user or AWS stop', false, /was stopped \(Client\.UserInitiatedShutdown/],
    ['a spot interruption with the stop or hibernate behaviour', true, /Server\.SpotInstanceShutdown/],
  ])('%s: an event, the stopped instance terminated, and the run resumed on a new instance', async (_what, spot, reason) => {
    const { provider, controller } = rig.provider();
    const w = world(controller);
    const name = spot ? 'stopped-spot' : 'stopped-user';
    const run = loaded(name, { market: 'on-demand' });
    const first = (await reconcileRun(w.deps(provider), name, desired(run))).status?.instances[0]?.id as string;
    await rig.fleet.stopInstance(first, { spot });

    const status = await settle(w, provider, run, (s) => (s?.attempt ?? 0) >= 2 && (s?.instances.length ?? 0) >= 2);
    expect(status?.phase).toBe('Provisioning');
    expect(status?.attempt).toBe(2);
    const events = (await w.store.readEvents(name)).map((e) => `${e.action}: ${e.message ?? ''}`);
    expect(events.some((e) => e.startsWith('Provisioning -> Interrupted') && reason.test(e))).toBe(true);
    expect(events.some((e) => e.startsWith('terminate') && e.includes(first))).toBe(true);
    const live = await rig.fleet.liveInMoto(name);
    expect(live).not.toContain(first);
    expect(live).toEqual([status?.instances[1]?.id]);
    await provider.terminate(live[0] as string);
  }, 120_000);

  it.each([
    ['a scheduled instance-retirement', { event: { code: 'instance-retirement', description: 'The instance is running on degraded hardware', notBefore: new Date(Date.now() + 86_400_000) } }, /EC2 scheduled instance-retirement for .* degraded hardware/],
    ['a scheduled instance-stop', { event: { code: 'instance-stop', description: 'The instance is scheduled to stop', notBefore: new Date(Date.now() + 86_400_000) } }, /EC2 scheduled instance-stop/],
    ['a failed system status check', { impaired: 'system' as const }, /fails its EC2 system status check/],
  ])('%s (DescribeInstanceStatus): an event, and the run moved to a new instance', async (_what, health, reason) => {
    const { provider, recorder, controller } = rig.provider({ statusCheckIntervalMs: 0 });
    const w = world(controller);
    const name = `health-${_what.split(' ').at(-1)?.replace(/[^a-z-]/g, '')}-${Math.random().toString(36).slice(2, 6)}`;
    const run = loaded(name, { market: 'on-demand' });
    const first = (await reconcileRun(w.deps(provider), name, desired(run))).status?.instances[0]?.id as string;
    rig.fleet.setHealth(first, health);

    const status = await settle(w, provider, run, (s) => (s?.attempt ?? 0) >= 2 && (s?.instances.length ?? 0) >= 2);
    expect(status?.attempt).toBe(2);
    const events = (await w.store.readEvents(name)).map((e) => `${e.action}: ${e.message ?? ''}`);
    expect(events.some((e) => e.startsWith('Provisioning -> Interrupted') && reason.test(e))).toBe(true);
    const live = await rig.fleet.liveInMoto(name);
    expect(live).not.toContain(first);
    expect(live).toEqual([status?.instances[1]?.id]);
    // Batched: one DescribeInstanceStatus per observation pass for every running instance, never one per run.
    const statusCalls = recorder.calls.filter((c) => c.operation === 'DescribeInstanceStatus');
    expect(statusCalls.length).toBeGreaterThan(0);
    expect(statusCalls.length).toBeLessThanOrEqual(recorder.count('ec2', 'DescribeInstances'));
    await provider.terminate(live[0] as string);
  }, 120_000);

  it('an instance EC2 ends at launch (KMS key unusable) fails the run as a launch error, not an interruption', async () => {
    const { provider, recorder, controller } = rig.provider();
    const w = world(controller);
    const run = loaded('kms-launch', { market: 'spot' });
    const first = (await reconcileRun(w.deps(provider), 'kms-launch', desired(run))).status?.instances[0]?.id as string;
    await rig.fleet.failAtLaunch(first, 'Client.InternalError', 'Client error on launch');

    const status = await settle(w, provider, run, (s) => s?.phase === 'Failed');
    expect(status?.phase).toBe('Failed');
    expect(status?.interruptions).toBe(0);
    const failed = condition(status, 'Failed');
    expect(failed?.reason).toBe('LaunchFailed');
    expect(failed?.message).toContain(`EC2 terminated ${first}`);
    expect(failed?.message).toContain('Client.InternalError: Client error on launch');
    expect(failed?.message).toMatch(/KMS key of the account's EBS default encryption/);
    expect(recorder.count('ec2', 'RunInstances')).toBe(1);
  }, 120_000);
});
