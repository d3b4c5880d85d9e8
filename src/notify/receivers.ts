// Notification receivers: what `notifications:` in runctl.yaml and in a TrainingRun's spec say,
// which run events they hear about, and the stable id a receiver is known by in the event log.
// Pure: no I/O. The delivery lives in notifier.ts; the rules are in docs/notifications.md.
import { createHash } from 'node:crypto';
import type { RunEvent } from '../state/types.js';

/** Events a receiver can ask for (docs/notifications.md says which run event each one is). */
export const NOTIFICATION_EVENTS = ['Interrupted', 'Resumed', 'Failed', 'Completed', 'BudgetReached', 'CheckpointSyncStalled'] as const;
export type NotificationEvent = (typeof NOTIFICATION_EVENTS)[number];

export const NOTIFICATION_FORMATS = ['generic', 'slack', 'discord'] as const;
export type NotificationFormat = (typeof NOTIFICATION_FORMATS)[number];

/** Events a receiver hears about when it lists none. */
export const DEFAULT_NOTIFICATION_EVENTS: readonly NotificationEvent[] = ['Interrupted', 'Failed', 'Completed'];

/** Seconds a receiver has to answer one delivery, when it does not say. */
export const DEFAULT_NOTIFICATION_TIMEOUT = '10s';

/**
 * One entry of `notifications:` after schema defaults (schema `$defs.notificationReceiver`).
 * Exactly one of url and urlFrom (spec/notification-checks.ts).
 */
export interface NotificationReceiver {
  /** http(s) URL. A URL carrying a credential belongs in urlFrom (validate warns). */
  url?: string;
  /** Read the URL from the controller's environment at delivery time, so it stays out of git. */
  urlFrom?: { env: string };
  /** Default generic. */
  format: NotificationFormat;
  /** Default Interrupted, Failed, Completed. */
  events: NotificationEvent[];
  /** How long the receiver has to answer one delivery, a duration like `10s` (1s to 5m). */
  timeout: string;
}

/** A receiver as the notifier uses it: normalised, with its id. */
export interface ResolvedReceiver {
  /** `r-<12 hex>`: stable across restarts and edits of `events`; names the receiver in the event log. */
  id: string;
  url?: string;
  urlFrom?: { env: string };
  format: NotificationFormat;
  events: NotificationEvent[];
  timeout: string;
  /** How messages and events name it without showing the URL (which may be a credential). */
  label: string;
}

/**
 * The receivers of one run: the project's (runctl.yaml) and the run's own. One endpoint with one
 * format is one receiver (its events are merged), so listing it in both places sends one message.
 */
export function receiversFor(project: readonly Partial<NotificationReceiver>[] | undefined, run: readonly Partial<NotificationReceiver>[] | undefined): ResolvedReceiver[] {
  const byId = new Map<string, ResolvedReceiver>();
  for (const r of [...(project ?? []), ...(run ?? [])]) {
    const format = r.format ?? 'generic';
    const target = r.urlFrom ? `env:${r.urlFrom.env}` : `url:${r.url ?? ''}`;
    const id = `r-${createHash('sha256').update(`${format}\u0000${target}`).digest('hex').slice(0, 12)}`;
    const events = r.events && r.events.length > 0 ? r.events : [...DEFAULT_NOTIFICATION_EVENTS];
    const existing = byId.get(id);
    if (existing) {
      existing.events = NOTIFICATION_EVENTS.filter((e) => existing.events.includes(e) || events.includes(e));
      continue;
    }
    byId.set(id, {
      id,
      ...(r.urlFrom ? { urlFrom: { env: r.urlFrom.env } } : { url: r.url }),
      format,
      events: NOTIFICATION_EVENTS.filter((e) => events.includes(e)),
      timeout: r.timeout ?? DEFAULT_NOTIFICATION_TIMEOUT,
      label: receiverLabel(format, r),
    });
  }
  return [...byId.values()];
}

/** `slack receiver (URL from $SLACK_WEBHOOK_URL)` or `generic receiver at http://127.0.0.1:9000` (origin only). */
function receiverLabel(format: NotificationFormat, r: Partial<NotificationReceiver>): string {
  if (r.urlFrom) return `${format} receiver (URL from $${r.urlFrom.env})`;
  let origin = 'an invalid URL';
  try {
    origin = new URL(r.url ?? '').origin;
  } catch {
    // validate refuses such a URL; a record written before that check says so plainly
  }
  return `${format} receiver at ${origin}`;
}

/**
 * The notification a run event is, if any. The mapping onto what the reconciler records:
 * - Interrupted: a transition into phase Interrupted (a spot notice, or the instance gone);
 * - Resumed: a transition into Training of an attempt after the first (the job runs again,
 *   restored from the latest checkpoint, after an interruption or a retried failure);
 * - Failed / Completed: a transition into that phase;
 * - BudgetReached: the transition caused by BUDGET_EXCEEDED (the run stops, saving a checkpoint);
 * - CheckpointSyncStalled: the agent's fault of that name appearing (not clearing).
 */
export function notificationOf(e: Pick<RunEvent, 'kind' | 'action' | 'data'> & { attempt?: number }): NotificationEvent | undefined {
  if (e.kind === 'transition') {
    if (e.data?.event === 'BUDGET_EXCEEDED') return 'BudgetReached';
    const m = /^(\w+) -> (\w+)$/.exec(e.action);
    if (!m || m[1] === m[2]) return undefined;
    const to = m[2];
    if (to === 'Interrupted' || to === 'Failed' || to === 'Completed') return to;
    if (to === 'Training' && Number(e.data?.attempt ?? e.attempt) > 1) return 'Resumed';
    return undefined;
  }
  if (e.kind === 'observation' && e.action === 'fault CheckpointSyncStalled') return 'CheckpointSyncStalled';
  return undefined;
}

/**
 * Marks an event for the receivers that want it (`data.notify`: their ids), written with the event
 * itself, so whoever delivers it later (this controller after a crash, or another) delivers exactly
 * to the receivers configured when it happened: a receiver added later does not get old news.
 */
export function stampNotifications<E extends Pick<RunEvent, 'kind' | 'action' | 'data'> & { attempt?: number }>(e: E, receivers: readonly ResolvedReceiver[]): E {
  if (receivers.length === 0) return e;
  const name = notificationOf(e);
  if (!name) return e;
  const ids = receivers.filter((r) => r.events.includes(name)).map((r) => r.id);
  if (ids.length === 0) return e;
  return { ...e, data: { ...(e.data ?? {}), notify: ids } };
}

/** The receiver ids an event was stamped for. */
export function stampedReceivers(e: RunEvent): string[] {
  const v = e.data?.notify;
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
}
