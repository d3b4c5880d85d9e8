// The aws provider end to end, through the controller: moto is EC2, SSM and S3; the fleet simulator
// brings moto's instances alive (runs the SSM commands with the real agent and the real AWS CLI
// against moto's S3, serves IMDSv2). The tiny trainer trains on them, is interrupted, resumes.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Controller } from '../../src/reconciler/controller.js';
import type { LoadedRun } from '../../src/spec/types.js';
import type { RunStatus } from '../../src/state/types.js';
import { awsSpec, CREDENTIALS, REGION, startRig, type AwsRig } from '../providers/aws/harness.js';
import { MemoryStore } from '../support/memory-store.js';
import { testRun } from '../support/runs.js';

const repoRoot = path.resolve('.');
const STEPS = 120;
const EVERY = 10;
const HELD_AT = 40;
// Attempt 1 trains to step HELD_AT, checkpoints, then waits (as the main process, so the notice's
// SIGTERM reaches it) until it is interrupted: the disruption always lands mid-run, however
// loaded the machine. Later attempts resume and train to STEPS.
const TRAIN = [
  'if [ "$RUNCTL_ATTEMPT" = 1 ]; then',
  `  .venv/bin/python train.py --steps ${HELD_AT} --checkpoint-every ${EVERY} --step-delay 0.05 && exec sleep 86400`,
  'fi',
  `exec .venv/bin/python train.py --steps ${STEPS} --checkpoint-every ${EVERY} --step-delay 0.05`,
].join('\n');

let rig: AwsRig;
let s3: S3Client;

beforeAll(async () => {
  rig = await startRig({ bootDelayMs: 300 });
  s3 = new S3Client({ region: REGION, endpoint: rig.motoUrl, forcePathStyle: true, credentials: CREDENTIALS });
});
afterAll(async () => {
  s3?.destroy();
  await rig?.release();
});

function awsRun(name: string): LoadedRun {
  const spec = awsSpec(rig.bucket, {
    code: { path: './examples/tiny-trainer', exclude: ['.venv/**', 'checkpoints/**', 'wheelhouse/**'] },
    setup: 'bash setup.sh',
    run: TRAIN,
    checkpoints: { syncInterval: '2s', gracePeriod: '20s' },
  });
  const loaded = testRun(name);
  return { ...loaded, run: { ...loaded.run, spec } };
}

async function text(key: string): Promise<string> {
  const out = await s3.send(new GetObjectCommand({ Bucket: rig.bucket, Key: key }));
  return (await out.Body?.transformToString()) ?? '';
}

async function finalWeights(run: string, uid: string): Promise<string> {
  const prefix = `runctl/runs/${run}/${uid}/g1/checkpoints/`;
  const listed = await s3.send(new ListObjectsV2Command({ Bucket: rig.bucket, Prefix: prefix }));
  const manifests = (listed.Contents ?? []).map((o) => o.Key as string).filter((k) => k.endsWith('/MANIFEST.json')).sort();
  const manifest = JSON.parse(await text(manifests.at(-1) as string)) as { files: { path: string; sha256: string }[] };
  const entry = manifest.files.find((f) => f.path === 'final-weights.json');
  // Contents are stored once per run, by sha256 (docs/checkpoints.md, "How checkpoints are stored").
  return text(`runctl/runs/${run}/${uid}/checkpoint-contents/${entry?.sha256 ?? 'missing'}`);
}

/** The same trainer run locally, uninterrupted, straight through: the weights everyone must match. */
function referenceWeights(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-ref-'));
  const r = spawnSync('python3', ['train.py', '--steps', String(STEPS), '--checkpoint-every', String(EVERY), '--step-delay', '0'], {
    cwd: path.join(repoRoot, 'examples/tiny-trainer'),
    env: { ...process.env, RUNCTL_CHECKPOINT_DIR: dir, PYTHONPATH: 'vendor/tinymath' },
    encoding: 'utf8',
  });
  expect(r.status, r.stderr).toBe(0);
  return fs.readFileSync(path.join(dir, 'final-weights.json'), 'utf8');
}

