// spec.code.path names the directory that is bundled and shipped: it must exist, be a directory,
// and stay inside the repository, including through symlinks (a bundle must never pick up the
// rest of the machine). Results are cached: a thousand runs usually share a handful of paths.
import { readdirSync, realpathSync, statSync } from 'node:fs';
import path from 'node:path';
import { describeFsError } from './source.js';
import { closestMatch } from './suggest.js';

export class CodePathChecker {
  private readonly cache = new Map<string, string | undefined>();
  private realRoot: string | undefined;

  constructor(private readonly repoRoot: string) {}

  /**
   * A message when `rel` (relative to the code directory `codePath`, forward slashes, already
   * checked to stay inside it) is not a regular file there: a setup cache key file.
   */
  checkFile(codePath: string, rel: string): string | undefined {
    const cacheKey = `${codePath}\u0000${rel}`;
    if (!this.cache.has(cacheKey)) this.cache.set(cacheKey, this.inspectFile(codePath, rel));
    return this.cache.get(cacheKey);
  }

  private inspectFile(codePath: string, rel: string): string | undefined {
    const target = path.resolve(this.repoRoot, codePath, ...rel.split('/'));
    const shown = `${codePath.replace(/\/+$/, '')}/${rel}`;
    try {
      const st = statSync(target);
      if (st.isDirectory()) return `must be a file, and ${shown} is a folder: list the files in it whose content decides what setup builds`;
      if (!st.isFile()) return `must be a regular file (${shown} is not)`;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return `file not found: ${shown} (key files are relative to code.path and must be shipped in the bundle)`;
      return `cannot be read: ${describeFsError(err)}`;
    }
    return undefined;
  }

  /** A message saying what is wrong with `codePath`, or undefined when it is fine. */
  check(codePath: string): string | undefined {
    if (!this.cache.has(codePath)) this.cache.set(codePath, this.inspect(codePath));
    return this.cache.get(codePath);
  }

  private inspect(codePath: string): string | undefined {
    if (path.isAbsolute(codePath) || /^[A-Za-z]:[\\/]/.test(codePath)) {
      return `must be relative to the repository root (got ${JSON.stringify(codePath)})`;
    }
    const parts = codePath.split(/[\\/]+/);
    if (parts.includes('..')) return `must not contain "..": the code must come from inside the repository (got ${JSON.stringify(codePath)})`;
    const shown = parts.filter((p) => p !== '' && p !== '.').join('/') || '.';
    const target = path.resolve(this.repoRoot, codePath);
    let isDirectory: boolean;
    try {
      isDirectory = statSync(target).isDirectory();
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') {
        const guess = this.suggest(parts.filter((p) => p !== '' && p !== '.'));
        return `directory not found: ${shown} (relative to the repository root${guess ? `; did you mean "${guess}"?` : ''})`;
      }
      return `cannot be read: ${describeFsError(err)}`;
    }
    if (!isDirectory) return `must be a directory (${shown} is a file)`;
    try {
      this.realRoot ??= realpathSync(this.repoRoot);
      const relative = path.relative(this.realRoot, realpathSync(target));
      if (relative === '..' || relative.startsWith(`..${path.sep}`) || path.isAbsolute(relative)) {
        return `resolves outside the repository through a symlink (${shown})`;
      }
    } catch (err) {
      return `cannot be read: ${describeFsError(err)}`;
    }
    return undefined;
  }

  /** The path with its first missing segment replaced by the closest directory name that exists. */
  private suggest(parts: string[]): string | undefined {
    let dir = this.repoRoot;
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i] as string;
      let entries: string[];
      try {
        entries = readdirSync(dir, { withFileTypes: true })
          .filter((e) => e.isDirectory() || e.isSymbolicLink())
          .map((e) => e.name);
      } catch {
        return undefined;
      }
      if (entries.includes(part)) {
        dir = path.join(dir, part);
        continue;
      }
      const match = closestMatch(part, entries);
      if (!match) return undefined;
      const fixed = [...parts.slice(0, i), match, ...parts.slice(i + 1)];
      try {
        return statSync(path.join(this.repoRoot, ...fixed)).isDirectory() ? fixed.join('/') : undefined;
      } catch {
        return undefined;
      }
    }
    return undefined;
  }
}
