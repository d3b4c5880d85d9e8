// The shared state store: status and events in an object store (S3) at `s3://bucket/prefix`, for
// controllers on several hosts (a control host and CI) working on the same runs. S3 is the
// coordination engine; every write is conditional:
// - status is created with If-None-Match: * and replaced with If-Match on the etag this store last
//   read or wrote for the run, so a write based on anything but the latest status fails (412) and
//   surfaces as StaleWriteError: the controller must stand down for that run and re-read;
// - with leases (LeaseView, normally a LeaseManager), writes need a live lease on the run, and each
//   status document records the lease epoch it was written under (its fence). The first read under a
//   newer epoch rewrites the fence, which changes the etag, so a controller that paused past its
//   lease can no longer write even the status it read before pausing;
// - events are immutable objects, one per event, at a key derived from (seq, id), created with
//   If-None-Match: *, so appends never race and a repeated id is a no-op.
// Key layout: shared-layout.ts.
import { randomBytes } from 'node:crypto';
import { StateCorruptError } from './event-log.js';
import type { Lease, LeaseView } from './lease.js';
import { conditionalPut, PreconditionFailed, type ObjectStore } from './object-store.js';
import {
  archivePrefix,
  eventKey,
  eventsPrefix,
  EVENTS_DELIMITER,
  FORMAT_KEY,
  runOfStatusKey,
  RUNS_PREFIX,
  STATE_FORMAT,
  statusKey,
} from './shared-layout.js';
import { statusFromRecord, StatusUnreadableError } from './status-record.js';
import { StaleWriteError, type RunEvent, type RunStatus, type StateStore } from './types.js';

/** What `status.json` holds: the status plus the fence it was written under. */
export interface StatusDocument {
  format: 'runctl.status/v1';
  /** Lease the writer held; absent when written without leases. */
  fence?: { holder: string; epoch: number };
  /** Random per write: makes every body unique, so a retried write can recognise itself. */
  writeId: string;
  status: RunStatus;
}

export interface SharedStoreOptions {
  /**
   * This controller's leases. With them, every write for a run needs a live lease on it and status
   * is fenced by its epoch; without them, writes are only etag-conditional (single writers, tools).
   */
  leases?: LeaseView;
  /** Parallel requests when reading or writing many events. */
  concurrency?: number;
}

interface Version {
  /** Etag of the status object as last read or written here; undefined = known not to exist. */
  etag?: string;
  /** Fence epoch recorded in that object. */
  epoch: number;
}

const FENCE_ROUNDS = 3;

export class SharedStore implements StateStore {
  private readonly leases?: LeaseView;
  private readonly concurrency: number;
  private readonly versions = new Map<string, Version>();
  /** Event ids this store has written or seen per run, to skip requests for them. */
  private readonly knownIds = new Map<string, Set<string>>();
  /** Events are immutable: once read, an object never needs fetching again. */
  private readonly eventCache = new Map<string, RunEvent>();
  private readonly chains = new Map<string, Promise<unknown>>();

  constructor(
    readonly objects: ObjectStore,
    opts: SharedStoreOptions = {},
  ) {
    this.leases = opts.leases;
    this.concurrency = Math.max(1, opts.concurrency ?? 8);
  }

  get url(): string {
    return this.objects.url;
  }

  /**
   * Checks that the location is usable (reachable, writable, a layout this version understands).
   * There is no store-wide lock: runs are claimed one at a time through leases.
   */
  async open(): Promise<void> {
    const body = `${JSON.stringify(STATE_FORMAT)}\n`;
    try {
      await this.objects.putIfAbsent(FORMAT_KEY, body);
      return;
    } catch (err) {
      if (!(err instanceof PreconditionFailed)) throw err;
    }
    const existing = await this.objects.get(FORMAT_KEY);
    let found: unknown;
    try {
      found = existing ? JSON.parse(existing.body) : undefined;
    } catch {
      found = undefined;
    }
    const f = found as { format?: unknown; version?: unknown } | undefined;
    if (f?.format !== STATE_FORMAT.format || f.version !== STATE_FORMAT.version) {
      throw new StateCorruptError(
        `${this.url}/${FORMAT_KEY} says ${existing ? JSON.stringify(existing.body.trim()).slice(0, 120) : 'nothing'}; this runctl understands ` +
          `${JSON.stringify(STATE_FORMAT)}: point --state at another prefix, or upgrade runctl if a newer version wrote it`,
        `${this.url}/${FORMAT_KEY}`,
        1,
      );
    }
  }

