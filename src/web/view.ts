// What the dashboard shows of a run, as JSON: the shapes of `/api/runs` and `/api/runs/<name>`
// (documented in docs/dashboard.md). Pure functions of the status record, its events and the
// progress history, so the page, the API and the tests see one projection. Nothing here may carry
// a secret: env values and secret references are left out (names only, as `describe` does), and
// credentials in URLs are masked in every free-text field.
import { redactUrls } from '../reconciler/git-follow.js';
import type { Condition, RunEvent, RunStatus } from '../state/types.js';
import { setupCache, setupCommand } from '../spec/types.js';

/** One row of the runs table (`GET /api/runs` returns `{runs: RunSummary[], unreadable: …}`). */
export interface RunSummary {
  run: string;
  uid: string;
  phase: RunStatus['phase'];
  /** From the spec file that defines the run (when the dashboard was given the runs folder). */
  labels: Record<string, string>;
  generation: number;
  attempt: number;
  interruptions: number;
  progress: { step: number; total?: number; loss?: number } | null;
  /** What the run has cost so far, in USD (the record's running figure). */
  costUSD: number;
  /** `spec.budget.maxCostUSD`, when set. */
  budgetUSD: number | null;
  lastCheckpoint: { id: string; step: number | null; at: string } | null;
  createdAt: string;
  updatedAt: string;
  /** Condition types currently True that mean trouble (e.g. CheckpointSyncStalled), for a warning badge. */
  warnings: string[];
}

/** An attempt on the timeline: one instance's life, split into the phases it went through. */
export interface AttemptView {
  generation: number;
  attempt: number;
  instanceId: string | null;
  instanceType: string | null;
  market: string | null;
  zone: string | null;
  start: string;
  /** Absent while the attempt runs. */
  end: string | null;
  endReason: string | null;
  costUSD: number | null;
  /** Phases in order, each from its transition event to the next (or to `end`/now). */
  phases: Array<{ phase: string; start: string; end: string | null }>;
}

/** A moment marked on the timeline and the loss curve. */
export interface MarkerView {
  kind: 'interrupted' | 'resumed' | 'completed' | 'failed' | 'suspended';
  at: string;
  generation: number;
  attempt: number;
  /** Step the job had reached (interrupted) or restarted from (resumed), when the history says. */
  step: number | null;
  message: string;
}

export interface ProgressPointView {
  time: string;
  step: number;
  total?: number;
  metrics: Record<string, number>;
}

/** The progress history of one attempt, as the agent recorded it. */
export interface SeriesView {
  generation: number;
  attempt: number;
  points: ProgressPointView[];
}

export interface EventView {
  seq: number;
  at: string;
  generation: number;
  attempt: number;
  kind: RunEvent['kind'];
  action: string;
  result: RunEvent['result'] | null;
  message: string | null;
  requestId: string | null;
}

/** `GET /api/runs/<name>`. */
export interface RunDetail extends RunSummary {
  observedGeneration: number;
  errorRetries: number;
  conditions: Condition[];
  failure: { reason: string; message: string } | null;
  faults: Array<{ reason: string; message: string; since: string; attempt: number; file: string | null }>;
  source: { file: string; revision: string | null } | null;
  /** Spec summary, label/value pairs; env and secrets by name only. */
  spec: Array<[string, string]>;
  checkpoints: Array<{ id: string; step: number | null; at: string; bytes: number; files: number }>;
  attempts: AttemptView[];
  markers: MarkerView[];
  /** Progress per attempt of the current generation, oldest first: one curve across attempts. */
  history: SeriesView[];
  /** Newest events (at most `eventsShown`), oldest first; `eventsTotal` counts all. */
  events: EventView[];
  eventsTotal: number;
  /** The last lines of the current attempt's log (redacted by the agent before storage). */
  log: { generation: number; attempt: number; lines: string[] } | null;
  /** What could not be read for this page (storage down, a damaged history), to say so on it. */
  problems: string[];
}

/** Conditions that are True when something needs a look (the rest are normal life). */
const TROUBLE = /Stalled|Failing|Unreachable|Unresolved|Crashed|Blocked|Fallback|Failed|BudgetReached|Timeout/;

export function runSummary(s: RunStatus, labels: Record<string, string>): RunSummary {
  return {
    run: s.run,
    uid: s.uid,
    phase: s.phase,
    labels,
    generation: s.generation,
    attempt: s.attempt,
    interruptions: s.interruptions,
    progress: s.progress ? { ...s.progress } : null,
    costUSD: s.costUSD,
    budgetUSD: s.spec.budget?.maxCostUSD ?? null,
    lastCheckpoint: s.lastCheckpoint ? { id: s.lastCheckpoint.id, step: s.lastCheckpoint.step ?? null, at: s.lastCheckpoint.at } : null,
    createdAt: s.createdAt,
    updatedAt: s.updatedAt,
    warnings: s.conditions.filter((c) => c.status === 'True' && TROUBLE.test(c.type) && c.type !== 'Failed').map((c) => c.type),
  };
}

