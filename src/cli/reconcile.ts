import type { Command } from 'commander';
import { Controller, type DesiredState, type Summary } from '../reconciler/controller.js';
import { controllerNotifier, finishNotifications } from './notifications.js';
import { loadDesired } from '../reconciler/desired.js';
import { GitFollower, withRevisions } from '../reconciler/git-follow.js';
import { RunctlMetrics, startMetricsServer, MetricsAddressError, type MetricsServer } from '../reconciler/metrics.js';
import { DEFAULT_RESYNC_INTERVAL_MS, SpecWatcher } from '../reconciler/watch.js';
import { DEFAULT_LEASE_TTL_MS } from '../state/lease.js';
import { LockHeldError } from '../state/types.js';
import { colorsFor, LiveDisplay } from '../ui/index.js';
import { openDashboard, remoteWarning, type DashboardServer } from '../web/index.js';
import {
  addCommonOptions,
  cliContext,
  durationOption,
  openControllerStore,
  reportProjectProblems,
  type CliOverrides,
  type CommonOptions,
  type ControllerStore,
} from './context.js';
import { DiagnosticsReporter, eventLine, noticePrinter } from './controller-output.js';
import { dashboardAddress } from './dashboard.js';
import { UsageError } from './errors.js';

export interface ReconcileOptions extends CommonOptions {
  once?: boolean;
  prune?: boolean;
  allowEmptyPrune?: boolean;
  workers?: string;
  watch?: boolean;
  pullInterval?: string;
  resyncInterval?: string;
  metrics?: string;
  dashboard?: string;
  dashboardAllowRemote?: boolean;
  leaseDuration?: string;
}

export function register(program: Command): void {
  addCommonOptions(
    program
      .command('reconcile')
      .description('Drive every TrainingRun to its desired state; runs until all are Completed, Failed or Suspended (or, with --watch, until stopped)')
      .argument('[paths...]', 'spec files or folders (default: runs/)')
      .option('--once', 'do a single pass over every run and return')
      .option('--watch', 'keep running: follow changes to the spec files and resync periodically; stop with Ctrl-C or SIGTERM (runs keep training)')
      .option('--pull-interval <duration>', 'with --watch: `git pull --ff-only` the repository this often (e.g. 1m)')
      .option('--resync-interval <duration>', 'with --watch: full resync this often, changes or not', '60s')
      .option('--prune', 'stop and forget runs whose spec files were removed (default: runctl.yaml prune)')
      .option('--allow-empty-prune', 'let prune delete every run when the runs folder holds none (refused otherwise)')
      .option('--metrics <addr>', 'serve Prometheus metrics at http://ADDR/metrics and /healthz (e.g. 127.0.0.1:9464)')
      .option('--dashboard <addr>', 'serve the read-only web dashboard at http://ADDR/ while reconciling (e.g. 127.0.0.1:8080; docs/dashboard.md)')
      .option('--dashboard-allow-remote', 'allow a non-loopback --dashboard address: only behind an authenticating reverse proxy')
      .option('--lease-duration <duration>', 'with shared state: how long a run lease lasts without renewal', `${DEFAULT_LEASE_TTL_MS / 1000}s`)
      .option('--workers <n>', 'runs reconciled at the same time', '4'),
  ).action(async (paths: string[], opts: ReconcileOptions) => {
    process.exitCode = await reconcileCommand(paths, opts);
  });
}

