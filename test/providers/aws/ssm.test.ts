// SSM Run Command through the real client against the fleet simulator: commands sent before the
// instance registers are retried, real exit codes come back, undeliverable and failing commands
// are classified; and the simulator's IMDS insists on IMDSv2 tokens like EC2 with HttpTokens required.
import fs from 'node:fs';
import { GetCommandInvocationCommand } from '@aws-sdk/client-ssm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AwsClients } from '../../../src/providers/aws/clients.js';
import { commandFailure, runShellScript, waitForOnline } from '../../../src/providers/aws/ssm.js';
import { RetryableError, TerminalError } from '../../../src/providers/types.js';
import { awsSpec, REGION, startRig, type AwsRig } from './harness.js';

let rig: AwsRig;
beforeAll(async () => {
  rig = await startRig({ bootDelayMs: 1500 });
});
afterAll(async () => {
  await rig?.release();
});

async function launched(run: string) {
  const { provider, controller, recorder } = rig.provider();
  const { instance } = await provider.launch({ run, generation: 1, attempt: 1, controller, spec: awsSpec(rig.bucket) });
  return { clients: provider.clientsFor(REGION), id: instance.id, recorder };
}

describe('SSM commands', () => {
  it('keeps sending while the instance is not registered yet (InvalidInstanceId), then reports the real outcome', async () => {
    const { clients, id, recorder } = await launched('ssm-early');
    const result = await runShellScript(clients, id, 'echo hello; echo oops >&2; exit 7', {
      comment: 'test',
      deadline: Date.now() + 30_000,
      executionTimeoutSeconds: 60,
      pollMs: 200,
    });
    expect(recorder.count('ssm', 'SendCommand')).toBeGreaterThan(1);
    expect(result).toMatchObject({ status: 'Failed', exitCode: 7, stdout: 'hello\n', stderr: 'oops\n' });
    expect(commandFailure(result, 'probe')).toBeInstanceOf(RetryableError);
    expect(commandFailure(result, 'probe', [7])).toBeInstanceOf(TerminalError);
  });

  it('waits for Online against a wall-clock deadline and says what to check when it never comes', async () => {
    const { clients, id } = await launched('ssm-online');
    await waitForOnline(clients, id, Date.now() + 20_000, 200);
    const err = await waitForOnline(clients, 'i-0000000000000dead', Date.now() + 500, 100).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RetryableError);
    expect((err as Error).message).toMatch(/not Online in SSM yet.*AmazonSSMManagedInstanceCore/);
  });

  it('gives up on a command for an instance SSM never accepts, as retryable', async () => {
    const { clients } = await launched('ssm-never');
    const err = await runShellScript(clients, 'i-0000000000000dead', 'true', {
      comment: 'test',
      deadline: Date.now() + 600,
      executionTimeoutSeconds: 60,
      pollMs: 100,
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RetryableError);
    expect((err as RetryableError).code).toBe('InvalidInstanceId');
  });
});

describe('when a command is finished (issue 11, fault 10)', () => {
  it('like SSM, not while a background child still holds stdout: such a command never finishes, one that detaches its stdio does', async () => {
    const { clients, id } = await launched('ssm-pipes');
    const pidFile = `/tmp/runctl-fleet-holder-${id}`;
    // The shell exits at once, but `sleep` keeps a copy of the command's stdout.
    const holding = await runShellScript(clients, id, `sleep 600 & echo $! > ${pidFile}; echo started`, {
      comment: 'holds the pipe',
      deadline: Date.now() + 3_000,
      executionTimeoutSeconds: 600,
      pollMs: 200,
    }).catch((e: unknown) => e);
    expect(holding).toBeInstanceOf(RetryableError);
    expect((holding as RetryableError).code).toBe('CommandTimeout');
    const inv = rig.fleet.instances.get(id)?.invocations.at(-1);
    expect(inv?.status).toBe('InProgress');

    // Once the holder lets go, the command is finished with the shell's exit code.
    process.kill(Number(fs.readFileSync(pidFile, 'utf8').trim()), 'SIGKILL');
    const done = await runShellScriptResult(clients, inv?.commandId as string, id);
    expect(done).toMatchObject({ Status: 'Success', ResponseCode: 0, StandardOutputContent: 'started\n' });

    const detached = await runShellScript(clients, id, 'sleep 600 </dev/null >/dev/null 2>&1 & echo started', {
      comment: 'detaches',
      deadline: Date.now() + 60_000,
      executionTimeoutSeconds: 600,
      pollMs: 200,
    });
    expect(detached).toMatchObject({ status: 'Success', exitCode: 0, stdout: 'started\n' });
  });
});

/** GetCommandInvocation until the command is no longer InProgress (a state, not a time). */
async function runShellScriptResult(clients: AwsClients, commandId: string, instanceId: string) {
  for (;;) {
    const out = await clients.ssm.send(new GetCommandInvocationCommand({ CommandId: commandId, InstanceId: instanceId }));
    if (out.Status !== 'InProgress') return out;
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('fleet IMDS', () => {
  it('serves metadata only with a token from PUT /latest/api/token, and the spot notice once delivered', async () => {
    const { id } = await launched('imds');
    const base = rig.fleet.imdsUrl(id);
    expect((await fetch(`${base}/latest/meta-data/instance-id`)).status).toBe(401);
    const token = await (await fetch(`${base}/latest/api/token`, { method: 'PUT', headers: { 'X-aws-ec2-metadata-token-ttl-seconds': '60' } })).text();
    const get = (p: string) => fetch(`${base}/latest/meta-data/${p}`, { headers: { 'X-aws-ec2-metadata-token': token } });
    expect(await (await get('instance-id')).text()).toBe(id);
    expect((await get('spot/instance-action')).status).toBe(404);
    await rig.fleet.deliverSpotNotice(id, { terminateAfterMs: 60_000 });
    const notice = (await (await get('spot/instance-action')).json()) as { action: string; time: string };
    expect(notice.action).toBe('terminate');
    expect(Date.parse(notice.time)).toBeGreaterThan(Date.now());
  });
});
