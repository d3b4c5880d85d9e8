// Following a repository: the commit each spec came from is recorded in status and events, a
// pull on an interval brings new commits, and a failing pull is reported, never fatal.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Controller } from '../../src/reconciler/controller.js';
import { loadDesired } from '../../src/reconciler/desired.js';
import { GitFollower, readRevision, redactUrls, withRevisions } from '../../src/reconciler/git-follow.js';
import { MemoryProvider } from '../support/memory-provider.js';
import { MemoryStore } from '../support/memory-store.js';
import { LONG_TRAINING, spec } from './watch-support.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-git-'));
const saved = { ...process.env };

function git(cwd: string, ...args: string[]): string {
  return execFileSync('git', args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }).trim();
}

function repo(name: string): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(path.join(dir, 'runs'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'code'));
  fs.writeFileSync(path.join(dir, 'code', 'train.py'), 'print(1)\n');
  fs.writeFileSync(path.join(dir, 'runctl.yaml'), 'prune: false\n');
  git(dir, 'init', '-q', '-b', 'main');
  return dir;
}

function commitAll(dir: string, message: string): string {
  git(dir, 'add', '-A');
  git(dir, 'commit', '-q', '-m', message);
  return git(dir, 'rev-parse', 'HEAD');
}

beforeAll(() => {
  Object.assign(process.env, {
    GIT_AUTHOR_NAME: 'test',
    GIT_AUTHOR_EMAIL: 'test@example.com',
    GIT_COMMITTER_NAME: 'test',
    GIT_COMMITTER_EMAIL: 'test@example.com',
    GIT_CONFIG_NOSYSTEM: '1',
    HOME: tmp,
  });
});

afterAll(() => {
  process.env = saved;
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('git revisions', () => {
  it('reads HEAD and marks files with uncommitted changes (modified or untracked) dirty', async () => {
    const dir = repo('rev');
    fs.writeFileSync(path.join(dir, 'runs', 'a.yaml'), spec('a'));
    const head = commitAll(dir, 'a');
    expect(await readRevision(dir)).toEqual({ commit: head, dirty: new Set() });
    fs.writeFileSync(path.join(dir, 'runs', 'a.yaml'), spec('a', { training: '72h' }));
    fs.writeFileSync(path.join(dir, 'runs', 'new.yaml'), spec('b'));
    const rev = (await readRevision(path.join(dir, 'runs')))!;
    expect(rev.commit).toBe(head);
    expect([...rev.dirty].sort()).toEqual([path.join(dir, 'runs', 'a.yaml'), path.join(dir, 'runs', 'new.yaml')]);
    expect(await readRevision(tmp)).toBeUndefined();
  });

  it('records the commit a spec came from in status and in a spec event when its content changes, not for unrelated commits', async () => {
    const dir = repo('events');
    fs.writeFileSync(path.join(dir, 'runs', 'a.yaml'), spec('a'));
    const first = commitAll(dir, 'add a');
    const store = new MemoryStore();
    const provider = new MemoryProvider(LONG_TRAINING, { pollIntervalMs: 20 });
    const controller = new Controller({
      store,
      provider: async () => provider,
      load: async () => withRevisions(await loadDesired([path.join(dir, 'runs')], dir), dir),
      controller: 'git-test',
      repoRoot: dir,
      prune: false,
    });
    try {
      await controller.runOnce();
      expect((await store.getStatus('a'))?.source?.revision).toBe(first);
      expect((await store.readEvents('a')).find((e) => e.action === 'created')?.message).toContain(`at ${first.slice(0, 12)}`);

      fs.writeFileSync(path.join(dir, 'README.md'), 'unrelated\n');
      const unrelated = commitAll(dir, 'unrelated');
      await controller.runOnce();
      expect((await store.getStatus('a'))?.source?.revision).toBe(first);

      fs.writeFileSync(path.join(dir, 'runs', 'a.yaml'), spec('a', { training: '72h' }));
      await controller.runOnce();
      // Edited on top of the unrelated commit, not committed yet.
      expect((await store.getStatus('a'))?.source?.revision).toBe(`${unrelated}-dirty`);
      const second = commitAll(dir, 'a: longer training');
      await controller.runOnce();
      expect((await store.getStatus('a'))?.source?.revision).toBe(second);

      const specEvents = (await store.readEvents('a')).filter((e) => e.kind === 'spec').map((e) => [e.action, e.data?.revision]);
      expect(specEvents).toEqual([
        ['created', first],
        ['updated', `${unrelated}-dirty`],
        ['revision', second],
      ]);
    } finally {
      await controller.stop();
    }
  });
});

describe('GitFollower', () => {
  it('pulls new commits with --ff-only, and reports a failing pull without throwing', async () => {
    const origin = repo('origin');
    fs.writeFileSync(path.join(origin, 'runs', 'a.yaml'), spec('a'));
    commitAll(origin, 'a');
    const host = path.join(tmp, 'host');
    git(tmp, 'clone', '-q', origin, host);
    expect(await GitFollower.check(host)).toBeUndefined();
    expect(await GitFollower.check(path.join(tmp))).toMatch(/^--pull-interval needs the runs in a git checkout/);

    const outcomes: Array<{ ok: boolean; before?: string; after?: string; message?: string }> = [];
    const follower = new GitFollower({ repoRoot: host, intervalMs: 60_000, onPull: (o) => void outcomes.push(o) });
    const nothingNew = await follower.pull();
    expect(nothingNew.ok && nothingNew.before === nothingNew.after).toBe(true);

    fs.writeFileSync(path.join(origin, 'runs', 'b.yaml'), spec('b'));
    const pushed = commitAll(origin, 'b');
    const pulled = await follower.pull();
    expect(pulled).toMatchObject({ ok: true, after: pushed });
    expect(pulled.before).not.toBe(pushed);
    expect(fs.existsSync(path.join(host, 'runs', 'b.yaml'))).toBe(true);

    // Diverged history: --ff-only refuses, the checkout is left as it was.
    fs.writeFileSync(path.join(host, 'local.txt'), 'x\n');
    const local = commitAll(host, 'local commit');
    fs.writeFileSync(path.join(origin, 'runs', 'c.yaml'), spec('c'));
    commitAll(origin, 'c');
    const refused = await follower.pull();
    expect(refused.ok).toBe(false);
    expect(refused.message).toMatch(/^git pull --ff-only in .* failed: .*(Not possible to fast-forward|diverg)/i);
    expect(git(host, 'rev-parse', 'HEAD')).toBe(local);
    expect(outcomes).toHaveLength(3);
    await follower.stop();
  });

  it('never shows credentials from a remote URL', () => {
    expect(redactUrls("fatal: unable to access 'https://bot:ghp_secret123@github.com/org/repo.git/': Could not resolve host")).toBe(
      "fatal: unable to access 'https://***@github.com/org/repo.git/': Could not resolve host",
    );
  });
});
