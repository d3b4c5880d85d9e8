// The controller: loads the desired runs, keeps a work queue of run names, and reconciles each
// run until it settles. One controller per state store (the file store's lock enforces it), or,
// with a shared store and leases, one controller per run at a time: a run is reconciled only
// while this controller holds its lease.
import { DEFAULT_BUNDLE_MIN_AGE_MS } from '../providers/bundle-gc.js';
import { CapacityError, RetryableError, TerminalError, type Provider } from '../providers/types.js';
import type { NotificationReceiver } from '../notify/receivers.js';
import type { Diagnostic } from '../spec/diagnostics.js';
import type { LoadedRun, RunSpec } from '../spec/types.js';
import type { Lease } from '../state/lease.js';
import { StateCorruptError } from '../state/event-log.js';
import { StatusUnreadableError } from '../state/status-record.js';
import { StaleWriteError, type RunEvent, type RunStatus, type StateStore } from '../state/types.js';
import type { RunctlMetrics } from './metrics.js';
import { planBundleSweeps } from './bundle-sweep.js';
import { Observer } from './observer.js';
import { findOrphans } from './orphan-sweep.js';
import { pruneRefusal } from './prune-guard.js';
import { WorkQueue } from './queue.js';
import { rebuildStatus, rebuiltEvent } from './rebuild.js';
import { reconcileRun, type ReconcileDeps } from './reconcile.js';

export interface DesiredState {
  runs: LoadedRun[];
  diagnostics: Diagnostic[];
  /** Files that had problems: runs last defined there keep their last valid spec. */
  invalidFiles: string[];
  /** Input paths that could not be read (missing, permissions): nothing is pruned while any exists. */
  unreadable?: string[];
  /** The revision (git commit) a spec file's content came from, when the runs are in git. */
  revisionOf?: (file: string) => string | undefined;
}

/** The leases a controller needs on a shared store (LeaseManager implements it). */
export interface RunLeases {
  readonly ttlMs: number;
  acquire(run: string): Promise<Lease | undefined>;
  held(run: string): Lease | undefined;
  release(lease: Lease): Promise<void>;
  renewDue(): Promise<{ renewed: string[]; lost: string[]; errors: Array<{ run: string; error: unknown }> }>;
  releaseAll(): Promise<void>;
  inspect?(run: string): Promise<{ holder: string; expiresAt: string; free: boolean } | undefined>;
}

/** Things a user should hear about that are neither events of a run nor errors. */
export type ControllerNotice =
  | { kind: 'lease-held-elsewhere' | 'stood-down' | 'lease-lost' | 'record-unreadable' | 'record-rebuilt'; run: string; message: string }
  | { kind: 'prune-refused' | 'lease-error' | 'bundles-deleted' | 'bundle-sweep-error' | 'orphan-terminated' | 'orphan-sweep-error'; message: string };

export interface ControllerOptions {
  store: StateStore;
  provider(name: RunSpec['provider']): Promise<Provider>;
  /** Loads the desired state (the runs folder); called at start and on resync. */
  load(): Promise<DesiredState>;
  controller: string;
  repoRoot: string;
  prune: boolean;
  workers?: number;
  now?: () => number;
  boundary?: (label: string) => void;
  onStatus?: (status: RunStatus) => void;
  onEvent?: (event: RunEvent) => void;
  onError?: (run: string, err: unknown, retryInMs: number) => void;
  /** With a shared store: act on a run only while holding its lease. */
  leases?: RunLeases;
  /** Prometheus metrics to keep up to date. */
  metrics?: RunctlMetrics;
  /** Let prune delete every run when the runs folder has none (see prune-guard.ts). */
  allowEmptyPrune?: boolean;
  onNotice?: (notice: ControllerNotice) => void;
  /** Look for code bundles no live instance uses at most this often (default 1 h); 0 never. */
  bundleSweepIntervalMs?: number;
  /** Unused bundles stored more recently than this are kept (default 24 h). */
  bundleMinAgeMs?: number;
  /** Look for orphaned instances (orphan-sweep.ts) at most this often (default 10 min); 0 never. */
  orphanSweepIntervalMs?: number;
  /** runctl.yaml's notification receivers: the events they want are stamped for delivery. */
  notifications?: readonly NotificationReceiver[];
  /**
   * Delivers notifications (src/notify/notifier.ts). Told after every reconcile and appended event;
   * never awaited, so a slow or failing receiver cannot hold up reconciling.
   */
  notifier?: NotifierPort;
}

