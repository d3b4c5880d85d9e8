// The quickstart's spot interruption, timed: from the rehearsal notice to training steps
// progressing again on the new instance, split into who spends the time. Each repetition clones
// this repository (committed files only) into a temporary folder and runs `runctl reconcile runs/`
// there exactly as `npm start` does, with this checkout's built CLI. Timestamps come from the
// run's event log (controller), the agents' notes in their job logs (agent), and, for the first
// step after the restart, from watching the new instance's job.log as it is written (20 ms polls).
// Writes its section of docs/BENCHMARKS.md. Environment: BENCH_REPEAT (default 3).
import { execFileSync, spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DOC = path.join(ROOT, 'docs/BENCHMARKS.md');
const REPEAT = Number(process.env.BENCH_REPEAT ?? 3);

interface Event {
  at: string;
  attempt: number;
  kind: string;
  action: string;
}

interface Timeline {
  notice: number;
  agentSaw: number;
  interrupted: number;
  controllerSaw: number;
  launched: number;
  ready: number;
  deployed: number;
  restored: number;
  jobStarted: number;
  firstStep: number;
  total: number;
  checkpointStep: number;
  resumedAtStep: number;
}

/** `[runctl-agent] <ISO time> <note>` lines of an attempt's job log, as shipped to storage. */
function agentNotes(dir: string, attempt: number): Array<{ at: number; text: string }> {
  // Storage keys carry the run's uid (runs/<run>/<uid>/g<gen>/…); the clone holds one run.
  const run = path.join(dir, '.runctl/local/storage/runs/quickstart');
  const uid = readdirSync(run).find((n) => existsSync(path.join(run, n, 'g1'))) ?? '';
  const logs = path.join(run, uid, 'g1', `a${attempt}`, 'logs');
  const notes: Array<{ at: number; text: string }> = [];
  for (const name of readdirSync(logs).sort()) {
    for (const line of readFileSync(path.join(logs, name), 'utf8').split('\n')) {
      const m = /^\[runctl-agent\] (\S+) (.*)$/.exec(line);
      if (m) notes.push({ at: Date.parse(m[1]!), text: m[2]! });
    }
  }
  return notes;
}

function noteAt(notes: Array<{ at: number; text: string }>, pattern: RegExp): number {
  const found = notes.find((n) => pattern.test(n.text));
  if (!found) throw new Error(`no agent note matching ${pattern}`);
  return found.at;
}

/** Polls the second attempt's live job.log for its first training step; resolves with when it was seen. */
function watchFirstStep(dir: string, signal: AbortSignal): Promise<{ at: number; step: number } | undefined> {
  const instances = path.join(dir, '.runctl/local/instances');
  return new Promise((resolve) => {
    const timer = setInterval(() => {
      if (signal.aborted) {
        clearInterval(timer);
        resolve(undefined);
        return;
      }
      const sandbox = existsSync(instances) ? readdirSync(instances).find((n) => /-g1-a2-/.test(n)) : undefined;
      if (!sandbox) return;
      const log = path.join(instances, sandbox, 'agent', 'job.log');
      if (!existsSync(log)) return;
      const m = /^step=(\d+)\//m.exec(readFileSync(log, 'utf8'));
      if (m) {
        clearInterval(timer);
        resolve({ at: Date.now(), step: Number(m[1]) });
      }
    }, 20);
  });
}

async function once(): Promise<Timeline> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'runctl-bench-quickstart-'));
  try {
    execFileSync('git', ['clone', '-q', ROOT, dir]);
    // The sequential path this table splits into steps: since recovery.prelaunch became the spot
    // default, the quickstart prelaunches; `npm run bench -- recovery` sets the two side by side.
    appendFileSync(path.join(dir, 'runs/quickstart.yaml'), '  recovery: {prelaunch: false}\n');
    const started = Date.now();
    const stop = new AbortController();
    const firstStep = watchFirstStep(dir, stop.signal);
    const child = spawn(process.execPath, [path.join(ROOT, 'bin/runctl.js'), 'reconcile', 'runs/'], {
      cwd: dir,
      env: { ...process.env, NO_COLOR: '1' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    const total = Date.now() - started;
    stop.abort();
    if (code !== 0) throw new Error(`runctl reconcile exited ${code}: ${stderr}`);
    const step = await firstStep;
    if (!step) throw new Error('the second attempt never logged a training step');

    const events = readFileSync(path.join(dir, '.runctl/state/runs/quickstart/events.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Event);
    const at = (kind: string, action: string, attempt?: number) => {
      const e = events.find((x) => x.kind === kind && x.action === action && (attempt === undefined || x.attempt === attempt));
      if (!e) throw new Error(`no ${kind} ${action} event${attempt ? ` for attempt ${attempt}` : ''}`);
      return Date.parse(e.at);
    };
    const first = agentNotes(dir, 1);
    const second = agentNotes(dir, 2);
    const checkpoint = /checkpoint \S+ published at step (\d+)/.exec(first.filter((n) => /published/.test(n.text)).at(-1)?.text ?? '');
    return {
      notice: at('effect', 'deliverSpotNotice'),
      agentSaw: noteAt(first, /^(?:sending|sent) .* to the job/),
      interrupted: noteAt(first, /^attempt ended: interrupted/),
      controllerSaw: at('transition', 'Interrupted -> Resuming'),
      launched: launchOf(events, 2),
      ready: at('transition', 'Provisioning -> Syncing', 2),
      deployed: at('effect', 'deployAgent', 2),
      restored: noteAt(second, /^restored checkpoint/),
      jobStarted: noteAt(second, /^starting job/),
      firstStep: step.at,
      total,
      checkpointStep: Number(checkpoint?.[1] ?? NaN),
      resumedAtStep: step.step,
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The launch effect of an attempt (effects carry the attempt the machine was in when decided). */
function launchOf(events: Event[], attempt: number): number {
  const launches = events.filter((e) => e.kind === 'effect' && e.action === 'launch');
  const e = launches[attempt - 1];
  if (!e) throw new Error(`no launch for attempt ${attempt}`);
  return Date.parse(e.at);
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

const seconds = (ms: number) => (ms / 1000).toFixed(2);

execFileSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', path.join(ROOT, 'tsconfig.build.json')], { stdio: 'inherit' });
const timelines: Timeline[] = [];
for (let i = 0; i < REPEAT; i++) {
  const t = await once();
  timelines.push(t);
  process.stdout.write(
    `run ${i + 1}/${REPEAT}: notice to training ${seconds(t.firstStep - t.notice)} s, controller ${seconds(t.deployed - t.interrupted)} s, ` +
      `checkpoint at step ${t.checkpointStep}, resumed at step ${t.resumedAtStep}, whole quickstart ${seconds(t.total)} s\n`,
  );
}

const rows: Array<[string, keyof Timeline, keyof Timeline, string]> = [
  ['agent sees the notice (IMDSv2 poll), signals the job', 'notice', 'agentSaw', 'agent'],
  ['job checkpoints and exits; agent publishes the checkpoint and reports `interrupted`', 'agentSaw', 'interrupted', 'job + agent'],
  ['controller sees `interrupted` (agent heartbeat, controller poll)', 'interrupted', 'controllerSaw', 'controller'],
  ['old instance terminated, attempt 2 launched', 'controllerSaw', 'launched', 'controller'],
  ['new instance ready (host up, next poll)', 'launched', 'ready', 'controller + provider'],
  ['bundle shipped (0 bytes: content-addressed), agent started', 'ready', 'deployed', 'controller + provider'],
  ['agent syncs code, restores the checkpoint', 'deployed', 'restored', 'agent'],
  ['setup (`bash setup.sh`: virtualenv, offline wheel install)', 'restored', 'jobStarted', "job's setup"],
  ['job starts, first step logged', 'jobStarted', 'firstStep', 'job'],
];
const span = (t: Timeline, from: keyof Timeline, to: keyof Timeline) => t[to] - t[from];
const noticeToTraining = median(timelines.map((t) => t.firstStep - t.notice));
const controllerShare = median(timelines.map((t) => t.deployed - t.interrupted));
const redone = timelines.map((t) => t.checkpointStep + 1 - t.resumedAtStep);
const wholeRun = median(timelines.map((t) => t.total));

const section = [
  '<!-- bench:quickstart-recovery:begin -->',
  '## Quickstart: from the spot notice to training again',
  '',
  `**Notice to the first training step on the new instance: ${seconds(noticeToTraining)} s (median of ${REPEAT}), of which ` +
    `${seconds(controllerShare)} s is the controller's own part (noticing the interrupted attempt, replacing the instance, ` +
    `deploying the agent); ${Math.max(...redone) <= 0 ? '0 steps redone' : `${Math.max(...redone)} steps redone at most`}. ` +
    `The whole quickstart (two attempts, 400 steps): ${seconds(wholeRun)} s.**`,
  '',
  `Command: \`npm run bench -- quickstart-recovery\` (BENCH_REPEAT=${REPEAT}). Each repetition clones this repository into a ` +
    'temporary folder and runs `runctl reconcile runs/` there, as `npm start` does, with `recovery.prelaunch: false` added to ' +
    'its spec: this is the sequential path (`npm start` now prelaunches; the `recovery` section below compares the two). ' +
    'Times come from the run\'s event log, the ' +
    "agents' notes in their job logs, and a 20 ms poll of the new instance's live job log for its first step. " +
    `Measured ${new Date().toISOString().slice(0, 10)}, ${os.cpus().length} cores, Node ${process.versions.node}.`,
  '',
  '| step | took (median) | at, after the notice | whose |',
  '|---|---:|---:|---|',
  ...rows.map(([what, from, to, whose]) => {
    const took = median(timelines.map((t) => span(t, from, to)));
    const at = median(timelines.map((t) => t[to] - t.notice));
    return `| ${what} | ${seconds(took)} s | ${seconds(at)} s | ${whose} |`;
  }),
  '',
  'Where the time goes: the controller\'s part is mostly polling (the agent\'s heartbeat and the controller\'s 1 s look at ' +
    'the run, then at the new instance) and would shrink with shorter intervals at the cost of more reads. On AWS the same ' +
    'path is dominated by instance boot and SSM registration (minutes), so the controller\'s share is small there. Setup runs ' +
    'again on every new instance; a prebuilt image or a cached virtualenv would remove it. No step is redone: the trainer ' +
    'checkpoints on SIGTERM, and the agent uploads that checkpoint before reporting the attempt interrupted.',
  '<!-- bench:quickstart-recovery:end -->',
].join('\n');

const current = readFileSync(DOC, 'utf8');
const marked = /<!-- bench:quickstart-(?:manual|recovery):begin -->[\s\S]*<!-- bench:quickstart-(?:manual|recovery):end -->/;
writeFileSync(DOC, marked.test(current) ? current.replace(marked, section) : `${current.trimEnd()}\n\n${section}\n`);
process.stdout.write(`wrote the quickstart-recovery section of ${path.relative(ROOT, DOC)}\n`);
