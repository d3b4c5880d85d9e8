// The local provider: "instances" are sandbox folders on this machine, each run by an instance
// host process that serves a loopback IMDSv2 endpoint and enforces spot notices; the agent is
// runctl's real on-instance agent; storage is a folder (file://). Everything the aws provider does
// with EC2, SSM and S3 happens here with folders and process groups, through the same port.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import type { RunSpec } from '../../spec/types.js';
import {
  RetryableError,
  TerminalError,
  type AgentStatus,
  type AttemptKey,
  type BundlePruneResult,
  type CheckpointManifest,
  type DeployReport,
  type DeployRequest,
  type InstanceObservation,
  type InstancePrice,
  type InstanceRef,
  type LaunchRequest,
  type LaunchResult,
  type LogChunk,
  type LogReadOptions,
  type ProgressPoint,
  type Provider,
  type StopReason,
} from '../types.js';
import { pruneSetupCacheObjects, unusedBundles } from '../bundle-gc.js';

/** How a local price is labelled wherever it is shown. */
export const LOCAL_PRICE_SOURCE = 'local: no charge';

function laterOf(a: string, b: string): string {
  return Date.parse(a) >= Date.parse(b) ? a : b;
}
import { shipBundle, startAgent, type ShippedBundle } from './deploy.js';
import { fsCall } from './errors.js';
import { createJsonExclusive, sleep } from './fs-util.js';
import { withLaunchLock } from './launch-lock.js';
import { isProcessAlive } from './processes.js';
import {
  SandboxRoot,
  SPOT_TERMINATION_REASON,
  TAG_CONTROLLER,
  attemptFromTags,
  attemptTags,
  describeAttempt,
  instanceIdPrefix,
  sameAttempt,
  isInstanceId,
  isRunName,
  marketFor,
  newInstanceId,
  type HostRecord,
  type Sandbox,
} from './sandbox.js';
import { shutDownSandbox, stopSandboxProcesses } from './shutdown.js';
import { startInstanceHost } from './spawn.js';
import { LocalStorage } from './storage.js';

export interface LocalProviderOptions {
  /** Folder of sandboxes, storage and scratch space; default `<repoRoot>/.runctl/local`. */
  root?: string;
  /** Value of the runctl:controller tag: which controller deployment owns the sandboxes. */
  controller?: string;
  /** Time from a spot notice to the instance being taken away; 120000 like EC2. */
  spotNoticeLeadMs?: number;
  /** Base of the default root; default the current directory. */
  repoRoot?: string;
  pollIntervalMs?: number;
  /** SIGTERM-to-SIGKILL grace when terminate() stops a sandbox's processes; default 3000. */
  terminateGraceMs?: number;
  /** Terminated sandboxes (their records) are deleted this long after they ended; default 7 days. */
  retainTerminatedMs?: number;
  /** Interpreter for the agent; default `python3`. */
  python?: string;
  /** How often the agent polls the IMDS for a notice; default 1 s (loopback is cheap). */
  noticePollSeconds?: number;
  /** How often the agent writes its status; default the agent config's (1 s for file storage). */
  heartbeatSeconds?: number;
  /** How long deployAgent waits for a just-launched instance's host to listen; default 10 s. */
  hostReadyTimeoutMs?: number;
}

export const DEFAULT_CONTROLLER = 'default';
const DAY_MS = 86_400_000;

export class LocalProvider implements Provider {
  readonly name = 'local';
  readonly pollIntervalMs: number;
  readonly controller: string;
  readonly root: string;
  readonly spotNoticeLeadMs: number;
  private readonly sandboxes: SandboxRoot;
  private readonly opts: LocalProviderOptions;
  /** The bundle most recently shipped, for callers (and tests) that want to know what a deploy copied. */
  lastBundle?: ShippedBundle;

  constructor(opts: LocalProviderOptions = {}) {
    this.opts = opts;
    this.root = path.resolve(opts.repoRoot ?? process.cwd(), opts.root ?? path.join('.runctl', 'local'));
    this.controller = opts.controller ?? DEFAULT_CONTROLLER;
    this.pollIntervalMs = opts.pollIntervalMs ?? 1000;
    this.spotNoticeLeadMs = opts.spotNoticeLeadMs ?? 120_000;
    this.sandboxes = new SandboxRoot(this.root);
  }

  get defaultStorageDir(): string {
    return path.join(this.root, 'storage');
  }

  storageFor(spec: RunSpec): LocalStorage {
    return LocalStorage.forSpec(spec, this.defaultStorageDir);
  }

  /** The sandbox folder of an instance (for display and tests). */
  sandboxDir(instanceId: string): string {
    return this.sandboxOf(instanceId).dir;
  }

