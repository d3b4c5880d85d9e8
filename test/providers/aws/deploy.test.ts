// The agent on a (simulated) instance: deployAgent ships the bundle and starts runctl's real agent
// through SSM; the agent runs the job with the real AWS CLI against moto's S3. Status, logs and
// checkpoints come back through S3 only.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AttemptKey, DeployRequest, InstanceRef } from '../../../src/providers/types.js';
import type { RunSpec } from '../../../src/spec/types.js';
import { awsSpec, startRig, type AwsRig } from './harness.js';

let rig: AwsRig;
let repo: string;

// A small job: counts steps, checkpoints its step after each one, saves and exits on SIGTERM,
// resumes from its checkpoint file when one was restored.
const TRAIN = `
import json, os, signal, sys, time
ckpt = os.environ["RUNCTL_CHECKPOINT_DIR"]
total = int(os.environ.get("STEPS", "5"))
state = os.path.join(ckpt, "state.json")
step = 0
if os.path.exists(state):
    step = json.load(open(state))["step"]
    print("resumed at step %d" % step, flush=True)
def save():
    os.makedirs(ckpt, exist_ok=True)
    tmp = state + ".tmp"
    json.dump({"step": step}, open(tmp, "w"))
    os.replace(tmp, state)
def on_term(signum, frame):
    save()
    print("saved at step %d on signal" % step, flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
while step < total:
    time.sleep(float(os.environ.get("STEP_SECONDS", "0.2")))
    step += 1
    save()
    if step % int(os.environ.get("PRINT_EVERY", "1")) == 1 % int(os.environ.get("PRINT_EVERY", "1")):
        print("step=%d/%d loss=%.3f" % (step, total, 1.0 / step), flush=True)
print("done", flush=True)
`;

beforeAll(async () => {
  rig = await startRig();
  repo = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-aws-repo-'));
  fs.mkdirSync(path.join(repo, 'job'));
  fs.writeFileSync(path.join(repo, 'job', 'train.py'), TRAIN);
});
afterAll(async () => {
  await rig?.release();
  if (repo) fs.rmSync(repo, { recursive: true, force: true });
});

/** What the instance's agent and the proxy were doing, for a failure message. */
function diagnostics(instanceId?: string): string {
  const inst = instanceId ? rig.fleet.instances.get(instanceId) : undefined;
  let agentLog = '';
  if (inst) {
    const runs = path.join(inst.sandboxDir, 'opt/runctl/runs');
    for (const file of fs.readdirSync(runs, { recursive: true }).map(String).filter((f) => f.endsWith('agent.log'))) {
      agentLog += fs.readFileSync(path.join(runs, file), 'utf8').slice(-3000);
    }
  }
  const calls = rig.fleet.calls.slice(-15).map((c) => `${new Date(c.at).toISOString()} ${c.service} ${c.action.slice(0, 80)} ${c.status} ${c.ms ?? '…'}ms`);
  return `\n--- agent.log ---\n${agentLog}\n--- last proxy calls ---\n${calls.join('\n')}`;
}

