// `runctl plan [PATH...]`: what a reconcile pass would change, run by run, without changing
// anything: no lock, no lease, no effect. The only cloud calls are the read-only checks of runs a
// pass would launch capacity for (instance types offered where asked: reconciler/preflight.ts)
// and one tag-filtered listing of this controller's instances for orphaned ones the pass's sweep
// terminates (reconciler/plan-orphans.ts), unless --no-cloud-checks. Exit codes as Terraform's: 0 no changes, 1 error (including invalid
// spec files and failed cloud checks), 2 changes when --detailed-exitcode is given (else 0).
import { Option, type Command } from 'commander';
import { planChanges, withOrphanedInstances, type Plan } from '../reconciler/plan.js';
import { findPlannedOrphans } from '../reconciler/plan-orphans.js';
import { pricePlan } from '../reconciler/plan-prices.js';
import { preflightPlan, withoutRefused } from '../reconciler/preflight.js';
import type { DesiredState } from '../reconciler/controller.js';
import { formatDiagnostic, formatGithubAnnotation } from '../spec/diagnostics.js';
import type { RunSpec } from '../spec/types.js';
import type { RunStatus, StateStore } from '../state/types.js';
import { colorsFor } from '../ui/index.js';
import { addCommonOptions, cliContext, readOnlyStore, reportProjectProblems, type CliContext, type CliOverrides, type CommonOptions } from './context.js';
import { UsageError } from './errors.js';
import { PLAN_FORMATS, renderPlanJson, renderPlanMarkdown, renderPlanText, type PlanFormat } from './plan-output.js';

export interface PlanOptions extends CommonOptions {
  detailedExitcode?: boolean;
  format: PlanFormat;
  prune?: boolean;
  allowEmptyPrune?: boolean;
  /** False with --no-cloud-checks. */
  cloudChecks?: boolean;
  /** --show-bundle: list what each run's code bundle holds. */
  showBundle?: boolean;
}

export function register(program: Command): void {
  addCommonOptions(
    program
      .command('plan')
      .description('Show what a reconcile pass would change for each run (create, update in place, new generation, suspend, resume, prune) without changing anything')
      .argument('[paths...]', 'spec files or folders (default: runs/)')
      .option('--detailed-exitcode', 'exit 2 when there are changes (0 none, 1 error), as `terraform plan -detailed-exitcode`')
      .addOption(new Option('--format <format>', 'output format (markdown suits a CI job summary)').choices([...PLAN_FORMATS]).default('text'))
      .option('--prune', 'plan with prune on (default: runctl.yaml prune)')
      .option('--allow-empty-prune', 'plan as if prune may delete every run when the runs folder holds none')
      .option('--show-bundle', "list what each run's code bundle holds: file count, size, and the files shipped only because of code.include")
      .option('--no-cloud-checks', 'skip checking instance types against the cloud (DescribeInstanceTypeOfferings) for runs that would launch, and looking for orphaned instances (DescribeInstances)'),
  )
    // With --detailed-exitcode, 2 means "changes": a usage mistake must not look like one.
    .exitOverride((err) => {
      if (err.exitCode === 0) throw err;
      throw new UsageError('', 1);
    })
    .action(async (paths: string[], opts: PlanOptions) => {
      process.exitCode = await planCommand(paths, opts);
    });
}

export async function planCommand(paths: string[], opts: PlanOptions, overrides?: CliOverrides): Promise<number> {
  let ctx: CliContext;
  try {
    ctx = await cliContext(opts, overrides);
  } catch (err) {
    if (err instanceof UsageError) throw new UsageError(err.message, 1);
    throw err;
  }
  if (reportProjectProblems(ctx)) return 1;
  const { loadDesired } = await import('../reconciler/desired.js');
  const desired = await loadDesired(paths, ctx.repoRoot, ctx.project);
  const store = readOnlyStore(ctx);
  let statuses: RunStatus[];
  try {
    statuses = await readStatuses(store);
  } catch (err) {
    process.stderr.write(`runctl: cannot read the state store (${storeName(ctx)}): ${(err as Error).message}\n`);
    return 1;
  } finally {
    await store.close();
  }
  let checked: { plan: Plan; desired: DesiredState };
  try {
    checked = await planWithCloudChecks(desired, statuses, opts, ctx);
  } finally {
    await ctx.providers.close();
  }
  const { plan } = checked;
  if (opts.showBundle) {
    const { listRunBundles, renderBundlesText } = await import('./bundle-listing.js');
    const bundles = await listRunBundles(checked.desired.runs, ctx.repoRoot);
    if (opts.format === 'json') {
      const doc = JSON.parse(renderPlanJson(plan, checked.desired.diagnostics, { store: storeName(ctx) })) as Record<string, unknown>;
      process.stdout.write(`${JSON.stringify({ ...doc, bundles }, null, 2)}\n`);
    } else {
      printPlan(plan, checked.desired, opts.format, storeName(ctx));
      process.stdout.write(renderBundlesText(bundles));
    }
  } else printPlan(plan, checked.desired, opts.format, storeName(ctx));
  if (plan.invalidFiles.length > 0 || checked.desired.diagnostics.some((d) => d.severity === 'error')) return 1;
  return opts.detailedExitcode && plan.changes > 0 ? 2 : 0;
}

