// EC2 vCPU quotas per instance family and market (Service Quotas, service code ec2): does each
// quota let the runs of a region start, and all of them at once? The codes are AWS's (EC2 User
// Guide, "Amazon EC2 service quotas" and "Spot Instance quotas"); GetServiceQuota answers the
// applied value, and NoSuchResourceException for a quota never changed, when the AWS default
// (GetAWSDefaultServiceQuota) is in force. Instances already running also count against a quota;
// doctor does not read usage, so a pass means "enough for these runs on an otherwise idle account".
import { GetAWSDefaultServiceQuotaCommand, GetServiceQuotaCommand } from '@aws-sdk/client-service-quotas';
import type { Market } from '../../../spec/types.js';
import type { DoctorCheck, MarketKind } from '../../types.js';
import { awsCall } from '../errors.js';
import type { InstanceTypeFacts } from '../instance-types.js';
import type { DoctorClients } from './clients.js';
import { codeOf, line, unable } from './result.js';

export interface VcpuQuota {
  code: string;
  name: string;
}

const STANDARD = 'Standard (A, C, D, H, I, M, R, T, Z)';
/** [family prefix, on-demand quota, spot quota (none: the family has no spot)], first match wins. */
const FAMILIES: Array<[RegExp, VcpuQuota, VcpuQuota | undefined]> = [
  [/^u-|^u\d/, { code: 'L-43DA4232', name: 'Running On-Demand High Memory instances' }, undefined],
  [/^hpc/, { code: 'L-F7808C92', name: 'Running On-Demand HPC instances' }, undefined],
  [/^dl/, { code: 'L-6E869C2A', name: 'Running On-Demand DL instances' }, { code: 'L-85EED4F7', name: 'All DL Spot Instance Requests' }],
  [/^trn/, { code: 'L-2C3B7624', name: 'Running On-Demand Trn instances' }, { code: 'L-6B0D517C', name: 'All Trn Spot Instance Requests' }],
  [/^inf/, { code: 'L-1945791B', name: 'Running On-Demand Inf instances' }, { code: 'L-B5D1601B', name: 'All Inf Spot Instance Requests' }],
  [/^(g|vt)\d/, { code: 'L-DB2E81BA', name: 'Running On-Demand G and VT instances' }, { code: 'L-3819A6DF', name: 'All G and VT Spot Instance Requests' }],
  [/^p5/, { code: 'L-417A185B', name: 'Running On-Demand P instances' }, { code: 'L-C4BD4855', name: 'All P5 Spot Instance Requests' }],
  [/^p\d/, { code: 'L-417A185B', name: 'Running On-Demand P instances' }, { code: 'L-7212CCBC', name: 'All P4, P3 and P2 Spot Instance Requests' }],
  [/^f\d/, { code: 'L-74FC7D96', name: 'Running On-Demand F instances' }, { code: 'L-88CF9481', name: 'All F Spot Instance Requests' }],
  [/^x\d/, { code: 'L-7295265B', name: 'Running On-Demand X instances' }, { code: 'L-E3A00192', name: 'All X Spot Instance Requests' }],
  [/^mac/, { code: '', name: '' }, undefined],
  [/^[acdhimrtz]/, { code: 'L-1216C47A', name: `Running On-Demand ${STANDARD} instances` }, { code: 'L-34B43A08', name: `All ${STANDARD} Spot Instance Requests` }],
];

/** The vCPU quota an instance type counts against in a market; undefined when none applies (mac hosts, unknown families). */
export function vcpuQuota(instanceType: string, market: MarketKind): VcpuQuota | undefined {
  const family = instanceType.split('.')[0]?.toLowerCase() ?? '';
  const hit = FAMILIES.find(([re]) => re.test(family));
  const quota = hit ? (market === 'spot' ? hit[2] : hit[1]) : undefined;
  return quota && quota.code ? quota : undefined;
}

export function marketsOf(market: Market): MarketKind[] {
  return market === 'spot' ? ['spot'] : market === 'on-demand' ? ['on-demand'] : ['spot', 'on-demand'];
}

export interface QuotaRun {
  run: string;
  market: Market;
  instanceTypes: string[];
}

