// Which stored code bundles may go: shared by the providers so local and aws decide alike. Only
// keys of runctl's exact `bundles/<sha256>.tar.gz` shape are ever candidates, and recent ones are
// spared: another controller (CI's apply, a second checkout) may have just uploaded a bundle for
// a run this controller does not know.
export const BUNDLE_KEY = /^bundles\/([0-9a-f]{64})\.tar\.gz$/;

/** Unused bundles are kept this long after they were stored. */
export const DEFAULT_BUNDLE_MIN_AGE_MS = 24 * 60 * 60 * 1000;

export interface StoredObject {
  key: string;
  /** When the object was last written; undefined counts as just now (kept). */
  modifiedAt?: Date;
}

export function unusedBundles(
  objects: readonly StoredObject[],
  referenced: ReadonlySet<string>,
  minAgeMs: number,
  now = Date.now(),
): { doomed: string[]; kept: number } {
  const doomed: string[] = [];
  let kept = 0;
  for (const o of objects) {
    const sha = BUNDLE_KEY.exec(o.key)?.[1];
    const age = now - (o.modifiedAt?.getTime() ?? now);
    if (!sha || referenced.has(sha) || age < minAgeMs) kept++;
    else doomed.push(o.key);
  }
  return { doomed, kept };
}

// The setup cache (issue 12; src/agent/runctl_agent/setup_cache.py) is cleaned up the same way:
// `setup-cache/<key>.json` entries whose key no run holds, then `setup-cache/archives/<sha256>.tar.gz`
// archives no remaining entry names, each only when stored more than the minimum age ago (an agent
// may have just stored one for a run this controller does not know, or be about to write its entry).
export const SETUP_CACHE_ENTRY_KEY = /^setup-cache\/([0-9a-f]{64})\.json$/;
export const SETUP_CACHE_ARCHIVE_KEY = /^setup-cache\/archives\/([0-9a-f]{64})\.tar\.gz$/;

/**
 * Entries that may go: runctl's own entry keys whose cache key is not in `referenced` and older
 * than `minAgeMs`. `kept` lists the entry keys that stay (their archives must stay too).
 */
export function unusedSetupCacheEntries(
  objects: readonly StoredObject[],
  referenced: ReadonlySet<string>,
  minAgeMs: number,
  now = Date.now(),
): { doomed: string[]; kept: string[] } {
  const doomed: string[] = [];
  const kept: string[] = [];
  for (const o of objects) {
    const key = SETUP_CACHE_ENTRY_KEY.exec(o.key)?.[1];
    if (!key) continue;
    const age = now - (o.modifiedAt?.getTime() ?? now);
    if (referenced.has(key) || age < minAgeMs) kept.push(o.key);
    else doomed.push(o.key);
  }
  return { doomed, kept };
}

/**
 * Archives that may go: runctl's own archive keys not named by a kept entry (`named`: their
 * sha256s) and older than `minAgeMs`. `named` undefined (a kept entry could not be read) keeps
 * every archive this time.
 */
export function unusedSetupCacheArchives(
  objects: readonly StoredObject[],
  named: ReadonlySet<string> | undefined,
  minAgeMs: number,
  now = Date.now(),
): { doomed: string[]; kept: number } {
  const doomed: string[] = [];
  let kept = 0;
  for (const o of objects) {
    const sha = SETUP_CACHE_ARCHIVE_KEY.exec(o.key)?.[1];
    if (!sha) continue;
    const age = now - (o.modifiedAt?.getTime() ?? now);
    if (named === undefined || named.has(sha) || age < minAgeMs) kept++;
    else doomed.push(o.key);
  }
  return { doomed, kept };
}

/** The archive sha256 a setup cache entry names, or undefined when the text is not an entry. */
export function setupCacheArchiveOf(text: string | undefined): string | undefined {
  if (text === undefined) return undefined;
  try {
    const sha = (JSON.parse(text) as { archive?: { sha256?: unknown } }).archive?.sha256;
    return typeof sha === 'string' && /^[0-9a-f]{64}$/.test(sha) ? sha : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Both steps over one storage location: `list(prefix)` lists objects (keys relative to the
 * storage root), `read(key)` an entry's text, `remove(keys)` deletes. Returns the keys deleted
 * and how many setup cache objects were kept.
 */
export async function pruneSetupCacheObjects(
  io: { list(prefix: string): Promise<StoredObject[]>; read(key: string): Promise<string | undefined>; remove(keys: string[]): Promise<void> },
  referenced: ReadonlySet<string>,
  minAgeMs: number,
  now = Date.now(),
): Promise<{ deleted: string[]; kept: number }> {
  const objects = await io.list('setup-cache/');
  const entries = unusedSetupCacheEntries(objects, referenced, minAgeMs, now);
  if (entries.doomed.length > 0) await io.remove(entries.doomed);
  let named: Set<string> | undefined = new Set();
  for (const key of entries.kept) {
    const sha = setupCacheArchiveOf(await io.read(key));
    if (sha === undefined) {
      named = undefined; // an entry being written, or damaged: keep every archive this time
      break;
    }
    named.add(sha);
  }
  const archives = unusedSetupCacheArchives(objects, named, minAgeMs, now);
  if (archives.doomed.length > 0) await io.remove(archives.doomed);
  return { deleted: [...entries.doomed, ...archives.doomed], kept: entries.kept.length + archives.kept };
}
