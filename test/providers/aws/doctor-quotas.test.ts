// Which EC2 vCPU quota an instance type counts against, per market (codes as Service Quotas names
// them; EC2 User Guide, "Spot Instance quotas" and "On-Demand Instance quotas"), and how a bucket's
// LocationConstraint reads as a region.
import { describe, expect, it } from 'vitest';
import { bucketRegion } from '../../../src/providers/aws/doctor/bucket.js';
import { marketsOf, vcpuQuota } from '../../../src/providers/aws/doctor/quotas.js';

describe('vcpuQuota', () => {
  it.each([
    ['t3.micro', 'L-1216C47A', 'L-34B43A08'],
    ['m5.large', 'L-1216C47A', 'L-34B43A08'],
    ['c7g.xlarge', 'L-1216C47A', 'L-34B43A08'],
    ['r6i.2xlarge', 'L-1216C47A', 'L-34B43A08'],
    ['i4i.large', 'L-1216C47A', 'L-34B43A08'],
    ['d3.xlarge', 'L-1216C47A', 'L-34B43A08'],
    ['g5.xlarge', 'L-DB2E81BA', 'L-3819A6DF'],
    ['g6e.12xlarge', 'L-DB2E81BA', 'L-3819A6DF'],
    ['vt1.3xlarge', 'L-DB2E81BA', 'L-3819A6DF'],
    ['p4d.24xlarge', 'L-417A185B', 'L-7212CCBC'],
    ['p3.2xlarge', 'L-417A185B', 'L-7212CCBC'],
    ['p5.48xlarge', 'L-417A185B', 'L-C4BD4855'],
    ['p5en.48xlarge', 'L-417A185B', 'L-C4BD4855'],
    ['inf2.xlarge', 'L-1945791B', 'L-B5D1601B'],
    ['trn1.32xlarge', 'L-2C3B7624', 'L-6B0D517C'],
    ['dl1.24xlarge', 'L-6E869C2A', 'L-85EED4F7'],
    ['f1.2xlarge', 'L-74FC7D96', 'L-88CF9481'],
    ['x2idn.16xlarge', 'L-7295265B', 'L-E3A00192'],
  ])('%s: on-demand %s, spot %s', (type, onDemand, spot) => {
    expect(vcpuQuota(type, 'on-demand')?.code).toBe(onDemand);
    expect(vcpuQuota(type, 'spot')?.code).toBe(spot);
  });

  it('has no spot quota for families without spot, and none for Mac hosts', () => {
    expect(vcpuQuota('u-6tb1.56xlarge', 'on-demand')?.code).toBe('L-43DA4232');
    expect(vcpuQuota('u-6tb1.56xlarge', 'spot')).toBeUndefined();
    expect(vcpuQuota('hpc7g.16xlarge', 'on-demand')?.code).toBe('L-F7808C92');
    expect(vcpuQuota('hpc7g.16xlarge', 'spot')).toBeUndefined();
    expect(vcpuQuota('mac2.metal', 'on-demand')).toBeUndefined();
  });

  it('names the quota as the console does', () => {
    expect(vcpuQuota('g5.xlarge', 'on-demand')?.name).toBe('Running On-Demand G and VT instances');
    expect(vcpuQuota('t3.micro', 'spot')?.name).toBe('All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests');
  });

  it('a market ladder uses spot, on-demand, or both', () => {
    expect(marketsOf('spot')).toEqual(['spot']);
    expect(marketsOf('on-demand')).toEqual(['on-demand']);
    expect(marketsOf('spot-then-on-demand')).toEqual(['spot', 'on-demand']);
  });
});

describe('bucketRegion', () => {
  it('reads GetBucketLocation as S3 answers it', () => {
    expect(bucketRegion(undefined)).toBe('us-east-1');
    expect(bucketRegion('')).toBe('us-east-1');
    expect(bucketRegion('EU')).toBe('eu-west-1');
    expect(bucketRegion('ap-southeast-2')).toBe('ap-southeast-2');
  });
});
