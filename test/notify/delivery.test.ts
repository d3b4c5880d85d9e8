// The notifier against a real HTTP receiver on loopback and the real file store: what a receiver
// gets, what the run's event log records for each attempt, retries with backoff, a receiver that
// refuses, a URL that is not set, a controller that died waiting for an answer, and that the URL
// (a credential) appears in no event.
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { deliveryKey, recordId } from '../../src/notify/ledger.js';
import { Notifier } from '../../src/notify/notifier.js';
import { receiversFor, stampNotifications, type NotificationReceiver } from '../../src/notify/receivers.js';
import { RunctlMetrics } from '../../src/reconciler/metrics.js';
import { FileStore } from '../../src/state/file-store.js';
import type { RunEvent } from '../../src/state/types.js';
import { statusFixture } from '../state/status-fixture.js';
import { testSpec } from '../support/runs.js';

interface Received {
  path: string;
  headers: http.IncomingHttpHeaders;
  body: Record<string, unknown>;
}

/** A receiver on 127.0.0.1 that answers each request with `answer(path, n)` (n: requests to that path so far). */
async function receiver(answer: (path: string, n: number) => number) {
  const got: Received[] = [];
  const waiters: Array<() => void> = [];
  const server = http.createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const p = req.url ?? '';
      got.push({ path: p, headers: req.headers, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as Record<string, unknown> });
      const n = got.filter((g) => g.path === p).length;
      const code = answer(p, n);
      res.writeHead(code, { 'content-type': 'text/plain' }).end(code >= 400 ? `no: ${p}` : 'ok');
      for (const w of waiters.splice(0)) w();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  cleanups.push(() => new Promise<void>((r) => server.close(() => r())));
  return { base, got };
}

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function world(receivers: Partial<NotificationReceiver>[], opts: { env?: NodeJS.ProcessEnv } = {}) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-notify-'));
  const store = new FileStore(dir, { fsync: false });
  await store.open();
  cleanups.push(async () => {
    await store.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const spec = testSpec({ notifications: receivers as NotificationReceiver[] } as never);
  const status = statusFixture('r1', { spec, eventSeq: 3, phase: 'Completed' });
  await store.putStatus(status);
  const resolved = receiversFor(undefined, receivers);
  const source: RunEvent = stampNotifications(
    {
      id: `r1:${status.uid}:3`,
      seq: 3,
      at: '2026-01-01T12:00:03.000Z',
      run: 'r1',
      uid: status.uid,
      generation: 1,
      attempt: 1,
      kind: 'transition',
      action: 'Training -> Completed',
      message: 'JOB_SUCCEEDED',
      data: { event: 'JOB_SUCCEEDED', generation: 1, attempt: 1 },
    },
    resolved,
  );
  await store.appendEvents('r1', [source]);
  const metrics = new RunctlMetrics();
  const announced: RunEvent[] = [];
  const errors: unknown[] = [];
  const make = () =>
    new Notifier({
      store,
      metrics,
      env: opts.env ?? {},
      onEvent: (e) => announced.push(e),
      onError: (_run, err) => errors.push(err),
      backoff: { baseMs: 20, maxMs: 100, attempts: 3 },
    });
  return { store, status, source, resolved, metrics, announced, errors, make };
}

async function records(store: FileStore): Promise<RunEvent[]> {
  return (await store.readEvents('r1')).filter((e) => e.kind === 'notification');
}

describe('delivering notifications', () => {
  it('sends each format once, retries a 500 with backoff, and records every attempt in the event log', async () => {
    const rx = await receiver((p, n) => (p === '/flaky' && n === 1 ? 500 : 200));
    const w = await world([
      { url: `${rx.base}/generic`, events: ['Completed'] },
      { url: `${rx.base}/flaky`, format: 'slack', events: ['Completed'] },
      { url: `${rx.base}/discord`, format: 'discord', events: ['Completed', 'Failed'] },
    ]);
    const n = w.make();
    n.afterReconcile(w.status);
    expect(n.busy('r1')).toBe(true); // returned at once: delivery is in the background
    expect(await n.drain(20_000)).toBe(0);
    await n.stop();

    expect(rx.got.map((g) => g.path).sort()).toEqual(['/discord', '/flaky', '/flaky', '/generic']);
    const generic = rx.got.find((g) => g.path === '/generic')!;
    expect(generic.body).toMatchObject({ run: 'r1', uid: w.status.uid, event: 'Completed', phase: 'Completed', message: 'the job finished successfully', attempt: 1 });
    expect(generic.headers['idempotency-key']).toBe(deliveryKey(w.source.id, w.resolved[0]!.id));
    expect(generic.headers['content-type']).toBe('application/json');
    expect(rx.got.find((g) => g.path === '/discord')!.body).toHaveProperty('embeds');
    // The retry sends the same message with the same idempotency key.
    const flaky = rx.got.filter((g) => g.path === '/flaky');
    expect(flaky[1]!.body).toEqual(flaky[0]!.body);
    expect(flaky[1]!.headers['idempotency-key']).toBe(flaky[0]!.headers['idempotency-key']);

    const log = await records(w.store);
    const flakyKey = deliveryKey(w.source.id, w.resolved[1]!.id);
    expect(log.filter((e) => String(e.data?.key) === flakyKey).map((e) => e.id)).toEqual([
      recordId(flakyKey, 1, 'handoff'),
      recordId(flakyKey, 1, 'retry'),
      recordId(flakyKey, 2, 'handoff'),
      recordId(flakyKey, 2, 'delivered'),
    ]);
    const retry = log.find((e) => e.id === recordId(flakyKey, 1, 'retry'))!;
    expect(retry.message).toMatch(/^the Completed notification to slack receiver at http:\/\/127\.0\.0\.1:\d+ failed \(HTTP 500 "no: \/<redacted>"\); trying again in 1s \(attempt 2 of 3\)$/);
    expect(w.announced.filter((e) => e.data?.outcome === 'delivered')).toHaveLength(3);
    expect(w.metrics.notificationsSent.get({ format: 'slack', event: 'Completed' })).toBe(1);
    expect(w.metrics.notificationsSent.get({ format: 'discord', event: 'Completed' })).toBe(1);
    expect(w.metrics.notificationsFailed.get({ format: 'slack', event: 'Completed', outcome: 'retry' })).toBe(1);

    // A new notifier (a restarted controller) reading the same log sends nothing again.
    const again = w.make();
    again.afterReconcile(w.status);
    expect(await again.drain(5_000)).toBe(0);
    expect(rx.got).toHaveLength(4);
  });

  it('gives up after the last attempt, refuses to retry a 4xx, and fails visibly when the urlFrom variable is unset', async () => {
    const rx = await receiver((p) => (p.startsWith('/down') ? 503 : 404));
    const secretUrl = `${rx.base}/down/SECRET-TOKEN-123`;
    const w = await world(
      [
        { urlFrom: { env: 'DOWN_URL' }, events: ['Completed'] },
        { url: `${rx.base}/gone`, events: ['Completed'] },
        { urlFrom: { env: 'NOT_SET' }, format: 'slack', events: ['Completed'] },
      ],
      { env: { DOWN_URL: secretUrl } },
    );
    const n = w.make();
    n.afterReconcile(w.status);
    expect(await n.drain(20_000)).toBe(0);
    await n.stop();
    expect(rx.got.filter((g) => g.path.startsWith('/down'))).toHaveLength(3);
    expect(rx.got.filter((g) => g.path === '/gone')).toHaveLength(1);
    const results = (await records(w.store)).filter((e) => e.data?.stage === 'result');
    const byReason = Object.fromEntries(results.filter((e) => e.data?.outcome === 'failed').map((e) => [String(e.data?.reason), e.message]));
    expect(byReason.NotificationFailed).toMatch(/^gave up on the Completed notification to generic receiver \(URL from \$DOWN_URL\) after 3 attempts \(last: HTTP 503/);
    expect(byReason.NotificationRefused).toMatch(/was refused \(HTTP 404 .*\); not retried: check the receiver's URL and format$/);
    expect(byReason.NotificationURLMissing).toBe(
      "the Completed notification to slack receiver (URL from $NOT_SET) was not sent: the environment variable NOT_SET is not set in the controller's environment: set it to the webhook URL and restart the controller",
    );
    expect(w.errors).toEqual([]);
    const everything = JSON.stringify(await w.store.readEvents('r1'));
    expect(everything).not.toContain('SECRET-TOKEN-123');
    expect(w.metrics.notificationsFailed.get({ format: 'generic', event: 'Completed', outcome: 'gave-up' })).toBe(1);
    expect(w.metrics.notificationsFailed.get({ format: 'generic', event: 'Completed', outcome: 'refused' })).toBe(1);
    expect(w.metrics.notificationsFailed.get({ format: 'slack', event: 'Completed', outcome: 'no-url' })).toBe(1);
    expect(w.metrics.registry.render()).toContain('runctl_notifications_failed_total{format="generic",event="Completed",outcome="gave-up"} 1');
  });

  it('stopping cuts a request in flight (recorded unconfirmed) and leaves queued ones owed, without an error', async () => {
    const held: http.ServerResponse[] = [];
    const server = http.createServer((req, res) => {
      req.resume();
      req.on('end', () => held.push(res));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    cleanups.push(
      () =>
        new Promise<void>((r) => {
          server.close(() => r());
          server.closeAllConnections();
        }),
    );
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const w = await world(['/a', '/b', '/c'].map((p) => ({ url: `${base}${p}`, events: ['Completed' as const], timeout: '1m' })));
    const n = new Notifier({ store: w.store, env: {}, concurrency: 1, onError: (_r, err) => w.errors.push(err) });
    n.afterReconcile(w.status);
    while (held.length === 0 || !(await records(w.store)).some((e) => e.data?.stage === 'handoff')) await new Promise((r) => setTimeout(r, 20));
    await n.stop();
    const log = await records(w.store);
    expect(log.map((e) => e.data?.stage === 'handoff' ? 'handoff' : e.data?.outcome)).toEqual(['handoff', 'unconfirmed']);
    expect(held).toHaveLength(1); // the other two were never sent: the next controller sends them
    expect(w.errors).toEqual([]);
  });

  it('never sends again what a dead controller handed to the network, and does send what it had not', async () => {
    const rx = await receiver(() => 200);
    const w = await world([
      { url: `${rx.base}/a`, events: ['Completed'] },
      { url: `${rx.base}/b`, events: ['Completed'] },
    ]);
    // The state a controller SIGKILLed mid-delivery leaves: /a was handed off (no answer recorded);
    // /b had failed once and was waiting for its retry.
    const keyA = deliveryKey(w.source.id, w.resolved[0]!.id);
    const keyB = deliveryKey(w.source.id, w.resolved[1]!.id);
    const base = { seq: 3, at: '2026-01-01T12:00:04.000Z', run: 'r1', generation: 1, attempt: 1, kind: 'notification' as const, action: 'notify Completed' };
    await w.store.appendEvents('r1', [
      { ...base, id: recordId(keyA, 1, 'handoff'), data: { key: keyA, stage: 'handoff', attempt: 1 } },
      { ...base, id: recordId(keyB, 1, 'retry'), data: { key: keyB, stage: 'result', attempt: 1, outcome: 'retry', retryAt: '2026-01-01T12:00:05.000Z' } },
    ]);
    const n = w.make();
    n.afterReconcile(w.status);
    expect(await n.drain(10_000)).toBe(0);
    await n.stop();
    expect(rx.got.map((g) => g.path)).toEqual(['/b']);
    const log = await records(w.store);
    expect(log.find((e) => e.id === recordId(keyA, 1, 'unconfirmed'))?.message).toMatch(/controller stopped before its answer came; not sent again/);
    expect(log.some((e) => e.id === recordId(keyB, 2, 'delivered'))).toBe(true);
  });
});