/** What the controller needs of the notifier. */
export interface NotifierPort {
  afterReconcile(status: RunStatus): void;
  eventAppended(event: RunEvent): void;
  /** Deliveries of the run in flight or scheduled: its lease is kept until they are recorded. */
  busy(run: string): boolean;
}

const DEFAULT_ORPHAN_SWEEP_INTERVAL_MS = 10 * 60 * 1000;

const DEFAULT_BUNDLE_SWEEP_INTERVAL_MS = 60 * 60 * 1000;

export interface Summary {
  statuses: RunStatus[];
  diagnostics: Diagnostic[];
  failed: string[];
  /** Runs whose status record could not be read nor rebuilt: left alone, with what to do. */
  unreadable: { run: string; message: string }[];
}

/** How soon to look again at a run whose record could not be rebuilt (the user may fix it). */
const UNREADABLE_RETRY_MS = 30_000;

const SETTLED = new Set(['Completed', 'Failed', 'Suspended', 'Deleted']);

export class Controller {
  private desired = new Map<string, LoadedRun>();
  private known = new Set<string>();
  private invalidFiles = new Set<string>();
  private diagnostics: Diagnostic[] = [];
  private readonly statuses = new Map<string, RunStatus>();
  /** Runs whose record is unreadable and could not be rebuilt yet, with what to tell the user. */
  private readonly unreadable = new Map<string, string>();
  private readonly providersByRun = new Map<string, Provider>();
  private readonly observer: Observer;
  private readonly queue: WorkQueue;
  private readonly deps: ReconcileDeps;
  private readonly now: () => number;
  private once = false;
  private changeWaiters: Array<() => void> = [];
  private pruneRefused?: string;
  private revisionOf?: (file: string) => string | undefined;
  private renewTimer?: NodeJS.Timeout;
  private renewing = false;
  private lastBundleSweepAt?: number;
  private bundleSweep?: Promise<void>;
  private lastOrphanSweepAt?: number;
  private orphanSweep?: Promise<void>;

  constructor(private readonly opts: ControllerOptions) {
    this.now = opts.now ?? Date.now;
    this.observer = new Observer(
      (provider) => [...this.providersByRun].filter(([, p]) => p === provider).map(([run]) => run),
      this.now,
    );
    this.deps = {
      store: opts.store,
      provider: async (name) => opts.provider(name),
      observe: async (provider, run, freshAfter) =>
        this.observer.instances(provider, run, Math.max(freshAfter, this.now() - provider.pollIntervalMs / 2)),
      controller: opts.controller,
      repoRoot: opts.repoRoot,
      now: this.now,
      boundary: opts.boundary,
      onEvent: opts.notifier
        ? (e) => {
            opts.onEvent?.(e);
            opts.notifier?.eventAppended(e);
          }
        : opts.onEvent,
      notifications: opts.notifications,
      beforeEffect: opts.leases ? (run) => this.requireLease(run) : undefined,
    };
    this.queue = new WorkQueue((run) => this.work(run), {
      workers: opts.workers ?? 4,
      onError: (run, err, retryIn) => opts.onError?.(run, err, retryIn),
      onProcessed: () => this.signalChange(),
    });
  }

