// Labels live in the spec files (metadata.labels), not in the status record: the dashboard reads
// them from the runs folder it is given, as `reconcile` would, and re-reads them at most every
// few seconds so a page refreshed every second does not parse YAML every second.
import { loadDesired } from '../reconciler/desired.js';
import type { ProjectConfig } from '../spec/types.js';

/** How long labels read from the spec files are reused, in milliseconds. */
export const LABELS_TTL_MS = 5000;

/**
 * A function giving each run's labels by run name, from the spec files under `paths` (default
 * `runs/` at the repository root). Invalid files are skipped (their runs show no labels):
 * `runctl validate` is where they are reported.
 */
export function specLabels(paths: string[], repoRoot: string, project: ProjectConfig): () => Promise<Map<string, Record<string, string>>> {
  let cached: { at: number; labels: Promise<Map<string, Record<string, string>>> } | undefined;
  return () => {
    const now = Date.now();
    if (!cached || now - cached.at > LABELS_TTL_MS) {
      const labels = loadDesired(paths, repoRoot, project)
        .then((d) => new Map(d.runs.map((r) => [r.run.metadata.name, { ...r.run.metadata.labels }])))
        .catch(() => new Map<string, Record<string, string>>());
      cached = { at: now, labels };
    }
    return cached.labels;
  };
}
