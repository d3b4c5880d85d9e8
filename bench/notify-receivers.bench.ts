// Does a failing notification receiver hold up reconciling? (issue 13, acceptance 3)
// RUNS runs, each interrupted once, driven from Pending to Completed by one controller with the
// in-memory cloud and the file store (fsync on), with every run's Interrupted, Resumed and
// Completed sent to one receiver on loopback that (a) answers 200 at once, (b) answers 500 to
// everything, (c) never answers (each request held until its 2-minute timeout). Measured: wall
// time until every run is Completed (the controller's own work), and what the receiver saw.
// Writes its section of docs/BENCHMARKS.md. Environment: BENCH_RUNS (default 100), BENCH_REPEATS (3).
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Notifier } from '../src/notify/notifier.js';
import type { NotificationReceiver } from '../src/notify/receivers.js';
import { Controller } from '../src/reconciler/controller.js';
import { FileStore } from '../src/state/file-store.js';
import { MemoryProvider } from '../test/support/memory-provider.js';
import { testRun } from '../test/support/runs.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const DOC = path.join(ROOT, 'docs/BENCHMARKS.md');
const RUNS = Number(process.env.BENCH_RUNS ?? 100);
const REPEATS = Number(process.env.BENCH_REPEATS ?? 3);
type Behaviour = 'answers 200' | 'answers 500' | 'never answers';

async function once(behaviour: Behaviour): Promise<{ ms: number; requests: number; open: number }> {
  let requests = 0;
  const held = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      requests++;
      if (behaviour === 'answers 200') res.writeHead(200).end('ok');
      else if (behaviour === 'answers 500') res.writeHead(500).end('down');
      else held.add(res);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`;
  const receivers: NotificationReceiver[] = [{ url, format: 'generic', events: ['Interrupted', 'Resumed', 'Completed'], timeout: '2m' }];
  const dir = mkdtempSync(path.join(os.tmpdir(), 'runctl-bench-notify-'));
  const store = new FileStore(dir, { fsync: true });
  await store.open();
  const runs = Array.from({ length: RUNS }, (_, i) => testRun(`run-${String(i).padStart(3, '0')}`));
  const provider = new MemoryProvider(
    { totalSteps: 60, stepsPerTick: 10, checkpointEvery: 10, spotAt: runs.map((r) => ({ run: r.run.metadata.name, attempt: 1, step: 30 })) },
    { pollIntervalMs: 5 },
  );
  const notifier = new Notifier({ store, project: receivers });
  const controller = new Controller({
    store,
    provider: async () => provider,
    load: async () => ({ runs, diagnostics: [], invalidFiles: [] }),
    controller: 'bench',
    repoRoot: ROOT,
    prune: false,
    notifier,
    notifications: receivers,
  });
  const started = performance.now();
  const summary = await controller.runUntilSettled();
  const ms = performance.now() - started;
  if (!summary.statuses.every((s) => s.phase === 'Completed' && s.interruptions === 1)) throw new Error('not every run completed after one interruption');
  const open = held.size;
  await notifier.stop();
  await controller.stop();
  await store.close();
  for (const res of held) res.destroy();
  await new Promise<void>((r) => server.close(() => r()));
  rmSync(dir, { recursive: true, force: true });
  return { ms, requests, open };
}

const behaviours: Behaviour[] = ['answers 200', 'answers 500', 'never answers'];
const rows: Array<{ behaviour: Behaviour; median: number; min: number; max: number; requests: number; open: number }> = [];
for (const behaviour of behaviours) {
  const samples: Array<{ ms: number; requests: number; open: number }> = [];
  for (let i = 0; i < REPEATS; i++) samples.push(await once(behaviour));
  const ms = samples.map((s) => s.ms).sort((a, b) => a - b);
  const last = samples.at(-1)!;
  rows.push({ behaviour, median: ms[Math.floor(ms.length / 2)]!, min: ms[0]!, max: ms.at(-1)!, requests: last.requests, open: last.open });
  process.stdout.write(`receiver ${behaviour}: all ${RUNS} runs Completed in median ${ms[Math.floor(ms.length / 2)]!.toFixed(0)} ms; receiver got ${last.requests} requests, ${last.open} still unanswered\n`);
}

const base = rows[0]!;
const worst = Math.max(...rows.map((r) => r.median / base.median));
const section = [
  '<!-- bench:notify-receivers:begin -->',
  '## Notifications: a failing receiver does not hold up reconciling',
  '',
  `**${RUNS} runs, each interrupted once, reach Completed in ${rows.map((r) => `${(r.median / 1000).toFixed(2)} s (receiver ${r.behaviour})`).join(', ')}: at most ${worst.toFixed(2)}× the healthy case.**`,
  `Command: \`npm run bench -- notify-receivers\` (\`BENCH_RUNS\`, \`BENCH_REPEATS\` change the size).`,
  '',
  'One controller (4 workers) drives every run from Pending through an interruption to Completed with the in-memory',
  'cloud (`test/support/memory-provider.ts`) and the file store (fsync on). Every run\'s Interrupted, Resumed and Completed go',
  'to one loopback receiver that answers 200, answers 500 to everything (retried with backoff), or never answers (each',
  'request held open; the timeout is 2 minutes, so every in-flight slot stays taken). The clock stops when every run is',
  'Completed; deliveries still owed at that point are what `reconcile` would wait up to 10 s for, or leave to the next controller.',
  'Delivery has a cost of its own (each attempt appends two records, fsync on, to the run\'s log, next to the',
  'reconciler\'s writes), so a receiver that answers costs more than one that never does: the silent receiver only',
  'ever gets the first 4 requests (the shared in-flight limit), and the rest wait without holding up any run.',
  '',
  '| receiver | median | min | max | requests it had got by then | of them unanswered |',
  '|---|---:|---:|---:|---:|---:|',
  ...rows.map((r) => `| ${r.behaviour} | ${r.median.toFixed(0)} ms | ${r.min.toFixed(0)} ms | ${r.max.toFixed(0)} ms | ${r.requests} | ${r.open} |`),
  '',
  `Measured ${new Date().toISOString().slice(0, 10)} on ${os.cpus().length} × ${os.cpus()[0]?.model.split(' ').slice(0, 2).join(' ') ?? 'CPU'}, Node ${process.version}, load average ${os.loadavg()[0]!.toFixed(1)} at the end`,
  `(median of ${REPEATS}; the machine was shared, so absolute numbers are rough: compare the rows).`,
  '<!-- bench:notify-receivers:end -->',
].join('\n');
const current = existsSync(DOC) ? readFileSync(DOC, 'utf8') : '# Benchmarks\n';
const marked = /<!-- bench:notify-receivers:begin -->[\s\S]*<!-- bench:notify-receivers:end -->/;
writeFileSync(DOC, marked.test(current) ? current.replace(marked, section) : `${current.trimEnd()}\n\n${section}\n`);
process.stdout.write(`wrote the notify-receivers section of ${path.relative(ROOT, DOC)}\n`);
