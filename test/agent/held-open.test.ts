// A file the job keeps open for writing across two declarations (a sqlite metrics database, a model
// kept open "r+b") is not a save in progress: it no longer holds declared saves back, and is read as
// it is, like a closed file (docs/checkpoints.md, "A busy file does not"; break tests 20 F5, 22 F5).
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT, type Sandbox, useAgentSandbox } from './support.js';

const JOBS = path.join(REPO_ROOT, 'test', 'fixtures', 'ckpt-jobs');
const { imds, sandbox } = useAgentSandbox();
let box: Sandbox;

/** The step a self-checking model.bin holds, or `torn`. */
function held(file: string): string {
  const buf = readFileSync(file);
  const body = buf.subarray(0, buf.length - 32);
  return buf.length > 44 && createHash('sha256').update(body).digest().equals(buf.subarray(buf.length - 32)) ? `step ${Number(body.subarray(4, 12).toString())}` : 'torn';
}

describe('a sqlite metrics database kept open in the checkpoint folder', () => {
  for (const every of ['0.3', '30']) {
    it(`a row every ${every} s: declared saves after the second are published with their step, each holding its model`, async () => {
      box = await sandbox();
      const bundle = await box.bundle({ 'train.py': readFileSync(path.join(JOBS, 'sqlite_metrics_saver.py'), 'utf8') });
      const key = { run: 'sqlite', generation: 1, attempt: 1 };
      const status = await box.run(box.config(key, bundle, imds.url, { command: 'python3 train.py', env: { EVERY: every }, syncIntervalSeconds: 3600, keep: 100 }));
      expect(status.phase).toBe('succeeded');
      const published = box.checkpoints('sqlite', 1).filter((c) => c.manifest.step !== undefined);
      // Each labelled checkpoint holds the model of its step: never another save's.
      for (const c of published) expect(held(box.checkpointFile(c, 'model.bin')), `checkpoint ${c.id}`).toBe(`step ${c.manifest.step}`);
      // Steps 2 and 3 can only come from syncs while the job ran (the final sync publishes step 4);
      // before the fix every declared save was held back by the open database until the job ended.
      expect([2, 3, 4].filter((k) => !published.some((c) => c.manifest.step === k))).toEqual([]);
    }, 120_000);
  }
});

describe('a model file kept open "r+b" for the whole run and rewritten before each declaration', () => {
  it('declared saves are published while the job runs, each holding the model of its step', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'train.py': readFileSync(path.join(JOBS, 'open_model_saver.py'), 'utf8') });
    const key = { run: 'open-model', generation: 1, attempt: 1 };
    const status = await box.run(box.config(key, bundle, imds.url, { command: 'python3 train.py', syncIntervalSeconds: 3600, keep: 100 }));
    expect(status.phase).toBe('succeeded');
    const published = box.checkpoints('open-model', 1).filter((c) => c.manifest.step !== undefined);
    // Never a declared step without its model (break test 22 published steps 3-6 with state.json alone).
    for (const c of published) expect(held(box.checkpointFile(c, 'model.bin')), `checkpoint ${c.id}`).toBe(`step ${c.manifest.step}`);
    // Steps 3 to 5 can only come from syncs while the job ran: the final sync publishes step 6.
    expect([3, 4, 5].filter((k) => !published.some((c) => c.manifest.step === k))).toEqual([]);
  }, 120_000);
});

