// Plan-time checks against the cloud, for the runs a pass would launch capacity for (created,
// moved to a new generation, resumed): what validation cannot know offline, such as whether an
// instance type is offered in the run's region and zones, or whether the image's root snapshot fits
// the root volume. Runs that keep going or stay as they
// are cost no call, so a steady-state plan stays free of cloud requests. A check that cannot be
// made (no credentials, no network) is reported and skipped: it never fails a plan by itself.
import type { PreflightProblem, Provider } from '../providers/types.js';
import { compareDiagnostics, type Diagnostic } from '../spec/diagnostics.js';
import { diagnosticAt, isWritten } from '../spec/locate.js';
import type { LoadedRun, RunSpec } from '../spec/types.js';
import type { DesiredState } from './controller.js';
import type { Plan, PlanAction } from './plan.js';

const LAUNCHING: ReadonlySet<PlanAction> = new Set(['create', 'new-generation', 'resume']);

export interface PreflightResult {
  diagnostics: Diagnostic[];
  /** Runs that could not be checked, and why. */
  unchecked: Array<{ run: string; message: string }>;
  /** Runs with an error: a pass must not launch anything for them. */
  refused: Set<string>;
}

export async function preflightPlan(
  desired: DesiredState,
  plan: Plan,
  provider: (name: RunSpec['provider']) => Promise<Provider>,
): Promise<PreflightResult> {
  const byName = new Map(desired.runs.map((r) => [r.run.metadata.name, r]));
  const launching = plan.runs
    .filter((p) => LAUNCHING.has(p.action))
    .map((p) => byName.get(p.run))
    .filter((r): r is LoadedRun => r !== undefined);
  // Runs asking the same question of the same cloud share one answer.
  const asked = new Map<string, Promise<{ problems: PreflightProblem[] } | { error: string }>>();
  const result: PreflightResult = { diagnostics: [], unchecked: [], refused: new Set() };
  await Promise.all(
    launching.map(async (loaded) => {
      const spec = loaded.run.spec;
      const name = loaded.run.metadata.name;
      let answer;
      try {
        const p = await provider(spec.provider);
        if (!p.preflight) return;
        const r = spec.resources;
        const key = JSON.stringify([spec.provider, r.region, r.instanceTypes, r.availabilityZones, r.image, r.rootVolumeGiB]);
        answer = asked.get(key);
        if (!answer) {
          answer = p.preflight(spec).then(
            (problems) => ({ problems }),
            (err: unknown) => ({ error: err instanceof Error ? err.message : String(err) }),
          );
          asked.set(key, answer);
        }
      } catch (err) {
        answer = Promise.resolve({ error: err instanceof Error ? err.message : String(err) });
      }
      const got = await answer;
      if ('error' in got) {
        result.unchecked.push({ run: name, message: got.error });
        return;
      }
      for (const problem of got.problems) {
        const at = problem.orAt && !isWritten(loaded, problem.path) ? problem.orAt : problem.path;
        result.diagnostics.push(diagnosticAt(loaded, at, problem.message, problem.severity));
        if (problem.severity === 'error') result.refused.add(name);
      }
    }),
  );
  result.unchecked.sort((a, b) => a.run.localeCompare(b.run));
  result.diagnostics.sort(compareDiagnostics);
  return result;
}

/** The desired state without the refused runs; their files count as invalid, so nothing is pruned or changed for them. */
export function withoutRefused(desired: DesiredState, checked: PreflightResult): DesiredState {
  if (checked.refused.size === 0 && checked.diagnostics.length === 0) return desired;
  const refusedFiles = desired.runs.filter((r) => checked.refused.has(r.run.metadata.name)).map((r) => r.file);
  return {
    ...desired,
    runs: desired.runs.filter((r) => !checked.refused.has(r.run.metadata.name)),
    diagnostics: [...desired.diagnostics, ...checked.diagnostics],
    invalidFiles: [...new Set([...desired.invalidFiles, ...refusedFiles])],
  };
}
