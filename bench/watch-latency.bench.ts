// How long after a spec file is saved does the run's event appear? `reconcile --watch` wiring:
// the chokidar watcher (default debounce), a reload of the runs folder, and one reconcile that
// records a `spec` event in the file store (fsync on, as in production). The provider is the
// in-memory cloud, so the figure is runctl's own latency, not a cloud's.
// Writes its section of docs/BENCHMARKS.md. Environment: BENCH_EDITS (default 40), BENCH_RUNS_IN_FOLDER (default 20).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Controller } from '../src/reconciler/controller.js';
import { loadDesired } from '../src/reconciler/desired.js';
import { withRevisions } from '../src/reconciler/git-follow.js';
import { DEFAULT_DEBOUNCE_MS, SpecWatcher } from '../src/reconciler/watch.js';
import { FileStore } from '../src/state/file-store.js';
import type { RunEvent } from '../src/state/types.js';
import { MemoryProvider } from '../test/support/memory-provider.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DOC = path.join(ROOT, 'docs/BENCHMARKS.md');
const EDITS = Number(process.env.BENCH_EDITS ?? 40);
const FOLDER_RUNS = Number(process.env.BENCH_RUNS_IN_FOLDER ?? 20);

function spec(name: string, training: string): string {
  return `apiVersion: runctl.dev/v1alpha1
kind: TrainingRun
metadata:
  name: ${name}
spec:
  provider: local
  code: {path: ./code}
  run: python3 train.py
  timeouts: {training: ${training}}
`;
}

interface Result {
  debounceMs: number;
  samples: number[];
}

async function measure(debounceMs: number): Promise<Result> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'runctl-bench-watch-'));
  const runs = path.join(dir, 'runs');
  mkdirSync(runs);
  mkdirSync(path.join(dir, 'code'));
  writeFileSync(path.join(dir, 'code', 'train.py'), 'print(1)\n');
  writeFileSync(path.join(dir, 'runctl.yaml'), 'prune: false\n');
  for (let i = 0; i < FOLDER_RUNS; i++) writeFileSync(path.join(runs, `run-${i}.yaml`), spec(`run-${i}`, '48h'));
  // A git checkout, as on a control host: every reload also reads HEAD and the dirty files.
  const git = (...args: string[]) => execFileSync('git', ['-c', 'user.name=bench', '-c', 'user.email=bench@example.com', ...args], { cwd: dir, stdio: 'ignore' });
  git('init', '-q');
  git('add', '-A');
  git('commit', '-q', '-m', 'runs');

  const store = new FileStore(path.join(dir, '.runctl'));
  await store.open();
  const provider = new MemoryProvider({ totalSteps: 1e12, stepsPerTick: 1, checkpointEvery: 1000 }, { pollIntervalMs: 1000 });
  const waiters: Array<(e: RunEvent) => void> = [];
  const controller = new Controller({
    store,
    provider: async () => provider,
    load: async () => withRevisions(await loadDesired([runs], dir), dir),
    controller: 'bench',
    repoRoot: dir,
    prune: false,
    onEvent: (e) => {
      if (e.run === 'run-0' && e.kind === 'spec' && e.action === 'updated') for (const w of waiters.splice(0)) w(e);
    },
  });
  await controller.resync();
  const watcher = await SpecWatcher.start({ paths: [runs], debounceMs, resyncIntervalMs: 0, reload: async () => void (await controller.resync()) });
  // Let every run reach Training first.
  while (!controller.runs.every((s) => s.phase === 'Training') || controller.runs.length < FOLDER_RUNS) await new Promise((r) => setTimeout(r, 50));

  const samples: number[] = [];
  for (let i = 1; i <= EDITS; i++) {
    const seen = new Promise<RunEvent>((resolve) => waiters.push(resolve));
    const start = performance.now();
    writeFileSync(path.join(runs, 'run-0.yaml'), spec('run-0', `${48 + i}h`));
    await seen;
    samples.push(performance.now() - start);
    await new Promise((r) => setTimeout(r, 100));
  }
  await watcher.close();
  await controller.stop();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
  return { debounceMs, samples };
}

function stats(samples: number[]) {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))] as number;
  return { median: at(0.5), p90: at(0.9), min: s[0] as number, max: s.at(-1) as number };
}

const results = [await measure(DEFAULT_DEBOUNCE_MS), await measure(0)];
const rows = results.map((r) => ({ ...r, ...stats(r.samples) }));
for (const r of rows) {
  process.stdout.write(`debounce ${r.debounceMs} ms: median ${r.median.toFixed(0)} ms, p90 ${r.p90.toFixed(0)} ms, min ${r.min.toFixed(0)} ms, max ${r.max.toFixed(0)} ms over ${r.samples.length} edits\n`);
}

const main = rows[0]!;
const section = [
  '<!-- bench:watch-latency:begin -->',
  '## `reconcile --watch`: from a saved spec file to the run\'s event',
  '',
  `**Median ${main.median.toFixed(0)} ms (p90 ${main.p90.toFixed(0)} ms) from writing a spec file to the run's \`spec\` event in its log, over ${EDITS} edits** with the default ${DEFAULT_DEBOUNCE_MS} ms debounce, which is most of it.`,
  `Command: \`npm run bench -- watch-latency\` (\`BENCH_EDITS\`, \`BENCH_RUNS_IN_FOLDER\` change the size).`,
  '',
  `Each edit changes \`spec.timeouts.training\` of one run in a folder of ${FOLDER_RUNS} runs, all in Training. The clock starts`,
  'before `writeFileSync` and stops when the controller appends the `spec` event ("changed in place") to the',
  'run\'s log in the file store (fsync on). In between: chokidar\'s event, the debounce, a reload and validation of',
  'the whole folder, reading the git revision (the folder is a git checkout, so `git rev-parse` and `git status` run),',
  'and a reconcile of every run (the resync), of which the edited run\'s records the event. The',
  'provider is the in-memory cloud (`test/support/memory-provider.ts`), so no cloud latency is included.',
  '',
  '| debounce | median | p90 | min | max |',
  '|---:|---:|---:|---:|---:|',
  ...rows.map((r) => `| ${r.debounceMs} ms | ${r.median.toFixed(0)} ms | ${r.p90.toFixed(0)} ms | ${r.min.toFixed(0)} ms | ${r.max.toFixed(0)} ms |`),
  '',
  `Measured ${new Date().toISOString().slice(0, 10)} on ${os.cpus().length} × ${os.cpus()[0]?.model.split(' ').slice(0, 2).join(' ') ?? 'CPU'}, Node ${process.version}, load average ${os.loadavg()[0]!.toFixed(1)} at the end`,
  '(the machine was shared with other work; treat absolute numbers as rough). The debounce (`DEFAULT_DEBOUNCE_MS` in',
  '`src/reconciler/watch.ts`) trades latency for one reload per burst: editors write a file in several steps.',
  '<!-- bench:watch-latency:end -->',
].join('\n');
const current = existsSync(DOC) ? readFileSync(DOC, 'utf8') : '# Benchmarks\n\nEach section is written by its benchmark in `bench/` (`npm run bench`).\n';
const marked = /<!-- bench:watch-latency:begin -->[\s\S]*<!-- bench:watch-latency:end -->/;
writeFileSync(DOC, marked.test(current) ? current.replace(marked, section) : `${current.trimEnd()}\n\n${section}\n`);
process.stdout.write(`wrote the watch-latency section of ${path.relative(ROOT, DOC)}\n`);