  async observe(runs: string[]): Promise<Map<string, InstanceObservation[]>> {
    const wanted = new Set(runs);
    const out = new Map<string, InstanceObservation[]>(runs.map((r) => [r, []]));
    const sandboxes = await fsCall('listing local instances', this.sandboxes.instancesDir, () => this.sandboxes.list());
    for (const sandbox of sandboxes) {
      const tags = await sandbox.tags();
      const key = attemptFromTags(tags);
      if (!key || tags?.[TAG_CONTROLLER] !== this.controller) continue;
      const observation = await this.observeSandbox(sandbox, key);
      if (!observation) continue;
      if (wanted.has(key.run)) out.get(key.run)?.push(observation);
    }
    for (const list of out.values()) list.sort((a, b) => a.attempt - b.attempt || a.instance.launchedAt.localeCompare(b.instance.launchedAt));
    return out;
  }

  /** One sandbox's state; also finishes off sandboxes whose host died and prunes old ones. */
  private async observeSandbox(sandbox: Sandbox, key: AttemptKey): Promise<InstanceObservation | undefined> {
    const instance = await sandbox.instance();
    if (!instance) return undefined;
    let terminated = await sandbox.terminated();
    if (terminated && Date.now() - Date.parse(terminated.at) > (this.opts.retainTerminatedMs ?? 7 * DAY_MS)) {
      await fs.rm(sandbox.dir, { recursive: true, force: true });
      return undefined;
    }
    const notice = await sandbox.notice();
    const spotInterruption = notice ? { noticedAt: notice.noticedAt, reason: SPOT_TERMINATION_REASON } : undefined;
    const base = { ...key, instance };
    if (terminated) return { ...base, state: 'terminated', ready: false, stateReason: terminated.stateReason, spotInterruption: terminated.spotInterruption ?? spotInterruption };

    const host = await sandbox.host();
    const hostAlive = host ? isProcessAlive(host.pid, host.startTime) : await this.hostStarting(sandbox);
    if (!hostAlive) {
      // The instance host is gone without having marked the sandbox terminated (it crashed or was
      // killed, or the machine rebooted): the instance is dead, and nothing of it may keep running.
      const stateReason = host ? 'Server.InternalError: the instance host exited unexpectedly' : 'Server.InternalError: the instance host failed to start (see host.log in the sandbox)';
      await shutDownSandbox(sandbox, 'observe', { at: new Date().toISOString(), stateReason, ...(spotInterruption ? { spotInterruption } : {}) }, {
        graceMs: this.opts.terminateGraceMs ?? 3000,
      });
      terminated = await sandbox.terminated();
      return { ...base, state: 'terminated', ready: false, stateReason: terminated?.stateReason ?? stateReason, spotInterruption: terminated?.spotInterruption ?? spotInterruption };
    }
    const state = (await sandbox.shutdown()) ? 'shutting-down' : host ? 'running' : 'pending';
    const observation: InstanceObservation = { ...base, state, ready: state === 'running' };
    if (spotInterruption) observation.spotInterruption = spotInterruption;
    return observation;
  }

  /** Before host.json exists: is the host process that launch() started still alive? */
  private async hostStarting(sandbox: Sandbox): Promise<boolean> {
    const hosts = (await sandbox.groups()).filter((g) => g.role === 'host');
    if (hosts.length === 0) {
      // launch() was interrupted between creating the sandbox and starting its host: a launch
      // retry adopts the sandbox and starts the host; until then it is pending.
      return true;
    }
    return hosts.some((g) => isProcessAlive(g.pgid, g.startTime));
  }

  async launch(req: LaunchRequest): Promise<LaunchResult> {
    if (!isRunName(req.run)) {
      throw new TerminalError(`run name "${req.run}" is not a DNS-1123 label (lowercase letters, digits and '-')`, { code: 'InvalidRunName' });
    }
    if (req.controller !== this.controller) {
      throw new TerminalError(`launch for controller "${req.controller}" sent to a local provider of controller "${this.controller}"`, {
        code: 'ControllerMismatch',
      });
    }
    return fsCall('launching a local instance', this.sandboxes.instancesDir, () =>
      withLaunchLock(this.sandboxes.instancesDir, req, async () => {
        const existing = await this.findAttempt(req);
        if (existing) {
          if (!(await existing.sandbox.terminated()) && !(await existing.sandbox.host()) && (await existing.sandbox.groups()).length === 0) {
            await startInstanceHost(existing.sandbox);
          }
          return { instance: existing.instance, adopted: true };
        }
        const id = newInstanceId(req);
        const instance: InstanceRef = {
          id,
          type: 'local',
          zone: 'local',
          market: marketFor(req.spec.resources.market),
          pricePerHour: 0,
          launchedAt: new Date().toISOString(),
        };
        const sandbox = await this.sandboxes.create(id, attemptTags(req, this.controller), instance);
        await startInstanceHost(sandbox);
        return { instance, adopted: false };
      }),
    );
  }

