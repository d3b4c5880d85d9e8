// An in-memory cloud for reconciler tests. The world advances one tick per observe() call, so runs
// are deterministic: an instance becomes running and ready, the agent installs, trains a number of
// steps per tick, checkpoints every few steps, and succeeds. A script injects spot notices, job
// failures and provider faults. With `file`, the world is kept on disk after every call, so a
// controller process can be killed and a new one sees the same cloud (the crash test).
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import {
  CapacityError,
  RetryableError,
  TerminalError,
  type AgentStatus,
  type AttemptKey,
  type BundlePruneResult,
  type CheckpointManifest,
  type DeployReport,
  type DeployRequest,
  type InstanceObservation,
  type LaunchRequest,
  type LaunchResult,
  type LogChunk,
  type Provider,
  type StopReason,
} from '../../src/providers/types.js';
import type { RunSpec } from '../../src/spec/types.js';

export interface Script {
  totalSteps: number;
  stepsPerTick: number;
  checkpointEvery: number;
  /** Deliver a spot notice when this run's attempt reaches this step. */
  spotAt?: { run: string; attempt: number; step: number }[];
  /** Make these attempts' jobs exit 1 at this step. */
  failAt?: { run: string; attempt: number; step: number }[];
  /** Terminate the instance out-of-band (no spot reason) at this step. */
  killAt?: { run: string; attempt: number; step: number }[];
  /** Fail the next `times` calls of an operation. */
  faults?: { op: keyof Provider; kind: 'retryable' | 'capacity' | 'terminal'; times: number }[];
  /** The agent lists this fault (fault channel) while its step is in [fromStep, untilStep). */
  faultsAt?: { run: string; attempt: number; fromStep: number; untilStep?: number; reason: string; message: string }[];
  /** Ticks an instance spends pending before it runs. */
  bootTicks?: number;
  /** Ticks an agent spends saving its final checkpoint after a notice (default 1). */
  saveTicks?: number;
}

interface Instance extends AttemptKey {
  id: string;
  state: 'pending' | 'running' | 'terminated';
  ticks: number;
  launchedAt: string;
  stateReason?: string;
  spotNoticeAt?: string;
  /** World ticks at which it was launched and terminated (for ordering assertions). */
  launchedTick?: number;
  terminatedTick?: number;
}

interface Agent extends AttemptKey {
  phase: AgentStatus['phase'];
  seq: number;
  step: number;
  startStep: number;
  exitCode?: number;
  lastCheckpoint?: number;
  stop?: StopReason;
  deploys: number;
  /** Deployed with its start gate closed (a prelaunched replacement): waits before training. */
  gated?: boolean;
  /** Ticks spent saving after a notice so far. */
  saving?: number;
}

export interface World {
  script: Script;
  tick: number;
  nextId: number;
  instances: Instance[];
  agents: Record<string, Agent>;
  /** run/g<gen> -> checkpoint steps, oldest first. */
  checkpoints: Record<string, number[]>;
  /** attempt key -> how many instances were actually created (adoptions excluded). */
  launches: Record<string, number>;
  calls: Record<string, number>;
  /** Code bundles in storage: `<storage>|<sha256>` -> when stored (epoch ms). */
  bundles?: Record<string, number>;
  /** Attempt keys whose start gate the controller opened. */
  gates?: Record<string, true>;
  /** Attempt keys -> ticks during which two agents of one run were training at once (must stay empty). */
  overlaps?: Record<string, number>;
}

// Storage and attempts are per run incarnation (uid), as in the real providers.
const runKey = (run: string, uid?: string) => (uid ? `${run}@${uid}` : run);
const keyOf = (k: AttemptKey) => `${runKey(k.run, k.uid)}/g${k.generation}/a${k.attempt}`;
const genKey = (run: string, generation: number, uid?: string) => `${runKey(run, uid)}/g${generation}`;
const sameAttempt = (a: AttemptKey, b: AttemptKey) => a.run === b.run && a.uid === b.uid && a.generation === b.generation && a.attempt === b.attempt;

export class MemoryProvider implements Provider {
  readonly name = 'local';
  world: World;

  constructor(
    script: Script,
    private readonly opts: { file?: string; pollIntervalMs?: number } = {},
  ) {
    const existing = opts.file && fs.existsSync(opts.file) ? (JSON.parse(fs.readFileSync(opts.file, 'utf8')) as World) : undefined;
    this.world = existing ?? {
      script,
      tick: 0,
      nextId: 1,
      instances: [],
      agents: {},
      checkpoints: {},
      launches: {},
      calls: {},
    };
    this.save();
  }

  get pollIntervalMs(): number {
    return this.opts.pollIntervalMs ?? 5;
  }