async function until<T>(fn: () => Promise<T | undefined>, what: string, instanceId?: string, ms = 300_000): Promise<T> {
  const end = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}${diagnostics(instanceId)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

function jobSpec(env: Record<string, string>): RunSpec {
  return awsSpec(rig.bucket, {
    code: { path: 'job', exclude: [] },
    setup: 'echo installing',
    run: 'python3 train.py',
    env,
    resources: { market: 'spot' },
    checkpoints: { dir: '/opt/runctl/checkpoints', syncInterval: '60s', gracePeriod: '10s' },
  });
}

describe('deployAgent', () => {
  it('starts the real agent through SSM; a redeploy uploads nothing; on a spot notice the agent checkpoints to S3 and the instance is reclaimed', async () => {
    const { provider, controller, recorder } = rig.provider({ agentTiming: { noticePollSeconds: 1 } });
    // A progress line every 5 s: the agent ships log segments until it has caught up with the job's
    // output before it publishes status, so a job printing faster than the AWS CLI can upload under
    // load would starve the status object (reported to the agent's owner).
    const spec = jobSpec({ STEPS: '100000', STEP_SECONDS: '0.05', PRINT_EVERY: '100' });
    const key: AttemptKey = { run: 'deploy-spot', generation: 1, attempt: 1 };
    const { instance } = await provider.launch({ ...key, controller, spec });
    const req: DeployRequest = { ...key, spec, instance, repoRoot: repo };

    const first = await provider.deploy(req);
    expect(first.bundleBytesUploaded).toBeGreaterThan(0);
    expect(first.output).toMatch(/runctl: agent started/);
    const sent = recorder.calls.find((c) => c.service === 'ssm' && c.operation === 'SendCommand');
    expect(sent?.input).toMatchObject({ DocumentName: 'AWS-RunShellScript', InstanceIds: [instance.id] });
    await until(async () => ((await provider.readAgentStatus(key, spec))?.phase === 'training' ? true : undefined), 'training', instance.id);

    // Deploying again (a controller restarted mid-attempt) ships nothing and starts no second job.
    const second = await provider.deploy(req);
    expect(second.bundleBytesUploaded).toBe(0);

    await rig.fleet.deliverSpotNotice(instance.id, { terminateAfterMs: 200_000 });
    const interrupted = await until(async () => {
      const s = await provider.readAgentStatus(key, spec);
      return s && ['interrupted', 'succeeded', 'failed', 'lost'].includes(s.phase) ? s : undefined;
    }, 'the agent to report interrupted', instance.id);
    expect(interrupted.phase).toBe('interrupted');
    expect(interrupted.message).toMatch(/spot interruption notice/);

    const manifest = await provider.latestCheckpoint(key.run, key.generation, spec);
    expect(manifest?.files.map((f) => f.path)).toEqual(['state.json']);
    expect(interrupted.lastCheckpoint?.id).toBe(manifest?.id);

    const logs = await provider.readLogs(key, spec);
    expect(logs.text).toContain('installing');
    expect(logs.text.match(/^step=1\/100000 /gm)).toHaveLength(1); // one job, not two
    expect(logs.text).toMatch(/saved at step \d+ on signal/);

    // Everything on the instance has stopped, so the simulated EC2 reclaims it well before the deadline.
    await rig.fleet.whenTerminated(instance.id);
    const obs = (await provider.observe([key.run])).get(key.run)?.[0];
    expect(obs).toMatchObject({ state: 'terminated', spotInterruption: { reason: 'Server.SpotInstanceTermination' } });
  }, 600_000);

  it('fails terminally, naming what is missing, when the image lacks the AWS CLI', async () => {
    const { provider, controller } = rig.provider();
    const spec = jobSpec({});
    const key: AttemptKey = { run: 'deploy-nocli', generation: 1, attempt: 1 };
    const { instance } = await provider.launch({ ...key, controller, spec });
    // An image without the AWS CLI: a PATH on which `aws` cannot be found.
    const inst = rig.fleet.instances.get(instance.id);
    expect(inst).toBeDefined();
    const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-nocli-'));
    for (const tool of ['python3', 'sha256sum', 'mkdir', 'cat', 'mv']) {
      const found = ['/usr/local/bin', '/usr/bin', '/bin'].map((d) => path.join(d, tool)).find((p) => fs.existsSync(p));
      if (found) fs.symlinkSync(found, path.join(bin, tool));
    }
    const limited = await import('../../support/fleet/index.js');
    const fleet = await limited.startFleet({ motoUrl: rig.motoUrl, env: { PATH: bin } });
    try {
      const p = rig.provider({ endpointUrl: fleet.endpoint, controller });
      const launched = await p.provider.launch({ ...key, run: 'deploy-nocli-2', controller, spec });
      const err = await p.provider
        .deployAgent({ ...key, run: 'deploy-nocli-2', spec, instance: launched.instance as InstanceRef, repoRoot: repo })
        .catch((e: unknown) => e);
      expect((err as Error).name, String(err)).toBe('TerminalError');
      expect((err as Error).message).toMatch(/lacks: aws/);
    } finally {
      await fleet.close();
      fs.rmSync(bin, { recursive: true, force: true });
    }
  });
});

