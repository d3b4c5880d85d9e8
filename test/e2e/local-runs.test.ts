// End to end with real processes: the controller, the local provider's sandboxes, the real agent
// and the tiny trainer. Nothing is simulated but the spot notices, which arrive through the
// sandbox's IMDSv2 endpoint exactly as EC2 would deliver them.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { LocalProvider } from '../../src/providers/local/index.js';
import type { Controller } from '../../src/reconciler/controller.js';
import { attemptKey } from '../../src/reconciler/reconcile.js';
import type { LoadedRun } from '../../src/spec/types.js';
import type { FileStore } from '../../src/state/file-store.js';
import type { RunStatus } from '../../src/state/types.js';
import { testRun } from '../support/runs.js';
import { startLocalController } from '../support/local-controller.js';

const repoRoot = path.resolve('.');
const STEPS = 150;
const EVERY = 10;
const TRAIN = `.venv/bin/python train.py --steps ${STEPS} --checkpoint-every ${EVERY} --step-delay 0.08`;

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

interface World {
  provider: LocalProvider;
  store: FileStore;
  root: string;
  controller: Controller;
  desired: { runs: LoadedRun[] };
}

async function world(runs: LoadedRun[]): Promise<World> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-e2e-'));
  const desired = { runs };
  const { provider, store, controller } = await startLocalController({ root, repoRoot, runs: () => desired.runs, cleanups });
  return { provider, store, root, controller, desired };
}

function trainer(name: string, extra: Parameters<typeof testRun>[1] = {}): LoadedRun {
  return testRun(name, {
    code: { path: './examples/tiny-trainer', exclude: ['.venv/**', 'checkpoints/**', 'wheelhouse/**'] },
    setup: 'bash setup.sh',
    run: TRAIN,
    checkpoints: { syncInterval: '1s', gracePeriod: '10s', keep: 3 },
    timeouts: { provisioning: '1m', installing: '2m', training: '5m' },
    ...extra,
  });
}

const storageDir = (w: World) => path.join(w.root, 'local', 'storage');
/** The run incarnation's storage folder: runs/<run>/<uid>/. */
const runDir = (w: World, run: string) => path.join(storageDir(w), 'runs', run, w.controller.runs.find((s) => s.run === run)!.uid);

type Manifest = { files: { path: string; sha256: string }[] };

/** Published manifests of a run's generation 1, oldest first. */
function manifests(w: World, run: string): Manifest[] {
  const dir = path.join(runDir(w, run), 'g1', 'checkpoints');
  const ids = fs.readdirSync(dir).filter((d) => fs.existsSync(path.join(dir, d, 'MANIFEST.json'))).sort();
  return ids.map((id) => JSON.parse(fs.readFileSync(path.join(dir, id, 'MANIFEST.json'), 'utf8')) as Manifest);
}

/** Where a checkpoint keeps a file's bytes: the run's content store, by sha256 (docs/checkpoints.md). */
function contentFile(w: World, run: string, m: Manifest, file: string): string {
  const entry = m.files.find((f) => f.path === file);
  if (!entry) throw new Error(`no ${file} in the checkpoint`);
  return path.join(runDir(w, run), 'checkpoint-contents', entry.sha256);
}

function finalWeights(w: World, run: string): string {
  return fs.readFileSync(contentFile(w, run, manifests(w, run).at(-1) as Manifest, 'final-weights.json'), 'utf8');
}