  /** The attempt's sandbox, if one exists: a live one before a terminated one, like EC2's adoption. */
  private async findAttempt(key: AttemptKey): Promise<{ sandbox: Sandbox; instance: InstanceRef } | undefined> {
    const found: { sandbox: Sandbox; instance: InstanceRef; live: boolean }[] = [];
    for (const sandbox of await this.sandboxes.list()) {
      if (!sandbox.id.startsWith(instanceIdPrefix(key))) continue;
      const tags = await sandbox.tags();
      const tagged = attemptFromTags(tags);
      if (!tagged || tags?.[TAG_CONTROLLER] !== this.controller) continue;
      // Matched on the uid too: a deleted run's sandbox is never adopted by one re-created under its name.
      if (!sameAttempt(tagged, key)) continue;
      const instance = await sandbox.instance();
      if (instance) found.push({ sandbox, instance, live: !(await sandbox.terminated()) });
    }
    found.sort((a, b) => Number(b.live) - Number(a.live) || a.instance.launchedAt.localeCompare(b.instance.launchedAt));
    return found[0];
  }

  async deployAgent(req: DeployRequest): Promise<DeployReport> {
    const sandbox = this.sandboxOf(req.instance.id);
    const tags = attemptFromTags(await sandbox.tags());
    if (!tags) throw new TerminalError(`local instance ${req.instance.id} does not exist (no sandbox at ${sandbox.dir})`, { code: 'InstanceNotFound' });
    if (!sameAttempt(tags, req)) {
      throw new TerminalError(`local instance ${req.instance.id} belongs to ${describeAttempt(tags)}, not ${describeAttempt(req)}`, { code: 'InstanceMismatch' });
    }
    const host = await this.waitForHost(sandbox);
    const storage = this.storageFor(req.spec);
    await storage.ensureRoot();
    const bundle = await shipBundle(req.repoRoot, req.spec.code, storage, path.join(this.root, 'scratch'));
    this.lastBundle = bundle;
    await startAgent(req, sandbox, host, storage, bundle, {
      python: this.opts.python ?? 'python3',
      noticePollSeconds: this.opts.noticePollSeconds ?? 1,
      heartbeatSeconds: this.opts.heartbeatSeconds,
    });
    return { codeBundle: bundle.sha256 };
  }

  /** Delete code bundles in the spec's storage folder that no run references any more. */
  async pruneBundles(spec: RunSpec, referenced: ReadonlySet<string>, opts: { minAgeMs: number }): Promise<BundlePruneResult> {
    const storage = this.storageFor(spec);
    const { doomed, kept } = unusedBundles(await storage.listBundles(), referenced, opts.minAgeMs);
    for (const key of doomed) await storage.deleteObject(key);
    return { deleted: doomed, kept };
  }

  /** Delete setup cache entries no run holds and archives no kept entry names (bundle-gc.ts). */
  async pruneSetupCaches(spec: RunSpec, referenced: ReadonlySet<string>, opts: { minAgeMs: number }): Promise<BundlePruneResult> {
    const storage = this.storageFor(spec);
    return pruneSetupCacheObjects(
      {
        list: (prefix) => storage.listObjects(prefix),
        read: (key) => storage.readObject(key),
        remove: async (keys) => {
          for (const key of keys) await storage.deleteObject(key);
        },
      },
      referenced,
      opts.minAgeMs,
    );
  }

  private async waitForHost(sandbox: Sandbox): Promise<HostRecord> {
    const deadline = Date.now() + (this.opts.hostReadyTimeoutMs ?? 10_000);
    for (;;) {
      if (await sandbox.terminated()) {
        throw new TerminalError(`local instance ${sandbox.id} is terminated; it cannot receive the agent`, { code: 'InstanceTerminated' });
      }
      const host = await sandbox.host();
      if (host && isProcessAlive(host.pid, host.startTime)) return host;
      if (Date.now() >= deadline) {
        throw new RetryableError(`local instance ${sandbox.id} is not up yet (its host has not announced its IMDS endpoint)`, { code: 'NotReady' });
      }
      await sleep(50);
    }
  }

