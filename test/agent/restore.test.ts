// Restoring before the job starts: the newest verified checkpoint, falling back past a corrupt
// one, or the seed generation's when this generation has none yet.
import { readFileSync, writeFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { controlKey } from '../../src/agent/layout.js';
import { type Sandbox, TEST_JOB, useAgentSandbox, waitFor } from './support.js';

const { imds, sandbox } = useAgentSandbox();
let box: Sandbox;

describe('agent restore', () => {
  it('attempt 2 restores the latest checkpoint of attempt 1 and the job resumes from it', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    const first = { run: 'resume', generation: 1, attempt: 1 };
    const config1 = box.config(first, bundle, imds.url, { env: { STEPS: '100000', DELAY: '0.05' } });
    const agent = await box.start(config1);
    await waitFor('progress', () => (box.status(first)?.progress?.step ?? 0) >= 4);
    await mkdir(path.dirname(path.join(box.storageDir, controlKey(first))), { recursive: true });
    await writeFile(path.join(box.storageDir, controlKey(first)), JSON.stringify({ action: 'stop', reason: 'suspend' }));
    await agent.exited;
    const newest = box.checkpoints('resume', 1).at(-1)!;
    const savedStep = Number(readFileSync(box.checkpointFile(newest, 'step'), 'utf8'));
    expect(savedStep).toBe(Math.max(...box.steps(first)));

    const second = { run: 'resume', generation: 1, attempt: 2 };
    const status = await box.run(box.config(second, bundle, imds.url, { env: { STEPS: String(savedStep + 3), DELAY: '0.01' } }));

    expect(status.phase).toBe('succeeded');
    expect(status.restoredFrom).toEqual({ id: newest.id });
    expect(box.logs(second)).toContain('resuming=1 run=resume generation=1 attempt=2');
    expect(box.steps(second)).toEqual([savedStep + 1, savedStep + 2, savedStep + 3]);
    expect(Number(box.checkpoints('resume', 1).at(-1)!.id)).toBeGreaterThan(Number(newest.id));
  });

  it('falls back to the previous checkpoint when the newest fails verification, and says so', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    await box.publishCheckpoint('fallback', 1, '00000001', { step: '4\n', 'nested/extra.bin': 'abc' }, 4);
    await box.publishCheckpoint('fallback', 1, '00000002', { step: '8\n', 'nested/extra.bin': 'abc' }, 8);
    // Same size, different bytes: only the sha256 can tell.
    writeFileSync(path.join(box.checkpoints('fallback', 1)[1]!.dir, 'step'), '9\n');

    const key = { run: 'fallback', generation: 1, attempt: 2 };
    const config = box.config(key, bundle, imds.url, { env: { STEPS: '6', DELAY: '0.01' } });
    const status = await box.run(config);

    expect(status.restoredFrom).toEqual({ id: '00000001', fallbackFrom: '00000002', reason: 'file step fails its sha256 check' });
    expect(box.steps(key)).toEqual([5, 6]);
    expect(readFileSync(path.join(config.checkpointDir, 'nested/extra.bin'), 'utf8')).toBe('abc');
    expect(box.logs(key)).toContain('restored checkpoint 00000001 of generation 1 (newest 00000002 failed verification: file step fails its sha256 check)');
  });

  it('starts from scratch, saying why, when no checkpoint passes verification', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    await box.publishCheckpoint('allbad', 1, '00000001', { step: '4\n' }, 4);
    writeFileSync(path.join(box.checkpoints('allbad', 1)[0]!.dir, 'step'), '4\n\n'); // size differs

    const key = { run: 'allbad', generation: 1, attempt: 2 };
    const status = await box.run(box.config(key, bundle, imds.url, { env: { STEPS: '2', DELAY: '0.01' } }));

    expect(status.phase).toBe('succeeded');
    expect(status.restoredFrom).toBeUndefined();
    expect(status.message).toBe('no checkpoint of generation 1 passed verification (newest 00000001: file step has 3 bytes, manifest says 2); starting from scratch');
    expect(box.logs(key)).toContain('resuming=0');
    expect(box.steps(key)).toEqual([1, 2]);
  });

  it('restores from the seed generation when the new generation has no checkpoint yet', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    await box.publishCheckpoint('seeded', 1, '00000003', { step: '7\n' }, 7);

    const key = { run: 'seeded', generation: 2, attempt: 1 };
    const status = await box.run(box.config(key, bundle, imds.url, { resuming: true, seedGeneration: 1, env: { STEPS: '9', DELAY: '0.01' } }));

    expect(status.restoredFrom).toEqual({ id: '00000003', generation: 1 });
    expect(box.steps(key)).toEqual([8, 9]);
    const own = box.checkpoints('seeded', 2);
    expect(own.at(-1)!.manifest.files.map((f) => f.path)).toEqual(['step']);
    expect(readFileSync(box.checkpointFile(own.at(-1)!, 'step'), 'utf8')).toBe('9\n');
  });

  it('does not look for checkpoints when not resuming (a recreated run must not inherit old ones)', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    await box.publishCheckpoint('fresh', 1, '00000001', { step: '5\n' }, 5);

    const key = { run: 'fresh', generation: 1, attempt: 1 };
    const status = await box.run(box.config(key, bundle, imds.url, { resuming: false, env: { STEPS: '2', DELAY: '0.01' } }));

    expect(status.restoredFrom).toBeUndefined();
    expect(box.steps(key)).toEqual([1, 2]);
    expect(box.checkpoints('fresh', 1).at(-1)!.id).toBe('00000002');
  });
});
