// The setup cache and code.include end to end (issue 12): the controller, the local provider's
// sandboxes and the real agent. Setup writes a line to a log outside the sandboxes every time it
// runs, so "setup did not run" is a fact the test reads, not a guess from timings. Two settles:
//   1. a run interrupted once: attempt 1 runs setup (10 s) and stores .venv; attempt 2 restores it
//      into its own work folder (modes, links, its absolute path rewritten) and does not run setup;
//      its job reads data/train.bin, which .gitignore leaves out and code.include ships.
//   2. side by side: a run whose key file changed (setup runs), and a run with the first run's key
//      after its archive was corrupted in storage (setup runs again, says why, and stores anew).
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createLocalProvider } from '../../src/providers/local/index.js';
import { Controller } from '../../src/reconciler/controller.js';
import type { LoadedRun } from '../../src/spec/types.js';
import { FileStore } from '../../src/state/file-store.js';
import type { RunEvent, RunStatus } from '../../src/state/types.js';
import { testRun } from '../support/runs.js';

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-setup-cache-e2e-'));
const repo = path.join(root, 'repo');
const setupLog = path.join(root, 'setup-runs.log');
const storage = path.join(root, 'local', 'storage');
const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups) await c();
  fs.rmSync(root, { recursive: true, force: true });
});

function write(rel: string, text: string | Buffer, mode?: number): void {
  const file = path.join(repo, rel);
  fs.mkdirSync(path.dirname(file), { recursive: true });
  fs.writeFileSync(file, text);
  if (mode !== undefined) fs.chmodSync(file, mode);
}

const trainBin = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7) % 256));
const sha256 = (data: Buffer | string) => createHash('sha256').update(data).digest('hex');

write('proj/.gitignore', '*.bin\n.venv/\n');
write('proj/requirements.txt', 'numpy==2.1.0\n');
write('proj/data/train.bin', trainBin);
write(
  'proj/setup.sh',
  [
    'set -eu',
    'echo "ran run=$RUNCTL_RUN attempt=$RUNCTL_ATTEMPT" >> "$SETUP_LOG"',
    'sleep "${SETUP_SECONDS:-0}"', // a slow install (pip of a PyTorch stack), paid once in this file
    'mkdir -p .venv/bin .venv/lib/site-packages',
    'printf "#!/bin/sh\\necho tool-from-venv\\n" > .venv/bin/tool',
    'chmod 755 .venv/bin/tool',
    'ln -s tool .venv/bin/tool-link',
    'ln -s "$(command -v sh)" .venv/bin/python', // absolute, outside the tree: what a venv holds
    'echo "VIRTUAL_ENV=$PWD/.venv" > .venv/bin/activate',
    'head -c 300000 /dev/urandom > .venv/lib/site-packages/native.so',
    '',
  ].join('\n'),
);
write(
  'proj/job.sh',
  [
    'set -eu',
    'test -f data/train.bin || { echo "data/train.bin is missing"; exit 3; }',
    'echo "train.bin $(sha256sum data/train.bin | cut -d" " -f1)"',
    'test -x .venv/bin/tool && test -L .venv/bin/python && .venv/bin/tool-link',
    'grep -qx "VIRTUAL_ENV=$PWD/.venv" .venv/bin/activate || { echo "activate names $(cat .venv/bin/activate)"; exit 4; }',
    'if [ "$RUNCTL_ATTEMPT" = 1 ] && [ -n "${WAIT_FOR_NOTICE:-}" ]; then',
    '  trap "echo saved; exit 0" TERM',
    '  echo waiting for the notice',
    '  while :; do sleep 0.2; done',
    'fi',
    'echo trained',
    '',
  ].join('\n'),
);

