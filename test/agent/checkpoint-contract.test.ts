// The checkpoint contract (issue 9, docs/checkpoints.md) with the real agent and jobs of the shapes
// real frameworks produce (test/fixtures/ckpt-jobs/): which files a sync publishes, when, with
// which step, and whom the notice signal reaches.
import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { checkpointsPrefix, contentsPrefix } from '../../src/agent/layout.js';
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

  // Break test 15: the first declared sync left model.bin and state.json out (saved again 5 ms
  // after the marker), and every later declared checkpoint held only the marker, or an older
  // save's files, under its step.
  it('saves overtaken 5 ms after each declaration never give their step to a checkpoint without their files', async () => {
    box = await sandbox();
    const bundle = await bundleJobs('overtaking_saver.py');
    const key = { run: 'overtaken', generation: 1, attempt: 1 };
    const status = await box.run(
      box.config(key, bundle, imds.url, { command: 'python3 overtaking_saver.py', env: { MODE: 'marker', GAP_MS: '5', ROUNDS: '5' }, syncIntervalSeconds: 3600, keep: 100 }),
    );
    expect(status.phase).toBe('succeeded');
    const held = (c: ReturnType<Sandbox['checkpoints']>[number], name: string) =>
      c.manifest.files.some((f) => f.path === name) ? readFileSync(box.checkpointFile(c, name), 'latin1').slice(0, 8) : 'absent';
    const published = box.checkpoints('overtaken', 1);
    const labelled = published.filter((c) => c.manifest.step !== undefined);
    expect(labelled.map((c) => [c.manifest.step, held(c, 'model.bin'), held(c, 'state.json')])).toEqual(
      labelled.map((c) => [c.manifest.step, String(c.manifest.step).padStart(8, '0'), String(c.manifest.step).padStart(8, '0')]),
    );
    // The job's last save (10) was never declared: the final checkpoint holds it, step unknown.
    const last = published[published.length - 1]!;
    expect([last.manifest.step, held(last, 'model.bin'), held(last, 'state.json')]).toEqual([undefined, '00000010', '00000010']);
  }, 120_000);

  // Break test 16: `cp -p` (like rsync -a, shutil.copy2, tar x) writes the file and then sets
  // the source's old mtime, so the copy looked older than the last declaration and the final
  // checkpoint took step 3 while holding step 1's model.
  it('a best model copied back with cp -p after the last declaration is published with its step unknown', async () => {
    box = await sandbox();
    const bundle = await box.bundle({
      'train.sh': [
        'd="$RUNCTL_CHECKPOINT_DIR"; mkdir -p best',
        'for k in 1 2 3; do',
        '  printf "%08d" "$k" > "$d/model.bin"',
        '  [ "$k" = 1 ] && cp -p "$d/model.bin" best/model.bin',
        '  echo "RUNCTL_CHECKPOINT_SAVED step=$k"; sleep 0.4',
        'done',
        'cp -p best/model.bin "$d/model.bin"  # load the best model (step 1) and exit 0',
      ].join('\n'),
    });
    const key = { run: 'best-at-end', generation: 1, attempt: 1 };
    const status = await box.run(box.config(key, bundle, imds.url, { command: 'bash train.sh', syncIntervalSeconds: 3600, keep: 100 }));
    expect(status.phase).toBe('succeeded');
    const held = box.checkpoints('best-at-end', 1).map((c) => [c.manifest.step, readFileSync(box.checkpointFile(c, 'model.bin'), 'latin1')]);
    const labelled = held.filter(([step]) => step !== undefined);
    expect(labelled.length).toBeGreaterThan(0);
    expect(labelled).toEqual(labelled.map(([step]) => [step, String(step).padStart(8, '0')]));
    expect(held[held.length - 1]).toEqual([undefined, '00000001']);
    expect(status.lastCheckpoint?.step).toBeUndefined();
  }, 120_000);

  // Break test 20 (F4): ModelCheckpoint(monitor="val_loss", save_top_k=1, save_last=True) keeps
  // the best model as epoch=0-step=100.ckpt; later, worse validation losses write no top-k file
  // but last.ckpt (a copy, save_last=True) is rewritten at steps 200 and 300. Every checkpoint was
  // labelled step 100 (the highest step=N name) while a ckpt_path="last" resume continues from 300.
  it('Lightning best model kept, last.ckpt copied at later steps: the step is the one last.ckpt holds, else unknown', async () => {
    box = await sandbox();
    const bundle = await box.bundle({
      'train.py': [
        'import os, time',
        'd = os.environ["RUNCTL_CHECKPOINT_DIR"]',
        'def save(name, step):',
        '    with open(os.path.join(d, name), "wb") as f: f.write((b"STEP%08d" % step) * (1 << 17))',
        'save("epoch=0-step=100.ckpt", 100); save("last.ckpt", 100); print("step=100", flush=True); time.sleep(1)',
        'for step in (200, 300):',
        '    save("last.ckpt", step); print("step=%d" % step, flush=True); time.sleep(1)',
      ].join('\n'),
    });
    const key = { run: 'lightning-best', generation: 1, attempt: 1 };
    const status = await box.run(box.config(key, bundle, imds.url, { command: 'python3 train.py', syncIntervalSeconds: 0.3, keep: 100 }));
    expect(status.phase).toBe('succeeded');
    const rows = box.checkpoints('lightning-best', 1).map((c) => {
      const sha = (name: string) => c.manifest.files.find((f) => f.path === name)?.sha256;
      const held = readFileSync(box.checkpointFile(c, 'last.ckpt'), 'latin1').slice(0, 12);
      return { step: c.manifest.step, source: c.manifest.stepSource, held, matchesStepFile: sha('last.ckpt') === sha('epoch=0-step=100.ckpt') };
    });
    // The job's last save (last.ckpt at step 300) is published, by the final sync at the latest.
    expect(rows[rows.length - 1]).toEqual({ step: undefined, source: undefined, held: 'STEP00000300', matchesStepFile: false });
    for (const row of rows) {
      if (row.matchesStepFile) expect(row).toEqual({ step: 100, source: 'lightning', held: 'STEP00000100', matchesStepFile: true });
      else expect(row).toMatchObject({ step: undefined, source: undefined });
    }
    expect(status.lastCheckpoint?.step).toBeUndefined();
  }, 120_000);
});

