// The checkpoint contract end to end (issue 9): the controller, the local provider's sandboxes and
// the real agent, with jobs of the shapes real frameworks produce (test/fixtures/ckpt-jobs/).
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { CheckpointManifest } from '../../src/providers/types.js';
import type { LoadedRun } from '../../src/spec/types.js';
import type { FileStore } from '../../src/state/file-store.js';
import type { RunStatus } from '../../src/state/types.js';
import { testRun } from '../support/runs.js';
import { startLocalController } from '../support/local-controller.js';

const repoRoot = path.resolve('.');
const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

async function settle(runs: LoadedRun[]): Promise<{ statuses: RunStatus[]; root: string; store: FileStore }> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-ckpt-e2e-'));
  const { store, controller } = await startLocalController({ root, repoRoot, runs: () => runs, cleanups });
  const summary = await controller.runUntilSettled();
  return { statuses: summary.statuses, root, store };
}

function job(name: string, run: string, extra: Parameters<typeof testRun>[1] = {}): LoadedRun {
  return testRun(name, {
    code: { path: './test/fixtures/ckpt-jobs', exclude: [] },
    run,
    timeouts: { provisioning: '1m', installing: '2m', training: '5m' },
    ...extra,
  });
}

/** The run incarnation's storage folder: runs/<run>/<uid>/. */
function runDir(root: string, run: string): string {
  const base = path.join(root, 'local', 'storage', 'runs', run);
  const uids = fs.readdirSync(base).filter((d) => !/^g\d+$/.test(d));
  return uids.length === 1 ? path.join(base, uids[0]!) : base;
}

/** Every manifest published for a run's generation 1 and still kept. */
function manifests(root: string, run: string): CheckpointManifest[] {
  const dir = path.join(runDir(root, run), 'g1', 'checkpoints');
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .sort()
    .filter((id) => fs.existsSync(path.join(dir, id, 'MANIFEST.json')))
    .map((id) => JSON.parse(fs.readFileSync(path.join(dir, id, 'MANIFEST.json'), 'utf8')) as CheckpointManifest);
}

function attemptLog(root: string, run: string, attempt: number): string {
  const dir = path.join(runDir(root, run), 'g1', `a${attempt}`, 'logs');
  if (!fs.existsSync(dir)) return '';
  return fs.readdirSync(dir).sort().map((f) => fs.readFileSync(path.join(dir, f), 'utf8')).join('');
}

const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');

