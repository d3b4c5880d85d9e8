// What every command that touches runs needs: the repository root, runctl.yaml, the state store
// and the providers. Kept here so commands stay to parsing and printing.
import path from 'node:path';
import { createProviderRegistry, type ProviderRegistry } from '../providers/registry.js';
import { parseDuration } from '../spec/duration.js';
import { formatDiagnostic, hasErrors, type Diagnostic } from '../spec/diagnostics.js';
import { findRepoRoot, PROJECT_FILE } from '../spec/files.js';
import { loadProjectConfig } from '../spec/project.js';
import type { ProjectConfig } from '../spec/types.js';
import { FileStore } from '../state/file-store.js';
import { DEFAULT_LEASE_TTL_MS, defaultHolder, LeaseManager } from '../state/lease.js';
import { parseStateUrl, type ObjectStore } from '../state/object-store.js';
import type { RunEvent, RunStatus, StateStore } from '../state/types.js';
import { UsageError } from './errors.js';

export interface CommonOptions {
  stateDir?: string;
  state?: string;
  controller?: string;
  endpointUrl?: string;
}

/** What tests (and embedders) may supply instead of the real thing. */
export interface CliOverrides {
  providers?: ProviderRegistry;
  /** The object store behind `--state s3://…` (tests add middleware, or use memory). */
  objectStore?: (url: string) => ObjectStore;
  /** Called with the lease manager a controller command created. */
  onLeases?: (leases: LeaseManager) => void;
}

export interface CliContext {
  repoRoot: string;
  project: ProjectConfig;
  projectDiagnostics: Diagnostic[];
  stateDir: string;
  /** `s3://bucket/prefix` when state is shared (`--state`, or `state:` in runctl.yaml). */
  stateUrl?: string;
  /** Where the state comes from, for messages. */
  stateFrom?: string;
  controller: string;
  endpointUrl?: string;
  providers: ProviderRegistry;
  overrides: CliOverrides;
}

export const DEFAULT_CONTROLLER = 'default';

let defaultOverrides: CliOverrides = {};

/** Overrides for every command run in this process (a test harness running the real CLI). */
export function setDefaultOverrides(overrides: CliOverrides): void {
  defaultOverrides = overrides;
}

export async function cliContext(opts: CommonOptions, overrides: CliOverrides = defaultOverrides): Promise<CliContext> {
  const repoRoot = findRepoRoot(process.cwd());
  const { config, diagnostics } = await loadProjectConfig(repoRoot);
  if (opts.state !== undefined && opts.stateDir !== undefined) {
    throw new UsageError('use --state (shared, s3://…) or --state-dir (a local folder), not both');
  }
  const stateDir = path.resolve(opts.stateDir ?? path.join(repoRoot, '.runctl'));
  // --state-dir asks for local state even when runctl.yaml names a shared one.
  const stateUrl = opts.state ?? (opts.stateDir === undefined ? config.state : undefined);
  const stateFrom = opts.state !== undefined ? '--state' : 'runctl.yaml state:';
  if (stateUrl !== undefined) {
    try {
      parseStateUrl(stateUrl, stateFrom);
    } catch (err) {
      throw new UsageError((err as Error).message);
    }
  }
  const controller = opts.controller ?? DEFAULT_CONTROLLER;
  const providers =
    overrides.providers ??
    createProviderRegistry({
      repoRoot,
      controller,
      region: config.defaults.region,
      storage: config.defaults.storage,
      profile: config.defaults.profile,
      endpointUrl: opts.endpointUrl,
    });
  return {
    repoRoot,
    project: config,
    projectDiagnostics: diagnostics,
    stateDir,
    stateUrl,
    stateFrom: stateUrl !== undefined ? stateFrom : undefined,
    controller,
    endpointUrl: opts.endpointUrl,
    providers,
    overrides,
  };
}

/**
 * Prints problems with runctl.yaml (each naming file, line, column and field); true when any is an
 * error, and then says that the command refuses to act: runctl.yaml names the state store and the
 * defaults, so going on without it could act on the wrong state (issue 10, point 10).
 */
export function reportProjectProblems(ctx: CliContext): boolean {
  for (const d of ctx.projectDiagnostics) process.stderr.write(`${formatDiagnostic(d)}\n`);
  const failed = hasErrors(ctx.projectDiagnostics);
  if (failed) {
    const file = ctx.projectDiagnostics.find((d) => d.severity === 'error')?.file ?? PROJECT_FILE;
    process.stderr.write(
      `runctl: ${file} is invalid, so nothing was done: it names the state store and the defaults, and acting without them ` +
        'could act on the wrong runs; fix the errors above (`runctl validate` checks it) and run again\n',
    );
  }
  return failed;
}

/** A store for reading only (status, describe, logs, plan): never takes the lock or a lease. */
export function readOnlyStore(ctx: CliContext): StateStore {
  if (ctx.stateUrl === undefined) return new FileStore(ctx.stateDir, { readOnly: true });
  return new DeferredStore(async () => {
    const objects = await objectStoreFor(ctx);
    const { SharedStore } = await import('../state/shared-store.js');
    return { store: new SharedStore(objects), close: () => objects.close?.() };
  });
}

