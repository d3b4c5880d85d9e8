// The fault channel, controller side: faults the agent lists in its status (AgentStatus.faults)
// become run conditions and events. Agreed across issues 9 and 10: each fault is a condition whose
// type is its reason (status True while listed, False once the agent stops listing it), and each
// appearance is an event. Pure: the clock is an argument; the reconciler appends the events.
import type { AgentFault, AttemptKey } from '../providers/types.js';
import type { Condition, RunFault } from '../state/types.js';

/** A condition to merge, with the time it flipped when that is better known than "now". */
export type WantedCondition = Omit<Condition, 'lastTransitionTime'> & { at?: string };

const REASON = /^[A-Z][A-Za-z0-9]{1,63}$/;
const MAX_MESSAGE = 2_000;

/**
 * The well-formed entries of an agent's `faults` field. The status object comes from storage and
 * may be damaged or written by another agent version: malformed entries are dropped, not trusted.
 */
export function reportedFaults(raw: unknown): AgentFault[] {
  if (!Array.isArray(raw)) return [];
  const out = new Map<string, AgentFault>();
  for (const f of raw) {
    if (!f || typeof f !== 'object') continue;
    const { reason, message, since, file } = f as Record<string, unknown>;
    if (typeof reason !== 'string' || !REASON.test(reason) || typeof message !== 'string') continue;
    if (typeof since !== 'string' || Number.isNaN(Date.parse(since))) continue;
    const fault: AgentFault = { reason, message: message.slice(0, MAX_MESSAGE), since };
    if (typeof file === 'string' && file) fault.file = file;
    out.set(reason, fault);
  }
  return [...out.values()];
}

export interface FaultChange {
  /** The run's fault list after this report. */
  faults: RunFault[];
  /** Faults listed now that were not active before (each is announced by an event). */
  appeared: RunFault[];
  /** Faults active before that the agent no longer lists. */
  cleared: RunFault[];
}

/**
 * Folds one agent report (the whole current list, for attempt `key`) into the run's faults.
 * One entry per reason is kept, so the list stays bounded however often a fault comes and goes.
 */
export function absorbFaults(previous: readonly RunFault[] | undefined, reported: readonly AgentFault[], key: AttemptKey, now: string): FaultChange {
  const byReason = new Map((previous ?? []).map((f) => [f.reason, f]));
  const appeared: RunFault[] = [];
  const cleared: RunFault[] = [];
  const listed = new Set<string>();
  for (const r of reported) {
    listed.add(r.reason);
    const old = byReason.get(r.reason);
    const active = old && !old.clearedAt && old.generation === key.generation && old.attempt === key.attempt;
    const entry: RunFault = { ...r, generation: key.generation, attempt: key.attempt };
    if (active && old.since === r.since) {
      byReason.set(r.reason, entry);
      continue;
    }
    byReason.set(r.reason, entry);
    appeared.push(entry);
  }
  for (const [reason, f] of byReason) {
    if (f.clearedAt || listed.has(reason)) continue;
    const done = { ...f, clearedAt: now };
    byReason.set(reason, done);
    cleared.push(done);
  }
  return { faults: [...byReason.values()], appeared, cleared };
}

/** The condition each fault stands for: True while the agent lists it, False once cleared. */
export function faultConditions(faults: readonly RunFault[] | undefined): WantedCondition[] {
  return (faults ?? []).map((f) =>
    f.clearedAt
      ? {
          type: f.reason,
          status: 'False',
          reason: 'Cleared',
          message: `no longer reported by the agent of attempt ${f.attempt} since ${f.clearedAt}; it was: ${firstLine(f.message)}`,
          at: f.clearedAt,
        }
      : {
          type: f.reason,
          status: 'True',
          reason: f.reason,
          message: f.file ? `${f.message} (file: ${f.file})` : f.message,
          at: f.since,
        },
  );
}

function firstLine(text: string): string {
  return text.split('\n').find((l) => l.trim() !== '') ?? text;
}
