// The tags that make an instance runctl's: every launch carries them (on the instance and its
// volumes, at creation), and observation and adoption find instances by them alone.
import type { AttemptKey } from '../types.js';

export const TAG_RUN = 'runctl:run';
/** The run incarnation (src/state/identity.ts); absent on instances of runs recorded before uids. */
export const TAG_UID = 'runctl:uid';
export const TAG_GENERATION = 'runctl:generation';
export const TAG_ATTEMPT = 'runctl:attempt';
export const TAG_CONTROLLER = 'runctl:controller';

export interface Tag {
  Key?: string;
  Value?: string;
}

export function ownershipTags(key: AttemptKey, controller: string): { Key: string; Value: string }[] {
  return [
    { Key: TAG_RUN, Value: key.run },
    ...(key.uid ? [{ Key: TAG_UID, Value: key.uid }] : []),
    { Key: TAG_GENERATION, Value: String(key.generation) },
    { Key: TAG_ATTEMPT, Value: String(key.attempt) },
    { Key: TAG_CONTROLLER, Value: controller },
    { Key: 'Name', Value: `runctl-${key.run}-g${key.generation}-a${key.attempt}` },
  ];
}

/** The attempt an instance belongs to, from its tags; undefined if the tags are missing or malformed. */
export function attemptFromTags(tags: Tag[] | undefined): AttemptKey | undefined {
  const get = (k: string) => tags?.find((t) => t.Key === k)?.Value;
  const run = get(TAG_RUN);
  const generation = Number(get(TAG_GENERATION));
  const attempt = Number(get(TAG_ATTEMPT));
  if (!run || !Number.isInteger(generation) || !Number.isInteger(attempt)) return undefined;
  const uid = get(TAG_UID);
  return uid ? { run, uid, generation, attempt } : { run, generation, attempt };
}

/** Same run incarnation, generation and attempt (uid included: undefined only matches undefined). */
export function sameAttempt(a: AttemptKey, b: AttemptKey): boolean {
  return a.run === b.run && a.uid === b.uid && a.generation === b.generation && a.attempt === b.attempt;
}
