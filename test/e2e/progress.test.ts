// Progress from real frameworks' output, end to end with real processes (issue 13): the
// controller, the local provider's sandboxes, the real agent, and jobs printing the way tqdm, the
// Hugging Face Trainer, Lightning and nanoGPT do (test/fixtures/progress-jobs/train.py), one run
// each, plus nanoGPT's lines read by a spec.progress.pattern through an interruption. What users
// rely on is checked where they see it: `runctl status -o json`, the live display `runctl
// reconcile` prints, and the history the dashboard plots across attempts.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createLocalProvider } from '../../src/providers/local/index.js';
import { Controller } from '../../src/reconciler/controller.js';
import { readProgressHistory } from '../../src/reconciler/progress-history.js';
import { attemptKey } from '../../src/reconciler/reconcile.js';
import type { LoadedRun } from '../../src/spec/types.js';
import { FileStore } from '../../src/state/file-store.js';
import type { RunStatus } from '../../src/state/types.js';
import { LiveDisplay } from '../../src/ui/live-display.js';
import { testRun } from '../support/runs.js';

const repoRoot = path.resolve('.');
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-progress-e2e-'));
const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups) await c();
  fs.rmSync(root, { recursive: true, force: true });
});

/** The job's loss at a step (train.py loss_at), as it prints it. */
const lossAt = (step: number) => Number((4 / (1 + step * 0.05)).toFixed(4));
const STEPS = 20;
const HOLD = 12;
const NANOGPT_PATTERN = '^iter (?<step>\\d+): loss (?<loss>[\\d.]+), time (?<time_ms>[\\d.]+)ms';

function job(name: string, format: string, args = `--steps ${STEPS} --delay 0.02`, extra: Parameters<typeof testRun>[1] = {}): LoadedRun {
  return testRun(name, {
    code: { path: './test/fixtures/progress-jobs', exclude: [] },
    run: `python3 train.py --format ${format} ${args}`,
    checkpoints: { syncInterval: '1s', gracePeriod: '10s', keep: 2 },
    timeouts: { provisioning: '1m', installing: '1m', training: '2m' },
    ...extra,
  });
}

function runctl(...args: string[]) {
  return spawnSync(process.execPath, ['bin/runctl.js', ...args, '--state-dir', path.join(root, 'state')], {
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1' },
  });
}

