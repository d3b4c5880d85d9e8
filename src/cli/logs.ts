import type { Command } from 'commander';
import { runLogs, RunNotFoundError } from '../reconciler/operations.js';
import { TERMINAL_PHASES } from '../state/types.js';
import { addCommonOptions, cliContext, readOnlyStore, type CommonOptions } from './context.js';
import { UsageError } from './errors.js';

interface LogsOptions extends CommonOptions {
  follow?: boolean;
  attempt?: string;
}

const FOLLOW_POLL_MS = 1000;

export function register(program: Command): void {
  addCommonOptions(
    program
      .command('logs')
      .description("Print a run's logs from storage, every attempt in order; -f follows live output")
      .argument('<run>', 'run name')
      .option('-f, --follow', 'keep printing new output until the run settles')
      .option('--attempt <n>', 'only this attempt'),
  ).action(async (run: string, opts: LogsOptions) => {
    const only = opts.attempt === undefined ? undefined : Number(opts.attempt);
    if (only !== undefined && (!Number.isInteger(only) || only < 1)) {
      throw new UsageError(`--attempt must be a whole number from 1 (got "${opts.attempt}")`);
    }
    const ctx = await cliContext(opts);
    const store = readOnlyStore(ctx);
    try {
      const cursors = new Map<number, string | undefined>();
      let printedHeader = 0;
      for (;;) {
        const { status, reader } = await runLogs(store, ctx.providers, run);
        const attempts = only === undefined ? reader.attempts : reader.attempts.filter((a) => a === only);
        if (only !== undefined && attempts.length === 0 && !opts.follow) {
          throw new UsageError(`run "${run}" has no attempt ${only} (attempts: ${reader.attempts.join(', ') || 'none yet'})`);
        }
        for (const attempt of attempts) {
          const chunk = await reader.read(attempt, cursors.get(attempt));
          if (chunk.text) {
            if (printedHeader !== attempt && only === undefined) {
              process.stdout.write(`==> ${run} attempt ${attempt} <==\n`);
              printedHeader = attempt;
            }
            process.stdout.write(chunk.text.endsWith('\n') ? chunk.text : `${chunk.text}\n`);
          }
          cursors.set(attempt, chunk.cursor);
        }
        if (!opts.follow || TERMINAL_PHASES.includes(status.phase)) break;
        await new Promise((r) => setTimeout(r, FOLLOW_POLL_MS));
      }
    } catch (err) {
      if (err instanceof RunNotFoundError) {
        process.stderr.write(`runctl: ${err.message}\n`);
        process.exitCode = 1;
        return;
      }
      throw err;
    } finally {
      await ctx.providers.close();
    }
  });
}
