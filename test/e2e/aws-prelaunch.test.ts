// recovery.prelaunch on moto with the fleet simulator's timing model (issue 12, acceptance 2): EC2
// boot, SSM registration and the notice's lead, scaled. On a spot notice the controller launches
// the next attempt's instance at once, on another pool of the ladder; it is up (running and Online
// in SSM) before the interrupted instance's termination time, while the old job still saves; its
// job starts only once that final checkpoint is safe, and from it; no two jobs ever train at once.
// Real parts: the controller, the aws provider over the SDK, the agent with the AWS CLI, moto.
// Measured alone on a shared 2-core machine: 184 s and 213 s at a load average of 15-18 (AWS CLI
// calls of 5-8 s; 39-47 s of CPU in all); the ceiling is 600 s, as for aws-runs. The agents' heartbeat is 3 s: a phase change (the notice) is published at
// once whatever it is, and a 1 s beat made the agents' own AWS CLI calls the machine's load.
//
// The scale. The model's EC2 figures (timing.ts: boot 15 s, SSM registration 25 s, notice 120 s)
// are scaled; what runctl itself does in the notice is not: the agent seeing the notice and
// publishing it, then the job's final save, the final checkpoint sync and the final status, each
// storage call one AWS CLI process. On a loaded 2-core machine one such call takes 1-6 s (measured
// here: 5-6 s at a load average of 15), and about ten of them must fit in the scaled notice, less
// the agent's final-upload margin; the launch must come within (120 - 15 - 25) s x scale of the
// notice. At 1/20 (a 6 s notice) a loaded machine lost the instance before the agent had even
// published the notice. SCALE = 1/3 gives a 40 s notice and 27 s of launch margin. Only the race
// after the notice is modelled: attempt 1 boots at once, and the scaled figures are set just before
// the notice (fleet.setTiming), so the model costs the file one scaled boot (13 s). Nothing here
// waits for a time: the test waits for states, and the only timing assertions compare the
// simulator's own clock-derived fields.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logsPrefix } from '../../src/agent/layout.js';
import { Controller } from '../../src/reconciler/controller.js';
import { attemptKey } from '../../src/reconciler/reconcile.js';
import type { LoadedRun } from '../../src/spec/types.js';
import type { RunStatus } from '../../src/state/types.js';
import { awsSpec, CREDENTIALS, REGION, startRig, type AwsRig } from '../providers/aws/harness.js';
import { scaledTiming } from '../support/fleet/index.js';
import { MemoryStore } from '../support/memory-store.js';
import { testRun } from '../support/runs.js';

const repoRoot = path.resolve('.');
const SCALE = 1 / 3;
const RUN = 'aws-prelaunch';
// Attempt 1 publishes its step-20 checkpoint, then holds at step 25 (mid-interval) until the notice's
// SIGTERM, and saves step 25 then: the final checkpoint is one no periodic sync had published.
const HOLD_AT = 25;

let rig: AwsRig;
let s3: S3Client;
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-aws-prelaunch-'));

beforeAll(async () => {
  rig = await startRig();
  s3 = new S3Client({ region: REGION, endpoint: rig.motoUrl, forcePathStyle: true, credentials: CREDENTIALS });
});
afterAll(async () => {
  s3?.destroy();
  await rig?.release();
  fs.rmSync(tmp, { recursive: true, force: true });
});

function awsRun(release: string): LoadedRun {
  const spec = awsSpec(rig.bucket, {
    code: { path: './test/fixtures/prelaunch-job', exclude: [] },
    run: [`if [ "$RUNCTL_ATTEMPT" = 1 ]; then export HOLD_AT=${HOLD_AT}; fi`, 'exec python3 train.py'].join('\n'),
    env: { TOTAL_STEPS: '40', RELEASE_FILE: release },
    resources: { instanceTypes: ['g5.xlarge', 'g6.xlarge'], market: 'spot' },
    // The grace period is not what bounds the save: the notice's termination time is.
    checkpoints: { syncInterval: '1s', gracePeriod: '120s' },
    recovery: { maxInterruptions: 20, maxRetriesOnError: 1, seedFromPreviousGeneration: false, prelaunch: true },
  });
  const loaded = testRun(RUN);
  return { ...loaded, run: { ...loaded.run, spec } };
}

/** The job's log of one attempt, as the agent shipped it to storage. */
async function jobLog(uid: string, attempt: number): Promise<string> {
  const prefix = `runctl/${logsPrefix({ run: RUN, uid, generation: 1, attempt })}`;
  const listed = await s3.send(new ListObjectsV2Command({ Bucket: rig.bucket, Prefix: prefix }));
  const keys = (listed.Contents ?? []).map((o) => o.Key as string).sort();
  const parts = await Promise.all(keys.map(async (Key) => (await (await s3.send(new GetObjectCommand({ Bucket: rig.bucket, Key }))).Body?.transformToString()) ?? ''));
  return parts.join('');
}