export async function reconcileCommand(paths: string[], opts: ReconcileOptions, overrides?: CliOverrides): Promise<number> {
  if (opts.watch && opts.once) throw new UsageError('--watch keeps running and --once does one pass: use one of them');
  if (opts.pullInterval !== undefined && !opts.watch) throw new UsageError('--pull-interval follows the repository while watching: add --watch');
  const pullMs = opts.pullInterval !== undefined ? durationOption('--pull-interval', opts.pullInterval, 0, 1000) : undefined;
  const resyncMs = durationOption('--resync-interval', opts.resyncInterval, DEFAULT_RESYNC_INTERVAL_MS, 1000);
  const leaseTtlMs = durationOption('--lease-duration', opts.leaseDuration, DEFAULT_LEASE_TTL_MS, 1000);
  const workers = Number(opts.workers ?? 4);
  if (!Number.isInteger(workers) || workers < 1 || workers > 64) {
    throw new UsageError(`--workers must be a whole number from 1 to 64 (got ${opts.workers})`);
  }
  if (opts.dashboardAllowRemote && opts.dashboard === undefined) throw new UsageError('--dashboard-allow-remote goes with --dashboard ADDR');
  const dashboardAt =
    opts.dashboard !== undefined ? dashboardAddress(opts.dashboard, '--dashboard', opts.dashboardAllowRemote === true, '--dashboard-allow-remote') : undefined;
  const ctx = await cliContext(opts, overrides);
  if (reportProjectProblems(ctx)) return 1;
  if (pullMs !== undefined) {
    const problem = await GitFollower.check(ctx.repoRoot);
    if (problem) throw new UsageError(problem);
  }

  let opened: ControllerStore;
  try {
    opened = await openControllerStore(ctx, { command: `runctl reconcile ${paths.join(' ')}`.trim(), leaseTtlMs });
  } catch (err) {
    process.stderr.write(`runctl: ${err instanceof LockHeldError ? err.message : `cannot open the state store: ${(err as Error).message}`}\n`);
    await ctx.providers.close();
    return 1;
  }
  if (opened.note) process.stderr.write(`runctl: ${opened.note}\n`);

  let metricsServer: MetricsServer | undefined;
  const metrics = opts.metrics !== undefined ? new RunctlMetrics() : undefined;
  if (metrics && opts.metrics !== undefined) {
    try {
      metricsServer = await startMetricsServer(opts.metrics, metrics.registry);
      process.stderr.write(`runctl: metrics at ${metricsServer.url}/metrics (health: ${metricsServer.url}/healthz)\n`);
    } catch (err) {
      await opened.close();
      await ctx.providers.close();
      if (err instanceof MetricsAddressError) throw new UsageError(err.message);
      throw err;
    }
  }

  let dashboard: DashboardServer | undefined;
  if (dashboardAt) {
    try {
      // Reads the store this controller writes, as `runctl dashboard` would: it never reconciles.
      dashboard = await openDashboard({
        store: opened.store,
        providers: ctx.providers,
        paths,
        repoRoot: ctx.repoRoot,
        project: ctx.project,
        address: dashboardAt,
        log: (line) => process.stderr.write(`runctl: ${line}\n`),
      });
      const warning = remoteWarning(dashboardAt);
      if (warning) process.stderr.write(`runctl: ${warning}\n`);
      process.stderr.write(`runctl: dashboard at ${dashboard.url}/\n`);
    } catch (err) {
      await metricsServer?.close();
      await opened.close();
      await ctx.providers.close();
      throw new UsageError(`--dashboard ${opts.dashboard}: ${(err as Error).message}`);
    }
  }

  const display = LiveDisplay.forStream(process.stdout, process.env);
  const colors = colorsFor(process.stdout, process.env);
  const diagnostics = new DiagnosticsReporter((line) => display.log(line));
  const load = async (): Promise<DesiredState> => {
    const desired = await withRevisions(await loadDesired(paths, ctx.repoRoot, ctx.project), ctx.repoRoot);
    diagnostics.report(desired.diagnostics, desired.invalidFiles);
    return desired;
  };
  const notifier = controllerNotifier({
    store: opened.store,
    project: ctx.project,
    metrics,
    leases: opened.leases,
    print: (line) => display.log(line),
    onEvent: (e) => {
      const line = eventLine(e);
      if (line) display.log(colors.dim(line));
    },
    nudge: (run) => controller.nudge(run),
  });
  const controller = new Controller({
    store: opened.store,
    notifier,
    notifications: ctx.project.notifications,
    provider: (name) => ctx.providers.get(name),
    load,
    controller: ctx.controller,
    repoRoot: ctx.repoRoot,
    prune: opts.prune ?? ctx.project.prune,
    allowEmptyPrune: opts.allowEmptyPrune,
    workers,
    leases: opened.leases,
    metrics,
    onStatus: () => display.update(controller.runs),
    onEvent: (e) => {
      const line = eventLine(e);
      if (line) display.log(colors.dim(line));
    },
    onError: (run, err, retryIn) => {
      display.log(`${run}: ${err instanceof Error ? err.message : String(err)} (retrying in ${Math.ceil(retryIn / 1000)}s)`);
    },
    onNotice: noticePrinter((line) => display.log(line)),
  });

  const abort = new AbortController();
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    signals++;
    if (signals > 1) {
      // A second Ctrl-C: the user will not wait for the effect in flight. Intents are persisted
      // before effects, so the next controller replays whatever was cut short.
      process.stderr.write(`runctl: ${signal} again: exiting now; the next controller finishes what was in flight\n`);
      process.exit(130);
    }
    process.stderr.write(`runctl: ${signal}: finishing the work in flight, then stopping (${signal} again to exit at once)\n`);
    abort.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  let summary: Summary | undefined;
  try {
    if (opts.watch) {
      await watchUntilAborted(controller, {
        paths: paths.length > 0 ? paths : [`${ctx.repoRoot}/runs`],
        repoRoot: ctx.repoRoot,
        resyncMs,
        pullMs,
        signal: abort.signal,
        log: (line) => display.log(line),
        store: opened.description,
      });
    } else {
      summary = opts.once ? await controller.runOnce() : await controller.runUntilSettled(abort.signal);
    }
    await finishNotifications(notifier, (line) => display.log(line), abort.signal);
    await controller.stop();
  } finally {
    await notifier.stop();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    display.update(controller.runs);
    display.close();
    await dashboard?.close();
    await opened.close();
    await ctx.providers.close();
    await metricsServer?.close();
  }
  if (abort.signal.aborted || !summary) {
    process.stderr.write('runctl: stopped; runs keep going on their instances and the next `runctl reconcile` picks them up\n');
    return 0;
  }
  return finish(summary, opts.once === true);
}

