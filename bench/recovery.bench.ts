// What an interruption costs, three ways (issue 12, acceptance 3): the time from the spot notice to
// the job training again, and each leg of it, for
//   sequential          recovery.prelaunch: false, setup run again on the new instance (no cache)
//   setup cache         recovery.prelaunch: false, spec.setup.cache (setup restored, not re-run)
//   cache + prelaunch   spec.setup.cache, recovery.prelaunch on (the spot default): the replacement
//                       is launched and set up during the notice
// on (a) the local quickstart (runs/quickstart.yaml, as `npm start` runs it) and (b) the aws provider
// on moto + the fleet simulator with its EC2 timing model scaled down (test/support/fleet/timing.ts),
// the figures scaled back to real time. Every moment comes from the run's own records: the ledger
// (src/reconciler/ledger.ts: notice, final checkpoint, launch, ready, training again), the event log,
// the new attempt's agent notes in its job log (`phase …` lines: code synced, setup, gate, restore),
// and, on the fleet, the instance's simulated `running` time. Writes its section of docs/BENCHMARKS.md.
// Environment: BENCH_SCALE (default 0.5), BENCH_ONLY=local|aws, BENCH_CONFIGS=sequential,cache,prelaunch (a subset: printed, not written).
import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { Controller } from '../src/reconciler/controller.js';
import type { RunLedger } from '../src/reconciler/ledger.js';
import type { LoadedRun, RunSpec } from '../src/spec/types.js';
import type { RunEvent, RunStatus } from '../src/state/types.js';
import { awsSpec, CREDENTIALS, REGION, startRig, type AwsRig } from '../test/providers/aws/harness.js';
import { EC2_TIMING, scaledTiming } from '../test/support/fleet/index.js';
import { MemoryStore } from '../test/support/memory-store.js';
import { testRun } from '../test/support/runs.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DOC = path.join(ROOT, 'docs/BENCHMARKS.md');
const SCALE = Number(process.env.BENCH_SCALE ?? 0.5);
const ONLY = process.env.BENCH_ONLY;

/**
 * The modelled setup on EC2: `pip install` of a CUDA PyTorch stack (torch, torchvision and their
 * nvidia-* wheels) into a fresh virtualenv. Estimates, not documented figures: the wheels are about
 * 2.5 GB to download and several GB installed, which takes 2-4 minutes on a GPU instance; we take
 * 180 s and a 1 GiB virtualenv to archive (a low figure: the bigger it is, the more the cache's
 * restore costs, and it still replaces the whole install).
 */
const SETUP_SECONDS = 180;
const VENV_BYTES = 1024 ** 3;

type ConfigId = 'sequential' | 'cache' | 'prelaunch';
const ALL_CONFIGS: ReadonlyArray<{ id: ConfigId; title: string }> = [
  { id: 'sequential', title: 'sequential (prelaunch off, setup re-run)' },
  { id: 'cache', title: 'setup cache (prelaunch off)' },
  { id: 'prelaunch', title: 'setup cache + prelaunch' },
];
/** BENCH_CONFIGS=prelaunch,cache measures only those columns and prints them, leaving docs/BENCHMARKS.md as it is. */
const PICKED = process.env.BENCH_CONFIGS?.split(',').map((s) => s.trim());
const CONFIGS = PICKED ? ALL_CONFIGS.filter((c) => PICKED.includes(c.id)) : ALL_CONFIGS;

interface Leg {
  name: string;
  /** Seconds after the notice. */
  from: number;
  to: number;
}

interface Measured {
  config: ConfigId;
  legs: Leg[];
  /** The ledger's notice to training again (the new attempt's job started, on its agent's clock). */
  recoverySeconds?: number;
  stepsRedone?: number;
  /** How setup went on the new attempt, from the ledger (restored from the cache, rebuilt, ran). */
  setup?: string;
  error?: string;
  /** Seconds the whole run took (both attempts). */
  wall: number;
}

interface Note {
  at: number;
  text: string;
}

