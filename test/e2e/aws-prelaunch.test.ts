// recovery.prelaunch on moto with the fleet simulator's timing model (issue 12, acceptance 2): EC2
// boot, SSM registration and the notice's lead, scaled. On a spot notice the controller launches
// the next attempt's instance at once, on another pool of the ladder; it is up (running and Online
// in SSM) before the interrupted instance's termination time, while the old job still saves; its
// job starts only once that final checkpoint is safe, and from it; no two jobs ever train at once.
// Real parts: the controller, the aws provider over the SDK, the agent with the AWS CLI, moto.
//
// The kill matrix with prelaunch on (acceptance 2), on the real aws path: the controller runs as a
// chain of processes (test/support/aws-crash-harness.ts), each SIGKILLed at the first effect
// boundary no earlier one was killed at, before or after the effect, and the next started over
// from the file store, while the fleet's instances and agents live on as EC2's do; the last finds
// no boundary left and runs the run to its end. So the one run is killed once at both boundaries
// of every effect it goes through (launch, deploy, prelaunch, the replacement's deploy, the gate,
// terminate, the adopting launch, …), and must still launch one instance per attempt, lose no
// checkpoint, miss or double no event, and leave nothing running. (Every kill point as a run of
// its own is the memory-provider matrix in test/reconciler/crash.test.ts: here a run costs
// minutes.) The agents' heartbeat is 3 s: a phase change (the notice) is published at once
// whatever it is, and a 1 s beat made the agents' own AWS CLI calls the machine's load.
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
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { logsPrefix } from '../../src/agent/layout.js';
import { attemptKey } from '../../src/reconciler/reconcile.js';
import { FileStore } from '../../src/state/file-store.js';
import type { LoadedRun } from '../../src/spec/types.js';
import type { RunStatus } from '../../src/state/types.js';
import { awsSpec, CREDENTIALS, REGION, startRig, type AwsRig } from '../providers/aws/harness.js';
import { scaledTiming } from '../support/fleet/index.js';
import type { AwsCrashConfig } from '../support/aws-crash-harness.js';
import { harnessCommand } from '../support/harness-bundle.js';
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

const HARNESS = harnessCommand('aws-crash-harness');

/** One controller process of the chain: killed at its first new effect boundary, or (noKill) run to the end. */
function controllerProcess(configFile: string, noKill = false): Promise<{ status: number | null; signal: NodeJS.Signals | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...HARNESS, configFile, ...(noKill ? ['--no-kill'] : [])], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true' },
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.on('close', (status, signal) => resolve({ status, signal, stderr }));
  });
}

