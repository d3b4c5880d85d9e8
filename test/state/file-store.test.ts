import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { FileStore, LockHeldError, ReadOnlyStoreError, StateCorruptError } from '../../src/state/file-store.js';
import { eventFixture, statusFixture, T0 } from './status-fixture.js';

const childScript = path.join(path.dirname(fileURLToPath(import.meta.url)), 'store-child.mjs');

let root: string;
const children: ChildProcessWithoutNullStreams[] = [];
const stores: FileStore[] = [];

beforeEach(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'runctl-store-'));
});

afterEach(async () => {
  for (const s of stores.splice(0)) await s.close();
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await fs.rm(root, { recursive: true, force: true });
});

function store(opts: ConstructorParameters<typeof FileStore>[1] = {}): FileStore {
  const s = new FileStore(root, { fsync: false, ...opts });
  stores.push(s);
  return s;
}

interface ChildReport {
  ok?: boolean;
  pid?: number;
  note?: string;
  name?: string;
  message?: string;
  holder?: string;
  wrote?: number;
  ready?: boolean;
}

function child(mode: 'hold' | 'race' | 'write-loop'): { proc: ChildProcessWithoutNullStreams; next: () => Promise<ChildReport> } {
  const proc = spawn(process.execPath, [childScript, root, mode], { stdio: 'pipe' });
  children.push(proc);
  const lines = createInterface({ input: proc.stdout })[Symbol.asyncIterator]();
  let stderr = '';
  proc.stderr.on('data', (d) => (stderr += d));
  return {
    proc,
    async next() {
      const line = await lines.next();
      if (line.done) throw new Error(`child exited without reporting: ${stderr}`);
      return JSON.parse(line.value) as ChildReport;
    },
  };
}

function exited(proc: ChildProcessWithoutNullStreams): Promise<void> {
  return new Promise((resolve) => (proc.exitCode !== null || proc.signalCode !== null ? resolve() : proc.once('exit', () => resolve())));
}

