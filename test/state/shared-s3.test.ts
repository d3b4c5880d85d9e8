// The shared store and leases against moto's S3 through the real SDK client: conditional writes
// (412 on If-None-Match / If-Match), races between two controllers with separate clients, lease
// expiry and takeover, a stale holder's late write, the event log, and error classification.
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createS3ObjectStore, type S3ObjectStore } from '../../src/providers/aws/object-store.js';
import { RetryableError, TerminalError } from '../../src/providers/types.js';
import { LeaseManager } from '../../src/state/lease.js';
import { InvalidStateUrlError, PreconditionFailed } from '../../src/state/object-store.js';
import { SharedStore, type StatusDocument } from '../../src/state/shared-store.js';
import { StaleWriteError } from '../../src/state/types.js';
import { createBucket, freePort, useMoto } from '../support/moto.js';
import { eventFixture, statusFixture, T0 } from './status-fixture.js';

const CREDENTIALS = { accessKeyId: 'testing', secretAccessKey: 'testing' };
const TTL = 20_000;
const BUCKET = `runctl-state-${randomBytes(4).toString('hex')}`;

let moto: { url: string; release(): Promise<void> };
const opened: S3ObjectStore[] = [];

/**
 * moto checks a condition and stores the object in separate steps on concurrent server threads, so
 * two simultaneous conditional writes can both succeed there (measured: about 1 race in 100), where
 * S3 lets exactly one win. Conditional requests from this test file therefore reach moto one at a
 * time, in arrival order; which writer wins is still decided by the race.
 */
let conditionalWrites: Promise<void> = Promise.resolve();
function atomicConditionalWrites(store: S3ObjectStore): void {
  store.s3.middlewareStack.add(
    (next) => async (args) => {
      const input = args.input as { IfMatch?: string; IfNoneMatch?: string };
      if (!input.IfMatch && !input.IfNoneMatch) return next(args);
      const previous = conditionalWrites;
      let done!: () => void;
      conditionalWrites = new Promise((resolve) => (done = resolve));
      await previous;
      try {
        return await next(args);
      } finally {
        done();
      }
    },
    { step: 'initialize', name: 'atomicConditionalWritesOnMoto' },
  );
}

/** A fresh S3 client per call, as two controller processes would have. */
function objects(prefix: string): S3ObjectStore {
  const store = createS3ObjectStore(`s3://${BUCKET}/${prefix}`, { endpointUrl: moto.url, region: 'us-east-1', credentials: CREDENTIALS, retry: { baseDelayMs: 5 } });
  atomicConditionalWrites(store);
  opened.push(store);
  return store;
}

function clock(start = T0) {
  let now = start;
  const fn = () => now;
  fn.advance = (ms: number) => {
    now += ms;
  };
  return fn;
}

function controller(prefix: string, holder: string, time: () => number) {
  const leases = new LeaseManager(objects(prefix), holder, TTL, time);
  return { leases, store: new SharedStore(objects(prefix), { leases }) };
}

async function statusDoc(prefix: string, run: string): Promise<StatusDocument> {
  const obj = await objects(prefix).get(`state/runs/${run}/status.json`);
  return JSON.parse(obj!.body) as StatusDocument;
}

let n = 0;
const uniquePrefix = () => `t${++n}/state-root`;

beforeAll(async () => {
  moto = await useMoto();
  await createBucket(moto.url, BUCKET);
});

afterAll(async () => {
  for (const o of opened) o.close();
  await moto?.release();
});

