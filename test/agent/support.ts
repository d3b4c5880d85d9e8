// Runs the real agent (python3 dist/agent/runctl-agent.pyz, built from src/agent/runctl_agent/) as a child process against file://
// storage in a temp dir, with a loopback IMDSv2 server that insists on the session token.
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll } from 'vitest';
import { createBundle } from '../../src/agent/bundle.js';
import { agentScriptPath } from '../../src/agent/config.js';
import type { AgentConfig } from '../../src/agent/config-types.js';
import { attemptPrefix, bundleKey, checkpointsPrefix, contentKey, statusKey } from '../../src/agent/layout.js';
import type { AgentStatus, AttemptKey, CheckpointManifest } from '../../src/providers/types.js';

export const REPO_ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');

/** A loopback IMDSv2: PUT /latest/api/token first, then GETs carrying the token, else 401. */
export class FakeImds {
  notice: object | undefined;
  rebalance: object | undefined;
  tokenRequests = 0;
  unauthorized = 0;
  private readonly tokens = new Set<string>();
  private server = http.createServer((req, res) => this.handle(req, res));
  url = '';

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    if (req.method === 'PUT' && req.url === '/latest/api/token') {
      const ttl = Number(req.headers['x-aws-ec2-metadata-token-ttl-seconds']);
      if (!(ttl >= 1 && ttl <= 21600)) return void res.writeHead(400).end('missing or invalid TTL header');
      this.tokenRequests++;
      const token = createHash('sha256').update(String(Math.random())).digest('base64');
      this.tokens.add(token);
      return void res.writeHead(200, { 'content-type': 'text/plain' }).end(token);
    }
    const token = req.headers['x-aws-ec2-metadata-token'];
    if (req.method !== 'GET' || typeof token !== 'string' || !this.tokens.has(token)) {
      this.unauthorized++;
      return void res.writeHead(401).end();
    }
    const doc =
      req.url === '/latest/meta-data/spot/instance-action'
        ? this.notice
        : req.url === '/latest/meta-data/events/recommendations/rebalance'
          ? this.rebalance
          : undefined;
    if (!doc) return void res.writeHead(404).end('Not Found');
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(doc));
  }
}

export interface Agent {
  child: ChildProcess;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stderr(): string;
}

/**
 * The interpreter itself, not a version-manager shim: shims such as pyenv's put their own bin
 * directory first on PATH, which would hide the fake `aws` the secret tests install.
 */
export const PYTHON = execFileSync('python3', ['-c', 'import sys; print(sys.executable)'], { encoding: 'utf8' }).trim();

export function startAgent(configFile: string, env: NodeJS.ProcessEnv = process.env, extraArgs: string[] = []): Agent {
  const child = spawn(PYTHON, [agentScriptPath(), '--config', configFile, ...extraArgs], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  child.stdout?.resume();
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.on('exit', (code, signal) => resolve({ code, signal })),
  );
  return { child, exited, stderr: () => err };
}

/** Polls until `check` returns a value (not undefined/false); fails with `what` after the limit. */
export async function waitFor<T>(what: string, check: () => T | undefined | false, limitMs = 30_000): Promise<T> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const value = check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 40));
  }
}

export function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !['Z', 'X'].includes(stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3));
  } catch {
    return false;
  }
}

