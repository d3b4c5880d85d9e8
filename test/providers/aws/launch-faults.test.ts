// Issue 11, faults 1, 2 and 6: what the capacity ladder does with the refusals EC2 really sends
// (quotas per instance family and market, a subnet out of addresses, a type not offered in a zone,
// an AMI of the wrong architecture, a missing spot service-linked role, an instance profile IAM has
// not propagated yet). The fleet proxy answers each with AWS's code, HTTP status and message.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { CapacityError, TerminalError, type LaunchRequest } from '../../../src/providers/types.js';
import type { RunSpec } from '../../../src/spec/types.js';
import { ec2Errors } from '../../support/fleet/ec2-errors.js';
import { awsSpec, PROFILE, startRig, type AwsRig, type Recorder } from './harness.js';

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

function request(controller: string, spec: RunSpec, run = 'quota-run'): LaunchRequest {
  return { run, generation: 1, attempt: 1, controller, spec };
}

function tried(recorder: Recorder): string[] {
  return recorder.calls
    .filter((c) => c.service === 'ec2' && c.operation === 'RunInstances')
    .map((c) => `${(c.input.InstanceMarketOptions as { MarketType?: string } | undefined)?.MarketType ?? 'on-demand'}/${String(c.input.InstanceType)}`);
}

async function liveInstances(provider: ReturnType<AwsRig['provider']>['provider'], run: string) {
  return ((await provider.observe([run])).get(run) ?? []).filter((o) => o.state !== 'terminated');
}