  /** Waits for writes in flight. The object store stays open: its creator closes it (leases may share it). */
  async close(): Promise<void> {
    await Promise.allSettled([...this.chains.values()]);
    this.versions.clear();
    this.knownIds.clear();
    this.eventCache.clear();
  }

  async listRuns(): Promise<string[]> {
    const { keys } = await this.objects.list(RUNS_PREFIX, EVENTS_DELIMITER);
    return keys
      .map(runOfStatusKey)
      .filter((run): run is string => run !== undefined)
      .sort();
  }

  async getStatus(run: string): Promise<RunStatus | undefined> {
    const key = statusKey(run);
    return this.serial(run, async () => {
      for (let round = 0; round < FENCE_ROUNDS; round++) {
        const obj = await this.objects.get(key);
        if (!obj) {
          this.versions.set(run, { etag: undefined, epoch: 0 });
          return undefined;
        }
        const doc = this.parse(run, obj.body);
        const epoch = doc.fence?.epoch ?? 0;
        this.versions.set(run, { etag: obj.etag, epoch });
        const lease = await this.liveLease(run, epoch);
        if (!lease || lease.epoch === epoch) return doc.status;
        // First read under a newer lease: move the fence, so writes by the previous holder now fail.
        try {
          const etag = await conditionalPut(this.objects, key, this.serialize(doc.status, lease), obj.etag);
          this.versions.set(run, { etag, epoch: lease.epoch });
          return doc.status;
        } catch (err) {
          if (!(err instanceof PreconditionFailed)) throw err;
          // The previous holder wrote in between; read again (its next write fails on our fence).
        }
      }
      throw new StaleWriteError(`status of run ${run} at ${this.url}/${key} keeps changing under this controller's lease; another controller is still writing it`);
    });
  }

  async putStatus(status: RunStatus): Promise<void> {
    const run = status.run;
    const key = statusKey(run);
    await this.serial(run, async () => {
      const version = this.versions.get(run);
      this.requireLease(run, 'write its status');
      const lease = await this.liveLease(run, version?.epoch ?? 0);
      try {
        const etag = await conditionalPut(this.objects, key, this.serialize(status, lease), version?.etag);
        this.versions.set(run, { etag, epoch: lease?.epoch ?? version?.epoch ?? 0 });
      } catch (err) {
        if (!(err instanceof PreconditionFailed)) throw err;
        this.versions.delete(run);
        throw new StaleWriteError(
          version?.etag === undefined
            ? `status of run ${run} was created at ${this.url}/${key} by another controller first: standing down for this run; re-read it before writing`
            : `status of run ${run} at ${this.url}/${key} changed since this controller read it (another controller took the run over, or this one lost its lease): standing down for this run`,
        );
      }
    });
  }

  /**
   * Moves the run's status and events to `state/archive/<run>-<uid>/` (history is never
   * destroyed). The status delete is conditional and fenced; a deletion interrupted after it leaves
   * event objects that a later deletion of the same name removes (they were archived first).
   */
  async deleteStatus(run: string): Promise<void> {
    const key = statusKey(run);
    await this.serial(run, async () => {
      this.requireLease(run, 'delete it');
      const obj = await this.objects.get(key);
      const events = await this.objects.list(eventsPrefix(run));
      if (obj) {
        const doc = this.parse(run, obj.body);
        await this.liveLease(run, doc.fence?.epoch ?? 0);
        const version = this.versions.get(run);
        if (version && version.etag !== obj.etag) {
          this.versions.delete(run);
          throw new StaleWriteError(`status of run ${run} at ${this.url}/${key} changed since this controller read it: not deleting it`);
        }
        const archive = archivePrefix(run, doc.status.uid);
        await this.pool(events.keys, (k) => this.copyOnce(k, `${archive}events/${k.slice(eventsPrefix(run).length)}`));
        await this.copyOnce(key, `${archive}status.json`, obj.body);
        try {
          await this.objects.delete(key, obj.etag);
        } catch (err) {
          if (!(err instanceof PreconditionFailed)) throw err;
          this.versions.delete(run);
          throw new StaleWriteError(`status of run ${run} at ${this.url}/${key} changed while it was being archived: another controller holds the run; not deleting it`);
        }
      }
      this.versions.set(run, { etag: undefined, epoch: 0 });
      this.knownIds.delete(run);
      await this.pool(events.keys, (k) => this.objects.delete(k));
      for (const k of events.keys) this.eventCache.delete(k);
    });
  }

