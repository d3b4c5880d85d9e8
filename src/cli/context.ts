// What every command that touches runs needs: the repository root, runctl.yaml, the state store
// and the providers. Kept here so commands stay to parsing and printing.
import path from 'node:path';
import { createProviderRegistry, type ProviderRegistry } from '../providers/registry.js';
import { formatDiagnostic, hasErrors, type Diagnostic } from '../spec/diagnostics.js';
import { findRepoRoot } from '../spec/files.js';
import { loadProjectConfig } from '../spec/project.js';
import type { ProjectConfig } from '../spec/types.js';
import { FileStore } from '../state/file-store.js';

export interface CommonOptions {
  stateDir?: string;
  controller?: string;
  endpointUrl?: string;
}

export interface CliContext {
  repoRoot: string;
  project: ProjectConfig;
  projectDiagnostics: Diagnostic[];
  stateDir: string;
  controller: string;
  providers: ProviderRegistry;
}

export const DEFAULT_CONTROLLER = 'default';

export async function cliContext(opts: CommonOptions): Promise<CliContext> {
  const repoRoot = findRepoRoot(process.cwd());
  const { config, diagnostics } = await loadProjectConfig(repoRoot);
  const stateDir = path.resolve(opts.stateDir ?? path.join(repoRoot, '.runctl'));
  const controller = opts.controller ?? DEFAULT_CONTROLLER;
  const providers = createProviderRegistry({
    repoRoot,
    controller,
    region: config.defaults.region,
    storage: config.defaults.storage,
    profile: config.defaults.profile,
    endpointUrl: opts.endpointUrl,
  });
  return { repoRoot, project: config, projectDiagnostics: diagnostics, stateDir, controller, providers };
}

/** Prints problems with runctl.yaml; true when any is an error (the command must not go on). */
export function reportProjectProblems(ctx: CliContext): boolean {
  for (const d of ctx.projectDiagnostics) process.stderr.write(`${formatDiagnostic(d)}\n`);
  return hasErrors(ctx.projectDiagnostics);
}

export function readOnlyStore(ctx: CliContext): FileStore {
  return new FileStore(ctx.stateDir, { readOnly: true });
}

export function addCommonOptions<T extends { option: (flags: string, description: string) => T }>(cmd: T): T {
  return cmd
    .option('--state-dir <dir>', 'where run status and events are kept (default: .runctl at the repository root)')
    .option('--controller <name>', `name of this controller deployment, tagged on every instance (default: ${DEFAULT_CONTROLLER})`)
    .option('--endpoint-url <url>', 'AWS endpoint override for EC2, SSM and S3 (e.g. LocalStack, moto)');
}
