// `runctl validate [PATH...]`: check TrainingRun files without touching any cloud. Exit 0 when
// every run is valid, 1 when any file has an error, 2 for usage mistakes.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { Option, type Command } from 'commander';
import { UsageError } from './errors.js';

type Format = 'text' | 'json' | 'github';

export function register(program: Command): void {
  program
    .command('validate')
    .description('Check TrainingRun files (default: runs/) against the schema and the rules beyond it')
    .argument('[paths...]', 'files or folders (searched recursively for *.yaml and *.yml)')
    .addOption(new Option('--format <format>', 'output format').choices(['text', 'json', 'github']).default('text'))
    .option('--repo-root <dir>', 'repository root for code.path and runctl.yaml (default: nearest folder with .git or runctl.yaml)')
    .action(async (paths: string[], opts: { format: Format; repoRoot?: string }) => {
      process.exitCode = await validate(paths, opts);
    });
}

async function validate(paths: string[], opts: { format: Format; repoRoot?: string }): Promise<number> {
  // Loaded here, not at the top: `runctl --help` and other commands do not pay for the validator.
  const [{ loadRuns }, { findRepoRoot }, diagnostics] = await Promise.all([
    import('../spec/load.js'),
    import('../spec/files.js'),
    import('../spec/diagnostics.js'),
  ]);
  if (opts.repoRoot !== undefined && !existsSync(opts.repoRoot)) throw new UsageError(`--repo-root: no such directory: ${opts.repoRoot}`);
  const repoRoot = path.resolve(opts.repoRoot ?? findRepoRoot(process.cwd()));
  for (const p of paths) {
    if (!existsSync(p)) throw new UsageError(`no such file or directory: ${p}`);
  }
  if (paths.length === 0 && !existsSync(path.join(repoRoot, 'runs'))) {
    throw new UsageError(`no runs/ folder in ${repoRoot}; name the files or folders to validate`);
  }

  const result = await loadRuns(paths, { repoRoot });
  const errors = result.diagnostics.filter((d) => d.severity === 'error');
  const warnings = result.diagnostics.length - errors.length;
  const out = process.stdout;
  if (opts.format === 'json') {
    out.write(`${JSON.stringify(result.diagnostics, null, 2)}\n`);
  } else {
    const line = opts.format === 'github' ? diagnostics.formatGithubAnnotation : diagnostics.formatDiagnostic;
    for (const d of result.diagnostics) out.write(`${line(d)}\n`);
    out.write(`${summary(result.runs.length, result.files.length, errors, warnings)}\n`);
  }
  return errors.length > 0 ? 1 : 0;
}

function summary(runs: number, files: number, errors: Array<{ file: string }>, warnings: number): string {
  const plural = (n: number, word: string): string => `${n} ${word}${n === 1 ? '' : 's'}`;
  const warned = warnings > 0 ? `, ${plural(warnings, 'warning')}` : '';
  if (files === 0) return 'no spec files found';
  if (errors.length === 0) return `${plural(runs, 'run')} in ${plural(files, 'file')}: valid${warned}`;
  const badFiles = new Set(errors.map((e) => e.file)).size;
  return `${plural(errors.length, 'error')}${warned} in ${badFiles} of ${plural(files, 'file')}`;
}
