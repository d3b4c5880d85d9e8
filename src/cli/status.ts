import type { Command } from 'commander';
import { unreadableAdvice } from '../reconciler/rebuild.js';
import { StatusUnreadableError } from '../state/status-record.js';
import type { RunStatus } from '../state/types.js';
import { colorsFor, renderStatusTable } from '../ui/index.js';
import { addCommonOptions, cliContext, readOnlyStore, type CommonOptions } from './context.js';
import { UsageError } from './errors.js';

interface StatusOptions extends CommonOptions {
  output: string;
}

export function register(program: Command): void {
  addCommonOptions(
    program
      .command('status')
      .description('Show every run (or one): phase, attempt, age, instance, last checkpoint')
      .argument('[run]', 'only this run')
      .option('-o, --output <format>', 'table or json', 'table'),
  ).action(async (run: string | undefined, opts: StatusOptions) => {
    if (opts.output !== 'table' && opts.output !== 'json') {
      throw new UsageError(`--output must be table or json (got "${opts.output}")`);
    }
    const ctx = await cliContext(opts);
    const store = readOnlyStore(ctx);
    const names = run ? [run] : await store.listRuns();
    const statuses: RunStatus[] = [];
    const unreadable: { run: string; file: string; problem: string; fix: string }[] = [];
    for (const name of names) {
      try {
        const s = await store.getStatus(name);
        if (s) statuses.push(s);
      } catch (err) {
        // One damaged record is that run's problem: list it with its file and the fix, show the rest.
        if (!(err instanceof StatusUnreadableError)) throw err;
        unreadable.push({ run: name, file: err.file, problem: err.problem, fix: await unreadableAdvice(store, name, err) });
      }
    }
    if (unreadable.length > 0) process.exitCode = 1;
    if (run && statuses.length === 0 && unreadable.length === 0) {
      const known = await store.listRuns();
      process.stderr.write(`runctl: no run named "${run}"${known.length ? ` (known runs: ${known.join(', ')})` : ''}\n`);
      process.exitCode = 1;
      return;
    }
    if (opts.output === 'json') {
      const rows = [...statuses.map(publicStatus), ...unreadable.map((u) => ({ run: u.run, unreadable: { file: u.file, problem: u.problem, fix: u.fix } }))];
      process.stdout.write(`${JSON.stringify(rows.sort((a, b) => a.run.localeCompare(b.run)), null, 2)}\n`);
    } else {
      if (statuses.length > 0 || unreadable.length === 0) {
        process.stdout.write(renderStatusTable(statuses, { now: Date.now(), colors: colorsFor(process.stdout, process.env) }));
      }
      for (const u of unreadable) {
        process.stdout.write(`${u.run}: UNREADABLE status record ${u.file}: ${u.problem}. To fix: ${u.fix}\n`);
      }
    }
  });
}

/** The status as users see it: no machine internals, no pending intents. */
export function publicStatus(s: RunStatus) {
  return {
    run: s.run,
    uid: s.uid,
    phase: s.phase,
    generation: s.generation,
    observedGeneration: s.observedGeneration,
    attempt: s.attempt,
    interruptions: s.interruptions,
    errorRetries: s.errorRetries,
    conditions: s.conditions,
    progress: s.progress ?? null,
    lastCheckpoint: s.lastCheckpoint ?? null,
    instances: s.instances,
    costUSD: s.costUSD,
    // Per attempt: moments and cost; per interruption: recovery seconds, steps redone (docs/recovery.md).
    ledger: s.ledger ?? null,
    deadlines: s.deadlines,
    failure: s.failure ?? null,
    source: s.source ?? null,
    createdAt: s.createdAt,
    updatedAt: s.updatedAt,
  };
}