describe('a declared save is stored while the job writes it', () => {
  it('each shard is stored as the job closes it, and the declaration publishes it without reading it again', async () => {
    box = await sandbox();
    const contents = path.join(box.storageDir, contentsPrefix('staged'));
    const bundle = await box.bundle({
      'train.py': [
        'import hashlib, json, os, time',
        'd, contents = os.environ["RUNCTL_CHECKPOINT_DIR"], os.environ["CONTENTS_DIR"]',
        'def shard(path, byte):',
        '    data = bytes([byte]) * (3 << 20)',
        '    with open(path, "wb") as f:',
        '        f.write(data)',
        '    return hashlib.sha256(data).hexdigest()',
        'def stored(sha):  # waits for the state, not for a time',
        '    for _ in range(1200):',
        '        if os.path.exists(os.path.join(contents, sha)):',
        '            return True',
        '        time.sleep(0.05)',
        '    return False',
        // The first save declares: from then on the agent stores saves as they are written.
        'open(os.path.join(d, "config.json"), "w").write("{}")',
        'print("RUNCTL_CHECKPOINT_SAVED step=0", flush=True)',
        'for step in (10, 20):',
        '    ck = os.path.join(d, "checkpoint-%d" % step)',
        '    os.makedirs(ck)',
        '    first = shard(os.path.join(ck, "model-00001-of-00002.safetensors"), step)',
        '    print("step %d shard 1 stored before the save was declared: %s" % (step, stored(first)), flush=True)',
        '    shard(os.path.join(ck, "model-00002-of-00002.safetensors"), step + 1)',
        '    json.dump({"global_step": step}, open(os.path.join(ck, "trainer_state.json"), "w"))',
        '    print("RUNCTL_CHECKPOINT_SAVED step=%d" % step, flush=True)',
      ].join('\n'),
    });
    const key = { run: 'staged', generation: 1, attempt: 1 };
    // The periodic sync is an hour away: only the staging and the declared syncs store anything.
    const config = box.config(key, bundle, imds.url, { command: 'python3 train.py', env: { CONTENTS_DIR: contents }, syncIntervalSeconds: 3600 });
    const agent = await box.start(config);
    for (const step of [10, 20]) {
      const c = await waitFor(`the declared save of step ${step}`, () => box.checkpoints('staged', 1).find((x) => x.manifest.step === step), 90_000);
      // The shard stored ahead counts as uploaded by this checkpoint; earlier saves are reused.
      expect(c.manifest.sync).toMatchObject({ filesUploaded: 3, bytesUploaded: 2 * (3 << 20) + Buffer.byteLength(`{"global_step": ${step}}`) });
      for (const [n, byte] of [[1, step], [2, step + 1]] as const) {
        // Buffer.equals: a deep toEqual of 3 MiB takes the better part of a minute.
        expect(readFileSync(box.checkpointFile(c, `checkpoint-${step}/model-0000${n}-of-00002.safetensors`)).equals(Buffer.alloc(3 << 20, byte))).toBe(true);
      }
    }
    expect((await agent.exited).code).toBe(0);
    expect(box.logs(key)).toContain('step 10 shard 1 stored before the save was declared: True');
    expect(box.logs(key)).toContain('step 20 shard 1 stored before the save was declared: True');
    const log = box.agentLog(config);
    expect(log).toMatch(/stored 1 file of a save in progress ahead of its declaration \(3145728 bytes, 3145728 uploaded\)/);
    // Each shard is stored once: a declared sync reuses the one stored ahead without reading it.
    const published = [...log.matchAll(/published checkpoint \d+ \([^)]*storage writes by this agent so far: (\d+) bytes/g)].map((m) => Number(m[1]));
    const shardBytes = 4 * (3 << 20);
    expect(published.at(-1)).toBeGreaterThanOrEqual(shardBytes);
    expect(published.at(-1)).toBeLessThan(shardBytes + 64 * 1024);
  }, 180_000);
});

