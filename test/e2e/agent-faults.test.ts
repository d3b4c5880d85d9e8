// Faults the agent sees on the instance reach the run's status, end to end with real processes:
// the real CLI (bin/runctl.js) reconciles local runs, the local provider's sandboxes run the real
// agent and real jobs, and `status -o json`, `describe` and the event log must show each fault with
// what to do (issue 10, input 6): a job that crashes while handling the interruption notice (a
// `rehearsal` delivers the notice), and a secret that does not resolve (the real AWS CLI against
// moto: one parameter exists, one does not).
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { useMoto } from '../support/moto.js';

const BIN = path.resolve('bin/runctl.js');
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-faults-e2e-'));
// A value long enough to be redacted (agent: 4+ characters), unlikely to appear by chance.
const SECRET_VALUE = 'hf_s3cr3t-V4lue-9f2c81d7';

// A training loop whose SIGTERM handler crashes (the CUDA-error-during-save shape): on the notice it
// starts saving, raises, and the interpreter exits 1 with a traceback. A resumed attempt finishes.
const JOB = `
import os, signal, sys, time
if os.environ["RUNCTL_ATTEMPT"] != "1":
    print("resumed on attempt %s; done" % os.environ["RUNCTL_ATTEMPT"], flush=True)
    sys.exit(0)
def on_term(*_):
    print("saving checkpoint at step %d" % step, flush=True)
    raise RuntimeError("CUDA error: an illegal memory access was encountered")
signal.signal(signal.SIGTERM, on_term)
step = 0
while True:
    step += 1
    print("step=%d loss=%.3f" % (step, 1.0 / step), flush=True)
    time.sleep(0.2)
`;

function spec(name: string, lines: string[]): string {
  return [
    'apiVersion: runctl.dev/v1alpha1',
    'kind: TrainingRun',
    `metadata: {name: ${name}}`,
    'spec:',
    '  provider: local',
    '  code: {path: ./code}',
    '  checkpoints: {syncInterval: 1s, gracePeriod: 10s}',
    '  timeouts: {provisioning: 1m, installing: 1m, training: 3m}',
    ...lines.map((l) => `  ${l}`),
    '',
  ].join('\n');
}

let env: NodeJS.ProcessEnv;
let moto: { url: string; release(): Promise<void> };

function runctl(...args: string[]) {
  return spawnSync(process.execPath, [BIN, ...args], { cwd: dir, encoding: 'utf8', env, maxBuffer: 64 * 1024 * 1024 });
}

interface Condition {
  type: string;
  status: string;
  reason: string;
  message: string;
}
interface StatusJson {
  run: string;
  phase: string;
  attempt: number;
  conditions: Condition[];
}

function statusOf(run: string): StatusJson {
  const out = runctl('status', run, '-o', 'json');
  expect(out.status, out.stderr).toBe(0);
  return (JSON.parse(out.stdout) as StatusJson[])[0] as StatusJson;
}

/** Every event of the run, from the state store's append-only log (what `describe` reads). */
function eventsOf(run: string): Array<{ action: string; message?: string; result?: string }> {
  const file = path.join(dir, '.runctl', 'state', 'runs', run, 'events.jsonl');
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as { action: string; message?: string; result?: string });
}

function walk(root: string): string[] {
  if (!fs.existsSync(root)) return [];
  return fs.readdirSync(root, { withFileTypes: true, recursive: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath ?? e.path, e.name));
}

let reconcileOutput = '';

beforeAll(async () => {
  moto = await useMoto();
  env = {
    ...process.env,
    NO_COLOR: '1',
    // The agent resolves ssm: secrets with the real AWS CLI; here it talks to moto, not to AWS.
    AWS_ACCESS_KEY_ID: 'testing',
    AWS_SECRET_ACCESS_KEY: 'testing',
    AWS_DEFAULT_REGION: 'us-east-1',
    AWS_ENDPOINT_URL_SSM: moto.url,
    AWS_CONFIG_FILE: path.join(dir, 'no-aws-config'),
    AWS_SHARED_CREDENTIALS_FILE: path.join(dir, 'no-aws-credentials'),
  };
  const put = spawnSync(
    'aws',
    ['ssm', 'put-parameter', '--name', '/team/hf-token', '--type', 'SecureString', '--value', SECRET_VALUE, '--endpoint-url', moto.url],
    { env, encoding: 'utf8' },
  );
  expect(put.status, put.stderr).toBe(0);

  fs.mkdirSync(path.join(dir, 'runs'));
  fs.mkdirSync(path.join(dir, 'code'));
  fs.writeFileSync(path.join(dir, 'runctl.yaml'), 'prune: false\n');
  fs.writeFileSync(path.join(dir, 'code', 'job.py'), JOB);
  // Resumed after the crash: the fault stays in the event log and as a cleared condition.
  fs.writeFileSync(
    path.join(dir, 'runs', 'crash.yaml'),
    spec('crash', ['run: python3 job.py', 'rehearsal: {interruptAfter: 3s}', 'recovery: {maxInterruptions: 2, maxRetriesOnError: 0}']),
  );
  // No interruption allowed: the run ends with the fault still present, as the user finds it.
  fs.writeFileSync(
    path.join(dir, 'runs', 'crash-final.yaml'),
    spec('crash-final', ['run: python3 job.py', 'rehearsal: {interruptAfter: 3s}', 'recovery: {maxInterruptions: 0, maxRetriesOnError: 0}']),
  );
  // HF_TOKEN resolves first (sorted), then WANDB_API_KEY does not: the attempt fails before the job.
  fs.writeFileSync(
    path.join(dir, 'runs', 'secret.yaml'),
    spec('secret', [
      'run: python3 -c "print(1)"',
      'secrets: {HF_TOKEN: "ssm:/team/hf-token", WANDB_API_KEY: "ssm:/team/wandb-key"}',
      'recovery: {maxRetriesOnError: 0}',
    ]),
  );
  const reconcile = spawn(process.execPath, [BIN, 'reconcile', 'runs'], { cwd: dir, env, stdio: ['ignore', 'pipe', 'pipe'] });
  reconcile.stdout.on('data', (d: Buffer) => (reconcileOutput += d.toString()));
  reconcile.stderr.on('data', (d: Buffer) => (reconcileOutput += d.toString()));
  const code = await new Promise<number | null>((resolve) => reconcile.on('close', resolve));
  // crash-final and secret fail, so reconcile exits 1 once every run has settled.
  expect(code, reconcileOutput).toBe(1);
}, 240_000);

