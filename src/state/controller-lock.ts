// One controller per state folder. The lock file names its holder so a refused user knows what to
// stop; a holder that died (crash, SIGKILL, reboot) is detected by pid and its lock taken over.
//
// The lock is created by hard-linking a fully written temp file into place: link() fails if the
// name exists (like O_EXCL), and unlike O_EXCL no reader can ever see a half-written lock.
import { randomUUID } from 'node:crypto';
import { promises as fs, readFileSync, unlinkSync } from 'node:fs';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import { LockHeldError } from './types.js';
import { syncDirectory, tempPathFor } from './atomic-file.js';
import path from 'node:path';

export interface LockHolder {
  pid: number;
  host: string;
  /** ISO time the holder took the lock. */
  startedAt: string;
  /** Command line of the holder, to tell the user what to stop. */
  command: string;
  /** Random per acquisition: a holder releases the lock only while it still carries its token. */
  token: string;
}

export interface AcquiredLock {
  holder: LockHolder;
  /** Set when a dead controller's lock was replaced; `note` says so in words. */
  takenOverFrom?: LockHolder;
  note?: string;
}

export interface AcquireOptions {
  /** How the lock path is shown in messages (relative to the current directory when inside it). */
  displayPath: string;
  fsync: boolean;
}

// A takeover guard older than this belongs to a process that died mid-takeover (which takes ms).
const GUARD_STALE_MS = 10_000;
// A lock file that cannot be parsed for this long is debris from a crash, not a write in progress.
const UNPARSABLE_STALE_MS = 10_000;
const MAX_ATTEMPTS = 50;
const RETRY_DELAY_MS = 40;

export async function acquireLock(lockPath: string, command: string, opts: AcquireOptions): Promise<AcquiredLock> {
  const holder: LockHolder = {
    pid: process.pid,
    host: os.hostname(),
    startedAt: new Date().toISOString(),
    command,
    token: randomUUID(),
  };
  const content = `${JSON.stringify(holder, null, 2)}\n`;
  for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
    if (await createExclusive(lockPath, content, opts.fsync)) return { holder };

    const existing = await readHolder(lockPath);
    if (existing === 'missing') continue; // released between our attempt and the read
    if (existing === 'unparsable') {
      if (!(await olderThan(lockPath, UNPARSABLE_STALE_MS))) {
        await sleep(RETRY_DELAY_MS);
        continue;
      }
    } else {
      const liveness = holderLiveness(existing.holder);
      if (liveness !== 'dead') throw heldError(existing.holder, liveness, opts.displayPath);
    }

    const replaced = await replaceStaleLock(lockPath, existing === 'unparsable' ? undefined : existing.raw, content, opts.fsync);
    if (replaced === 'replaced') {
      const previous = existing === 'unparsable' ? undefined : existing.holder;
      return {
        holder,
        takenOverFrom: previous,
        note: previous
          ? `took over ${opts.displayPath} from a controller that is no longer running (${describeHolder(previous)})`
          : `replaced ${opts.displayPath}, which was unreadable (left by a crash)`,
      };
    }
    await sleep(RETRY_DELAY_MS);
  }
  throw new Error(`could not take ${opts.displayPath}: it kept changing hands; try again`);
}

/** Removes the lock if it is still ours. Returns whether it was. */
export async function releaseLock(lockPath: string, token: string): Promise<boolean> {
  const existing = await readHolder(lockPath);
  if (typeof existing === 'string' || existing.holder.token !== token) return false;
  await fs.rm(lockPath, { force: true });
  return true;
}

/** Same as releaseLock, for `process.on('exit')`, where nothing asynchronous runs. */
export function releaseLockSync(lockPath: string, token: string): void {
  try {
    const holder = parseHolder(readFileSync(lockPath, 'utf8'));
    if (holder?.token === token) unlinkSync(lockPath);
  } catch {
    // Nothing to release, or nothing we could do about it while exiting.
  }
}

export function describeHolder(h: LockHolder): string {
  return `pid ${h.pid} on host ${h.host}, \`${h.command}\`, since ${h.startedAt}`;
}

type Liveness = 'alive' | 'dead' | 'unknown';