export interface DetailInput {
  status: RunStatus;
  labels: Record<string, string>;
  /** This incarnation's events, oldest first. */
  events: readonly RunEvent[];
  history: SeriesView[];
  log: RunDetail['log'];
  problems?: string[];
  now: number;
  /** Newest events to include; default 200. */
  eventsShown?: number;
}

export function runDetail(input: DetailInput): RunDetail {
  const { status: s, events } = input;
  const shown = events.slice(-(input.eventsShown ?? 200));
  const attempts = attemptViews(s, events);
  return {
    ...runSummary(s, input.labels),
    observedGeneration: s.observedGeneration,
    errorRetries: s.errorRetries,
    conditions: s.conditions.map((c) => ({ ...c, message: redactUrls(c.message) })),
    failure: s.failure ? { reason: s.failure.reason, message: redactUrls(s.failure.message) } : null,
    faults: (s.faults ?? [])
      .filter((f) => !f.clearedAt)
      .map((f) => ({ reason: f.reason, message: redactUrls(f.message), since: f.since, attempt: f.attempt, file: f.file ?? null })),
    source: s.source ? { file: s.source.file, revision: s.source.revision ?? null } : null,
    spec: specSummary(s),
    checkpoints: (s.checkpoints ?? (s.lastCheckpoint ? [s.lastCheckpoint] : [])).map((c) => ({
      id: c.id,
      step: c.step ?? null,
      at: c.at,
      bytes: c.bytes,
      files: c.files,
    })),
    attempts,
    markers: markers(s, events, input.history),
    history: input.history,
    events: shown.map(eventView),
    eventsTotal: events.length,
    log: input.log ? { ...input.log, lines: input.log.lines.map(redactUrls) } : null,
    problems: (input.problems ?? []).map(redactUrls),
  };
}

export function eventView(e: RunEvent): EventView {
  return {
    seq: e.seq,
    at: e.at,
    generation: e.generation,
    attempt: e.attempt,
    kind: e.kind,
    action: e.action,
    result: e.result ?? null,
    message: e.message !== undefined ? redactUrls(e.message) : null,
    requestId: e.requestId ?? null,
  };
}

/** `A -> B` transition events: the phase entered, or undefined. */
function entered(e: RunEvent): string | undefined {
  if (e.kind !== 'transition') return undefined;
  const m = /->\s*([A-Za-z]+)/.exec(e.action);
  return m?.[1];
}

/**
 * One entry per attempt that had an instance, oldest first. The phases come from the transition
 * events of that attempt; an attempt starts at its first event (or its instance's launch).
 */
export function attemptViews(s: RunStatus, events: readonly RunEvent[]): AttemptView[] {
  const keys = new Map<string, { generation: number; attempt: number }>();
  for (const i of s.instances) keys.set(`${i.generation}/${i.attempt}`, { generation: i.generation, attempt: i.attempt });
  if (s.attempt > 0 && !['Completed', 'Failed', 'Suspended', 'Deleted', 'Pending'].includes(s.phase)) {
    keys.set(`${s.generation}/${s.attempt}`, { generation: s.generation, attempt: s.attempt });
  }
  const out: AttemptView[] = [];
  for (const { generation, attempt } of [...keys.values()].sort((a, b) => a.generation - b.generation || a.attempt - b.attempt)) {
    const instance = s.instances.filter((i) => i.generation === generation && i.attempt === attempt).at(-1);
    const own = events.filter((e) => e.generation === generation && e.attempt === attempt);
    const phases: AttemptView['phases'] = [];
    for (const e of own) {
      const phase = entered(e);
      if (!phase) continue;
      const last = phases.at(-1);
      if (last && last.phase === phase) continue;
      if (last) last.end = e.at;
      phases.push({ phase, start: e.at, end: null });
    }
    const start = instance?.launchedAt ?? own[0]?.at ?? s.updatedAt;
    const end = instance?.endedAt ?? null;
    const last = phases.at(-1);
    // A settled phase (Completed, Failed…) is a moment, not a span: it ends where it starts.
    if (last && last.end === null && (end !== null || ['Completed', 'Failed', 'Suspended'].includes(last.phase))) last.end = end ?? last.start;
    out.push({
      generation,
      attempt,
      instanceId: instance?.id ?? null,
      instanceType: instance?.type ?? null,
      market: instance?.market ?? null,
      zone: instance?.zone ?? null,
      start: phases[0] && phases[0].start < start ? phases[0].start : start,
      end,
      endReason: instance?.endReason ? redactUrls(instance.endReason) : null,
      // The ledger prices the attempt over its whole life (issue 12); the instance record is the fallback.
      costUSD: s.ledger?.attempts.find((l) => l.generation === generation && l.attempt === attempt)?.costUSD ?? instance?.costUSD ?? null,
      phases,
    });
  }
  return out;
}

