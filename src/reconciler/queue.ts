// A work queue keyed by run name, in the manner of Kubernetes controllers: a key is queued at most
// once, never handed to two workers at once, and a key added while it is being worked on is
// queued again once that work ends. Failures back off exponentially with jitter; successes may
// ask to be looked at again after a delay (polling).

export interface WorkResult {
  /** Look at this key again after this many ms; undefined = only when something asks. */
  requeueAfterMs?: number;
}

export type Worker = (key: string) => Promise<WorkResult>;

export interface QueueOptions {
  workers: number;
  baseBackoffMs?: number;
  maxBackoffMs?: number;
  /** Injectable for tests: returns a number in [0, 1). */
  random?: () => number;
  onError?: (key: string, err: unknown, retryInMs: number) => void;
  /** Called after a key's work has ended and it was requeued or dropped. */
  onProcessed?: (key: string) => void;
}

export class WorkQueue {
  private readonly ready: string[] = [];
  private readonly queued = new Set<string>();
  private readonly active = new Set<string>();
  /** Keys added again while active: requeued when their work ends. */
  private readonly dirty = new Set<string>();
  private readonly timers = new Map<string, { at: number; timer: NodeJS.Timeout }>();
  private readonly failures = new Map<string, number>();
  private readonly idleWaiters: Array<() => void> = [];
  private running = 0;
  private stopped = false;
  private readonly opts: Required<Omit<QueueOptions, 'onError' | 'onProcessed'>> &
    Pick<QueueOptions, 'onError' | 'onProcessed'>;

  constructor(
    private readonly worker: Worker,
    opts: QueueOptions,
  ) {
    this.opts = {
      baseBackoffMs: 500,
      maxBackoffMs: 60_000,
      random: Math.random,
      ...opts,
    };
  }

  /** Queue a key now (coalescing with any pending delayed add). */
  add(key: string): void {
    if (this.stopped) return;
    this.clearTimer(key);
    if (this.active.has(key)) {
      this.dirty.add(key);
      return;
    }
    if (this.queued.has(key)) return;
    this.queued.add(key);
    this.ready.push(key);
    this.pump();
  }

  /** Queue a key after a delay; an earlier pending delay for the same key wins. */
  addAfter(key: string, delayMs: number): void {
    if (this.stopped) return;
    const at = Date.now() + delayMs;
    const existing = this.timers.get(key);
    if (existing && existing.at <= at) return;
    this.clearTimer(key);
    const timer = setTimeout(() => {
      this.timers.delete(key);
      this.add(key);
    }, delayMs);
    this.timers.set(key, { at, timer });
  }

  /** Drop any delayed work for a key (it is finished or gone). */
  forget(key: string): void {
    this.clearTimer(key);
    this.failures.delete(key);
  }

  /** Keys waiting now, being worked on, or scheduled for later. */
  get size(): number {
    return this.queued.size + this.active.size + this.timers.size;
  }

  get busy(): boolean {
    return this.queued.size + this.active.size > 0;
  }

  /** Resolves when no key is queued or being worked on (delayed keys may remain). */
  async whenIdle(): Promise<void> {
    if (!this.busy) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /** Drop delayed work and wait for the work in flight; the queue stays usable. */
  async drain(): Promise<void> {
    for (const key of [...this.timers.keys()]) this.clearTimer(key);
    await this.whenIdle();
  }

  /** Stop taking work; resolves once the work in flight has finished. */
  async shutdown(): Promise<void> {
    this.stopped = true;
    for (const key of [...this.timers.keys()]) this.clearTimer(key);
    this.ready.length = 0;
    this.queued.clear();
    this.dirty.clear();
    await this.whenIdle();
  }

  private clearTimer(key: string): void {
    const t = this.timers.get(key);
    if (t) {
      clearTimeout(t.timer);
      this.timers.delete(key);
    }
  }

  private pump(): void {
    while (!this.stopped && this.running < this.opts.workers && this.ready.length > 0) {
      const key = this.ready.shift() as string;
      this.queued.delete(key);
      this.active.add(key);
      this.running++;
      void this.process(key);
    }
    if (!this.busy) {
      for (const resolve of this.idleWaiters.splice(0)) resolve();
    }
  }

  private async process(key: string): Promise<void> {
    let requeueAfter: number | undefined;
    try {
      const result = await this.worker(key);
      this.failures.delete(key);
      requeueAfter = result.requeueAfterMs;
    } catch (err) {
      const n = (this.failures.get(key) ?? 0) + 1;
      this.failures.set(key, n);
      requeueAfter = this.backoff(n);
      this.opts.onError?.(key, err, requeueAfter);
    } finally {
      this.active.delete(key);
      this.running--;
    }
    if (this.dirty.delete(key)) {
      this.add(key);
    } else if (requeueAfter !== undefined) {
      this.addAfter(key, requeueAfter);
    }
    this.pump();
    this.opts.onProcessed?.(key);
  }

  /** Exponential backoff with full jitter, bounded by maxBackoffMs. */
  backoff(failures: number): number {
    const ceiling = Math.min(this.opts.maxBackoffMs, this.opts.baseBackoffMs * 2 ** Math.min(failures - 1, 20));
    return Math.round(ceiling / 2 + (ceiling / 2) * this.opts.random());
  }
}
