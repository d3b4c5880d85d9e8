// Delivers notifications from the run's event log (the outbox events already go through): an
// event stamped with `data.notify` owes one message per receiver listed, and every attempt is
// recorded back into the same log (ledger.ts), so a controller restarted after a crash knows what
// was sent. It never holds up reconciling: the controller only tells it that a run's events may
// have changed, and deliveries run on their own, at most `concurrency` at a time, each with a
// timeout, retried with bounded exponential backoff. docs/notifications.md is the user's view.
//
// The guarantee, and its one window: an attempt's `handoff` record is written as soon as the whole
// request is on the network, before the answer. A controller that dies after that record does not
// send again (the delivery settles as `unconfirmed`: the receiver got it, or the network lost it).
// One that dies between handing the request over and writing that record (a single local write)
// sends it again on restart; that is the only way a receiver sees a message twice through a crash.
// While the controller lives, an answer that does not come within the timeout is retried like a
// 5xx, so a receiver slower than its timeout may see a message twice.
import { parseDuration } from '../spec/duration.js';
import type { RunEvent, RunStatus, StateStore } from '../state/types.js';
import { redactUrl } from './credentials.js';
import { formatBody, headline, type NotificationMessage } from './formats.js';
import { postJson, type PostResult } from './http.js';
import { owedDeliveries, recordId, type DeliveryOutcome, type OwedDelivery } from './ledger.js';
import { receiversFor, type NotificationReceiver, type ResolvedReceiver } from './receivers.js';

/** Where delivery outcomes are counted (RunctlMetrics implements it). */
export interface NotificationMetrics {
  notification(format: string, event: string, outcome: DeliveryOutcome | 'no-url' | 'refused' | 'gave-up'): void;
}

export interface Backoff {
  /** Wait after the first failed attempt, in ms; doubles after each further one. */
  baseMs: number;
  /** Longest wait between attempts, in ms (also caps a receiver's Retry-After). */
  maxMs: number;
  /** Attempts in all before a delivery is given up. */
  attempts: number;
}

/** 2 s, 4 s, ... capped at 5 min, 8 attempts: about 4 minutes of trying before giving up. */
export const DEFAULT_BACKOFF: Backoff = { baseMs: 2_000, maxMs: 300_000, attempts: 8 };

export interface NotifierOptions {
  store: StateStore;
  /** `notifications:` of runctl.yaml (every run's receivers). */
  project?: readonly NotificationReceiver[];
  /** Where `urlFrom: {env}` is read, at delivery time. Default process.env. */
  env?: NodeJS.ProcessEnv;
  now?: () => number;
  metrics?: NotificationMetrics;
  /** Every delivery outcome recorded (also in the run's event log). */
  onEvent?(event: RunEvent): void;
  /** A run's deliveries are all settled or waiting on a timer (the controller may release its lease). */
  onIdle?(run: string): void;
  /** Reading or writing the run's log failed; the run is looked at again on its next change. */
  onError?(run: string, err: unknown): void;
  /**
   * False while this controller may not write the run's records (shared state: it does not hold
   * the run's lease). Nothing is sent for such a run: the lease holder delivers it.
   */
  mayAct?(run: string): boolean;
  /** Requests in flight at once, across runs. Default 4. */
  concurrency?: number;
  backoff?: Backoff;
}

interface Job {
  run: string;
  owed: OwedDelivery;
  timer?: NodeJS.Timeout;
  running: boolean;
}

/** The project's receivers plus the run's own (status.spec.notifications). */
export function runReceivers(project: readonly NotificationReceiver[] | undefined, status: Pick<RunStatus, 'spec'>): ResolvedReceiver[] {
  return receiversFor(project, status.spec.notifications);
}