export function groupAlive(pgid: number): boolean {
  try {
    process.kill(-pgid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Every file under dir, recursively (relative paths). */
export function walkFiles(dir: string): string[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return []; // missing, or removed while we looked (an agent cleaning up its state folder)
  }
  const out: string[] = [];
  for (const name of names) {
    const full = path.join(dir, name);
    const stat = statSync(full, { throwIfNoEntry: false });
    if (!stat) continue;
    if (stat.isDirectory()) out.push(...walkFiles(full).map((f) => `${name}/${f}`));
    else out.push(name);
  }
  return out.sort();
}

export interface PublishedCheckpoint {
  id: string;
  dir: string;
  manifest: CheckpointManifest;
}

/**
 * One temp directory holding storage (file://), the code to bundle, and per-attempt "instances"
 * (state, work and checkpoint dirs), as the local provider would lay them out.
 */
export class Sandbox {
  readonly storageDir: string;
  readonly configs: string[] = [];
  private agents: Agent[] = [];

  private constructor(readonly root: string) {
    this.storageDir = path.join(root, 'storage');
  }

  static async create(): Promise<Sandbox> {
    const root = await mkdtemp(path.join(os.tmpdir(), 'runctl-agent-test-'));
    const box = new Sandbox(root);
    await mkdir(box.storageDir, { recursive: true });
    return box;
  }

  get storageUrl(): string {
    return `file://${this.storageDir}`;
  }

  /** Writes files into code/ and bundles them into storage; returns the bundle key. */
  async bundle(files: Record<string, string>): Promise<string> {
    const codeDir = path.join(this.root, 'code');
    for (const [name, text] of Object.entries(files)) {
      await mkdir(path.dirname(path.join(codeDir, name)), { recursive: true });
      await writeFile(path.join(codeDir, name), text, { mode: 0o755 });
    }
    return this.bundleDir(this.root, 'code');
  }

  async bundleDir(repoRoot: string, codePath: string): Promise<string> {
    const b = await createBundle(repoRoot, { path: codePath, exclude: [] }, { outDir: path.join(this.storageDir, 'bundles') });
    return bundleKey(b.sha256);
  }

  instanceDir(key: AttemptKey, label = ''): string {
    return path.join(this.root, 'instances', `${key.run}-g${key.generation}-a${key.attempt}${label}`);
  }

  /** A complete config for one attempt on a fresh "instance"; override anything. */
  config(key: AttemptKey, bundle: string, imdsUrl: string, overrides: Partial<AgentConfig> = {}): AgentConfig {
    const dir = this.instanceDir(key);
    return {
      ...key,
      resuming: key.attempt > 1,
      storage: this.storageUrl,
      bundleKey: bundle,
      stateDir: path.join(dir, 'state'),
      workDir: path.join(dir, 'work'),
      checkpointDir: path.join(dir, 'checkpoints'),
      command: 'bash job.sh',
      env: {},
      secrets: {},
      syncIntervalSeconds: 0.3,
      keep: 3,
      signal: 'SIGTERM',
      signalScope: 'main',
      gracePeriodSeconds: 5,
      imdsUrl,
      heartbeatSeconds: 0.2,
      noticePollSeconds: 0.1,
      ...overrides,
    };
  }

  async writeConfig(config: AgentConfig): Promise<string> {
    const file = path.join(this.root, `config-${config.run}-g${config.generation}-a${config.attempt}-${this.configs.length}.json`);
    await writeFile(file, JSON.stringify(config, null, 2));
    this.configs.push(file);
    return file;
  }

  async start(config: AgentConfig, env?: NodeJS.ProcessEnv): Promise<Agent> {
    const agent = startAgent(await this.writeConfig(config), env);
    this.agents.push(agent);
    return agent;
  }

  /** Runs an agent to its exit and returns its final status. */
  async run(config: AgentConfig, env?: NodeJS.ProcessEnv): Promise<AgentStatus> {
    const agent = await this.start(config, env);
    const { code } = await agent.exited;
    if (code !== 0) throw new Error(`agent exited with ${code}: ${agent.stderr()}`);
    return this.status(config) as AgentStatus;
  }

  status(key: AttemptKey): AgentStatus | undefined {
    return readJson<AgentStatus>(path.join(this.storageDir, statusKey(key)));
  }

  /** The attempt's log, concatenated from its segments in order. */
  logs(key: AttemptKey): string {
    const dir = path.join(this.storageDir, attemptPrefix(key), 'logs');
    if (!existsSync(dir)) return '';
    return readdirSync(dir)
      .filter((n) => /^\d{8}\.log$/.test(n))
      .sort()
      .map((n) => readFileSync(path.join(dir, n), 'utf8'))
      .join('');
  }

  /** Step numbers the job printed in an attempt, in order. */
  steps(key: AttemptKey): number[] {
    return [...this.logs(key).matchAll(/^step=(\d+)\//gm)].map((m) => Number(m[1]));
  }

  /** Checkpoints with a manifest, oldest first. */
  checkpoints(run: string, generation: number): PublishedCheckpoint[] {
    const base = path.join(this.storageDir, checkpointsPrefix(run, generation));
    if (!existsSync(base)) return [];
    return readdirSync(base)
      .sort()
      .filter((id) => existsSync(path.join(base, id, 'MANIFEST.json')))
      .map((id) => ({ id, dir: path.join(base, id), manifest: readJson<CheckpointManifest>(path.join(base, id, 'MANIFEST.json'))! }));
  }

  /**
   * Where a published checkpoint keeps the bytes of one of its files: the run's content store
   * (format 2, keyed by sha256) or, for a format-1 checkpoint, the file beside its manifest.
   */
  checkpointFile(c: PublishedCheckpoint, rel: string): string {
    if (c.manifest.format !== 2) return path.join(c.dir, rel);
    const entry = c.manifest.files.find((f) => f.path === rel);
    if (!entry) throw new Error(`checkpoint ${c.id} has no file ${rel}: ${c.manifest.files.map((f) => f.path).join(', ')}`);
    return path.join(this.storageDir, contentKey(c.manifest.run, entry.sha256));
  }

  /**
   * Publishes a checkpoint directly in the format-1 layout (files beside MANIFEST.json in <id>/),
   * as an agent before issue 9's content-addressed storage did: restores must keep reading it.
   */
  async publishCheckpoint(run: string, generation: number, id: string, files: Record<string, string>, step?: number): Promise<void> {
    const dir = path.join(this.storageDir, checkpointsPrefix(run, generation), id);
    await mkdir(dir, { recursive: true });
    const entries = [];
    for (const [name, text] of Object.entries(files)) {
      await mkdir(path.dirname(path.join(dir, name)), { recursive: true });
      await writeFile(path.join(dir, name), text);
      entries.push({ path: name, size: Buffer.byteLength(text), sha256: createHash('sha256').update(text).digest('hex') });
    }
    const manifest: CheckpointManifest = { id, run, generation, attempt: 1, createdAt: new Date().toISOString(), files: entries };
    if (step !== undefined) manifest.step = step;
    await writeFile(path.join(dir, 'MANIFEST.json'), JSON.stringify(manifest));
  }

  agentLog(config: AgentConfig): string {
    return existsSync(path.join(config.stateDir, 'agent.log')) ? readFileSync(path.join(config.stateDir, 'agent.log'), 'utf8') : '';
  }

  /**
   * The end (the last `lines` lines) of every agent log and every job log of this sandbox, for a
   * failed test's output.
   */
  diagnostics(lines = 120): string {
    const tail = (text: string) => text.split('\n').slice(-lines).join('\n');
    const parts: string[] = [];
    for (const file of this.configs) {
      const config = readJson<AgentConfig>(file);
      if (!config) continue;
      const key = `${config.run} generation ${config.generation} attempt ${config.attempt}`;
      parts.push(`---- agent log of ${key} (${config.stateDir}/agent.log) ----\n${tail(this.agentLog(config))}`);
      parts.push(`---- job log of ${key} ----\n${tail(this.logs(config))}`);
    }
    return parts.join('\n');
  }

  /** Phases in the order the agent entered them (from its own log). */
  phases(config: AgentConfig): string[] {
    return [...this.agentLog(config).matchAll(/\] phase (\w+)/g)].map((m) => m[1] as string);
  }

  async cleanup(): Promise<void> {
    for (const agent of this.agents) if (agent.child.exitCode === null && agent.child.signalCode === null) agent.child.kill('SIGKILL');
    for (const file of walkFiles(path.join(this.root, 'instances')).filter((f) => f.endsWith('state/job.pgid'))) {
      let pgid: number;
      try {
        pgid = Number(readFileSync(path.join(this.root, 'instances', file), 'utf8'));
      } catch {
        continue; // the agent removed it as its attempt ended
      }
      if (pgid > 1 && groupAlive(pgid)) process.kill(-pgid, 'SIGKILL');
    }
    await rm(this.root, { recursive: true, force: true });
  }
}

/** What {@link useAgentSandbox} gives an agent test file. */
export interface AgentSandbox {
  /**
   * The file's loopback IMDSv2: listening (its `url` set) from beforeAll until afterAll. After
   * each test its spot notice and rebalance documents are cleared, so no test sees another's.
   */
  readonly imds: FakeImds;
  /** A new sandbox for the current test; after the test its agents and job groups are killed and its folder removed. */
  sandbox(): Promise<Sandbox>;
}

/**
 * Registers the hooks every agent test file needs: one {@link FakeImds} for the file, and the
 * cleanup of each test's sandboxes. Call it at the top level of the test file, before its own hooks.
 */
export function useAgentSandbox(): AgentSandbox {
  const imds = new FakeImds();
  const made: Sandbox[] = [];
  beforeAll(async () => {
    await imds.start();
  });
  afterAll(async () => {
    await imds.close();
  });
  afterEach(async (context) => {
    imds.notice = undefined;
    imds.rebalance = undefined;
    // A test that fails on a loaded CI machine is read from CI's output alone: show what each
    // agent and job of the test said before their folders are removed.
    const failed = context.task.result?.state === 'fail';
    for (const box of made.splice(0)) {
      if (failed) console.error(box.diagnostics());
      await box.cleanup();
    }
  });
  return {
    imds,
    async sandbox() {
      const box = await Sandbox.create();
      made.push(box);
      return box;
    },
  };
}

/**
 * A job for the agent tests: counts steps, keeps `step` (and, on SIGTERM, `stopped-by`) in its
 * checkpoint dir, resumes from it, records each start in $STARTS_FILE. Knobs via env: STEPS,
 * DELAY, WAIT_PUBLISHED_EVERY (after every K steps wait until a published checkpoint holds the
 * step, so checkpoint counts do not depend on timing), HOLD_FILE (wait for it before exiting),
 * EXIT_CODE, IGNORE_TERM.
 */
export const TEST_JOB = String.raw`#!/usr/bin/env bash
steps=${'$'}{STEPS:-10}; delay=${'$'}{DELAY:-0.05}
mkdir -p "$RUNCTL_CHECKPOINT_DIR"
[ -n "$STARTS_FILE" ] && echo "$$" >> "$STARTS_FILE"
echo "resuming=$RUNCTL_RESUMING run=$RUNCTL_RUN generation=$RUNCTL_GENERATION attempt=$RUNCTL_ATTEMPT"
start=0
[ -f "$RUNCTL_CHECKPOINT_DIR/step" ] && start=$(cat "$RUNCTL_CHECKPOINT_DIR/step")
i=$start
if [ -n "$IGNORE_TERM" ]; then trap '' TERM; else
  trap 'echo "got SIGTERM after step $i"; echo term > "$RUNCTL_CHECKPOINT_DIR/stopped-by"; exit 0' TERM
fi
wait_published() {
  # A published manifest naming a file whose content is "<step>\n" (by its sha256).
  want=$(printf '%s\n' "$1" | sha256sum | cut -d' ' -f1)
  for _ in $(seq 600); do
    for d in "$PUBLISHED_DIR"/*/; do
      [ -f "$d/MANIFEST.json" ] && grep -q "$want" "$d/MANIFEST.json" && return 0
    done
    sleep 0.05
  done
  echo "checkpoint for step $1 never published"; exit 9
}
while [ "$i" -lt "$steps" ]; do
  i=$((i + 1))
  echo "step=$i/$steps loss=0.$i"
  echo "$i" > "$RUNCTL_CHECKPOINT_DIR/step"
  if [ -n "$WAIT_PUBLISHED_EVERY" ] && [ $((i % WAIT_PUBLISHED_EVERY)) -eq 0 ]; then wait_published "$i"; fi
  sleep "$delay"
done
if [ -n "$HOLD_FILE" ]; then while [ ! -f "$HOLD_FILE" ]; do sleep 0.05; done; fi
echo "job done"
exit ${'$'}{EXIT_CODE:-0}
`;
