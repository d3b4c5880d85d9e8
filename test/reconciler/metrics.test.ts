// The metrics endpoint, scraped over loopback and parsed as Prometheus would parse it.
import { afterEach, describe, expect, it } from 'vitest';
import {
  MetricsAddressError,
  MetricsRegistry,
  parseListenAddress,
  RunctlMetrics,
  startMetricsServer,
  type MetricsServer,
} from '../../src/reconciler/metrics.js';
import { statusFixture } from '../state/status-fixture.js';

interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A parser for the text format 0.0.4, strict enough to reject what Prometheus would reject. */
function parse(text: string): { samples: Sample[]; types: Map<string, string>; help: Map<string, string> } {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const help = new Map<string, string>();
  expect(text.endsWith('\n')).toBe(true);
  for (const line of text.slice(0, -1).split('\n')) {
    let m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (m) {
      (m[1] === 'HELP' ? help : types).set(m[2]!, m[3]!);
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`not a sample line: ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    const body = m[2] ?? '';
    const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(,|$)/gy;
    let at = 0;
    for (let l = re.exec(body); l; l = re.exec(body)) {
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
      at = re.lastIndex;
    }
    if (at !== body.length) throw new Error(`bad labels in ${JSON.stringify(line)}`);
    const family = m[1]!.replace(/_(bucket|sum|count)$/, '');
    if (!types.has(m[1]!) && !types.has(family)) throw new Error(`sample ${m[1]} before its TYPE line`);
    const raw = m[3]!;
    samples.push({ name: m[1]!, labels, value: raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : Number(raw) });
  }
  return { samples, types, help };
}

function value(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  return samples.find((s) => s.name === name && JSON.stringify(s.labels) === JSON.stringify(labels))?.value;
}

let server: MetricsServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

describe('metrics endpoint', () => {
  it('serves the controller metrics as Prometheus text 0.0.4 over loopback, and ok at /healthz', async () => {
    const metrics = new RunctlMetrics();
    server = await startMetricsServer('127.0.0.1:0', metrics.registry);
    expect(server.address).toMatch(/^127\.0\.0\.1:\d+$/);

    metrics.reconciled('ok', 0.03);
    metrics.reconciled('ok', 0.7);
    metrics.reconciled('requeued', 42);
    metrics.error('capacity');
    metrics.observeRuns([
      statusFixture('a', {
        phase: 'Training',
        costUSD: 1.25,
        interruptions: 2,
        instances: [
          { id: 'i-1', market: 'spot', launchedAt: '2026-01-01T00:00:00Z', generation: 1, attempt: 1, endedAt: '2026-01-01T01:00:00Z' },
          { id: 'i-2', market: 'spot', launchedAt: '2026-01-01T01:00:00Z', generation: 1, attempt: 2 },
        ],
      }),
      statusFixture('b', { phase: 'Completed', costUSD: 0.5 }),
      statusFixture('c', { phase: 'Training', instances: [{ id: 'i-3', market: 'on-demand', launchedAt: '2026-01-01T00:00:00Z', generation: 1, attempt: 1 }] }),
    ]);
    // One more interruption of run a: counted once, however often the statuses are observed.
    const a2 = statusFixture('a', { phase: 'Resuming', interruptions: 3, costUSD: 1.5 });
    metrics.observeRuns([a2]);
    metrics.observeRuns([a2]);

    const res = await fetch(`${server.url}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    const { samples, types } = parse(await res.text());

    expect(types.get('runctl_reconciles_total')).toBe('counter');
    expect(types.get('runctl_reconcile_duration_seconds')).toBe('histogram');
    expect(types.get('runctl_runs')).toBe('gauge');
    expect(value(samples, 'runctl_reconciles_total', { result: 'ok' })).toBe(2);
    expect(value(samples, 'runctl_reconciles_total', { result: 'requeued' })).toBe(1);
    expect(value(samples, 'runctl_reconcile_errors_total', { kind: 'capacity' })).toBe(1);

    expect(value(samples, 'runctl_reconcile_duration_seconds_bucket', { le: '0.05' })).toBe(1);
    expect(value(samples, 'runctl_reconcile_duration_seconds_bucket', { le: '1' })).toBe(2);
    expect(value(samples, 'runctl_reconcile_duration_seconds_bucket', { le: '60' })).toBe(3);
    expect(value(samples, 'runctl_reconcile_duration_seconds_bucket', { le: '+Inf' })).toBe(3);
    expect(value(samples, 'runctl_reconcile_duration_seconds_count')).toBe(3);
    expect(value(samples, 'runctl_reconcile_duration_seconds_sum')).toBeCloseTo(42.73, 9);
    const buckets = samples.filter((s) => s.name === 'runctl_reconcile_duration_seconds_bucket').map((s) => s.value);
    expect(buckets).toEqual([...buckets].sort((x, y) => x - y)); // cumulative

    // The last observation only had run a, now Resuming: the gauges describe that pass.
    expect(value(samples, 'runctl_runs', { phase: 'Resuming' })).toBe(1);
    expect(value(samples, 'runctl_runs', { phase: 'Training' })).toBe(0);
    expect(value(samples, 'runctl_interruptions_total')).toBe(1);
    expect(value(samples, 'runctl_spend_usd')).toBe(1.5);
    expect(value(samples, 'runctl_instances', { market: 'spot' })).toBe(0);

    const health = await fetch(`${server.url}/healthz`);
    expect(health.status).toBe(200);
    expect(await health.text()).toBe('ok\n');
    expect((await fetch(`${server.url}/nope`)).status).toBe(404);
    expect((await fetch(`${server.url}/metrics`, { method: 'POST' })).status).toBe(405);
  });

  it('reports runs by phase and instances by market from one set of statuses', async () => {
    const metrics = new RunctlMetrics();
    metrics.observeRuns([
      statusFixture('a', { phase: 'Training', costUSD: 1.1, instances: [{ id: 'i-1', market: 'spot', launchedAt: 'x', generation: 1, attempt: 1 }] }),
      statusFixture('b', { phase: 'Training', costUSD: 2.2, instances: [{ id: 'i-2', market: 'on-demand', launchedAt: 'x', generation: 1, attempt: 1 }] }),
      statusFixture('c', { phase: 'Failed' }),
    ]);
    const { samples } = parse(metrics.registry.render());
    expect(value(samples, 'runctl_runs', { phase: 'Training' })).toBe(2);
    expect(value(samples, 'runctl_runs', { phase: 'Failed' })).toBe(1);
    expect(value(samples, 'runctl_runs', { phase: 'Pending' })).toBe(0);
    expect(value(samples, 'runctl_instances', { market: 'spot' })).toBe(1);
    expect(value(samples, 'runctl_instances', { market: 'on-demand' })).toBe(1);
    expect(value(samples, 'runctl_spend_usd')).toBe(3.3);
    // Interruptions that happened before this controller first saw a run are not "new".
    expect(value(samples, 'runctl_interruptions_total')).toBe(0);
  });

  it('exports each run\'s cost and savings from its ledger, and each interruption\'s recovery seconds once', () => {
    const metrics = new RunctlMetrics();
    const ledger = {
      attempts: [],
      interruptions: [
        { generation: 1, attempt: 1, nextAttempt: 2, noticedAt: '2026-03-02T10:00:00Z', recoverySeconds: 42.5 },
        { generation: 1, attempt: 2, nextAttempt: 3, noticedAt: '2026-03-02T11:00:00Z' },
      ],
      costUSD: 0.75,
      savingsUSD: 1.25,
      unknown: [],
      recoverySeconds: 42.5,
      stepsRedone: 3,
    };
    const run = statusFixture('spotty', { phase: 'Resuming', costUSD: 0.75, ledger });
    metrics.observeRuns([run]);
    metrics.observeRuns([run]);
    const { samples, types } = parse(metrics.registry.render());
    expect(value(samples, 'runctl_run_cost_usd', { run: 'spotty' })).toBe(0.75);
    expect(value(samples, 'runctl_run_savings_usd', { run: 'spotty' })).toBe(1.25);
    expect(value(samples, 'runctl_run_last_recovery_seconds', { run: 'spotty' })).toBe(42.5);
    expect(types.get('runctl_recovery_seconds')).toBe('histogram');
    // Observed once though the run was seen twice; the interruption still recovering is not observed.
    expect(value(samples, 'runctl_recovery_seconds_count')).toBe(1);
    expect(value(samples, 'runctl_recovery_seconds_sum')).toBe(42.5);
    expect(value(samples, 'runctl_recovery_seconds_bucket', { le: '60' })).toBe(1);
    expect(value(samples, 'runctl_recovery_seconds_bucket', { le: '30' })).toBe(0);
    // A run no longer known drops its per-run series.
    metrics.observeRuns([]);
    expect(value(parse(metrics.registry.render()).samples, 'runctl_run_cost_usd', { run: 'spotty' })).toBeUndefined();
  });

  it('escapes label values and help text so any string survives a scrape', () => {
    const registry = new MetricsRegistry();
    registry.counter('odd_total', 'help with \\ and\nnewline', ['kind']).inc({ kind: 'quote " backslash \\ newline \n end' });
    const { samples, help } = parse(registry.render());
    expect(samples[0]!.labels.kind).toBe('quote " backslash \\ newline \n end');
    expect(help.get('odd_total')).toBe('help with \\\\ and\\nnewline');
  });

  it('refuses misuse of the registry with a message naming the metric', () => {
    const registry = new MetricsRegistry();
    const c = registry.counter('x_total', 'x', ['kind']);
    expect(() => c.inc({ kind: 'a' }, -1)).toThrow('x_total is a counter: it only goes up');
    expect(() => c.inc({ other: 'a' })).toThrow('x_total takes labels {kind}, got {other}');
    expect(() => registry.counter('x_total', 'again')).toThrow('registered twice');
    expect(() => registry.gauge('bad-name', 'x')).toThrow('not a valid Prometheus name');
    expect(() => registry.histogram('h', 'x', [])).toThrow('buckets must be distinct finite numbers');
  });
});