export class Notifier {
  private readonly now: () => number;
  private readonly env: NodeJS.ProcessEnv;
  private readonly backoff: Backoff;
  private readonly concurrency: number;
  private readonly statuses = new Map<string, RunStatus>();
  private readonly seenSeq = new Map<string, number>();
  private readonly scans = new Map<string, Promise<void>>();
  private readonly rescan = new Set<string>();
  private readonly jobs = new Map<string, Job>();
  private readonly slotWaiters: Array<() => void> = [];
  private readonly idleWaiters: Array<() => void> = [];
  private readonly abort = new AbortController();
  private active = 0;
  private stopped = false;

  constructor(private readonly opts: NotifierOptions) {
    this.now = opts.now ?? Date.now;
    this.env = opts.env ?? process.env;
    this.backoff = opts.backoff ?? DEFAULT_BACKOFF;
    this.concurrency = Math.max(1, opts.concurrency ?? 4);
  }

  /**
   * After each reconcile of a run: looks at its log again when its events may have changed (the
   * first time, and whenever eventSeq moved). Returns at once; delivery happens in the background.
   */
  afterReconcile(status: RunStatus): void {
    this.statuses.set(status.run, status);
    // The first look reads the whole log: deliveries a crashed controller left owed, and events
    // replayed from the outbox (those are appended without being announced). A run with no
    // receivers configured is never read (its log owes nothing anyone still wants).
    const first = !this.seenSeq.has(status.run);
    if (!first && this.seenSeq.get(status.run) === status.eventSeq) return;
    this.seenSeq.set(status.run, status.eventSeq);
    if (!this.mayNotify(status)) return;
    this.scan(status.run);
  }

  /** An event was appended (fault events do not move eventSeq): look again if it owes messages. */
  eventAppended(e: RunEvent): void {
    if (Array.isArray(e.data?.notify)) this.scan(e.run);
  }

  /** True while any delivery of the run is in flight or scheduled, or its log is being read. */
  busy(run: string): boolean {
    return this.scans.has(run) || this.hasJobs(run);
  }

  /** Deliveries not settled yet (in flight or waiting to be retried). */
  get pending(): number {
    return this.jobs.size;
  }

  /**
   * Waits until every delivery known is settled, or `timeoutMs` has passed; once `hurry` is
   * aborted (the user pressed Ctrl-C), only for requests in flight, not for retries waiting out
   * their backoff. Returns how many are left: they stay owed in the log for the next controller.
   */
  async drain(timeoutMs: number, hurry?: AbortSignal): Promise<number> {
    const deadline = this.now() + timeoutMs;
    const waiting = () => this.scans.size > 0 || (hurry?.aborted ? [...this.jobs.values()].some((j) => j.running) : this.jobs.size > 0);
    while (waiting()) {
      const left = deadline - this.now();
      if (left <= 0) break;
      await new Promise<void>((resolve) => {
        const wake = () => {
          clearTimeout(t);
          hurry?.removeEventListener('abort', wake);
          resolve();
        };
        const t = setTimeout(wake, left);
        hurry?.addEventListener('abort', wake, { once: true });
        this.idleWaiters.push(wake);
      });
    }
    return this.jobs.size;
  }

  /**
   * Stops: cancels scheduled retries and cuts requests in flight (one already handed to the
   * network is recorded `unconfirmed`; one that was not stays owed for the next controller).
   */
  async stop(): Promise<void> {
    this.stopped = true;
    this.abort.abort();
    for (const job of this.jobs.values()) if (job.timer) clearTimeout(job.timer);
    while (this.jobs.size > 0 && [...this.jobs.values()].some((j) => j.running)) {
      await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
    }
    await Promise.allSettled([...this.scans.values()]);
  }

  private mayNotify(status: RunStatus): boolean {
    return (this.opts.project?.length ?? 0) > 0 || (status.spec.notifications?.length ?? 0) > 0;
  }

  private hasJobs(run: string): boolean {
    for (const j of this.jobs.values()) if (j.run === run) return true;
    return false;
  }

