// SharedStore against the in-memory object store (S3 semantics): conditional status writes, lease
// fencing, the event log, listing, archiving. The same scenarios run against moto's S3 in
// shared-s3.test.ts.
import { describe, expect, it } from 'vitest';
import { StateCorruptError } from '../../src/state/event-log.js';
import { LeaseManager } from '../../src/state/lease.js';
import { SharedStore, type StatusDocument } from '../../src/state/shared-store.js';
import { StaleWriteError } from '../../src/state/types.js';
import { MemoryObjectStore } from '../support/memory-object-store.js';
import { eventFixture, statusFixture, T0 } from './status-fixture.js';

const TTL = 30_000;
const STATUS = (run: string) => `state/runs/${run}/status.json`;

function clock(start = T0) {
  let now = start;
  const fn = () => now;
  fn.advance = (ms: number) => {
    now += ms;
  };
  return fn;
}

/** A controller: its own lease manager (holder, clock) and a store fenced by it. */
function controller(objects: MemoryObjectStore, holder: string, time: () => number) {
  const leases = new LeaseManager(objects, holder, TTL, time);
  return { leases, store: new SharedStore(objects, { leases }) };
}

function doc(objects: MemoryObjectStore, run: string): StatusDocument {
  return objects.body(STATUS(run)) as StatusDocument;
}

