// Content-addressed checkpoint storage through the real agent (issue 9, input 4 and "the restored
// folder is the tree the job left"): a Hugging Face Trainer-shaped job keeping its newest two
// checkpoint-<step>/ folders; each sync after a new folder uploads only that folder's new
// contents (manifest counts and the bytes in storage say so); retention keeps the newest `keep`
// manifests and the contents they name; attempt 2 restores the tree byte for byte, with modes,
// empty folders and inner links, while a link leading out is refused with a visible warning.
// Then a checkpoint in the layout written before content addressing still restores.
import { existsSync, lstatSync, mkdirSync, readFileSync, readdirSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { contentsPrefix } from '../../src/agent/layout.js';
import { type Sandbox, TEST_JOB, useAgentSandbox, waitFor, type PublishedCheckpoint } from './support.js';

const { imds, sandbox } = useAgentSandbox();
let box: Sandbox;

// The Trainer's save, in Python as the Trainer writes it (one process): shards, tokenizer (same
// bytes every time), a script, trainer_state.json last; then it points `latest` at the new folder,
// deletes the folder beyond its newest two (save_total_limit=2) and says the save is complete (no
// step: the layout gives it). It waits for the test before the next save, so each save is one sync
// (syncInterval is long).
const JOB = String.raw`
import json, os, shutil, sys, time
ck = os.environ["RUNCTL_CHECKPOINT_DIR"]
ctl = os.environ["CTL"]
if os.environ.get("RUNCTL_RESUMING") == "1":
    print("resumed with " + " ".join(sorted(os.listdir(ck))), flush=True)
    sys.exit(0)
os.makedirs(os.path.join(ck, "runs", "empty"))
os.makedirs(os.path.join(ck, "a", "b"))
with open(os.path.join(ck, "a", "b", "notes.txt"), "w") as f:
    f.write("secret-ish\n")
os.chmod(os.path.join(ck, "a", "b", "notes.txt"), 0o600)
os.symlink("b/notes.txt", os.path.join(ck, "a", "readme"))
os.symlink("/etc/hostname", os.path.join(ck, "escape"))
for step in (10, 20, 30):
    d = os.path.join(ck, "checkpoint-%d" % step)
    os.makedirs(d)
    for i in (1, 2, 3, 4):
        with open(os.path.join(d, "model-%05d-of-00004.safetensors" % i), "wb") as f:
            f.write(os.urandom(16384 * i))
    with open(os.path.join(d, "tokenizer.json"), "w") as f:
        f.write('{"vocab": ["a", "b", "c"]}\n')
    with open(os.path.join(d, "run.sh"), "w") as f:
        f.write("#!/bin/sh\necho resume\n")
    os.chmod(os.path.join(d, "run.sh"), 0o755)
    with open(os.path.join(d, "trainer_state.json"), "w") as f:
        json.dump({"global_step": step}, f)
    tmp = os.path.join(ck, "latest.tmp")
    os.symlink("checkpoint-%d" % step, tmp)
    os.replace(tmp, os.path.join(ck, "latest"))
    if step - 20 > 0:
        shutil.rmtree(os.path.join(ck, "checkpoint-%d" % (step - 20)))
    print("RUNCTL_CHECKPOINT_SAVED", flush=True)
    while not os.path.exists(os.path.join(ctl, "go-%d" % step)):
        time.sleep(0.05)
`;

const SHARD_BYTES = 16384 * (1 + 2 + 3 + 4);

function published(run: string, step: number): PublishedCheckpoint | false {
  const c = box.checkpoints(run, 1).at(-1);
  return c !== undefined && c.manifest.files.some((f) => f.path === `checkpoint-${step}/trainer_state.json`) && c;
}

describe('content-addressed checkpoints through the agent', () => {
  it('uploads only a new checkpoint folder, keeps the newest manifests and their contents, restores the tree', { timeout: 400_000 }, async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.py': JOB });
    const ctl = path.join(box.root, 'ctl');
    mkdirSync(ctl);
    const key = { run: 'hf', generation: 1, attempt: 1 };
    const config = box.config(key, bundle, imds.url, { command: 'python3 job.py', env: { CTL: ctl }, keep: 2, syncIntervalSeconds: 600, contentGraceSeconds: 0 });
    const agent = await box.start(config);
    const contentsDir = path.join(box.storageDir, contentsPrefix('hf'));
    const stored = () => readdirSync(contentsDir).filter((n) => /^[0-9a-f]{64}$/.test(n));
    const storedBytes = () => stored().reduce((n, sha) => n + statSync(path.join(contentsDir, sha)).size, 0);

    const saves: PublishedCheckpoint[] = [];
    let uploadedSoFar = 0;
    for (const step of [10, 20, 30]) {
      const c = await waitFor(`the checkpoint holding checkpoint-${step}/`, () => published('hf', step), 120_000);
      saves.push(c);
      expect(c.manifest).toMatchObject({ format: 2, step, stepSource: 'huggingface' });
      const folder = c.manifest.files.filter((f) => f.path.startsWith(`checkpoint-${step}/`));
      const stateBytes = folder.find((f) => f.path.endsWith('trainer_state.json'))!.size;
      const total = c.manifest.files.reduce((n, f) => n + f.size, 0);
      if (step === 10) {
        // Everything is new: the folder and the two files outside it.
        expect(c.manifest.sync).toMatchObject({ filesUploaded: 8, filesReused: 0 });
      } else {
        // Only the new folder's new contents: 4 shards and trainer_state.json. Its tokenizer and
        // script have the bytes of the previous folder's, and the other kept folder is unchanged.
        expect(c.manifest.sync).toEqual({ filesUploaded: 5, filesReused: c.manifest.files.length - 5, bytesUploaded: SHARD_BYTES + stateBytes, bytesReused: total - SHARD_BYTES - stateBytes });
      }
      uploadedSoFar += c.manifest.sync!.bytesUploaded;
      // Every content was written to storage once: the store holds exactly what the syncs uploaded
      // (until retention collects what no kept checkpoint names, after the third save).
      if (step < 30) expect(storedBytes()).toBe(uploadedSoFar);
      writeFileSync(path.join(ctl, `go-${step}`), '');
    }
    await agent.exited;
    const last = saves[2]!;
    // The job kept two folders; the checkpoint holds exactly those.
    expect([...new Set(last.manifest.files.map((f) => f.path.split('/')[0]))].sort()).toEqual(['a', 'checkpoint-20', 'checkpoint-30']);

    // keep: 2 — the oldest manifest is retired, and the contents only it named are collected:
    // what is stored is exactly what the kept manifests name.
    const kept = box.checkpoints('hf', 1);
    expect(kept.map((c) => c.id)).toEqual([saves[1]!.id, saves[2]!.id]);
    const named = new Set(kept.flatMap((c) => c.manifest.files.map((f) => f.sha256)));
    expect(stored().sort()).toEqual([...named].sort());
    const status = box.status(key)!;
    expect(status.checkpoints?.map((c) => [c.id, c.step, c.uploaded, c.reused])).toEqual(
      kept.map((c) => [c.id, c.manifest.step, c.manifest.sync!.filesUploaded, c.manifest.sync!.filesReused]),
    );

    // The link leading out was never published, and the refusal is visible: agent log, the job's
    // log (what `runctl logs` shows) and a fault in the status.
    expect(last.manifest.files.map((f) => f.path)).not.toContain('escape');
    expect(last.manifest.symlinks).toEqual([
      { path: 'a/readme', target: 'b/notes.txt' },
      { path: 'latest', target: 'checkpoint-30' },
    ]);
    expect(box.agentLog(config)).toContain('refused symbolic link escape -> /etc/hostname leads outside the checkpoint folder');
    expect(box.logs(key)).toContain('warning: symbolic link escape -> /etc/hostname leads outside the checkpoint folder; it is left out of every checkpoint');
    expect(status.faults?.find((f) => f.reason === 'CheckpointEntryRefused')).toMatchObject({ file: 'escape' });

    // Attempt 2 restores it: the same tree, byte for byte, modes, empty folders and links included.
    const key2 = { run: 'hf', generation: 1, attempt: 2 };
    const config2 = box.config(key2, bundle, imds.url, { command: 'python3 job.py', env: { CTL: ctl }, keep: 2, syncIntervalSeconds: 600, contentGraceSeconds: 0 });
    const status2 = await box.run(config2);
    expect(status2).toMatchObject({ phase: 'succeeded', restoredFrom: { id: last.id } });
    const ck = config2.checkpointDir;
    for (const f of last.manifest.files) {
      expect(readFileSync(path.join(ck, f.path)).equals(readFileSync(box.checkpointFile(last, f.path))), f.path).toBe(true);
      expect(statSync(path.join(ck, f.path)).mode & 0o7777, f.path).toBe(f.mode);
    }
    expect(statSync(path.join(ck, 'checkpoint-30/run.sh')).mode & 0o777).toBe(0o755);
    expect(statSync(path.join(ck, 'a/b/notes.txt')).mode & 0o777).toBe(0o600);
    for (const d of last.manifest.dirs!) expect(statSync(path.join(ck, d.path)).mode & 0o7777, d.path).toBe(d.mode);
    expect(readdirSync(path.join(ck, 'runs/empty'))).toEqual([]);
    expect(lstatSync(path.join(ck, 'latest')).isSymbolicLink()).toBe(true);
    expect(readlinkSync(path.join(ck, 'latest'))).toBe('checkpoint-30');
    expect(readFileSync(path.join(ck, 'a/readme'), 'utf8')).toBe('secret-ish\n');
    expect(existsSync(path.join(ck, 'checkpoint-10'))).toBe(false);
    expect(existsSync(path.join(ck, 'escape'))).toBe(false);
    expect(box.logs(key2)).toContain('resumed with a checkpoint-20 checkpoint-30 latest runs');
    // Nothing changed in attempt 2, so nothing new was published.
    expect(box.checkpoints('hf', 1).at(-1)!.id).toBe(last.id);
  });

  it('restores a checkpoint written in the layout before content addressing, then publishes the new one', { timeout: 60_000 }, async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    // Format 1: the files beside MANIFEST.json in <id>/, no `format` field.
    await box.publishCheckpoint('legacy', 1, '00000001', { step: '3\n', 'nested/extra.bin': 'abc' }, 3);
    const key = { run: 'legacy', generation: 1, attempt: 2 };
    const config = box.config(key, bundle, imds.url, { env: { STEPS: '5', DELAY: '0.01' }, keep: 10 });
    const status = await box.run(config);

    expect(status).toMatchObject({ phase: 'succeeded', restoredFrom: { id: '00000001' } });
    expect(box.steps(key)).toEqual([4, 5]);
    expect(box.agentLog(config)).toContain('restored checkpoint g1/00000001 (2 files, written in the layout before content-addressed storage)');
    const all = box.checkpoints('legacy', 1);
    const [old, now] = [all[0], all.at(-1)];
    expect(old!.id).toBe('00000001');
    expect(old!.manifest.format).toBeUndefined();
    expect(now!.manifest.format).toBe(2);
    expect(now!.manifest.files.map((f) => f.path)).toEqual(['nested/extra.bin', 'step']);
    expect(readFileSync(box.checkpointFile(now!, 'step'), 'utf8')).toBe('5\n');
    // The old checkpoint's files are not in the content store: the first new checkpoint stores them.
    expect(readFileSync(box.checkpointFile(now!, 'nested/extra.bin'), 'utf8')).toBe('abc');
  });
});