/** `[runctl-agent] <ISO time> <note>` lines of an attempt's shipped job log segments, in order. */
function agentNotes(segments: string[]): Note[] {
  const notes: Note[] = [];
  for (const text of segments) {
    for (const line of text.split('\n')) {
      const m = /^\[runctl-agent\] (\S+) (.*)$/.exec(line);
      if (m) notes.push({ at: Date.parse(m[1]!), text: m[2]! });
    }
  }
  return notes.sort((a, b) => a.at - b.at);
}

/** Each agent phase of the attempt with when it began and when the next began. */
function phases(notes: Note[]): Array<{ phase: string; from: number; to?: number }> {
  const marks = notes.filter((n) => n.text.startsWith('phase ')).map((n) => ({ phase: n.text.slice(6).trim(), at: n.at }));
  return marks.map((m, i) => ({ phase: m.phase, from: m.at, ...(marks[i + 1] ? { to: marks[i + 1]!.at } : {}) }));
}

/**
 * The legs of the run's first interruption, in seconds after the notice: each leg from when it
 * began to when it ended, so legs that overlap (a prelaunched replacement boots while the old job
 * saves) show it. `runningAt` (ms) splits boot from SSM registration where the simulator knows it.
 */
function legsOf(ledger: RunLedger, events: RunEvent[], notes: Note[], runningAt?: number, noticeAt?: number): Pick<Measured, 'legs' | 'recoverySeconds' | 'stepsRedone' | 'setup'> {
  const interruption = ledger.interruptions[0];
  const old = ledger.attempts.find((a) => a.attempt === interruption?.attempt);
  const next = ledger.attempts.find((a) => a.attempt === interruption?.nextAttempt);
  if (!interruption || !old || !next?.launchedAt) throw new Error(`no interruption with a next attempt in the ledger: ${JSON.stringify(ledger.interruptions)}`);
  // The notice as the instance got it where the bench knows it (the fleet's IMDS); else as the
  // ledger has it (the controller saw it: on the local provider it delivers the rehearsal itself).
  const notice = noticeAt ?? Date.parse(interruption.noticedAt);
  const s = (ms: number) => (ms - notice) / 1000;
  const launched = Date.parse(next.launchedAt);
  // Ready as the controller saw it: the replacement's REPLACEMENT_READY (during the notice) or the
  // next attempt's INSTANCE_READY, whichever came first after its launch.
  const ready = events
    .filter((e) => e.kind === 'transition' && (e.data?.event === 'REPLACEMENT_READY' || (e.data?.event === 'INSTANCE_READY' && e.attempt === next.attempt)))
    .map((e) => Date.parse(e.at))
    .filter((t) => t >= launched)
    .sort((a, b) => a - b)[0];
  const legs: Leg[] = [];
  if (old.finalCheckpointAt) legs.push({ name: 'final checkpoint safe (job saves, agent uploads)', from: 0, to: s(Date.parse(old.finalCheckpointAt)) });
  legs.push({ name: 'replacement launched (controller sees the notice or the stop, launches)', from: 0, to: s(launched) });
  if (ready !== undefined) {
    if (runningAt !== undefined) {
      legs.push({ name: 'boot (EC2 pending to running)', from: s(launched), to: s(runningAt) });
      legs.push({ name: 'SSM registration (Online, seen by the controller)', from: s(runningAt), to: s(ready) });
    } else {
      legs.push({ name: 'instance up (sandbox started, seen by the controller)', from: s(launched), to: s(ready) });
    }
  }
  const byPhase = phases(notes);
  const leg = (phase: string, name: string, from?: number) => {
    const p = byPhase.find((x) => x.phase === phase);
    if (p?.to !== undefined) legs.push({ name, from: s(from ?? p.from), to: s(p.to) });
  };
  // The agent's own start: at boot (EC2 user data) it comes before the controller saw the instance
  // ready; then the leg from `running` to its first note is cloud-init fetching and starting it.
  const syncing = byPhase.find((x) => x.phase === 'syncing');
  if (syncing?.to !== undefined) {
    const atBoot = ready === undefined || syncing.from < ready;
    if (atBoot && runningAt !== undefined) legs.push({ name: 'agent started at boot (user data: agent fetched, started)', from: s(runningAt), to: s(syncing.from) });
    legs.push({ name: atBoot ? 'code synced' : 'agent deployed, code synced', from: s(atBoot ? syncing.from : ready), to: s(syncing.to) });
  }
  leg('installing', next.setup?.cache === 'restored' ? 'setup cache restored' : 'setup');
  // The checkpoint restore runs on a thread of its own beside setup (agent.py start_restore):
  // its notes, not the phases, say when it waited at the gate and when it restored.
  const note = (text: string) => notes.find((n) => n.text.startsWith(text))?.at;
  const gateFrom = note('waiting at the start gate');
  const restoreFrom = note('restoring the checkpoint');
  const restoreTo = note('checkpoint restore done');
  if (gateFrom !== undefined && restoreFrom !== undefined) legs.push({ name: 'waiting at the start gate for the old job', from: s(gateFrom), to: s(restoreFrom) });
  if (restoreFrom !== undefined && restoreTo !== undefined) legs.push({ name: 'checkpoint restored', from: s(restoreFrom), to: s(restoreTo) });
  const setup = next.setup ? `${next.setup.cache}${next.setup.seconds !== undefined ? ` ${next.setup.seconds.toFixed(1)} s` : ''}` : undefined;
  return {
    legs,
    ...(next.firstTrainedAt ? { recoverySeconds: s(Date.parse(next.firstTrainedAt)) } : {}),
    ...(interruption.stepsRedone !== undefined ? { stepsRedone: interruption.stepsRedone } : {}),
    ...(setup ? { setup } : {}),
  };
}

