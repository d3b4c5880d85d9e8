// The checkpoint contract (issue 9, docs/checkpoints.md) with the real agent and jobs of the shapes
// real frameworks produce (test/fixtures/ckpt-jobs/): which files a sync publishes, when, with
// which step, and whom the notice signal reaches.
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkpointsPrefix } from '../../src/agent/layout.js';
import type { AgentStatus } from '../../src/providers/types.js';
import { REPO_ROOT, type Sandbox, useAgentSandbox, waitFor } from './support.js';

const JOBS = path.join(REPO_ROOT, 'test', 'fixtures', 'ckpt-jobs');
const job = (name: string) => readFileSync(path.join(JOBS, name), 'utf8');

const { imds, sandbox } = useAgentSandbox();
let box: Sandbox;

async function bundleJobs(...names: string[]): Promise<string> {
  return box.bundle(Object.fromEntries(names.map((n) => [n, job(n)])));
}

const fault = (s: AgentStatus | undefined, reason: string) => s?.faults?.find((f) => f.reason === reason);

describe('the step a checkpoint holds', () => {
  it('Hugging Face layout: checkpoint-10/ is step 10 even when progress says 19', async () => {
    box = await sandbox();
    const bundle = await bundleJobs('hf_trainer.py');
    const key = { run: 'hf-step', generation: 1, attempt: 1 };
    const status = await box.run(
      box.config(key, bundle, imds.url, { command: 'python3 hf_trainer.py', env: { LAST_STEP: '10', PAUSE: '0.5', TAIL_SLEEP: '1' }, syncIntervalSeconds: 0.5 }),
    );
    expect(status.phase).toBe('succeeded');
    expect(status.progress?.step).toBe(19);
    expect(status.lastCheckpoint).toMatchObject({ step: 10, stepSource: 'huggingface' });
    const published = box.checkpoints('hf-step', 1);
    expect(published.length).toBeGreaterThanOrEqual(1);
    for (const c of published) {
      expect(c.manifest.step).toBe(10);
      expect(c.manifest.files.map((f) => f.path)).toContain('checkpoint-10/trainer_state.json');
    }
  }, 120_000);

  it('a file rewritten in place with no marker: the step is unknown, not the progress', async () => {
    box = await sandbox();
    const bundle = await box.bundle({
      'train.py': 'import os\nfor s in range(1, 6):\n    print("step=%d/5" % s, flush=True)\nopen(os.path.join(os.environ["RUNCTL_CHECKPOINT_DIR"], "ckpt.pt"), "wb").write(b"w" * 100)\nprint("step=6/6", flush=True)\n',
    });
    const key = { run: 'no-step', generation: 1, attempt: 1 };
    const status = await box.run(box.config(key, bundle, imds.url, { command: 'python3 train.py' }));
    expect(status.phase).toBe('succeeded');
    expect(status.progress?.step).toBe(6);
    expect(status.lastCheckpoint?.id).toBeDefined();
    expect(status.lastCheckpoint?.step).toBeUndefined();
    for (const c of box.checkpoints('no-step', 1)) expect(c.manifest.step).toBeUndefined();
  }, 120_000);

  it('a declared save (line, then marker file) is published at once with the declared step', async () => {
    box = await sandbox();
    const hold = path.join(box.root, 'hold');
    const bundle = await box.bundle({
      'train.py': [
        'import os, time',
        'd = os.environ["RUNCTL_CHECKPOINT_DIR"]',
        'open(os.path.join(d, "model.bin"), "wb").write(b"seven")',
        'print("RUNCTL_CHECKPOINT_SAVED step=7", flush=True)',
        'print("step=12", flush=True)',
        'while not os.path.exists(os.environ["HOLD_FILE"] + ".1"): time.sleep(0.05)',
        'open(os.path.join(d, "model.bin"), "wb").write(b"nine")',
        'open(os.path.join(d, ".runctl-saved.tmp"), "w").write("step=9\\n")',
        'os.replace(os.path.join(d, ".runctl-saved.tmp"), os.path.join(d, ".runctl-saved"))',
        'print("step=15", flush=True)',
        'while not os.path.exists(os.environ["HOLD_FILE"] + ".2"): time.sleep(0.05)',
      ].join('\n'),
    });
    const key = { run: 'declared', generation: 1, attempt: 1 };
    // The periodic sync is an hour away: only sync on save can publish while the job runs.
    const config = box.config(key, bundle, imds.url, { command: 'python3 train.py', env: { HOLD_FILE: hold }, syncIntervalSeconds: 3600 });
    const agent = await box.start(config);
    const first = await waitFor('the declared save of step 7', () => box.checkpoints('declared', 1).find((c) => c.manifest.step === 7), 60_000);
    expect(first.manifest).toMatchObject({ step: 7, stepSource: 'line' });
    expect(readFileSync(box.checkpointFile(first, 'model.bin'), 'utf8')).toBe('seven');
    await writeFile(`${hold}.1`, '');
    const second = await waitFor('the declared save of step 9', () => box.checkpoints('declared', 1).find((c) => c.manifest.step === 9), 60_000);
    expect(second.manifest).toMatchObject({ step: 9, stepSource: 'marker' });
    expect(readFileSync(box.checkpointFile(second, 'model.bin'), 'utf8')).toBe('nine');
    await waitFor('status showing step 9', () => box.status(key)?.lastCheckpoint?.step === 9);
    expect(box.status(key)?.progress?.step).toBe(15);
    await writeFile(`${hold}.2`, '');
    expect((await agent.exited).code).toBe(0);
  }, 120_000);
});