/** The plan for these inputs, as `apply` computes it too. */
export function computePlan(desired: DesiredState, statuses: readonly RunStatus[], opts: { prune?: boolean; allowEmptyPrune?: boolean }, ctx: CliContext): Plan {
  return planChanges({ desired, statuses, prune: opts.prune ?? ctx.project.prune, allowEmptyPrune: opts.allowEmptyPrune });
}

/**
 * The plan, after checking against the cloud the runs it would launch (unless --no-cloud-checks).
 * A run that fails a check is planned as if its file had an error: nothing is launched or pruned
 * for it, and the check's diagnostics join the spec diagnostics. Then orphaned instances are looked
 * for (one listing per provider) and join the plan. A check that cannot be made is said on stderr
 * and skipped.
 */
export async function planWithCloudChecks(
  desired: DesiredState,
  statuses: readonly RunStatus[],
  opts: { prune?: boolean; allowEmptyPrune?: boolean; cloudChecks?: boolean },
  ctx: CliContext,
): Promise<{ plan: Plan; desired: DesiredState }> {
  const plan = computePlan(desired, statuses, opts, ctx);
  if (opts.cloudChecks === false) return { plan, desired };
  const provider = (name: RunSpec['provider']) => ctx.providers.get(name);
  const checked = await preflightPlan(desired, plan, provider);
  for (const u of checked.unchecked) {
    process.stderr.write(`runctl: warning: could not check instance types of ${u.run} against EC2 offerings: ${u.message}\n`);
  }
  const narrowed = checked.diagnostics.length === 0 ? desired : withoutRefused(desired, checked);
  const planned = narrowed === desired ? plan : computePlan(narrowed, statuses, opts, ctx);
  const orphans = await findPlannedOrphans(narrowed, statuses, provider, Date.now());
  for (const u of orphans.unchecked) {
    process.stderr.write(`runctl: warning: could not look for orphaned instances (${u.provider}): ${u.message}\n`);
  }
  const priced = await pricePlan(narrowed, planned, provider);
  for (const u of priced.unpriced) {
    process.stderr.write(`runctl: warning: could not read the prices of ${u.run}: ${u.message}\n`);
  }
  return { plan: orphans.unchecked.length > 0 ? priced.plan : withOrphanedInstances(priced.plan, orphans.instances), desired: narrowed };
}

export function printPlan(plan: Plan, desired: DesiredState, format: PlanFormat, store: string): void {
  if (format === 'json') {
    process.stdout.write(renderPlanJson(plan, desired.diagnostics, { store }));
    return;
  }
  // Spec problems go to stderr as `validate` prints them; in a GitHub workflow as annotations too.
  const annotate = process.env.GITHUB_ACTIONS === 'true';
  for (const d of desired.diagnostics) process.stderr.write(`${annotate ? formatGithubAnnotation(d) : formatDiagnostic(d)}\n`);
  process.stdout.write(format === 'markdown' ? renderPlanMarkdown(plan, { store }) : renderPlanText(plan, { store, colors: colorsFor(process.stdout, process.env) }));
}

export async function readStatuses(store: StateStore): Promise<RunStatus[]> {
  const out: RunStatus[] = [];
  for (const run of await store.listRuns()) {
    const s = await store.getStatus(run);
    if (s) out.push(s);
  }
  return out;
}

export function storeName(ctx: CliContext): string {
  return ctx.stateUrl ?? (ctx.stateDir.startsWith(`${process.cwd()}/`) ? ctx.stateDir.slice(process.cwd().length + 1) : ctx.stateDir);
}