  private load(): void {
    if (this.opts.file && fs.existsSync(this.opts.file)) this.world = JSON.parse(fs.readFileSync(this.opts.file, 'utf8')) as World;
  }

  private save(): void {
    if (!this.opts.file) return;
    const tmp = `${this.opts.file}.tmp`;
    fs.writeFileSync(tmp, JSON.stringify(this.world));
    fs.renameSync(tmp, this.opts.file);
  }

  private enter(op: keyof Provider): void {
    this.load();
    this.world.calls[op] = (this.world.calls[op] ?? 0) + 1;
    const fault = this.world.script.faults?.find((f) => f.op === op && f.times > 0);
    if (fault) {
      fault.times--;
      this.save();
      const msg = `injected ${fault.kind} fault on ${op}`;
      if (fault.kind === 'retryable') throw new RetryableError(msg, { code: 'Throttling' });
      if (fault.kind === 'capacity') throw new CapacityError(msg, { code: 'InsufficientInstanceCapacity' });
      throw new TerminalError(msg, { code: 'UnauthorizedOperation' });
    }
  }

  async observe(runs: string[]): Promise<Map<string, InstanceObservation[]>> {
    this.enter('observe');
    this.advance();
    const out = new Map<string, InstanceObservation[]>();
    for (const i of this.world.instances) {
      if (!runs.includes(i.run)) continue;
      const list = out.get(i.run) ?? [];
      list.push({
        run: i.run,
        ...(i.uid ? { uid: i.uid } : {}),
        generation: i.generation,
        attempt: i.attempt,
        instance: { id: i.id, launchedAt: i.launchedAt, market: 'spot', type: 'mem.small', pricePerHour: 0.5 },
        state: i.state,
        ready: i.state === 'running',
        stateReason: i.stateReason,
        spotInterruption: i.spotNoticeAt ? { noticedAt: i.spotNoticeAt, reason: 'Server.SpotInstanceTermination' } : undefined,
      });
      out.set(i.run, list);
    }
    this.save();
    return out;
  }

  async launch(req: LaunchRequest): Promise<LaunchResult> {
    this.enter('launch');
    const existing = this.world.instances.find((i) => sameAttempt(i, req));
    if (existing) {
      this.save();
      return { instance: { id: existing.id, launchedAt: existing.launchedAt, pricePerHour: 0.5, market: 'spot' }, adopted: true };
    }
    const id = `mem-${this.world.nextId++}`;
    const launchedAt = new Date().toISOString();
    this.world.instances.push({ id, run: req.run, uid: req.uid, generation: req.generation, attempt: req.attempt, state: 'pending', ticks: 0, launchedAt, launchedTick: this.world.tick });
    this.world.launches[keyOf(req)] = (this.world.launches[keyOf(req)] ?? 0) + 1;
    this.save();
    return { instance: { id, launchedAt, pricePerHour: 0.5, market: 'spot', type: 'mem.small' }, adopted: false };
  }

  /** Each generation of a run has its own code in this world. */
  static codeBundleOf(run: string, generation: number): string {
    return createHash('sha256').update(`${run}/g${generation}`).digest('hex');
  }

  async deployAgent(req: DeployRequest): Promise<DeployReport> {
    this.enter('deployAgent');
    const codeBundle = MemoryProvider.codeBundleOf(req.run, req.generation);
    const bundles = (this.world.bundles ??= {});
    bundles[`${req.spec.checkpoints.storage ?? ''}|${codeBundle}`] ??= Date.now();
    const k = keyOf(req);
    const agent = this.world.agents[k];
    if (agent) {
      agent.deploys++;
    } else {
      const ckpts = this.world.checkpoints[genKey(req.run, req.generation, req.uid)] ?? [];
      const seed = req.seedGeneration !== undefined ? this.world.checkpoints[genKey(req.run, req.seedGeneration, req.uid)] ?? [] : [];
      const start = ckpts.at(-1) ?? seed.at(-1) ?? 0;
      this.world.agents[k] = {
        run: req.run,
        uid: req.uid,
        generation: req.generation,
        attempt: req.attempt,
        phase: 'starting',
        seq: 0,
        step: start,
        startStep: start,
        deploys: 1,
        ...(req.startGate ? { gated: true } : {}),
      };
    }
    this.save();
    return { codeBundle };
  }

