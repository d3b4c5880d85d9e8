// Whole-file replacement that a crash can never tear: readers see the old content or the new,
// never a mix. The temp file lives in the target's directory so the rename stays on one
// filesystem (rename across filesystems is a copy, which is not atomic).
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';

/** Suffix of in-flight temp files; anything ending in it is debris from a write that never finished. */
export const TEMP_SUFFIX = '.tmp';

export function tempPathFor(target: string): string {
  return `${target}.${process.pid}.${randomBytes(4).toString('hex')}${TEMP_SUFFIX}`;
}

export interface AtomicWriteOptions {
  /** Flush file and directory to disk (survives power loss, not only a process crash). */
  fsync: boolean;
}

export async function writeFileAtomic(target: string, data: string, opts: AtomicWriteOptions): Promise<void> {
  const temp = tempPathFor(target);
  const handle = await fs.open(temp, 'wx', 0o644);
  try {
    await handle.writeFile(data, 'utf8');
    if (opts.fsync) await handle.sync();
  } catch (err) {
    await handle.close().catch(() => undefined);
    await fs.rm(temp, { force: true });
    throw err;
  }
  await handle.close();
  try {
    await fs.rename(temp, target);
  } catch (err) {
    await fs.rm(temp, { force: true });
    throw err;
  }
  if (opts.fsync) await syncDirectory(path.dirname(target));
}

/** Makes a rename or a new directory entry durable. Some platforms cannot open directories. */
export async function syncDirectory(dir: string): Promise<void> {
  let handle: fs.FileHandle | undefined;
  try {
    handle = await fs.open(dir, 'r');
    await handle.sync();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EISDIR' && code !== 'EPERM' && code !== 'EINVAL' && code !== 'EBADF') throw err;
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

/** Removes temp files left in `dir` by writes a crash interrupted. Only safe while holding the lock. */
export async function removeStaleTempFiles(dir: string): Promise<number> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
  const stale = names.filter((n) => n.endsWith(TEMP_SUFFIX));
  await Promise.all(stale.map((n) => fs.rm(path.join(dir, n), { force: true })));
  return stale.length;
}
