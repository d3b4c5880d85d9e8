// Issue 10, input 5, with real processes: two runs training on the local provider, the controller
// stopped, one run's status.json truncated. `runctl status` lists it as unreadable with the file
// and the fix (no stack trace); the next controller completes the healthy run and rebuilds the
// broken one from its event log and its instance, adopting the running attempt.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createLocalProvider } from '../../src/providers/local/index.js';
import { Controller } from '../../src/reconciler/controller.js';
import type { LoadedRun } from '../../src/spec/types.js';
import { FileStore } from '../../src/state/file-store.js';
import { testRun } from '../support/runs.js';

const repoRoot = path.resolve('.');
const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

/**
 * A job that checkpoints its step every step and finishes after `steps` (resuming from its
 * checkpoint). It saves atomically and declares each save (docs/checkpoints.md): a file rewritten
 * every 0.1 s without a declaration is never quiet long enough to publish, by design.
 */
function job(name: string, steps: number): LoadedRun {
  const run = [
    `i=$(cat "$RUNCTL_CHECKPOINT_DIR/step" 2>/dev/null || echo 0)`,
    `while [ "$i" -lt ${steps} ]; do i=$((i+1)); echo "step=$i/${steps}";`,
    `  echo "$i" > "$RUNCTL_CHECKPOINT_DIR/.step.tmp" && mv "$RUNCTL_CHECKPOINT_DIR/.step.tmp" "$RUNCTL_CHECKPOINT_DIR/step";`,
    `  echo "RUNCTL_CHECKPOINT_SAVED step=$i"; sleep 0.1; done`,
  ].join('\n');
  return testRun(name, {
    code: { path: './examples/tiny-trainer', exclude: ['.venv/**', 'checkpoints/**', 'wheelhouse/**'] },
    run,
    checkpoints: { syncInterval: '1s', gracePeriod: '10s', keep: 3 },
    timeouts: { provisioning: '1m', installing: '2m', training: '5m' },
  });
}

async function until(what: string, cond: () => boolean, timeoutMs = 240_000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('a damaged status record, with real processes', () => {
  it('status lists it with the file and the fix; the healthy run completes; the broken one is rebuilt and adopts its running attempt', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-damaged-'));
    const provider = createLocalProvider({ root: path.join(root, 'local'), repoRoot, controller: 'e2e', pollIntervalMs: 200 });
    const runs = [job('healthy', 120), job('broken', 120)];
    const controllerOn = (store: FileStore) =>
      new Controller({
        store,
        provider: async () => provider,
        load: async () => ({ runs, diagnostics: [], invalidFiles: [] }),
        controller: 'e2e',
        repoRoot,
        prune: false,
        onNotice: (n) => notices.push(n.message),
      });
    const notices: string[] = [];
    const stateDir = path.join(root, 'state');
    let store = new FileStore(stateDir, { fsync: false });
    await store.open();
    let controller = controllerOn(store);
    cleanups.push(async () => {
      await controller.stop();
      for (const s of controller.runs) for (const i of s.instances) await provider.terminate(i.id);
      await store.close();
      fs.rmSync(root, { recursive: true, force: true });
    });

    // Both training, with a checkpoint each; then the controller stops (the jobs keep training).
    const abort = new AbortController();
    const first = controller.runUntilSettled(abort.signal);
    await until('both runs train with a checkpoint', () => controller.runs.length === 2 && controller.runs.every((s) => s.phase === 'Training' && s.lastCheckpoint !== undefined));
    abort.abort();
    await first;
    await controller.stop();
    await store.close();
    const before = controller.runs.find((s) => s.run === 'broken')!;

    const file = path.join(stateDir, 'state', 'runs', 'broken', 'status.json');
    const text = fs.readFileSync(file);
    fs.writeFileSync(file, text.subarray(0, Math.floor(text.length / 2)));

    // `runctl status`: the healthy run as usual, the broken one named with its file and the fix.
    const cli = spawnSync(process.execPath, [path.join(repoRoot, 'bin', 'runctl.js'), 'status', '--state-dir', stateDir], { encoding: 'utf8', env: { ...process.env, NO_COLOR: '1' } });
    expect(cli.stderr).not.toMatch(/internal error|\n\s+at /);
    expect(cli.stdout).toMatch(/healthy\s+Training/);
    expect(cli.stdout).toContain(`broken: UNREADABLE status record ${file}: not valid JSON`);
    expect(cli.stdout).toContain('To fix: run `runctl reconcile`');
    expect(cli.stdout).not.toContain('archive');
    expect(cli.status).toBe(1);

    // A new controller: the healthy run completes; the broken one is rebuilt and completes too,
    // on the same instance and attempt (adopted, not relaunched).
    store = new FileStore(stateDir, { fsync: false });
    await store.open();
    controller = controllerOn(store);
    const summary = await controller.runUntilSettled();
    expect(summary.unreadable).toEqual([]);
    expect(summary.statuses.map((s) => [s.run, s.phase, s.attempt, s.interruptions])).toEqual([
      ['broken', 'Completed', 1, 0],
      ['healthy', 'Completed', 1, 0],
    ]);
    const broken = summary.statuses.find((s) => s.run === 'broken')!;
    expect(broken.uid).toBe(before.uid);
    expect(broken.instances.map((i) => i.id)).toEqual(before.instances.map((i) => i.id));
    const events = await store.readEvents('broken');
    const rebuilt = events.find((e) => e.action === 'rebuilt');
    expect(rebuilt?.message).toMatch(/^the status record was unreadable \(not valid JSON \(\d+ bytes\)\); rebuilt from \d+ events and 1 instance as Pending, resuming attempt 1/);
    expect(events.some((e) => e.action === 'launch' && e.result === 'adopted')).toBe(true);
    expect(notices.some((n) => n.startsWith('the status record was unreadable'))).toBe(true);
    const kept = fs.readdirSync(path.dirname(file)).filter((f) => f.startsWith('status.json.unreadable-'));
    expect(kept).toHaveLength(1);
    expect(fs.readFileSync(path.join(path.dirname(file), kept[0]!))).toEqual(text.subarray(0, Math.floor(text.length / 2)));
  }, 600_000);
});