  // Not counted in `calls` and never faulted: the sweep runs beside reconciling, not as part of it.
  async pruneBundles(spec: RunSpec, referenced: ReadonlySet<string>, opts: { minAgeMs: number }): Promise<BundlePruneResult> {
    this.load();
    const prefix = `${spec.checkpoints.storage ?? ''}|`;
    const deleted: string[] = [];
    let kept = 0;
    for (const [key, storedAt] of Object.entries(this.world.bundles ?? {})) {
      if (!key.startsWith(prefix)) continue;
      const sha = key.slice(prefix.length);
      if (referenced.has(sha) || Date.now() - storedAt < opts.minAgeMs) {
        kept++;
        continue;
      }
      delete this.world.bundles![key];
      deleted.push(`bundles/${sha}.tar.gz`);
    }
    this.save();
    return { deleted, kept };
  }

  async readAgentStatus(key: AttemptKey): Promise<AgentStatus | undefined> {
    this.enter('readAgentStatus');
    const a = this.world.agents[keyOf(key)];
    this.save();
    if (!a) return undefined;
    const total = this.world.script.totalSteps;
    return {
      run: a.run,
      generation: a.generation,
      attempt: a.attempt,
      phase: a.phase,
      seq: a.seq,
      heartbeatAt: new Date().toISOString(),
      exitCode: a.exitCode,
      progress: { step: a.step, total },
      lastCheckpoint:
        a.lastCheckpoint !== undefined
          ? { id: String(a.lastCheckpoint).padStart(8, '0'), step: a.lastCheckpoint, files: 1, bytes: 8, at: new Date().toISOString() }
          : undefined,
      logTail: a.phase === 'failed' ? [`step=${a.step}/${total}`, 'Traceback: injected failure'] : undefined,
      faults: (this.world.script.faultsAt ?? [])
        .filter((f) => f.run === a.run && f.attempt === a.attempt && a.step >= f.fromStep && (f.untilStep === undefined || a.step < f.untilStep))
        .map((f) => ({ reason: f.reason, message: f.message, since: new Date(Date.UTC(2026, 0, 1) + f.fromStep * 1000).toISOString() })),
    };
  }

  async requestStop(key: AttemptKey, _spec: RunSpec, reason: StopReason): Promise<void> {
    this.enter('requestStop');
    const a = this.world.agents[keyOf(key)];
    if (a && !['succeeded', 'failed', 'lost', 'stopped', 'interrupted'].includes(a.phase)) a.stop = reason;
    this.save();
  }

  async openStartGate(key: AttemptKey): Promise<void> {
    this.enter('openStartGate');
    (this.world.gates ??= {})[keyOf(key)] = true;
    this.save();
  }

  async deliverSpotNotice(_key: AttemptKey, instanceId: string): Promise<void> {
    this.enter('deliverSpotNotice');
    const i = this.world.instances.find((x) => x.id === instanceId);
    if (i && i.state !== 'terminated' && !i.spotNoticeAt) i.spotNoticeAt = new Date().toISOString();
    this.save();
  }

  async terminate(instanceId: string): Promise<void> {
    this.enter('terminate');
    const i = this.world.instances.find((x) => x.id === instanceId);
    if (i && i.state !== 'terminated') {
      i.state = 'terminated';
      i.terminatedTick = this.world.tick;
      i.stateReason ??= 'Client.UserInitiatedShutdown';
    }
    this.save();
  }

  async latestCheckpoint(run: string, generation: number, _spec?: RunSpec, uid?: string): Promise<CheckpointManifest | undefined> {
    this.enter('latestCheckpoint');
    const step = this.world.checkpoints[genKey(run, generation, uid)]?.at(-1);
    if (step === undefined) return undefined;
    return { id: String(step).padStart(8, '0'), run, generation, attempt: 0, step, createdAt: new Date().toISOString(), files: [] };
  }

  async readLogs(key: AttemptKey): Promise<LogChunk> {
    return { attempt: key.attempt, cursor: '', text: '' };
  }