  /**
   * A local "instance" is a process group on this machine: it costs nothing. Its price is one $0
   * step, so the ledger shows $0.00 (and `local: no charge` as the source), not an unknown cost;
   * there is no on-demand counterpart, so no savings are claimed.
   */
  async priceInstance(instance: InstanceRef, window: { from: string; to: string }): Promise<InstancePrice> {
    return { steps: [{ from: instance.launchedAt, usdPerHour: 0 }], source: LOCAL_PRICE_SOURCE, fetchedAt: laterOf(window.to, new Date().toISOString()) };
  }

  async readAgentStatus(key: AttemptKey, spec: RunSpec): Promise<AgentStatus | undefined> {
    return this.storageFor(spec).readAgentStatus(key);
  }

  async requestStop(key: AttemptKey, spec: RunSpec, reason: StopReason): Promise<void> {
    await this.storageFor(spec).writeStopRequest(key, reason);
  }

  /**
   * Delivers a spot notice the way EC2 does: the instance's IMDS starts answering
   * spot/instance-action with a time `spotNoticeLeadMs` ahead, and at that time the instance host
   * takes the instance away whether or not anyone reacted. A second notice keeps the first deadline.
   */
  async deliverSpotNotice(key: AttemptKey, instanceId: string): Promise<void> {
    const sandbox = this.sandboxOf(instanceId);
    const tags = attemptFromTags(await sandbox.tags());
    if (!tags) throw new TerminalError(`local instance ${instanceId} does not exist`, { code: 'InstanceNotFound' });
    if (!sameAttempt(tags, key)) {
      throw new TerminalError(`local instance ${instanceId} does not belong to ${describeAttempt(key)}`, { code: 'InstanceMismatch' });
    }
    if (await sandbox.terminated()) return;
    const now = Date.now();
    const notice = {
      action: 'terminate',
      // IMDS gives whole seconds; rounding up keeps the promised lead time.
      time: new Date(Math.ceil((now + this.spotNoticeLeadMs) / 1000) * 1000).toISOString().replace(/\.\d{3}Z$/, 'Z'),
      noticedAt: new Date(now).toISOString(),
    };
    await fsCall('delivering the spot notice', sandbox.noticeFile, async () => {
      await fs.mkdir(sandbox.imdsDir, { recursive: true });
      await createJsonExclusive(sandbox.noticeFile, notice);
    });
  }

  async terminate(instanceId: string): Promise<void> {
    const sandbox = this.sandboxOf(instanceId);
    if (!(await sandbox.tags())) return; // never existed, or pruned: gone either way
    if (await sandbox.terminated()) {
      // Terminated already; make sure nothing of it lingers (cheap when nothing does).
      await stopSandboxProcesses(sandbox, { graceMs: this.opts.terminateGraceMs ?? 3000 });
      return;
    }
    const notice = await sandbox.notice();
    const { survivors } = await fsCall('terminating a local instance', sandbox.dir, () =>
      shutDownSandbox(
        sandbox,
        'terminate',
        {
          at: new Date().toISOString(),
          stateReason: 'Client.UserInitiatedShutdown: User initiated shutdown',
          ...(notice ? { spotInterruption: { noticedAt: notice.noticedAt, reason: SPOT_TERMINATION_REASON } } : {}),
        },
        { graceMs: this.opts.terminateGraceMs ?? 3000 },
      ),
    );
    if (survivors.length > 0) {
      throw new RetryableError(`processes ${survivors.join(', ')} of local instance ${instanceId} survived SIGKILL; trying again`, { code: 'Survivors' });
    }
  }

  async latestCheckpoint(run: string, generation: number, spec: RunSpec, uid?: string): Promise<CheckpointManifest | undefined> {
    return this.storageFor(spec).latestCheckpoint(run, generation, uid);
  }

  async readProgressHistory(key: AttemptKey, spec: RunSpec): Promise<ProgressPoint[] | undefined> {
    return this.storageFor(spec).readProgressHistory(key);
  }

  async readLogs(key: AttemptKey, spec: RunSpec, cursor?: string, opts?: LogReadOptions): Promise<LogChunk> {
    return this.storageFor(spec).readLogs(key, cursor, opts);
  }

  async close(): Promise<void> {
    // Instances are meant to outlive the controller process: nothing to release.
  }

  private sandboxOf(instanceId: string): Sandbox {
    if (!isInstanceId(instanceId)) {
      throw new TerminalError(`"${instanceId}" is not a local instance id (local-<run>-g<generation>-a<attempt>-<hex>)`, { code: 'InvalidInstanceId' });
    }
    return this.sandboxes.sandbox(instanceId);
  }
}

export function createLocalProvider(opts: LocalProviderOptions = {}): LocalProvider {
  return new LocalProvider(opts);
}