describe('SharedStore status writes', () => {
  it('creates with If-None-Match, updates with If-Match on the etag it read, and reads back what it wrote', async () => {
    const objects = new MemoryObjectStore();
    const store = new SharedStore(objects);
    expect(await store.getStatus('train')).toBeUndefined();
    await store.putStatus(statusFixture('train'));
    expect(objects.requests.at(-1)).toEqual({ op: 'putIfAbsent', key: STATUS('train') });
    const firstEtag = objects.objects.get(STATUS('train'))!.etag;

    await store.putStatus(statusFixture('train', { phase: 'Provisioning' }));
    expect(objects.requests.at(-1)).toEqual({ op: 'putIfMatch', key: STATUS('train') });
    expect(objects.objects.get(STATUS('train'))!.etag).not.toBe(firstEtag);

    const fresh = new SharedStore(objects);
    expect(await fresh.getStatus('train')).toEqual(statusFixture('train', { phase: 'Provisioning' }));
    expect(await fresh.listRuns()).toEqual(['train']);
  });

  it('of two controllers that read the same status, exactly one writes it; the other gets StaleWriteError', async () => {
    const objects = new MemoryObjectStore();
    await new SharedStore(objects).putStatus(statusFixture('train'));
    const a = new SharedStore(objects);
    const b = new SharedStore(objects);
    await a.getStatus('train');
    await b.getStatus('train');
    const results = await Promise.allSettled([
      a.putStatus(statusFixture('train', { phase: 'Provisioning' })),
      b.putStatus(statusFixture('train', { phase: 'Suspended' })),
    ]);
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    expect(failed).toHaveLength(1);
    expect(failed[0]!.reason).toBeInstanceOf(StaleWriteError);
    expect(failed[0]!.reason.message).toMatch(/status of run train at s3:\/\/memory-bucket\/state-test\/state\/runs\/train\/status\.json changed since this controller read it/);
    const winner = results[0]!.status === 'fulfilled' ? 'Provisioning' : 'Suspended';
    expect((await new SharedStore(objects).getStatus('train'))?.phase).toBe(winner);
  });

  it('of two controllers creating the same run, exactly one succeeds', async () => {
    const objects = new MemoryObjectStore();
    const a = new SharedStore(objects);
    const b = new SharedStore(objects);
    const results = await Promise.allSettled([a.putStatus(statusFixture('train')), b.putStatus(statusFixture('train', { phase: 'Failed' }))]);
    expect(results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason)).toEqual([expect.any(StaleWriteError)]);
  });

  it('after losing a race, re-reading gives the controller a fresh etag to write with', async () => {
    const objects = new MemoryObjectStore();
    const a = new SharedStore(objects);
    const b = new SharedStore(objects);
    await a.putStatus(statusFixture('train'));
    await b.getStatus('train');
    await a.putStatus(statusFixture('train', { attempt: 2 }));
    await expect(b.putStatus(statusFixture('train', { attempt: 3 }))).rejects.toBeInstanceOf(StaleWriteError);
    // Standing down forgot the etag, so a blind retry cannot win either: it must read first.
    await expect(b.putStatus(statusFixture('train', { attempt: 3 }))).rejects.toBeInstanceOf(StaleWriteError);
    expect((await b.getStatus('train'))?.attempt).toBe(2);
    await b.putStatus(statusFixture('train', { attempt: 3 }));
    expect(doc(objects, 'train').status.attempt).toBe(3);
  });

  it('a write whose response was lost and retried counts as done, not as a lost race', async () => {
    const objects = new MemoryObjectStore();
    const store = new SharedStore(objects);
    await store.putStatus(statusFixture('train'));
    // The write lands, its response is lost, the client's retry meets a 412 from our own write.
    objects.loseResponse(STATUS('train'));
    await store.putStatus(statusFixture('train', { phase: 'Syncing' }));
    expect(doc(objects, 'train').status.phase).toBe('Syncing');
    // ...and the etag it remembered is the real one: the next write goes through.
    await store.putStatus(statusFixture('train', { phase: 'Installing' }));
    expect(doc(objects, 'train').status.phase).toBe('Installing');
  });

  it('refuses a status document that is not one, naming the object and what to do', async () => {
    const objects = new MemoryObjectStore();
    await objects.putIfAbsent(STATUS('train'), '{"phase": "Training"}');
    const err = await new SharedStore(objects).getStatus('train').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StateCorruptError);
    expect((err as Error).message).toContain(
      's3://memory-bucket/state-test/state/runs/train/status.json: the status record of run train is unreadable (not a runctl status document',
    );
    expect((err as Error).message).not.toContain('archive');
  });

  it('reads a status document written before uids with its legacy uid, and refuses a wrong shape inside the envelope', async () => {
    const objects = new MemoryObjectStore();
    const { uid: _uid, ...old } = statusFixture('train');
    await objects.putIfAbsent(STATUS('train'), JSON.stringify({ format: 'runctl.status/v1', writeId: 'x', status: old }));
    const read = await new SharedStore(objects).getStatus('train');
    expect(read?.uid).toMatch(/^legacy-[0-9a-f]{12}$/);
    expect({ ...read, uid: undefined }).toEqual({ ...old, uid: undefined });

    const other = new MemoryObjectStore();
    await other.putIfAbsent(STATUS('train'), JSON.stringify({ format: 'runctl.status/v1', writeId: 'x', status: { ...old, phase: 'Sleeping' } }));
    await expect(new SharedStore(other).getStatus('train')).rejects.toThrow(/"phase" is "Sleeping", not one of Pending/);
  });

  it('replaces an unreadable status under the lease, keeping the damaged object beside it; a stale rebuild stands down', async () => {
    const objects = new MemoryObjectStore();
    const { leases, store } = controller(objects, 'host-a', clock());
    await leases.acquire('train');
    await objects.putIfAbsent(STATUS('train'), '{"format": "runctl.status/v1", "status": {"run": "tr');
    await expect(store.getStatus('train')).rejects.toThrow(/unreadable \(not a runctl status document|unreadable \(not valid JSON/);
    const kept = await store.replaceUnreadableStatus(statusFixture('train'));
    expect(kept).toMatch(/^s3:\/\/memory-bucket\/state-test\/state\/runs\/train\/status\.json\.unreadable-\d{8}T\d{6}\.\d{3}Z$/);
    expect((await objects.get(kept.slice('s3://memory-bucket/state-test/'.length)))?.body).toBe('{"format": "runctl.status/v1", "status": {"run": "tr');
    expect(await store.getStatus('train')).toEqual(statusFixture('train'));
    expect(doc(objects, 'train').fence).toEqual({ holder: 'host-a', epoch: 1 });
    // Without the lease, no rebuild.
    const other = new SharedStore(objects, { leases: new LeaseManager(objects, 'host-b', TTL, clock()) });
    await expect(other.replaceUnreadableStatus(statusFixture('train'))).rejects.toBeInstanceOf(StaleWriteError);
  });

  it('rejects run names that would escape the layout', async () => {
    await expect(new SharedStore(new MemoryObjectStore()).getStatus('../x')).rejects.toThrow('invalid run name "../x"');
  });
});

