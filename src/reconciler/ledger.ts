// The ledger of a run (issue 12): per attempt, when it was launched, ready, set up, first trained,
// noticed, its final checkpoint safe, and ended, and what it cost; per interruption, the time from
// the notice to training again and the steps redone. Pure: derived from the run's event log and
// its instance records, with the clock as an argument, so `status`, `describe`, the budget and the
// metrics all read the same figures and a test can recompute them from the events.
//
// Which event marks what (the reconciler writes them, src/reconciler/reconcile.ts):
//   launched            the attempt's instance record (`launchedAt`), else its `launch` effect event
//   ready               transition on INSTANCE_READY (the instance can receive the agent)
//   setup started       transition on AGENT_INSTALLING
//   set up              the agent's `setup` observation event: restored from the setup cache or run
//   first trained       transition on AGENT_TRAINING: data.agentAt (the job's start on the instance's
//                       clock, as its agent reported it) when present, else the transition's time;
//                       without one, data.jobStartedAt of the attempt's notice or end (a job no poll
//                       saw training)
//   noticed             transition on SPOT_NOTICE or INSTANCE_GONE (data.step: progress then); a
//                       notice the agent reported is dated data.agentAt, when it began stopping the job
//   final checkpoint    the `final checkpoint` observation (data.safe, data.checkpointStep, data.lastStep)
//   restored            the `restored checkpoint` observation of the next attempt (data.step)
//   ended               the instance record's `endedAt`
// Transitions are matched on the machine event (data.event) and the attempt they name, never on
// phase names, so states added to the machine (prelaunch) do not change what is measured.
import type { MarketKind } from '../providers/types.js';
import type { InstanceRecord, RunEvent } from '../state/types.js';
import { instanceCost, roundUSD } from './ledger-cost.js';

/** How an attempt's `setup` went, from the setup-cache events (absent: not reported). */
export interface SetupRecord {
  /** restored: from the setup cache, setup not run; rebuilt: setup ran (cache missing, stale or corrupt); ran: no cache configured. */
  cache: 'restored' | 'rebuilt' | 'ran';
  /** Seconds the restore or the setup took. */
  seconds?: number;
  /** Seconds the restore saved against running setup, when known. */
  savedSeconds?: number;
}

/** The moments of one attempt (ISO times), as the event log shows them. */
export interface AttemptTimeline {
  generation: number;
  attempt: number;
  instanceId?: string;
  launchedAt?: string;
  readyAt?: string;
  setupStartedAt?: string;
  setup?: SetupRecord;
  firstTrainedAt?: string;
  noticedAt?: string;
  /** What the notice said (e.g. Server.SpotInstanceTermination, an instance-retirement event). */
  noticeReason?: string;
  /** Training progress (step) when the notice was seen. */
  stepAtNotice?: number;
  /** The last step the attempt reported before it stopped (at its final sync). */
  lastStep?: number;
  /** When the reconciler saw the final checkpoint safe in storage; `finalCheckpointSafe` false: it was not. */
  finalCheckpointAt?: string;
  finalCheckpointSafe?: boolean;
  /** The checkpoint the attempt restored before its job started, and the step it holds. */
  restored?: { id: string; step?: number };
  endedAt?: string;
  endReason?: string;
}

/** One attempt of the ledger: its timeline and its cost. USD amounts; unknown ones absent with a reason. */
export interface AttemptLedger extends AttemptTimeline {
  type?: string;
  zone?: string;
  market?: MarketKind;
  /** Billed seconds (from launch to end; at least EC2's 60-second minimum), once every instance of the attempt ended. */
  seconds?: number;
  costUSD?: number;
  /** Why costUSD is absent (the price could not be had). */
  costUnknown?: string;
  /** The billed price in force now or at its end, USD/hour. */
  usdPerHour?: number;
  /** The same seconds at the on-demand price of the same type and region. */
  onDemandUSD?: number;
  /** onDemandUSD - costUSD, for spot attempts whose both prices are known. */
  savingsUSD?: number;
}