describe('metrics address', () => {
  it('accepts host:port, :port and [v6]:port', () => {
    expect(parseListenAddress('127.0.0.1:9464')).toEqual({ host: '127.0.0.1', port: 9464 });
    expect(parseListenAddress(':9464')).toEqual({ port: 9464 });
    expect(parseListenAddress('[::1]:9464')).toEqual({ host: '::1', port: 9464 });
    expect(parseListenAddress('localhost:0')).toEqual({ host: 'localhost', port: 0 });
  });

  it.each(['9464', 'host', 'host:', 'host:99999', ':-1', '1.2.3.4:80:80', 'a b:80', ''])('rejects %j with what would be valid', (addr) => {
    const err = (() => {
      try {
        parseListenAddress(addr);
      } catch (e) {
        return e;
      }
    })();
    expect(err).toBeInstanceOf(MetricsAddressError);
    expect((err as Error).message).toContain(`--metrics ${JSON.stringify(addr)} is not a listen address: use host:port (127.0.0.1:9464), :port`);
  });

  it('says why it cannot listen: a port in use, a host that is not this machine', async () => {
    server = await startMetricsServer('127.0.0.1:0', new MetricsRegistry());
    const port = server.address.split(':').pop();
    await expect(startMetricsServer(`127.0.0.1:${port}`, new MetricsRegistry())).rejects.toThrow(/cannot listen: the port is already in use/);
    await expect(startMetricsServer('192.0.2.1:9464', new MetricsRegistry())).rejects.toThrow(/cannot listen: the host is not an address of this machine/);
  });

  it('listens on every interface for :port', async () => {
    server = await startMetricsServer(':0', new MetricsRegistry());
    expect(server.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    expect(await (await fetch(`${server.url}/healthz`)).text()).toBe('ok\n');
  });
});