describe('checkpoint contract, end to end', () => {
  it('a checkpoint rewritten in place is never published half written, and the interrupted run completes', async () => {
    const { statuses, root } = await settle([
      job('inplace', 'python3 inplace.py', {
        checkpoints: { syncInterval: '1s', gracePeriod: '10s', keep: 100 },
        rehearsal: { interruptAfter: '8s' },
        recovery: { maxRetriesOnError: 0 },
      }),
    ]);
    const status = statuses.find((s) => s.run === 'inplace')!;
    expect(status.failure?.message).toBeUndefined();
    expect(status.phase).toBe('Completed');
    expect(status.interruptions).toBe(1);
    // The two complete versions the job ever wrote; anything else is a half-written file.
    const complete = new Set([sha256(Buffer.concat([Buffer.from('v1:'), Buffer.alloc(4093, 'A')])), sha256(Buffer.concat([Buffer.from('v2:'), Buffer.alloc(47, 'B')]))]);
    const published = manifests(root, 'inplace');
    expect(published.length).toBeGreaterThanOrEqual(1);
    for (const m of published) {
      const ckpt = m.files.find((f) => f.path === 'ckpt.bin');
      expect(ckpt, `checkpoint ${m.id}`).toBeDefined();
      expect(complete.has(ckpt!.sha256), `checkpoint ${m.id} holds ckpt.bin of ${ckpt!.size} bytes`).toBe(true);
    }
    expect(attemptLog(root, 'inplace', 2)).toMatch(/resumed from a complete v[12] checkpoint/);
  }, 240_000);

  // Both fallback runs share one controller, so their attempts run side by side.
  let fallbackRuns: ReturnType<typeof settle> | undefined;
  const fallbacks = () =>
    (fallbackRuns ??= settle([
      job('crashy', 'python3 crash_after_restore.py', {
        checkpoints: { syncInterval: '30s', gracePeriod: '10s', keep: 5 },
        rehearsal: { interruptAfter: '5s' },
        recovery: { maxRetriesOnError: 5 },
      }),
      job('logcrash', 'python3 log_then_bad_load.py', {
        checkpoints: { syncInterval: '1h', keep: 2 },
        recovery: { maxRetriesOnError: 3 },
      }),
    ]));

  it('a crash right after restore falls back to the checkpoint before, then fails listing what was tried', async () => {
    const { statuses, root } = await fallbacks();
    const status = statuses.find((s) => s.run === 'crashy')!;
    expect(status.phase).toBe('Failed');
    expect(manifests(root, 'crashy').map((m) => [m.id, m.step])).toEqual([
      ['00000001', 1],
      ['00000002', 2],
    ]);
    // Attempt 2 restored the newest and crashed; attempt 3 restored the one before, and said why.
    expect(attemptLog(root, 'crashy', 2)).toContain('loaded step 2');
    expect(attemptLog(root, 'crashy', 3)).toContain('loaded step 1');
    const fallback = status.conditions.find((c) => c.type === 'CheckpointFallback');
    expect(fallback).toMatchObject({ status: 'True', reason: 'ResumeFailed' });
    expect(fallback?.message).toContain('checkpoint 00000002 was restored by attempt 2, which failed before publishing a newer one (the job exited with code 1)');
    expect(fallback?.message).toContain('restored 00000001 instead');
    // Attempt 4 had nothing left: Failed at once (no retry spent), naming every checkpoint tried.
    expect(status.attempt).toBe(4);
    expect(status.failure?.reason).toBe('NoCheckpointLeft');
    expect(status.failure?.message).toContain('00000002 (attempt 2: the job exited with code 1), 00000001 (attempt 3: the job exited with code 1)');
  }, 300_000);

  it('a job that appends to a log in its checkpoint folder and crashes loading a bad model falls back past it, and keeps later progress', async () => {
    const { statuses, root } = await fallbacks();
    const status = statuses.find((s) => s.run === 'logcrash')!;
    // Attempt 1 saved GOOD 10, GOOD 20, BAD 30 (00000001-3) and crashed; attempt 2 restored BAD 30,
    // appended its log line and crashed on load: its final sync published 00000004 (BAD 30 and the
    // longer log), which is not newer training state, so attempt 3 restored GOOD 20 (00000002, kept
    // with keep: 2 because attempt 2's own checkpoints did not count), saved GOOD 30 (00000005) and
    // crashed from an unrelated bug after it: that progress is kept, attempt 4 resumes from it.
    expect(attemptLog(root, 'logcrash', 2)).toContain('restored model.bin: BAD 30');
    expect(attemptLog(root, 'logcrash', 3)).toContain('restored model.bin: GOOD 20');
    expect(attemptLog(root, 'logcrash', 4)).toContain('restored model.bin: GOOD 30');
    const fallback = status.conditions.find((c) => c.type === 'CheckpointFallback');
    expect(fallback).toMatchObject({ status: 'True', reason: 'ResumeFailed' });
    expect(fallback?.message).toBe(
      'checkpoint 00000004 was published by attempt 2 from 00000003 without newer training state before it failed (the job exited with code 1); ' +
        'checkpoint 00000003 was restored by attempt 2, which failed before publishing a newer one (the job exited with code 1); restored 00000002 instead',
    );
    expect(status.failure?.message).toBeUndefined();
    expect(status.phase).toBe('Completed');
    expect(status.attempt).toBe(4);
    // keep: 2 among the checkpoints a resume may use; the ruled-out ones older than those are gone.
    const kept = manifests(root, 'logcrash');
    expect(kept.map((m) => [m.id, m.step, m.attempt])).toEqual([
      ['00000005', 30, 3],
      ['00000006', 40, 4],
    ]);
    expect(kept[1]!.files.find((f) => f.path === 'model.bin')?.sha256).toBe(sha256('GOOD 40'));
  }, 300_000);
});
