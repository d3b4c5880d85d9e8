// The default state store: plain files under `.runctl/` in the current directory.
//
//   .runctl/controller.lock                 who controls this folder (one controller at a time)
//   .runctl/state/runs/<run>/status.json    replaced atomically (temp file, fsync, rename)
//   .runctl/state/runs/<run>/events.jsonl   append-only, one event per line, ids never repeat
//   .runctl/state/archive/<run>-<uid>/      a deleted run's status and events, kept as history
//   .runctl/.gitignore                      `*`: local state never shows up in git
//
// Writers must `open()` first, which takes the lock; `readOnly` stores (status, describe, logs)
// never take it and refuse to write.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { removeStaleTempFiles, syncDirectory, writeFileAtomic } from './atomic-file.js';
import { acquireLock, releaseLock, releaseLockSync, type AcquiredLock } from './controller-lock.js';
import { appendLines, readLog, repairTornTail } from './event-log.js';
import { parseStatusRecord } from './status-record.js';
import type { RunEvent, RunStatus, StateStore } from './types.js';

export const DEFAULT_STATE_ROOT = '.runctl';

export interface FileStoreOptions {
  /** Read without taking the lock; every write throws ReadOnlyStoreError. */
  readOnly?: boolean;
  /** Command line shown to anyone the lock refuses; defaults to this process's arguments. */
  command?: string;
  /** Flush writes to disk (survive power loss, not only crashes). Default true. */
  fsync?: boolean;
  /** Clock for archive names. */
  now?: () => number;
}

export interface OpenResult {
  /** The lock this store now holds (absent in read-only mode). */
  lock?: AcquiredLock;
  /** Something the user should be told, e.g. that a dead controller's lock was taken over. */
  note?: string;
}

export class ReadOnlyStoreError extends Error {
  constructor(what: string, root: string) {
    super(`cannot ${what}: the state store at ${root} was opened read-only`);
    this.name = 'ReadOnlyStoreError';
  }
}

const RUN_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$/;

export class FileStore implements StateStore {
  readonly root: string;
  readonly lockPath: string;
  private readonly runsDir: string;
  private readonly archiveDir: string;
  private readonly readOnly: boolean;
  private readonly fsync: boolean;
  private readonly command: string;
  private readonly now: () => number;
  private lock?: AcquiredLock;
  private exitHook?: () => void;
  /** Ids already in each run's log, loaded on the first append (only this controller appends). */
  private readonly knownIds = new Map<string, Set<string>>();
  /** Per-run queue so an append never interleaves with another write to the same run. */
  private readonly chains = new Map<string, Promise<unknown>>();

  constructor(root: string = DEFAULT_STATE_ROOT, opts: FileStoreOptions = {}) {
    this.root = path.resolve(root);
    this.lockPath = path.join(this.root, 'controller.lock');
    this.runsDir = path.join(this.root, 'state', 'runs');
    this.archiveDir = path.join(this.root, 'state', 'archive');
    this.readOnly = opts.readOnly ?? false;
    this.fsync = opts.fsync ?? true;
    this.command = opts.command ?? defaultCommand();
    this.now = opts.now ?? Date.now;
  }

