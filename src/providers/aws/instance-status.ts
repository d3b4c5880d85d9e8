// Health and scheduled events of running instances, from DescribeInstanceStatus: what EC2 is about
// to do to an instance (instance-retirement, instance-stop, system-reboot, instance-reboot,
// system-maintenance) and whether its status checks fail. Batched: one call per 100 instances
// (the API's limit for an InstanceIds list), asked at most once per interval, not per run.
import { DescribeInstanceStatusCommand } from '@aws-sdk/client-ec2';
import type { AwsClients } from './clients.js';
import { awsCall } from './errors.js';

/** DescribeInstanceStatus accepts at most 100 ids per call. */
const IDS_PER_CALL = 100;

/** Why EC2 will take the instance away or has degraded it, in words for the run's events. */
export interface Degradation {
  /** `scheduled:<event code>` or `impaired:<instance|system>`. */
  reason: string;
  message: string;
}

/**
 * Degradations by instance id. Events already completed or canceled (their description starts
 * with "[Completed]" or "[Canceled]", EC2 user guide "Scheduled events") are ignored.
 */
export async function instanceDegradations(clients: AwsClients, instanceIds: string[]): Promise<Map<string, Degradation>> {
  const out = new Map<string, Degradation>();
  for (let i = 0; i < instanceIds.length; i += IDS_PER_CALL) {
    const chunk = instanceIds.slice(i, i + IDS_PER_CALL);
    const res = await awsCall({ service: 'ec2', operation: 'DescribeInstanceStatus', region: clients.region }, () =>
      clients.ec2.send(new DescribeInstanceStatusCommand({ InstanceIds: chunk })),
    );
    for (const s of res.InstanceStatuses ?? []) {
      if (!s.InstanceId) continue;
      const event = (s.Events ?? []).find((e) => e.Code && !/^\[(Completed|Canceled)\]/.test(e.Description ?? ''));
      if (event?.Code) {
        const when = event.NotBefore ? ` from ${event.NotBefore.toISOString()}` : '';
        out.set(s.InstanceId, {
          reason: `scheduled:${event.Code}`,
          message: `EC2 scheduled ${event.Code} for ${s.InstanceId}${when} (${event.Description ?? 'no description'}); moving the run to another instance first`,
        });
        continue;
      }
      const failed = s.SystemStatus?.Status === 'impaired' ? 'system' : s.InstanceStatus?.Status === 'impaired' ? 'instance' : undefined;
      if (failed) {
        out.set(s.InstanceId, {
          reason: `impaired:${failed}`,
          message: `${s.InstanceId} fails its EC2 ${failed} status check (${failed === 'system' ? 'the host AWS runs it on' : 'the instance itself'} is impaired); resuming on another instance`,
        });
      }
    }
  }
  return out;
}
