// SSM Run Command: whether an instance's SSM agent is Online, and running one shell script on it
// with AWS-RunShellScript. Training never depends on command output (SSM truncates it and the
// command ends long before training does): the script only installs and starts runctl's agent.
import {
  DescribeInstanceInformationCommand,
  GetCommandInvocationCommand,
  SendCommandCommand,
} from '@aws-sdk/client-ssm';
import { ProviderError, RetryableError, TerminalError } from '../types.js';
import type { AwsClients } from './clients.js';
import { awsCall, errorCode } from './errors.js';
import { DeadlineExceeded, pollUntil } from './retry.js';

/** DescribeInstanceInformation accepts at most 50 ids per InstanceIds filter page. */
const IDS_PER_CALL = 50;

/**
 * The subset of `instanceIds` whose SSM agent reports PingStatus Online. SSM answers the whole
 * call with `InvalidInstanceId` when any id is shutting down or terminated (SSM API reference,
 * DescribeInstanceInformation): such an instance is going away, not a fault, so the chunk is asked
 * again id by id and the refused ids are simply not Online.
 */
export async function onlineInstances(clients: AwsClients, instanceIds: string[]): Promise<Set<string>> {
  const online = new Set<string>();
  for (let i = 0; i < instanceIds.length; i += IDS_PER_CALL) {
    const chunk = instanceIds.slice(i, i + IDS_PER_CALL);
    try {
      for (const id of await onlineAmong(clients, chunk)) online.add(id);
    } catch (err) {
      if (!(err instanceof ProviderError) || err.code !== 'InvalidInstanceId') throw err;
      if (chunk.length === 1) continue;
      for (const id of chunk) {
        try {
          for (const ok of await onlineAmong(clients, [id])) online.add(ok);
        } catch (inner) {
          if (!(inner instanceof ProviderError) || inner.code !== 'InvalidInstanceId') throw inner;
        }
      }
    }
  }
  return online;
}

async function onlineAmong(clients: AwsClients, chunk: string[]): Promise<string[]> {
  const online: string[] = [];
  let nextToken: string | undefined;
  do {
    const out = await awsCall({ service: 'ssm', operation: 'DescribeInstanceInformation', region: clients.region }, () =>
      clients.ssm.send(
        new DescribeInstanceInformationCommand({
          Filters: [{ Key: 'InstanceIds', Values: chunk }],
          MaxResults: 50,
          NextToken: nextToken,
        }),
      ),
    );
    for (const info of out.InstanceInformationList ?? []) {
      if (info.InstanceId && info.PingStatus === 'Online') online.push(info.InstanceId);
    }
    nextToken = out.NextToken;
  } while (nextToken);
  return online;
}

export async function waitForOnline(clients: AwsClients, instanceId: string, deadline: number, intervalMs = 2000): Promise<void> {
  try {
    await pollUntil(async () => ((await onlineInstances(clients, [instanceId])).has(instanceId) ? true : undefined), {
      deadline,
      intervalMs,
      what: `${instanceId} to report SSM PingStatus Online`,
    });
  } catch (err) {
    if (!(err instanceof DeadlineExceeded)) throw err;
    throw new RetryableError(
      `${instanceId} is not Online in SSM yet; the image needs the SSM agent and the instance profile needs ` +
        'AmazonSSMManagedInstanceCore (or the instance policy from `runctl iam-policy`), and the subnet needs a route to SSM',
      { code: 'SsmNotOnline' },
    );
  }
}

export interface CommandResult {
  commandId: string;
  status: string;
  statusDetails?: string;
  exitCode?: number;
  stdout: string;
  stderr: string;
}

const DONE = new Set(['Success', 'Failed', 'Cancelled', 'TimedOut', 'Cancelling']);