describe('recovery.prelaunch on moto with the fleet timing model', () => {
  it("brings the replacement up before the interrupted instance's termination time, on another pool, and starts it from the final checkpoint, with the controller SIGKILLed at every effect boundary", async () => {
    const release = path.join(tmp, 'release-the-save');
    const dir = path.join(tmp, 'controller');
    fs.mkdirSync(dir, { recursive: true });
    const controllerName = 'prelaunch-chain';
    const loaded = awsRun(release);
    const config: AwsCrashConfig = {
      dir,
      fleetEndpoint: rig.fleet.endpoint,
      region: REGION,
      controller: controllerName,
      run: loaded,
      repoRoot,
      agentTiming: { heartbeatSeconds: 3, noticePollSeconds: 0.5 },
    };
    const configFile = path.join(dir, 'config.json');
    fs.writeFileSync(configFile, JSON.stringify(config));
    const store = new FileStore(path.join(dir, '.runctl'), { readOnly: true });
    const { provider } = rig.provider({ controller: controllerName });

    // The test's own eyes, beside whichever controller process is alive: the notice once attempt 1
    // trains with its step-20 checkpoint published (it lands mid-run), and the old job's save on
    // SIGTERM released only once the replacement's launch is recorded: the replacement is always
    // launched while the old job is still saving, however loaded the machine (and however many
    // controllers were killed meanwhile); whether its agent is deployed before the old job has
    // stopped (deployReplacement, gate closed) or after (the gate already open) is the race EC2 runs too.
    let noticeAt: number | undefined;
    let oldId: string | undefined;
    let whileSaving: { oldPhase?: string; live: number[] } | undefined;
    let looking = false;
    const watcher = setInterval(() => {
      if (looking) return;
      looking = true;
      void (async () => {
        const s = await store.getStatus(RUN).catch(() => undefined);
        if (!s) return;
        const instance = s.instances.find((i) => i.attempt === 1 && !i.endedAt);
        if (noticeAt === undefined && s.phase === 'Training' && s.attempt === 1 && (s.lastCheckpoint?.step ?? 0) >= 20 && instance) {
          rig.fleet.setTiming(scaledTiming(SCALE));
          noticeAt = Date.now();
          oldId = instance.id;
          await rig.fleet.deliverSpotNotice(instance.id);
        }
        if (noticeAt !== undefined && !whileSaving) {
          const events = await store.readEvents(RUN);
          if (events.some((e) => e.kind === 'effect' && e.action === 'prelaunch' && (e.result === 'ok' || e.result === 'adopted'))) {
            whileSaving = {
              live: s.instances.filter((i) => !i.endedAt).map((i) => i.attempt).sort(),
              oldPhase: (await provider.readAgentStatus(attemptKey(s, 1, 1), loaded.run.spec))?.phase,
            };
            fs.writeFileSync(release, 'go\n');
          }
        }
      })().finally(() => (looking = false));
    }, 100);

    // The chain: each controller process is SIGKILLed at the first effect boundary no earlier one
    // was killed at, and the next starts over from the store; the one that finds none left runs
    // the run to its end. A bound on the chain catches a boundary that keeps moving.
    const kills: string[] = [];
    try {
      for (;;) {
        const r = await controllerProcess(configFile);
        if (r.signal === 'SIGKILL') {
          kills.push(/killing at (\S+)/.exec(r.stderr)?.[1] ?? '?');
          expect(kills.length, 'the chain of kills does not end').toBeLessThan(60);
          continue;
        }
        expect(r.status, r.stderr).toBe(0);
        break;
      }
    } finally {
      clearInterval(watcher);
    }

    console.log(`aws kill chain: the controller was SIGKILLed ${kills.length} times`);
    const status = (await store.getStatus(RUN)) as RunStatus;
    expect([status.phase, status.attempt, status.interruptions], JSON.stringify(status.failure)).toEqual(['Completed', 2, 1]);
    expect(whileSaving, 'the replacement was never launched during the notice').toBeDefined();

    // Killed at both boundaries of every effect the run went through, the notice's included.
    const events = await store.readEvents(RUN);
    const effectIds = [...new Set(events.filter((e) => e.kind === 'effect').map((e) => e.id))];
    for (const id of effectIds) for (const side of ['before', 'after']) expect(kills, `never killed at ${side}-effect:${id}`).toContain(`${side}-effect:${id}`);
    const effects = events.filter((e) => e.kind === 'effect').map((e) => `${e.action}:${e.result}`);
    for (const needed of ['prelaunch', 'openStartGate', 'terminate']) expect(effects.some((e) => e.startsWith(`${needed}:`)), needed).toBe(true);

    // One instance per attempt, however many controllers died: both in EC2, no other.
    expect(rig.fleet.instances.size).toBe(2);
    expect(new Set(status.instances.map((i) => i.id)).size).toBe(2);
    expect(status.instances.map((i) => i.attempt).sort()).toEqual([1, 2]);

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

    // An agent started during the notice was started with its gate closed, before the gate opened.
    const at = (name: string) => effects.indexOf(name);
    expect(at('openStartGate:ok')).toBeGreaterThan(effects.findIndex((e) => e.startsWith('prelaunch:')));
    if (at('deployReplacement:ok') !== -1) expect(at('deployReplacement:ok')).toBeLessThan(at('openStartGate:ok'));
    // The replacement was launched while the old job was still saving, both instances live.
    expect(whileSaving!.oldPhase).toBe('interrupting');
    expect(whileSaving!.live).toEqual([1, 2]);

    // No event missing, none doubled: one unbroken chain of transitions, contiguous sequence numbers.
    const transitions = events.filter((e) => e.kind === 'transition');
    expect(transitions.map((e) => e.seq)).toEqual(transitions.map((_, i) => i + 2));
    expect(new Set(events.map((e) => e.id)).size).toBe(events.length);

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
  }, 900_000);
});
