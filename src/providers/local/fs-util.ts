// Small file helpers shared by the local provider and its instance host. Every write that another
// process may read concurrently goes through a temp file and a rename, so readers see the old
// content or the new one, never a torn file.
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';

export function tempPathFor(target: string): string {
  return `${target}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
}

export async function writeFileAtomic(target: string, data: string | Uint8Array): Promise<void> {
  const temp = tempPathFor(target);
  try {
    await fs.writeFile(temp, data, { mode: 0o644 });
    await fs.rename(temp, target);
  } catch (err) {
    await fs.rm(temp, { force: true });
    throw err;
  }
}

export async function writeJsonAtomic(target: string, value: unknown): Promise<void> {
  await writeFileAtomic(target, `${JSON.stringify(value, null, 2)}\n`);
}

/**
 * Writes `target` only if it does not exist yet (first writer wins), still atomically: the content
 * is complete before the name appears. Returns false when another writer got there first.
 */
export async function createJsonExclusive(target: string, value: unknown): Promise<boolean> {
  const temp = tempPathFor(target);
  await fs.writeFile(temp, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o644 });
  try {
    await fs.link(temp, target);
    return true;
  } catch (err) {
    if (errnoCode(err) === 'EEXIST') return false;
    throw err;
  } finally {
    await fs.rm(temp, { force: true });
  }
}

/** Parsed JSON, or undefined when the file does not exist or is not (yet) valid JSON. */
export async function readJsonIfPresent<T>(file: string): Promise<T | undefined> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return undefined;
    throw err;
  }
  try {
    return JSON.parse(text) as T;
  } catch {
    return undefined;
  }
}

export async function exists(file: string): Promise<boolean> {
  try {
    await fs.access(file);
    return true;
  } catch {
    return false;
  }
}

export function errnoCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined;
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
