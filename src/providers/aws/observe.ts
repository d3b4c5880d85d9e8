// One observation pass: a single paginated DescribeInstances for every run of this controller
// (tag-key runctl:run and tag runctl:controller), never one call per run, mapped back to runs.
import { paginateDescribeInstances, type Instance } from '@aws-sdk/client-ec2';
import type { InstanceObservation } from '../types.js';
import type { AwsClients } from './clients.js';
import { awsCall } from './errors.js';
import { stateOf, toInstanceRef } from './instance-ref.js';
import { TAG_CONTROLLER, TAG_RUN, attemptFromTags } from './tags.js';

/** EC2 state reasons that mean the spot market took the instance back. */
const SPOT_REASONS = new Set(['Server.SpotInstanceTermination', 'Server.SpotInstanceShutdown']);

/** EC2 puts the transition time in StateTransitionReason, e.g. "User initiated (2024-05-01 10:00:00 GMT)". */
function transitionTime(instance: Instance): string | undefined {
  const m = instance.StateTransitionReason?.match(/\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?:GMT|UTC)\)/);
  return m?.[1] ? new Date(`${m[1].replace(' ', 'T')}Z`).toISOString() : undefined;
}

export function toObservation(instance: Instance, ready: boolean, now: Date): InstanceObservation | undefined {
  const key = attemptFromTags(instance.Tags);
  if (!key || !instance.InstanceId) return undefined;
  const code = instance.StateReason?.Code || undefined;
  const message = instance.StateReason?.Message || undefined;
  const stateReason = code ? (message && !message.startsWith(code) ? `${code}: ${message}` : message ?? code) : undefined;
  const state = stateOf(instance);
  const spot = code !== undefined && SPOT_REASONS.has(code);
  return {
    ...key,
    instance: toInstanceRef(instance),
    state,
    ready: ready && state === 'running',
    ...(stateReason ? { stateReason } : {}),
    ...(spot ? { spotInterruption: { noticedAt: transitionTime(instance) ?? now.toISOString(), reason: code } } : {}),
  };
}

/** Every instance this controller owns in one region, for the given runs (others are ignored). */
export async function describeOwnedInstances(clients: AwsClients, controller: string, pageSize?: number): Promise<Instance[]> {
  const instances: Instance[] = [];
  await awsCall({ service: 'ec2', operation: 'DescribeInstances', region: clients.region }, async () => {
    const pages = paginateDescribeInstances(
      { client: clients.ec2, ...(pageSize ? { pageSize } : {}) },
      {
        Filters: [
          { Name: 'tag-key', Values: [TAG_RUN] },
          { Name: `tag:${TAG_CONTROLLER}`, Values: [controller] },
        ],
        ...(pageSize ? {} : { MaxResults: 1000 }),
      },
    );
    for await (const page of pages) {
      for (const reservation of page.Reservations ?? []) instances.push(...(reservation.Instances ?? []));
    }
  });
  return instances;
}

export function groupByRun(
  instances: Instance[],
  runs: string[],
  isReady: (instanceId: string) => boolean,
  now = new Date(),
): Map<string, InstanceObservation[]> {
  const wanted = new Set(runs);
  const out = new Map<string, InstanceObservation[]>(runs.map((r) => [r, []]));
  for (const instance of instances) {
    const obs = toObservation(instance, isReady(instance.InstanceId ?? ''), now);
    if (!obs || !wanted.has(obs.run)) continue;
    out.get(obs.run)?.push(obs);
  }
  for (const list of out.values()) list.sort((a, b) => a.generation - b.generation || a.attempt - b.attempt);
  return out;
}