export interface ControllerStore {
  store: StateStore;
  /** Set with shared state: the controller acts on a run only while holding its lease. */
  leases?: LeaseManager;
  /** `.runctl (local)` or `s3://bucket/prefix (shared, leased)`. */
  description: string;
  /** Something to tell the user on opening (e.g. a dead controller's lock was taken over). */
  note?: string;
  close(): Promise<void>;
}

/**
 * Opens the store a controller writes to: the local folder (its lock makes this the only
 * controller there), or the shared S3 state with a lease manager (one controller per run).
 */
export async function openControllerStore(ctx: CliContext, opts: { command: string; leaseTtlMs?: number }): Promise<ControllerStore> {
  if (ctx.stateUrl === undefined) {
    const store = new FileStore(ctx.stateDir, { command: opts.command });
    const opened = await store.open();
    return { store, description: `${displayPath(ctx.stateDir)} (local)`, note: opened.note, close: () => store.close() };
  }
  const objects = await objectStoreFor(ctx);
  const { SharedStore } = await import('../state/shared-store.js');
  const holder = `${ctx.controller.replace(/\s+/g, '-')}@${defaultHolder()}`;
  const leases = new LeaseManager(objects, holder, opts.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS);
  ctx.overrides.onLeases?.(leases);
  const store = new SharedStore(objects, { leases });
  try {
    await store.open();
  } catch (err) {
    objects.close?.();
    throw err;
  }
  return {
    store,
    leases,
    description: `${ctx.stateUrl} (shared, leased as ${holder})`,
    close: async () => {
      await store.close();
      objects.close?.();
    },
  };
}

/** Parses a duration option (`--lease-duration 60s`), as a usage error when it is not one. */
export function durationOption(name: string, value: string | undefined, fallbackMs: number, minMs = 0): number {
  if (value === undefined) return fallbackMs;
  let ms: number;
  try {
    ms = parseDuration(value);
  } catch {
    throw new UsageError(`${name} ${JSON.stringify(value)} is not a duration: use a number with a unit, e.g. 30s, 5m, 1h`);
  }
  if (ms < minMs) throw new UsageError(`${name} ${value} is too short: use at least ${minMs >= 1000 ? `${minMs / 1000}s` : `${minMs}ms`}`);
  return ms;
}

async function objectStoreFor(ctx: CliContext): Promise<ObjectStore> {
  const url = ctx.stateUrl as string;
  if (ctx.overrides.objectStore) return ctx.overrides.objectStore(url);
  // Loaded on demand: the AWS SDK stays out of commands that keep state locally.
  const { createS3ObjectStore } = await import('../providers/aws/object-store.js');
  return createS3ObjectStore(url, {
    from: ctx.stateFrom,
    region: ctx.project.defaults.region,
    profile: ctx.project.defaults.profile,
    endpointUrl: ctx.endpointUrl ?? process.env.AWS_ENDPOINT_URL,
  });
}

/** A store made on first use, so synchronous callers can hold one whose client loads lazily. */
class DeferredStore implements StateStore {
  private made?: Promise<{ store: StateStore; close(): void }>;

  constructor(private readonly make: () => Promise<{ store: StateStore; close(): void }>) {}

  private get inner(): Promise<StateStore> {
    this.made ??= this.make();
    return this.made.then((m) => m.store);
  }

  async open(): Promise<void> {
    await (await this.inner).open();
  }
  async close(): Promise<void> {
    if (!this.made) return;
    const m = await this.made;
    await m.store.close();
    m.close();
  }
  async listRuns(): Promise<string[]> {
    return (await this.inner).listRuns();
  }
  async getStatus(run: string): Promise<RunStatus | undefined> {
    return (await this.inner).getStatus(run);
  }
  async putStatus(status: RunStatus): Promise<void> {
    return (await this.inner).putStatus(status);
  }
  async deleteStatus(run: string): Promise<void> {
    return (await this.inner).deleteStatus(run);
  }
  async appendEvents(run: string, events: RunEvent[]): Promise<void> {
    return (await this.inner).appendEvents(run, events);
  }
  async readEvents(run: string): Promise<RunEvent[]> {
    return (await this.inner).readEvents(run);
  }
  async replaceUnreadableStatus(status: RunStatus): Promise<string | undefined> {
    const inner = await this.inner;
    return inner.replaceUnreadableStatus ? inner.replaceUnreadableStatus(status) : undefined;
  }
}

function displayPath(p: string): string {
  const rel = path.relative(process.cwd(), p);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : p;
}

export function addCommonOptions<T extends { option: (flags: string, description: string) => T }>(cmd: T): T {
  return cmd
    .option('--state-dir <dir>', 'where run status and events are kept (default: .runctl at the repository root)')
    .option('--state <url>', 'shared state in S3, s3://bucket/prefix, for several controllers (default: runctl.yaml state:, else --state-dir)')
    .option('--controller <name>', `name of this controller deployment, tagged on every instance (default: ${DEFAULT_CONTROLLER})`)
    .option('--endpoint-url <url>', 'AWS endpoint override for EC2, SSM and S3 (e.g. LocalStack, moto)');
}