/** One interruption: what it cost in time and in steps. */
export interface InterruptionLedger {
  generation: number;
  /** The interrupted attempt. */
  attempt: number;
  /** The attempt that took over. */
  nextAttempt?: number;
  noticedAt: string;
  reason?: string;
  /** When the next attempt's job was training again. */
  trainingAgainAt?: string;
  /** Seconds from the notice to training again. */
  recoverySeconds?: number;
  /** Steps trained again: the interrupted attempt's last step minus the step of the checkpoint the next restored. */
  stepsRedone?: number;
  /** Each leg of the recovery, in seconds, where both ends are known. */
  legs?: {
    /** Notice to final checkpoint safe. */
    finalCheckpoint?: number;
    /** Notice to the next attempt's instance launched (negative never: a prelaunch counts from the notice). */
    launch?: number;
    /** Next instance launched to ready. */
    boot?: number;
    /** Ready to setup started (code shipped, agent started, checkpoint restore began). */
    sync?: number;
    /** Setup started to training (setup or its cache restore, then the checkpoint restore). */
    setup?: number;
  };
}

export interface RunLedger {
  attempts: AttemptLedger[];
  interruptions: InterruptionLedger[];
  /** Total of the known costs (USD). */
  costUSD: number;
  /** Total on-demand equivalent of the attempts whose on-demand price is known. */
  onDemandUSD?: number;
  /** Total saved against on-demand (spot attempts whose both prices are known). */
  savingsUSD?: number;
  /** Why some costs are not counted, one line per attempt; empty when every cost is known. */
  unknown: string[];
  /** Seconds from notice to training again, summed over the interruptions that resumed. */
  recoverySeconds: number;
  stepsRedone: number;
}

const NOTICE_EVENTS = new Set(['SPOT_NOTICE', 'INSTANCE_GONE']);

/** The moments of every attempt, from the run's event log (any order; duplicates ignored). */
export function timelineFromEvents(events: readonly RunEvent[]): AttemptTimeline[] {
  const byKey = new Map<string, AttemptTimeline>();
  const get = (generation: number, attempt: number): AttemptTimeline => {
    const key = `${generation}/${attempt}`;
    let t = byKey.get(key);
    if (!t) byKey.set(key, (t = { generation, attempt }));
    return t;
  };
  const sorted = [...events].sort((a, b) => Date.parse(a.at) - Date.parse(b.at) || a.seq - b.seq);
  for (const e of sorted) {
    const data = e.data ?? {};
    const generation = num(data.generation) ?? e.generation;
    const attempt = num(data.attempt) ?? e.attempt;
    if (attempt < 1) continue;
    if (e.kind === 'transition') {
      const t = get(generation, attempt);
      // The moment on the instance when the agent's report caused the transition (reconcile.ts agentMoment).
      const moment = (v: unknown) => (typeof v === 'string' && Number.isFinite(Date.parse(v)) ? v : undefined);
      const agentAt = moment(data.agentAt);
      // A job no look saw training (it ended or was noticed between two polls) still trained from here.
      const jobStartedAt = moment(data.jobStartedAt);
      switch (data.event) {
        case 'INSTANCE_READY':
          t.readyAt ??= e.at;
          break;
        case 'AGENT_INSTALLING':
          t.setupStartedAt ??= e.at;
          break;
        case 'AGENT_TRAINING':
          t.firstTrainedAt ??= agentAt ?? e.at;
          break;
        default:
          // Only a notice to a launched attempt: INSTANCE_GONE also ends Resuming (the old instance
          // released), and that transition already names the next attempt, not launched yet.
          if (NOTICE_EVENTS.has(String(data.event)) && !t.noticedAt && t.launchedAt !== undefined) {
            t.noticedAt = agentAt ?? e.at;
            if (e.message) t.noticeReason = e.message;
            const step = num(data.step);
            if (step !== undefined) t.stepAtNotice = step;
          }
      }
      if (jobStartedAt) t.firstTrainedAt ??= jobStartedAt;
    } else if (e.kind === 'effect' && e.action === 'launch' && (e.result === 'ok' || e.result === 'adopted')) {
      const t = get(generation, attempt);
      t.launchedAt ??= e.at;
      if (typeof data.instanceId === 'string') t.instanceId ??= data.instanceId;
    } else if (e.kind === 'observation' && e.action === 'final checkpoint') {
      const t = get(generation, attempt);
      if (t.finalCheckpointAt === undefined) {
        t.finalCheckpointAt = typeof data.safeAt === 'string' ? data.safeAt : e.at;
        t.finalCheckpointSafe = data.safe === true;
        const last = num(data.lastStep);
        if (last !== undefined) t.lastStep = last;
      }
    } else if (e.kind === 'observation' && e.action === 'restored checkpoint' && typeof data.checkpoint === 'string') {
      const t = get(generation, attempt);
      const step = num(data.step);
      t.restored ??= step === undefined ? { id: data.checkpoint } : { id: data.checkpoint, step };
    } else if (e.kind === 'observation' && e.action.startsWith('setup ')) {
      const setup = setupOf(data);
      if (setup) get(generation, attempt).setup ??= setup;
    }
  }
  return [...byKey.values()].filter((t) => t.launchedAt !== undefined).sort((a, b) => a.generation - b.generation || a.attempt - b.attempt);
}

