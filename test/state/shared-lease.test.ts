// LeaseManager against the in-memory object store (S3 semantics): who gets a run, for how long,
// and what happens at expiry, takeover and release.
import { describe, expect, it } from 'vitest';
import { LeaseCorruptError, LeaseManager, type LeaseRecord } from '../../src/state/lease.js';
import { MemoryObjectStore } from '../support/memory-object-store.js';

const T0 = Date.parse('2026-01-01T12:00:00Z');
const TTL = 30_000;

function clock(start = T0) {
  let now = start;
  const fn = () => now;
  fn.advance = (ms: number) => {
    now += ms;
  };
  return fn;
}

function leaseObject(store: MemoryObjectStore, run: string): LeaseRecord {
  return store.body(`state/leases/${run}.json`) as LeaseRecord;
}

describe('LeaseManager', () => {
  it('gives a free run to the first controller at epoch 1 and refuses it to others while held', async () => {
    const store = new MemoryObjectStore();
    const time = clock();
    const a = new LeaseManager(store, 'host-a', TTL, time);
    const b = new LeaseManager(store, 'host-b', TTL, time);

    const lease = await a.acquire('train');
    expect(lease).toMatchObject({ run: 'train', holder: 'host-a', epoch: 1, expiresAt: T0 + TTL });
    expect(leaseObject(store, 'train')).toMatchObject({ holder: 'host-a', epoch: 1, expiresAt: new Date(T0 + TTL).toISOString() });

    expect(await b.acquire('train')).toBeUndefined();
    expect(b.held('train')).toBeUndefined();
    expect(await b.inspect('train')).toMatchObject({ holder: 'host-a', epoch: 1, free: false });
    expect(a.held('train')?.epoch).toBe(1);
  });

  it('renewal keeps the run past the original expiry; without it another controller takes over at epoch + 1', async () => {
    const store = new MemoryObjectStore();
    const time = clock();
    const a = new LeaseManager(store, 'host-a', TTL, time);
    const b = new LeaseManager(store, 'host-b', TTL, time);
    let lease = (await a.acquire('train'))!;

    time.advance(20_000);
    lease = (await a.renew(lease))!;
    expect(lease).toMatchObject({ epoch: 1, renewedAt: T0 + 20_000, expiresAt: T0 + 20_000 + TTL });
    time.advance(20_000); // past the first expiry, inside the renewed one
    expect(await b.acquire('train')).toBeUndefined();

    time.advance(TTL); // nobody renewed
    const taken = await b.acquire('train');
    expect(taken).toMatchObject({ holder: 'host-b', epoch: 2 });
    expect(leaseObject(store, 'train')).toMatchObject({ holder: 'host-b', epoch: 2 });

    // The old holder finds out on its next renewal and no longer counts the run as held.
    expect(a.held('train')).toBeUndefined();
    expect(await a.renew(lease)).toBeUndefined();
    expect(a.heldRuns()).toEqual([]);
    expect(leaseObject(store, 'train').holder).toBe('host-b');
  });

  it('stops trusting a lease a safety margin before it expires', async () => {
    const time = clock();
    const a = new LeaseManager(new MemoryObjectStore(), 'host-a', TTL, time, { marginMs: 4_000 });
    await a.acquire('train');
    time.advance(TTL - 4_001);
    expect(a.held('train')).toBeDefined();
    time.advance(1);
    expect(a.held('train')).toBeUndefined();
  });

  it('a released lease is free at once, whatever the clock says, and the next holder gets a higher epoch', async () => {
    const store = new MemoryObjectStore();
    const time = clock();
    const a = new LeaseManager(store, 'host-a', TTL, time);
    // b's clock runs behind: only the release marker can tell it the lease is free.
    const b = new LeaseManager(store, 'host-b', TTL, () => time() - 10_000);
    const lease = (await a.acquire('train'))!;
    await a.release(lease);
    expect(a.held('train')).toBeUndefined();
    expect(leaseObject(store, 'train').releasedAt).toBeDefined();
    expect(await b.acquire('train')).toMatchObject({ holder: 'host-b', epoch: 2 });
  });

  it('releasing a lease that was already taken over leaves the new holder alone', async () => {
    const store = new MemoryObjectStore();
    const time = clock();
    const a = new LeaseManager(store, 'host-a', TTL, time);
    const b = new LeaseManager(store, 'host-b', TTL, time);
    const old = (await a.acquire('train'))!;
    time.advance(TTL);
    await b.acquire('train');
    await a.release(old);
    expect(leaseObject(store, 'train')).toMatchObject({ holder: 'host-b', epoch: 2 });
    expect(leaseObject(store, 'train').releasedAt).toBeUndefined();
  });

  it('when two controllers race for a free run, exactly one gets it', async () => {
    for (const state of ['missing', 'expired'] as const) {
      const store = new MemoryObjectStore();
      const time = clock();
      if (state === 'expired') {
        await new LeaseManager(store, 'host-old', TTL, time).acquire('train');
        time.advance(TTL + 1);
      }
      // Both read before either writes: the conditional write decides.
      let reads = 0;
      let release!: () => void;
      const bothRead = new Promise<void>((r) => (release = r));
      store.beforeRequest = async (op) => {
        if (op !== 'get') return;
        if (++reads === 2) release();
        await bothRead;
      };
      const managers = ['host-a', 'host-b'].map((h) => new LeaseManager(store, h, TTL, time));
      const results = await Promise.all(managers.map((m) => m.acquire('train')));
      store.beforeRequest = undefined;
      const winners = results.filter((r) => r !== undefined);
      expect(winners, state).toHaveLength(1);
      expect(winners[0]!.epoch).toBe(state === 'missing' ? 1 : 2);
      expect(leaseObject(store, 'train').holder).toBe(winners[0]!.holder);
    }
  });

  it('a lease write whose response was lost still counts: after a retry, and after giving up', async () => {
    const store = new MemoryObjectStore();
    const a = new LeaseManager(store, 'host-a', TTL, clock());
    store.loseResponse('state/leases/train.json');
    expect(await a.acquire('train')).toMatchObject({ holder: 'host-a', epoch: 1 });

    const other = new MemoryObjectStore();
    const b = new LeaseManager(other, 'host-b', TTL, clock());
    other.loseResponse('state/leases/train.json', new Error('socket hang up'));
    await expect(b.acquire('train')).rejects.toThrow('socket hang up');
    // The controller tries again later: the object is its own, so it keeps epoch 1.
    expect(await b.acquire('train')).toMatchObject({ holder: 'host-b', epoch: 1 });
  });

  it('acquiring a lease it already holds extends it without changing the epoch', async () => {
    const time = clock();
    const a = new LeaseManager(new MemoryObjectStore(), 'host-a', TTL, time);
    await a.acquire('train');
    time.advance(10_000);
    expect(await a.acquire('train')).toMatchObject({ epoch: 1, expiresAt: T0 + 10_000 + TTL, acquiredAt: T0 });
  });

  it('renewDue renews leases a third of the way through and reports the ones taken over', async () => {
    const store = new MemoryObjectStore();
    const time = clock();
    const a = new LeaseManager(store, 'host-a', TTL, time);
    const b = new LeaseManager(store, 'host-b', TTL, time);
    await a.acquire('one');
    await a.acquire('two');
    expect(await a.renewDue()).toEqual({ renewed: [], lost: [], errors: [] });
    time.advance(TTL / 3);
    // Someone removed and recreated "two" behind a's back: its etag no longer matches.
    store.objects.delete('state/leases/two.json');
    await b.acquire('two');
    const result = await a.renewDue();
    expect(result.renewed).toEqual(['one']);
    expect(result.lost).toEqual(['two']);
    expect(a.heldRuns()).toEqual(['one']);
  });

  it('raise moves a held lease above a fence left by an earlier lease object', async () => {
    const store = new MemoryObjectStore();
    const a = new LeaseManager(store, 'host-a', TTL, clock());
    const lease = (await a.acquire('train'))!;
    const raised = await a.raise(lease, 7);
    expect(raised).toMatchObject({ epoch: 8 });
    expect(leaseObject(store, 'train').epoch).toBe(8);
    expect(await a.raise(lease, 9)).toBeUndefined(); // the old etag is stale now
    expect(a.held('train')?.epoch).toBe(8);
  });

  it('refuses a lease object it cannot read, saying what to do', async () => {
    const store = new MemoryObjectStore();
    await store.putIfAbsent('state/leases/train.json', '{"holder": 3}');
    const a = new LeaseManager(store, 'host-a', TTL, clock());
    const err = await a.acquire('train').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LeaseCorruptError);
    expect((err as Error).message).toContain('s3://memory-bucket/state-test/state/leases/train.json is not a runctl lease');
    expect((err as Error).message).toContain('delete it');
  });

  it('rejects settings that cannot work', async () => {
    const store = new MemoryObjectStore();
    expect(() => new LeaseManager(store, 'host a', TTL)).toThrow('without spaces');
    expect(() => new LeaseManager(store, 'a', 10)).toThrow('at least 1000 ms');
    expect(() => new LeaseManager(store, 'a', TTL, Date.now, { marginMs: TTL })).toThrow('safety margin');
    await expect(new LeaseManager(store, 'a', TTL).acquire('../etc')).rejects.toThrow('invalid run name "../etc"');
  });
});