describe('progress from real frameworks, end to end', () => {
  it('shows step, total and loss in status -o json and the bar in the live display, and keeps the curve across an interruption', async () => {
    const provider = createLocalProvider({ root: path.join(root, 'local'), repoRoot, controller: 'e2e', pollIntervalMs: 200, heartbeatSeconds: 0.5 });
    const store = new FileStore(path.join(root, 'state'), { fsync: false });
    await store.open();
    const runs = [
      job('tqdm-bar', 'tqdm'),
      job('hf-trainer', 'trainer'),
      job('lightning', 'lightning'),
      job('nanogpt', 'nanogpt'),
      job('nanogpt-pattern', 'nanogpt', `--steps ${STEPS} --delay 0.02 --hold-at ${HOLD}`, { progress: { pattern: NANOGPT_PATTERN } }),
    ];
    let live = '';
    const display = new LiveDisplay({ write: (chunk) => (live += chunk), tty: false, width: 200 });
    const controller: Controller = new Controller({
      store,
      provider: async () => provider,
      load: async () => ({ runs, diagnostics: [], invalidFiles: [] }),
      controller: 'e2e',
      repoRoot,
      prune: false,
      onStatus: () => display.update(controller.runs),
    });
    cleanups.push(async () => {
      await controller.stop();
      for (const s of controller.runs) for (const i of s.instances) await provider.terminate(i.id);
      await store.close();
    });

    // Attempt 1 of nanogpt-pattern waits at step HOLD; once its progress says so, a spot notice.
    let delivered = false;
    const interrupter = setInterval(() => {
      const s = controller.runs.find((r) => r.run === 'nanogpt-pattern');
      const inst = s?.instances.find((i) => i.attempt === 1 && !i.endedAt);
      if (delivered || !s || !inst || s.attempt !== 1 || s.phase !== 'Training' || s.progress?.step !== HOLD) return;
      delivered = true;
      void provider.deliverSpotNotice(attemptKey(s, s.generation, 1), inst.id);
    }, 50);
    const summary = await controller.runUntilSettled();
    clearInterval(interrupter);
    display.close();

    expect(summary.statuses.map((s) => [s.run, s.phase, s.attempt])).toEqual([
      ['hf-trainer', 'Completed', 1],
      ['lightning', 'Completed', 1],
      ['nanogpt', 'Completed', 1],
      ['nanogpt-pattern', 'Completed', 2],
      ['tqdm-bar', 'Completed', 1],
    ]);

    // runctl status -o json: step, total and loss of each format.
    const out = runctl('status', '-o', 'json');
    expect(out.status, out.stderr).toBe(0);
    const progress = Object.fromEntries((JSON.parse(out.stdout) as Array<{ run: string; progress: unknown }>).map((r) => [r.run, r.progress]));
    const last = lossAt(STEPS);
    expect(progress['tqdm-bar']).toEqual({ step: STEPS, total: STEPS, loss: last });
    expect(progress['hf-trainer']).toEqual({
      step: STEPS,
      total: STEPS,
      loss: last,
      // The last log dict printed was the evaluation's, at the last step; the training dict's
      // numbers stay as they were.
      metrics: { grad_norm: 1.25, learning_rate: 0, epoch: 2, eval_loss: Number((lossAt(STEPS) + 0.1).toFixed(4)), eval_runtime: 0.1 },
    });
    // Lightning's bar counts batches within the epoch: epoch 1, batch 10 of 10.
    expect(progress.lightning).toEqual({ step: STEPS / 2, total: STEPS / 2, loss: Number(last.toFixed(3)), metrics: { epoch: 1 } });
    // nanoGPT prints no total.
    expect(progress.nanogpt).toEqual({ step: STEPS, loss: last, metrics: { time_ms: 20, mfu: 1.5, train_loss: last, val_loss: Number((last + 0.1).toFixed(4)) } });
    // The pattern, not the built-in format: only its groups (no mfu, no val loss).
    expect(progress['nanogpt-pattern']).toEqual({ step: STEPS, loss: last, metrics: { time_ms: 20 } });

    // The live display (what `runctl reconcile` prints off a terminal): the bar where there is a total.
    const lines = live.split('\n');
    const lineOf = (run: string, re: RegExp) => lines.find((l) => l.startsWith(`${run} `) && re.test(l));
    expect(lineOf('tqdm-bar', /Completed\s+attempt 1\s+\[##########\] 20\/20\s+loss 2\s/), live).toBeDefined();
    expect(lineOf('hf-trainer', /Completed\s+attempt 1\s+\[##########\] 20\/20\s+loss 2\s/), live).toBeDefined();
    expect(lineOf('lightning', /Completed\s+attempt 1\s+\[##########\] 10\/10\s+loss 2\s/), live).toBeDefined();
    expect(lineOf('nanogpt', /Completed\s+attempt 1\s+step 20\s+loss 2\s/), live).toBeDefined();
    expect(lineOf('nanogpt-pattern', /Completed\s+attempt 2\s+step 20\s+loss 2\s/), live).toBeDefined();

    // The history across the interruption: attempt 1 up to where it was stopped, attempt 2 from
    // the checkpoint it resumed, each point with the loss printed at that step.
    const record = summary.statuses.find((s) => s.run === 'nanogpt-pattern') as RunStatus;
    const series = await readProgressHistory(provider, record);
    expect(series.map((s) => [s.generation, s.attempt])).toEqual([
      [1, 1],
      [1, 2],
    ]);
    const [first, second] = series as [(typeof series)[0], (typeof series)[0]];
    expect(first.points.map((p) => p.step)).toEqual(Array.from({ length: HOLD }, (_, i) => i + 1));
    expect(second.points.map((p) => p.step)).toEqual(Array.from({ length: STEPS - HOLD }, (_, i) => HOLD + 1 + i));
    for (const p of [...first.points, ...second.points]) {
      expect(p.metrics).toEqual({ loss: lossAt(p.step), time_ms: 20 });
      expect(Date.parse(p.time)).not.toBeNaN();
    }
    expect(Date.parse(second.points[0]!.time)).toBeGreaterThanOrEqual(Date.parse(first.points.at(-1)!.time));

    // Lightning's history counts batches from the start, so the curve runs on across epochs.
    const lightning = await readProgressHistory(provider, summary.statuses.find((s) => s.run === 'lightning') as RunStatus);
    const steps = lightning[0]!.points.map((p) => p.step);
    expect(steps).toEqual(Array.from({ length: STEPS }, (_, i) => i + 1));
    expect(lightning[0]!.points.at(-1)!.metrics).toEqual({ epoch: 1, loss: Number(last.toFixed(3)) });
    // The Trainer's evaluation dict lands on the training step it was printed at.
    const trainer = await readProgressHistory(provider, summary.statuses.find((s) => s.run === 'hf-trainer') as RunStatus);
    expect(trainer[0]!.points.find((p) => p.step === 10)!.metrics).toMatchObject({ loss: lossAt(10), eval_loss: Number((lossAt(10) + 0.1).toFixed(4)) });
  }, 120_000);
});