  /** Reloads the desired state and queues every run it or the store knows. */
  async resync(): Promise<DesiredState> {
    this.startRenewing();
    const state = await this.opts.load();
    this.diagnostics = state.diagnostics;
    this.invalidFiles = new Set(state.invalidFiles);
    this.desired = new Map(state.runs.map((r) => [r.run.metadata.name, r]));
    this.revisionOf = state.revisionOf;
    const stored = await this.opts.store.listRuns();
    this.known = new Set([...this.desired.keys(), ...stored]);
    for (const run of this.known) {
      // An unreadable record concerns its own run only: the others are loaded and reconciled.
      const status = this.statuses.get(run) ?? (await this.opts.store.getStatus(run).catch((err: unknown) => {
        if (err instanceof StatusUnreadableError) return undefined;
        throw err;
      }));
      if (status) this.statuses.set(run, status);
      const spec = this.desired.get(run)?.run.spec ?? status?.spec;
      if (spec) {
        const provider = await this.opts.provider(spec.provider);
        this.providersByRun.set(run, provider);
        // Before any observation: what a provider observes may depend on the spec (aws: regions).
        if (status?.spec && status.spec !== spec) provider.track?.(run, status.spec);
        provider.track?.(run, spec);
      }
    }
    this.pruneRefused = this.opts.prune
      ? pruneRefusal({
          desired: [...this.desired.keys()],
          stored: stored
            .map((run) => this.statuses.get(run))
            .filter((s): s is RunStatus => s !== undefined && s.phase !== 'Deleted')
            .map((s) => ({ run: s.run, file: s.source?.file })),
          invalidFiles: state.invalidFiles,
          unreadable: state.unreadable ?? [],
          allowEmpty: this.opts.allowEmptyPrune,
        })
      : undefined;
    if (this.pruneRefused) this.opts.onNotice?.({ kind: 'prune-refused', message: this.pruneRefused });
    for (const run of this.known) this.queue.add(run);
    this.maybeSweepBundles();
    this.maybeSweepOrphans();
    return state;
  }

  /** One pass: every run reconciled once, no polling afterwards. */
  async runOnce(): Promise<Summary> {
    this.once = true;
    await this.resync();
    await this.queue.whenIdle();
    await this.bundleSweep;
    await this.orphanSweep;
    return this.summary();
  }

  /** Reconciles until every run has settled (Completed, Failed, Suspended or deleted). */
  async runUntilSettled(signal?: AbortSignal): Promise<Summary> {
    await this.resync();
    while (!signal?.aborted && !this.allSettled()) {
      await this.nextChange(signal);
    }
    await this.queue.drain();
    await this.bundleSweep;
    return this.summary();
  }

  /**
   * Stops taking work; resolves when the reconcile in flight has finished and persisted. With
   * leases, then lets go of every lease so another controller can take the runs at once.
   */
  async stop(): Promise<void> {
    await this.queue.shutdown();
    await this.bundleSweep;
    if (this.renewTimer) clearInterval(this.renewTimer);
    this.renewTimer = undefined;
    await this.opts.leases?.releaseAll().catch((err: unknown) => {
      this.opts.onNotice?.({ kind: 'lease-error', message: `${errorMessage(err)} (they expire on their own)` });
    });
  }

  /** Why pruning was refused on the last load, if it was. */
  get pruneRefusal(): string | undefined {
    return this.pruneRefused;
  }

  get runs(): RunStatus[] {
    return [...this.statuses.values()].sort((a, b) => a.run.localeCompare(b.run));
  }

  /** Queue a run now (watch events, manual nudges). */
  nudge(run: string): void {
    this.queue.add(run);
  }

  private async work(run: string): Promise<{ requeueAfterMs?: number }> {
    const started = performance.now();
    let outcome = 'error';
    try {
      const { result, requeueAfterMs } = await this.workUnderLease(run);
      outcome = result;
      if (this.once) return {};
      return { requeueAfterMs };
    } catch (err) {
      this.opts.metrics?.error(errorKind(err));
      throw err;
    } finally {
      this.opts.metrics?.reconciled(outcome, (performance.now() - started) / 1000);
      this.opts.metrics?.observeRuns(this.runs);
    }
  }

