// Faults the fleet proxy injects instead of forwarding a request to moto.
import { errorResponse, type AwsRequest, type WireError } from './aws-wire.js';

export type FaultRule =
  /** Throttle a fraction of matching calls (deterministic: seeded), never more than `maxConsecutive` in a row. */
  | { kind: 'throttle'; service?: 'ec2' | 'ssm' | 's3'; actions?: string[]; fraction: number; maxConsecutive?: number; seed?: number; sdkOnly?: boolean }
  /** RunInstances for these instance types fails with InsufficientInstanceCapacity (optionally only in one market). */
  | { kind: 'insufficient-capacity'; instanceTypes: string[]; market?: 'spot' | 'on-demand' }
  /** Every spot RunInstances fails the way EC2 says "no spot capacity". */
  | { kind: 'spot-unavailable' }
  /**
   * Any error, for the next `times` matching calls (all of them when omitted); an `action` ending
   * in * is a prefix. For RunInstances, `instanceTypes` and `market` narrow it to some rungs (a
   * quota of one instance family, say).
   */
  | {
      kind: 'error';
      service: 'ec2' | 'ssm' | 's3' | 'iam' | 'sts' | 'servicequotas';
      action: string;
      status: number;
      code: string;
      message?: string;
      times?: number;
      instanceTypes?: string[];
      market?: 'spot' | 'on-demand';
      /** Calls naming instances (EC2 TerminateInstances, SSM DescribeInstanceInformation, ...): only those naming one of these. */
      instanceIds?: string[];
    };

interface ActiveRule {
  rule: FaultRule;
  state: { rng: () => number; consecutive: number; used: number };
}

/** mulberry32: a tiny seeded generator so a fraction of calls is the same fraction on every run. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const THROTTLE: Record<'ec2' | 'ssm' | 's3', [number, string]> = {
  ec2: [503, 'RequestLimitExceeded'],
  ssm: [400, 'ThrottlingException'],
  s3: [503, 'SlowDown'],
};

export class Faults {
  private rules: ActiveRule[] = [];
  /** How many responses each fault kind produced. */
  readonly injected: Record<string, number> = {};

  add(rule: FaultRule): () => void {
    const active: ActiveRule = { rule, state: { rng: seeded(rule.kind === 'throttle' ? rule.seed ?? 42 : 1), consecutive: 0, used: 0 } };
    this.rules.push(active);
    return () => {
      this.rules = this.rules.filter((r) => r !== active);
    };
  }

  clear(): void {
    this.rules = [];
  }

  private count(kind: string): void {
    this.injected[kind] = (this.injected[kind] ?? 0) + 1;
  }

  /** The error to answer with instead of forwarding, if a rule matches. */
  match(req: AwsRequest): WireError | undefined {
    for (const { rule, state } of this.rules) {
      switch (rule.kind) {
        case 'throttle': {
          if (req.service !== 'ec2' && req.service !== 'ssm' && req.service !== 's3') break;
          if (rule.service && rule.service !== req.service) break;
          if (rule.actions && !rule.actions.includes(req.action)) break;
          // The agent's AWS CLI has its own retries; by default only the controller's SDK is throttled.
          if ((rule.sdkOnly ?? true) && !req.userAgent.includes('aws-sdk-js')) break;
          const hit = state.rng() < rule.fraction && state.consecutive < (rule.maxConsecutive ?? 2);
          state.consecutive = hit ? state.consecutive + 1 : 0;
          if (!hit) break;
          this.count('throttle');
          const [status, code] = THROTTLE[req.service];
          return errorResponse(req.service, status, code, 'Rate exceeded (injected by the fleet simulator)');
        }
        case 'insufficient-capacity': {
          if (req.service !== 'ec2' || req.action !== 'RunInstances') break;
          const type = req.params.InstanceType ?? '';
          const spot = req.params['InstanceMarketOptions.MarketType'] === 'spot';
          if (!rule.instanceTypes.includes(type)) break;
          if (rule.market && rule.market !== (spot ? 'spot' : 'on-demand')) break;
          this.count('insufficient-capacity');
          const zone = req.params['Placement.AvailabilityZone'];
          return errorResponse(
            'ec2',
            500,
            'InsufficientInstanceCapacity',
            `We currently do not have sufficient ${type} capacity in the Availability Zone you requested (${zone ?? 'any'}). ` +
              'Our system will be working on provisioning additional capacity.',
          );
        }
        case 'spot-unavailable': {
          if (req.service !== 'ec2' || req.action !== 'RunInstances') break;
          if (req.params['InstanceMarketOptions.MarketType'] !== 'spot') break;
          this.count('spot-unavailable');
          return errorResponse('ec2', 500, 'InsufficientInstanceCapacity', 'There is no Spot capacity available that matches your request.');
        }
        case 'error': {
          // An action ending in * matches by prefix (S3 actions are `METHOD /bucket/key`).
          const actionMatches = rule.action.endsWith('*') ? req.action.startsWith(rule.action.slice(0, -1)) : req.action === rule.action;
          if (req.service !== rule.service || !actionMatches) break;
          if (rule.instanceTypes && !rule.instanceTypes.includes(req.params.InstanceType ?? '')) break;
          if (rule.market && rule.market !== (req.params['InstanceMarketOptions.MarketType'] === 'spot' ? 'spot' : 'on-demand')) break;
          if (rule.instanceIds && !namedInstances(req).some((id) => rule.instanceIds?.includes(id))) break;
          if (rule.times !== undefined && state.used >= rule.times) break;
          state.used++;
          this.count(`error:${rule.code}`);
          return errorResponse(req.service, rule.status, rule.code, rule.message ?? `${rule.code} (injected by the fleet simulator)`);
        }
      }
    }
    return undefined;
  }
}

/** Instance ids a request names: EC2 `InstanceId.N` parameters, SSM `InstanceIds` and `InstanceIds` filters. */
function namedInstances(req: AwsRequest): string[] {
  if (req.service === 'ssm') {
    const json = req.json ?? {};
    const filters = (json.Filters as { Key?: string; Values?: string[] }[] | undefined) ?? [];
    return [...((json.InstanceIds as string[] | undefined) ?? []), ...filters.filter((f) => f.Key === 'InstanceIds').flatMap((f) => f.Values ?? [])];
  }
  return Object.entries(req.params)
    .filter(([k]) => /^InstanceId\.\d+$/.test(k))
    .map(([, v]) => v);
}
