// Can every folder the runs come from be read? A folder that cannot be listed reads as empty to the
// spec loader, and an empty folder must never look like "delete every run" (prune-guard.ts).
import { promises as fs } from 'node:fs';
import path from 'node:path';

/** Input paths (and folders below them) that are missing or cannot be listed, each with why. */
export async function unreadableInputs(inputs: readonly string[], cwd: string): Promise<string[]> {
  const problems: string[] = [];
  for (const input of inputs) await check(path.resolve(cwd, input), input, problems);
  return problems;
}

async function check(abs: string, shown: string, problems: string[]): Promise<void> {
  let stat;
  try {
    stat = await fs.stat(abs);
  } catch (err) {
    problems.push(`${shown}: ${reason(err)}`);
    return;
  }
  if (!stat.isDirectory()) {
    try {
      await fs.access(abs, fs.constants.R_OK);
    } catch (err) {
      problems.push(`${shown}: ${reason(err)}`);
    }
    return;
  }
  let entries;
  try {
    entries = await fs.readdir(abs, { withFileTypes: true });
  } catch (err) {
    problems.push(`${shown}: ${reason(err)}`);
    return;
  }
  // The same folders the loader searches: hidden ones and node_modules are skipped, symlinks not followed.
  for (const e of entries) {
    if (e.isDirectory() && !e.name.startsWith('.') && e.name !== 'node_modules') {
      await check(path.join(abs, e.name), path.posix.join(shown, e.name), problems);
    }
  }
}

function reason(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'does not exist';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'ENOTDIR') return 'a path component is not a folder';
  return (err as Error).message;
}
