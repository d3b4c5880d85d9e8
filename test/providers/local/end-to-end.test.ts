// The local provider with runctl's real agent and the tiny trainer, through the Provider API only
// (no reconciler): a job trained to success, a spot interruption survived by resuming on a new
// instance with byte-identical final weights, and a controller stop.
import { existsSync } from 'node:fs';
import { readFile, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { contentKey } from '../../../src/agent/layout.js';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { LocalProvider } from '../../../src/providers/local/index.js';
import type { AgentPhase, AgentStatus, AttemptKey } from '../../../src/providers/types.js';
import type { RunSpec } from '../../../src/spec/types.js';
import { REPO_ROOT, TestRoot, alive, groupPids, spec, waitFor } from './helpers.js';

let root: TestRoot;
beforeEach(async () => {
  root = await TestRoot.create();
});
afterEach(async () => {
  await root.cleanup();
});

const STEPS = 100;
const EVERY = 20;

function trainerSpec(stepDelay: number, storage?: string): RunSpec {
  return spec({
    setup: './setup.sh',
    run: `.venv/bin/python train.py --steps ${STEPS} --checkpoint-every ${EVERY} --step-delay ${stepDelay}`,
    checkpoints: { syncInterval: '1s', gracePeriod: '4s', ...(storage ? { storage } : {}) },
  });
}

/** The trainer without its install step (tinymath straight from vendor/), where setup is beside the point. */
function quickTrainerSpec(stepDelay: number, storage?: string): RunSpec {
  const s = trainerSpec(stepDelay, storage);
  delete s.setup;
  s.run = `PYTHONPATH=vendor/tinymath python3 train.py --steps ${STEPS} --checkpoint-every ${EVERY} --step-delay ${stepDelay}`;
  return s;
}

async function start(p: LocalProvider, key: AttemptKey, s: RunSpec): Promise<string> {
  const { instance } = await p.launch({ ...key, spec: s, controller: 'default' });
  await p.deployAgent({ ...key, spec: s, instance, repoRoot: REPO_ROOT });
  return instance.id;
}

async function phase(p: LocalProvider, key: AttemptKey, s: RunSpec, phases: AgentPhase[], timeoutMs = 45_000): Promise<AgentStatus> {
  return waitFor(
    `${key.run} attempt ${key.attempt} to reach ${phases.join('/')}`,
    async () => {
      const st = await p.readAgentStatus(key, s);
      return st && phases.includes(st.phase) ? st : undefined;
    },
    timeoutMs,
  );
}

async function allLogs(p: LocalProvider, key: AttemptKey, s: RunSpec): Promise<string> {
  let text = '';
  let cursor: string | undefined;
  for (;;) {
    const chunk = await p.readLogs(key, s, cursor);
    if (chunk.text === '') return text;
    text += chunk.text;
    cursor = chunk.cursor;
  }
}

async function finalWeights(p: LocalProvider, run: string, s: RunSpec): Promise<string> {
  const manifest = await p.latestCheckpoint(run, 1, s);
  expect(manifest?.files.map((f) => f.path)).toContain('final-weights.json');
  // Checkpoint contents are stored once per run, by sha256 (docs/checkpoints.md, "How checkpoints are stored").
  const sha = manifest!.files.find((f) => f.path === 'final-weights.json')!.sha256;
  return readFile(path.join(p.storageFor(s).root, contentKey(run, sha)), 'utf8');
}

describe('local provider end to end', () => {
  it('survives a spot interruption: checkpoint, instance taken away, resume on a new one, identical weights', async () => {
    const p = root.provider({ spotNoticeLeadMs: 3000 });
    const s = trainerSpec(0.03);
    const reference = { run: 'reference', generation: 1, attempt: 1 };
    const first = { run: 'spotty', generation: 1, attempt: 1 };
    const [refId, firstId] = await Promise.all([start(p, reference, s), start(p, first, s)]);

    const training = await waitFor('spotty to train past its first checkpoint', async () => {
      const st = await p.readAgentStatus(first, s);
      return st?.phase === 'training' && (st.progress?.step ?? 0) > EVERY + 5 ? st : undefined;
    });
    expect(training.progress?.total).toBe(STEPS);
    const seen = await p.observe(['reference', 'spotty']);
    expect(seen.get('spotty')?.map((o) => [o.instance.id, o.state, o.ready])).toEqual([[firstId, 'running', true]]);
    expect(seen.get('reference')?.map((o) => o.instance.id)).toEqual([refId]);

    await p.deliverSpotNotice(first, firstId);
    const interrupted = await phase(p, first, s, ['interrupted', 'succeeded', 'failed', 'lost']);
    expect(interrupted.phase).toBe('interrupted');
    const stoppedAt = interrupted.lastCheckpoint?.step;
    expect(stoppedAt).toBeGreaterThan(EVERY);
    expect(stoppedAt).toBeLessThan(STEPS);

    const gone = await waitFor('the interrupted instance to be taken away', async () => {
      const [o] = (await p.observe(['spotty'])).get('spotty') ?? [];
      return o?.state === 'terminated' ? o : undefined;
    });
    expect(gone.spotInterruption?.reason).toBe('Server.SpotInstanceTermination');
    expect(existsSync(path.join(p.sandboxDir(firstId), 'work'))).toBe(false);

    // Attempt 2 on a new instance: the same code ships no bytes, and the job resumes where it stopped.
    const second = { ...first, attempt: 2 };
    const secondId = await start(p, second, s);
    expect(secondId).not.toBe(firstId);
    expect(p.lastBundle?.copiedBytes).toBe(0);
    const done = await phase(p, second, s, ['succeeded', 'failed', 'lost', 'interrupted']);
    expect(done).toMatchObject({ phase: 'succeeded', exitCode: 0, progress: { step: STEPS, total: STEPS } });
    expect(done.restoredFrom?.id).toBe(interrupted.lastCheckpoint?.id);
    const resumedLog = await allLogs(p, second, s);
    const resumedAt = Number(/resuming from ckpt-\d+\.json at step (\d+)/.exec(resumedLog)?.[1]);
    expect(resumedAt).toBeGreaterThanOrEqual(stoppedAt! - EVERY);

    const ref = await phase(p, reference, s, ['succeeded', 'failed', 'lost', 'interrupted']);
    expect(ref.phase).toBe('succeeded');
    expect(await finalWeights(p, 'spotty', s)).toBe(await finalWeights(p, 'reference', s));

    const observed = (await p.observe(['spotty'])).get('spotty') ?? [];
    expect(observed.map((o) => [o.attempt, o.state])).toEqual([
      [1, 'terminated'],
      [2, 'running'],
    ]);
  });

  it('streams logs with a cursor, and stops the job with a checkpoint when the controller asks', async () => {
    const p = root.provider();
    const storage = `file://${path.join(root.dir, 'custom-storage')}`;
    const s = quickTrainerSpec(0.05, storage);
    const key = { run: 'stoppable', generation: 1, attempt: 1 };
    const id = await start(p, key, s);
    expect(p.lastBundle?.copiedBytes).toBeGreaterThan(0);
    await waitFor('training past a checkpoint', async () => ((await p.readAgentStatus(key, s))?.progress?.step ?? 0) > EVERY);

    const first = await p.readLogs(key, s);
    expect(first.text).toMatch(/starting from scratch/);
    const lastStep = Number([...first.text.matchAll(/step=(\d+)\//g)].at(-1)?.[1]);
    await waitFor('more log segments', async () => (await p.readLogs(key, s, first.cursor)).text.includes('step='));
    const next = await p.readLogs(key, s, first.cursor);
    // The cursor continues exactly where the first read ended: the next line is the next step.
    expect(next.text).not.toContain('starting from scratch');
    expect(Number(/step=(\d+)\//.exec(next.text)?.[1])).toBe(lastStep + 1);

    await p.requestStop(key, s, 'suspend');
    const stopped = await phase(p, key, s, ['stopped', 'succeeded', 'failed', 'lost']);
    expect(stopped.phase).toBe('stopped');
    expect(stopped.message).toMatch(/suspend/);
    const manifest = await p.latestCheckpoint('stoppable', 1, s);
    expect(manifest?.step).toBe(stopped.lastCheckpoint?.step);
    expect(existsSync(path.join(root.dir, 'custom-storage', 'runs', 'stoppable', 'g1', 'control.json'))).toBe(false);
    expect(existsSync(path.join(root.dir, 'custom-storage', 'runs', 'stoppable', 'g1', 'a1', 'control.json'))).toBe(true);

    await p.terminate(id);
    expect((await p.observe(['stoppable'])).get('stoppable')?.[0]?.state).toBe('terminated');
  });

  it('terminate stops a training job, its agent and the instance host, leaving no process behind', async () => {
    const p = root.provider({ terminateGraceMs: 1000 });
    const s = quickTrainerSpec(0.2);
    const key = { run: 'doomed', generation: 1, attempt: 1 };
    const id = await start(p, key, s);
    const status = await waitFor('the job to train', async () => {
      const st = await p.readAgentStatus(key, s);
      return st?.phase === 'training' && st.pid !== undefined && (st.progress?.step ?? 0) > 0 ? st : undefined;
    });
    // Deploying again (a controller retrying after a crash) adopts the running agent.
    const [seen] = (await p.observe(['doomed'])).get('doomed') ?? [];
    await p.deployAgent({ ...key, spec: s, instance: seen!.instance, repoRoot: REPO_ROOT });
    const groups = await readdir(path.join(p.sandboxDir(id), 'groups'));
    expect(groups).toHaveLength(2); // the host and the one agent
    expect(groups).toContain(`${status.agentPid}.json`);
    expect((await p.readAgentStatus(key, s))?.agentPid).toBe(status.agentPid);
    const host = JSON.parse(await readFile(path.join(p.sandboxDir(id), 'host.json'), 'utf8')) as { pid: number };
    const pids = [host.pid, status.agentPid!, ...groupPids(status.pid!)];
    expect(pids.length).toBeGreaterThanOrEqual(4); // host, agent, the job's wrapper and the job
    for (const pid of pids) expect(alive(pid)).toBe(true);

    await p.terminate(id);
    for (const pid of pids) expect(alive(pid)).toBe(false);
    await p.terminate(id);
  });

  it('an instance whose sandbox folder is deleted ends its host, agent and job by itself, as a lost instance would', async () => {
    const p = root.provider();
    const s = quickTrainerSpec(0.2);
    const key = { run: 'orphaned', generation: 1, attempt: 1 };
    const id = await start(p, key, s);
    const status = await waitFor('the job to train', async () => {
      const st = await p.readAgentStatus(key, s);
      return st?.phase === 'training' && st.pid !== undefined && (st.progress?.step ?? 0) > 0 ? st : undefined;
    });
    const host = JSON.parse(await readFile(path.join(p.sandboxDir(id), 'host.json'), 'utf8')) as { pid: number };
    const pids = [host.pid, status.agentPid!, ...groupPids(status.pid!)];
    for (const pid of pids) expect(alive(pid)).toBe(true);

    await rm(p.sandboxDir(id), { recursive: true, force: true });
    // Nobody calls terminate(): the instance host notices by itself.
    await waitFor('every process of the sandbox to end', () => pids.every((pid) => !alive(pid)) || undefined);
  });

  it('refuses storage it cannot use, saying what would work', async () => {
    const p = root.provider();
    const s = trainerSpec(0.01, 's3://bucket/prefix');
    const key = { run: 'wrongstore', generation: 1, attempt: 1 };
    const { instance } = await p.launch({ ...key, spec: s, controller: 'default' });
    await expect(p.deployAgent({ ...key, spec: s, instance, repoRoot: REPO_ROOT })).rejects.toThrow(/file:\/\/\/absolute\/path/);
    await expect(p.readAgentStatus(key, s)).rejects.toThrow(/local provider keeps storage in a folder/);
  });
});
