// Prometheus metrics for a long-lived controller (`--metrics ADDR`): a tiny registry of counters,
// gauges and fixed-bucket histograms rendered in the text exposition format 0.0.4, and an HTTP
// server for `/metrics` and `/healthz`. Hand-written because the format is small and stable and the
// usual client library would be the largest dependency runctl has.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RunStatus } from '../state/types.js';

type Labels = Record<string, string>;

const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

abstract class Metric {
  protected readonly samples = new Map<string, { labels: Labels; value: number }>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
  ) {
    if (!METRIC_NAME.test(name)) throw new Error(`metric name ${JSON.stringify(name)} is not a valid Prometheus name`);
    for (const l of labelNames) {
      if (!LABEL_NAME.test(l) || l.startsWith('__') || l === 'le') throw new Error(`label name ${JSON.stringify(l)} of ${name} is not allowed`);
    }
  }

  abstract readonly type: 'counter' | 'gauge' | 'histogram';

  protected slot(labels: Labels = {}): { labels: Labels; value: number } {
    const names = Object.keys(labels);
    if (names.length !== this.labelNames.length || !this.labelNames.every((l) => typeof labels[l] === 'string')) {
      throw new Error(`${this.name} takes labels {${this.labelNames.join(', ')}}, got {${names.join(', ')}}`);
    }
    const key = this.labelNames.map((l) => labels[l]).join('\u0000');
    let s = this.samples.get(key);
    if (!s) this.samples.set(key, (s = { labels: { ...labels }, value: 0 }));
    return s;
  }

  /** Sample lines, without the HELP and TYPE header. */
  protected lines(): string[] {
    if (this.samples.size === 0 && this.labelNames.length === 0) return [`${this.name} 0`];
    return [...this.samples.values()].map((s) => `${this.name}${formatLabels(this.labelNames, s.labels)} ${formatValue(s.value)}`);
  }

  render(): string {
    return [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`, ...this.lines()].join('\n');
  }
}

export class Counter extends Metric {
  readonly type = 'counter' as const;
  inc(labels?: Labels, by = 1): void {
    if (!(by >= 0)) throw new Error(`${this.name} is a counter: it only goes up (got ${by})`);
    this.slot(labels).value += by;
  }
  get(labels?: Labels): number {
    return this.slot(labels).value;
  }
}

export class Gauge extends Metric {
  readonly type = 'gauge' as const;
  set(labels: Labels | undefined, value: number): void {
    this.slot(labels).value = value;
  }
  inc(labels?: Labels, by = 1): void {
    this.slot(labels).value += by;
  }
  get(labels?: Labels): number {
    return this.slot(labels).value;
  }
  /** Forgets every labelled sample (for gauges recomputed from scratch, like runs by phase). */
  clear(): void {
    this.samples.clear();
  }
}

export class Histogram extends Metric {
  readonly type = 'histogram' as const;
  readonly buckets: readonly number[];
  private readonly counts: number[];
  private sum = 0;
  private count = 0;

  constructor(name: string, help: string, buckets: readonly number[]) {
    super(name, help, []);
    const sorted = [...buckets].sort((a, b) => a - b);
    if (sorted.length === 0 || sorted.some((b, i) => !Number.isFinite(b) || (i > 0 && b === sorted[i - 1]))) {
      throw new Error(`${name}: histogram buckets must be distinct finite numbers (+Inf is added on its own)`);
    }
    this.buckets = sorted;
    this.counts = sorted.map(() => 0);
  }

  observe(value: number): void {
    if (Number.isNaN(value)) return;
    this.sum += value;
    this.count += 1;
    for (let i = 0; i < this.buckets.length; i++) if (value <= (this.buckets[i] as number)) this.counts[i] = (this.counts[i] as number) + 1;
  }

  protected override lines(): string[] {
    return [
      ...this.buckets.map((b, i) => `${this.name}_bucket{le="${formatValue(b)}"} ${this.counts[i]}`),
      `${this.name}_bucket{le="+Inf"} ${this.count}`,
      `${this.name}_sum ${formatValue(this.sum)}`,
      `${this.name}_count ${this.count}`,
    ];
  }
}

export class MetricsRegistry {
  private readonly metrics = new Map<string, Metric>();

  counter(name: string, help: string, labelNames: readonly string[] = []): Counter {
    return this.add(new Counter(name, help, labelNames));
  }

  gauge(name: string, help: string, labelNames: readonly string[] = []): Gauge {
    return this.add(new Gauge(name, help, labelNames));
  }

  histogram(name: string, help: string, buckets: readonly number[]): Histogram {
    return this.add(new Histogram(name, help, buckets));
  }

  /** The text exposition format, version 0.0.4. */
  render(): string {
    return `${[...this.metrics.values()].map((m) => m.render()).join('\n')}\n`;
  }

  private add<M extends Metric>(metric: M): M {
    if (this.metrics.has(metric.name)) throw new Error(`metric ${metric.name} is registered twice`);
    this.metrics.set(metric.name, metric);
    return metric;
  }
}

function escapeHelp(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function escapeLabelValue(text: string): string {
  return text.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function formatLabels(names: readonly string[], labels: Labels): string {
  if (names.length === 0) return '';
  return `{${names.map((n) => `${n}="${escapeLabelValue(labels[n] ?? '')}"`).join(',')}}`;
}

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'NaN';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return String(v);
}

/** Reconcile durations run from a no-op pass (milliseconds) to a launch that waits for capacity (minutes). */
export const RECONCILE_DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300];

const PHASES: readonly RunStatus['phase'][] = [
  'Pending',
  'Provisioning',
  'Syncing',
  'Installing',
  'Training',
  'Interrupted',
  'Resuming',
  'Terminating',
  'Completed',
  'Failed',
  'Suspended',
];

/** The controller's metrics, by the names dashboards and alerts use. */
export class RunctlMetrics {
  readonly registry: MetricsRegistry;
  readonly reconciles: Counter;
  readonly reconcileErrors: Counter;
  readonly reconcileDuration: Histogram;
  readonly runs: Gauge;
  readonly instances: Gauge;
  readonly interruptions: Counter;
  readonly spend: Gauge;
  readonly orphans: Counter;
  readonly notificationsSent: Counter;
  readonly notificationsFailed: Counter;
  readonly runCost: Gauge;
  readonly runSavings: Gauge;
  readonly recovery: Histogram;
  readonly lastRecovery: Gauge;
  /** Interruptions whose recovery was already observed (uid/generation/attempt), so each is observed once. */
  private readonly seenRecoveries = new Set<string>();
  /** Interruptions last seen per run, so the counter counts each interruption once. */
  private readonly seenInterruptions = new Map<string, number>();

  constructor(registry = new MetricsRegistry()) {
    this.registry = registry;
    this.reconciles = registry.counter('runctl_reconciles_total', 'Reconciles of one run, by result (ok, requeued, error, stood-down).', ['result']);
    this.reconcileErrors = registry.counter('runctl_reconcile_errors_total', 'Reconcile failures by kind (retryable, capacity, terminal, stale-write, other).', ['kind']);
    this.reconcileDuration = registry.histogram('runctl_reconcile_duration_seconds', 'Wall-clock time of one reconcile of one run.', RECONCILE_DURATION_BUCKETS);
    this.runs = registry.gauge('runctl_runs', 'Runs known to this controller, by phase.', ['phase']);
    this.instances = registry.gauge('runctl_instances', 'Instances running for runs of this controller, by market.', ['market']);
    this.interruptions = registry.counter('runctl_interruptions_total', 'Spot interruptions seen by this controller since it started.');
    this.spend = registry.gauge('runctl_spend_usd', 'Cost so far of the runs this controller knows, in USD.');
    this.orphans = registry.counter('runctl_orphaned_instances_terminated_total', 'Instances of finished, deleted or unknown runs that the orphan sweep terminated.');
    this.runCost = registry.gauge('runctl_run_cost_usd', 'Cost of each run so far from its ledger (every attempt whose price is known), in USD.', ['run']);
    this.runSavings = registry.gauge('runctl_run_savings_usd', 'What each run saved against on-demand for the same hours (spot attempts priced both ways), in USD.', ['run']);
    this.recovery = registry.histogram(
      'runctl_recovery_seconds',
      'Seconds from a spot interruption notice to the job training again on the next attempt, once per interruption.',
      RECOVERY_BUCKETS,
    );
    this.lastRecovery = registry.gauge('runctl_run_last_recovery_seconds', "Seconds from each run's latest interruption notice to training again.", ['run']);
    this.notificationsSent = registry.counter('runctl_notifications_sent_total', 'Notifications a receiver accepted (HTTP 2xx), by receiver format and event.', ['format', 'event']);
    this.notificationsFailed = registry.counter(
      'runctl_notifications_failed_total',
      'Notification attempts that did not end delivered, by receiver format, event and outcome (retry, gave-up, refused, no-url, unconfirmed, skipped).',
      ['format', 'event', 'outcome'],
    );
  }

  /** One notification attempt's outcome (src/notify/notifier.ts): `delivered`, or why not. */
  notification(format: string, event: string, outcome: string): void {
    if (outcome === 'delivered') this.notificationsSent.inc({ format, event });
    else this.notificationsFailed.inc({ format, event, outcome });
  }

  /** One orphaned instance terminated by the sweep. */
  orphanTerminated(): void {
    this.orphans.inc();
  }

  /** Records one reconcile: its result and how long it took. */
  reconciled(result: string, seconds: number): void {
    this.reconciles.inc({ result });
    this.reconcileDuration.observe(seconds);
  }

  error(kind: string): void {
    this.reconcileErrors.inc({ kind });
  }

  /** Recomputes the per-phase, per-market and spend gauges from the runs' statuses, and counts new interruptions. */
  observeRuns(statuses: readonly RunStatus[]): void {
    this.runs.clear();
    for (const phase of PHASES) this.runs.set({ phase }, 0);
    this.instances.clear();
    for (const market of ['spot', 'on-demand']) this.instances.set({ market }, 0);
    // Per-run series follow the runs this controller knows: a deleted run's series go away.
    this.runCost.clear();
    this.runSavings.clear();
    this.lastRecovery.clear();
    let spend = 0;
    for (const s of statuses) {
      if (s.phase !== 'Deleted') this.runs.inc({ phase: s.phase });
      for (const i of s.instances) if (!i.endedAt) this.instances.inc({ market: i.market ?? 'unknown' });
      spend += Number.isFinite(s.costUSD) ? s.costUSD : 0;
      this.observeLedger(s);
      // A run seen for the first time sets a baseline: interruptions before this process started are not new.
      const before = this.seenInterruptions.get(s.run);
      if (before !== undefined && s.interruptions > before) this.interruptions.inc(undefined, s.interruptions - before);
      this.seenInterruptions.set(s.run, s.interruptions);
    }
    this.spend.set(undefined, Math.round(spend * 1e6) / 1e6);
  }

  private observeLedger(s: RunStatus): void {
    if (s.phase === 'Deleted') return;
    this.runCost.set({ run: s.run }, Number.isFinite(s.costUSD) ? s.costUSD : 0);
    if (s.ledger?.savingsUSD !== undefined) this.runSavings.set({ run: s.run }, s.ledger.savingsUSD);
    for (const i of s.ledger?.interruptions ?? []) {
      if (i.recoverySeconds === undefined) continue;
      this.lastRecovery.set({ run: s.run }, i.recoverySeconds);
      const key = `${s.uid}/${i.generation}/${i.attempt}`;
      if (this.seenRecoveries.has(key)) continue;
      this.seenRecoveries.add(key);
      this.recovery.observe(i.recoverySeconds);
    }
  }
}

export interface MetricsServer {
  /** The address actually bound, as `host:port` (the port resolved when 0 was asked for). */
  address: string;
  url: string;
  close(): Promise<void>;
}

/** From a prelaunched replacement (seconds) to a cold one re-running a long setup (tens of minutes). */
const RECOVERY_BUCKETS = [5, 15, 30, 60, 120, 300, 600, 1200, 3600];

export class MetricsAddressError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MetricsAddressError';
  }
}

/** Parses `host:port`, `:port` (all interfaces) or `[v6]:port`. */
export function parseListenAddress(addr: string): { host?: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]*)):(\d{1,5})$/.exec(addr.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || !(port >= 0 && port <= 65535)) {
    throw new MetricsAddressError(
      `--metrics ${JSON.stringify(addr)} is not a listen address: use host:port (127.0.0.1:9464), :port for every interface (:9464), or [::1]:9464`,
    );
  }
  const host = m[1] ?? m[2];
  return host ? { host, port } : { port };
}

const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** Serves `/metrics` (rendered on each scrape) and `/healthz`; resolves once listening. */
export async function startMetricsServer(addr: string, registry: MetricsRegistry | { render(): string }): Promise<MetricsServer> {
  const { host, port } = parseListenAddress(addr);
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD', 'content-type': 'text/plain' }).end('method not allowed\n');
      return;
    }
    if (path === '/metrics') {
      let body: string;
      try {
        body = registry.render();
      } catch (err) {
        res.writeHead(500, { 'content-type': 'text/plain' }).end(`metrics could not be rendered: ${(err as Error).message}\n`);
        return;
      }
      res.writeHead(200, { 'content-type': CONTENT_TYPE }).end(req.method === 'HEAD' ? undefined : body);
    } else if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics or /healthz\n');
    }
  });
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    const onError = (err: NodeJS.ErrnoException) => {
      const reason =
        err.code === 'EADDRINUSE'
          ? 'the port is already in use (another runctl or exporter?): choose another port'
          : err.code === 'EACCES'
            ? 'permission denied: ports below 1024 need privileges; choose a port above 1024'
            : err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND' || err.code === 'EAI_AGAIN'
              ? 'the host is not an address of this machine: use 127.0.0.1, 0.0.0.0 or leave it out (:PORT)'
              : err.message;
      reject(new MetricsAddressError(`--metrics ${addr}: cannot listen: ${reason}`));
    };
    server.once('error', onError);
    server.listen({ host, port }, () => {
      server.off('error', onError);
      resolve();
    });
  });
  const bound = server.address() as AddressInfo;
  const shownHost = bound.family === 'IPv6' ? `[${bound.address}]` : bound.address;
  const reachable = host ? shownHost : '127.0.0.1';
  return {
    address: `${shownHost}:${bound.port}`,
    url: `http://${reachable === '[::]' || reachable === '0.0.0.0' ? '127.0.0.1' : reachable}:${bound.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
