// The job's processes are its session and everything descended from it (docs/checkpoints.md,
// rule 1; break test 20, F1 and F2): torchrun starts every worker with start_new_session=True,
// so a worker rewriting the checkpoint is in neither the job's session nor its process group.
// The agent must still see it writing, and still kill it when the grace period ends.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT, type Sandbox, useAgentSandbox, waitFor } from './support.js';

const JOBS = path.join(REPO_ROOT, 'test', 'fixtures', 'ckpt-jobs');
const { imds, sandbox } = useAgentSandbox();
let box: Sandbox;

async function bundleJobs(...names: string[]): Promise<string> {
  return box.bundle(Object.fromEntries(names.map((n) => [n, readFileSync(path.join(JOBS, n), 'utf8')])));
}

/** What a model.pt written by inplace_worker.py holds: `step N`, or `torn (…)` when it is not one whole save. */
function held(file: string): string {
  const buf = readFileSync(file);
  if (buf.length < 44) return `torn (${buf.length} bytes)`;
  const body = buf.subarray(0, buf.length - 32);
  if (!createHash('sha256').update(body).digest().equals(buf.subarray(buf.length - 32))) return `torn (${buf.length} bytes)`;
  return `step ${Number(body.subarray(4, 12).toString())}`;
}

/** True while pid runs (a zombie has ended). */
function running(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^[ZX]$/.test(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] ?? '');
  } catch {
    return false;
  }
}

const heldByEach = (run: string) =>
  box.checkpoints(run, 1).map((c) => (c.manifest.files.some((f) => f.path === 'model.pt') ? held(box.checkpointFile(c, 'model.pt')) : 'absent'));

describe('a torchrun-shaped launcher whose worker runs in a session of its own', () => {
  it('no sync publishes the model.pt the worker is rewriting in place; the last save is published whole', async () => {
    box = await sandbox();
    const bundle = await bundleJobs('session_launcher.py', 'inplace_worker.py');
    const key = { run: 'torchrun-session', generation: 1, attempt: 1 };
    const status = await box.run(box.config(key, bundle, imds.url, { command: 'python3 session_launcher.py inplace_worker.py', syncIntervalSeconds: 0.3, keep: 100 }));
    expect(status.phase).toBe('succeeded');
    const versions = heldByEach('torchrun-session');
    // Before the fix 4 of 8 published checkpoints held model.pt at 0 bytes, in 4 of 4 runs.
    expect(versions.filter((v) => !v.startsWith('step'))).toEqual([]);
    expect(versions.at(-1)).toBe('step 4');
  }, 180_000);

  it("the grace period's SIGKILL reaches a worker that ignores SIGTERM, and every published model.pt is whole", async () => {
    box = await sandbox();
    const bundle = await bundleJobs('session_launcher.py', 'inplace_worker.py');
    const key = { run: 'torchrun-kill', generation: 1, attempt: 1 };
    const config = box.config(key, bundle, imds.url, {
      command: 'python3 session_launcher.py inplace_worker.py',
      env: { ROUNDS: '1000', PAUSE: '0.3', IGNORE_TERM: '1' },
      syncIntervalSeconds: 0.3,
      gracePeriodSeconds: 2,
      keep: 100,
    });
    const agent = await box.start(config);
    await waitFor('a published save', () => box.checkpoints('torchrun-kill', 1).length > 0, 60_000);
    const worker = Number(/worker pid (\d+)/.exec(box.logs(key))?.[1]);
    expect(running(worker)).toBe(true);
    imds.notice = { action: 'terminate', time: new Date(Date.now() + 120_000).toISOString().replace(/\.\d+Z$/, 'Z') };
    expect((await agent.exited).code).toBe(0);
    imds.notice = undefined;
    const alive = running(worker);
    if (alive) process.kill(worker, 'SIGKILL'); // before the fix it outlived the agent, still writing
    expect(alive).toBe(false);
    expect(box.agentLog(config)).toMatch(/grace period of 2s over; killing process group \d+ and the job's processes in other sessions/);
    const versions = heldByEach('torchrun-kill');
    expect(versions.length).toBeGreaterThan(0);
    expect(versions.filter((v) => !v.startsWith('step'))).toEqual([]);
  }, 180_000);
});

describe('a writer that detaches from the job (a daemon)', () => {
  const shapes: Array<[string, string]> = [
    ['a double fork', 'python3 daemonizing_launcher.py inplace_worker.py'],
    ['`setsid -f` in a script', 'setsid -f python3 inplace_worker.py\nwhile [ ! -f "$DONE_FILE" ]; do sleep 0.05; done'],
  ];
  for (const [shape, command] of shapes) {
    it(`${shape}: it is reparented to the agent and watched, so no sync publishes the model.pt it is rewriting`, async () => {
      box = await sandbox();
      const bundle = await bundleJobs('daemonizing_launcher.py', 'inplace_worker.py');
      const run = shape.startsWith('a double') ? 'daemon-fork' : 'daemon-setsid';
      const key = { run, generation: 1, attempt: 1 };
      const status = await box.run(box.config(key, bundle, imds.url, { command, env: { DONE_FILE: path.join(box.root, `${run}.done`) }, syncIntervalSeconds: 0.3, keep: 100 }));
      expect(status.phase).toBe('succeeded');
      const versions = heldByEach(run);
      // Before the fix 4 of 8 published checkpoints held model.pt at 0 bytes, in 4 of 4 runs (break test 21).
      expect(versions.filter((v) => !v.startsWith('step'))).toEqual([]);
      expect(versions.at(-1)).toBe('step 4');
    }, 180_000);
  }
});

describe('a writer that detached from the job before an agent restarted and adopted it', () => {
  it('the new agent knows it by its environment: no sync publishes the model.pt it rewrites, and it does not outlive the attempt', async () => {
    box = await sandbox();
    const bundle = await bundleJobs('inplace_worker.py');
    const key = { run: 'adopt-daemon', generation: 1, attempt: 1 };
    const config = box.config(key, bundle, imds.url, {
      command: 'setsid -f python3 inplace_worker.py\nwhile [ ! -f "$DONE_FILE" ]; do sleep 0.05; done',
      env: { DONE_FILE: path.join(box.root, 'done'), ROUNDS: '8', PAUSE: '0.5' },
      syncIntervalSeconds: 0.3,
      keep: 100,
    });
    const first = await box.start(config);
    await waitFor('the worker', () => /worker pid \d+/.test(box.logs(key)), 30_000);
    const worker = Number(/worker pid (\d+)/.exec(box.logs(key))?.[1]);
    first.child.kill('SIGKILL');
    await first.exited;
    // The new agent is no ancestor of the worker, so not its subreaper either (break test 22).
    const second = await box.start(config);
    expect((await second.exited).code).toBe(0);
    expect(box.agentLog(config)).toContain('adopting running job');
    const alive = running(worker);
    if (alive) process.kill(worker, 'SIGKILL');
    expect(heldByEach('adopt-daemon').filter((v) => !v.startsWith('step'))).toEqual([]);
    expect(alive).toBe(false);
  }, 180_000);
});

