// Which files a set of command-line paths means: files as given, folders searched recursively for
// *.yaml and *.yml. Hidden folders and node_modules are skipped, symlinked folders are not
// followed (no cycles, no wandering out of the repository), and the order is stable.
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { describeFsError } from './source.js';

export const SPEC_EXTENSIONS = ['.yaml', '.yml'];
export const PROJECT_FILE = 'runctl.yaml';

export interface FoundFiles {
  /** Absolute paths, sorted, without duplicates. */
  files: string[];
  /** Paths that could not be searched, with why. */
  missing: Array<{ path: string; reason: string }>;
}

export function findSpecFiles(inputs: readonly string[], cwd: string, skip: ReadonlySet<string> = new Set()): FoundFiles {
  const files = new Set<string>();
  const missing: FoundFiles['missing'] = [];
  for (const input of inputs) {
    const abs = path.resolve(cwd, input);
    let isDirectory: boolean;
    try {
      isDirectory = statSync(abs).isDirectory();
    } catch (err) {
      missing.push({ path: input, reason: describeFsError(err) });
      continue;
    }
    if (isDirectory) walk(abs, files, skip);
    else files.add(abs); // a file named explicitly is read whatever its extension
  }
  return { files: [...files].sort(), missing };
}

function walk(dir: string, out: Set<string>, skip: ReadonlySet<string>): void {
  let entries;
  try {
    entries = readdirSync(dir, { withFileTypes: true });
  } catch {
    return;
  }
  for (const entry of entries) {
    const abs = dir.endsWith(path.sep) ? dir + entry.name : dir + path.sep + entry.name;
    if (entry.isDirectory()) {
      if (!entry.name.startsWith('.') && entry.name !== 'node_modules') walk(abs, out, skip);
    } else if (SPEC_EXTENSIONS.includes(path.extname(entry.name).toLowerCase()) && !skip.has(abs)) {
      if (entry.isFile() || (entry.isSymbolicLink() && isFile(abs))) out.add(abs);
    }
  }
}

function isFile(abs: string): boolean {
  try {
    return statSync(abs).isFile();
  } catch {
    return false;
  }
}

/**
 * The repository root: the nearest folder, from `start` upwards, holding `.git` (a folder, or a
 * file in worktrees and submodules) or a runctl.yaml; `start` itself when there is none.
 */
export function findRepoRoot(start: string): string {
  let dir = path.resolve(start);
  for (;;) {
    if (existsSync(path.join(dir, '.git')) || existsSync(path.join(dir, PROJECT_FILE))) return dir;
    const parent = path.dirname(dir);
    if (parent === dir) return path.resolve(start);
    dir = parent;
  }
}

/** How a file is named in diagnostics: relative to the current directory, with forward slashes. */
export function displayPath(abs: string, cwd: string): string {
  const inside = abs.startsWith(cwd) && abs[cwd.length] === path.sep;
  const relative = inside ? abs.slice(cwd.length + 1) : path.relative(cwd, abs) || path.basename(abs);
  return relative.split(path.sep).join('/');
}