async function settle(runs: LoadedRun[]): Promise<{ statuses: RunStatus[]; events: (run: string) => Promise<RunEvent[]> }> {
  const provider = createLocalProvider({ root: path.join(root, 'local'), repoRoot: repo, controller: 'e2e', pollIntervalMs: 200 });
  const store = new FileStore(path.join(root, 'state'), { fsync: false });
  await store.open();
  const controller = new Controller({
    store,
    provider: async () => provider,
    load: async () => ({ runs, diagnostics: [], invalidFiles: [] }),
    controller: 'e2e',
    repoRoot: repo,
    prune: false,
  });
  let closed = false;
  const close = async () => {
    if (closed) return;
    closed = true;
    await controller.stop();
    for (const s of controller.runs) for (const i of s.instances) await provider.terminate(i.id);
    await store.close();
  };
  cleanups.push(close);
  const summary = await controller.runUntilSettled();
  const events = async (run: string) => store.readEvents(run);
  const statuses = summary.statuses;
  const all = await Promise.all(statuses.map(async (s) => ({ ...s })));
  const read = new Map<string, RunEvent[]>();
  for (const s of statuses) read.set(s.run, await events(s.run));
  await close();
  return { statuses: all, events: async (run) => read.get(run) ?? [] };
}

function cached(name: string, extra: Parameters<typeof testRun>[1] = {}): LoadedRun {
  return testRun(name, {
    code: { path: './proj', exclude: [], include: ['data/*.bin'] },
    setup: { run: 'bash setup.sh', cache: { paths: ['.venv'], key: ['requirements.txt'] } },
    run: 'bash job.sh',
    timeouts: { provisioning: '1m', installing: '2m', training: '2m' },
    recovery: { maxRetriesOnError: 0 },
    ...extra,
    env: { SETUP_LOG: setupLog, ...(extra.env ?? {}) },
  });
}

const setupRuns = () => (fs.existsSync(setupLog) ? fs.readFileSync(setupLog, 'utf8').trim().split('\n') : []);

function attemptLog(run: string, attempt: number): string {
  const base = path.join(storage, 'runs', run);
  const uid = fs.readdirSync(base).find((d) => !/^g\d+$/.test(d));
  const dir = path.join(base, uid ?? '', 'g1', `a${attempt}`, 'logs');
  return fs.existsSync(dir) ? fs.readdirSync(dir).sort().map((f) => fs.readFileSync(path.join(dir, f), 'utf8')).join('') : '';
}

const setupEvents = (events: RunEvent[]) => events.filter((e) => e.kind === 'observation' && e.action.startsWith('setup '));