  private scan(run: string): void {
    if (this.stopped) return;
    if (this.scans.has(run)) {
      this.rescan.add(run);
      return;
    }
    const p = this.scanOnce(run)
      .catch((err: unknown) => this.opts.onError?.(run, err))
      .finally(() => {
        this.scans.delete(run);
        if (this.rescan.delete(run)) this.scan(run);
        else this.settle(run);
      });
    this.scans.set(run, p);
  }

  private async scanOnce(run: string): Promise<void> {
    if (this.opts.mayAct && !this.opts.mayAct(run)) return;
    const events = await this.opts.store.readEvents(run);
    for (const owed of owedDeliveries(events)) {
      if (this.jobs.has(owed.key) || this.stopped) continue;
      if (owed.handedOff) {
        // Its controller died waiting for the answer: the receiver may have it; never send twice.
        const receiver = await this.receiver(run, owed.receiverId);
        await this.record(run, owed, owed.failedAttempts + 1, 'unconfirmed', receiver, {
          message: `${receiver?.label ?? `receiver ${owed.receiverId}`} was sent this ${owed.event} notification, but the controller stopped before its answer came; not sent again, so it may or may not have arrived`,
        });
        this.opts.metrics?.notification(receiver?.format ?? 'unknown', owed.event, 'unconfirmed');
        continue;
      }
      const job: Job = { run, owed, running: false };
      this.jobs.set(owed.key, job);
      this.schedule(job, owed.notBefore ?? 0);
    }
  }

  private schedule(job: Job, notBefore: number): void {
    const wait = Math.max(0, notBefore - this.now());
    job.timer = setTimeout(() => {
      job.timer = undefined;
      void this.attempt(job);
    }, wait);
  }

  private async attempt(job: Job): Promise<void> {
    if (this.stopped) return;
    if (this.opts.mayAct && !this.opts.mayAct(job.run)) {
      // Left owed in the log: the controller holding the run's lease sends it.
      this.jobs.delete(job.owed.key);
      this.settle(job.run);
      return;
    }
    job.running = true;
    await this.slot();
    let retryAt: number | undefined;
    try {
      // Stopped while waiting for a slot: nothing was sent; the next controller sends it.
      if (!this.stopped) retryAt = await this.deliver(job);
    } catch (err) {
      this.opts.onError?.(job.run, err);
    } finally {
      this.active--;
      this.slotWaiters.shift()?.();
      job.running = false;
    }
    if (retryAt !== undefined && !this.stopped) {
      this.schedule(job, retryAt);
      return;
    }
    this.jobs.delete(job.owed.key);
    this.settle(job.run);
  }

  /** One attempt; returns when to try again, or undefined when the delivery is settled (or left owed). */
  private async deliver(job: Job): Promise<number | undefined> {
    const { run, owed } = job;
    const n = owed.failedAttempts + 1;
    const receiver = await this.receiver(run, owed.receiverId);
    if (!receiver) {
      await this.record(run, owed, n, 'skipped', undefined, {
        message: `receiver ${owed.receiverId} is no longer configured (its entry in notifications was removed or changed); the ${owed.event} notification is not sent`,
      });
      this.opts.metrics?.notification('unknown', owed.event, 'skipped');
      return undefined;
    }
    const raw = receiver.url ?? (receiver.urlFrom ? this.env[receiver.urlFrom.env] : undefined);
    let url: URL | undefined;
    try {
      url = raw ? new URL(raw) : undefined;
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) {
      const why = !raw
        ? `the environment variable ${receiver.urlFrom?.env} is not set in the controller's environment: set it to the webhook URL and restart the controller`
        : 'its URL is not an http(s) URL: fix it in notifications (runctl validate checks it)';
      await this.record(run, owed, n, 'failed', receiver, { message: `the ${owed.event} notification to ${receiver.label} was not sent: ${why}`, reason: 'NotificationURLMissing' });
      this.opts.metrics?.notification(receiver.format, owed.event, 'no-url');
      return undefined;
    }
    const status = this.statuses.get(run) ?? (await this.opts.store.getStatus(run));
    const body = JSON.stringify(formatBody(receiver.format, messageFor(owed, status)));
    let handoff: Promise<void> | undefined;
    const result = await postJson(url, body, {
      headers: { 'idempotency-key': owed.key, 'user-agent': 'runctl-notifier' },
      timeoutMs: timeoutMs(receiver.timeout),
      signal: this.abort.signal,
      onHandedOff: () => {
        handoff = this.record(run, owed, n, 'handoff', receiver, { message: `sent the ${owed.event} notification to ${receiver.label}; waiting for its answer` }).catch(
          (err: unknown) => this.opts.onError?.(run, err),
        );
      },
    });
    await handoff;
    return this.conclude(job, receiver, result, raw);
  }