describe('S3ObjectStore on moto', () => {
  it('creates only when absent and replaces only on a matching etag, with PreconditionFailed otherwise', async () => {
    const s3 = objects(uniquePrefix());
    const first = await s3.putIfAbsent('a.json', '{"v":1}');
    await expect(s3.putIfAbsent('a.json', '{"v":2}')).rejects.toBeInstanceOf(PreconditionFailed);
    const second = await s3.putIfMatch('a.json', '{"v":3}', first);
    await expect(s3.putIfMatch('a.json', '{"v":4}', first)).rejects.toBeInstanceOf(PreconditionFailed);
    await expect(s3.putIfMatch('missing.json', '{}', first)).rejects.toBeInstanceOf(PreconditionFailed);
    expect(await s3.get('a.json')).toEqual({ body: '{"v":3}', etag: second });
    expect(await s3.get('missing.json')).toBeUndefined();
    await expect(s3.delete('a.json', first)).rejects.toBeInstanceOf(PreconditionFailed);
    await s3.delete('a.json', second);
    await s3.delete('a.json'); // already gone: fine
    expect(await s3.get('a.json')).toBeUndefined();
  });

  it('lists every page, relative to the prefix, rolling keys up at a multi-character delimiter', async () => {
    const prefix = uniquePrefix();
    const s3 = objects(prefix);
    await Promise.all(Array.from({ length: 7 }, (_, i) => s3.putIfAbsent(`many/${i}.json`, '{}')));
    const paged = createS3ObjectStore(`s3://${BUCKET}/${prefix}`, { endpointUrl: moto.url, region: 'us-east-1', credentials: CREDENTIALS, listPageSize: 3 });
    opened.push(paged);
    expect((await paged.list('many/')).keys).toEqual([0, 1, 2, 3, 4, 5, 6].map((i) => `many/${i}.json`));
    await s3.putIfAbsent('runs/x/status.json', '{}');
    await s3.putIfAbsent('runs/x/events/1.json', '{}');
    await s3.putIfAbsent('runs/events/status.json', '{}');
    expect(await paged.list('runs/', '/events/')).toEqual({ keys: ['runs/events/status.json', 'runs/x/status.json'], prefixes: ['runs/x/events/'] });
  });

  it('says what to do when the bucket does not exist, and calls an unreachable endpoint retryable', async () => {
    const missing = createS3ObjectStore('s3://no-such-runctl-bucket/state', { endpointUrl: moto.url, region: 'us-east-1', credentials: CREDENTIALS });
    opened.push(missing);
    const err = await missing.get('x.json').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TerminalError);
    expect((err as Error).message).toContain('the state bucket "no-such-runctl-bucket" does not exist');
    expect((err as Error).message).toContain('aws s3 mb s3://no-such-runctl-bucket');

    const port = await freePort(); // nothing listens there
    const down = createS3ObjectStore(`s3://${BUCKET}/x`, { endpointUrl: `http://127.0.0.1:${port}`, region: 'us-east-1', credentials: CREDENTIALS, retry: { maxAttempts: 2, baseDelayMs: 1 } });
    opened.push(down);
    const net = await down.putIfAbsent('x.json', '{}').catch((e: unknown) => e);
    expect(net).toBeInstanceOf(RetryableError);
    expect((net as Error).message).toMatch(/S3 PutObject failed temporarily .*runctl will retry/);
  });

  it('rejects a state location that is not s3://bucket/prefix', () => {
    expect(() => createS3ObjectStore('https://bucket/state')).toThrow(InvalidStateUrlError);
    expect(() => createS3ObjectStore('s3://Bad_Bucket/state')).toThrow(/"Bad_Bucket" is not a valid S3 bucket name/);
    expect(() => createS3ObjectStore('s3://bucket/a//b')).toThrow(/empty, '\.' or '\.\.' path segment/);
    expect(createS3ObjectStore('s3://bucket').url).toBe('s3://bucket');
  });
});

describe('SharedStore on moto', () => {
  it('creates status with If-None-Match and updates it with If-Match; a write on a stale etag is refused', async () => {
    const prefix = uniquePrefix();
    const a = new SharedStore(objects(prefix));
    await a.open();
    await a.putStatus(statusFixture('train'));
    await a.putStatus(statusFixture('train', { phase: 'Provisioning' }));

    const b = new SharedStore(objects(prefix));
    await expect(b.putStatus(statusFixture('train', { phase: 'Failed' }))).rejects.toBeInstanceOf(StaleWriteError); // never read: create fails
    expect((await b.getStatus('train'))?.phase).toBe('Provisioning');
    await a.putStatus(statusFixture('train', { phase: 'Syncing' }));
    await expect(b.putStatus(statusFixture('train', { phase: 'Failed' }))).rejects.toBeInstanceOf(StaleWriteError); // a wrote since b read
    expect((await statusDoc(prefix, 'train')).status.phase).toBe('Syncing');
    expect(await b.listRuns()).toEqual(['train']);
  });

  it('two controllers writing the same status at once: exactly one wins, the other gets StaleWriteError', async () => {
    for (let round = 0; round < 10; round++) {
      const prefix = uniquePrefix();
      await new SharedStore(objects(prefix)).putStatus(statusFixture('train'));
      const a = new SharedStore(objects(prefix));
      const b = new SharedStore(objects(prefix));
      await Promise.all([a.getStatus('train'), b.getStatus('train')]);
      const results = await Promise.allSettled([
        a.putStatus(statusFixture('train', { attempt: 10 })),
        b.putStatus(statusFixture('train', { attempt: 20 })),
      ]);
      const won = results.flatMap((r, i) => (r.status === 'fulfilled' ? [i] : []));
      expect(won).toHaveLength(1);
      const lost = results.find((r): r is PromiseRejectedResult => r.status === 'rejected')!;
      expect(lost.reason).toBeInstanceOf(StaleWriteError);
      expect((await statusDoc(prefix, 'train')).status.attempt).toBe(won[0] === 0 ? 10 : 20);
    }
  });

  it('two controllers creating the same run at once: exactly one creates it', async () => {
    const prefix = uniquePrefix();
    const results = await Promise.allSettled([
      new SharedStore(objects(prefix)).putStatus(statusFixture('train', { attempt: 1 })),
      new SharedStore(objects(prefix)).putStatus(statusFixture('train', { attempt: 2 })),
    ]);
    expect(results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason)).toEqual([expect.any(StaleWriteError)]);
  });

  it('appends events once per id, in seq order, whoever appends them', async () => {
    const prefix = uniquePrefix();
    const a = new SharedStore(objects(prefix));
    const b = new SharedStore(objects(prefix));
    await Promise.all([
      a.appendEvents('train', [eventFixture('train', 2), eventFixture('train', 1)]),
      b.appendEvents('train', [eventFixture('train', 1), eventFixture('train', 3), eventFixture('train', 3)]),
    ]);
    await a.appendEvents('train', [eventFixture('train', 3)]);
    const events = await new SharedStore(objects(prefix)).readEvents('train');
    expect(events.map((e) => e.id)).toEqual(['train:e1', 'train:e2', 'train:e3']);
    expect(events[0]).toEqual(eventFixture('train', 1));
    expect((await objects(prefix).list('state/runs/train/events/')).keys).toHaveLength(3);
  });

  it('archives a deleted run and lists only runs with a status', async () => {
    const prefix = uniquePrefix();
    const { leases, store } = controller(prefix, 'host-a', clock());
    for (const run of ['keep', 'gone']) {
      await leases.acquire(run);
      await store.putStatus(statusFixture(run));
      await store.appendEvents(run, [eventFixture(run, 1)]);
    }
    await store.deleteStatus('gone');
    expect(await store.listRuns()).toEqual(['keep']);
    expect((await objects(prefix).list('state/archive/')).keys).toEqual([
      expect.stringMatching(/^state\/archive\/gone-6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e\/events\/000000000001-[0-9a-f]{16}\.json$/),
      'state/archive/gone-6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e/status.json',
    ]);
  });
});

