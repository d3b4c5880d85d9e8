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
