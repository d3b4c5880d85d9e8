// Per-run leases in the shared store, so two controllers (a control host and CI) never act on the
// same run at once. A lease is one object, `state/leases/<run>.json`, changed only by conditional
// writes: whoever creates it (If-None-Match: *) or replaces an expired one (If-Match on its etag)
// holds it, with an epoch one higher than before. The epoch fences status writes (see
// shared-store.ts): a holder that paused past its expiry finds its writes refused.
//
// Expiry is wall-clock time written by the holder and judged by the acquirer's clock, so clocks must
// agree to within the safety margin: a holder stops trusting its lease `marginMs` before it expires.
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import { conditionalPut, PreconditionFailed, type ObjectStore } from './object-store.js';
import { leaseKey } from './shared-layout.js';

/** What the lease object holds. Times are ISO strings so the object reads well in `aws s3 cp … -`. */
export interface LeaseRecord {
  holder: string;
  /** Increments on every change of holder (and on taking back an expired lease). */
  epoch: number;
  acquiredAt: string;
  renewedAt: string;
  expiresAt: string;
  ttlMs: number;
  /** Set when the holder let go; the lease is free at once, whatever the clocks say. */
  releasedAt?: string;
}

/** A lease this process holds. Times are epoch milliseconds. */
export interface Lease {
  run: string;
  holder: string;
  epoch: number;
  acquiredAt: number;
  renewedAt: number;
  expiresAt: number;
  /** Etag of the lease object as this holder last wrote it: the renew and release condition. */
  etag: string;
}

/** The part of LeaseManager the state store needs. */
export interface LeaseView {
  /** The live lease on `run`, if this process has one. */
  held(run: string): Lease | undefined;
  /** Moves a held lease to an epoch above `floor` (compare-and-swap); undefined if it was lost. */
  raise(lease: Lease, floor: number): Promise<Lease | undefined>;
}

/** Long enough to ride out a slow S3 call or a GC pause, short enough that a dead controller's runs move on within a minute. */
export const DEFAULT_LEASE_TTL_MS = 60_000;

export interface LeaseManagerOptions {
  /** Stop trusting a lease this long before it expires (covers clock skew and a write in flight). */
  marginMs?: number;
}

export class LeaseCorruptError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LeaseCorruptError';
  }
}