  async open(): Promise<OpenResult> {
    if (this.readOnly) return {};
    if (this.lock) return { lock: this.lock };
    await fs.mkdir(this.runsDir, { recursive: true });
    // Controller state is local to this checkout; keep it out of `git status` and commits.
    await fs.writeFile(path.join(this.root, '.gitignore'), '# created by runctl: local controller state\n*\n', { flag: 'wx' }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
    const lock = await acquireLock(this.lockPath, this.command, { displayPath: display(this.lockPath), fsync: this.fsync });
    this.lock = lock;
    const token = lock.holder.token;
    this.exitHook = () => releaseLockSync(this.lockPath, token);
    process.once('exit', this.exitHook);
    // Only the lock holder writes, so every temp file now present is debris from a crash.
    for (const run of await this.runDirs()) await removeStaleTempFiles(path.join(this.runsDir, run));
    return { lock, note: lock.note };
  }

  async close(): Promise<void> {
    if (!this.lock) return;
    await Promise.allSettled([...this.chains.values()]);
    const token = this.lock.holder.token;
    this.lock = undefined;
    if (this.exitHook) process.removeListener('exit', this.exitHook);
    this.exitHook = undefined;
    this.knownIds.clear();
    await releaseLock(this.lockPath, token);
  }

  async listRuns(): Promise<string[]> {
    const runs: string[] = [];
    for (const run of await this.runDirs()) {
      if (await exists(this.statusPath(run))) runs.push(run);
    }
    return runs.sort();
  }

  async getStatus(run: string): Promise<RunStatus | undefined> {
    const file = this.statusPath(run);
    let text: string;
    try {
      text = await fs.readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    // Writes are atomic, so a record that does not parse was edited by hand or the disk failed: it
    // concerns this run only (StatusUnreadableError), and the controller rebuilds it.
    return parseStatusRecord(text, run, display(file));
  }

  /** Where a run's status record is kept (for messages). */
  statusFile(run: string): string {
    return display(this.statusPath(run));
  }

  /** Where a run's event log is kept (for messages). */
  eventsFile(run: string): string {
    return display(this.eventsPath(run));
  }

  /**
   * Moves an unreadable status record aside (`status.json.unreadable-<time>`, kept for inspection)
   * and writes `status` in its place: the last step of rebuilding a record (reconciler/rebuild.ts).
   */
  async replaceUnreadableStatus(status: RunStatus): Promise<string> {
    this.assertWritable('replace an unreadable status');
    return this.serial(status.run, async () => {
      const file = this.statusPath(status.run);
      const stamp = new Date(this.now()).toISOString().replace(/[-:]/g, '');
      const aside = `${file}.unreadable-${stamp}`;
      await fs.rename(file, aside).catch((err: NodeJS.ErrnoException) => {
        if (err.code !== 'ENOENT') throw err;
      });
      await writeFileAtomic(file, `${JSON.stringify(status, null, 2)}\n`, { fsync: this.fsync });
      return display(aside);
    });
  }

  async putStatus(status: RunStatus): Promise<void> {
    this.assertWritable('write status');
    const run = status.run;
    await this.serial(run, async () => {
      await fs.mkdir(this.runDir(run), { recursive: true });
      await writeFileAtomic(this.statusPath(run), `${JSON.stringify(status, null, 2)}\n`, { fsync: this.fsync });
    });
  }

  /**
   * Moves the run's status and events to `state/archive/<run>-<uid>/` (the incarnation's own
   * folder; `<run>-<time>` if the record cannot be read); history is never destroyed.
   */
  async deleteStatus(run: string): Promise<void> {
    this.assertWritable('delete status');
    await this.serial(run, async () => {
      const from = this.runDir(run);
      if (!(await exists(from))) return;
      await fs.mkdir(this.archiveDir, { recursive: true });
      const uid = await fs
        .readFile(this.statusPath(run), 'utf8')
        .then((text) => parseStatusRecord(text, run, this.statusPath(run)).uid)
        .catch(() => undefined);
      const stamp = uid ?? new Date(this.now()).toISOString().replace(/[-:]/g, '');
      let to = path.join(this.archiveDir, `${run}-${stamp}`);
      for (let n = 2; await exists(to); n++) to = path.join(this.archiveDir, `${run}-${stamp}-${n}`);
      await fs.rename(from, to);
      this.knownIds.delete(run);
      if (this.fsync) {
        await syncDirectory(this.runsDir);
        await syncDirectory(this.archiveDir);
      }
    });
  }

  async appendEvents(run: string, events: RunEvent[]): Promise<void> {
    this.assertWritable('append events');
    if (events.length === 0) return;
    await this.serial(run, async () => {
      const file = this.eventsPath(run);
      let known = this.knownIds.get(run);
      if (!known) {
        await fs.mkdir(this.runDir(run), { recursive: true });
        const log = await readLog(file);
        await repairTornTail(file, log);
        known = new Set(log.events.map((e) => e.id));
        this.knownIds.set(run, known);
      }
      const fresh: RunEvent[] = [];
      const batch = new Set<string>();
      for (const e of events) {
        if (known.has(e.id) || batch.has(e.id)) continue;
        batch.add(e.id);
        fresh.push(e);
      }
      if (fresh.length === 0) return;
      try {
        await appendLines(file, fresh, this.fsync);
      } catch (err) {
        // The file may now end in a partial line: reload (and repair) on the next append.
        this.knownIds.delete(run);
        throw err;
      }
      for (const id of batch) known.add(id);
    });
  }

  async readEvents(run: string): Promise<RunEvent[]> {
    return (await readLog(this.eventsPath(run))).events;
  }

  private assertWritable(what: string): void {
    if (this.readOnly) throw new ReadOnlyStoreError(what, display(this.root));
    if (!this.lock) throw new Error(`cannot ${what}: open() the state store at ${display(this.root)} first (it takes the controller lock)`);
  }

  private serial<T>(run: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.chains.get(run) ?? Promise.resolve();
    const next = previous.then(fn, fn);
    const settled = next.then(
      () => undefined,
      () => undefined,
    );
    this.chains.set(run, settled);
    void settled.then(() => {
      if (this.chains.get(run) === settled) this.chains.delete(run);
    });
    return next;
  }

  private async runDirs(): Promise<string[]> {
    let entries: import('node:fs').Dirent[];
    try {
      entries = await fs.readdir(this.runsDir, { withFileTypes: true });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    return entries.filter((e) => e.isDirectory() && RUN_NAME.test(e.name)).map((e) => e.name);
  }

  private runDir(run: string): string {
    if (!RUN_NAME.test(run)) {
      throw new Error(`invalid run name ${JSON.stringify(run)} for the state store: use letters, digits, '.', '-' or '_', starting with a letter or digit`);
    }
    return path.join(this.runsDir, run);
  }

  private statusPath(run: string): string {
    return path.join(this.runDir(run), 'status.json');
  }

  private eventsPath(run: string): string {
    return path.join(this.runDir(run), 'events.jsonl');
  }
}

function defaultCommand(): string {
  const script = path.basename(process.argv[1] ?? 'node').replace(/\.[cm]?js$/, '');
  return [script, ...process.argv.slice(2)].join(' ');
}

/** A path as the user would type it: relative when under the current directory. */
function display(p: string): string {
  const rel = path.relative(process.cwd(), p);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : p;
}

async function exists(p: string): Promise<boolean> {
  try {
    await fs.access(p);
    return true;
  } catch {
    return false;
  }
}

export { StateCorruptError } from './event-log.js';
export { LockHeldError } from './types.js';
export type { AcquiredLock, LockHolder } from './controller-lock.js';