function holderLiveness(h: LockHolder): Liveness {
  if (h.host !== os.hostname()) return 'unknown';
  if (h.pid === process.pid) {
    // Our own pid: another store in this very process, or an earlier process that had the same
    // pid (containers restart with the same low pids). Only the first can postdate our start.
    return Date.parse(h.startedAt) >= performance.timeOrigin - 1000 ? 'alive' : 'dead';
  }
  try {
    process.kill(h.pid, 0);
    return 'alive';
  } catch (err) {
    // EPERM: the process exists but belongs to another user.
    return (err as NodeJS.ErrnoException).code === 'ESRCH' ? 'dead' : 'alive';
  }
}

function heldError(h: LockHolder, liveness: Liveness, displayPath: string): LockHeldError {
  const who = `another runctl controller (${describeHolder(h)}) holds ${displayPath}`;
  const advice =
    liveness === 'unknown'
      ? `it runs on another host, so runctl cannot tell whether it is still alive: stop it there, or delete ${displayPath} if that host is gone`
      : 'stop it or wait';
  return new LockHeldError(`${who}; ${advice}`, `pid ${h.pid} on host ${h.host}`);
}

/** Creates `target` with `content` only if it does not exist. */
async function createExclusive(target: string, content: string, fsync: boolean): Promise<boolean> {
  const temp = tempPathFor(target);
  await fs.writeFile(temp, content, { flag: 'wx' });
  try {
    if (fsync) await syncFile(temp);
    await fs.link(temp, target);
    if (fsync) await syncDirectory(path.dirname(target));
    return true;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return false;
    if (code === 'EPERM' || code === 'ENOTSUP' || code === 'EOPNOTSUPP' || code === 'ENOSYS') {
      return createExclusiveWithoutLinks(target, content, fsync);
    }
    throw err;
  } finally {
    await fs.rm(temp, { force: true });
  }
}

// For filesystems without hard links. A reader may briefly see an empty file here; readers treat
// an unparsable lock as "being written" until it is old enough to be debris.
async function createExclusiveWithoutLinks(target: string, content: string, fsync: boolean): Promise<boolean> {
  let handle: fs.FileHandle;
  try {
    handle = await fs.open(target, 'wx', 0o644);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  }
  try {
    await handle.writeFile(content, 'utf8');
    if (fsync) await handle.sync();
  } finally {
    await handle.close();
  }
  return true;
}

// Several contenders may find the same dead holder. A small guard file, created exclusively,
// lets only one of them swap the lock, and only while it still holds the content judged stale.
async function replaceStaleLock(
  lockPath: string,
  staleRaw: string | undefined,
  content: string,
  fsync: boolean,
): Promise<'replaced' | 'retry'> {
  const guard = `${lockPath}.takeover`;
  if (!(await createExclusive(guard, `${process.pid}\n`, fsync))) {
    if (await olderThan(guard, GUARD_STALE_MS)) await fs.rm(guard, { force: true });
    return 'retry';
  }
  try {
    const current = await readRaw(lockPath);
    const stillStale = staleRaw === undefined ? current !== undefined && parseHolder(current) === undefined : current === staleRaw;
    if (!stillStale) return 'retry';
    const temp = tempPathFor(lockPath);
    await fs.writeFile(temp, content, { flag: 'wx' });
    if (fsync) await syncFile(temp);
    await fs.rename(temp, lockPath);
    if (fsync) await syncDirectory(path.dirname(lockPath));
    return 'replaced';
  } finally {
    await fs.rm(guard, { force: true });
  }
}

async function readHolder(lockPath: string): Promise<'missing' | 'unparsable' | { holder: LockHolder; raw: string }> {
  const raw = await readRaw(lockPath);
  if (raw === undefined) return 'missing';
  const holder = parseHolder(raw);
  return holder ? { holder, raw } : 'unparsable';
}

async function readRaw(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

function parseHolder(raw: string): LockHolder | undefined {
  try {
    const v = JSON.parse(raw) as Partial<LockHolder>;
    // pid must be a real process id: process.kill(0 or negative) would signal a process group.
    if (!Number.isInteger(v.pid) || (v.pid as number) <= 0) return undefined;
    if (typeof v.host !== 'string' || typeof v.startedAt !== 'string' || typeof v.token !== 'string') return undefined;
    return { pid: v.pid as number, host: v.host, startedAt: v.startedAt, command: String(v.command ?? '?'), token: v.token };
  } catch {
    return undefined;
  }
}

async function olderThan(file: string, ms: number): Promise<boolean> {
  try {
    const st = await fs.stat(file);
    return Date.now() - st.mtimeMs > ms;
  } catch {
    return false;
  }
}

async function syncFile(file: string): Promise<void> {
  const handle = await fs.open(file, 'r+');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