  private async conclude(job: Job, receiver: ResolvedReceiver, r: PostResult, raw: string | undefined): Promise<number | undefined> {
    const { run, owed } = job;
    const n = owed.failedAttempts + 1;
    const what = `the ${owed.event} notification to ${receiver.label}`;
    const count = (o: Parameters<NotificationMetrics['notification']>[2]) => this.opts.metrics?.notification(receiver.format, owed.event, o);
    if (r.status !== undefined && r.status >= 200 && r.status < 300) {
      await this.record(run, owed, n, 'delivered', receiver, { message: `delivered ${what} (HTTP ${r.status}${n > 1 ? `, attempt ${n}` : ''})`, status: r.status });
      count('delivered');
      return undefined;
    }
    if (this.stopped && r.status === undefined) {
      if (r.handedOff) {
        await this.record(run, owed, n, 'unconfirmed', receiver, { message: `${what} was sent, but the controller stopped before the answer came; not sent again, so it may or may not have arrived` });
        count('unconfirmed');
      }
      // Not handed off: nothing reached the receiver; the next controller sends it.
      return undefined;
    }
    const answer = r.status !== undefined ? `HTTP ${r.status}${r.bodySnippet ? ` ${JSON.stringify(r.bodySnippet.trim().slice(0, 120))}` : ''}` : (r.error ?? 'no answer');
    const detail = redactUrl(answer, raw);
    const retryable = r.status === undefined || r.status === 408 || r.status === 429 || r.status >= 500;
    if (!retryable) {
      await this.record(run, owed, n, 'failed', receiver, {
        message: `${what} was refused (${detail}); not retried: check the receiver's URL and format`,
        status: r.status,
        reason: 'NotificationRefused',
      });
      count('refused');
      return undefined;
    }
    if (n >= this.backoff.attempts) {
      await this.record(run, owed, n, 'failed', receiver, {
        message: `gave up on ${what} after ${n} attempts (last: ${detail}); check that the receiver is up`,
        ...(r.status !== undefined ? { status: r.status } : {}),
        reason: 'NotificationFailed',
      });
      count('gave-up');
      return undefined;
    }
    const exp = Math.min(this.backoff.maxMs, this.backoff.baseMs * 2 ** (n - 1));
    const jittered = Math.round(exp * (0.8 + Math.random() * 0.4));
    const wait = Math.min(this.backoff.maxMs, Math.max(jittered, (r.retryAfterSeconds ?? 0) * 1000));
    const retryAt = this.now() + wait;
    await this.record(run, owed, n, 'retry', receiver, {
      message: `${what} failed (${detail}); trying again in ${Math.max(1, Math.round(wait / 1000))}s (attempt ${n + 1} of ${this.backoff.attempts})`,
      ...(r.status !== undefined ? { status: r.status } : {}),
      retryAt: new Date(retryAt).toISOString(),
      reason: 'NotificationRetrying',
    });
    count('retry');
    owed.failedAttempts = n;
    owed.notBefore = retryAt;
    return retryAt;
  }