describe('quota errors (fault 1)', () => {
  it('a refused P quota skips the P rungs and launches the G type next', async () => {
    const { provider, recorder, controller } = rig.provider();
    rig.fleet.injectFault(ec2Errors.vcpuLimitExceeded({ instanceTypes: ['p4d.24xlarge', 'p5.48xlarge'] }));
    const spec = awsSpec(rig.bucket, { resources: { market: 'on-demand', instanceTypes: ['p4d.24xlarge', 'p5.48xlarge', 'g5.48xlarge'] } });
    const result = await provider.launch(request(controller, spec, 'p-quota'));

    expect(result.instance.type).toBe('g5.48xlarge');
    // p5 shares p4d's quota ("Running On-Demand P instances"): it is not even asked for.
    expect(tried(recorder)).toEqual(['on-demand/p4d.24xlarge', 'on-demand/g5.48xlarge']);
    expect((await liveInstances(provider, 'p-quota')).map((o) => o.instance.type)).toEqual(['g5.48xlarge']);
  });

  it('spot and on-demand quotas are separate: a spot quota refusal still tries on-demand of the same family', async () => {
    const { provider, recorder, controller } = rig.provider();
    rig.fleet.injectFault(ec2Errors.maxSpotInstanceCountExceeded({ instanceTypes: ['p4d.24xlarge'] }));
    const spec = awsSpec(rig.bucket, { resources: { market: 'spot-then-on-demand', instanceTypes: ['p4d.24xlarge', 'g5.48xlarge'] } });
    const result = await provider.launch(request(controller, spec, 'spot-quota'));
    expect(result.instance).toMatchObject({ type: 'g5.48xlarge', market: 'spot' });
    expect(tried(recorder)).toEqual(['spot/p4d.24xlarge', 'spot/g5.48xlarge']);

    rig.fleet.clearFaults();
    const other = rig.provider();
    rig.fleet.injectFault(ec2Errors.maxSpotInstanceCountExceeded());
    const fallback = await other.provider.launch(request(other.controller, { ...spec, resources: { ...spec.resources, instanceTypes: ['p4d.24xlarge'] } }, 'spot-quota-2'));
    expect(fallback.instance).toMatchObject({ type: 'p4d.24xlarge', market: 'on-demand' });
    expect(tried(other.recorder)).toEqual(['spot/p4d.24xlarge', 'on-demand/p4d.24xlarge']);
  });

  it('every rung refused by quota: a wait-and-retry error naming each quota and how to raise it, then a launch once the quota frees', async () => {
    const { provider, recorder, controller } = rig.provider();
    const spec = awsSpec(rig.bucket, { resources: { market: 'on-demand', instanceTypes: ['p4d.24xlarge', 'g5.48xlarge'] } });
    const stop = rig.fleet.injectFault(ec2Errors.vcpuLimitExceeded());
    const err = await provider.launch(request(controller, spec, 'all-quota')).catch((e: unknown) => e);

    expect(err).toBeInstanceOf(CapacityError);
    expect((err as CapacityError).reason).toBe('QuotaExceeded');
    expect((err as CapacityError).code).toBe('VcpuLimitExceeded');
    const message = (err as Error).message;
    expect(message).toContain('"Running On-Demand P instances"');
    expect(message).toContain('"Running On-Demand G and VT instances"');
    expect(message).toContain('aws service-quotas request-service-quota-increase --service-code ec2');
    expect(message).toContain('us-east-1');
    expect(message).toMatch(/keeps retrying until timeouts\.provisioning/);
    expect(await liveInstances(provider, 'all-quota')).toEqual([]);

    stop(); // the quota frees (an old instance's vCPUs are released)
    const result = await provider.launch(request(controller, spec, 'all-quota'));
    expect(result).toMatchObject({ adopted: false, instance: { type: 'p4d.24xlarge' } });
    expect(tried(recorder)).toEqual(['on-demand/p4d.24xlarge', 'on-demand/g5.48xlarge', 'on-demand/p4d.24xlarge']);
  });

  it('InstanceLimitExceeded and a subnet out of addresses wait too; the subnet blocks every rung that uses it', async () => {
    const { provider, recorder, controller } = rig.provider();
    rig.fleet.injectFault(ec2Errors.insufficientFreeAddressesInSubnet('subnet-0a1b2c3d'));
    const spec = awsSpec(rig.bucket, { resources: { market: 'on-demand', instanceTypes: ['g5.xlarge', 'm5.large'] } });
    const err = await provider.launch(request(controller, spec, 'subnet-full')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(CapacityError);
    expect((err as CapacityError).reason).toBe('QuotaExceeded');
    expect((err as Error).message).toMatch(/free IP addresses in the default subnet.*spec\.resources\.subnetId/);
    expect(tried(recorder)).toEqual(['on-demand/g5.xlarge']);

    rig.fleet.clearFaults();
    rig.fleet.injectFault(ec2Errors.instanceLimitExceeded({ instanceTypes: ['g5.xlarge'] }));
    const result = await provider.launch(request(controller, spec, 'subnet-full'));
    expect(result.instance.type).toBe('m5.large');
  });

  it('capacity and quota refusals together are reported as capacity, the quota still named', async () => {
    const { provider, controller } = rig.provider();
    rig.fleet.injectFault(ec2Errors.vcpuLimitExceeded({ instanceTypes: ['p4d.24xlarge'] }));
    rig.fleet.injectFault({ kind: 'insufficient-capacity', instanceTypes: ['g5.48xlarge'] });
    const spec = awsSpec(rig.bucket, { resources: { market: 'on-demand', instanceTypes: ['p4d.24xlarge', 'g5.48xlarge'] } });
    const err = (await provider.launch(request(controller, spec, 'mixed')).catch((e: unknown) => e)) as CapacityError;
    expect(err).toBeInstanceOf(CapacityError);
    expect(err.reason).toBe('InsufficientCapacity');
    expect(err.message).toContain('"Running On-Demand P instances"');
    expect(err.message).toContain('on-demand/g5.48xlarge/*: InsufficientInstanceCapacity');
  });
});

describe('an instance profile IAM has not propagated yet (fault 2)', () => {
  it('is a wait-and-retry refusal saying both possibilities, and launches once EC2 accepts the profile', async () => {
    const { provider, controller } = rig.provider();
    rig.fleet.injectFault(ec2Errors.invalidInstanceProfile(PROFILE, { times: 2 }));
    const spec = awsSpec(rig.bucket, { resources: { market: 'on-demand' } });
    for (let i = 0; i < 2; i++) {
      const err = (await provider.launch(request(controller, spec, 'new-profile')).catch((e: unknown) => e)) as CapacityError;
      expect(err).toBeInstanceOf(CapacityError);
      expect(err.reason).toBe('InstanceProfileNotReady');
      expect(err.message).toContain(`instance profile "${PROFILE}" (spec.resources.iamInstanceProfile)`);
      expect(err.message).toMatch(/does not exist in this account/);
      expect(err.message).toMatch(/created moments ago and IAM has not propagated it/);
      expect(err.requestId ?? err.message).toMatch(/fleet-/);
    }
    const result = await provider.launch(request(controller, spec, 'new-profile'));
    expect(result.adopted).toBe(false);
  });
});

describe('misclassifications (fault 6)', () => {
  it('Unsupported in one zone skips that rung only, with the message, and is never retried as capacity', async () => {
    const { provider, recorder, controller } = rig.provider();
    rig.fleet.injectFault(ec2Errors.unsupportedInZone('p4d.24xlarge', 'us-east-1a', ['us-east-1b'], { market: 'on-demand' }));
    const spec = awsSpec(rig.bucket, { resources: { market: 'on-demand', instanceTypes: ['p4d.24xlarge', 'g5.xlarge'], availabilityZones: ['us-east-1a'] } });
    const result = await provider.launch(request(controller, spec, 'unsupported'));
    expect(result.instance.type).toBe('g5.xlarge');
    expect(tried(recorder)).toEqual(['on-demand/p4d.24xlarge', 'on-demand/g5.xlarge']);
  });

  it('Unsupported on every rung is terminal, saying why for each', async () => {
    const { provider, recorder, controller } = rig.provider();
    rig.fleet.injectFault(ec2Errors.unsupportedInZone('p4d.24xlarge', 'us-east-1a', ['us-east-1b']));
    const spec = awsSpec(rig.bucket, { resources: { market: 'spot-then-on-demand', instanceTypes: ['p4d.24xlarge'], availabilityZones: ['us-east-1a'] } });
    const err = await provider.launch(request(controller, spec, 'unsupported-all')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TerminalError);
    expect((err as Error).message).toContain('spot/p4d.24xlarge/us-east-1a: Unsupported: Your requested instance type (p4d.24xlarge) is not supported');
    expect((err as Error).message).toContain('on-demand/p4d.24xlarge/us-east-1a: Unsupported');
    expect(tried(recorder)).toHaveLength(2);
  });

  it('an AMI architecture that does not match one type fails that rung, not the ladder', async () => {
    const { provider, recorder, controller } = rig.provider();
    rig.fleet.injectFault(ec2Errors.architectureMismatch('arm64', 'x86_64', { instanceTypes: ['g5g.xlarge'] }));
    const spec = awsSpec(rig.bucket, { resources: { market: 'on-demand', instanceTypes: ['g5g.xlarge', 'g5.xlarge'] } });
    const result = await provider.launch(request(controller, spec, 'arch'));
    expect(result.instance.type).toBe('g5.xlarge');
    expect(tried(recorder)).toEqual(['on-demand/g5g.xlarge', 'on-demand/g5.xlarge']);

    const only = rig.provider();
    rig.fleet.injectFault(ec2Errors.architectureMismatch('arm64', 'x86_64', { instanceTypes: ['g5g.xlarge'] }));
    const err = await only.provider
      .launch(request(only.controller, { ...spec, resources: { ...spec.resources, instanceTypes: ['g5g.xlarge'] } }, 'arch-only'))
      .catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TerminalError);
    expect((err as Error).message).toMatch(/architecture 'arm64'.*spec\.resources\.image must match/);
  });

  it('a missing spot service-linked role falls back to on-demand where the market allows', async () => {
    const { provider, recorder, controller } = rig.provider();
    rig.fleet.injectFault(ec2Errors.spotServiceLinkedRoleMissing());
    const spec = awsSpec(rig.bucket, { resources: { market: 'spot-then-on-demand', instanceTypes: ['g5.xlarge', 'g6.xlarge'] } });
    const result = await provider.launch(request(controller, spec, 'slr'));
    expect(result.instance).toMatchObject({ market: 'on-demand', type: 'g5.xlarge' });
    // One spot refusal is enough: the role is per account, so the other spot rungs are not asked.
    expect(tried(recorder)).toEqual(['spot/g5.xlarge', 'on-demand/g5.xlarge']);
  });

  it('a missing spot service-linked role with market spot is terminal and says how to create the role', async () => {
    const { provider, controller } = rig.provider();
    rig.fleet.injectFault(ec2Errors.spotServiceLinkedRoleMissing());
    const spec = awsSpec(rig.bucket, { resources: { market: 'spot' } });
    const err = await provider.launch(request(controller, spec, 'slr-spot')).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TerminalError);
    expect((err as TerminalError).code).toBe('AuthFailure.ServiceLinkedRoleCreationNotPermitted');
    expect((err as Error).message).toContain('aws iam create-service-linked-role --aws-service-name spot.amazonaws.com');
    expect((err as Error).message).toContain('iam:CreateServiceLinkedRole');
  });
});