describe('SharedStore with leases', () => {
  it('writes need a live lease on the run; the status records the epoch it was written under', async () => {
    const objects = new MemoryObjectStore();
    const time = clock();
    const { leases, store } = controller(objects, 'host-a', time);
    await expect(store.putStatus(statusFixture('train'))).rejects.toThrow(/cannot write its status for run train: this controller does not hold a live lease/);
    await expect(store.appendEvents('train', [eventFixture('train', 1)])).rejects.toBeInstanceOf(StaleWriteError);

    await leases.acquire('train');
    await store.putStatus(statusFixture('train'));
    expect(doc(objects, 'train').fence).toEqual({ holder: 'host-a', epoch: 1 });

    time.advance(TTL);
    await expect(store.putStatus(statusFixture('train', { attempt: 2 }))).rejects.toThrow(/does not hold a live lease/);
    expect(doc(objects, 'train').status.attempt).toBe(1);
  });

  it("a holder that paused past its lease cannot write once another controller has taken the run and read it", async () => {
    const objects = new MemoryObjectStore();
    const aTime = clock();
    const bTime = clock();
    const a = controller(objects, 'host-a', aTime);
    const b = controller(objects, 'host-b', bTime);
    await a.leases.acquire('train');
    await a.store.putStatus(statusFixture('train'));
    await a.store.getStatus('train');
    // a checked its lease and then stalled (SIGSTOP, GC, a laptop lid): its clock says the lease is
    // still live when it wakes. Meanwhile, for everyone else, the lease expired.
    bTime.advance(TTL + 1);
    expect((await b.leases.acquire('train'))?.epoch).toBe(2);
    expect((await b.store.getStatus('train'))?.attempt).toBe(1);
    expect(doc(objects, 'train').fence).toEqual({ holder: 'host-b', epoch: 2 });

    const late = await a.store.putStatus(statusFixture('train', { attempt: 99 })).catch((e: unknown) => e);
    expect(late).toBeInstanceOf(StaleWriteError);
    expect((late as Error).message).toContain('standing down for this run');
    // Re-reading does not help it either: the fence is newer than its epoch and its lease is gone.
    const reread = await a.store.getStatus('train').catch((e: unknown) => e);
    expect(reread).toBeInstanceOf(StaleWriteError);
    expect((reread as Error).message).toContain('was written under lease epoch 2, newer than this controller\'s (host-a, epoch 1)');

    await b.store.putStatus(statusFixture('train', { attempt: 2 }));
    expect(doc(objects, 'train')).toMatchObject({ fence: { holder: 'host-b', epoch: 2 }, status: { attempt: 2 } });
  });

  it('a stale holder that slips a write in before the new holder reads is fenced out by that read', async () => {
    const objects = new MemoryObjectStore();
    const aTime = clock();
    const bTime = clock();
    const a = controller(objects, 'host-a', aTime);
    const b = controller(objects, 'host-b', bTime);
    await a.leases.acquire('train');
    await a.store.putStatus(statusFixture('train'));
    bTime.advance(TTL + 1);
    await b.leases.acquire('train');
    // a writes after b took the lease but before b looked at the run: S3 cannot know yet.
    await a.store.putStatus(statusFixture('train', { attempt: 2 }));
    // b's first read moves the fence, and so sees a's write rather than overwriting it.
    expect((await b.store.getStatus('train'))?.attempt).toBe(2);
    await expect(a.store.putStatus(statusFixture('train', { attempt: 3 }))).rejects.toBeInstanceOf(StaleWriteError);
  });

  it('a lease object deleted by hand restarts at epoch 1, and the next read moves the lease above the old fence', async () => {
    const objects = new MemoryObjectStore();
    const time = clock();
    const first = controller(objects, 'host-a', time);
    const lease = (await first.leases.acquire('train'))!;
    await first.leases.raise(lease, 4); // epoch 5
    await first.store.putStatus(statusFixture('train'));
    expect(doc(objects, 'train').fence?.epoch).toBe(5);
    objects.objects.delete('state/leases/train.json');

    const next = controller(objects, 'host-b', time);
    expect((await next.leases.acquire('train'))?.epoch).toBe(1);
    expect(await next.store.getStatus('train')).toBeDefined();
    expect(next.leases.held('train')?.epoch).toBe(6);
    await next.store.putStatus(statusFixture('train', { attempt: 2 }));
    expect(doc(objects, 'train').fence).toEqual({ holder: 'host-b', epoch: 6 });
  });

  it('a status read before taking the lease is written under the new epoch, raised above an old fence if needed', async () => {
    const objects = new MemoryObjectStore();
    const time = clock();
    const first = controller(objects, 'host-a', time);
    const lease = (await first.leases.acquire('train'))!;
    await first.leases.raise(lease, 4); // epoch 5
    await first.store.putStatus(statusFixture('train'));
    objects.objects.delete('state/leases/train.json');

    // The next controller reads every status on start, before it holds any lease...
    const next = controller(objects, 'host-b', time);
    expect((await next.store.getStatus('train'))?.attempt).toBe(1);
    // ...then takes the run (the lease object restarts at epoch 1) and writes without reading again.
    expect((await next.leases.acquire('train'))?.epoch).toBe(1);
    await next.store.putStatus(statusFixture('train', { attempt: 2 }));
    expect(doc(objects, 'train')).toMatchObject({ fence: { holder: 'host-b', epoch: 6 }, status: { attempt: 2 } });
  });
});