afterAll(async () => {
  await moto?.release();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('agent faults reach status, describe and events', () => {
  it('a job that crashes on the notice: JobCrashedOnNotice with the exit code and log tail, still present when the run ends', () => {
    const s = statusOf('crash-final');
    expect(s.phase).toBe('Failed');
    const fault = s.conditions.find((c) => c.type === 'JobCrashedOnNotice');
    expect(fault?.status).toBe('True');
    expect(fault?.reason).toBe('JobCrashedOnNotice');
    expect(fault?.message).toMatch(/^the job exited with code 1 after SIGTERM was sent for .*, instead of saving a checkpoint and exiting 0; make its SIGTERM handler save and exit/);
    expect(fault?.message).toContain('last output:\n');
    expect(fault?.message).toContain('RuntimeError: CUDA error: an illegal memory access was encountered');
    expect(fault?.message).toMatch(/saving checkpoint at step \d+/);

    const described = runctl('describe', 'crash-final');
    expect(described.status, described.stderr).toBe(0);
    expect(described.stdout).toMatch(/\nFaults:\n {2}JobCrashedOnNotice \(attempt 1, since /);
    expect(described.stdout).toContain('    RuntimeError: CUDA error: an illegal memory access was encountered');
    expect(described.stdout).toMatch(/\n {2}JobCrashedOnNotice +True +JobCrashedOnNotice +\S+ +the job exited with code 1 after SIGTERM/);
    expect(described.stdout).toContain('fault JobCrashedOnNotice');

    const event = eventsOf('crash-final').find((e) => e.action === 'fault JobCrashedOnNotice');
    expect(event?.result).toBe('error');
    expect(event?.message).toContain('exited with code 1');
    expect(event?.message).toContain('RuntimeError: CUDA error');
  });

  it('a job that crashes on the notice and is resumed: the run completes, the fault stays in the event log and as a cleared condition', () => {
    const s = statusOf('crash');
    expect(s.phase, JSON.stringify(s.conditions)).toBe('Completed');
    expect(s.attempt).toBe(2);
    const fault = s.conditions.find((c) => c.type === 'JobCrashedOnNotice');
    expect(fault?.status).toBe('False');
    expect(fault?.reason).toBe('Cleared');
    expect(fault?.message).toMatch(/^no longer reported by the agent of attempt 1 since \S+; it was: the job exited with code 1 after SIGTERM/);
    const events = eventsOf('crash');
    const appeared = events.find((e) => e.action === 'fault JobCrashedOnNotice');
    expect(appeared?.message).toContain('exited with code 1');
    expect(appeared?.message).toContain('RuntimeError: CUDA error: an illegal memory access was encountered');
    expect(events.some((e) => e.action === 'fault JobCrashedOnNotice cleared')).toBe(true);
    const logs = runctl('logs', 'crash');
    expect(logs.stdout).toContain('resumed on attempt 2; done');
  });

  it('a secret that does not resolve: SecretUnresolved says what to do, and no secret value appears anywhere', () => {
    const s = statusOf('secret');
    expect(s.phase).toBe('Failed');
    const fault = s.conditions.find((c) => c.type === 'SecretUnresolved');
    expect(fault?.status).toBe('True');
    expect(fault?.message).toMatch(/^cannot resolve secret WANDB_API_KEY from ssm:\/team\/wandb-key: .*ParameterNotFound/);
    expect(fault?.message).toContain('check that the parameter exists in');
    expect(fault?.message).toContain('may ssm:GetParameter it');
    const described = runctl('describe', 'secret');
    expect(described.status, described.stderr).toBe(0);
    expect(described.stdout).toMatch(/\nFaults:\n {2}SecretUnresolved \(attempt 1, since /);
    expect(eventsOf('secret').find((e) => e.action === 'fault SecretUnresolved')?.message).toContain('ssm:/team/wandb-key');

    // The resolved value is nowhere: not in what the CLI prints, not in state, storage or sandboxes.
    const printed = [described.stdout, described.stderr, runctl('status', '-o', 'json').stdout, runctl('logs', 'secret').stdout, reconcileOutput];
    for (const text of printed) expect(text).not.toContain(SECRET_VALUE);
    const files = walk(path.join(dir, '.runctl'));
    expect(files.length).toBeGreaterThan(0);
    for (const file of files) expect(fs.readFileSync(file).includes(SECRET_VALUE), file).toBe(false);
  });
});
