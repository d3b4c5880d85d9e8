// Launching through the real EC2 SDK client against moto, behind the fleet simulator.
import fs from 'node:fs';
import path from 'node:path';
import { DescribeInstancesCommand, DescribeVolumesCommand, type Instance } from '@aws-sdk/client-ec2';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { clientToken } from '../../../src/providers/aws/ec2-launch.js';
import { CapacityError, TerminalError, type LaunchRequest } from '../../../src/providers/types.js';
import type { RunSpec } from '../../../src/spec/types.js';
import { INSTANT_TIMING } from '../../support/fleet/index.js';
import { waitFor } from '../local/helpers.js';
import { awsSpec, launchRequestProblems, startRig, type AwsRig, type Recorder, type SdkCall } from './harness.js';

let rig: AwsRig;
beforeAll(async () => {
  rig = await startRig();
});
afterAll(async () => {
  await rig?.release();
});
afterEach(() => {
  rig.fleet.clearFaults();
});

const OWNERSHIP = ['runctl:run', 'runctl:generation', 'runctl:attempt', 'runctl:controller'];

function request(controller: string, spec: RunSpec, run = 'resnet', attempt = 1): LaunchRequest {
  return { run, generation: 1, attempt, controller, spec };
}

function runInstancesCalls(recorder: Recorder): SdkCall[] {
  return recorder.calls.filter((c) => c.service === 'ec2' && c.operation === 'RunInstances');
}

/** Acceptance 3: what every single launch request asks EC2 for. */
function expectHardenedLaunch(call: SdkCall, req: LaunchRequest): void {
  const input = call.input as {
    MetadataOptions?: { HttpTokens?: string };
    BlockDeviceMappings?: { Ebs?: { Encrypted?: boolean; VolumeType?: string; VolumeSize?: number } }[];
    TagSpecifications?: { ResourceType?: string; Tags?: { Key?: string; Value?: string }[] }[];
    ClientToken?: string;
    IamInstanceProfile?: { Name?: string };
  };
  expect(input.MetadataOptions?.HttpTokens).toBe('required');
  expect(input.BlockDeviceMappings?.length).toBeGreaterThan(0);
  for (const mapping of input.BlockDeviceMappings ?? []) {
    expect(mapping.Ebs).toMatchObject({ Encrypted: true, VolumeType: 'gp3', VolumeSize: req.spec.resources.rootVolumeGiB });
  }
  expect(input.IamInstanceProfile?.Name).toBe(req.spec.resources.iamInstanceProfile);
  expect(input.ClientToken?.length).toBeLessThanOrEqual(64);
  for (const resource of ['instance', 'volume']) {
    const tags = input.TagSpecifications?.find((t) => t.ResourceType === resource)?.Tags ?? [];
    const byKey = Object.fromEntries(tags.map((t) => [t.Key, t.Value]));
    for (const key of OWNERSHIP) expect(byKey[key], `${resource} tag ${key}`).toBeTruthy();
    expect(byKey).toMatchObject({
      'runctl:run': req.run,
      'runctl:generation': String(req.generation),
      'runctl:attempt': String(req.attempt),
      'runctl:controller': req.controller,
    });
    expect(byKey.Name).toContain(req.run);
  }
}

async function describeInstance(rigFleetEndpoint: string, id: string): Promise<Instance> {
  const { provider } = rig.provider();
  const ec2 = provider.clientsFor('us-east-1').ec2;
  const out = await ec2.send(new DescribeInstancesCommand({ InstanceIds: [id] }));
  void rigFleetEndpoint;
  return out.Reservations?.[0]?.Instances?.[0] as Instance;
}