describe('Leases on moto', () => {
  it('acquire, renew, expiry and takeover, each takeover one epoch higher', async () => {
    const prefix = uniquePrefix();
    const time = clock();
    const a = new LeaseManager(objects(prefix), 'host-a', TTL, time);
    const b = new LeaseManager(objects(prefix), 'host-b', TTL, time);

    let la = (await a.acquire('train'))!;
    expect(la.epoch).toBe(1);
    expect(await b.acquire('train')).toBeUndefined();
    time.advance(TTL - 1000);
    la = (await a.renew(la))!;
    time.advance(TTL - 1000);
    expect(await b.acquire('train')).toBeUndefined(); // renewed, so still a's

    time.advance(1001);
    const lb = (await b.acquire('train'))!;
    expect(lb).toMatchObject({ holder: 'host-b', epoch: 2 });
    expect(await a.renew(la)).toBeUndefined();

    await b.release(lb);
    expect(await a.acquire('train')).toMatchObject({ holder: 'host-a', epoch: 3 });
    expect(await b.inspect('train')).toMatchObject({ holder: 'host-a', epoch: 3, free: false });
  });

  it('of several controllers racing for a free run, exactly one gets it', async () => {
    const prefix = uniquePrefix();
    const time = clock();
    const managers = ['a', 'b', 'c', 'd'].map((h) => new LeaseManager(objects(prefix), `host-${h}`, TTL, time));
    const first = await Promise.all(managers.map((m) => m.acquire('train')));
    expect(first.filter(Boolean)).toHaveLength(1);
    time.advance(TTL);
    const second = await Promise.all(managers.map((m) => m.acquire('train')));
    expect(second.filter(Boolean)).toHaveLength(1);
    expect(second.find(Boolean)?.epoch).toBe(2);
  });

  it("a holder that paused past its lease: the new holder takes over and the stale holder's late write is refused", async () => {
    const prefix = uniquePrefix();
    const aTime = clock();
    const bTime = clock();
    const a = controller(prefix, 'host-a', aTime);
    const b = controller(prefix, 'host-b', bTime);
    await a.leases.acquire('train');
    await a.store.putStatus(statusFixture('train'));
    expect((await statusDoc(prefix, 'train')).fence).toEqual({ holder: 'host-a', epoch: 1 });

    // a is frozen between checking its lease and writing; for b the lease runs out.
    bTime.advance(TTL + 1);
    expect(await b.leases.acquire('train')).toMatchObject({ epoch: 2 });
    await b.store.getStatus('train');
    await b.store.putStatus(statusFixture('train', { attempt: 2 }));

    const late = await a.store.putStatus(statusFixture('train', { attempt: 99 })).catch((e: unknown) => e);
    expect(late).toBeInstanceOf(StaleWriteError);
    await expect(a.store.getStatus('train')).rejects.toBeInstanceOf(StaleWriteError);
    // Trying to move the fence back failed on the lease object, so a knows it lost the run.
    expect(a.leases.held('train')).toBeUndefined();
    expect(a.leases.heldRuns()).toEqual([]);
    expect(await statusDoc(prefix, 'train')).toMatchObject({ fence: { holder: 'host-b', epoch: 2 }, status: { attempt: 2 } });
  });
});