  private async workUnderLease(run: string): Promise<{ result: string; requeueAfterMs?: number }> {
    const leases = this.opts.leases;
    if (leases && !leases.held(run)) {
      const lease = await leases.acquire(run);
      if (!lease) {
        const holder = await leases.inspect?.(run).catch(() => undefined);
        const who = holder ? `${holder.holder} holds its lease until ${holder.expiresAt}` : 'another controller holds its lease';
        this.opts.onNotice?.({ kind: 'lease-held-elsewhere', run, message: `left to another controller: ${who}` });
        return { result: 'leased-elsewhere', requeueAfterMs: this.leaseRetryMs() };
      }
    }
    try {
      const requeueAfterMs = await this.reconcile(run);
      const lease = leases?.held(run);
      // A settled run needs nobody: let another controller take it without waiting for expiry;
      // but not while its notifications are being sent (their records need the lease).
      if (leases && lease && requeueAfterMs === undefined && !this.opts.notifier?.busy(run)) await leases.release(lease);
      return { result: requeueAfterMs === undefined ? 'ok' : 'requeued', requeueAfterMs };
    } catch (err) {
      if (!(err instanceof StaleWriteError) || !leases) throw err;
      // Another controller took the run over (or this one paused past its lease): what this
      // controller computed is void. Forget it, and look again once the lease may be free.
      this.opts.metrics?.error('stale-write');
      this.statuses.delete(run);
      const lease = leases.held(run);
      if (lease) await leases.release(lease).catch(() => undefined);
      this.opts.onNotice?.({ kind: 'stood-down', run, message: `stood down: ${err.message}` });
      return { result: 'stood-down', requeueAfterMs: this.leaseRetryMs() };
    }
  }

  private async reconcile(run: string): Promise<number | undefined> {
    const loaded = this.desired.get(run);
    const previous = this.statuses.get(run);
    // A run whose file is currently invalid keeps its last valid spec: never act on a bad file.
    const keepLast = !loaded && previous?.source && this.invalidFiles.has(previous.source.file);
    const desired = {
      loaded: keepLast ? undefined : loaded,
      prune: this.opts.prune && !keepLast && !this.pruneRefused,
      revision: loaded ? this.revisionOf?.(loaded.file) : undefined,
    };
    let result;
    try {
      try {
        result = await reconcileRun(this.deps, run, desired);
      } catch (err) {
        if (!(err instanceof StatusUnreadableError)) throw err;
        if (!(await this.rebuild(run, err))) return this.once ? undefined : UNREADABLE_RETRY_MS;
        result = await reconcileRun(this.deps, run, desired);
      }
    } catch (err) {
      // Any other damaged state file of this run (its event log): this run waits for the fix,
      // every other run goes on. The message names the file and what to do.
      if (!(err instanceof StateCorruptError) || err instanceof StatusUnreadableError) throw err;
      const message = `${err.message}; runctl leaves this run alone until then`;
      if (this.unreadable.get(run) !== message) this.opts.onNotice?.({ kind: 'record-unreadable', run, message });
      this.unreadable.set(run, message);
      return this.once ? undefined : UNREADABLE_RETRY_MS;
    }
    this.unreadable.delete(run);
    if (result.status) {
      this.statuses.set(run, result.status);
      this.opts.notifier?.afterReconcile(result.status);
      this.opts.onStatus?.(result.status);
      if (result.status.phase === 'Deleted') this.known.delete(run);
    }
    return result.requeueAfterMs;
  }

  /**
   * Rebuilds a run's unreadable status record from its event log and the instances the provider
   * shows (rebuild.ts). Until that succeeds the run is left alone: nothing is launched, stopped or
   * written for it, and the user is told what to do. True when the record was rebuilt.
   */
  private async rebuild(run: string, error: StatusUnreadableError): Promise<boolean> {
    const loaded = this.desired.get(run);
    const provider = loaded ? await this.opts.provider(loaded.run.spec.provider) : undefined;
    if (provider && loaded) {
      this.providersByRun.set(run, provider);
      provider.track?.(run, loaded.run.spec);
    }
    const observed = provider ? await this.observer.instances(provider, run, this.now()) : [];
    const rebuilt = await rebuildStatus({ run, error, store: this.opts.store, loaded, observed, now: this.now() });
    const unreadable = (problem: string) => {
      const message = `${error.message.replace(/; runctl leaves this run alone.*$/, '')}; runctl leaves this run alone: it cannot be rebuilt because ${problem}`;
      if (this.unreadable.get(run) !== message) this.opts.onNotice?.({ kind: 'record-unreadable', run, message });
      this.unreadable.set(run, message);
      return false;
    };
    if ('problem' in rebuilt) return unreadable(rebuilt.problem);
    if (!this.opts.store.replaceUnreadableStatus) return unreadable('this state store cannot replace a record');
    this.deps.beforeEffect?.(run);
    const keptAt = await this.opts.store.replaceUnreadableStatus(rebuilt.status);
    const event = rebuiltEvent(rebuilt.status, error, rebuilt.from, keptAt, this.now());
    await this.opts.store.appendEvents(run, [event]);
    this.opts.onEvent?.(event);
    this.opts.onNotice?.({ kind: 'record-rebuilt', run, message: event.message ?? 'rebuilt' });
    this.unreadable.delete(run);
    return true;
  }