  async appendEvents(run: string, events: RunEvent[]): Promise<void> {
    if (events.length === 0) return;
    await this.serial(run, async () => {
      this.requireLease(run, 'append to its event log');
      let known = this.knownIds.get(run);
      if (!known) this.knownIds.set(run, (known = new Set()));
      const fresh = new Map<string, RunEvent>();
      for (const e of events) {
        if (e.run !== run) throw new Error(`event ${JSON.stringify(e.id)} belongs to run ${e.run}, not ${run}`);
        if (!known.has(e.id) && !fresh.has(e.id)) fresh.set(e.id, e);
      }
      const written = known;
      await this.pool([...fresh.values()], async (e) => {
        try {
          await this.objects.putIfAbsent(eventKey(run, e.seq, e.id), `${JSON.stringify(e)}\n`);
        } catch (err) {
          // Same seq and id, same key: the event is already in the log.
          if (!(err instanceof PreconditionFailed)) throw err;
        }
        written.add(e.id);
      });
    });
  }

  /** The run's events in log order (seq), each id once. One list plus one read per event not seen before. */
  async readEvents(run: string): Promise<RunEvent[]> {
    const prefix = eventsPrefix(run);
    const { keys } = await this.objects.list(prefix);
    const sorted = [...keys].filter((k) => k.endsWith('.json')).sort();
    const loaded = await this.pool(sorted, async (key) => {
      const cached = this.eventCache.get(key);
      if (cached) return cached;
      const obj = await this.objects.get(key);
      if (!obj) return undefined; // deleted while listing (the run is being archived)
      let event: RunEvent;
      try {
        event = JSON.parse(obj.body) as RunEvent;
      } catch {
        throw new StateCorruptError(`${this.url}/${key}: event is not valid JSON; delete the object (the rest of the log is intact)`, `${this.url}/${key}`, 1);
      }
      this.eventCache.set(key, event);
      return event;
    });
    const seen = new Set<string>();
    const out: RunEvent[] = [];
    for (const e of loaded) {
      if (!e || seen.has(e.id)) continue;
      seen.add(e.id);
      out.push(structuredClone(e));
    }
    return out;
  }

  /** The lease writes for `run` need, or undefined when this store runs without leases. */
  private requireLease(run: string, what: string): Lease | undefined {
    if (!this.leases) return undefined;
    const lease = this.leases.held(run);
    if (!lease) {
      throw new StaleWriteError(`cannot ${what} for run ${run}: this controller does not hold a live lease on it (never acquired, lost, or about to expire); standing down for this run`);
    }
    return lease;
  }

  /** The held lease, raised above `storedEpoch` if the lease object was reset; throws if we were fenced out. */
  private async liveLease(run: string, storedEpoch: number): Promise<Lease | undefined> {
    const lease = this.leases?.held(run);
    if (!lease || !this.leases || lease.epoch >= storedEpoch) return lease;
    // A higher fence than our epoch: either someone took the run over (then the CAS below fails), or
    // the lease object was deleted and restarted at 1 (then we move our lease above the fence).
    const raised = await this.leases.raise(lease, storedEpoch);
    if (!raised) throw this.fencedOut(run, storedEpoch, lease);
    return raised;
  }

  private fencedOut(run: string, storedEpoch: number, lease: Lease): StaleWriteError {
    this.versions.delete(run);
    return new StaleWriteError(
      `status of run ${run} at ${this.url}/${statusKey(run)} was written under lease epoch ${storedEpoch}, newer than this controller's ` +
        `(${lease.holder}, epoch ${lease.epoch}): another controller took the run over; standing down for this run`,
    );
  }

