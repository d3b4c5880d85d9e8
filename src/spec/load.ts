// The entry point the rest of runctl calls: read TrainingRun files, check everything, and hand
// back the valid runs together with every problem found. Bad input never throws.
import path from 'node:path';
import { CodePathChecker } from './code-path.js';
import { compareDiagnostics, type Diagnostic } from './diagnostics.js';
import { displayPath, findRepoRoot, findSpecFiles, PROJECT_FILE } from './files.js';
import { loadProjectConfig } from './project.js';
import { loadFile, type NamedRun } from './load-file.js';
import type { LoadedRun, ProjectConfig } from './types.js';

export { loadProjectConfig } from './project.js';

export interface LoadOptions {
  /** Where code.path is resolved and runctl.yaml is read; defaults to findRepoRoot(cwd). */
  repoRoot?: string;
  /** Project settings to apply; when absent, runctl.yaml at repoRoot is loaded (and checked). */
  project?: ProjectConfig;
}

export interface LoadResult {
  /** Valid runs only, in file order. */
  runs: LoadedRun[];
  /** Every problem, sorted by file and position. */
  diagnostics: Diagnostic[];
  /** Every file read, as named in diagnostics (relative to the current directory). */
  files: string[];
}

/**
 * Loads TrainingRuns from files and folders (recursively, *.yaml and *.yml; multi-document files
 * allowed). With no paths, reads the runs/ folder at the repository root.
 */
export async function loadRuns(paths: string[], opts: LoadOptions = {}): Promise<LoadResult> {
  const cwd = process.cwd();
  const repoRoot = path.resolve(opts.repoRoot ?? findRepoRoot(cwd));
  const diagnostics: Diagnostic[] = [];
  let project = opts.project;
  if (!project) {
    const loaded = await loadProjectConfig(repoRoot);
    project = loaded.config;
    diagnostics.push(...loaded.diagnostics);
  }

  const inputs = paths.length > 0 ? paths : [path.join(repoRoot, 'runs')];
  // runctl.yaml is project configuration, not a run, when a folder search comes across it.
  const found = findSpecFiles(inputs, cwd, new Set([path.join(repoRoot, PROJECT_FILE)]));
  for (const { path: missing, reason } of found.missing) {
    diagnostics.push({ file: displayPath(path.resolve(cwd, missing), cwd), line: 1, column: 1, path: '', message: reason, severity: 'error' });
  }

  const ctx = { project, codePaths: new CodePathChecker(repoRoot) };
  const runs: LoadedRun[] = [];
  const names = new Map<string, NamedRun[]>();
  const files: string[] = [];
  for (const abs of found.files) {
    const file = displayPath(abs, cwd);
    files.push(file);
    const result = loadFile(abs, file, ctx);
    runs.push(...result.runs);
    diagnostics.push(...result.diagnostics);
    for (const named of result.names) {
      const places = names.get(named.name);
      if (places) places.push(named);
      else names.set(named.name, [named]);
    }
  }

  // A name defined twice is ambiguous: neither definition is used, and each names the other.
  const ambiguous = new Set<LoadedRun>();
  for (const [name, places] of names) {
    if (places.length < 2) continue;
    const located = places.map((p) => ({ ...p, ...p.position() }));
    for (const place of located) {
      const others = located.filter((p) => p !== place).map((p) => `${p.file}:${p.line}:${p.column}`);
      diagnostics.push({
        file: place.file,
        line: place.line,
        column: place.column,
        path: 'metadata.name',
        message: `duplicate run name "${name}": also defined at ${others.join(', ')}`,
        severity: 'error',
      });
      if (place.run) ambiguous.add(place.run);
    }
  }

  diagnostics.sort(compareDiagnostics);
  return { runs: runs.filter((r) => !ambiguous.has(r)), diagnostics, files };
}
