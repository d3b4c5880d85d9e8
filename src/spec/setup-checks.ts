// Checks of the two fields that say which files cross to the instance besides the bundle's
// default: `code.include` (gitignore-style patterns shipped even when .gitignore leaves them out)
// and `setup.cache` (what setup builds, kept in storage; its key files). The schema says their
// shapes; these say what the agent and the bundle builder would otherwise trip over later, on the
// instance (issue 12). Paths are relative to code.path and use forward slashes.
import type { CodePathChecker } from './code-path.js';
import { describeValue, error, type Problem } from './problem.js';

type Obj = Record<string, unknown>;

const GLOB = /[*?[\]{}]/;

function obj(value: unknown): Obj | undefined {
  return value !== null && typeof value === 'object' && !Array.isArray(value) ? (value as Obj) : undefined;
}

function strings(value: unknown): Array<[number, string]> {
  return Array.isArray(value) ? value.flatMap((v, i) => (typeof v === 'string' ? [[i, v] as [number, string]] : [])) : [];
}

/**
 * What is wrong with `rel` as a path inside the code directory, or undefined. `what` names the
 * thing for the message ("a folder setup creates", "a key file").
 */
export function relativePathProblem(rel: string, what: string): string | undefined {
  const shown = describeValue(rel);
  if (/[\n\r\0]/.test(rel)) return `must be one path without line breaks (got ${shown})`;
  if (rel.startsWith('/') || rel.startsWith('~') || /^[A-Za-z]:[\\/]/.test(rel)) {
    return `must be relative to the code directory (code.path), e.g. .venv (got ${shown})`;
  }
  if (rel.includes('\\')) return `must use forward slashes (got ${shown})`;
  const parts = rel.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) return `must stay inside the code directory: ".." is not allowed (got ${shown})`;
  if (GLOB.test(rel)) return `must name ${what} exactly: wildcards are not supported (got ${shown})`;
  if (parts.length === 0) return `must name ${what} inside the code directory, not the code directory itself (got ${shown})`;
  if (parts[0] === '.git' || parts[0] === '.runctl-bundle') return `must not be ${parts[0]}, which runctl manages (got ${shown})`;
  return undefined;
}

/** `a/./b/` -> `a/b`. */
export function normalizeRelative(rel: string): string {
  return rel
    .split('/')
    .filter((p) => p !== '' && p !== '.')
    .join('/');
}

/** Problems with spec.setup's mapping form (spec.setup.cache.paths and .key). */
export function checkSetupCache(spec: Obj, codePaths: CodePathChecker, problems: Problem[]): void {
  const cache = obj(obj(spec.setup)?.cache);
  if (!cache) return;
  const seen: Array<{ norm: string; index: number }> = [];
  for (const [i, rel] of strings(cache.paths)) {
    const at = ['spec', 'setup', 'cache', 'paths', i];
    const problem = relativePathProblem(rel, 'a folder or file setup creates');
    if (problem) {
      problems.push(error(at, problem));
      continue;
    }
    const norm = normalizeRelative(rel);
    const clash = seen.find((s) => s.norm === norm || norm.startsWith(`${s.norm}/`) || s.norm.startsWith(`${norm}/`));
    if (clash) {
      problems.push(
        error(at, clash.norm === norm ? `repeats ${describeValue(rel)} (already item ${clash.index})` : `overlaps item ${clash.index} (${describeValue(clash.norm)}): list a folder once, not also what is inside it`),
      );
      continue;
    }
    seen.push({ norm, index: i });
  }
  const codePath = typeof obj(spec.code)?.path === 'string' ? (obj(spec.code)?.path as string) : undefined;
  const codeOk = codePath !== undefined && codePaths.check(codePath) === undefined;
  const keys = new Set<string>();
  for (const [i, rel] of strings(cache.key)) {
    const at = ['spec', 'setup', 'cache', 'key', i];
    const problem = relativePathProblem(rel, 'a file');
    if (problem) {
      problems.push(error(at, problem));
      continue;
    }
    const norm = normalizeRelative(rel);
    if (keys.has(norm)) {
      problems.push(error(at, `repeats ${describeValue(rel)}: list each key file once`));
      continue;
    }
    keys.add(norm);
    if (codeOk) {
      const missing = codePaths.checkFile(codePath, norm);
      if (missing) problems.push(error(at, missing));
    }
  }
}

/** Problems with spec.code.include: patterns that could only be mistakes. */
export function checkCodeInclude(spec: Obj, problems: Problem[]): void {
  for (const [i, pattern] of strings(obj(spec.code)?.include)) {
    const at = ['spec', 'code', 'include', i];
    const shown = describeValue(pattern);
    if (/[\n\r\0]/.test(pattern)) problems.push(error(at, `must be one pattern without line breaks (got ${shown})`));
    else if (pattern.trim() === '') problems.push(error(at, `is blank, which matches nothing (got ${shown})`));
    else if (pattern.startsWith('#')) problems.push(error(at, `starts with "#", which makes it a comment in gitignore syntax that matches nothing; write \\# for a name starting with # (got ${shown})`));
    else if (pattern === '!' || pattern === '/' || pattern === '!/') problems.push(error(at, `matches nothing (got ${shown}); write a pattern such as data/**/*.bin`));
    else if (pattern.includes('\\') && /\\$/.test(pattern)) problems.push(error(at, `ends with a backslash, which escapes nothing (got ${shown})`));
    else if (pattern.replace(/^!/, '').split('/').includes('..')) {
      problems.push(error(at, `must stay inside the code directory: ".." is not allowed in a pattern, which is relative to code.path (got ${shown})`));
    }
  }
}
