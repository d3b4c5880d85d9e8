// recovery.prelaunch end to end with real processes (issue 12): the controller, the local
// provider's sandboxes and the real agent. On a spot notice the replacement's sandbox is launched at
// once and its agent set up; it waits at its start gate while the interrupted job saves, and starts
// the job only once that final checkpoint is safe, from that checkpoint. The order is fixed by
// states (the interrupted job's save waits until the test has seen the replacement waiting).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { attemptKey } from '../../src/reconciler/reconcile.js';
import type { RunStatus } from '../../src/state/types.js';
import { testRun } from '../support/runs.js';
import { startLocalController } from '../support/local-controller.js';

const repoRoot = path.resolve('.');
const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

function until<T>(what: string, probe: () => T | undefined, timeoutMs = 90_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolve, reject) => {
    const tick = () => {
      const v = probe();
      if (v !== undefined) return resolve(v);
      if (Date.now() > deadline) return reject(new Error(`timed out waiting for ${what}`));
      setTimeout(tick, 50);
    };
    tick();
  });
}

const readJson = (file: string) => (fs.existsSync(file) ? (JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>) : undefined);

function logText(dir: string): string {
  const logs = path.join(dir, 'logs');
  if (!fs.existsSync(logs)) return '';
  return fs.readdirSync(logs).sort().map((f) => fs.readFileSync(path.join(logs, f), 'utf8')).join('');
}

describe('recovery.prelaunch on the local provider', () => {
  it('launches the replacement during the notice, before the old instance is terminated, and starts its job only from the final checkpoint', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-prelaunch-'));
    const release = path.join(root, 'release-the-save');
    const run = testRun('handover', {
      code: { path: './test/fixtures/prelaunch-job', exclude: [] },
      setup: 'echo set up > setup.done',
      run: 'python3 train.py',
      env: { RELEASE_FILE: release, TOTAL_STEPS: '60' },
      checkpoints: { syncInterval: '1s', gracePeriod: '60s', keep: 3 },
      recovery: { prelaunch: true },
      timeouts: { provisioning: '1m', installing: '2m', training: '5m' },
    });
    const { provider, store, controller } = await startLocalController({ root, repoRoot, runs: () => [run], cleanups, provider: { spotNoticeLeadMs: 90_000 } });
    const current = () => controller.runs.find((s) => s.run === 'handover');
    const settled = controller.runUntilSettled();

    // Notice once attempt 1 has published its first checkpoint: it lands mid-training.
    const first = await until('attempt 1 training with a checkpoint', () => {
      const s = current();
      return s?.phase === 'Training' && s.attempt === 1 && (s.lastCheckpoint?.step ?? 0) >= 10 ? s : undefined;
    });
    const old = first.instances.find((i) => i.attempt === 1 && !i.endedAt)!;
    await provider.deliverSpotNotice(attemptKey(first, first.generation, 1), old.id);

    const gen = path.join(root, 'local', 'storage', 'runs', 'handover', first.uid, 'g1');
    // The replacement is up and set up, waiting at its gate, while attempt 1 is still saving.
    await until('attempt 2 waiting at its start gate', () => (readJson(path.join(gen, 'a2', 'status.json'))?.phase === 'waiting' ? true : undefined));
    // Attempt 1's agent sees the notice on its own poll, which may come after the replacement is
    // up: wait for it to be saving (its save then waits for the release file) before looking.
    await until('attempt 1 saving on the notice', () => (readJson(path.join(gen, 'a1', 'status.json'))?.phase === 'interrupting' ? true : undefined));
    const replacementPhaseMeanwhile = readJson(path.join(gen, 'a2', 'status.json'))?.phase;
    const replacementLogMeanwhile = logText(path.join(gen, 'a2'));
    const whileWaiting = current() as RunStatus;
    fs.writeFileSync(release, 'go\n');

    const summary = await settled;
    const status = summary.statuses.find((s) => s.run === 'handover') as RunStatus;
    expect(status.phase, JSON.stringify(status.failure)).toBe('Completed');
    expect(status.attempt).toBe(2);

    // While the replacement waited: the old job was still saving, and no second job had started.
    expect(replacementPhaseMeanwhile).toBe('waiting');
    expect(replacementLogMeanwhile).not.toContain('started attempt=2');
    expect(whileWaiting.instances.filter((i) => !i.endedAt).map((i) => i.attempt).sort()).toEqual([1, 2]);

    // The replacement was launched before the old instance was terminated.
    const [a1, a2] = [1, 2].map((a) => status.instances.find((i) => i.attempt === a)!);
    expect(Date.parse(a2!.launchedAt)).toBeLessThan(Date.parse(a1!.endedAt!));
    const events = await store.readEvents('handover');
    const effects = events.filter((e) => e.kind === 'effect').map((e) => `${e.action}:${e.result}`);
    const at = (name: string) => effects.indexOf(name);
    expect(at('prelaunch:ok')).toBeGreaterThan(-1);
    expect(at('deployReplacement:ok')).toBeGreaterThan(at('prelaunch:ok'));
    expect(at('openStartGate:ok')).toBeGreaterThan(at('deployReplacement:ok'));
    const terminatedOld = events.findIndex((e) => e.kind === 'effect' && e.action === 'terminate' && e.message?.includes(a1!.id));
    expect(terminatedOld === -1 || terminatedOld > events.findIndex((e) => e.action === 'prelaunch')).toBe(true);

    // The job started only once the final checkpoint was safe, and from it.
    const finalSync = events.find((e) => e.action === 'final checkpoint');
    expect(finalSync?.data?.safe).toBe(true);
    const savedAt = Number(/saved step=(\d+) on SIGTERM/.exec(logText(path.join(gen, 'a1')))?.[1]);
    const started = /started attempt=2 at=([\d.]+) resumed_step=(\d+)/.exec(logText(path.join(gen, 'a2')));
    expect(started, 'attempt 2 never started its job').not.toBeNull();
    expect(Number(started![2])).toBe(savedAt);
    // ...the checkpoint it restored is the one the final sync published, and the job started after
    // the controller recorded that sync (the gate opens only after that record).
    expect(status.agent?.restoredFrom?.id).toBe(finalSync?.data?.checkpoint);
    expect(Number(started![1]) * 1000).toBeGreaterThanOrEqual(Date.parse(finalSync!.at));
    // No instance outlives the run.
    expect(status.instances.every((i) => i.endedAt)).toBe(true);
  }, 180_000);
});
