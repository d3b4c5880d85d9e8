// Reading a run's status record: check its shape before anything trusts it, and upgrade records
// written by an earlier runctl (no uid). A record that fails the check is *unreadable*: it concerns
// that one run only (issue 10, input 5). Stores raise StatusUnreadableError for it; the controller
// leaves the run alone and rebuilds the record from the run's event log (src/reconciler/rebuild.ts).
import { StateCorruptError } from './event-log.js';
import { isUid, legacyUid } from './identity.js';
import { PHASES, type Phase, type RunStatus } from './types.js';

/** A run's status record cannot be used: not JSON, or not the shape runctl writes. */
export class StatusUnreadableError extends StateCorruptError {
  constructor(
    readonly run: string,
    file: string,
    /** What is wrong, e.g. `not valid JSON (the file ends after 812 bytes)`. */
    readonly problem: string,
  ) {
    super(
      `${file}: the status record of run ${run} is unreadable (${problem}); runctl leaves this run alone until the record is rebuilt: ` +
        '`runctl reconcile` rebuilds it from the run\'s event log and the instances it finds, or says what else to do',
      file,
      1,
    );
    this.name = 'StatusUnreadableError';
  }
}

/**
 * Parses `text` as run `run`'s status record. Throws StatusUnreadableError (naming `where`) when it
 * is not JSON or not the shape runctl writes; gives records without a uid their legacy uid.
 */
export function parseStatusRecord(text: string, run: string, where: string): RunStatus {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    const what = text.trim() === '' ? 'the file is empty' : `not valid JSON (${text.length} bytes)`;
    throw new StatusUnreadableError(run, where, what);
  }
  return statusFromRecord(raw, run, where);
}

/** Like parseStatusRecord, for a record already parsed from JSON (the shared store's envelope). */
export function statusFromRecord(raw: unknown, run: string, where: string): RunStatus {
  const problem = shapeProblem(raw, run);
  if (problem) throw new StatusUnreadableError(run, where, problem);
  const status = raw as RunStatus;
  if (status.uid === undefined) return { ...status, uid: legacyUid(status.run, status.createdAt) };
  return status;
}

/** The first way `raw` differs from a RunStatus of run `run`, or undefined when it does not. */
export function shapeProblem(raw: unknown, run: string): string | undefined {
  if (!isObject(raw)) return `expected a JSON object, found ${kind(raw)}`;
  const s = raw;
  if (s.run !== run) return `"run" is ${JSON.stringify(s.run) ?? 'missing'}, expected "${run}"`;
  if (s.uid !== undefined && !isUid(s.uid)) return `"uid" is ${JSON.stringify(s.uid)}, not a uid runctl writes`;
  if (!PHASES.includes(s.phase as Phase)) return `"phase" is ${JSON.stringify(s.phase) ?? 'missing'}, not one of ${PHASES.join(', ')}`;
  for (const field of ['generation', 'observedGeneration', 'attempt', 'interruptions', 'errorRetries', 'eventSeq']) {
    if (!isCount(s[field])) return `"${field}" is ${JSON.stringify(s[field]) ?? 'missing'}, expected a whole number ≥ 0`;
  }
  if (typeof s.costUSD !== 'number' || !Number.isFinite(s.costUSD)) return `"costUSD" is ${JSON.stringify(s.costUSD) ?? 'missing'}, expected a number`;
  if (typeof s.specHash !== 'string') return `"specHash" is ${kind(s.specHash)}, expected a string`;
  for (const field of ['createdAt', 'updatedAt']) {
    if (typeof s[field] !== 'string' || Number.isNaN(Date.parse(s[field] as string))) return `"${field}" is ${JSON.stringify(s[field]) ?? 'missing'}, expected an ISO time`;
  }
  if (!Array.isArray(s.conditions) || !s.conditions.every((c) => isObject(c) && typeof c.type === 'string' && typeof c.status === 'string')) {
    return '"conditions" is not a list of conditions';
  }
  if (!Array.isArray(s.instances) || !s.instances.every((i) => isObject(i) && typeof i.id === 'string' && isCount(i.generation) && isCount(i.attempt) && typeof i.launchedAt === 'string')) {
    return '"instances" is not a list of instance records';
  }
  if (!isObject(s.deadlines)) return `"deadlines" is ${kind(s.deadlines)}, expected an object`;
  const snap = s.snapshot;
  if (!isObject(snap) || !(typeof snap.value === 'string' || isObject(snap.value))) return '"snapshot" is not a machine snapshot (no "value")';
  if (!isObject(snap.context) || !isCount(snap.context.generation) || !isCount(snap.context.attempt) || !isObject(snap.context.limits)) {
    return '"snapshot.context" is not the run machine\'s context';
  }
  const spec = s.spec;
  if (!isObject(spec) || typeof spec.provider !== 'string' || typeof spec.run !== 'string') return '"spec" is not a run spec';
  for (const part of ['code', 'resources', 'checkpoints', 'recovery', 'timeouts']) {
    if (!isObject(spec[part])) return `"spec.${part}" is ${kind(spec[part])}, expected an object`;
  }
  for (const field of ['pending', 'agent', 'lastCheckpoint', 'progress', 'nextSpec', 'source', 'failure', 'fatal', 'launchBlocked']) {
    if (s[field] !== undefined && s[field] !== null && !isObject(s[field])) return `"${field}" is ${kind(s[field])}, expected an object`;
  }
  if (s.outbox !== undefined && (!Array.isArray(s.outbox) || !s.outbox.every((e) => isObject(e) && typeof e.id === 'string'))) return '"outbox" is not a list of events';
  if (isObject(s.pending) && (!Array.isArray(s.pending.effects) || typeof s.pending.transitionId !== 'string' || !isObject(s.pending.snapshotAfter))) {
    return '"pending" is not a recorded intent (transitionId, effects, snapshotAfter)';
  }
  if (isObject(s.nextSpec) && (!isCount(s.nextSpec.generation) || !isObject(s.nextSpec.spec))) return '"nextSpec" is not a pending generation';
  return undefined;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isCount(v: unknown): v is number {
  return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0;
}

function kind(v: unknown): string {
  if (v === undefined) return 'missing';
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  return typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v).slice(0, 40)}`;
}
