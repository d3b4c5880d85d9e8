// Code bundles in S3 are content-addressed (bundles/<sha256>.tar.gz): unchanged code uploads
// nothing, and a bundle no run references any more can be deleted. Deletion only ever touches keys
// of exactly that shape under runctl's own prefix, and spares recent uploads (another controller,
// e.g. CI, may have just uploaded a bundle for a run this one does not know yet).
import { bundleKey } from '../../agent/layout.js';
import type { S3Storage } from './storage.js';

const BUNDLE_KEY = /^bundles\/([0-9a-f]{64})\.tar\.gz$/;
export const DEFAULT_BUNDLE_MIN_AGE_MS = 24 * 60 * 60 * 1000;

/** Uploads the bundle unless an object with its hash already exists. Returns the bytes uploaded (0 when present). */
export async function ensureBundle(storage: S3Storage, bundle: { sha256: string; file: string; bytes: number }): Promise<number> {
  const key = bundleKey(bundle.sha256);
  if (await storage.exists(key)) return 0;
  await storage.uploadFile(key, bundle.file, 'application/gzip');
  return bundle.bytes;
}

export interface PruneResult {
  deleted: string[];
  kept: number;
}

export async function pruneBundles(
  storage: S3Storage,
  referenced: Set<string>,
  minAgeMs = DEFAULT_BUNDLE_MIN_AGE_MS,
  now = Date.now(),
): Promise<PruneResult> {
  const objects = await storage.list('bundles/');
  const doomed: string[] = [];
  let kept = 0;
  for (const o of objects) {
    const sha = o.Key.match(BUNDLE_KEY)?.[1];
    const age = now - (o.LastModified?.getTime() ?? now);
    if (!sha || referenced.has(sha) || age < minAgeMs) {
      kept++;
      continue;
    }
    doomed.push(o.Key);
  }
  if (doomed.length > 0) await storage.deleteMany(doomed);
  return { deleted: doomed, kept };
}
