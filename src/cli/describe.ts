import type { Command } from 'commander';
import { requireStatus, RunNotFoundError } from '../reconciler/operations.js';
import { setupCache, setupCommand, type RunSpec } from '../spec/types.js';
import { eventsOfIncarnation } from '../state/identity.js';
import { colorsFor, renderDescribe } from '../ui/index.js';
import { addCommonOptions, cliContext, readOnlyStore, type CommonOptions } from './context.js';

export function register(program: Command): void {
  addCommonOptions(
    program
      .command('describe')
      .description('Show one run in detail: spec summary, conditions, instances with cost, event history')
      .argument('<run>', 'run name'),
  ).action(async (run: string, opts: CommonOptions) => {
    const ctx = await cliContext(opts);
    const store = readOnlyStore(ctx);
    try {
      const status = await requireStatus(store, run);
      // Only this incarnation's: a cut-short deletion can leave a predecessor's events in the log.
      const events = eventsOfIncarnation(status.uid, await store.readEvents(run));
      process.stdout.write(
        renderDescribe({ status, events, spec: specSummary(status.spec), now: Date.now(), colors: colorsFor(process.stdout, process.env) }),
      );
    } catch (err) {
      if (err instanceof RunNotFoundError) {
        process.stderr.write(`runctl: ${err.message}\n`);
        process.exitCode = 1;
        return;
      }
      throw err;
    }
  });
}

function specSummary(spec: RunSpec): [string, string][] {
  const r = spec.resources;
  const rows: [string, string][] = [
    ['Provider', spec.provider],
    ['Code', spec.code.path + (spec.code.include?.length ? ` (include ${spec.code.include.join(', ')})` : '')],
    ['Setup', setupCommand(spec) ?? '(none)'],
  ];
  const cache = setupCache(spec);
  if (cache) rows.push(['Setup cache', `${cache.paths.join(', ')} keyed by ${cache.key.join(', ')}`]);
  rows.push(['Run', spec.run]);
  if (spec.provider === 'aws') {
    rows.push(['Instance types', r.instanceTypes.join(', ')]);
    rows.push(['Market', r.market + (r.maxSpotPrice !== undefined ? ` (max $${r.maxSpotPrice}/h)` : '')]);
    rows.push(['Region', [r.region, r.availabilityZones.join(', ')].filter(Boolean).join(' ')]);
  }
  rows.push(['Checkpoints', `${spec.checkpoints.dir} -> ${spec.checkpoints.storage ?? '(local storage)'} every ${spec.checkpoints.syncInterval}, keep ${spec.checkpoints.keep}`]);
  rows.push(['Recovery', `max ${spec.recovery.maxInterruptions} interruptions, ${spec.recovery.maxRetriesOnError} retries on error`]);
  rows.push(['Timeouts', `provisioning ${spec.timeouts.provisioning}, installing ${spec.timeouts.installing}, training ${spec.timeouts.training}`]);
  if (spec.budget.maxCostUSD !== undefined) rows.push(['Budget', `$${spec.budget.maxCostUSD}`]);
  if (Object.keys(spec.env).length) rows.push(['Env', Object.keys(spec.env).join(', ')]);
  // Secret references are names and paths, never values; show only the names.
  if (Object.keys(spec.secrets).length) rows.push(['Secrets', Object.keys(spec.secrets).join(', ')]);
  if (spec.suspend) rows.push(['Suspend', 'true']);
  return rows;
}