// ---------------------------------------------------------------------------------------------
// (a) the local quickstart, as `npm start` runs it, with the spec's recovery settings changed

const QUICKSTART_CACHE = '  setup: {run: bash setup.sh, cache: {paths: [.venv], key: [setup.sh, requirements.txt]}}';

async function localOnce(config: ConfigId): Promise<Measured> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'runctl-bench-recovery-'));
  const started = Date.now();
  try {
    execFileSync('git', ['clone', '-q', ROOT, dir]);
    const file = path.join(dir, 'runs/quickstart.yaml');
    let spec = readFileSync(file, 'utf8');
    if (config !== 'sequential') spec = spec.replace(/^ {2}setup: bash setup\.sh$/m, QUICKSTART_CACHE);
    if (config !== 'prelaunch') spec += '  recovery: {prelaunch: false}\n';
    writeFileSync(file, spec);
    const child = spawn(process.execPath, [path.join(ROOT, 'bin/runctl.js'), 'reconcile', 'runs/'], { cwd: dir, env: { ...process.env, NO_COLOR: '1' }, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    const wall = (Date.now() - started) / 1000;
    if (code !== 0) return { config, legs: [], wall, error: `runctl reconcile exited ${code}: ${stderr.trim().slice(-300)}` };
    const [status] = JSON.parse(execFileSync(process.execPath, [path.join(ROOT, 'bin/runctl.js'), 'status', 'quickstart', '-o', 'json'], { cwd: dir, encoding: 'utf8' })) as RunStatus[];
    if (!status?.ledger) return { config, legs: [], wall, error: 'no ledger in status' };
    const events = readFileSync(path.join(dir, '.runctl/state/runs/quickstart/events.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as RunEvent);
    const runDir = path.join(dir, '.runctl/local/storage/runs/quickstart', status.uid ?? '');
    const logs = path.join(runDir, 'g1', `a${status.ledger.interruptions[0]?.nextAttempt ?? 2}`, 'logs');
    const segments = existsSync(logs) ? readdirSync(logs).sort().map((n) => readFileSync(path.join(logs, n), 'utf8')) : [];
    return { config, wall, ...legsOf(status.ledger, events, agentNotes(segments)) };
  } catch (e) {
    return { config, legs: [], wall: (Date.now() - started) / 1000, error: (e as Error).message.slice(0, 300) };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
// (b) moto + the fleet simulator, EC2's timings scaled by SCALE

/**
 * The modelled data (the virtualenv) is DATA_SCALE of its size, and S3's throughput is scaled by
 * DATA_SCALE / SCALE, so a transfer takes SCALE of its real time while this shared machine writes,
 * compresses and unpacks only DATA_SCALE of the bytes (its CPU and disk cannot do a gigabyte per
 * run under load). What is not modelled: gzip and tar on the real size take longer than here.
 */
const DATA_SCALE = 1 / 16;
const FLEET_TIMING = { ...scaledTiming(SCALE), s3BytesPerSecond: (EC2_TIMING.s3BytesPerSecond * DATA_SCALE) / SCALE };

/** The controller's and the agent's own periods at SCALE: the aws provider's 15 s poll (3 s while a spot attempt trains or stops), the agent's 10 s heartbeat and 2 s IMDS poll, the 2 s SSM poll. */
const PROVIDER_TIMING = {
  pollIntervalMs: Math.round(15_000 * SCALE),
  noticePollIntervalMs: Math.round(3_000 * SCALE),
  ssmPollMs: Math.round(2_000 * SCALE),
  agentTiming: { heartbeatSeconds: 10 * SCALE, noticePollSeconds: 2 * SCALE },
};

// Attempt 1 trains until the notice (however slow the machine); attempt 2 trains 20 steps past the
// checkpoint it restored, then finishes. The tiny trainer checkpoints on SIGTERM, and every 25
// steps (2.5 s) meanwhile: a save every few seconds, not a constant stream of them.
const TRAIN =
  'if [ "$RUNCTL_ATTEMPT" = 1 ]; then n=100000; else ' +
  'n=$(( $(ls "$RUNCTL_CHECKPOINT_DIR" | sed -n "s/^ckpt-0*\\([0-9][0-9]*\\)\\.json$/\\1/p" | sort -n | tail -1) + 20 )); fi; ' +
  'exec python3 train.py --steps "$n" --checkpoint-every 25 --step-delay 0.1';
/** The fleet's spot notice goes to attempt 1 once the controller has seen it at this step. */
const NOTICE_AT_STEP = 30;

/** The modelled setup (SETUP_SECONDS, VENV_BYTES), at SCALE. */
function modelledSetup(): string {
  const seconds = (SETUP_SECONDS * SCALE).toFixed(2);
  const bytes = Math.round(VENV_BYTES * DATA_SCALE);
  return `sleep ${seconds} && mkdir -p .venv/lib && head -c ${bytes} /dev/urandom > .venv/lib/libtorch_model.so`;
}

function fleetRun(rig: AwsRig, config: ConfigId): LoadedRun {
  const setup: RunSpec['setup'] = config === 'sequential' ? modelledSetup() : { run: modelledSetup(), cache: { paths: ['.venv'], key: ['requirements.txt'] } };
  const spec = awsSpec(rig.bucket, {
    code: { path: './examples/tiny-trainer', exclude: ['.venv/**', 'checkpoints/**', 'wheelhouse/**'] },
    env: { PYTHONPATH: 'vendor/tinymath' },
    setup,
    run: TRAIN,
    resources: { instanceTypes: ['g5.xlarge', 'g6.xlarge'], market: 'spot' },
    // Each configuration has its own storage, so one's setup cache is not another's.
    checkpoints: { storage: `s3://${rig.bucket}/${config}`, syncInterval: '2s', gracePeriod: '20s' },
    recovery: { maxInterruptions: 5, maxRetriesOnError: 0, seedFromPreviousGeneration: false, ...(config === 'prelaunch' ? {} : { prelaunch: false }) },
  });
  const loaded = testRun(`bench-${config}`);
  return { ...loaded, run: { ...loaded.run, spec } };
}

async function s3Segments(s3: S3Client, bucket: string, prefix: string): Promise<string[]> {
  const listed = await s3.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }));
  const keys = (listed.Contents ?? []).map((o) => o.Key as string).sort();
  const out: string[] = [];
  for (const key of keys) {
    const got = await s3.send(new GetObjectCommand({ Bucket: bucket, Key: key }));
    out.push((await got.Body?.transformToString()) ?? '');
  }
  return out;
}

async function fleetOnce(rig: AwsRig, s3: S3Client, config: ConfigId): Promise<Measured> {
  const started = Date.now();
  const controllerName = `bench-${config}`;
  const { provider } = rig.provider({ controller: controllerName, ...PROVIDER_TIMING });
  const store = new MemoryStore();
  const loaded = fleetRun(rig, config);
  const name = loaded.run.metadata.name;
  const controller = new Controller({ store, provider: async () => provider, load: async () => ({ runs: [loaded], diagnostics: [], invalidFiles: [] }), controller: controllerName, repoRoot: ROOT, prune: false });
  let noticed = false;
  let noticeAt: number | undefined;
  const watcher = setInterval(() => {
    const s = controller.runs.find((r) => r.run === name);
    if (noticed || !s || s.phase !== 'Training' || s.attempt !== 1 || (s.progress?.step ?? 0) < NOTICE_AT_STEP) return;
    const instance = s.instances.find((i) => i.attempt === 1 && !i.endedAt);
    if (!instance) return;
    noticed = true;
    noticeAt = Date.now();
    void rig.fleet.deliverSpotNotice(instance.id);
  }, 100);
  // A leg that never ends must not hang the bench: give up after 10 minutes and say so.
  const limit = setTimeout(() => void controller.stop(), 10 * 60_000);
  let status: RunStatus | undefined;
  try {
    const summary = await controller.runUntilSettled();
    status = summary.statuses.find((s) => s.run === name);
  } catch (e) {
    return { config, legs: [], wall: (Date.now() - started) / 1000, error: `reconcile failed: ${(e as Error).message.slice(0, 300)}` };
  } finally {
    clearInterval(watcher);
    clearTimeout(limit);
    await controller.stop();
  }
  const wall = (Date.now() - started) / 1000;
  if (!status || status.phase !== 'Completed' || status.attempt !== 2) {
    const cause = status?.failure?.message ?? status?.conditions?.find((c) => c.status === 'True' && c.type !== 'Ready')?.message ?? '';
    return { config, legs: [], wall, error: `the run ended ${status?.phase ?? 'unknown'} at attempt ${status?.attempt ?? '?'} (expected Completed at attempt 2)${cause ? `: ${cause.slice(0, 240)}` : ''}` };
  }
  if (!status.ledger) return { config, legs: [], wall, error: 'no ledger in status' };
  const events = await store.readEvents(name);
  const next = status.ledger.attempts.find((a) => a.attempt === 2);
  const runningAt = next?.instanceId ? rig.fleet.instances.get(next.instanceId)?.runningAt.getTime() : undefined;
  const segments = await s3Segments(s3, rig.bucket, `${config}/runs/${name}/${status.uid}/g1/a2/logs/`);
  return { config, wall, ...legsOf(status.ledger, events, agentNotes(segments), runningAt, noticeAt) };
}

// ---------------------------------------------------------------------------------------------

const fmt = (n: number) => n.toFixed(1);

const LEG_ORDER = ['final checkpoint', 'replacement launched', 'boot', 'SSM registration', 'instance up', 'agent started at boot', 'agent deployed', 'code synced', 'setup', 'waiting at the start gate', 'checkpoint restored', 'job started'];

function table(results: Measured[], scaleBack: number): string[] {
  // Rows in the order of the path; a leg whose name depends on the run (setup or its cache) where setup is.
  const rank = (name: string) => {
    const i = LEG_ORDER.findIndex((p) => name.startsWith(p));
    return i === -1 ? LEG_ORDER.length : i;
  };
  const names: string[] = [];
  for (const r of results) for (const l of r.legs) if (!names.includes(l.name)) names.push(l.name);
  names.sort((a, b) => rank(a) - rank(b));
  const header = `| leg (seconds after the notice: from → to) | ${results.map((r) => CONFIGS.find((c) => c.id === r.config)!.title).join(' | ')} |`;
  const rows = [header, `|---|${results.map(() => '---:').join('|')}|`];
  for (const name of names) {
    rows.push(
      `| ${name} | ${results
        .map((r) => {
          const l = r.legs.find((x) => x.name === name);
          return l ? `${fmt(l.from * scaleBack)} → ${fmt(l.to * scaleBack)}` : '–';
        })
        .join(' | ')} |`,
    );
  }
  rows.push(`| setup on the new attempt (ledger: restored from the cache, or run) | ${results.map((r) => (r.setup ? r.setup.replace(/([\d.]+) s/, (_, x: string) => `${fmt(Number(x) * scaleBack)} s`) : '–')).join(' | ')} |`);
  rows.push(`| **notice → training again** | ${results.map((r) => (r.error ? `**failed**: ${r.error.replace(/\|/g, '\\|')}` : r.recoverySeconds !== undefined ? `**${fmt(r.recoverySeconds * scaleBack)} s**` : '–')).join(' | ')} |`);
  rows.push(`| steps redone | ${results.map((r) => (r.stepsRedone !== undefined ? String(r.stepsRedone) : '–')).join(' | ')} |`);
  return rows;
}

function printRun(where: string, r: Measured, scaleBack: number): void {
  const fig = r.error ? `FAILED: ${r.error}` : `notice to training again ${fmt((r.recoverySeconds ?? NaN) * scaleBack)} s${scaleBack !== 1 ? ` (measured ${(r.recoverySeconds ?? NaN).toFixed(2)} s at scale ${SCALE})` : ''}, steps redone ${r.stepsRedone ?? '?'}, whole run ${fmt(r.wall)} s`;
  process.stdout.write(`${where} ${r.config}: ${fig}\n`);
  for (const l of r.legs) process.stdout.write(`  ${l.name}: ${fmt(l.from * scaleBack)} → ${fmt(l.to * scaleBack)} s\n`);
}

// The CLI and the agent zipapp the instances run, built from this checkout (as `npm run build`).
execFileSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', path.join(ROOT, 'tsconfig.build.json')], { stdio: 'inherit' });
execFileSync('python3', [path.join(ROOT, 'src/agent/build-pyz.py')], { cwd: ROOT, stdio: 'inherit' });

const local: Measured[] = [];
if (ONLY !== 'aws') {
  for (const c of CONFIGS) {
    const r = await localOnce(c.id);
    printRun('local quickstart', r, 1);
    local.push(r);
  }
}

const fleet: Measured[] = [];
if (ONLY !== 'local') {
  const rig = await startRig({ timing: FLEET_TIMING });
  const s3 = new S3Client({ region: REGION, endpoint: rig.motoUrl, forcePathStyle: true, credentials: CREDENTIALS });
  // Stopped early (Ctrl-C): terminate the fleet's instances and stop moto rather than leave them.
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    process.once(signal, () => void rig.release().finally(() => process.exit(130)));
  }
  try {
    // The prelaunch leg first: it is the one the issue's goal is about.
    for (const c of [...CONFIGS].reverse()) {
      const r = await fleetOnce(rig, s3, c.id);
      printRun('moto + fleet', r, 1 / SCALE);
      fleet.unshift(r);
    }
  } finally {
    s3.destroy();
    await rig.release();
  }
}

const load = os.loadavg()[0]!.toFixed(1);
const uptime = execFileSync('uptime', { encoding: 'utf8' }).trim();
process.stdout.write(`${uptime}\n`);
const measuredLine =
  `Measured ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, ${os.cpus().length} cores, Node ${process.versions.node}; load average ${load} at the end ` +
  `(\`uptime\`: ${uptime.replace(/^.*load average:/, 'load average:')}). The machine was shared with other work, so the absolute figures are rough; compare the columns.`;

const headline = (rs: Measured[], k: number) =>
  rs.map((r) => `${CONFIGS.find((c) => c.id === r.config)!.title}: ${r.error ? 'failed (see the table)' : `${fmt((r.recoverySeconds ?? NaN) * k)} s`}`).join('; ');

/** The local block: its headline, what was run, the table, when. */
function localBlock(): string[] {
  return [
    '### (a) Local quickstart',
    '',
    `**Notice to training again: ${headline(local, 1)}.**`,
    '',
    '`runs/quickstart.yaml` cloned and run as `npm start` runs it (rehearsed notice 12 s into training, the tiny trainer, its real `bash setup.sh`: a virtualenv and an offline ' +
      'wheel install), with `recovery: {prelaunch: false}` added for the first two columns and `setup: {run: bash setup.sh, cache: {paths: [.venv], key: [setup.sh, requirements.txt]}}` ' +
      'for the last two. Seconds are real. The first column is the sequential path of the quickstart table above, measured again.',
    '',
    ...table(local, 1),
    '',
    measuredLine,
  ];
}

function fleetBlock(): string[] {
  const p = fleet.find((r) => r.config === 'prelaunch');
  const restore = p?.legs.find((l) => l.name === 'checkpoint restored');
  const fixed = (EC2_TIMING.bootMs + EC2_TIMING.ssmRegistrationMs) / 1000;
  let goal: string;
  if (p && !p.error && p.recoverySeconds !== undefined && restore) {
    const restoreSeconds = (restore.to - restore.from) / SCALE;
    const got = p.recoverySeconds / SCALE;
    const target = fixed + restoreSeconds;
    goal =
      `Goal (issue 12): training again no later than boot + SSM registration + restore = ${fmt(EC2_TIMING.bootMs / 1000)} + ${fmt(EC2_TIMING.ssmRegistrationMs / 1000)} + ` +
      `${fmt(restoreSeconds)} = ${fmt(target)} s after the notice: **${got <= target ? 'met' : 'not met'}** (${fmt(got)} s).`;
  } else {
    goal = `Goal (issue 12: training again no later than boot + SSM registration + restore after the notice): not measured, the prelaunch run did not complete (see the table).`;
  }
  return [
    '### (b) Modelled EC2: moto + the fleet simulator',
    '',
    `**Notice to training again, scaled back to real time: ${headline(fleet, 1 / SCALE)}.** ${goal}`,
    '',
    `The aws provider through the real SDK against moto, the fleet simulator running the real agent and AWS CLI per instance (test/providers/aws/harness.ts), with the ` +
      `timing model of test/support/fleet/timing.ts at ${SCALE} of real time: boot ${fmt(EC2_TIMING.bootMs / 1000)} s, SSM registration ${fmt(EC2_TIMING.ssmRegistrationMs / 1000)} s, ` +
      `notice lead ${fmt(EC2_TIMING.noticeLeadMs / 1000)} s (real figures, with their sources there). S3 runs at the model's ${EC2_TIMING.s3BytesPerSecond / 1024 ** 2} MiB/s per request; the virtualenv is ` +
      `${fmt(VENV_BYTES * DATA_SCALE / 1024 ** 2)} MiB on disk (1/${Math.round(1 / DATA_SCALE)} of the model's size, S3 slowed by as much, so a transfer still takes ${SCALE} of its real time; ` +
      `gzip and tar work on the smaller size, which understates them). The controller and the agent poll at ${SCALE} of their real periods (aws provider poll 15 s, 3 s while a spot attempt trains or stops, agent heartbeat 10 s, IMDS poll 2 s, SSM poll 2 s). ` +
      `Setup models \`pip install\` of a CUDA PyTorch stack into a fresh virtualenv: ${SETUP_SECONDS} s and a ${VENV_BYTES / 1024 ** 3} GiB virtualenv (estimates: the wheels are about 2.5 GB, ` +
      "installed several GB; the issue's complaint is that this runs again on every recovery), run as a `sleep` and random bytes. The job is the tiny trainer " +
      `(checkpoints of a few KiB), interrupted by a fleet spot notice once the controller saw it at step ${NOTICE_AT_STEP}. **Every figure is scaled back to real time (measured seconds ÷ ` +
      `${SCALE})**, which also multiplies by ${fmt(1 / SCALE)} what this machine spends that is not scaled (starting the agent and each AWS CLI process, ` +
      "python start-up, moto's own latency, all slowed by the load): the figures are upper bounds for EC2.",
    '',
    ...table(fleet, 1 / SCALE),
    '',
    measuredLine,
  ];
}

const block = (id: string, body: string[]) => [`<!-- bench:recovery-${id}:begin -->`, ...body, `<!-- bench:recovery-${id}:end -->`].join('\n');
const notYet = (what: string) => [`${what}: not measured yet (\`BENCH_ONLY\` left it out).`];
const intro = [
  '## Recovery: sequential vs setup cache vs setup cache + prelaunch (issue 12)',
  '',
  'Notice to training again, three ways: **sequential** (`recovery.prelaunch: false`, `setup` run again on the new instance, no cache: recovery before issue 12), ' +
    '**setup cache** (`recovery.prelaunch: false`, `spec.setup.cache`) and **setup cache + prelaunch** (the spot default: the replacement is launched and set up during the notice).',
  '',
  `Command: \`npm run bench -- recovery\` (\`BENCH_SCALE\`, default 0.5; \`BENCH_ONLY=local|aws\` measures one part and keeps the other's last figures). One run per cell. ` +
    "Each cell is a leg's start and end in seconds after the notice, so legs that overlap show it (with prelaunch the replacement boots while the old job saves). " +
    "Moments come from the run's ledger (notice, final checkpoint safe, launch, ready, training again: `src/reconciler/ledger.ts`), its event log (the replacement's " +
    "ready transition), the new attempt's agent notes in its job log (`phase syncing/installing/waiting/restoring/training`) and, on the fleet, the instance's " +
    'simulated `running` time. "Training again" is the ledger\'s `firstTrainedAt`: the new attempt\'s job started, as its agent recorded it (`jobStartedAt`, the instance\'s clock; the controller sees it a heartbeat and a poll later). ' +
    'The notice is when the instance got it: on the fleet, when the bench had the simulator serve it on the IMDS; on the local provider, the ledger\'s (the controller delivers the rehearsal itself).',
  '',
];
if (PICKED) process.exit(local.concat(fleet).some((r) => r.error) ? 1 : 0);
const current = readFileSync(DOC, 'utf8');
const sub = (id: string) => new RegExp(`<!-- bench:recovery-${id}:begin -->[\\s\\S]*<!-- bench:recovery-${id}:end -->`);
const previous = (id: string) => sub(id).exec(current)?.[0];
const localText = local.length ? block('local', localBlock()) : (previous('local') ?? block('local', notYet('Local quickstart')));
const fleetText = fleet.length ? block('aws', fleetBlock()) : (previous('aws') ?? block('aws', notYet('Modelled EC2')));
const section = ['<!-- bench:recovery:begin -->', ...intro, localText, '', fleetText, '<!-- bench:recovery:end -->'].join('\n');
const marked = /<!-- bench:recovery:begin -->[\s\S]*<!-- bench:recovery:end -->/;
writeFileSync(DOC, marked.test(current) ? current.replace(marked, () => section) : `${current.trimEnd()}\n\n${section}\n`);
process.stdout.write(`${section}\n\nwrote the recovery section of ${path.relative(ROOT, DOC)}\n`);
process.exit(local.concat(fleet).some((r) => r.error) ? 1 : 0);