describe('launch', () => {
  it('launches a spot instance with IMDSv2, an encrypted gp3 root volume and all ownership tags on instance and volume', async () => {
    const { provider, recorder, controller } = rig.provider();
    const req = request(controller, awsSpec(rig.bucket, { resources: { availabilityZones: ['us-east-1b'] } }));
    const result = await provider.launch(req);

    expect(result.adopted).toBe(false);
    expect(result.instance).toMatchObject({ type: 'g5.xlarge', zone: 'us-east-1b', market: 'spot' });
    expect(result.instance.pricePerHour).toBeGreaterThan(0);
    const launches = runInstancesCalls(recorder);
    expect(launches).toHaveLength(1);
    expect(recorder.launchesChecked).toBe(1);
    for (const call of launches) expectHardenedLaunch(call, req);
    expect(launches[0]?.input).toMatchObject({
      InstanceMarketOptions: { MarketType: 'spot', SpotOptions: { SpotInstanceType: 'one-time', InstanceInterruptionBehavior: 'terminate' } },
    });

    // What EC2 (moto) actually created matches the request.
    const instance = await describeInstance(rig.fleet.endpoint, result.instance.id);
    expect(instance.MetadataOptions?.HttpTokens).toBe('required');
    expect(instance.InstanceLifecycle).toBe('spot');
    const volumes = await provider
      .clientsFor('us-east-1')
      .ec2.send(new DescribeVolumesCommand({ Filters: [{ Name: 'attachment.instance-id', Values: [result.instance.id] }] }));
    expect(volumes.Volumes?.length).toBeGreaterThan(0);
    for (const v of volumes.Volumes ?? []) {
      expect(v.Encrypted).toBe(true);
      expect(v.VolumeType).toBe('gp3');
      expect((v.Tags ?? []).map((t) => t.Key)).toEqual(expect.arrayContaining(OWNERSHIP));
    }
  });

  it('moves to the next instance type when the first has no capacity', async () => {
    const { provider, recorder, controller } = rig.provider();
    rig.fleet.injectFault({ kind: 'insufficient-capacity', instanceTypes: ['g5.xlarge'] });
    const req = request(controller, awsSpec(rig.bucket, { resources: { market: 'on-demand' } }));
    const result = await provider.launch(req);

    expect(result.instance.type).toBe('g6.xlarge');
    const launches = runInstancesCalls(recorder);
    expect(launches.map((c) => c.input.InstanceType)).toEqual(['g5.xlarge', 'g6.xlarge']);
    for (const call of launches) expectHardenedLaunch(call, req);
    // Capacity errors move down the ladder; they are not retried in place.
    expect(recorder.count('ec2', 'RunInstances', 'attempts')).toBe(2);
  });

  it('walks zones within a type before the next type', async () => {
    const { provider, recorder, controller } = rig.provider();
    rig.fleet.injectFault({ kind: 'insufficient-capacity', instanceTypes: ['g5.xlarge'] });
    const req = request(controller, awsSpec(rig.bucket, { resources: { market: 'on-demand', availabilityZones: ['us-east-1a', 'us-east-1c'] } }));
    const result = await provider.launch(req);
    expect(result.instance).toMatchObject({ type: 'g6.xlarge', zone: 'us-east-1a' });
    expect(runInstancesCalls(recorder).map((c) => [c.input.InstanceType, (c.input.Placement as { AvailabilityZone?: string })?.AvailabilityZone])).toEqual([
      ['g5.xlarge', 'us-east-1a'],
      ['g5.xlarge', 'us-east-1c'],
      ['g6.xlarge', 'us-east-1a'],
    ]);
  });

  it('falls back to on-demand when spot is unavailable and the market allows it', async () => {
    const { provider, recorder, controller } = rig.provider();
    rig.fleet.injectFault({ kind: 'spot-unavailable' });
    const req = request(controller, awsSpec(rig.bucket, { resources: { market: 'spot-then-on-demand' } }));
    const result = await provider.launch(req);

    expect(result.instance.market).toBe('on-demand');
    expect(result.instance.pricePerHour).toBeUndefined();
    const markets = runInstancesCalls(recorder).map((c) => (c.input.InstanceMarketOptions as { MarketType?: string } | undefined)?.MarketType ?? 'on-demand');
    expect(markets).toEqual(['spot', 'spot', 'on-demand']);
    const instance = await describeInstance(rig.fleet.endpoint, result.instance.id);
    expect(instance.InstanceLifecycle).toBeUndefined();
  });

  it('never launches on-demand when the market is spot: capacity error naming the fix', async () => {
    const { provider, recorder, controller } = rig.provider();
    rig.fleet.injectFault({ kind: 'spot-unavailable' });
    const req = request(controller, awsSpec(rig.bucket, { resources: { market: 'spot' } }));
    const err = await provider.launch(req).catch((e: unknown) => e);

    expect(err).toBeInstanceOf(CapacityError);
    expect((err as Error).message).toMatch(/spot-then-on-demand/);
    expect((err as Error).message).toMatch(/spot\/g5\.xlarge\/\*: InsufficientInstanceCapacity/);
    const markets = runInstancesCalls(recorder).map((c) => (c.input.InstanceMarketOptions as { MarketType?: string } | undefined)?.MarketType);
    expect(markets).toEqual(['spot', 'spot']);
  });

  it('skips the remaining spot rungs once the spot request quota is reached', async () => {
    const { provider, recorder, controller } = rig.provider();
    rig.fleet.injectFault({ kind: 'error', service: 'ec2', action: 'RunInstances', status: 400, code: 'MaxSpotInstanceCountExceeded', times: 1 });
    const result = await provider.launch(request(controller, awsSpec(rig.bucket)));
    expect(result.instance).toMatchObject({ market: 'on-demand', type: 'g5.xlarge' });
    expect(runInstancesCalls(recorder)).toHaveLength(2);
  });

  it('absorbs throttling on a fraction of calls with bounded retries', async () => {
    const { provider, recorder, controller } = rig.provider({ retry: { maxAttempts: 4, baseDelayMs: 5 } });
    rig.fleet.injectFault({ kind: 'throttle', service: 'ec2', fraction: 0.5, maxConsecutive: 2, seed: 7 });
    for (const run of ['thr-a', 'thr-b', 'thr-c']) {
      const result = await provider.launch(request(controller, awsSpec(rig.bucket, { resources: { market: 'on-demand' } }), run));
      expect(result.adopted).toBe(false);
    }
    const observed = await provider.observe(['thr-a', 'thr-b', 'thr-c']);
    expect([...observed.values()].map((l) => l.length)).toEqual([1, 1, 1]);

    expect(rig.fleet.faults.injected.throttle).toBeGreaterThan(0);
    const calls = recorder.count('ec2', undefined, 'calls');
    const attempts = recorder.count('ec2', undefined, 'attempts');
    expect(attempts).toBeGreaterThan(calls);
    expect(attempts).toBeLessThanOrEqual(calls * 4);
  });

  it('adopts the instance of a launch whose result was never recorded instead of launching a second one', async () => {
    const spec = awsSpec(rig.bucket);
    const first = rig.provider();
    const launched = await first.provider.launch(request(first.controller, spec, 'crashy'));
    // The controller "crashes" here: nothing recorded. A new one starts with the same controller tag.
    const second = rig.provider({ controller: first.controller });
    const again = await second.provider.launch(request(first.controller, spec, 'crashy'));

    expect(again).toMatchObject({ adopted: true, instance: { id: launched.instance.id, market: 'spot' } });
    expect(runInstancesCalls(second.recorder)).toHaveLength(0);
    const observed = await second.provider.observe(['crashy']);
    expect(observed.get('crashy')?.map((o) => o.instance.id)).toEqual([launched.instance.id]);
  });

  it("starts the attempt's agent at boot from user data: the SSM install script, run by cloud-init before SSM registration", async () => {
    const { provider, recorder, controller } = rig.provider();
    const spec = awsSpec(rig.bucket, { code: { path: './test/fixtures/prelaunch-job', exclude: [] } });
    const req: LaunchRequest = { ...request(controller, spec, 'booted', 2), bootAgent: { repoRoot: path.resolve('.'), startGate: true } };
    // SSM registration far off, so "before registration" does not depend on this machine's speed.
    rig.fleet.setTiming({ ssmRegistrationMs: 3_600_000 });
    const result = await provider.launch(req).finally(() => rig.fleet.setTiming(INSTANT_TIMING));

    expect(result.bootAgent).toEqual({ started: true });
    const input = runInstancesCalls(recorder)[0]?.input as { UserData?: string };
    const script = Buffer.from(input.UserData ?? '', 'base64').toString('utf8');
    expect(script.startsWith('#!/bin/sh\n')).toBe(true);
    expect(script).toContain("dir='/opt/runctl/runs/booted/g1/a2'");
    // The same config as an SSM deploy of a replacement: the gate closed, the agent checked by sha256.
    expect(script).toMatch(/"startGate":true/);
    expect(script).toMatch(/agent_sha='[0-9a-f]{64}'/);
    expect(Buffer.byteLength(script)).toBeLessThanOrEqual(16 * 1024);

    // The fleet runs it as cloud-init does, once the instance is running, before SSM has it Online:
    // the agent is up (its lock held) while SendCommand would still be refused.
    const instance = rig.fleet.instances.get(result.instance.id)!;
    const agentLock = path.join(instance.sandboxDir, 'opt/runctl/runs/booted/g1/a2/state/agent.lock');
    const boot = await waitFor('the user-data script to start the agent', () => {
      const run = instance.invocations.find((i) => i.commandId === 'cloud-init');
      return run?.status === 'Success' && fs.existsSync(agentLock) && run;
    }, 120_000);
    expect(boot.stdout).toContain('runctl: agent started for');
    expect(boot.startedAt.getTime()).toBeGreaterThanOrEqual(instance.runningAt.getTime());
    expect(Date.now()).toBeLessThan(instance.onlineAt.getTime());
    // Its agent waits at the start gate: it fetched the code and went no further.
    const agentLog = path.join(path.dirname(agentLock), 'agent.log');
    await waitFor('the agent to wait at its gate', () => fs.existsSync(agentLog) && fs.readFileSync(agentLog, 'utf8').includes('phase waiting'), 120_000);
    await provider.terminate(result.instance.id);
  });

  it('launches without user data, saying why, when the start script would not fit in 16 KB', async () => {
    const { provider, recorder, controller } = rig.provider();
    const spec = awsSpec(rig.bucket, { code: { path: './test/fixtures/prelaunch-job', exclude: [] }, env: { BIG: 'x'.repeat(20_000) } });
    const result = await provider.launch({ ...request(controller, spec, 'unbooted', 2), bootAgent: { repoRoot: path.resolve('.') } });

    expect(result.bootAgent).toMatchObject({ started: false, reason: expect.stringMatching(/over EC2's 16384 bytes of user data/) });
    expect((runInstancesCalls(recorder)[0]?.input as { UserData?: string }).UserData).toBeUndefined();
    await provider.terminate(result.instance.id);
  });

  it('guards every launch request in these tests: an unsafe one would fail the call', () => {
    const { recorder } = rig.provider();
    expect(recorder.launchesChecked).toBe(0);
    expect(launchRequestProblems({ MetadataOptions: { HttpTokens: 'optional' }, BlockDeviceMappings: [{ Ebs: { Encrypted: false } }] })).toEqual([
      'MetadataOptions.HttpTokens is not "required"',
      'a block device is not encrypted',
      'instance lacks tag runctl:run',
      'instance lacks tag runctl:generation',
      'instance lacks tag runctl:attempt',
      'instance lacks tag runctl:controller',
      'volume lacks tag runctl:run',
      'volume lacks tag runctl:generation',
      'volume lacks tag runctl:attempt',
      'volume lacks tag runctl:controller',
    ]);
  });

  it('uses a deterministic client token of at most 64 characters per attempt and rung', () => {
    const key = { run: 'a'.repeat(63), generation: 123456, attempt: 99 };
    const token = clientToken(key, 'controller-with-a-long-name', 'spot/p4d.24xlarge/us-east-1a');
    expect(token.length).toBeLessThanOrEqual(64);
    expect(clientToken(key, 'controller-with-a-long-name', 'spot/p4d.24xlarge/us-east-1a')).toBe(token);
    expect(clientToken({ ...key, attempt: 100 }, 'controller-with-a-long-name', 'spot/p4d.24xlarge/us-east-1a')).not.toBe(token);
    expect(clientToken(key, 'controller-with-a-long-name', 'on-demand/p4d.24xlarge/us-east-1a')).not.toBe(token);
  });

  it('stops at a denied launch with a message naming the missing permission', async () => {
    const { provider, controller } = rig.provider();
    rig.fleet.injectFault({
      kind: 'error',
      service: 'ec2',
      action: 'RunInstances',
      status: 403,
      code: 'UnauthorizedOperation',
      message: 'You are not authorized to perform this operation. Encoded authorization failure message: AbCdEf123',
    });
    const err = await provider.launch(request(controller, awsSpec(rig.bucket))).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TerminalError);
    expect((err as Error).message).toMatch(/ec2:RunInstances/);
    expect((err as Error).message).toMatch(/iam:PassRole/);
    expect((err as Error).message).toMatch(/runctl iam-policy/);
    expect((err as Error).message).not.toContain('AbCdEf123');
  });

  it('reports an image that does not exist as a terminal error naming the field', async () => {
    const { provider, controller } = rig.provider();
    const err = await provider
      .launch(request(controller, awsSpec(rig.bucket, { resources: { image: 'ami-0123456789abcdef0' } })))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TerminalError);
    expect((err as Error).message).toMatch(/spec\.resources\.image: AMI ami-0123456789abcdef0 does not exist in us-east-1/);
  });

  it('resolves the image from an SSM public parameter', async () => {
    const { provider, recorder, controller } = rig.provider();
    const param = '/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64';
    const result = await provider.launch(request(controller, awsSpec(rig.bucket, { resources: { image: param, market: 'on-demand' } })));
    const call = runInstancesCalls(recorder)[0];
    expect(call?.input.ImageId).toMatch(/^ami-[0-9a-f]+$/);
    expect(recorder.count('ssm', 'GetParameter')).toBe(1);
    // The root volume replaces the image's own root device (AL2023: /dev/xvda), it is not a second disk.
    expect((call?.input.BlockDeviceMappings as { DeviceName?: string }[])[0]?.DeviceName).toBe('/dev/xvda');
    expect(result.adopted).toBe(false);
  });
});
