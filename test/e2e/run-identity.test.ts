// Issue 10, input 1, with real processes: the controller with prune, the local provider's
// sandboxes, the real agent and a job that checkpoints. Run `exp` (model A) trains and is pruned
// when its file goes; a different spec is then committed under the same name. The new run is a
// new incarnation: attempt 1, not resuming, restoring nothing, its logs and events its own.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createLocalProvider } from '../../src/providers/local/index.js';
import { Controller } from '../../src/reconciler/controller.js';
import { runLogs } from '../../src/reconciler/operations.js';
import type { LoadedRun } from '../../src/spec/types.js';
import { FileStore } from '../../src/state/file-store.js';
import { isUid } from '../../src/state/identity.js';
import { testRun } from '../support/runs.js';

const repoRoot = path.resolve('.');
const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups) await c();
});

/** A job that says what it starts from, then checkpoints a file named after its model every step. */
function job(model: string, steps: number): LoadedRun {
  const run = [
    `echo "start model=${model} resuming=\${RUNCTL_RESUMING:-unset} attempt=$RUNCTL_ATTEMPT restored=[$(ls "$RUNCTL_CHECKPOINT_DIR" | tr '\\n' ' ')]"`,
    // Saves atomically and declares each save (docs/checkpoints.md): a file rewritten every 0.05 s
    // without a declaration is never quiet long enough to publish, by design.
    `for i in $(seq 1 ${steps}); do echo "step=$i/${steps} model=${model}"; echo "$i" > "$RUNCTL_CHECKPOINT_DIR/.w.tmp" && mv "$RUNCTL_CHECKPOINT_DIR/.w.tmp" "$RUNCTL_CHECKPOINT_DIR/weights-${model}.txt"; echo "RUNCTL_CHECKPOINT_SAVED step=$i"; sleep 0.05; done`,
  ].join('\n');
  return testRun('exp', {
    code: { path: './examples/tiny-trainer', exclude: ['.venv/**', 'checkpoints/**', 'wheelhouse/**'] },
    run,
    env: { MODEL: model },
    checkpoints: { syncInterval: '1s', gracePeriod: '10s', keep: 3 },
    timeouts: { provisioning: '1m', installing: '2m', training: '5m' },
  });
}

async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 240_000): Promise<void> {
  const start = Date.now();
  while (!(await cond())) {
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('run identity with real processes (local provider)', () => {
  it('a pruned run re-created under its name is attempt 1, not resuming, restores nothing, and its logs and events are only its own', async () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-identity-'));
    const provider = createLocalProvider({ root: path.join(root, 'local'), repoRoot, controller: 'e2e', pollIntervalMs: 200 });
    const store = new FileStore(path.join(root, 'state'), { fsync: false });
    await store.open();
    const desired = { runs: [job('A', 2000)] };
    const controller = new Controller({
      store,
      provider: async () => provider,
      load: async () => ({ runs: desired.runs, diagnostics: [], invalidFiles: [] }),
      controller: 'e2e',
      repoRoot,
      prune: true,
      allowEmptyPrune: true,
    });
    cleanups.push(async () => {
      await controller.stop();
      for (const s of controller.runs) for (const i of s.instances) await provider.terminate(i.id);
      await store.close();
      fs.rmSync(root, { recursive: true, force: true });
    });
    const exp = () => controller.runs.find((s) => s.run === 'exp');

    // Model A trains until a checkpoint of it is in storage, then its file is removed: pruned.
    const first = controller.runUntilSettled();
    await until('model A has a checkpoint', () => exp()?.lastCheckpoint !== undefined);
    const old = exp()!;
    desired.runs = [];
    await controller.resync();
    await first;
    expect(await store.getStatus('exp')).toBeUndefined();
    // The deleted run's record stays in the archive under its uid.
    expect(fs.readdirSync(path.join(root, 'state', 'state', 'archive'))).toEqual([`exp-${old.uid}`]);
    const oldSandbox = old.instances[0]!.id;

    // A different spec under the same name.
    desired.runs = [job('B', 20)];
    const summary = await controller.runUntilSettled();
    const now = summary.statuses.find((s) => s.run === 'exp')!;
    expect(now.phase).toBe('Completed');
    expect(isUid(now.uid)).toBe(true);
    expect(now.uid).not.toBe(old.uid);
    expect([now.attempt, now.interruptions, now.errorRetries]).toEqual([1, 0, 0]);
    expect(now.instances.map((i) => i.id)).not.toContain(oldSandbox);
    expect(now.instances[0]!.id).toContain(now.uid.slice(0, 8));

    // `runctl logs exp` reads the new incarnation only: not resuming, nothing restored, no model A.
    const { reader } = await runLogs(store, { get: async () => provider, close: async () => {} }, 'exp');
    expect(reader.attempts).toEqual([1]);
    let text = '';
    let cursor: string | undefined;
    for (;;) {
      const chunk = await reader.read(1, cursor);
      if (chunk.text === '') break;
      text += chunk.text;
      cursor = chunk.cursor;
    }
    expect(text).toContain('start model=B resuming=0 attempt=1 restored=[]');
    expect(text).toContain('step=20/20 model=B');
    expect(text).not.toContain('model=A');

    // Its event log is its own and starts with its own creation.
    const events = await store.readEvents('exp');
    expect(events[0]).toMatchObject({ action: 'created', uid: now.uid });
    expect(events.every((e) => e.uid === now.uid)).toBe(true);
    expect(events.some((e) => e.result === 'adopted')).toBe(false);

    // Storage: each incarnation under its own prefix; model A's checkpoint never reached B's.
    const runs = path.join(root, 'local', 'storage', 'runs', 'exp');
    expect(fs.readdirSync(runs).sort()).toEqual([old.uid, now.uid].sort());
    const ckpts = path.join(runs, now.uid, 'g1', 'checkpoints');
    const newest = fs.readdirSync(ckpts).filter((d) => fs.existsSync(path.join(ckpts, d, 'MANIFEST.json'))).sort().at(-1)!;
    const manifest = JSON.parse(fs.readFileSync(path.join(ckpts, newest, 'MANIFEST.json'), 'utf8')) as { files: { path: string; sha256: string }[] };
    expect(manifest.files.map((f) => f.path)).toEqual(['weights-B.txt']);
    // Contents are stored once per run incarnation, by sha256, under the incarnation's own prefix.
    expect(fs.readdirSync(path.join(runs, now.uid, 'checkpoint-contents'))).toContain(manifest.files[0]!.sha256);
  }, 600_000);
});
