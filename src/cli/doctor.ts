// `runctl doctor [PATH...]`: is the account ready for these runs? The checks live with the provider
// (src/providers/aws/doctor/); this file picks the runs, prints one line per check (pass, warn,
// fail, with the fix), or JSON with -o json. Exit 0 when nothing fails, 1 otherwise, 2 on a usage
// error. Read-only, except for the one probe object per storage location, which it deletes.
import fs from 'node:fs';
import path from 'node:path';
import { Option, type Command } from 'commander';
import type { DoctorCheck, DoctorTarget } from '../providers/types.js';
import { formatDiagnostic } from '../spec/diagnostics.js';
import { colorsFor } from '../ui/index.js';
import { cliContext, reportProjectProblems, type CliOverrides } from './context.js';
import { UsageError } from './errors.js';

export interface DoctorOptions {
  output: 'text' | 'json';
  endpointUrl?: string;
}

export function register(program: Command): void {
  program
    .command('doctor')
    .description('Check that the AWS account is ready for the runs: credentials, bucket, instance profile and role, image, subnets, spot role, vCPU quotas')
    .argument('[paths...]', 'spec files or folders (default: runs/)')
    .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
    .option('--endpoint-url <url>', 'AWS endpoint override (e.g. LocalStack, moto)')
    .action(async (paths: string[], opts: DoctorOptions) => {
      process.exitCode = await doctorCommand(paths, opts);
    });
}

export async function doctorCommand(paths: string[], opts: DoctorOptions, overrides?: CliOverrides): Promise<number> {
  for (const p of paths) {
    if (!fs.existsSync(path.resolve(p))) throw new UsageError(`${p}: no such file or folder`);
  }
  const ctx = await cliContext(opts, overrides);
  if (reportProjectProblems(ctx)) return 1;
  // As `runctl validate`: without a PATH, runs/ is the default; its absence is a usage error, not
  // a spec file with errors next to "nothing to check".
  if (paths.length === 0 && !fs.existsSync(path.join(ctx.repoRoot, 'runs'))) {
    throw new UsageError(`no runs/ folder in ${ctx.repoRoot}; name the spec files or folders to check`);
  }
  const { loadDesired } = await import('../reconciler/desired.js');
  const desired = await loadDesired(paths, ctx.repoRoot, ctx.project);
  for (const d of desired.diagnostics.filter((x) => x.severity === 'error')) process.stderr.write(`${formatDiagnostic(d)}\n`);
  const targets: DoctorTarget[] = desired.runs.filter((r) => r.run.spec.provider === 'aws').map((r) => ({ run: r.run.metadata.name, spec: r.run.spec }));
  const where = paths.length > 0 ? paths.join(' ') : 'runs/';

  let checks: DoctorCheck[] = [];
  if (targets.length > 0) {
    try {
      const provider = await ctx.providers.get('aws');
      if (!provider.doctor) throw new Error('the aws provider has no doctor checks');
      checks = await provider.doctor(targets);
    } finally {
      await ctx.providers.close();
    }
  }
  const invalid = desired.invalidFiles.length;
  const failed = checks.some((c) => c.status === 'fail') || invalid > 0;
  const counts = { pass: 0, warn: 0, fail: 0 };
  for (const c of checks) counts[c.status]++;

  if (opts.output === 'json') {
    process.stdout.write(`${JSON.stringify({ ok: !failed, runs: targets.map((t) => t.run), invalidFiles: desired.invalidFiles, summary: counts, checks }, null, 2)}\n`);
    return failed ? 1 : 0;
  }
  const colors = colorsFor(process.stdout, process.env);
  if (targets.length === 0) {
    process.stdout.write(`runctl doctor: no runs on the aws provider in ${where}; nothing to check\n`);
  } else {
    process.stdout.write(`runctl doctor: ${targets.length} run${targets.length === 1 ? '' : 's'} on aws in ${where}\n`);
  }
  const paint = { pass: colors.green, warn: colors.yellow, fail: colors.red };
  for (const c of checks) {
    const status = paint[c.status](c.status.padEnd(4));
    process.stdout.write(`${status} ${c.check} ${c.subject}: ${c.message}${c.fix ? ` — fix: ${c.fix}` : ''}\n`);
  }
  if (invalid > 0) process.stdout.write(`${paint.fail('fail')} specs: ${invalid} spec file${invalid === 1 ? ' has' : 's have'} errors (above); their runs were not checked\n`);
  if (targets.length > 0) process.stdout.write(`doctor: ${checks.length} checks; ${counts.pass} pass, ${counts.warn} warn, ${counts.fail} fail\n`);
  return failed ? 1 : 0;
}