/** A setup-cache event's data (`cache`: restored | rebuilt | ran; `seconds`; `savedSeconds`). */
function setupOf(data: Record<string, unknown>): SetupRecord | undefined {
  const cache = data.cache;
  if (cache !== 'restored' && cache !== 'rebuilt' && cache !== 'ran') return undefined;
  const out: SetupRecord = { cache };
  const seconds = num(data.seconds);
  const saved = num(data.savedSeconds);
  if (seconds !== undefined) out.seconds = seconds;
  if (saved !== undefined) out.savedSeconds = saved;
  return out;
}

/**
 * The ledger from the attempts' timelines and the run's instance records, costed at `now`.
 * `timeline` may be a previous ledger's attempts: only their moments are read, so a ledger can be
 * re-costed without reading the event log again.
 */
export function buildLedger(timeline: readonly AttemptTimeline[], instances: readonly InstanceRecord[], now: number): RunLedger {
  const attempts: AttemptLedger[] = timeline.map((t) => {
    const moments = timelineOnly(t);
    const records = instances.filter((i) => i.generation === t.generation && i.attempt === t.attempt);
    if (records.length === 0) return moments;
    const first = records.reduce((a, b) => (Date.parse(a.launchedAt) <= Date.parse(b.launchedAt) ? a : b));
    const out: AttemptLedger = { ...moments, instanceId: first.id, launchedAt: first.launchedAt };
    if (first.type) out.type = first.type;
    if (first.zone) out.zone = first.zone;
    if (first.market) out.market = first.market;
    const ended = records.every((r) => r.endedAt) ? records.map((r) => r.endedAt as string).sort().at(-1) : undefined;
    if (ended) {
      out.endedAt = ended;
      const last = records.find((r) => r.endedAt === ended);
      if (last?.endReason) out.endReason = last.endReason;
    }
    let seconds = 0;
    let cost = 0;
    let onDemand = 0;
    let onDemandKnown = true;
    const unknown: string[] = [];
    for (const r of records) {
      const c = instanceCost(r, now);
      seconds += c.seconds;
      if (c.costUSD === undefined) unknown.push(`${r.id}: ${c.unknown}`);
      else cost += c.costUSD;
      if (c.onDemandUSD === undefined) onDemandKnown = false;
      else onDemand += c.onDemandUSD;
      if (c.usdPerHour !== undefined) out.usdPerHour = c.usdPerHour;
    }
    // Only once ended: a live attempt's seconds would change the record on every pass.
    if (ended) out.seconds = Math.round(seconds * 1000) / 1000;
    if (unknown.length === 0) out.costUSD = roundUSD(cost);
    else out.costUnknown = unknown.join('; ');
    if (onDemandKnown) {
      out.onDemandUSD = roundUSD(onDemand);
      if (out.costUSD !== undefined && out.market === 'spot') out.savingsUSD = roundUSD(onDemand - out.costUSD);
    }
    return out;
  });

  const interruptions: InterruptionLedger[] = [];
  for (const a of attempts) {
    if (!a.noticedAt) continue;
    const next = attempts.find((b) => b.generation === a.generation && b.attempt > a.attempt);
    const i: InterruptionLedger = { generation: a.generation, attempt: a.attempt, noticedAt: a.noticedAt };
    if (a.noticeReason) i.reason = a.noticeReason;
    const notice = Date.parse(a.noticedAt);
    const legs: NonNullable<InterruptionLedger['legs']> = {};
    if (a.finalCheckpointAt && a.finalCheckpointSafe) legs.finalCheckpoint = secondsBetween(notice, a.finalCheckpointAt);
    if (next) {
      i.nextAttempt = next.attempt;
      if (next.launchedAt) legs.launch = Math.max(0, secondsBetween(notice, next.launchedAt));
      if (next.launchedAt && next.readyAt) legs.boot = secondsBetween(Math.max(notice, Date.parse(next.launchedAt)), next.readyAt);
      if (next.readyAt && next.setupStartedAt) legs.sync = secondsBetween(Date.parse(next.readyAt), next.setupStartedAt);
      if (next.setupStartedAt && next.firstTrainedAt) legs.setup = secondsBetween(Date.parse(next.setupStartedAt), next.firstTrainedAt);
      if (next.firstTrainedAt) {
        i.trainingAgainAt = next.firstTrainedAt;
        i.recoverySeconds = secondsBetween(notice, next.firstTrainedAt);
        const reached = Math.max(a.stepAtNotice ?? -Infinity, a.lastStep ?? -Infinity);
        if (Number.isFinite(reached)) {
          // No checkpoint restored (none was published): every step is trained again.
          const from = next.restored ? next.restored.step : 0;
          if (from !== undefined) i.stepsRedone = Math.max(0, reached - from);
        }
      }
    }
    if (Object.keys(legs).length > 0) i.legs = legs;
    interruptions.push(i);
  }

  const known = attempts.filter((a) => a.costUSD !== undefined);
  const withOnDemand = attempts.filter((a) => a.onDemandUSD !== undefined);
  const withSavings = attempts.filter((a) => a.savingsUSD !== undefined);
  const ledger: RunLedger = {
    attempts,
    interruptions,
    costUSD: roundUSD(known.reduce((s, a) => s + (a.costUSD as number), 0)),
    unknown: attempts.filter((a) => a.costUnknown).map((a) => `attempt ${a.attempt}: ${a.costUnknown}`),
    recoverySeconds: round3(interruptions.reduce((s, i) => s + (i.recoverySeconds ?? 0), 0)),
    stepsRedone: interruptions.reduce((s, i) => s + (i.stepsRedone ?? 0), 0),
  };
  if (withOnDemand.length > 0) ledger.onDemandUSD = roundUSD(withOnDemand.reduce((s, a) => s + (a.onDemandUSD as number), 0));
  if (withSavings.length > 0) ledger.savingsUSD = roundUSD(withSavings.reduce((s, a) => s + (a.savingsUSD as number), 0));
  return ledger;
}

const TIMELINE_KEYS: readonly (keyof AttemptTimeline)[] = [
  'generation',
  'attempt',
  'instanceId',
  'launchedAt',
  'readyAt',
  'setupStartedAt',
  'setup',
  'firstTrainedAt',
  'noticedAt',
  'noticeReason',
  'stepAtNotice',
  'lastStep',
  'finalCheckpointAt',
  'finalCheckpointSafe',
  'restored',
  'endedAt',
  'endReason',
];

/** Only the moments of an attempt (a previous ledger entry's costs dropped). */
export function timelineOnly(t: AttemptTimeline): AttemptTimeline {
  const out: Record<string, unknown> = {};
  for (const k of TIMELINE_KEYS) if (t[k] !== undefined) out[k] = t[k];
  return out as unknown as AttemptTimeline;
}

function secondsBetween(fromMs: number, to: string): number {
  return round3((Date.parse(to) - fromMs) / 1000);
}

function round3(n: number): number {
  return Math.round(n * 1000) / 1000;
}

function num(v: unknown): number | undefined {
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
}
