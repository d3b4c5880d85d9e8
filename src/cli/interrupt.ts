import type { Command } from 'commander';
import { interruptRun } from '../reconciler/operations.js';
import { addCommonOptions, cliContext, readOnlyStore, type CommonOptions } from './context.js';

export function register(program: Command): void {
  addCommonOptions(
    program
      .command('interrupt')
      .description("Rehearse a spot interruption: deliver a notice to the run's current instance")
      .argument('<run>', 'run name'),
  ).action(async (run: string, opts: CommonOptions) => {
    const ctx = await cliContext(opts);
    try {
      const { instanceId, attempt } = await interruptRun(readOnlyStore(ctx), ctx.providers, run);
      process.stdout.write(
        `Delivered a spot interruption notice to ${instanceId} (attempt ${attempt}). The agent checkpoints and stops; ` +
          'the controller resumes the run on new capacity.\n',
      );
    } catch (err) {
      process.stderr.write(`runctl: ${err instanceof Error ? err.message : String(err)}\n`);
      process.exitCode = 1;
    } finally {
      await ctx.providers.close();
    }
  });
}