/** The pid of a process that has already exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

async function writeLock(holder: Record<string, unknown>): Promise<void> {
  await fs.mkdir(root, { recursive: true });
  await fs.writeFile(path.join(root, 'controller.lock'), JSON.stringify(holder));
}

const runDir = (run: string) => path.join(root, 'state', 'runs', run);

describe('status', () => {
  it('round-trips statuses and lists only runs that have one, sorted', async () => {
    const s = store();
    await s.open();
    await s.putStatus(statusFixture('zeta', { phase: 'Training', attempt: 2 }));
    await s.putStatus(statusFixture('alpha'));
    await s.appendEvents('events-only', [eventFixture('events-only', 1)]);

    expect(await s.listRuns()).toEqual(['alpha', 'zeta']);
    expect(await s.getStatus('zeta')).toEqual(statusFixture('zeta', { phase: 'Training', attempt: 2 }));
    expect(await s.getStatus('missing')).toBeUndefined();
    const files = await fs.readdir(runDir('zeta'));
    expect(files).toEqual(['status.json']);
  });

  it('keeps its folder out of git, without overwriting an edited .gitignore', async () => {
    const s = store();
    await s.open();
    expect(await fs.readFile(path.join(root, '.gitignore'), 'utf8')).toMatch(/^\*$/m);
    await s.close();
    await fs.writeFile(path.join(root, '.gitignore'), 'state/\n');
    await store().open();
    expect(await fs.readFile(path.join(root, '.gitignore'), 'utf8')).toBe('state/\n');
  });

  it('never shows a torn status: leftover temp files from a crashed write are ignored, then removed on open', async () => {
    const writer = store();
    await writer.open();
    await writer.putStatus(statusFixture('r1', { phase: 'Installing' }));
    await writer.close();
    // What a crash mid-write leaves behind: half-written temp files next to the real status.
    await fs.writeFile(path.join(runDir('r1'), 'status.json.4242.deadbeef.tmp'), '{"run":"r1","phase":"Trai');
    await fs.mkdir(runDir('ghost'), { recursive: true });
    await fs.writeFile(path.join(runDir('ghost'), 'status.json.4242.cafe.tmp'), '{');

    const reader = store({ readOnly: true });
    expect((await reader.getStatus('r1'))?.phase).toBe('Installing');
    expect(await reader.listRuns()).toEqual(['r1']);
    expect(await reader.getStatus('ghost')).toBeUndefined();

    const next = store();
    await next.open();
    expect(await fs.readdir(runDir('r1'))).toEqual(['status.json']);
    expect(await fs.readdir(runDir('ghost'))).toEqual([]);
  });

  it('survives SIGKILL in the middle of a stream of status writes', async () => {
    let last = 0;
    for (const delayMs of [0, 7, 23, 41]) {
      const c = child('write-loop');
      expect((await c.next()).ok).toBe(true);
      expect((await c.next()).wrote).toBe(5);
      await new Promise((r) => setTimeout(r, delayMs));
      c.proc.kill('SIGKILL');
      await exited(c.proc);

      const reader = store({ readOnly: true });
      const status = (await reader.getStatus('crashy')) as unknown as { counter: number; padding: string };
      expect(status.counter).toBeGreaterThanOrEqual(5);
      expect(status.padding).toHaveLength(4 * 1024 * 1024);
      last = c.proc.pid ?? 0;
    }

    const next = store();
    const opened = await next.open();
    expect(opened.note).toContain(`pid ${last}`);
    expect((await fs.readdir(runDir('crashy'))).filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('rejects run names that would escape the state folder', async () => {
    const s = store();
    await s.open();
    await expect(s.putStatus(statusFixture('../evil'))).rejects.toThrow(/invalid run name "..\/evil"/);
    await expect(s.getStatus('.hidden')).rejects.toThrow(/invalid run name/);
  });

  it('names the file when a status was corrupted outside runctl', async () => {
    const s = store();
    await s.open();
    await s.putStatus(statusFixture('r1'));
    await fs.writeFile(path.join(runDir('r1'), 'status.json'), '{not json');
    await expect(s.getStatus('r1')).rejects.toThrow(StateCorruptError);
    await expect(s.getStatus('r1')).rejects.toThrow(/status\.json: the status record of run r1 is unreadable \(not valid JSON \(9 bytes\)\)/);
    // The advice is to let reconcile rebuild it, never the archive (which holds deleted runs only).
    await expect(s.getStatus('r1')).rejects.not.toThrow(/archive/);
  });

  it('refuses a record of the wrong shape as unreadable, naming the field, and upgrades one without a uid', async () => {
    const s = store();
    await s.open();
    await s.putStatus(statusFixture('r1'));
    const file = path.join(runDir('r1'), 'status.json');
    await fs.writeFile(file, JSON.stringify({ ...statusFixture('r1'), instances: 'none' }));
    await expect(s.getStatus('r1')).rejects.toThrow(/"instances" is not a list of instance records/);
    await fs.writeFile(file, '[]');
    await expect(s.getStatus('r1')).rejects.toThrow(/expected a JSON object, found a list/);
    // Written by the previous version: no uid. Read with its legacy uid, the same on every read.
    const { uid: _uid, ...old } = statusFixture('r1');
    await fs.writeFile(file, JSON.stringify(old));
    const upgraded = await s.getStatus('r1');
    expect(upgraded?.uid).toMatch(/^legacy-[0-9a-f]{12}$/);
    expect((await s.getStatus('r1'))?.uid).toBe(upgraded?.uid);
    expect({ ...upgraded, uid: undefined }).toEqual({ ...old, uid: undefined });
  });
});

describe('deleteStatus', () => {
  it('archives status and events instead of destroying them, and a recreated run starts a fresh log', async () => {
    let now = T0;
    const s = store({ now: () => now });
    await s.open();
    await s.putStatus(statusFixture('r1', { phase: 'Deleted' }));
    await s.appendEvents('r1', [eventFixture('r1', 1), eventFixture('r1', 2)]);
    await s.deleteStatus('r1');
    now += 1;
    await s.deleteStatus('r1'); // idempotent: nothing left to archive

    expect(await s.getStatus('r1')).toBeUndefined();
    expect(await s.listRuns()).toEqual([]);
    const archive = path.join(root, 'state', 'archive');
    const uid = statusFixture('r1').uid;
    expect(await fs.readdir(archive)).toEqual([`r1-${uid}`]);
    const archived = path.join(archive, `r1-${uid}`);
    expect((await fs.readdir(archived)).sort()).toEqual(['events.jsonl', 'status.json']);
    expect(JSON.parse(await fs.readFile(path.join(archived, 'status.json'), 'utf8')).phase).toBe('Deleted');

    // Same name again, a new incarnation: the archived log's ids do not suppress the new run's events.
    const second = 'a7e3c9d1-0b2f-4e6a-9c8d-7f6e5d4c3b2a';
    await s.putStatus(statusFixture('r1', { uid: second }));
    await s.appendEvents('r1', [eventFixture('r1', 1)]);
    expect((await s.readEvents('r1')).map((e) => e.id)).toEqual(['r1:e1']);

    await s.deleteStatus('r1');
    expect((await fs.readdir(archive)).sort()).toEqual([`r1-${uid}`, `r1-${second}`].sort());
  });

  it('keeps two archives of one incarnation apart (a deletion repeated after a restore by hand)', async () => {
    const s = store({ now: () => T0 });
    await s.open();
    await s.putStatus(statusFixture('r1'));
    await s.deleteStatus('r1');
    await s.putStatus(statusFixture('r1', { phase: 'Failed' }));
    await s.deleteStatus('r1');
    const archive = path.join(root, 'state', 'archive');
    const uid = statusFixture('r1').uid;
    expect((await fs.readdir(archive)).sort()).toEqual([`r1-${uid}`, `r1-${uid}-2`]);
  });
});

describe('appendEvents', () => {
  it('skips ids already in the log, within a batch, and across store instances', async () => {
    const s = store();
    await s.open();
    await s.appendEvents('r1', [eventFixture('r1', 1), eventFixture('r1', 2)]);
    await s.appendEvents('r1', [eventFixture('r1', 2), eventFixture('r1', 3), eventFixture('r1', 3)]);
    await s.appendEvents('r1', []);
    expect((await s.readEvents('r1')).map((e) => e.id)).toEqual(['r1:e1', 'r1:e2', 'r1:e3']);
    await s.close();

    // A restarted controller replays its outbox: nothing already logged appears twice.
    const restarted = store();
    await restarted.open();
    await restarted.appendEvents('r1', [eventFixture('r1', 1), eventFixture('r1', 3), eventFixture('r1', 4)]);
    const events = await restarted.readEvents('r1');
    expect(events.map((e) => e.id)).toEqual(['r1:e1', 'r1:e2', 'r1:e3', 'r1:e4']);
    expect(events[3]).toEqual(eventFixture('r1', 4));
  });

  it('keeps concurrent appends to one run whole and unduplicated', async () => {
    const s = store();
    await s.open();
    await Promise.all(
      Array.from({ length: 20 }, (_, i) => s.appendEvents('r1', [eventFixture('r1', i), eventFixture('r1', i + 1)])),
    );
    const ids = (await s.readEvents('r1')).map((e) => e.seq).sort((a, b) => a - b);
    expect(ids).toEqual(Array.from({ length: 21 }, (_, i) => i));
  });

  it('drops an append torn by a crash, and the next append starts on its own line', async () => {
    const s = store();
    await s.open();
    await s.appendEvents('r1', [eventFixture('r1', 1)]);
    await s.close();
    await fs.appendFile(path.join(runDir('r1'), 'events.jsonl'), '{"id":"r1:e2","seq":2,"at":"20');

    const reader = store({ readOnly: true });
    expect((await reader.readEvents('r1')).map((e) => e.id)).toEqual(['r1:e1']);

    const restarted = store();
    await restarted.open();
    await restarted.appendEvents('r1', [eventFixture('r1', 2)]);
    expect((await restarted.readEvents('r1')).map((e) => e.id)).toEqual(['r1:e1', 'r1:e2']);
    const text = await fs.readFile(path.join(runDir('r1'), 'events.jsonl'), 'utf8');
    expect(text.split('\n').filter(Boolean).map((l) => JSON.parse(l).id)).toEqual(['r1:e1', 'r1:e2']);
  });

  it('reports a corrupted line in the middle of the log with file and line', async () => {
    const s = store();
    await s.open();
    await s.appendEvents('r1', [eventFixture('r1', 1)]);
    await fs.appendFile(path.join(runDir('r1'), 'events.jsonl'), 'garbage\n{"id":"r1:e3"}\n');
    const err = await s.readEvents('r1').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(StateCorruptError);
    expect((err as StateCorruptError).message).toMatch(/events\.jsonl:2: event log line is not valid JSON; move the file aside/);
  });
});

describe('controller lock', () => {
  it('refuses a second controller while the first is alive, naming it; readers are not blocked', async () => {
    const holder = child('hold');
    const report = await holder.next();
    expect(report.ok).toBe(true);

    const err = await store().open().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockHeldError);
    const message = (err as LockHeldError).message;
    expect(message).toContain(`another runctl controller (pid ${holder.proc.pid} on host ${os.hostname()}, \`store-child hold\`, since `);
    expect(message).toMatch(/\) holds .*controller\.lock; stop it or wait$/);
    expect((err as LockHeldError).holder).toBe(`pid ${holder.proc.pid} on host ${os.hostname()}`);

    const reader = store({ readOnly: true });
    await reader.open();
    expect(await reader.listRuns()).toEqual([]);

    // The holder exits cleanly: its lock goes with it and the next controller gets in quietly.
    holder.proc.stdin.end();
    await exited(holder.proc);
    const next = store();
    expect((await next.open()).note).toBeUndefined();
  });

  it('refuses a second store in the same process', async () => {
    await store().open();
    await expect(store().open()).rejects.toThrow(/another runctl controller \(pid \d+ on host .*\) holds .*; stop it or wait/);
  });

  it('takes over the lock of a controller that was killed, and says so', async () => {
    const holder = child('hold');
    expect((await holder.next()).ok).toBe(true);
    holder.proc.kill('SIGKILL');
    await exited(holder.proc);

    const s = store();
    const opened = await s.open();
    expect(opened.note).toMatch(new RegExp(`^took over .*controller\\.lock from a controller that is no longer running \\(pid ${holder.proc.pid} on host `));
    expect(opened.lock?.takenOverFrom?.pid).toBe(holder.proc.pid);
    const lock = JSON.parse(await fs.readFile(s.lockPath, 'utf8'));
    expect(lock.pid).toBe(process.pid);
  });

  it('lets exactly one of several contenders take over a stale lock', async () => {
    const dead = deadPid();
    await writeLock({ pid: dead, host: os.hostname(), startedAt: '2026-01-01T00:00:00Z', command: 'runctl reconcile', token: 'old' });
    const contenders = [child('race'), child('race'), child('race'), child('race')];
    for (const c of contenders) expect((await c.next()).ready).toBe(true);
    for (const c of contenders) c.proc.stdin.write('go\n');
    const reports = await Promise.all(contenders.map((c) => c.next()));
    const winners = reports.filter((r) => r.ok);
    expect(winners).toHaveLength(1);
    expect(winners[0]?.note).toContain(`pid ${dead}`);
    for (const loser of reports.filter((r) => !r.ok)) {
      expect(loser.name).toBe('LockHeldError');
      expect(loser.holder).toBe(`pid ${winners[0]?.pid} on host ${os.hostname()}`);
    }
  });

  it('treats a lock carrying our own pid from before this process started as stale (container restart)', async () => {
    await writeLock({ pid: process.pid, host: os.hostname(), startedAt: '2000-01-01T00:00:00Z', command: 'runctl reconcile', token: 'old' });
    const opened = await store().open();
    expect(opened.note).toContain(`pid ${process.pid}`);
  });

  it('does not guess about a holder on another host', async () => {
    await writeLock({ pid: 1, host: 'control-host-7', startedAt: '2026-01-01T00:00:00Z', command: 'runctl reconcile --watch runs/', token: 't' });
    await expect(store().open()).rejects.toThrow(
      /another runctl controller \(pid 1 on host control-host-7, `runctl reconcile --watch runs\/`, since 2026-01-01T00:00:00Z\) holds .*controller\.lock; it runs on another host, so runctl cannot tell whether it is still alive: stop it there, or delete .*controller\.lock if that host is gone/,
    );
  });

  it('replaces a lock file that is unreadable debris', async () => {
    await writeLock({});
    const old = new Date(Date.now() - 60_000);
    await fs.utimes(path.join(root, 'controller.lock'), old, old);
    const opened = await store().open();
    expect(opened.note).toMatch(/replaced .*controller\.lock, which was unreadable/);
  });

  it('releases only its own lock on close', async () => {
    const s = store();
    await s.open();
    await s.close();
    await expect(fs.access(s.lockPath)).rejects.toThrow();

    const again = store();
    await again.open();
    // Someone replaced the lock (e.g. took it over believing us dead): close must leave theirs.
    await writeLock({ pid: 999999, host: 'elsewhere', startedAt: '2026-01-01T00:00:00Z', command: 'x', token: 'theirs' });
    await again.close();
    expect(JSON.parse(await fs.readFile(again.lockPath, 'utf8')).token).toBe('theirs');
  });

  it('refuses writes before open() and after close()', async () => {
    const s = store();
    await expect(s.putStatus(statusFixture('r1'))).rejects.toThrow(/open\(\) the state store at .* first/);
    await s.open();
    await s.close();
    await expect(s.appendEvents('r1', [eventFixture('r1', 1)])).rejects.toThrow(/open\(\) the state store/);
  });
});

describe('read-only mode', () => {
  it('reads without taking the lock, even while a controller holds it, and refuses every write', async () => {
    const writer = store();
    await writer.open();
    await writer.putStatus(statusFixture('r1', { phase: 'Training' }));
    await writer.appendEvents('r1', [eventFixture('r1', 1)]);

    const reader = store({ readOnly: true });
    expect(await reader.open()).toEqual({});
    expect(await reader.listRuns()).toEqual(['r1']);
    expect((await reader.getStatus('r1'))?.phase).toBe('Training');
    expect(await reader.readEvents('r1')).toEqual([eventFixture('r1', 1)]);
    await expect(reader.putStatus(statusFixture('r1'))).rejects.toThrow(ReadOnlyStoreError);
    await expect(reader.appendEvents('r1', [eventFixture('r1', 2)])).rejects.toThrow(/cannot append events: the state store at .* was opened read-only/);
    await expect(reader.deleteStatus('r1')).rejects.toThrow(ReadOnlyStoreError);
    await reader.close();
    expect(JSON.parse(await fs.readFile(writer.lockPath, 'utf8')).pid).toBe(process.pid);
  });

  it('reads an empty or missing state folder as no runs, creating nothing', async () => {
    const missing = path.join(root, 'nope');
    const reader = new FileStore(missing, { readOnly: true });
    await reader.open();
    expect(await reader.listRuns()).toEqual([]);
    expect(await reader.readEvents('r1')).toEqual([]);
    await expect(fs.access(missing)).rejects.toThrow();
  });
});
