// `runctl apply [PATH...]`: print the plan, then one reconcile pass over the same desired state,
// which starts or updates exactly what the plan showed, and return (CI on merge to main).
// `--wait` keeps reconciling until every run is Completed, Failed or Suspended.
import type { Command } from 'commander';
import { Controller, type Summary } from '../reconciler/controller.js';
import type { RunEvent } from '../state/types.js';
import { controllerNotifier, finishNotifications } from './notifications.js';
import { loadDesired } from '../reconciler/desired.js';
import { withRevisions } from '../reconciler/git-follow.js';
import { CHANGING_ACTIONS } from '../reconciler/plan.js';
import { DEFAULT_LEASE_TTL_MS } from '../state/lease.js';
import { LockHeldError } from '../state/types.js';
import { colorsFor } from '../ui/index.js';
import { addCommonOptions, cliContext, durationOption, openControllerStore, reportProjectProblems, type CliOverrides, type CommonOptions, type ControllerStore } from './context.js';
import { eventLine, noticePrinter } from './controller-output.js';
import { UsageError } from './errors.js';
import { planWithCloudChecks, printPlan, readStatuses } from './plan.js';

export interface ApplyOptions extends CommonOptions {
  prune?: boolean;
  allowEmptyPrune?: boolean;
  wait?: boolean;
  /** False with --no-cloud-checks. */
  cloudChecks?: boolean;
  workers?: string;
  leaseDuration?: string;
}

export function register(program: Command): void {
  addCommonOptions(
    program
      .command('apply')
      .description('Print the plan, then do one reconcile pass that carries it out, and return (--wait: until every run is done)')
      .argument('[paths...]', 'spec files or folders (default: runs/)')
      .option('--prune', 'stop and forget runs whose spec files were removed (default: runctl.yaml prune)')
      .option('--allow-empty-prune', 'let prune delete every run when the runs folder holds none (refused otherwise)')
      .option('--wait', 'keep reconciling until every run is Completed, Failed or Suspended')
      .option('--no-cloud-checks', 'skip checking instance types against the cloud before launching (see `runctl plan --help`)')
      .option('--lease-duration <duration>', 'with shared state: how long a run lease lasts without renewal', `${DEFAULT_LEASE_TTL_MS / 1000}s`)
      .option('--workers <n>', 'runs reconciled at the same time', '4'),
  ).action(async (paths: string[], opts: ApplyOptions) => {
    process.exitCode = await applyCommand(paths, opts);
  });
}

export async function applyCommand(paths: string[], opts: ApplyOptions, overrides?: CliOverrides): Promise<number> {
  const leaseTtlMs = durationOption('--lease-duration', opts.leaseDuration, DEFAULT_LEASE_TTL_MS, 1000);
  const workers = Number(opts.workers ?? 4);
  if (!Number.isInteger(workers) || workers < 1 || workers > 64) {
    throw new UsageError(`--workers must be a whole number from 1 to 64 (got ${opts.workers})`);
  }
  const ctx = await cliContext(opts, overrides);
  if (reportProjectProblems(ctx)) return 1;
  let opened: ControllerStore;
  try {
    opened = await openControllerStore(ctx, { command: `runctl apply ${paths.join(' ')}`.trim(), leaseTtlMs });
  } catch (err) {
    process.stderr.write(`runctl: ${err instanceof LockHeldError ? err.message : `cannot open the state store: ${(err as Error).message}`}\n`);
    await ctx.providers.close();
    return 1;
  }
  if (opened.note) process.stderr.write(`runctl: ${opened.note}\n`);

  const colors = colorsFor(process.stdout, process.env);
  const print = (line: string) => process.stdout.write(`${line}\n`);
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let summary: Summary;
  let planned: Map<string, string>;
  const leftToOthers = new Set<string>();
  try {
    // Loaded once: the plan printed and the pass that follows read the very same desired state.
    const loaded = await withRevisions(await loadDesired(paths, ctx.repoRoot, ctx.project), ctx.repoRoot);
    // Runs failing a cloud check are left out of the pass as if their files had errors.
    const { plan, desired } = await planWithCloudChecks(loaded, await readStatuses(opened.store), opts, ctx);
    printPlan(plan, desired, 'text', opened.description);
    planned = new Map(plan.runs.filter((r) => CHANGING_ACTIONS.has(r.action)).map((r) => [r.run, r.action]));
    const notices = noticePrinter(print);
    const onEvent = (e: RunEvent) => {
      const line = eventLine(e);
      if (line) print(colors.dim(line));
    };
    const notifier = controllerNotifier({ store: opened.store, project: ctx.project, leases: opened.leases, print, onEvent, nudge: (run) => controller.nudge(run) });
    const controller = new Controller({
      store: opened.store,
      notifier,
      notifications: ctx.project.notifications,
      provider: (name) => ctx.providers.get(name),
      load: async () => desired,
      controller: ctx.controller,
      repoRoot: ctx.repoRoot,
      prune: opts.prune ?? ctx.project.prune,
      allowEmptyPrune: opts.allowEmptyPrune,
      workers,
      leases: opened.leases,
      onEvent,
      onError: (run, err, retryIn) => print(`${run}: ${err instanceof Error ? err.message : String(err)} (retrying in ${Math.ceil(retryIn / 1000)}s)`),
      onNotice: (n) => {
        if (n.kind === 'lease-held-elsewhere' || n.kind === 'stood-down' || n.kind === 'lease-lost') leftToOthers.add(n.run);
        // The plan already said why prune waits; the pass need not say it twice.
        if (n.kind !== 'prune-refused') notices(n);
      },
    });
    try {
      summary = opts.wait ? await controller.runUntilSettled(abort.signal) : await controller.runOnce();
      await finishNotifications(notifier, print, abort.signal);
    } finally {
      await notifier.stop();
      await controller.stop();
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await opened.close();
    await ctx.providers.close();
  }

  print('');
  for (const [run, action] of planned) {
    const now = summary.statuses.find((s) => s.run === run);
    if (leftToOthers.has(run)) print(`${run}: ${action} not applied here: another controller holds the run and will apply it`);
    else print(`${run}: ${action} applied; now ${now?.phase ?? 'gone (archived)'}`);
  }
  const invalid = summary.diagnostics.some((d) => d.severity === 'error');
  if (abort.signal.aborted) {
    process.stderr.write('runctl: stopped; runs keep going on their instances and the next `runctl apply` or `reconcile` picks them up\n');
    return 0;
  }
  if (opts.wait && summary.failed.length > 0) {
    for (const s of summary.statuses.filter((x) => x.phase === 'Failed')) {
      process.stderr.write(`${s.run} failed: ${s.failure?.reason ?? 'Failed'}: ${s.failure?.message ?? ''}\n`);
    }
    return 1;
  }
  if (invalid) {
    process.stderr.write('runctl: some spec files are invalid (see above); their runs were not changed\n');
    return 1;
  }
  const applied = [...planned.keys()].filter((r) => !leftToOthers.has(r)).length;
  print(`Apply complete: ${applied} run${applied === 1 ? '' : 's'} changed${leftToOthers.size ? `, ${leftToOthers.size} left to another controller` : ''}.`);
  return 0;
}
