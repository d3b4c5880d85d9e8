import type { Command } from 'commander';
import { Controller, type Summary } from '../reconciler/controller.js';
import { loadDesired } from '../reconciler/desired.js';
import { formatDiagnostic } from '../spec/diagnostics.js';
import { LockHeldError } from '../state/types.js';
import type { RunEvent } from '../state/types.js';
import { colorsFor, LiveDisplay } from '../ui/index.js';
import { addCommonOptions, cliContext, reportProjectProblems, type CommonOptions } from './context.js';
import { FileStore } from '../state/file-store.js';

interface ReconcileOptions extends CommonOptions {
  once?: boolean;
  prune?: boolean;
  workers?: string;
}

export function register(program: Command): void {
  addCommonOptions(
    program
      .command('reconcile')
      .description('Drive every TrainingRun to its desired state; runs until all are Completed, Failed or Suspended')
      .argument('[paths...]', 'spec files or folders (default: runs/)')
      .option('--once', 'do a single pass over every run and return')
      .option('--prune', 'stop and forget runs whose spec files were removed (default: runctl.yaml prune)')
      .option('--workers <n>', 'runs reconciled at the same time', '4'),
  ).action(async (paths: string[], opts: ReconcileOptions) => {
    process.exitCode = await reconcileCommand(paths, opts);
  });
}

async function reconcileCommand(paths: string[], opts: ReconcileOptions): Promise<number> {
  const ctx = await cliContext(opts);
  if (reportProjectProblems(ctx)) return 1;
  const workers = Number(opts.workers ?? 4);
  if (!Number.isInteger(workers) || workers < 1 || workers > 64) {
    process.stderr.write(`runctl: --workers must be a whole number from 1 to 64 (got ${opts.workers})\n`);
    return 2;
  }
  const store = new FileStore(ctx.stateDir, { command: `runctl reconcile ${paths.join(' ')}`.trim() });
  try {
    const opened = await store.open();
    if (opened && opened.note) process.stderr.write(`runctl: ${opened.note}\n`);
  } catch (err) {
    if (err instanceof LockHeldError) {
      process.stderr.write(`runctl: ${err.message}\n`);
      return 1;
    }
    throw err;
  }

  const display = LiveDisplay.forStream(process.stdout, process.env);
  const colors = colorsFor(process.stdout, process.env);
  const printed = new Set<string>();
  const controller = new Controller({
    store,
    provider: (name) => ctx.providers.get(name),
    load: async () => {
      const desired = await loadDesired(paths, ctx.repoRoot, ctx.project);
      for (const d of desired.diagnostics) {
        const line = formatDiagnostic(d);
        if (!printed.has(line)) {
          printed.add(line);
          display.log(line);
        }
      }
      return desired;
    },
    controller: ctx.controller,
    repoRoot: ctx.repoRoot,
    prune: opts.prune ?? ctx.project.prune,
    workers,
    onStatus: () => display.update(controller.runs),
    onEvent: (e) => {
      const line = eventLine(e);
      if (line) display.log(colors.dim(line));
    },
    onError: (run, err, retryIn) => {
      display.log(`${run}: ${err instanceof Error ? err.message : String(err)} (retrying in ${Math.ceil(retryIn / 1000)}s)`);
    },
  });

  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let summary: Summary;
  try {
    summary = opts.once ? await controller.runOnce() : await controller.runUntilSettled(abort.signal);
    await controller.stop();
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    display.update(controller.runs);
    display.close();
    await store.close();
    await ctx.providers.close();
  }
  if (abort.signal.aborted) {
    process.stderr.write('runctl: stopped; runs keep going on their instances and the next `runctl reconcile` picks them up\n');
    return 0;
  }
  return finish(summary, opts.once === true);
}

function finish(summary: Summary, once: boolean): number {
  const invalid = summary.diagnostics.some((d) => d.severity === 'error');
  if (summary.statuses.length === 0 && !invalid) {
    process.stdout.write('No TrainingRuns found. Add one to runs/ (see runs/quickstart.yaml).\n');
  }
  if (summary.failed.length > 0) {
    for (const s of summary.statuses.filter((x) => x.phase === 'Failed')) {
      const failed = s.conditions.find((c) => c.type === 'Failed');
      process.stderr.write(`${s.run} failed: ${failed?.reason ?? s.failure?.reason ?? 'Failed'}: ${failed?.message ?? s.failure?.message ?? ''}\n`);
    }
    return 1;
  }
  if (invalid) {
    process.stderr.write('runctl: some spec files are invalid (see above); their runs were not changed\n');
    return 1;
  }
  if (!once) {
    const done = summary.statuses.map((s) => `${s.run} ${s.phase.toLowerCase()}`).join(', ');
    if (done) process.stdout.write(`All runs settled: ${done}.\n`);
  }
  return 0;
}

/** The events worth a line of their own above the live display. */
function eventLine(e: RunEvent): string | undefined {
  // Self-transitions (e.g. a rehearsal being armed) say nothing a person needs; the effect line does.
  if (e.kind === 'transition' && e.action.includes('->')) {
    const why = e.message && !/^[A-Z_]+$/.test(e.message) ? ` (${firstLine(e.message)})` : '';
    return `${e.run}: ${e.action}${why}`;
  }
  if (e.kind === 'effect' && (e.action === 'launch' || e.action === 'deliverSpotNotice' || e.result === 'error')) {
    return `${e.run}: ${e.message ?? e.action}`;
  }
  if (e.kind === 'error') return `${e.run}: ${e.action} failed: ${e.message ?? ''} (will retry)`;
  return undefined;
}

function firstLine(text: string): string {
  const line = text.split('\n')[0] ?? '';
  return line.length > 160 ? `${line.slice(0, 157)}...` : line;
}