  private async receiver(run: string, id: string): Promise<ResolvedReceiver | undefined> {
    const status = this.statuses.get(run) ?? (await this.opts.store.getStatus(run));
    if (!status) return undefined;
    return runReceivers(this.opts.project, status).find((r) => r.id === id);
  }

  private async record(
    run: string,
    owed: OwedDelivery,
    attempt: number,
    stage: 'handoff' | DeliveryOutcome,
    receiver: ResolvedReceiver | undefined,
    extra: { message: string; status?: number; retryAt?: string; reason?: string },
  ): Promise<void> {
    const ok = stage === 'delivered' || stage === 'handoff';
    const e: RunEvent = {
      id: recordId(owed.key, attempt, stage),
      seq: owed.source.seq,
      at: new Date(this.now()).toISOString(),
      run,
      ...(owed.source.uid ? { uid: owed.source.uid } : {}),
      generation: owed.source.generation,
      attempt: owed.source.attempt,
      kind: 'notification',
      action: `notify ${owed.event}`,
      result: stage === 'skipped' ? 'skipped' : ok ? 'ok' : 'error',
      message: extra.message,
      data: {
        key: owed.key,
        receiver: owed.receiverId,
        ...(receiver ? { format: receiver.format } : {}),
        stage: stage === 'handoff' ? 'handoff' : 'result',
        attempt,
        ...(stage === 'handoff' ? {} : { outcome: stage }),
        ...(extra.status !== undefined ? { status: extra.status } : {}),
        ...(extra.retryAt ? { retryAt: extra.retryAt } : {}),
        ...(extra.reason ? { reason: extra.reason } : {}),
      },
    };
    await this.opts.store.appendEvents(run, [e]);
    if (stage !== 'handoff') this.opts.onEvent?.(e);
  }

  private async slot(): Promise<void> {
    if (this.active < this.concurrency) {
      this.active++;
      return;
    }
    await new Promise<void>((resolve) => this.slotWaiters.push(resolve));
    this.active++;
  }

  private settle(run: string): void {
    if (!this.busy(run)) this.opts.onIdle?.(run);
    if (this.jobs.size === 0 || [...this.jobs.values()].every((j) => !j.running)) {
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }
}

function timeoutMs(duration: string): number {
  try {
    return Math.max(1000, parseDuration(duration));
  } catch {
    return 10_000;
  }
}

/** What a delivery says: the run event, in words a person reading a chat understands. */
export function messageFor(owed: OwedDelivery, status: RunStatus | undefined): NotificationMessage {
  const e = owed.source;
  const to = /-> (\w+)$/.exec(e.action)?.[1];
  const phase = owed.event === 'BudgetReached' || owed.event === 'CheckpointSyncStalled' ? (status?.phase ?? to ?? 'unknown') : (to ?? status?.phase ?? 'unknown');
  const attempt = Number(e.data?.attempt ?? e.attempt);
  const raw = e.message && !/^[A-Z_]+$/.test(e.message) ? e.message : undefined;
  const fallback: Record<typeof owed.event, string> = {
    Interrupted: 'the instance was interrupted; runctl resumes from the latest checkpoint',
    Resumed: `attempt ${attempt} is training again from the latest checkpoint`,
    Failed: status?.failure?.message ?? 'the run failed',
    Completed: 'the job finished successfully',
    BudgetReached: 'the budget was reached; the run stops after saving a checkpoint',
    CheckpointSyncStalled: 'checkpoint syncing has stalled',
  };
  const message: NotificationMessage = {
    run: e.run,
    ...(e.uid ? { uid: e.uid } : {}),
    event: owed.event,
    phase,
    message: raw ?? fallback[owed.event],
    time: e.at,
    generation: Number(e.data?.generation ?? e.generation),
    attempt,
    id: owed.key,
    links: { describe: `runctl describe ${e.run}`, logs: `runctl logs ${e.run}` },
  };
  return message;
}

export { headline };