describe('SharedStore event log', () => {
  it('appends each id once, whoever appends it and however often, and reads in seq order', async () => {
    const objects = new MemoryObjectStore();
    const a = new SharedStore(objects);
    await a.appendEvents('train', [eventFixture('train', 3), eventFixture('train', 1)]);
    await a.appendEvents('train', [eventFixture('train', 1), eventFixture('train', 2), eventFixture('train', 2)]);
    // A second controller (or a restarted one) replays an outbox: the same ids land on the same keys.
    await new SharedStore(objects).appendEvents('train', [eventFixture('train', 2), eventFixture('train', 3)]);
    const keys = (await objects.list('state/runs/train/events/')).keys;
    expect(keys).toHaveLength(3);
    expect(keys[0]).toMatch(/^state\/runs\/train\/events\/000000000001-[0-9a-f]{16}\.json$/);
    expect((await new SharedStore(objects).readEvents('train')).map((e) => e.id)).toEqual(['train:e1', 'train:e2', 'train:e3']);
  });

  it('never asks twice for an id it has written, and reads an event object once', async () => {
    const objects = new MemoryObjectStore();
    const store = new SharedStore(objects);
    await store.appendEvents('train', [eventFixture('train', 1)]);
    const before = objects.requests.length;
    await store.appendEvents('train', [eventFixture('train', 1)]);
    expect(objects.requests.length).toBe(before);
    await store.readEvents('train');
    await store.readEvents('train');
    expect(objects.requests.filter((r) => r.op === 'get')).toHaveLength(1);
  });

  it('returns an id once even if it was logged under two seqs', async () => {
    const objects = new MemoryObjectStore();
    await new SharedStore(objects).appendEvents('train', [eventFixture('train', 5, { id: 'same' })]);
    await new SharedStore(objects).appendEvents('train', [eventFixture('train', 4, { id: 'same' }), eventFixture('train', 6)]);
    expect((await new SharedStore(objects).readEvents('train')).map((e) => [e.seq, e.id])).toEqual([
      [4, 'same'],
      [6, 'train:e6'],
    ]);
  });

  it('refuses an event of another run', async () => {
    await expect(new SharedStore(new MemoryObjectStore()).appendEvents('train', [eventFixture('other', 1)])).rejects.toThrow('belongs to run other, not train');
  });
});