  /**
   * Deletes code bundles no live instance runs, at most once per interval, in the background: it
   * never holds up reconciling. What is in use is read afresh from the store, so runs another
   * controller acts on (shared state) are counted too.
   */
  private maybeSweepBundles(): void {
    const every = this.opts.bundleSweepIntervalMs ?? DEFAULT_BUNDLE_SWEEP_INTERVAL_MS;
    if (every <= 0 || this.bundleSweep) return;
    if (this.lastBundleSweepAt !== undefined && this.now() - this.lastBundleSweepAt < every) return;
    this.lastBundleSweepAt = this.now();
    this.bundleSweep = this.sweepBundles()
      .catch((err: unknown) => this.opts.onNotice?.({ kind: 'bundle-sweep-error', message: `could not clean up unused code bundles: ${errorMessage(err)} (tried again later)` }))
      .finally(() => {
        this.bundleSweep = undefined;
      });
  }

  /** Terminates orphaned instances (see orphan-sweep.ts) at most once per interval, in the background. */
  private maybeSweepOrphans(): void {
    const every = this.opts.orphanSweepIntervalMs ?? DEFAULT_ORPHAN_SWEEP_INTERVAL_MS;
    if (every <= 0 || this.orphanSweep) return;
    if (this.lastOrphanSweepAt !== undefined && this.now() - this.lastOrphanSweepAt < every) return;
    this.lastOrphanSweepAt = this.now();
    this.orphanSweep = this.sweepOrphans()
      .catch((err: unknown) => this.opts.onNotice?.({ kind: 'orphan-sweep-error', message: `could not look for orphaned instances: ${errorMessage(err)} (tried again later)` }))
      .finally(() => {
        this.orphanSweep = undefined;
      });
  }

  private async sweepOrphans(): Promise<void> {
    const names = new Set<RunSpec['provider']>();
    for (const r of this.desired.values()) names.add(r.run.spec.provider);
    for (const st of this.statuses.values()) names.add(st.spec.provider);
    for (const name of names) {
      const provider = await this.opts.provider(name);
      if (!provider.listOwned) continue;
      // Instances first, statuses after: a run that launched in between shows its new phase.
      const instances = await provider.listOwned();
      const statuses = new Map<string, RunStatus>();
      for (const run of new Set(instances.map((i) => i.run))) {
        const st = await this.opts.store.getStatus(run);
        if (st) statuses.set(run, st);
      }
      for (const orphan of findOrphans(instances, statuses, new Set(this.desired.keys()), this.now())) {
        const o = orphan.observation;
        await provider.terminate(o.instance.id, { launchedAt: o.instance.launchedAt });
        this.opts.metrics?.orphanTerminated();
        const message = `terminated orphaned instance ${o.instance.id} (generation ${o.generation}, attempt ${o.attempt}): ${orphan.why}`;
        if (orphan.status) {
          await this.opts.store.appendEvents(o.run, [
            {
              id: `${o.run}:orphan:${o.instance.id}`,
              seq: orphan.status.eventSeq,
              at: new Date(this.now()).toISOString(),
              run: o.run,
              generation: o.generation,
              attempt: o.attempt,
              kind: 'effect',
              action: 'terminate',
              result: 'ok',
              message,
            },
          ]);
        }
        this.opts.onNotice?.({ kind: 'orphan-terminated', message });
      }
    }
  }