  private serialize(status: RunStatus, lease: Lease | undefined): string {
    const doc: StatusDocument = {
      format: 'runctl.status/v1',
      ...(lease ? { fence: { holder: lease.holder, epoch: lease.epoch } } : {}),
      writeId: randomBytes(8).toString('hex'),
      status,
    };
    return `${JSON.stringify(doc, null, 2)}\n`;
  }

  /** The status document in `body`; StatusUnreadableError (this run only) when it is not one. */
  private parse(run: string, body: string): StatusDocument {
    const where = `${this.url}/${statusKey(run)}`;
    let doc: Partial<StatusDocument> | undefined;
    try {
      doc = JSON.parse(body) as Partial<StatusDocument>;
    } catch {
      throw new StatusUnreadableError(run, where, body.trim() === '' ? 'the object is empty' : `not valid JSON (${body.length} bytes)`);
    }
    if (!doc || typeof doc !== 'object' || doc.format !== 'runctl.status/v1') {
      throw new StatusUnreadableError(run, where, 'not a runctl status document (expected {"format": "runctl.status/v1", "status": {…}})');
    }
    const fence = doc.fence as StatusDocument['fence'] | undefined;
    if (fence !== undefined && (typeof fence !== 'object' || fence === null || !Number.isSafeInteger(fence.epoch))) {
      throw new StatusUnreadableError(run, where, '"fence" is not {holder, epoch}');
    }
    return { ...(doc as StatusDocument), status: statusFromRecord(doc.status, run, where) };
  }

  /** Where a run's status record is kept (for messages). */
  statusFile(run: string): string {
    return `${this.url}/${statusKey(run)}`;
  }

  /** Where a run's event log is kept (for messages). */
  eventsFile(run: string): string {
    return `${this.url}/${eventsPrefix(run)}`;
  }

  /**
   * Copies an unreadable status object aside (`status.json.unreadable-<time>`, kept for
   * inspection) and replaces it with `status`, conditionally on the etag of the unreadable object
   * (another controller's rebuild or write wins; this one then stands down).
   */
  async replaceUnreadableStatus(status: RunStatus): Promise<string> {
    const run = status.run;
    const key = statusKey(run);
    return this.serial(run, async () => {
      this.requireLease(run, 'rebuild its status');
      const obj = await this.objects.get(key);
      const aside = `${key}.unreadable-${new Date().toISOString().replace(/[-:]/g, '')}`;
      if (obj) await this.copyOnce(key, aside, obj.body);
      const lease = await this.liveLease(run, 0);
      try {
        const etag = await conditionalPut(this.objects, key, this.serialize(status, lease), obj?.etag);
        this.versions.set(run, { etag, epoch: lease?.epoch ?? 0 });
      } catch (err) {
        if (!(err instanceof PreconditionFailed)) throw err;
        this.versions.delete(run);
        throw new StaleWriteError(`status of run ${run} at ${this.url}/${key} changed while it was being rebuilt: another controller wrote it; standing down for this run`);
      }
      return `${this.url}/${aside}`;
    });
  }

  /** Copies an object to `to` unless something is already there (a retried archive lands on the same keys). */
  private async copyOnce(from: string, to: string, body?: string): Promise<void> {
    const text = body ?? (await this.objects.get(from))?.body;
    if (text === undefined) return;
    try {
      await this.objects.putIfAbsent(to, text);
    } catch (err) {
      if (!(err instanceof PreconditionFailed)) throw err;
    }
  }

  private async pool<T, R>(items: T[], fn: (item: T) => Promise<R>): Promise<R[]> {
    const out = new Array<R>(items.length);
    let next = 0;
    const worker = async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i] as T);
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.concurrency, items.length) }, worker));
    return out;
  }

  private serial<T>(run: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.chains.get(run) ?? Promise.resolve();
    const next = previous.then(fn, fn);
    const settled = next.then(
      () => undefined,
      () => undefined,
    );
    this.chains.set(run, settled);
    void settled.then(() => {
      if (this.chains.get(run) === settled) this.chains.delete(run);
    });
    return next;
  }
}