async function quotaValue(clients: DoctorClients, code: string): Promise<number> {
  const ctx = (operation: string) => ({ service: 'servicequotas' as const, operation, region: clients.region });
  try {
    const out = await awsCall(ctx('GetServiceQuota'), () => clients.quotas.send(new GetServiceQuotaCommand({ ServiceCode: 'ec2', QuotaCode: code })));
    return out.Quota?.Value ?? 0;
  } catch (err) {
    if (codeOf(err) !== 'NoSuchResourceException') throw err;
    const out = await awsCall(ctx('GetAWSDefaultServiceQuota'), () =>
      clients.quotas.send(new GetAWSDefaultServiceQuotaCommand({ ServiceCode: 'ec2', QuotaCode: code })),
    );
    return out.Quota?.Value ?? 0;
  }
}

/**
 * One `quota` line per vCPU quota the runs of a region use. fail: some run has no rung whose quota
 * admits even one instance; warn: a rung's type can never start under its quota (the ladder moves
 * on), or the runs cannot all run at once; pass: every run can run at the same time.
 */
export async function checkQuotas(clients: DoctorClients, runs: QuotaRun[], types: Map<string, InstanceTypeFacts>): Promise<DoctorCheck[]> {
  interface Use { quota: VcpuQuota; perRun: Map<string, number>; largest: { type: string; vcpus: number } }
  const uses = new Map<string, Use>();
  const rungs = new Map<string, Array<{ code: string; vcpus: number }>>();
  for (const r of runs) {
    for (const market of marketsOf(r.market)) {
      for (const type of r.instanceTypes) {
        const vcpus = types.get(type)?.vcpus;
        const quota = vcpuQuota(type, market);
        if (!vcpus || !quota) continue;
        rungs.set(r.run, [...(rungs.get(r.run) ?? []), { code: quota.code, vcpus }]);
        const use = uses.get(quota.code) ?? { quota, perRun: new Map(), largest: { type, vcpus: 0 } };
        use.perRun.set(r.run, Math.max(use.perRun.get(r.run) ?? 0, vcpus));
        if (vcpus > use.largest.vcpus) use.largest = { type, vcpus };
        uses.set(quota.code, use);
      }
    }
  }
  const values = new Map<string, number | { error: unknown }>();
  for (const code of uses.keys()) {
    try {
      values.set(code, await quotaValue(clients, code));
    } catch (err) {
      values.set(code, { error: err });
    }
  }
  const admits = (code: string, vcpus: number) => {
    const v = values.get(code);
    return typeof v !== 'number' || v >= vcpus; // an unreadable quota is not held against a run
  };
  const out: DoctorCheck[] = [];
  for (const [code, use] of uses) {
    const subject = `${code} ${use.quota.name}`;
    const who = [...use.perRun.keys()];
    const value = values.get(code)!;
    if (typeof value !== 'number') {
      out.push(unable('quota', subject, who, value.error, 'servicequotas:GetServiceQuota'));
      continue;
    }
    const total = [...use.perRun.values()].reduce((a, b) => a + b, 0);
    const request = (n: number) =>
      `request at least ${n} vCPUs: aws service-quotas request-service-quota-increase --service-code ec2 --quota-code ${code} --desired-value ${n} --region ${clients.region}`;
    if (value >= total) {
      out.push(line('quota', subject, who, 'pass', `${value} vCPUs in ${clients.region}; these runs need at most ${total} at once`));
      continue;
    }
    if (value >= use.largest.vcpus) {
      out.push(line('quota', subject, who, 'warn', `${value} vCPUs in ${clients.region}; these runs need ${total} to run at once, so some wait for others`, request(total)));
      continue;
    }
    const stuck = who.filter((run) => !(rungs.get(run) ?? []).some((g) => admits(g.code, g.vcpus)));
    out.push(
      line(
        'quota',
        subject,
        who,
        stuck.length > 0 ? 'fail' : 'warn',
        `${value} vCPUs in ${clients.region}; ${use.largest.type} needs ${use.largest.vcpus}: ` +
          (stuck.length > 0 ? `${stuck.join(', ')} cannot start on any rung` : 'those rungs are never launched, the ladder moves on to the others'),
        request(Math.max(use.largest.vcpus, total)),
      ),
    );
  }
  return out;
}