describe('setup cache and code.include, end to end', () => {
  let firstKey = '';

  it('attempt 2 restores what attempt 1 set up, and setup does not run again; code.include ships an ignored *.bin', async () => {
    const { statuses, events } = await settle([
      cached('cache-a', { env: { SETUP_SECONDS: '10', WAIT_FOR_NOTICE: '1' }, rehearsal: { interruptAfter: '1s' }, checkpoints: { gracePeriod: '10s' } }),
    ]);
    const status = statuses.find((s) => s.run === 'cache-a')!;
    expect(status.failure?.message).toBeUndefined();
    expect(status.phase).toBe('Completed');
    expect(status.interruptions).toBe(1);
    expect(setupRuns()).toEqual(['ran run=cache-a attempt=1']);

    const [rebuilt, restored, ...more] = setupEvents(await events('cache-a'));
    expect(more).toEqual([]);
    expect(rebuilt).toMatchObject({ attempt: 1, action: 'setup rebuilt', result: 'ok', data: { cache: 'rebuilt', missed: 'miss', stored: true } });
    expect(rebuilt!.data!.seconds as number).toBeGreaterThanOrEqual(10);
    expect(rebuilt!.message).toMatch(/^setup ran in [\d.]+s \(no setup cache stored for key [0-9a-f]{12} yet .*\); stored for later attempts \(\d+ bytes, [\d.]+s\)$/);
    expect(restored).toMatchObject({ attempt: 2, action: 'setup restored', result: 'ok', data: { cache: 'restored', key: rebuilt!.data!.key } });
    const r = restored!.data as { seconds: number; setupSeconds: number; savedSeconds: number };
    expect(r.setupSeconds).toBe(rebuilt!.data!.seconds);
    expect(r.savedSeconds).toBeCloseTo(Math.max(0, r.setupSeconds - r.seconds), 1);
    expect(restored!.message).toMatch(/^setup cache restored in [\d.]+s instead of running setup \([\d.]+s when it ran built by generation 1 attempt 1\): [\d.]+s saved$/);
    expect(status.setupCache).toEqual({ generation: 1, key: rebuilt!.data!.key });
    // The ledger's setup leg per attempt is these events' figures.
    const ledger = status.ledger?.attempts.map((a) => [a.attempt, a.setup]);
    expect(ledger).toEqual([
      [1, { cache: 'rebuilt', seconds: rebuilt!.data!.seconds }],
      [2, { cache: 'restored', seconds: r.seconds, savedSeconds: r.savedSeconds }],
    ]);
    firstKey = rebuilt!.data!.key as string;

    // Attempt 2's job found the venv whole (modes, links, its own path) and the included data.
    const log2 = attemptLog('cache-a', 2);
    expect(log2).toContain(`train.bin ${sha256(trainBin)}`);
    expect(log2).toContain('tool-from-venv');
    expect(log2).toContain('trained');
    expect(log2).not.toContain('starting setup');
    expect(attemptLog('cache-a', 1)).toContain(`train.bin ${sha256(trainBin)}`);
  }, 240_000);

  it('a changed key file runs setup again; a corrupt archive runs it again and is stored anew', async () => {
    expect(firstKey).toMatch(/^[0-9a-f]{64}$/);
    const entry = JSON.parse(fs.readFileSync(path.join(storage, 'setup-cache', `${firstKey}.json`), 'utf8')) as { archive: { sha256: string } };
    const archive = path.join(storage, 'setup-cache', 'archives', `${entry.archive.sha256}.tar.gz`);
    const bytes = fs.readFileSync(archive);
    bytes.write('corrupted', 200);
    fs.writeFileSync(archive, bytes);
    // cache-changed ships another requirements.txt (a copy of the project with one line changed).
    fs.cpSync(path.join(repo, 'proj'), path.join(repo, 'proj-changed'), { recursive: true });
    fs.writeFileSync(path.join(repo, 'proj-changed', 'requirements.txt'), 'numpy==2.2.0\n');

    const { statuses, events } = await settle([
      cached('cache-changed', { code: { path: './proj-changed', exclude: [], include: ['data/*.bin'] } }),
      cached('cache-corrupt'),
    ]);
    for (const s of statuses) {
      expect(s.failure?.message, s.run).toBeUndefined();
      expect(s.phase, s.run).toBe('Completed');
    }
    expect(setupRuns().sort()).toEqual(['ran run=cache-a attempt=1', 'ran run=cache-changed attempt=1', 'ran run=cache-corrupt attempt=1']);

    const [changed] = setupEvents(await events('cache-changed'));
    expect(changed).toMatchObject({ action: 'setup rebuilt', result: 'ok', data: { cache: 'rebuilt', missed: 'miss', stored: true } });
    expect(changed!.data!.key).not.toBe(firstKey);

    const [corrupt] = setupEvents(await events('cache-corrupt'));
    expect(corrupt).toMatchObject({ action: 'setup rebuilt', result: 'error', data: { cache: 'rebuilt', missed: 'corrupt', stored: true, key: firstKey } });
    expect(corrupt!.message).toContain(`the setup cache archive setup-cache/archives/${entry.archive.sha256}.tar.gz is corrupt: its content hashes to`);
    expect(attemptLog('cache-corrupt', 1)).toContain('setup cache not restored: the setup cache archive');
    // The key's entry now names an archive whose content matches its name.
    const healed = JSON.parse(fs.readFileSync(path.join(storage, 'setup-cache', `${firstKey}.json`), 'utf8')) as { archive: { sha256: string } };
    const healedFile = path.join(storage, 'setup-cache', 'archives', `${healed.archive.sha256}.tar.gz`);
    expect(sha256(fs.readFileSync(healedFile))).toBe(healed.archive.sha256);
  }, 240_000);
});
