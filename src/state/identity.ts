// Run identity. A run is its name plus a uid (like Kubernetes' metadata.uid) created when runctl
// first sees it. Everything a run leaves in the world carries the uid — instance tags
// (`runctl:uid`), storage prefixes (`runs/<run>/<uid>/…`), launch idempotency tokens, event ids,
// archive folders — so a run deleted and re-created under the same name never adopts, restores or
// shows anything of its predecessor (issue 10, input 1).
//
// Records written before uids existed are given a *legacy* uid on read: `legacy-<12 hex>`, a hash
// of the run name and its createdAt, so every reader computes the same one before it is persisted.
// A legacy uid stands for what that runctl wrote: instances without a `runctl:uid` tag, storage at
// the un-suffixed `runs/<run>/g<gen>/…` prefix, event ids without the uid. An upgraded run keeps
// finding its instances, checkpoints and logs; a run created after the upgrade never matches them.
import { createHash, randomUUID } from 'node:crypto';

const LEGACY_PREFIX = 'legacy-';
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const LEGACY = /^legacy-[0-9a-f]{12}$/;

/** A new uid: a random (v4) UUID, lowercase, 36 characters. */
export function newUid(): string {
  return randomUUID();
}

/** The uid given to a record written before uids existed (deterministic: name and creation time). */
export function legacyUid(run: string, createdAt: string): string {
  return `${LEGACY_PREFIX}${createHash('sha256').update(`${run}\0${createdAt}`).digest('hex').slice(0, 12)}`;
}

export function isLegacyUid(uid: string): boolean {
  return uid.startsWith(LEGACY_PREFIX);
}

/** A uid runctl could have written: a UUID, or a legacy uid. */
export function isUid(uid: unknown): uid is string {
  return typeof uid === 'string' && (UUID.test(uid) || LEGACY.test(uid));
}

/**
 * The uid as providers see it (tags, storage prefixes, tokens): undefined for a legacy uid, which
 * means "what runctl wrote before uids": untagged instances and the un-suffixed storage prefix.
 */
export function providerUid(uid: string): string | undefined {
  return isLegacyUid(uid) ? undefined : uid;
}

/** The first 8 hex digits of a UUID: enough to tell incarnations apart in names people read. */
export function shortUid(uid: string): string {
  return uid.replace(/^legacy-/, '').slice(0, 8);
}

/**
 * The prefix of a run incarnation's event ids. Legacy runs keep the ids their runctl wrote (so an
 * outbox replayed across the upgrade still de-duplicates); new runs put the uid in every id, so no
 * id of a deleted run is ever taken for one of its successor's.
 */
export function eventIdBase(run: string, uid: string): string {
  return isLegacyUid(uid) ? run : `${run}@${uid}`;
}

/**
 * The events of one incarnation out of a run's log: those carrying its uid, and for a legacy run
 * also those written before uids. A log may hold a deleted predecessor's events when a deletion
 * was cut short (shared store); they are never shown as this run's.
 */
export function eventsOfIncarnation<E extends { uid?: string }>(uid: string, events: readonly E[]): E[] {
  return events.filter((e) => e.uid === uid || (e.uid === undefined && isLegacyUid(uid)));
}
