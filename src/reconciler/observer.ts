// Batched observation: one provider.observe() call serves every run of that provider. Concurrent
// requests share the call in flight, and a cached result is reused while it is fresh enough, so
// a pass over N runs costs one DescribeInstances (per page), not N.
import type { InstanceObservation, Provider } from '../providers/types.js';

interface Snapshot {
  takenAt: number;
  byRun: Map<string, InstanceObservation[]>;
}

interface Inflight {
  startedAt: number;
  promise: Promise<Snapshot>;
}

export class Observer {
  private readonly cache = new Map<Provider, Snapshot>();
  private readonly inflight = new Map<Provider, Inflight>();

  constructor(
    /** Every run name the controller currently manages on this provider. */
    private readonly runsOf: (provider: Provider) => string[],
    private readonly now: () => number = Date.now,
  ) {}

  /** Observations of one run taken no earlier than `freshAfter` (epoch ms). */
  async instances(provider: Provider, run: string, freshAfter: number): Promise<InstanceObservation[]> {
    const snap = await this.snapshot(provider, freshAfter);
    return snap.byRun.get(run) ?? [];
  }

  private async snapshot(provider: Provider, freshAfter: number): Promise<Snapshot> {
    const cached = this.cache.get(provider);
    if (cached && cached.takenAt >= freshAfter) return cached;
    const running = this.inflight.get(provider);
    if (running && running.startedAt >= freshAfter) return running.promise;
    const startedAt = this.now();
    const promise = provider
      .observe(this.runsOf(provider))
      .then((byRun) => {
        const snap = { takenAt: startedAt, byRun };
        const current = this.cache.get(provider);
        if (!current || current.takenAt < startedAt) this.cache.set(provider, snap);
        return snap;
      })
      .finally(() => {
        if (this.inflight.get(provider)?.promise === promise) this.inflight.delete(provider);
      });
    this.inflight.set(provider, { startedAt, promise });
    return promise;
  }
}