/** A holder name unique to this process: host, pid and a random part (pids repeat across hosts and restarts). */
export function defaultHolder(): string {
  return `${os.hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
}

const ACQUIRE_ROUNDS = 3;

export class LeaseManager implements LeaseView {
  readonly marginMs: number;
  private readonly leases = new Map<string, Lease>();

  constructor(
    private readonly store: ObjectStore,
    readonly holder: string,
    readonly ttlMs: number,
    private readonly clock: () => number = Date.now,
    opts: LeaseManagerOptions = {},
  ) {
    if (!holder || /\s/.test(holder)) throw new Error(`lease holder ${JSON.stringify(holder)} must be a non-empty name without spaces`);
    if (!Number.isFinite(ttlMs) || ttlMs < 1000) throw new Error(`lease duration ${ttlMs} ms is too short: use at least 1000 ms (the default is ${DEFAULT_LEASE_TTL_MS / 1000} s)`);
    this.marginMs = opts.marginMs ?? Math.min(5_000, Math.floor(ttlMs / 4));
    if (this.marginMs < 0 || this.marginMs >= ttlMs) throw new Error(`lease safety margin ${this.marginMs} ms must be between 0 and the lease duration (${ttlMs} ms)`);
  }

  /**
   * Takes the lease on `run` if it is free (never taken, released or expired) or already ours.
   * Returns undefined while another holder has it; `inspect` says who.
   */
  async acquire(run: string): Promise<Lease | undefined> {
    const key = leaseKey(run);
    for (let round = 0; round < ACQUIRE_ROUNDS; round++) {
      const current = await this.store.get(key);
      const now = this.clock();
      if (!current) {
        const lease = await this.tryWrite(run, key, undefined, this.record(1, now, now));
        if (lease) return lease;
        continue; // created by someone else in between: look at it
      }
      const record = parseRecord(current.body, `${this.store.url}/${key}`);
      let next: LeaseRecord;
      if (record.holder === this.holder && !isFree(record, now)) {
        // Ours already (a second acquire, or a retried create that did land): keep the epoch, extend.
        next = this.record(record.epoch, Date.parse(record.acquiredAt), now);
      } else if (isFree(record, now)) {
        next = this.record(record.epoch + 1, now, now);
      } else {
        return undefined;
      }
      const lease = await this.tryWrite(run, key, current.etag, next);
      if (lease) return lease;
    }
    return undefined;
  }

  /** Extends a held lease by compare-and-swap; undefined when it was lost (someone took it over). */
  async renew(lease: Lease): Promise<Lease | undefined> {
    const now = this.clock();
    const renewed = await this.tryWrite(lease.run, leaseKey(lease.run), lease.etag, this.record(lease.epoch, lease.acquiredAt, now));
    if (!renewed) this.forget(lease);
    return renewed;
  }

  /**
   * Moves a held lease to `floor + 1` when that is above its epoch. Needed when the lease object was
   * deleted and recreated at epoch 1 while status objects still carry the fence of a higher epoch.
   */
  async raise(lease: Lease, floor: number): Promise<Lease | undefined> {
    if (lease.epoch > floor) return lease;
    const raised = await this.tryWrite(lease.run, leaseKey(lease.run), lease.etag, this.record(floor + 1, lease.acquiredAt, this.clock()));
    if (!raised) this.forget(lease);
    return raised;
  }

  /** Lets go of a lease so another controller can take it at once; a lease already lost is left alone. */
  async release(lease: Lease): Promise<void> {
    const now = this.clock();
    const record: LeaseRecord = {
      ...this.record(lease.epoch, lease.acquiredAt, lease.renewedAt),
      expiresAt: iso(now - 1),
      releasedAt: iso(now),
    };
    this.forget(lease);
    try {
      await conditionalPut(this.store, leaseKey(lease.run), JSON.stringify(record, null, 2), lease.etag);
    } catch (err) {
      if (!(err instanceof PreconditionFailed)) throw err;
    }
  }

  /** Releases every lease this manager holds (controller shutdown); failures are reported together. */
  async releaseAll(): Promise<void> {
    const results = await Promise.allSettled([...this.leases.values()].map((l) => this.release(l)));
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed.length) throw new AggregateError(failed.map((f) => f.reason), `could not release ${failed.length} lease(s); they expire on their own`);
  }

  /**
   * Renews every held lease that is a third of the way to expiry. A lease that was taken over, or
   * could not be renewed before it stopped being trustworthy, is reported lost: stop acting on that run.
   */
  async renewDue(): Promise<{ renewed: string[]; lost: string[]; errors: Array<{ run: string; error: unknown }> }> {
    const out = { renewed: [] as string[], lost: [] as string[], errors: [] as Array<{ run: string; error: unknown }> };
    const now = this.clock();
    await Promise.all(
      [...this.leases.values()]
        .filter((l) => now >= l.renewedAt + this.ttlMs / 3)
        .map(async (lease) => {
          try {
            (await this.renew(lease)) ? out.renewed.push(lease.run) : out.lost.push(lease.run);
          } catch (error) {
            out.errors.push({ run: lease.run, error });
            if (!this.held(lease.run)) out.lost.push(lease.run);
          }
        }),
    );
    return out;
  }

  /** The lease on `run` this process holds and may still act under, if any. */
  held(run: string): Lease | undefined {
    const lease = this.leases.get(run);
    if (!lease) return undefined;
    if (this.clock() >= lease.expiresAt - this.marginMs) return undefined;
    return lease;
  }

  heldRuns(): string[] {
    return [...this.leases.keys()].filter((run) => this.held(run)).sort();
  }

  /** The lease object as stored, whoever holds it (for `status` displays and messages). */
  async inspect(run: string): Promise<(LeaseRecord & { free: boolean }) | undefined> {
    const key = leaseKey(run);
    const current = await this.store.get(key);
    if (!current) return undefined;
    const record = parseRecord(current.body, `${this.store.url}/${key}`);
    return { ...record, free: isFree(record, this.clock()) };
  }

  private record(epoch: number, acquiredAt: number, renewedAt: number): LeaseRecord {
    return {
      holder: this.holder,
      epoch,
      acquiredAt: iso(acquiredAt),
      renewedAt: iso(renewedAt),
      expiresAt: iso(renewedAt + this.ttlMs),
      ttlMs: this.ttlMs,
    };
  }

  /** Writes the record under the condition; the resulting lease, or undefined if the condition failed. */
  private async tryWrite(run: string, key: string, etag: string | undefined, record: LeaseRecord): Promise<Lease | undefined> {
    let newEtag: string;
    try {
      newEtag = await conditionalPut(this.store, key, JSON.stringify(record, null, 2), etag);
    } catch (err) {
      if (err instanceof PreconditionFailed) return undefined;
      throw err;
    }
    const lease: Lease = {
      run,
      holder: record.holder,
      epoch: record.epoch,
      acquiredAt: Date.parse(record.acquiredAt),
      renewedAt: Date.parse(record.renewedAt),
      expiresAt: Date.parse(record.expiresAt),
      etag: newEtag,
    };
    this.leases.set(run, lease);
    return lease;
  }

  private forget(lease: Lease): void {
    if (this.leases.get(lease.run)?.epoch === lease.epoch) this.leases.delete(lease.run);
  }
}

function isFree(record: LeaseRecord, now: number): boolean {
  return record.releasedAt !== undefined || now >= Date.parse(record.expiresAt);
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function parseRecord(body: string, where: string): LeaseRecord {
  let value: unknown;
  try {
    value = JSON.parse(body);
  } catch {
    value = undefined;
  }
  const r = value as Partial<LeaseRecord> | undefined;
  const valid =
    r &&
    typeof r === 'object' &&
    typeof r.holder === 'string' &&
    Number.isSafeInteger(r.epoch) &&
    (r.epoch ?? 0) >= 1 &&
    [r.acquiredAt, r.renewedAt, r.expiresAt].every((t) => typeof t === 'string' && !Number.isNaN(Date.parse(t)));
  if (!valid) {
    throw new LeaseCorruptError(
      `${where} is not a runctl lease (expected JSON with holder, epoch ≥ 1, acquiredAt, renewedAt, expiresAt); ` +
        'if no controller is running, delete it and the next controller creates a new one',
    );
  }
  return r as LeaseRecord;
}
