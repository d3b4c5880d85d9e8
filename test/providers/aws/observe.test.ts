// Observation: one batched, paginated DescribeInstances per pass; readiness from SSM; spot and
// out-of-band terminations reported as what they are.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { statusKey } from '../../../src/agent/layout.js';
import { waitForOnline } from '../../../src/providers/aws/ssm.js';
import { RetryableError, type AgentStatus, type LaunchRequest } from '../../../src/providers/types.js';
import { ec2Errors } from '../../support/fleet/ec2-errors.js';
import { awsSpec, REGION, startRig, type AwsRig } from './harness.js';

let rig: AwsRig;
beforeAll(async () => {
  rig = await startRig({ bootDelayMs: 1500 });
});
afterAll(async () => {
  await rig?.release();
});

async function until<T>(fn: () => Promise<T | undefined>, what: string, ms = 15_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('observe', () => {
  it('reports an instance ready only once SSM reports it Online', async () => {
    const { provider, controller } = rig.provider();
    const spec = awsSpec(rig.bucket);
    const { instance } = await provider.launch({ run: 'boot', generation: 1, attempt: 1, controller, spec });
    const first = (await provider.observe(['boot'])).get('boot');
    expect(first).toHaveLength(1);
    expect(first?.[0]).toMatchObject({ run: 'boot', generation: 1, attempt: 1, state: 'running', ready: false, instance: { id: instance.id } });
    const ready = await until(async () => {
      const o = (await provider.observe(['boot'])).get('boot')?.[0];
      return o?.ready ? o : undefined;
    }, 'SSM Online');
    expect(ready.instance.id).toBe(instance.id);
  });

  it('still reports instances, not ready, when SSM keeps failing transiently', async () => {
    const { provider, controller } = rig.provider({ retry: { maxAttempts: 2, baseDelayMs: 1 } });
    const { instance } = await provider.launch({ run: 'ssm-down', generation: 1, attempt: 1, controller, spec: awsSpec(rig.bucket) });
    const remove = rig.fleet.injectFault({ kind: 'error', service: 'ssm', action: 'DescribeInstanceInformation', status: 500, code: 'InternalServerError' });
    try {
      await new Promise((r) => setTimeout(r, 1600)); // past the simulated boot: only SSM stands in the way
      const obs = (await provider.observe(['ssm-down'])).get('ssm-down');
      expect(obs?.map((o) => [o.instance.id, o.state, o.ready])).toEqual([[instance.id, 'running', false]]);
    } finally {
      remove();
    }
  });

  it('an instance SSM calls invalid (going away) is not ready, and the pass still reports every other instance (issue 11, fault 6)', async () => {
    const { provider, controller } = rig.provider();
    const spec = awsSpec(rig.bucket);
    const going = await provider.launch({ run: 'going', generation: 1, attempt: 1, controller, spec });
    const staying = await provider.launch({ run: 'staying', generation: 1, attempt: 1, controller, spec });
    rig.fleet.injectFault(ec2Errors.ssmInstanceGoingAway([going.instance.id]));
    try {
      const ready = await until(async () => {
        const obs = await provider.observe(['going', 'staying']);
        return obs.get('staying')?.[0]?.ready ? obs : undefined;
      }, 'the other instance Online');
      expect(ready.get('going')?.map((o) => [o.instance.id, o.state, o.ready])).toEqual([[going.instance.id, 'running', false]]);
      expect(ready.get('staying')?.map((o) => o.instance.id)).toEqual([staying.instance.id]);
      // Deploy's wait for Online treats it as "not yet", retryable, never as a fatal error.
      const err = await waitForOnline(provider.clientsFor(REGION), going.instance.id, Date.now() + 500, 100).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(RetryableError);
      expect((err as RetryableError).code).toBe('SsmNotOnline');
    } finally {
      rig.fleet.clearFaults();
    }
  });

  it('reports a spot termination with its EC2 reason', async () => {
    const { provider, controller } = rig.provider();
    const { instance } = await provider.launch({ run: 'spotty', generation: 2, attempt: 3, controller, spec: awsSpec(rig.bucket) });
    await rig.fleet.deliverSpotNotice(instance.id, { terminateAfterMs: 1000 });
    await rig.fleet.whenTerminated(instance.id);
    const obs = (await provider.observe(['spotty'])).get('spotty')?.[0];
    expect(obs).toMatchObject({
      generation: 2,
      attempt: 3,
      state: 'terminated',
      ready: false,
      spotInterruption: { reason: 'Server.SpotInstanceTermination' },
    });
    expect(Date.parse(obs?.spotInterruption?.noticedAt ?? '')).not.toBeNaN();
  });

  it('reports an out-of-band termination with its reason and no spot interruption', async () => {
    const { provider, controller } = rig.provider();
    const { instance } = await provider.launch({ run: 'oob', generation: 1, attempt: 1, controller, spec: awsSpec(rig.bucket) });
    await rig.fleet.terminateOutOfBand(instance.id);
    const obs = (await provider.observe(['oob'])).get('oob')?.[0];
    expect(obs?.state).toBe('terminated');
    expect(obs?.spotInterruption).toBeUndefined();
    expect(obs?.stateReason).toMatch(/^Client\.UserInitiatedShutdown/);
  });

  it('sees only its own controller’s instances, grouped by run, every run present in the answer', async () => {
    const mine = rig.provider();
    const theirs = rig.provider();
    const spec = awsSpec(rig.bucket, { resources: { market: 'on-demand' } });
    await mine.provider.launch({ run: 'shared-name', generation: 1, attempt: 1, controller: mine.controller, spec });
    await theirs.provider.launch({ run: 'shared-name', generation: 1, attempt: 1, controller: theirs.controller, spec });
    const seen = await mine.provider.observe(['shared-name', 'never-launched']);
    expect(seen.get('shared-name')).toHaveLength(1);
    expect(seen.get('never-launched')).toEqual([]);
  });

  it('after a restart, observes the regions of the runs it is told about, not only the default one', async () => {
    const before = rig.provider({ region: undefined });
    const spec = awsSpec(rig.bucket, { resources: { region: 'eu-west-1', image: 'ami-12c6146b', market: 'on-demand' } });
    const { instance } = await before.provider.launch({ run: 'far-away', generation: 1, attempt: 1, controller: before.controller, spec });
    // A new controller process that knows the run only from its spec.
    const after = rig.provider({ region: undefined, controller: before.controller });
    after.provider.track('far-away', spec);
    const seen = await after.provider.observe(['far-away']);
    expect(seen.get('far-away')?.map((o) => o.instance.id)).toEqual([instance.id]);
    expect(after.recorder.calls.filter((c) => c.operation === 'DescribeInstances')).toHaveLength(1);
  });

  it('API economy: with 50 runs in training, a steady-state pass is one DescribeInstances per page and one S3 request per run', async () => {
    const { provider, recorder, controller } = rig.provider({ describePageSize: 20 });
    const spec = awsSpec(rig.bucket, { resources: { market: 'on-demand' } });
    const runs = Array.from({ length: 50 }, (_, i) => `econ-${String(i).padStart(2, '0')}`);
    const keys = runs.map((run) => ({ run, generation: 1, attempt: 1 }));
    for (const key of keys) {
      const req: LaunchRequest = { ...key, controller, spec };
      await provider.launch(req);
    }
    // Every agent has written a status object.
    const storage = provider.clientsFor('us-east-1').s3;
    const { PutObjectCommand } = await import('@aws-sdk/client-s3');
    for (const key of keys) {
      const status: AgentStatus = { ...key, phase: 'training', seq: 7, heartbeatAt: new Date().toISOString(), progress: { step: 10 } };
      await storage.send(new PutObjectCommand({ Bucket: rig.bucket, Key: `runctl/${statusKey(key)}`, Body: JSON.stringify(status) }));
    }
    const pass = async () => {
      const observed = await provider.observe(runs);
      const statuses = await Promise.all(keys.map((k) => provider.readAgentStatus(k, spec)));
      return { observed, statuses };
    };
    // Warm-up pass: readiness learned from SSM, statuses read in full.
    await until(async () => {
      const { observed } = await pass();
      return [...observed.values()].every((l) => l[0]?.ready) ? true : undefined;
    }, 'all 50 instances Online');

    recorder.reset();
    const proxySeen = rig.fleet.calls.length;
    const { observed, statuses } = await pass();

    expect([...observed.values()].map((l) => l.length)).toEqual(runs.map(() => 1));
    expect(statuses.every((s) => s?.phase === 'training' && s.progress?.step === 10)).toBe(true);
    const pages = Math.ceil(50 / 20);
    expect(recorder.count('ec2', undefined, 'attempts')).toBe(pages);
    expect(recorder.count('ec2', 'DescribeInstances', 'attempts')).toBe(pages);
    expect(recorder.count('ssm', undefined, 'attempts')).toBe(0);
    expect(recorder.count('s3', undefined, 'attempts')).toBe(50);
    expect(recorder.calls.filter((c) => c.service === 's3').every((c) => c.operation === 'GetObject' && c.input.IfNoneMatch)).toBe(true);
    // The proxy in front of moto saw the same: nothing else went over the wire.
    const wire = rig.fleet.calls.slice(proxySeen);
    expect(wire.filter((c) => c.service === 'ec2')).toHaveLength(pages);
    expect(wire.filter((c) => c.service === 's3').map((c) => c.status)).toEqual(runs.map(() => 304));
  });

  it('reads an updated status after a 304, and ignores a stale one', async () => {
    const { provider } = rig.provider();
    const spec = awsSpec(rig.bucket);
    const key = { run: 'fresh', generation: 1, attempt: 1 };
    const s3 = provider.clientsFor('us-east-1').s3;
    const { PutObjectCommand } = await import('@aws-sdk/client-s3');
    const put = (status: AgentStatus) =>
      s3.send(new PutObjectCommand({ Bucket: rig.bucket, Key: `runctl/${statusKey(key)}`, Body: JSON.stringify(status) }));
    expect(await provider.readAgentStatus(key, spec)).toBeUndefined();
    await put({ ...key, phase: 'installing', seq: 1, heartbeatAt: new Date().toISOString() });
    expect((await provider.readAgentStatus(key, spec))?.phase).toBe('installing');
    expect((await provider.readAgentStatus(key, spec))?.phase).toBe('installing');
    await put({ ...key, phase: 'training', seq: 2, heartbeatAt: new Date().toISOString() });
    expect((await provider.readAgentStatus(key, spec))?.phase).toBe('training');
    await put({ ...key, phase: 'installing', seq: 1, heartbeatAt: new Date().toISOString() });
    expect((await provider.readAgentStatus(key, spec))?.phase).toBe('training');
  });
});