// Break test 17: a write shorter than the time between two looks at the job's open files is
// never seen open; when the job's end cuts it short, the prefix must not become the newest
// checkpoint.
describe("a save the job's end cuts short", () => {
  const FIRST_SAVE = [
    'import os, subprocess, sys, time',
    'd = os.environ["RUNCTL_CHECKPOINT_DIR"]',
    'with open(os.path.join(d, "model.bin"), "wb") as f:',
    '    f.write(b"%08d" % 1 * (512 * 1024))  # 4 MiB, step 1',
    'while not os.path.exists(os.environ["HOLD_FILE"]): time.sleep(0.02)',
  ];
  async function runUntilCut(run: string, rest: string[]) {
    box = await sandbox();
    const hold = path.join(box.root, 'hold');
    const bundle = await box.bundle({ 'train.py': [...FIRST_SAVE, ...rest].join('\n') });
    const key = { run, generation: 1, attempt: 1 };
    const agent = await box.start(box.config(key, bundle, imds.url, { command: 'python3 train.py', env: { HOLD_FILE: hold }, syncIntervalSeconds: 0.3 }));
    await waitFor('step 1 published', () => box.checkpoints(run, 1).length === 1, 60_000);
    await writeFile(hold, '');
    expect((await agent.exited).code).toBe(0);
    const published = box.checkpoints(run, 1);
    const newest = published[published.length - 1]!;
    return { status: box.status(key)!, newest: readFileSync(box.checkpointFile(newest, 'model.bin')) };
  }

  it('a crash 20 ms into rewriting the checkpoint leaves the previous one the newest', async () => {
    const { status, newest } = await runUntilCut('crash-mid-save', [
      'f = open(os.path.join(d, "model.bin"), "wb")',
      'f.write(b"%08d" % 2 * (128 * 1024)); f.flush()  # 1 MiB of 4',
      'time.sleep(0.02)',
      'raise RuntimeError("CUDA error: an illegal memory access was encountered")',
    ]);
    expect(status.phase).toBe('failed');
    expect([newest.length, newest.subarray(0, 8).toString()]).toEqual([4 << 20, '00000001']);
  }, 120_000);

  it('a child still rewriting the checkpoint when the job exits 0 is not trusted', async () => {
    const { status, newest } = await runUntilCut('orphan-writer', [
      'child = "import os, sys, time\\nf = open(sys.argv[1], \'wb\')\\nfor i in range(16):\\n    f.write(b\'%08d\' % 2 * 32768); f.flush(); time.sleep(0.1)\\n"',
      'subprocess.Popen([sys.executable, "-c", child, os.path.join(d, "model.bin")])',
      'time.sleep(0.3)',
    ]);
    expect(status.phase).toBe('succeeded');
    expect([newest.length, newest.subarray(0, 8).toString()]).toEqual([4 << 20, '00000001']);
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
    // timeout moves itself and the trainer into a process group of their own, and passes a signal
    // to that whole group, workers included: the trainer is signalled past it (break test 21).
    ['timeout', 'timeout 1h python3 dataloader_trainer.py'],
    ['a script running timeout', 'echo "starting the trainer"\ntimeout 1h python3 dataloader_trainer.py\necho "trainer exited $?"'],
    // These die of the signal without passing it on (script hangs its command up): looked through
    // (break test 22).
    ['/usr/bin/time', '/usr/bin/time -p python3 dataloader_trainer.py'],
    ['flock', 'flock train.lock python3 dataloader_trainer.py'],
    ['xargs', 'echo dataloader_trainer.py | xargs python3'],
    ['script', 'script -qec "python3 dataloader_trainer.py" /dev/null'],
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

  // brk20 F3: a script that traps the signal is signalled (its trap runs) and looked through into
  // its foreground command; bash runs the trap only once that command exits, so a trainer not
  // signalled itself never heard of the notice and was SIGKILLed without saving. A command the
  // script started in the background (`&`) is left to the trap, which forwards the signal.
  const trapScripts: Array<[string, string, RegExp, string[]]> = [
    [
      'trap cleanup EXIT INT TERM, the trainer in the foreground',
      'tmp=$(mktemp -d)\ncleanup() { rm -rf "$tmp"; echo "cleaned up"; }\ntrap cleanup EXIT INT TERM\necho "starting the trainer"\npython3 dataloader_trainer.py\necho "trainer exited $?"\n',
      /sent SIGTERM to the job's main processes \d+, \d+ \(/,
      ['cleaned up', 'trainer exited 0'],
    ],
    [
      'a trap that forwards the signal to the trainer in the background',
      'trap \'kill -TERM "$pid"; wait "$pid"; echo "forwarded"\' TERM\npython3 dataloader_trainer.py &\npid=$!\nwait "$pid"\necho "trainer exited $?"\n',
      // `wait` interrupted by the trap returns 128+15 (bash), after the trap's own wait.
      /sent SIGTERM to the job's main process \d+ \(/,
      ['forwarded', 'trainer exited 143'],
    ],
  ];
  for (const [shape, script, sent, trapRan] of trapScripts) {
    it(`signalScope main (${shape}): the trainer saves, the final checkpoint is safe, the trap runs`, async () => {
      box = await sandbox();
      const bundle = await box.bundle({ 'dataloader_trainer.py': job('dataloader_trainer.py'), 'job.sh': script });
      const key = { run: 'trapper', generation: 1, attempt: 1 };
      const config = box.config(key, bundle, imds.url, { command: 'bash job.sh', syncIntervalSeconds: 3600, gracePeriodSeconds: 20 });
      const agent = await box.start(config);
      await waitFor('training', () => (box.status(key)?.progress?.step ?? 0) >= 3, 60_000);
      imds.notice = { action: 'terminate', time: new Date(Date.now() + 120_000).toISOString().replace(/\.\d+Z$/, 'Z') };
      expect((await agent.exited).code).toBe(0);
      imds.notice = undefined;
      const status = box.status(key)!;
      const logs = box.logs(key);
      expect(logs).not.toContain('exited unexpectedly');
      const saves = [...logs.matchAll(/RUNCTL_CHECKPOINT_SAVED step=(\d+)/g)].map((m) => Number(m[1]));
      expect(saves).toHaveLength(1);
      expect(status.lastCheckpoint).toMatchObject({ step: saves[0], stepSource: 'line' });
      expect(status.finalSync).toMatchObject({ safe: true, checkpoint: status.lastCheckpoint?.id });
      for (const line of trapRan) expect(logs).toContain(line);
      expect(box.agentLog(config)).toMatch(sent);
    }, 120_000);
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
