// Object keys of the shared state store, relative to `s3://bucket/prefix/`:
//
//   state/format.json                                  layout version, written by the first controller
//   state/runs/<run>/status.json                       {format, fence: {holder, epoch}, writeId, status}
//   state/runs/<run>/events/<seq:12>-<idhash:16>.json  one immutable object per event
//   state/leases/<run>.json                            {holder, epoch, acquiredAt, renewedAt, expiresAt, ttlMs}
//   state/archive/<run>-<uid>/…                        a deleted run's status and events, kept as history
import { createHash } from 'node:crypto';

export const STATE_FORMAT = { format: 'runctl-state', version: 1 } as const;
export const FORMAT_KEY = 'state/format.json';
export const RUNS_PREFIX = 'state/runs/';
export const ARCHIVE_PREFIX = 'state/archive/';
/** Lists `state/runs/` with this delimiter: status keys come back, each run's events roll up into one prefix. */
export const EVENTS_DELIMITER = '/events/';

const RUN_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;

export function assertRunName(run: string): void {
  if (!RUN_NAME.test(run)) {
    throw new Error(`invalid run name ${JSON.stringify(run)} for the state store: use letters, digits, '.', '-' or '_', starting with a letter or digit`);
  }
}

export function runPrefix(run: string): string {
  assertRunName(run);
  return `${RUNS_PREFIX}${run}/`;
}

export function statusKey(run: string): string {
  return `${runPrefix(run)}status.json`;
}

export function eventsPrefix(run: string): string {
  return `${runPrefix(run)}events/`;
}

/**
 * Zero-padded seq first, so listing order is log order; a hash of the id second, so the same event
 * always lands on the same key and writing it twice is a no-op (If-None-Match: *).
 */
export function eventKey(run: string, seq: number, id: string): string {
  if (!Number.isSafeInteger(seq) || seq < 0) throw new Error(`event ${JSON.stringify(id)} of run ${run} has seq ${seq}: expected a whole number ≥ 0`);
  const hash = createHash('sha256').update(id).digest('hex').slice(0, 16);
  return `${eventsPrefix(run)}${String(seq).padStart(12, '0')}-${hash}.json`;
}

export function leaseKey(run: string): string {
  assertRunName(run);
  return `state/leases/${run}.json`;
}

/** The run a `state/runs/<run>/status.json` key belongs to, or undefined for any other key. */
export function runOfStatusKey(key: string): string | undefined {
  const m = /^state\/runs\/([^/]+)\/status\.json$/.exec(key);
  return m && m[1] && RUN_NAME.test(m[1]) ? m[1] : undefined;
}

/**
 * Archive folder for one incarnation of a run, named by its uid: stable, so a deletion that is
 * retried lands in the same place, and never shared by two incarnations of one name.
 */
export function archivePrefix(run: string, uid: string): string {
  assertRunName(run);
  if (!/^[A-Za-z0-9-]+$/.test(uid)) throw new Error(`run ${run} has uid ${JSON.stringify(uid)}: not a uid runctl writes`);
  return `${ARCHIVE_PREFIX}${run}-${uid}/`;
}
