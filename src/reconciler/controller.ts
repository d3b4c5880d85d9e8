// The controller: loads the desired runs, keeps a work queue of run names, and reconciles each
// run until it settles. One controller per state store (the file store's lock enforces it).
import type { Provider } from '../providers/types.js';
import type { Diagnostic } from '../spec/diagnostics.js';
import type { LoadedRun, RunSpec } from '../spec/types.js';
import type { RunEvent, RunStatus, StateStore } from '../state/types.js';
import { Observer } from './observer.js';
import { WorkQueue } from './queue.js';
import { reconcileRun, type ReconcileDeps } from './reconcile.js';

export interface DesiredState {
  runs: LoadedRun[];
  diagnostics: Diagnostic[];
  /** Files that had problems: runs last defined there keep their last valid spec. */
  invalidFiles: string[];
}

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
}

export interface Summary {
  statuses: RunStatus[];
  diagnostics: Diagnostic[];
  failed: string[];
}

const SETTLED = new Set(['Completed', 'Failed', 'Suspended', 'Deleted']);

export class Controller {
  private desired = new Map<string, LoadedRun>();
  private known = new Set<string>();
  private invalidFiles = new Set<string>();
  private diagnostics: Diagnostic[] = [];
  private readonly statuses = new Map<string, RunStatus>();
  private readonly providersByRun = new Map<string, Provider>();
  private readonly observer: Observer;
  private readonly queue: WorkQueue;
  private readonly deps: ReconcileDeps;
  private readonly now: () => number;
  private once = false;
  private changeWaiters: Array<() => void> = [];

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
      onEvent: opts.onEvent,
    };
    this.queue = new WorkQueue((run) => this.work(run), {
      workers: opts.workers ?? 4,
      onError: (run, err, retryIn) => opts.onError?.(run, err, retryIn),
      onProcessed: () => this.signalChange(),
    });
  }

  /** Reloads the desired state and queues every run it or the store knows. */
  async resync(): Promise<DesiredState> {
    const state = await this.opts.load();
    this.diagnostics = state.diagnostics;
    this.invalidFiles = new Set(state.invalidFiles);
    this.desired = new Map(state.runs.map((r) => [r.run.metadata.name, r]));
    const stored = await this.opts.store.listRuns();
    this.known = new Set([...this.desired.keys(), ...stored]);
    for (const run of this.known) {
      const status = this.statuses.get(run) ?? (await this.opts.store.getStatus(run));
      if (status) this.statuses.set(run, status);
      const spec = this.desired.get(run)?.run.spec ?? status?.spec;
      if (spec) this.providersByRun.set(run, await this.opts.provider(spec.provider));
    }
    for (const run of this.known) this.queue.add(run);
    return state;
  }

  /** One pass: every run reconciled once, no polling afterwards. */
  async runOnce(): Promise<Summary> {
    this.once = true;
    await this.resync();
    await this.queue.whenIdle();
    return this.summary();
  }

  /** Reconciles until every run has settled (Completed, Failed, Suspended or deleted). */
  async runUntilSettled(signal?: AbortSignal): Promise<Summary> {
    await this.resync();
    while (!signal?.aborted && !this.allSettled()) {
      await this.nextChange(signal);
    }
    await this.queue.drain();
    return this.summary();
  }

  /** Stops taking work; resolves when the reconcile in flight has finished and persisted. */
  async stop(): Promise<void> {
    await this.queue.shutdown();
  }

  get runs(): RunStatus[] {
    return [...this.statuses.values()].sort((a, b) => a.run.localeCompare(b.run));
  }

  /** Queue a run now (watch events, manual nudges). */
  nudge(run: string): void {
    this.queue.add(run);
  }

  private async work(run: string): Promise<{ requeueAfterMs?: number }> {
    const loaded = this.desired.get(run);
    const previous = this.statuses.get(run);
    // A run whose file is currently invalid keeps its last valid spec: never act on a bad file.
    const keepLast = !loaded && previous?.source && this.invalidFiles.has(previous.source.file);
    const result = await reconcileRun(this.deps, run, {
      loaded: keepLast ? undefined : loaded,
      prune: this.opts.prune && !keepLast,
    });
    if (result.status) {
      this.statuses.set(run, result.status);
      this.opts.onStatus?.(result.status);
      if (result.status.phase === 'Deleted') this.known.delete(run);
    }
    if (this.once) return {};
    return { requeueAfterMs: result.requeueAfterMs };
  }

  private allSettled(): boolean {
    if (this.queue.busy) return false;
    for (const run of this.known) {
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
    };
  }
}