/** Steps each attempt printed, from the run's log segments in storage. */
function stepsByAttempt(w: World, run: string): Map<number, number[]> {
  const out = new Map<number, number[]>();
  const gen = path.join(runDir(w, run), 'g1');
  for (const a of fs.readdirSync(gen).filter((d) => /^a\d+$/.test(d))) {
    const logs = path.join(gen, a, 'logs');
    if (!fs.existsSync(logs)) continue;
    const text = fs.readdirSync(logs).sort().map((f) => fs.readFileSync(path.join(logs, f), 'utf8')).join('');
    out.set(Number(a.slice(1)), [...text.matchAll(/step=(\d+)\//g)].map((m) => Number(m[1])));
  }
  return out;
}

/**
 * Delivers a spot notice to attempts 1..count once each has trained `after` steps past where it
 * started (so every interruption lands mid-training, however loaded the machine is).
 */
function interruptEach(w: World, run: string, count: number, after = 8): () => void {
  const startStep = new Map<number, number>();
  const delivered = new Set<number>();
  const timer = setInterval(() => {
    const s = w.controller.runs.find((r) => r.run === run);
    if (!s || s.phase !== 'Training') return;
    if (s.attempt > count || delivered.has(s.attempt) || !s.progress) return;
    if (!startStep.has(s.attempt)) startStep.set(s.attempt, s.progress.step);
    if (s.progress.step < (startStep.get(s.attempt) as number) + after) return;
    const inst = s.instances.find((i) => i.attempt === s.attempt && !i.endedAt);
    if (!inst) return;
    delivered.add(s.attempt);
    void w.provider.deliverSpotNotice(attemptKey(s, s.generation, s.attempt), inst.id);
  }, 50);
  return () => clearInterval(timer);
}

const byName = (statuses: RunStatus[], run: string) => statuses.find((s) => s.run === run) as RunStatus;

describe('local provider, end to end', () => {
  it('interrupted 0, 1 and 3 times, the tiny trainer ends with byte-identical weights, redoing at most one checkpoint interval', async () => {
    const w = await world([trainer('clean'), trainer('once'), trainer('thrice')]);
    const stops = [interruptEach(w, 'once', 1), interruptEach(w, 'thrice', 3)];
    const summary = await w.controller.runUntilSettled();
    stops.forEach((stop) => stop());

    expect(summary.statuses.map((s) => [s.run, s.phase, s.attempt, s.interruptions])).toEqual([
      ['clean', 'Completed', 1, 0],
      ['once', 'Completed', 2, 1],
      ['thrice', 'Completed', 4, 3],
    ]);
    const reference = finalWeights(w, 'clean');
    expect(finalWeights(w, 'once')).toBe(reference);
    expect(finalWeights(w, 'thrice')).toBe(reference);

    for (const run of ['once', 'thrice']) {
      const steps = stepsByAttempt(w, run);
      for (let a = 2; a <= steps.size; a++) {
        const before = steps.get(a - 1) as number[];
        const after = steps.get(a) as number[];
        const lastBefore = Math.max(...before);
        const firstAfter = Math.min(...after);
        expect(firstAfter, `${run} attempt ${a} resumed from scratch`).toBeGreaterThan(1);
        const redone = lastBefore - firstAfter + 1;
        expect(redone, `${run} attempt ${a} redid ${redone} steps`).toBeLessThanOrEqual(EVERY);
      }
    }
    const observed = await w.provider.observe(['clean', 'once', 'thrice']);
    expect([...observed.values()].flat().every((o) => o.state === 'terminated')).toBe(true);
  }, 240_000);

  it('retries a failing job maxRetriesOnError times, then fails with the tail of its log', async () => {
    const w = await world([
      trainer('broken', {
        run: "echo 'loading data'; echo 'ValueError: shapes (3,) and (4,) not aligned' >&2; exit 3",
        recovery: { maxRetriesOnError: 1 },
      }),
    ]);
    const summary = await w.controller.runUntilSettled();
    const s = byName(summary.statuses, 'broken');
    expect(s.phase).toBe('Failed');
    expect(s.attempt).toBe(2);
    const failed = s.conditions.find((c) => c.type === 'Failed');
    expect(failed?.reason).toBe('JobFailed');
    expect(failed?.message).toContain('exited with code 3 on attempt 2');
    expect(failed?.message).toContain('ValueError: shapes (3,) and (4,) not aligned');
    expect(summary.failed).toEqual(['broken']);
  }, 120_000);

  it('ends a run that trains past spec.timeouts.training, naming the configured limit', async () => {
    const w = await world([trainer('slow', { run: 'echo step=1/2; sleep 60', timeouts: { training: '4s' } })]);
    const summary = await w.controller.runUntilSettled();
    const failed = byName(summary.statuses, 'slow').conditions.find((c) => c.type === 'Failed');
    expect(failed?.reason).toBe('TrainingTimeout');
    expect(failed?.message).toContain('spec.timeouts.training (4s)');
  }, 120_000);

  it('suspend checkpoints and stops; resuming continues from that checkpoint; a corrupt newest checkpoint falls back to the previous', async () => {
    const run = trainer('pausable', { run: `.venv/bin/python train.py --steps ${STEPS} --checkpoint-every ${EVERY} --step-delay 0.1` });
    const w = await world([run]);
    const settled = w.controller.runUntilSettled();
    await until(() => (byName(w.controller.runs, 'pausable')?.progress?.step ?? 0) >= 25);
    w.desired.runs = [{ ...run, run: { ...run.run, spec: { ...run.run.spec, suspend: true } } }];
    await w.controller.resync();
    const suspended = byName((await settled).statuses, 'pausable');
    expect(suspended.phase).toBe('Suspended');
    const stoppedAt = suspended.lastCheckpoint?.step as number;
    expect(stoppedAt).toBeGreaterThanOrEqual(25);

    // Corrupt the newest checkpoint in storage: the agent must notice and use the one before.
    // Its newest ckpt- file is stored once, by content, and named by no older checkpoint.
    const published = manifests(w, 'pausable');
    const newest = published.at(-1) as Manifest;
    const older = new Set(published.slice(0, -1).flatMap((m) => m.files.map((f) => f.sha256)));
    const victim = newest.files.filter((f) => f.path.startsWith('ckpt-') && !older.has(f.sha256)).map((f) => f.path).sort().at(-1) as string;
    fs.appendFileSync(contentFile(w, 'pausable', newest, victim), 'garbage');

    w.desired.runs = [run];
    const resumed = byName((await w.controller.runUntilSettled()).statuses, 'pausable');
    expect(resumed.phase).toBe('Completed');
    expect(resumed.attempt).toBe(2);
    expect(resumed.conditions.find((c) => c.type === 'CheckpointFallback')).toMatchObject({ status: 'True', reason: 'NewestCheckpointCorrupt' });
    const steps = stepsByAttempt(w, 'pausable');
    const firstAfter = Math.min(...(steps.get(2) as number[]));
    // Resumed from the previous checkpoint: past the start, and no more than two intervals back.
    expect(firstAfter).toBeGreaterThan(1);
    expect(firstAfter).toBeLessThanOrEqual(stoppedAt + 1);
    expect(stoppedAt + 1 - firstAfter).toBeLessThanOrEqual(2 * EVERY);
  }, 180_000);
});

async function until(cond: () => boolean, timeoutMs = 60_000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error('condition not reached in time');
    await new Promise((r) => setTimeout(r, 50));
  }
}