describe('a busy file beside the checkpoint', () => {
  it('a metrics file appended every few ms is left out and named; the atomically replaced checkpoint keeps being published', async () => {
    box = await sandbox();
    const hold = path.join(box.root, 'hold');
    const bundle = await bundleJobs('busy_metrics.py');
    const key = { run: 'busy', generation: 1, attempt: 1 };
    const published = path.join(box.storageDir, checkpointsPrefix('busy', 1));
    const config = box.config(key, bundle, imds.url, {
      command: 'python3 busy_metrics.py',
      env: { PUBLISHED_DIR: published, HOLD_FILE: hold, SAVES: '3' },
      syncIntervalSeconds: 0.5,
      keep: 50,
    });
    const agent = await box.start(config);
    // The job waits after each save until a manifest holds it: three saves = three checkpoints.
    await waitFor('all three saves published', () => /step=3\n/.test(box.logs(key)) && box.checkpoints('busy', 1).length >= 3, 90_000);
    const busy = await waitFor('CheckpointFileBusy naming metrics.jsonl', () => fault(box.status(key), 'CheckpointFileBusy'), 60_000);
    expect(busy.file).toBe('metrics.jsonl');
    expect(busy.message).toMatch(/metrics\.jsonl .*left out/);
    const whileRunning = box.checkpoints('busy', 1);
    for (const c of whileRunning) expect(c.manifest.files.map((f) => f.path)).toEqual(['model.pt']);
    await writeFile(hold, '');
    expect((await agent.exited).code).toBe(0);
    const final = box.status(key)!;
    expect(final.phase).toBe('succeeded');
    // Closed at the job's end: the last checkpoint takes it, and the fault is gone.
    expect(box.checkpoints('busy', 1).at(-1)?.manifest.files.map((f) => f.path)).toEqual(['metrics.jsonl', 'model.pt']);
    expect(fault(final, 'CheckpointFileBusy')).toBeUndefined();
    expect(box.logs(key)).not.toContain('never published');
  }, 180_000);
});

describe('the notice signal and data-loader workers', () => {
  const shapes: Array<[string, string]> = [
    ['a direct command', 'python3 dataloader_trainer.py'],
    ['a multi-line shell script', 'cd .\necho "starting the trainer"\npython3 dataloader_trainer.py\necho "trainer exited $?"'],
    ['a torchrun-style launcher', 'python3 launcher.py dataloader_trainer.py'],
    // tee must keep running while the trainer saves (it dies on SIGTERM, then the trainer's next print fails).
    ['a pipeline into tee', 'python3 dataloader_trainer.py 2>&1 | tee train.log'],
  ];
  for (const [shape, command] of shapes) {
    it(`signalScope main (${shape}): workers keep running, the trainer saves, the next attempt resumes from that save`, async () => {
      box = await sandbox();
      const bundle = await bundleJobs('dataloader_trainer.py', 'launcher.py');
      const key = { run: 'workers', generation: 1, attempt: 1 };
      const config = box.config(key, bundle, imds.url, { command, syncIntervalSeconds: 3600, gracePeriodSeconds: 20 });
      const agent = await box.start(config);
      await waitFor('training', () => (box.status(key)?.progress?.step ?? 0) >= 3, 60_000);
      imds.notice = { action: 'terminate', time: new Date(Date.now() + 120_000).toISOString().replace(/\.\d+Z$/, 'Z') };
      expect((await agent.exited).code).toBe(0);
      imds.notice = undefined;
      const first = box.status(key)!;
      expect(first.phase).toBe('interrupted');
      expect(box.logs(key)).not.toContain('exited unexpectedly');
      const saved = Number(/RUNCTL_CHECKPOINT_SAVED step=(\d+)/.exec(box.logs(key))?.[1]);
      expect(saved).toBeGreaterThanOrEqual(3);
      expect(first.lastCheckpoint).toMatchObject({ step: saved, stepSource: 'line' });
      expect(first.finalSync).toMatchObject({ safe: true, checkpoint: first.lastCheckpoint?.id });
      expect(first.finalSync?.safeSecondsBeforeTermination).toBeGreaterThan(0);
      expect(box.agentLog(config)).toMatch(/sent SIGTERM to the job's main process \d+/);

      const key2 = { ...key, attempt: 2 };
      const second = await box.run(box.config(key2, bundle, imds.url, { command, resuming: true }));
      expect(second.phase).toBe('succeeded');
      expect(second.restoredFrom?.id).toBe(first.lastCheckpoint?.id);
      expect(box.logs(key2)).toContain(`resumed at step ${saved}`);
    }, 180_000);
  }

  it('signalScope group: the workers die with the trainer, which crashes instead of saving (the old behaviour)', async () => {
    box = await sandbox();
    const bundle = await bundleJobs('dataloader_trainer.py');
    const key = { run: 'group', generation: 1, attempt: 1 };
    const config = box.config(key, bundle, imds.url, { command: 'python3 dataloader_trainer.py', signalScope: 'group', syncIntervalSeconds: 3600 });
    const agent = await box.start(config);
    await waitFor('training', () => (box.status(key)?.progress?.step ?? 0) >= 3, 60_000);
    imds.notice = { action: 'terminate', time: new Date(Date.now() + 120_000).toISOString().replace(/\.\d+Z$/, 'Z') };
    expect((await agent.exited).code).toBe(0);
    const status = box.status(key)!;
    expect(status.phase).toBe('interrupted');
    expect(status.exitCode).toBe(1);
    expect(box.logs(key)).toMatch(/DataLoader worker \(pid \d+\) exited unexpectedly/);
    expect(box.logs(key)).not.toContain('RUNCTL_CHECKPOINT_SAVED');
    expect(box.checkpoints('group', 1)).toEqual([]);
    expect(status.finalSync).toMatchObject({ safe: false });
    expect(box.agentLog(config)).toMatch(/sent SIGTERM to the job's process group \d+/);
  }, 120_000);
});