  private async sweepBundles(): Promise<void> {
    const statuses: RunStatus[] = [];
    for (const run of await this.opts.store.listRuns()) {
      const status = await this.opts.store.getStatus(run).catch((err: unknown) => {
        // Which bundles an unreadable record's instances run is unknown: delete none this time.
        if (err instanceof StatusUnreadableError) throw new Error(`not cleaning up code bundles while the status record of run ${run} is unreadable`);
        throw err;
      });
      if (status) statuses.push(status);
    }
    const minAgeMs = this.opts.bundleMinAgeMs ?? DEFAULT_BUNDLE_MIN_AGE_MS;
    for (const sweep of planBundleSweeps(statuses).sweeps) {
      const provider = await this.opts.provider(sweep.spec.provider);
      if (!provider.pruneBundles) continue;
      const { deleted } = await provider.pruneBundles(sweep.spec, sweep.referenced, { minAgeMs });
      if (deleted.length > 0) {
        const n = deleted.length;
        this.opts.onNotice?.({ kind: 'bundles-deleted', message: `deleted ${n} code bundle${n === 1 ? '' : 's'} no run uses any more from ${sweep.storage}` });
      }
      if (!provider.pruneSetupCaches) continue;
      const caches = await provider.pruneSetupCaches(sweep.spec, sweep.setupCacheKeys, { minAgeMs });
      if (caches.deleted.length > 0) {
        const n = caches.deleted.length;
        this.opts.onNotice?.({ kind: 'bundles-deleted', message: `deleted ${n} setup cache object${n === 1 ? '' : 's'} no run uses any more from ${sweep.storage}` });
      }
    }
  }

  /** Effects run only under a live lease: one that lapsed mid-reconcile stops the run's work. */
  private requireLease(run: string): void {
    if (!this.opts.leases?.held(run)) {
      throw new StaleWriteError(`the lease on run ${run} lapsed before its next effect (this controller paused or lost it); not acting on it`);
    }
  }

  /** How soon to look again at a run another controller holds: often enough to take over soon after its lease expires. */
  private leaseRetryMs(): number {
    return Math.max(500, Math.round((this.opts.leases?.ttlMs ?? 60_000) / 3));
  }

  private startRenewing(): void {
    const leases = this.opts.leases;
    if (!leases || this.renewTimer) return;
    this.renewTimer = setInterval(() => void this.renewLeases(leases), Math.max(200, Math.round(leases.ttlMs / 6)));
    this.renewTimer.unref();
  }

  private async renewLeases(leases: RunLeases): Promise<void> {
    if (this.renewing) return;
    this.renewing = true;
    try {
      const { lost, errors } = await leases.renewDue();
      for (const run of lost) {
        this.opts.onNotice?.({ kind: 'lease-lost', run, message: 'lease lost (another controller took the run over, or it could not be renewed in time); standing down for this run' });
      }
      for (const { run, error } of errors) {
        this.opts.onNotice?.({ kind: 'lease-error', message: `could not renew the lease on ${run}: ${errorMessage(error)}` });
      }
    } catch (err) {
      this.opts.onNotice?.({ kind: 'lease-error', message: `could not renew leases: ${errorMessage(err)}` });
    } finally {
      this.renewing = false;
    }
  }

  private allSettled(): boolean {
    if (this.queue.busy) return false;
    for (const run of this.known) {
      // A record that cannot be rebuilt waits for the user; it does not hold up the other runs.
      if (this.unreadable.has(run)) continue;
      const status = this.statuses.get(run);
      if (!status) return false;
      if (!SETTLED.has(status.phase) || status.pending) return false;
      const loaded = this.desired.get(run);
      if (status.phase === 'Suspended' && loaded && !loaded.run.spec.suspend) return false;
      if (loaded && loaded.specHash !== status.specHash) return false;
    }
    return true;
  }

  private nextChange(signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        signal?.removeEventListener('abort', done);
        resolve();
      };
      this.changeWaiters.push(done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  private signalChange(): void {
    for (const resolve of this.changeWaiters.splice(0)) resolve();
  }

  private summary(): Summary {
    const statuses = this.runs;
    return {
      statuses,
      diagnostics: this.diagnostics,
      failed: statuses.filter((s) => s.phase === 'Failed').map((s) => s.run),
      unreadable: [...this.unreadable].map(([run, message]) => ({ run, message })),
    };
  }
}

function errorKind(err: unknown): string {
  if (err instanceof StaleWriteError) return 'stale-write';
  if (err instanceof CapacityError) return 'capacity';
  if (err instanceof TerminalError) return 'terminal';
  if (err instanceof RetryableError) return 'retryable';
  return 'other';
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
