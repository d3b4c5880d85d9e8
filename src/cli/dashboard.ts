import type { Command } from 'commander';
import { DashboardAddressError, DEFAULT_DASHBOARD_ADDRESS, openDashboard, parseDashboardAddress, remoteWarning, type DashboardAddress } from '../web/index.js';
import { addCommonOptions, cliContext, readOnlyStore, reportProjectProblems, type CommonOptions } from './context.js';
import { UsageError } from './errors.js';

interface DashboardOptions extends CommonOptions {
  listen: string;
  allowRemote?: boolean;
}

export function register(program: Command): void {
  addCommonOptions(
    program
      .command('dashboard')
      .description('Serve a read-only web page of every run: progress, loss across attempts, events, logs (docs/dashboard.md)')
      .argument('[paths...]', 'spec files or folders the run labels come from (default: runs/)')
      .option('--listen <addr>', 'address to serve on, host:port (loopback only unless --allow-remote)', DEFAULT_DASHBOARD_ADDRESS)
      .option('--allow-remote', 'allow a non-loopback --listen address: only behind an authenticating reverse proxy (docs/dashboard.md)'),
  ).action(async (paths: string[], opts: DashboardOptions) => {
    const address = dashboardAddress(opts.listen, '--listen', opts.allowRemote === true, '--allow-remote');
    const ctx = await cliContext(opts);
    if (reportProjectProblems(ctx)) {
      process.exitCode = 1;
      return;
    }
    const store = readOnlyStore(ctx);
    let server;
    try {
      server = await openDashboard({
        store,
        providers: ctx.providers,
        paths,
        repoRoot: ctx.repoRoot,
        project: ctx.project,
        address,
        log: (line) => process.stderr.write(`runctl: ${line}\n`),
      });
    } catch (err) {
      await store.close();
      await ctx.providers.close();
      throw new UsageError(`--listen ${opts.listen}: ${(err as Error).message}`);
    }
    const warning = remoteWarning(address);
    if (warning) process.stderr.write(`runctl: ${warning}\n`);
    process.stderr.write(`runctl: dashboard at ${server.url}/ (state: ${ctx.stateUrl ?? ctx.stateDir}); stop with Ctrl-C\n`);
    await new Promise<void>((resolve) => {
      const stop = () => resolve();
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
    });
    await server.close();
    await store.close();
    await ctx.providers.close();
  });
}

/** `--listen`/`--dashboard` as an address, or a usage error (exit 2) saying what would be valid. */
export function dashboardAddress(value: string, flag: string, allowRemote: boolean, allowFlag: string): DashboardAddress {
  try {
    return parseDashboardAddress(value, { flag, allowRemote, allowFlag });
  } catch (err) {
    if (err instanceof DashboardAddressError) throw new UsageError(err.message);
    throw err;
  }
}