/**
 * Sends `script` with AWS-RunShellScript and waits for it to finish. An instance that SSM does not
 * know yet (InvalidInstanceId: registration lags the instance by seconds) is retried until the
 * deadline; the invocation may likewise not be visible at once (InvocationDoesNotExist).
 */
export async function runShellScript(
  clients: AwsClients,
  instanceId: string,
  script: string,
  opts: { comment: string; deadline: number; executionTimeoutSeconds: number; pollMs?: number },
): Promise<CommandResult> {
  const ctx = { service: 'ssm' as const, region: clients.region };
  const pollMs = opts.pollMs ?? 1000;
  let commandId: string;
  try {
    commandId = await pollUntil(
      async () => {
        const out = await clients.ssm.send(
          new SendCommandCommand({
            InstanceIds: [instanceId],
            DocumentName: 'AWS-RunShellScript',
            Comment: opts.comment.slice(0, 100),
            Parameters: { commands: [script], executionTimeout: [String(opts.executionTimeoutSeconds)] },
            TimeoutSeconds: 60,
          }),
        );
        return out.Command?.CommandId;
      },
      { deadline: opts.deadline, intervalMs: pollMs, what: `SSM to accept a command for ${instanceId}`, keepTrying: (e) => errorCode(e) === 'InvalidInstanceId' },
    );
  } catch (err) {
    if (err instanceof DeadlineExceeded) {
      throw new RetryableError(
        `SSM does not accept commands for ${instanceId} yet (InvalidInstanceId: not registered, agent not running, or instance not running)`,
        { code: 'InvalidInstanceId', cause: err.last },
      );
    }
    return awsCall({ ...ctx, operation: 'SendCommand' }, () => Promise.reject(err));
  }

  try {
    return await pollUntil(
      async () => {
        const inv = await clients.ssm.send(new GetCommandInvocationCommand({ CommandId: commandId, InstanceId: instanceId }));
        if (!inv.Status || !DONE.has(inv.Status)) return undefined;
        return {
          commandId,
          status: inv.Status,
          statusDetails: inv.StatusDetails,
          exitCode: inv.ResponseCode,
          stdout: inv.StandardOutputContent ?? '',
          stderr: inv.StandardErrorContent ?? '',
        };
      },
      { deadline: opts.deadline, intervalMs: pollMs, what: `command ${commandId} on ${instanceId}`, keepTrying: (e) => errorCode(e) === 'InvocationDoesNotExist' },
    );
  } catch (err) {
    if (err instanceof DeadlineExceeded) {
      throw new RetryableError(`command ${commandId} on ${instanceId} did not finish in time; it is retried (starting the agent is idempotent)`, {
        code: 'CommandTimeout',
      });
    }
    return awsCall({ ...ctx, operation: 'GetCommandInvocation' }, () => Promise.reject(err));
  }
}

/**
 * A finished command that did not succeed, as the port's error. `terminalExitCodes` are the script's
 * own "this image can never work" codes; any other failure (network, undeliverable) is retryable.
 */
export function commandFailure(result: CommandResult, what: string, terminalExitCodes: number[] = []): Error {
  const tail = (result.stderr || result.stdout).trim().split('\n').slice(-10).join('\n');
  const detail = `${result.status}${result.statusDetails && result.statusDetails !== result.status ? ` (${result.statusDetails})` : ''}`;
  if (result.exitCode !== undefined && terminalExitCodes.includes(result.exitCode)) {
    return new TerminalError(`${what} failed on the instance: ${tail || `exit code ${result.exitCode}`}`, { code: 'CommandFailed' });
  }
  if (result.status === 'Failed' && result.exitCode !== undefined && result.exitCode > 0) {
    return new RetryableError(`${what} failed on the instance with exit code ${result.exitCode}: ${tail || 'no output'}`, {
      code: 'CommandFailed',
    });
  }
  return new RetryableError(`${what} did not run: SSM reports ${detail}${tail ? `: ${tail}` : ''}`, { code: 'CommandNotDelivered' });
}