/**
 * Interruptions, resumes and the end, from the transition events, at the time of the event. An
 * interruption is marked at the last step the interrupted attempt recorded; a resume at the first
 * step the next attempt recorded (the checkpoint it restored, plus one). Between the two lie the
 * steps the interruption made the job redo.
 */
export function markers(s: RunStatus, events: readonly RunEvent[], history: readonly SeriesView[]): MarkerView[] {
  const out: MarkerView[] = [];
  const series = (g: number, a: number) => history.find((h) => h.generation === g && h.attempt === a)?.points ?? [];
  const interrupted = new Set<string>();
  for (const e of events) {
    const phase = entered(e);
    if (!phase) continue;
    const key = `${e.generation}/${e.attempt}`;
    if (phase === 'Interrupted') {
      interrupted.add(key);
      // Where its curve ends: the job may train on for a step or two while it saves on the notice.
      const before = series(e.generation, e.attempt).at(-1);
      // What the ledger measured for it (issue 12): time from the notice to training again, steps redone.
      const cost = s.ledger?.interruptions.find((i) => i.generation === e.generation && i.attempt === e.attempt);
      const measured = [
        cost?.recoverySeconds !== undefined ? `training again ${Math.round(cost.recoverySeconds)}s after the notice` : '',
        cost?.stepsRedone !== undefined ? `${cost.stepsRedone} steps redone` : '',
      ].filter(Boolean);
      out.push({
        kind: 'interrupted',
        at: e.at,
        generation: e.generation,
        attempt: e.attempt,
        step: before?.step ?? null,
        message: `attempt ${e.attempt} interrupted${e.message ? ` (${redactUrls(e.message)})` : ''}${measured.length ? `; ${measured.join(', ')}` : ''}`,
      });
    } else if (phase === 'Training' && interrupted.has(`${e.generation}/${e.attempt - 1}`) && !out.some((m) => m.kind === 'resumed' && m.attempt === e.attempt && m.generation === e.generation)) {
      const first = series(e.generation, e.attempt)[0];
      out.push({
        kind: 'resumed',
        at: e.at,
        generation: e.generation,
        attempt: e.attempt,
        step: first?.step ?? null,
        message: `attempt ${e.attempt} training again${first ? ` from step ${first.step}` : ''}`,
      });
    } else if (phase === 'Completed' || phase === 'Failed' || phase === 'Suspended') {
      const last = series(e.generation, e.attempt).at(-1);
      out.push({
        kind: phase.toLowerCase() as MarkerView['kind'],
        at: e.at,
        generation: e.generation,
        attempt: e.attempt,
        step: last?.step ?? null,
        message: `${phase.toLowerCase()} on attempt ${e.attempt}${e.message ? ` (${redactUrls(e.message)})` : ''}`,
      });
    }
  }
  return out;
}

/** The spec as `describe` summarises it: env and secrets by name only, never a value. */
function specSummary(s: RunStatus): Array<[string, string]> {
  const spec = s.spec;
  const rows: Array<[string, string]> = [
    ['Provider', spec.provider],
    ['Code', spec.code.path],
    ['Setup', setupCommand(spec) ?? '(none)'],
    ['Run', spec.run],
  ];
  const cache = setupCache(spec);
  if (cache) rows.splice(3, 0, ['Setup cache', `${cache.paths.join(', ')} keyed by ${cache.key.join(', ')}`]);
  if (spec.provider === 'aws') {
    const r = spec.resources;
    rows.push(['Instance types', r.instanceTypes.join(', ')]);
    rows.push(['Market', r.market + (r.maxSpotPrice !== undefined ? ` (max $${r.maxSpotPrice}/h)` : '')]);
    if (r.region) rows.push(['Region', r.region]);
  }
  rows.push(['Checkpoints', `${spec.checkpoints.dir} every ${spec.checkpoints.syncInterval}, keep ${spec.checkpoints.keep}`]);
  rows.push(['Recovery', `max ${spec.recovery.maxInterruptions} interruptions, ${spec.recovery.maxRetriesOnError} retries on error`]);
  if (spec.budget?.maxCostUSD !== undefined) rows.push(['Budget', `$${spec.budget.maxCostUSD}`]);
  if (Object.keys(spec.env).length) rows.push(['Env', Object.keys(spec.env).join(', ')]);
  if (Object.keys(spec.secrets).length) rows.push(['Secrets', Object.keys(spec.secrets).join(', ')]);
  return rows.map(([k, v]) => [k, redactUrls(v)]);
}
