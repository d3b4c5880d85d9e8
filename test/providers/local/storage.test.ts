// The file:// storage as the local provider reads it: log cursors, published checkpoints only,
// stop requests in the agent's format, and content-addressed bundles that copy nothing twice and
// are cleaned up once unused.
import { appendFile, mkdir, mkdtemp, readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { shipBundle } from '../../../src/providers/local/deploy.js';
import { createLocalProvider } from '../../../src/providers/local/index.js';
import { LOG_CHUNK_BYTES, LocalStorage } from '../../../src/providers/local/storage.js';
import { TerminalError } from '../../../src/providers/types.js';
import { spec } from './helpers.js';

let dir: string;
let storage: LocalStorage;
const key = { run: 'r', generation: 2, attempt: 3 };

beforeEach(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'runctl-storage-'));
  storage = new LocalStorage(path.join(dir, 'store'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function segment(name: string, text: string): Promise<string> {
  const file = path.join(storage.root, 'runs', 'r', 'g2', 'a3', 'logs', name);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, text);
  return file;
}

describe('readLogs', () => {
  it('reads every segment in order and continues from its cursor, also inside a segment that grew', async () => {
    expect(await storage.readLogs(key)).toEqual({ attempt: 3, cursor: '', text: '' });
    await segment('00000001.log', 'one\n');
    const growing = await segment('00000002.log', 'two\n');
    const first = await storage.readLogs(key);
    expect(first.text).toBe('one\ntwo\n');
    expect(await storage.readLogs(key, first.cursor)).toMatchObject({ text: '', cursor: first.cursor });

    await appendFile(growing, 'two and a half\n');
    await segment('00000003.log', 'three\n');
    const second = await storage.readLogs(key, first.cursor);
    expect(second.text).toBe('two and a half\nthree\n');
    expect(first.text + second.text).toBe('one\ntwo\ntwo and a half\nthree\n');
  });

  it('returns large logs in bounded chunks cut at line ends', async () => {
    const line = `${'x'.repeat(99)}\n`;
    const big = line.repeat(Math.ceil((LOG_CHUNK_BYTES * 1.5) / line.length));
    await segment('00000001.log', big);
    const a = await storage.readLogs(key);
    expect(a.text.length).toBeLessThanOrEqual(LOG_CHUNK_BYTES);
    expect(a.text.endsWith('\n')).toBe(true);
    const b = await storage.readLogs(key, a.cursor);
    expect(a.text + b.text).toBe(big);
  });

  it('skips segments stored before `since`, moving the cursor past them', async () => {
    const old = await segment('00000001.log', 'old\n');
    await segment('00000002.log', 'new\n');
    const hourAgo = new Date(Date.now() - 3_600_000);
    await utimes(old, hourAgo, hourAgo);
    const recent = await storage.readLogs(key, undefined, { since: new Date(Date.now() - 60_000) });
    expect(recent.text).toBe('new\n');
    expect(await storage.readLogs(key, recent.cursor)).toMatchObject({ text: '' });
    expect((await storage.readLogs(key, undefined, { since: new Date(Date.now() - 7_200_000) })).text).toBe('old\nnew\n');
  });

  it('rejects a cursor it did not make', async () => {
    await expect(storage.readLogs(key, 'logs/00000001.log')).rejects.toThrow(TerminalError);
  });
});

describe('checkpoints and control', () => {
  it('latestCheckpoint skips a newer checkpoint whose manifest is not published yet', async () => {
    const base = path.join(storage.root, 'runs', 'r', 'g2', 'checkpoints');
    await mkdir(path.join(base, '00000001'), { recursive: true });
    await writeFile(path.join(base, '00000001', 'MANIFEST.json'), JSON.stringify({ id: '00000001', step: 40, files: [] }));
    await mkdir(path.join(base, '00000002'), { recursive: true });
    await writeFile(path.join(base, '00000002', 'w.json'), '{}');
    expect(await storage.latestCheckpoint('r', 2)).toMatchObject({ id: '00000001', step: 40 });
    expect(await storage.latestCheckpoint('r', 9)).toBeUndefined();
  });

  it('writes the stop request the agent polls for', async () => {
    await storage.writeStopRequest(key, 'new-generation');
    const doc = JSON.parse(await readFile(path.join(storage.root, 'runs', 'r', 'g2', 'a3', 'control.json'), 'utf8'));
    expect(doc).toMatchObject({ action: 'stop', reason: 'new-generation', run: 'r', generation: 2, attempt: 3 });
  });

  it('uses spec storage only when it is a file:// URL', () => {
    expect(LocalStorage.forSpec(spec(), '/default/store').root).toBe('/default/store');
    expect(LocalStorage.forSpec(spec({ checkpoints: { storage: 'file:///data/runctl' } }), '/x').url).toBe('file:///data/runctl');
    expect(() => LocalStorage.forSpec(spec({ checkpoints: { storage: 's3://b/p' } }), '/x')).toThrow(TerminalError);
  });
});

describe('code bundles', () => {
  it('stores a bundle under its content address once; unchanged code copies 0 bytes', async () => {
    const repo = path.join(dir, 'repo');
    await mkdir(path.join(repo, 'code'), { recursive: true });
    await writeFile(path.join(repo, 'code', 'train.py'), 'print("hi")\n');
    const code = { path: 'code', exclude: [] };
    const first = await shipBundle(repo, code, storage, path.join(dir, 'scratch'));
    expect(first.copiedBytes).toBeGreaterThan(0);
    const stored = path.join(storage.root, first.key);
    const before = await stat(stored);

    const again = await shipBundle(repo, code, storage, path.join(dir, 'scratch'));
    expect(again).toEqual({ ...first, copiedBytes: 0 });
    expect((await stat(stored)).mtimeMs).toBe(before.mtimeMs);

    await writeFile(path.join(repo, 'code', 'train.py'), 'print("changed")\n');
    const changed = await shipBundle(repo, code, storage, path.join(dir, 'scratch'));
    expect(changed.sha256).not.toBe(first.sha256);
    expect(changed.copiedBytes).toBeGreaterThan(0);
  });

  it('prune deletes only old, unreferenced bundles of runctl’s key shape in the spec’s storage', async () => {
    const provider = createLocalProvider({ repoRoot: dir, controller: 'test' });
    const bundles = path.join(storage.root, 'bundles');
    await mkdir(bundles, { recursive: true });
    const [kept, old, young] = ['a', 'b', 'c'].map((c) => c.repeat(64)) as [string, string, string];
    const dayAgo = new Date(Date.now() - 2 * 24 * 3600 * 1000);
    for (const name of [`${kept}.tar.gz`, `${old}.tar.gz`, `${young}.tar.gz`, 'notes.txt']) {
      await writeFile(path.join(bundles, name), 'x');
      if (!name.startsWith(young)) await utimes(path.join(bundles, name), dayAgo, dayAgo);
    }
    const inStorage = spec({ checkpoints: { storage: storage.url } });
    const result = await provider.pruneBundles(inStorage, new Set([kept]), { minAgeMs: 24 * 3600 * 1000 });
    expect(result).toEqual({ deleted: [`bundles/${old}.tar.gz`], kept: 3 });
    expect((await readdir(bundles)).sort()).toEqual([`${kept}.tar.gz`, `${young}.tar.gz`, 'notes.txt']);
    // Nothing stored yet is nothing to do, not an error.
    const empty = spec({ checkpoints: { storage: `file://${path.join(dir, 'empty')}` } });
    expect(await provider.pruneBundles(empty, new Set(), { minAgeMs: 0 })).toEqual({ deleted: [], kept: 0 });
  });

  it('says which code.path is wrong', async () => {
    await expect(shipBundle(dir, { path: 'nope', exclude: [] }, storage, path.join(dir, 'scratch'))).rejects.toThrow(/spec\.code: code\.path "nope"/);
  });
});
