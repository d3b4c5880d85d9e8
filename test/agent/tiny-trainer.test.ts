// The truth test: the example trainer, run under the real agent and interrupted 0, 1 and 3 times by
// spot notices from the loopback IMDS (each interruption followed by attempt k+1 on a new
// "instance" with resuming=true), ends with byte-identical final weights and never redoes more
// than one checkpoint interval of steps.
import { execFileSync, spawnSync } from 'node:child_process';
import { cpSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AgentStatus } from '../../src/providers/types.js';
import { FakeImds, REPO_ROOT, Sandbox, waitFor } from './support.js';

const STEPS = 60;
const CHECKPOINT_EVERY = 10;
const COMMAND = `.venv/bin/python train.py --steps ${STEPS} --checkpoint-every ${CHECKPOINT_EVERY} --step-delay 0.04`;

let imds: FakeImds;
let box: Sandbox;
let bundle: string;
/** The reference run's work dir, reused by later attempts like a warm machine image. */
let warmWorkDir: string;

beforeAll(async () => {
  imds = await new FakeImds().start();
  box = await Sandbox.create();
  bundle = await box.bundleDir(REPO_ROOT, 'examples/tiny-trainer');
});
afterAll(async () => {
  await imds.close();
  await box.cleanup();
});

interface Outcome {
  finalWeights: Buffer;
  attempts: { steps: number[]; status: AgentStatus; logs: string }[];
}

async function trainWithInterruptions(run: string, interruptAtSteps: number[]): Promise<Outcome> {
  const attempts: Outcome['attempts'] = [];
  for (let attempt = 1; attempt <= interruptAtSteps.length + 1; attempt++) {
    const key = { run, generation: 1, attempt };
    const config = box.config(key, bundle, imds.url, {
      setup: './setup.sh',
      command: COMMAND,
      resuming: attempt > 1,
      syncIntervalSeconds: 0.5,
      gracePeriodSeconds: 20,
      ...(warmWorkDir ? { workDir: warmWorkDir } : {}),
    });
    imds.notice = undefined;
    const agent = await box.start(config);
    const interruptAt = interruptAtSteps[attempt - 1];
    if (interruptAt !== undefined) {
      await waitFor(`${run} attempt ${attempt} to reach step ${interruptAt}`, () => (box.status(key)?.progress?.step ?? 0) >= interruptAt);
      imds.notice = { action: 'terminate', time: new Date(Date.now() + 120_000).toISOString() };
    }
    expect((await agent.exited).code).toBe(0);
    imds.notice = undefined;
    warmWorkDir ??= config.workDir;
    attempts.push({ steps: box.steps(key), status: box.status(key)!, logs: box.logs(key) });
  }
  const newest = box.checkpoints(run, 1).at(-1)!;
  return { finalWeights: readFileSync(box.checkpointFile(newest, 'final-weights.json')), attempts };
}

describe('tiny-trainer under the agent', () => {
  let reference: Outcome;

  it('runs uninterrupted: a real install with visible progress, then training to the final weights', async () => {
    const installing: AgentStatus[] = [];
    const watching = setInterval(() => {
      const s = box.status({ run: 'tt0', generation: 1, attempt: 1 });
      if (s?.phase === 'installing') installing.push(s);
    }, 40);
    try {
      reference = await trainWithInterruptions('tt0', []);
    } finally {
      clearInterval(watching);
    }
    const only = reference.attempts[0]!;
    expect(only.status.phase).toBe('succeeded');
    expect(only.steps).toEqual(Array.from({ length: STEPS }, (_, i) => i + 1));
    expect(only.status.progress).toMatchObject({ step: STEPS, total: STEPS });
    expect(only.logs).toMatch(/\[setup 1\/4\] creating virtual environment/);
    expect(only.logs).toMatch(/Successfully installed tinymath-0\.1\.0/);
    expect(only.logs).toContain('starting from scratch (attempt 1)');
    // While installing, the status carried the install's latest output (long installs never look hung).
    expect(installing.some((s) => s.logTail?.some((l) => l.startsWith('[setup')))).toBe(true);
    const weights = JSON.parse(reference.finalWeights.toString('utf8'));
    expect(weights.steps).toBe(STEPS);
    expect(weights.w).toHaveLength(8);
  });

  it.each([
    ['once', 'tt1', [25]],
    ['three times', 'tt3', [8, 23, 38]],
  ])('interrupted %s: byte-identical final weights, at most one checkpoint interval redone', async (_label, run, at) => {
    const outcome = await trainWithInterruptions(run, at);

    expect(outcome.attempts.map((a) => a.status.phase)).toEqual([...at.map(() => 'interrupted'), 'succeeded']);
    for (let i = 0; i + 1 < outcome.attempts.length; i++) {
      const before = outcome.attempts[i]!;
      const after = outcome.attempts[i + 1]!;
      const lastDone = Math.max(...before.steps);
      const resumedAfter = Math.min(...after.steps) - 1;
      expect(before.logs).toContain(`received SIGTERM at step ${lastDone}: checkpoint saved, exiting`);
      expect(after.logs).toMatch(new RegExp(`resuming from ckpt-\\d{8}\\.json at step ${resumedAfter} \\(attempt ${i + 2}\\)`));
      const redone = lastDone - resumedAfter;
      expect(redone).toBeGreaterThanOrEqual(0);
      expect(redone).toBeLessThanOrEqual(CHECKPOINT_EVERY);
      expect(after.status.restoredFrom?.id).toMatch(/^\d{8}$/);
    }
    const covered = new Set(outcome.attempts.flatMap((a) => a.steps));
    expect(covered.size).toBe(STEPS);
    expect(outcome.finalWeights.equals(reference.finalWeights)).toBe(true);
  });
});

describe('tiny-trainer setup.sh', () => {
  function copyExample(): string {
    const dir = path.join(box.root, `setup-${Math.random().toString(36).slice(2)}`);
    cpSync(path.join(REPO_ROOT, 'examples/tiny-trainer'), dir, {
      recursive: true,
      filter: (src) => !/[/\\](\.venv|wheelhouse|checkpoints|__pycache__)$/.test(src),
    });
    return dir;
  }

  it('installs without pip through the hash-checking fallback', () => {
    const dir = copyExample();
    const out = execFileSync('bash', ['setup.sh'], { cwd: dir, encoding: 'utf8', env: { ...process.env, TINY_TRAINER_INSTALLER: 'stdlib' } });
    expect(out).toContain('with tools/install_wheels.py');
    expect(execFileSync(path.join(dir, '.venv/bin/python'), ['-c', 'import tinymath; print(tinymath.exp(0.0))'], { encoding: 'utf8' }).trim()).toBe('1.0');
  });

  it.each(['auto', 'stdlib'])('refuses a wheel that does not match the pinned hash (installer: %s)', (installer) => {
    const dir = copyExample();
    const init = path.join(dir, 'vendor/tinymath/tinymath/__init__.py');
    writeFileSync(init, `${readFileSync(init, 'utf8')}\n# tampered\n`);
    const result = spawnSync('bash', ['setup.sh'], { cwd: dir, encoding: 'utf8', env: { ...process.env, TINY_TRAINER_INSTALLER: installer } });
    expect(result.status).not.toBe(0);
    expect(result.stdout + result.stderr).toMatch(/hash/i);
  });
});
