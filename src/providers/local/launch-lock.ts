// Serialises launches of one attempt, within this process and across controller processes on the
// same machine (a laptop reconcile and a `--watch` in another terminal), so "look for the
// attempt's sandbox, else create one" can never create two. The lock is a directory (mkdir is
// atomic) holding its owner's pid; a lock whose owner died is taken over.
import { createHash } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { RetryableError, type AttemptKey } from '../types.js';
import { errnoCode, sleep } from './fs-util.js';
import { isProcessAlive, processStartTime } from './processes.js';

const WAIT_MS = 15_000;
/** A lock older than this is stale even if a process with its owner's pid exists (pid reuse). */
const STALE_MS = 60_000;

const inProcess = new Map<string, Promise<unknown>>();

export async function withLaunchLock<T>(instancesDir: string, key: AttemptKey, fn: () => Promise<T>): Promise<T> {
  const name = `.launch-${createHash('sha256').update(`${key.run}\0${key.generation}\0${key.attempt}`).digest('hex').slice(0, 16)}`;
  const lockDir = path.join(instancesDir, name);
  const previous = inProcess.get(lockDir) ?? Promise.resolve();
  const run = previous.catch(() => undefined).then(async () => {
    await acquire(instancesDir, lockDir);
    try {
      return await fn();
    } finally {
      await fs.rm(lockDir, { recursive: true, force: true });
    }
  });
  inProcess.set(lockDir, run);
  try {
    return await run;
  } finally {
    if (inProcess.get(lockDir) === run) inProcess.delete(lockDir);
  }
}

async function acquire(instancesDir: string, lockDir: string): Promise<void> {
  await fs.mkdir(instancesDir, { recursive: true });
  const deadline = Date.now() + WAIT_MS;
  for (;;) {
    try {
      await fs.mkdir(lockDir);
      await fs.writeFile(path.join(lockDir, 'owner.json'), JSON.stringify({ pid: process.pid, startTime: processStartTime(process.pid) }));
      return;
    } catch (err) {
      if (errnoCode(err) !== 'EEXIST') throw err;
    }
    if (await isStale(lockDir)) {
      await fs.rm(lockDir, { recursive: true, force: true });
      continue;
    }
    if (Date.now() >= deadline) {
      throw new RetryableError(`another controller process is launching this attempt (lock ${lockDir}); trying again`, { code: 'LaunchLocked' });
    }
    await sleep(50);
  }
}

async function isStale(lockDir: string): Promise<boolean> {
  try {
    const stat = await fs.stat(lockDir);
    if (Date.now() - stat.mtimeMs > STALE_MS) return true;
    const owner = JSON.parse(await fs.readFile(path.join(lockDir, 'owner.json'), 'utf8')) as { pid: number; startTime?: string };
    return !isProcessAlive(owner.pid, owner.startTime ?? undefined);
  } catch {
    // Gone already (try again at once), or no owner file yet: its creator is between mkdir and
    // write, so it gets until the lock ages out.
    return false;
  }
}
