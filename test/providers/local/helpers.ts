// Shared by the local provider tests: a throw-away provider root, specs, and process checks.
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createLocalProvider, type LocalProvider, type LocalProviderOptions } from '../../../src/providers/local/index.js';
import type { RunSpec } from '../../../src/spec/types.js';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

export class TestRoot {
  readonly providers: LocalProvider[] = [];
  private constructor(readonly dir: string) {}

  static async create(): Promise<TestRoot> {
    return new TestRoot(await mkdtemp(path.join(os.tmpdir(), 'runctl-local-')));
  }

  provider(opts: LocalProviderOptions = {}): LocalProvider {
    const p = createLocalProvider({ root: path.join(this.dir, 'local'), repoRoot: REPO_ROOT, ...opts });
    this.providers.push(p);
    return p;
  }

  /** Terminates every sandbox any provider of this root made, then deletes the root. */
  async cleanup(): Promise<void> {
    const p = this.providers[0] ?? this.provider();
    const instances = path.join(p.root, 'instances');
    const ids = (await readdir(instances).catch(() => [] as string[])).filter((n) => n.startsWith('local-'));
    for (const id of ids) await p.terminate(id);
    await rm(this.dir, { recursive: true, force: true });
  }
}

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? DeepPartial<T[K]> : T[K] };

export function spec(overrides: DeepPartial<RunSpec> = {}): RunSpec {
  const base: RunSpec = {
    provider: 'local',
    code: { path: './examples/tiny-trainer', exclude: [] },
    run: 'sleep 300',
    env: {},
    secrets: {},
    resources: { instanceTypes: [], market: 'spot', availabilityZones: [], rootVolumeGiB: 10, securityGroupIds: [] },
    checkpoints: { dir: '/opt/runctl/checkpoints', syncInterval: '1s', keep: 3, signal: 'SIGTERM', signalScope: 'main', gracePeriod: '10s' },
    recovery: { maxInterruptions: 5, maxRetriesOnError: 0, seedFromPreviousGeneration: false },
    timeouts: { provisioning: '1m', installing: '1m', training: '5m' },
    budget: {},
    suspend: false,
  };
  return merge(base, overrides) as RunSpec;
}

function merge(a: unknown, b: unknown): unknown {
  if (b === undefined) return a;
  if (a && b && typeof a === 'object' && typeof b === 'object' && !Array.isArray(a) && !Array.isArray(b)) {
    const out: Record<string, unknown> = { ...(a as Record<string, unknown>) };
    for (const [k, v] of Object.entries(b as Record<string, unknown>)) out[k] = merge(out[k], v);
    return out;
  }
  return b;
}

/**
 * kill(pid, 0) succeeds, and the process is not a zombie: an exited orphan waits for its new
 * parent to reap it (lazily, on some init processes) but runs nothing.
 */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'latin1');
    return !/^[ZX]/.test(stat.slice(stat.lastIndexOf(')') + 2));
  } catch {
    return !readdirSafe('/proc/self');
  }
}

function readdirSafe(dir: string): boolean {
  try {
    readdirSync(dir);
    return true;
  } catch {
    return false;
  }
}

/** Live processes in a process group (Linux). */
export function groupPids(pgid: number): number[] {
  const out: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'latin1');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(rest[2]) === pgid && rest[0] !== 'Z') out.push(Number(name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

export async function waitFor<T>(what: string, fn: () => T | undefined | false | Promise<T | undefined | false>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Starts `bash -c script` as a new process group leader, the way the agent starts a job. */
export async function startGroup(script: string, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const child = spawn('bash', ['-c', script], { detached: true, stdio: 'ignore', env });
  child.unref();
  return new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('spawn', () => resolve(child.pid as number));
  });
}