interface WatchSettings {
  paths: string[];
  repoRoot: string;
  resyncMs: number;
  pullMs?: number;
  signal: AbortSignal;
  log(line: string): void;
  store: string;
}

/** `reconcile --watch`: reconcile, then follow the files (and the repository) until a signal. */
async function watchUntilAborted(controller: Controller, w: WatchSettings): Promise<void> {
  w.log(`runctl: watching ${w.paths.join(', ')} (state: ${w.store}); resync every ${Math.round(w.resyncMs / 1000)}s${w.pullMs ? `, git pull every ${Math.round(w.pullMs / 1000)}s` : ''}`);
  await controller.resync();
  const watcher = await SpecWatcher.start({
    paths: w.paths,
    resyncIntervalMs: w.resyncMs,
    reload: async ({ files }) => {
      if (files.length > 0) w.log(`runctl: spec change: ${[...new Set(files)].map((f) => shortPath(f, w.repoRoot)).join(', ')}`);
      await controller.resync();
    },
    onError: (err) => w.log(`runctl: watching the runs folder: ${err.message} (the periodic resync still runs)`),
  });
  const follower =
    w.pullMs !== undefined
      ? new GitFollower({
          repoRoot: w.repoRoot,
          intervalMs: w.pullMs,
          onPull: (o) => {
            if (!o.ok) w.log(`runctl: ${o.message}; trying again in ${Math.round((w.pullMs as number) / 1000)}s`);
            else if (o.before !== o.after) {
              w.log(`runctl: pulled ${o.before?.slice(0, 12) ?? '(none)'}..${o.after?.slice(0, 12) ?? '(none)'}`);
              watcher.trigger();
            }
          },
        })
      : undefined;
  follower?.start();
  try {
    if (!w.signal.aborted) await new Promise<void>((resolve) => w.signal.addEventListener('abort', () => resolve(), { once: true }));
  } finally {
    await watcher.close();
    await follower?.stop();
  }
}

function shortPath(file: string, root: string): string {
  return file.startsWith(`${root}/`) ? file.slice(root.length + 1) : file;
}

function finish(summary: Summary, once: boolean): number {
  const invalid = summary.diagnostics.some((d) => d.severity === 'error');
  // Already printed as notices while reconciling; repeated last so they are not lost in the output.
  for (const u of summary.unreadable) process.stderr.write(`${u.run}: ${u.message}\n`);
  if (summary.statuses.length === 0 && !invalid && summary.unreadable.length === 0) {
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
  if (summary.unreadable.length > 0) return 1;
  if (!once) {
    const done = summary.statuses.map((s) => `${s.run} ${s.phase.toLowerCase()}`).join(', ');
    if (done) process.stdout.write(`All runs settled: ${done}.\n`);
  }
  return 0;
}