describe('SharedStore listing, archiving and opening', () => {
  it('lists runs that have a status with one listing, ignoring event logs, leases and archives', async () => {
    const objects = new MemoryObjectStore();
    const time = clock();
    const { leases, store } = controller(objects, 'host-a', time);
    for (const run of ['b-run', 'a-run', 'events']) {
      await leases.acquire(run);
      await store.putStatus(statusFixture(run));
      await store.appendEvents(run, [eventFixture(run, 1), eventFixture(run, 2)]);
    }
    await leases.acquire('only-events');
    await store.appendEvents('only-events', [eventFixture('only-events', 1)]);
    await objects.putIfAbsent('state/archive/old-20250101T000000Z/status.json', '{}');
    objects.requests.length = 0;
    expect(await store.listRuns()).toEqual(['a-run', 'b-run', 'events']);
    expect(objects.requests).toEqual([{ op: 'list', key: 'state/runs/' }]);
  });

  it('deleting a run moves its status and events to the archive', async () => {
    const objects = new MemoryObjectStore();
    const { leases, store } = controller(objects, 'host-a', clock());
    await leases.acquire('train');
    await store.putStatus(statusFixture('train'));
    await store.appendEvents('train', [eventFixture('train', 1), eventFixture('train', 2)]);
    await store.deleteStatus('train');

    expect(await store.listRuns()).toEqual([]);
    expect(await store.getStatus('train')).toBeUndefined();
    expect(await store.readEvents('train')).toEqual([]);
    const archived = (await objects.list('state/archive/')).keys;
    expect(archived).toEqual([
      expect.stringMatching(/^state\/archive\/train-6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e\/events\/000000000001-/),
      expect.stringMatching(/^state\/archive\/train-6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e\/events\/000000000002-/),
      'state/archive/train-6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e/status.json',
    ]);
    expect((objects.body('state/archive/train-6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e/status.json') as StatusDocument).status.run).toBe('train');

    // A new run under the same name starts with a clean log.
    await store.putStatus(statusFixture('train', { attempt: 1 }));
    expect(await store.readEvents('train')).toEqual([]);
  });

  it('a controller that lost the run cannot delete it', async () => {
    const objects = new MemoryObjectStore();
    const aTime = clock();
    const bTime = clock();
    const a = controller(objects, 'host-a', aTime);
    const b = controller(objects, 'host-b', bTime);
    await a.leases.acquire('train');
    await a.store.putStatus(statusFixture('train'));
    bTime.advance(TTL + 1);
    await b.leases.acquire('train');
    await b.store.getStatus('train');
    await expect(a.store.deleteStatus('train')).rejects.toBeInstanceOf(StaleWriteError);
    expect(await b.store.listRuns()).toEqual(['train']);
  });

  it('open records the layout version, accepts its own, and refuses one it does not know', async () => {
    const objects = new MemoryObjectStore();
    await new SharedStore(objects).open();
    await new SharedStore(objects).open();
    expect(objects.body('state/format.json')).toEqual({ format: 'runctl-state', version: 1 });

    const newer = new MemoryObjectStore();
    await newer.putIfAbsent('state/format.json', '{"format":"runctl-state","version":2}');
    await expect(new SharedStore(newer).open()).rejects.toThrow(/state\/format\.json says .*version.*2.*upgrade runctl/);
  });
});
