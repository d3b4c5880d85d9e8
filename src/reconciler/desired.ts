// The desired state: every valid TrainingRun under the runs folder(s), with the problems found.
import path from 'node:path';
import { hasErrors, type Diagnostic } from '../spec/diagnostics.js';
import { loadRuns } from '../spec/load.js';
import type { ProjectConfig } from '../spec/types.js';
import type { DesiredState } from './controller.js';
import { unreadableInputs } from './source-check.js';

export async function loadDesired(paths: string[], repoRoot: string, project?: ProjectConfig): Promise<DesiredState> {
  const result = await loadRuns(paths, { repoRoot, project });
  const byFile = new Map<string, Diagnostic[]>();
  for (const d of result.diagnostics) byFile.set(d.file, [...(byFile.get(d.file) ?? []), d]);
  const invalidFiles = [...byFile].filter(([, ds]) => hasErrors(ds)).map(([file]) => file);
  const unreadable = await unreadableInputs(paths.length > 0 ? paths : [path.join(repoRoot, 'runs')], process.cwd());
  return { runs: result.runs, diagnostics: result.diagnostics, invalidFiles, unreadable };
}