describe('aws provider through the controller, on moto with the fleet simulator', () => {
  it('trains to Completed; a spot notice and an out-of-band termination each resume on attempt 2 with identical weights', async () => {
    const { provider, recorder } = rig.provider({ controller: 'e2e', agentTiming: { heartbeatSeconds: 2, noticePollSeconds: 1 } });
    const store = new MemoryStore();
    const runs = [awsRun('aws-spot'), awsRun('aws-gone')];
    const controller = new Controller({
      store,
      provider: async () => provider,
      load: async () => ({ runs, diagnostics: [], invalidFiles: [] }),
      controller: 'e2e',
      repoRoot,
      prune: false,
    });
    const disrupted = new Set<string>();
    const byName = (run: string) => controller.runs.find((s) => s.run === run) as RunStatus | undefined;
    const watcher = setInterval(() => {
      for (const [run, how] of [
        ['aws-spot', 'spot'],
        ['aws-gone', 'out-of-band'],
      ] as const) {
        const s = byName(run);
        if (!s || disrupted.has(run) || s.phase !== 'Training') continue;
        const instance = s.instances.find((i) => i.attempt === 1 && !i.endedAt);
        if (!instance) continue;
        disrupted.add(run);
        void (how === 'spot' ? rig.fleet.deliverSpotNotice(instance.id) : rig.fleet.terminateOutOfBand(instance.id));
      }
    }, 100);
    const summary = await controller.runUntilSettled();
    clearInterval(watcher);
    await controller.stop();

    expect(summary.statuses.map((s) => [s.run, s.phase, s.attempt, s.interruptions])).toEqual([
      ['aws-gone', 'Completed', 2, 1],
      ['aws-spot', 'Completed', 2, 1],
    ]);
    const reference = referenceWeights();
    expect(await finalWeights('aws-spot', byName('aws-spot')!.uid)).toBe(reference);
    expect(await finalWeights('aws-gone', byName('aws-gone')!.uid)).toBe(reference);

    // The spot interruption was recognised as one; the out-of-band termination as what it was.
    const events = async (run: string) => (await store.readEvents(run)).map((e) => `${e.action} ${e.message ?? ''}`);
    expect((await events('aws-spot')).some((e) => e.startsWith('Training -> Interrupted') && /Spot|interrupt/i.test(e))).toBe(true);
    expect((await events('aws-gone')).some((e) => e.startsWith('Training -> Interrupted') && /outside runctl/.test(e))).toBe(true);

    // Every attempt recorded the content-addressed bundle it was given; the same code is one object.
    const bundles = new Set(summary.statuses.flatMap((s) => s.instances.map((i) => i.codeBundle)));
    expect(bundles.size).toBe(1);
    const [bundle] = [...bundles];
    expect(bundle).toMatch(/^[0-9a-f]{64}$/);
    const stored = await s3.send(new ListObjectsV2Command({ Bucket: rig.bucket, Prefix: 'runctl/bundles/' }));
    expect((stored.Contents ?? []).map((o) => o.Key)).toEqual([`runctl/bundles/${bundle}.tar.gz`]);

    // One instance per attempt, every one launched safely (checked on the wire), none left running.
    expect(recorder.count('ec2', 'RunInstances')).toBe(4);
    expect(recorder.launchesChecked).toBe(4);
    expect([...rig.fleet.instances.values()].every((i) => i.state === 'terminated')).toBe(true);
  }, 600_000);

  it('a run deleted and re-created under its name launches its own instance with a new launch token, and never adopts the old one', async () => {
    const { provider, recorder } = rig.provider({ controller: 'e2e-again', agentTiming: { heartbeatSeconds: 2, noticePollSeconds: 1 } });
    const store = new MemoryStore();
    const desired = { runs: [awsRun('aws-again')] };
    const controller = new Controller({
      store,
      provider: async () => provider,
      load: async () => ({ runs: desired.runs, diagnostics: [], invalidFiles: [] }),
      controller: 'e2e-again',
      repoRoot,
      prune: true,
      allowEmptyPrune: true,
    });
    const status = () => controller.runs.find((s) => s.run === 'aws-again');
    // A run that fails instead says why at once, rather than when the test times out.
    const until = async (cond: () => boolean) => {
      while (!cond()) {
        const s = status();
        if (s?.phase === 'Failed') throw new Error(`aws-again failed: ${s.failure?.message ?? JSON.stringify(s.conditions)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    };
    recorder.reset();
    const first = controller.runUntilSettled();
    await until(() => status()?.phase === 'Training');
    const old = status()!;
    desired.runs = [];
    await controller.resync();
    await first;
    expect(await store.getStatus('aws-again')).toBeUndefined();

    const again = awsRun('aws-again');
    desired.runs = [{ ...again, specHash: `${again.specHash}-b`, run: { ...again.run, spec: { ...again.run.spec, env: { MODEL: 'b' } } } }];
    const abort = new AbortController();
    const second = controller.runUntilSettled(abort.signal);
    await until(() => status() !== undefined && status()!.uid !== old.uid && ['Syncing', 'Installing', 'Training'].includes(status()!.phase));
    abort.abort();
    await second;
    await controller.stop();
    const now = status()!;
    for (const i of now.instances) await provider.terminate(i.id);

    expect(now.uid).not.toBe(old.uid);
    expect([now.attempt, now.interruptions]).toEqual([1, 0]);
    const launches = recorder.calls.filter((c) => c.service === 'ec2' && c.operation === 'RunInstances').map((c) => c.input as { ClientToken: string; TagSpecifications: { Tags: { Key: string; Value: string }[] }[] });
    expect(launches).toHaveLength(2);
    expect(launches[1]!.ClientToken).not.toBe(launches[0]!.ClientToken);
    const uidTag = (l: (typeof launches)[number]) => l.TagSpecifications[0]!.Tags.find((t) => t.Key === 'runctl:uid')?.Value;
    expect(launches.map(uidTag)).toEqual([old.uid, now.uid]);
    const oldIds = old.instances.map((i) => i.id);
    expect(now.instances).toHaveLength(1);
    expect(oldIds).not.toContain(now.instances[0]!.id);
    const mine = (await store.readEvents('aws-again')).filter((e) => e.uid === now.uid);
    expect(mine[0]).toMatchObject({ action: 'created' });
    expect(mine.some((e) => e.result === 'adopted')).toBe(false);
  }, 600_000);
});