  /** One tick of simulated time: instances boot, agents progress, scripted events fire. */
  private advance(): void {
    const w = this.world;
    const s = w.script;
    w.tick++;
    for (const i of w.instances) {
      if (i.state === 'pending' && ++i.ticks > (s.bootTicks ?? 1)) i.state = 'running';
    }
    for (const a of Object.values(w.agents)) {
      const inst = w.instances.find((i) => sameAttempt(i, a));
      if (!inst || inst.state === 'terminated') continue;
      const checkpoint = () => {
        const list = (w.checkpoints[genKey(a.run, a.generation, a.uid)] ??= []);
        if (list.at(-1) !== a.step) list.push(a.step);
        a.lastCheckpoint = a.step;
      };
      a.seq++;
      switch (a.phase) {
        case 'starting':
          a.phase = 'installing';
          break;
        case 'installing':
          a.phase = a.gated && !w.gates?.[keyOf(a)] ? 'waiting' : 'training';
          if (a.gated && a.phase === 'training') restoreAtGate(w, a);
          break;
        case 'waiting':
          // A prelaunched agent: set up, and restores and starts only once its gate is open.
          if (a.stop) a.phase = 'stopped';
          else if (inst.spotNoticeAt) a.phase = 'interrupted';
          else if (w.gates?.[keyOf(a)]) {
            restoreAtGate(w, a);
            a.phase = 'training';
          }
          break;
        case 'training': {
          if (a.stop) {
            checkpoint();
            a.phase = 'stopped';
            break;
          }
          if (inst.spotNoticeAt) {
            a.phase = 'interrupting';
            break;
          }
          for (let n = 0; n < s.stepsPerTick && a.step < s.totalSteps && (inst.state as Instance['state']) !== 'terminated'; n++) {
            a.step++;
            if (a.step % s.checkpointEvery === 0) checkpoint();
            const match = (e: { run: string; attempt: number; step: number }) =>
              e.run === a.run && e.attempt === a.attempt && e.step === a.step;
            if (s.failAt?.some(match)) {
              a.phase = 'failed';
              a.exitCode = 1;
              break;
            }
            if (s.spotAt?.some(match)) {
              inst.spotNoticeAt = new Date().toISOString();
              break;
            }
            if (s.killAt?.some(match)) {
              inst.state = 'terminated';
              inst.terminatedTick = w.tick;
              // The agent dies with its instance: its last status stays as it was.
              inst.stateReason = 'Client.UserInitiatedShutdown: terminated by another user';
              break;
            }
          }
          if (a.phase === 'training' && a.step >= s.totalSteps) {
            checkpoint();
            a.phase = 'succeeded';
            a.exitCode = 0;
          }
          break;
        }
        case 'interrupting':
          a.saving = (a.saving ?? 0) + 1;
          if (a.saving >= (s.saveTicks ?? 1)) {
            checkpoint();
            a.phase = 'interrupted';
          }
          break;
        case 'interrupted':
          // Real spot capacity is reclaimed after the notice: the instance goes away.
          inst.state = 'terminated';
          inst.terminatedTick = w.tick;
          inst.stateReason = 'Server.SpotInstanceTermination';
          break;
        default:
          break;
      }
    }
    // Never two jobs training for one run at once: recorded here, asserted by the tests.
    const training = new Map<string, number>();
    for (const a of Object.values(w.agents)) {
      const inst = w.instances.find((i) => sameAttempt(i, a));
      if (a.phase !== 'training' || !inst || inst.state === 'terminated') continue;
      const k = runKey(a.run, a.uid);
      training.set(k, (training.get(k) ?? 0) + 1);
    }
    for (const [k, n] of training) if (n > 1) (w.overlaps ??= {})[k] = (w.overlaps?.[k] ?? 0) + 1;
  }
}

/** A gated agent restores the newest checkpoint when its gate opens (the stopped attempt's final one). */
function restoreAtGate(w: World, a: Agent): void {
  const start = w.checkpoints[genKey(a.run, a.generation, a.uid)]?.at(-1) ?? a.startStep;
  a.step = start;
  a.startStep = start;
}

// Lookups by run name for tests with one incarnation per name (the world keys carry the uid).
function byName<T>(map: Record<string, T>, run: string, rest: string): T | undefined {
  const hits = Object.keys(map).filter((k) => k === `${run}${rest}` || (k.startsWith(`${run}@`) && k.endsWith(rest) && !k.slice(run.length + 1, -rest.length).includes('/')));
  return hits.length ? map[hits[hits.length - 1] as string] : undefined;
}

export function agentIn<A>(world: { agents: Record<string, A> }, run: string, generation: number, attempt: number): A | undefined {
  return byName(world.agents, run, `/g${generation}/a${attempt}`);
}

export function checkpointsIn(world: World, run: string, generation: number): number[] | undefined {
  return byName(world.checkpoints, run, `/g${generation}`);
}

export function launchesIn(world: World, run: string, generation: number, attempt: number): number | undefined {
  return byName(world.launches, run, `/g${generation}/a${attempt}`);
}

/** world.launches keyed by run name instead of run@uid (tests with one incarnation per name). */
export function launchesByName(world: World): Record<string, number> {
  return withoutUids(world.launches);
}

/** world.checkpoints keyed by run name instead of run@uid (tests with one incarnation per name). */
export function checkpointsByName(world: World): Record<string, number[]> {
  return withoutUids(world.checkpoints);
}

function withoutUids<T>(map: Record<string, T>): Record<string, T> {
  return Object.fromEntries(Object.entries(map).map(([k, v]) => [k.replace(/@[^/]+/, ''), v]));
}
