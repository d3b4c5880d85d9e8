// Code bundles in S3 are content-addressed (bundles/<sha256>.tar.gz): unchanged code uploads
// nothing, and a bundle no run references any more can be deleted. Deletion only ever touches keys
// of exactly that shape under runctl's own prefix, and spares recent uploads (another controller,
// e.g. CI, may have just uploaded a bundle for a run this one does not know yet).
import { bundleKey } from '../../agent/layout.js';
import { pruneSetupCacheObjects, unusedBundles } from '../bundle-gc.js';
import type { BundlePruneResult } from '../types.js';
import type { S3Storage } from './storage.js';

/** Uploads the bundle unless an object with its hash already exists. Returns the bytes uploaded (0 when present). */
export async function ensureBundle(storage: S3Storage, bundle: { sha256: string; file: string; bytes: number }): Promise<number> {
  const key = bundleKey(bundle.sha256);
  if (await storage.exists(key)) return 0;
  await storage.uploadFile(key, bundle.file, 'application/gzip');
  return bundle.bytes;
}

/** Deletes the bundles under runctl's `bundles/` prefix that `unusedBundles` condemns. */
export async function pruneBundles(storage: S3Storage, referenced: ReadonlySet<string>, minAgeMs: number, now = Date.now()): Promise<BundlePruneResult> {
  const objects = await storage.list('bundles/');
  const { doomed, kept } = unusedBundles(
    objects.map((o) => ({ key: o.Key, modifiedAt: o.LastModified })),
    referenced,
    minAgeMs,
    now,
  );
  if (doomed.length > 0) await storage.deleteMany(doomed);
  return { deleted: doomed, kept };
}

/**
 * Deletes setup cache entries (`setup-cache/<key>.json`) whose key no run holds and archives
 * (`setup-cache/archives/<sha256>.tar.gz`) no kept entry names, older than minAgeMs (bundle-gc.ts).
 */
export async function pruneSetupCaches(storage: S3Storage, referenced: ReadonlySet<string>, minAgeMs: number, now = Date.now()): Promise<BundlePruneResult> {
  return pruneSetupCacheObjects(
    {
      list: async (prefix) => (await storage.list(prefix)).map((o) => ({ key: o.Key, modifiedAt: o.LastModified })),
      read: (key) => storage.getText(key),
      remove: (keys) => storage.deleteMany(keys),
    },
    referenced,
    minAgeMs,
    now,
  );
}
