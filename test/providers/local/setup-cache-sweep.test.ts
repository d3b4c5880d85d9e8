// The setup cache's clean-up (issue 12), like code bundles': an entry whose key no run in the
// store holds goes once it is older than the minimum age, then archives no kept entry names; the
// keys runs hold, young objects, a kept entry's archive and anything not of runctl's own key shapes
// stay. Exercised through the local provider on a real storage folder.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { createLocalProvider } from '../../../src/providers/local/index.js';
import { planBundleSweeps } from '../../../src/reconciler/bundle-sweep.js';
import type { RunStatus } from '../../../src/state/types.js';
import { testSpec } from '../../support/runs.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-setup-cache-sweep-'));
afterAll(() => fs.rmSync(root, { recursive: true, force: true }));

const hex = (c: string) => c.repeat(64);
const DAY = 24 * 3600 * 1000;

function put(rel: string, text: string, ageMs: number): void {
  const file = path.join(root, 'storage', rel);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
  const t = new Date(Date.now() - ageMs);
  fs.utimesSync(file, t, t);
}

const entry = (key: string, sha: string) => JSON.stringify({ format: 1, key, archive: { sha256: sha, bytes: 1 } });

describe('setup cache clean-up', () => {
  it('the sweep keeps the key each run in the store holds, per storage location', () => {
    const spec = testSpec({ checkpoints: { storage: 'file:///tmp/s' } });
    const plan = planBundleSweeps([
      { run: 'a', spec, instances: [], setupCache: { generation: 2, key: hex('1') } } as unknown as RunStatus,
      { run: 'b', spec, instances: [] } as unknown as RunStatus,
    ]);
    expect(plan.sweeps.map((s) => [...s.setupCacheKeys])).toEqual([[hex('1')]]);
  });

  it('deletes unreferenced old entries, then archives no kept entry names; nothing else', async () => {
    put(`setup-cache/${hex('1')}.json`, entry(hex('1'), hex('a')), 3 * DAY); // held by a run: kept
    put(`setup-cache/${hex('2')}.json`, entry(hex('2'), hex('b')), 3 * DAY); // nobody's: deleted
    put(`setup-cache/${hex('3')}.json`, entry(hex('3'), hex('c')), 60_000); // nobody's but young: kept
    put(`setup-cache/archives/${hex('a')}.tar.gz`, 'a', 3 * DAY); // named by a kept entry
    put(`setup-cache/archives/${hex('b')}.tar.gz`, 'b', 3 * DAY); // its entry went: deleted
    put(`setup-cache/archives/${hex('c')}.tar.gz`, 'c', 3 * DAY); // named by the young entry
    put(`setup-cache/archives/${hex('d')}.tar.gz`, 'd', 60_000); // young, no entry yet (being stored)
    put('setup-cache/notes.txt', 'not runctl shaped', 3 * DAY);
    put(`bundles/${hex('e')}.tar.gz`, 'a bundle', 3 * DAY);
    const provider = createLocalProvider({ root: path.join(root, 'local'), repoRoot: root, controller: 'test' });
    try {
      const spec = testSpec({ checkpoints: { storage: pathToFileURL(path.join(root, 'storage')).href } });
      const result = await provider.pruneSetupCaches(spec, new Set([hex('1')]), { minAgeMs: DAY });
      expect(result.deleted.sort()).toEqual([`setup-cache/${hex('2')}.json`, `setup-cache/archives/${hex('b')}.tar.gz`]);
      const left = (dir: string) => fs.readdirSync(path.join(root, 'storage', dir)).sort();
      expect(left('setup-cache')).toEqual([`${hex('1')}.json`, `${hex('3')}.json`, 'archives', 'notes.txt']);
      expect(left('setup-cache/archives')).toEqual([`${hex('a')}.tar.gz`, `${hex('c')}.tar.gz`, `${hex('d')}.tar.gz`]);
      expect(left('bundles')).toEqual([`${hex('e')}.tar.gz`]);

      // A kept entry that cannot be read (being written, damaged): no archive is deleted this time.
      put(`setup-cache/${hex('1')}.json`, '{"format": 1, "key": "trunc', 3 * DAY);
      put(`setup-cache/archives/${hex('f')}.tar.gz`, 'f', 3 * DAY);
      const cautious = await provider.pruneSetupCaches(spec, new Set([hex('1')]), { minAgeMs: DAY });
      expect(cautious.deleted).toEqual([]);
      expect(left('setup-cache/archives')).toContain(`${hex('f')}.tar.gz`);
    } finally {
      await provider.close?.();
    }
  });
});