describe('recovery.prelaunch on moto with the fleet timing model', () => {
  it("brings the replacement up before the interrupted instance's termination time, on another pool, and starts it from the final checkpoint", async () => {
    const release = path.join(tmp, 'release-the-save');
    const { provider } = rig.provider({ controller: 'prelaunch', agentTiming: { heartbeatSeconds: 3, noticePollSeconds: 0.5 } });
    const store = new MemoryStore();
    const loaded = awsRun(release);
    let onEffect: (action: string) => Promise<void> = async () => undefined;
    const controller = new Controller({
      store,
      provider: async () => provider,
      load: async () => ({ runs: [loaded], diagnostics: [], invalidFiles: [] }),
      controller: 'prelaunch',
      repoRoot,
      prune: false,
      onEvent: (e) => {
        if (e.kind === 'effect' && e.result === 'ok') void onEffect(e.action);
      },
    });
    const current = () => controller.runs.find((r) => r.run === RUN) as RunStatus | undefined;
    // The notice, once attempt 1 trains with its step-20 checkpoint published: it lands mid-run.
    let noticeAt: number | undefined;
    let oldId: string | undefined;
    const watcher = setInterval(() => {
      const s = current();
      const instance = s?.instances.find((i) => i.attempt === 1 && !i.endedAt);
      if (noticeAt !== undefined || s?.phase !== 'Training' || (s.lastCheckpoint?.step ?? 0) < 20 || !instance) return;
      rig.fleet.setTiming(scaledTiming(SCALE));
      noticeAt = Date.now();
      oldId = instance.id;
      void rig.fleet.deliverSpotNotice(instance.id);
    }, 50);
    // The old job's save on SIGTERM waits until the controller has launched the replacement (the
    // effect is recorded): the replacement is always launched while the old job is still saving,
    // however loaded the machine; whether its agent is started before the old job has stopped
    // (deployReplacement, gate closed) or after (the gate already open) is the race EC2 runs too.
    let whileSaving: { oldPhase?: string; live: number[] } | undefined;
    onEffect = async (action) => {
      if (action !== 'prelaunch' || whileSaving) return;
      whileSaving = { live: [] };
      const s = (await store.getStatus(RUN))!;
      whileSaving = { live: s.instances.filter((i) => !i.endedAt).map((i) => i.attempt).sort() };
      whileSaving.oldPhase = (await provider.readAgentStatus(attemptKey(s, 1, 1), loaded.run.spec))?.phase;
      fs.writeFileSync(release, 'go\n');
    };
    const summary = await controller.runUntilSettled();
    clearInterval(watcher);
    await controller.stop();

    const status = summary.statuses[0] as RunStatus;
    expect([status.phase, status.attempt, status.interruptions], JSON.stringify(status.failure)).toEqual(['Completed', 2, 1]);
    expect(whileSaving, 'the replacement was never launched during the notice').toBeDefined();

    // The modelled race, on the simulator's own clock: launched at (or after) the notice, on
    // another pool of the ladder, and Online in SSM before the termination time IMDS announced.
    const old = rig.fleet.instances.get(oldId!)!;
    const replacement = rig.fleet.instances.get(status.instances.find((i) => i.attempt === 2)!.id)!;
    const terminationTime = Date.parse(old.spotAction!.time);
    expect(replacement.launchedAt.getTime()).toBeGreaterThanOrEqual(noticeAt!);
    expect(replacement.onlineAt.getTime()).toBeLessThan(terminationTime);
    expect(replacement.type).not.toBe(old.type);
    // Its agent was started as it booted (user data), besides the SSM deploy once it was Online
    // (test/providers/aws/launch.test.ts shows that start comes before registration).
    expect(replacement.invocations.find((i) => i.commandId === 'cloud-init')?.status).toBe('Success');

    const events = await store.readEvents(RUN);
    const effects = events.filter((e) => e.kind === 'effect').map((e) => `${e.action}:${e.result}`);
    const at = (name: string) => effects.indexOf(name);
    expect(at('prelaunch:ok')).toBeGreaterThan(-1);
    expect(events.find((e) => e.kind === 'effect' && e.action === 'prelaunch')?.message).toContain('its agent starting at boot');
    expect(at('openStartGate:ok')).toBeGreaterThan(at('prelaunch:ok'));
    // An agent started during the notice was started with its gate closed, before the gate opened.
    if (at('deployReplacement:ok') !== -1) expect(at('deployReplacement:ok')).toBeLessThan(at('openStartGate:ok'));
    // The replacement was launched while the old job was still saving, both instances live.
    expect(whileSaving!.oldPhase).toBe('interrupting');
    expect(whileSaving!.live).toEqual([1, 2]);

    // The gate opened only after the final checkpoint was recorded safe; the job resumed from it.
    const finalSync = events.find((e) => e.action === 'final checkpoint');
    expect(finalSync?.data?.safe).toBe(true);
    expect(events.indexOf(finalSync!)).toBeLessThan(events.findIndex((e) => e.kind === 'effect' && e.action === 'openStartGate'));
    expect(status.agent?.restoredFrom?.id).toBe(finalSync?.data?.checkpoint);
    const [log1, log2] = [await jobLog(status.uid, 1), await jobLog(status.uid, 2)];
    expect(log1).toContain(`saved step=${HOLD_AT} on SIGTERM`);
    const started = [...log2.matchAll(/started attempt=2 at=([\d.]+) resumed_step=(\d+)/g)];
    expect(started).toHaveLength(1);
    expect(Number(started[0]![2])).toBe(HOLD_AT);
    // Never two jobs training at once: attempt 2's job started after attempt 1's had stopped.
    const stopped = /stopped attempt=1 at=([\d.]+)/.exec(log1);
    expect(stopped, 'attempt 1 never reported stopping').not.toBeNull();
    expect(Number(started[0]![1])).toBeGreaterThanOrEqual(Number(stopped![1]));
    expect(log2).toContain('done at step 40');

    // Nothing outlives the run: every instance terminated, none left live in EC2.
    expect([...rig.fleet.instances.values()].map((i) => i.state)).toEqual(['terminated', 'terminated']);
    expect(await rig.fleet.liveInMoto(RUN)).toEqual([]);
    expect(status.instances.every((i) => i.endedAt)).toBe(true);
  }, 600_000);
});
