// Plan-time cloud checks: only runs a pass would launch are checked, identical questions are asked
// once, problems land at the field in the file, and refused runs leave the desired state.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { DesiredState } from '../../src/reconciler/controller.js';
import type { Plan, PlannedRun } from '../../src/reconciler/plan.js';
import { preflightPlan, withoutRefused } from '../../src/reconciler/preflight.js';
import type { PreflightProblem, Provider } from '../../src/providers/types.js';
import type { RunSpec } from '../../src/spec/types.js';
import { testRun } from '../support/runs.js';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-preflight-'));

function runInFile(name: string) {
  const file = path.join(dir, `${name}.yaml`);
  fs.writeFileSync(file, `# ${name}\nspec:\n  resources:\n    instanceTypes: [g5.xlarg]\n`);
  return { ...testRun(name, { resources: { instanceTypes: ['g5.xlarg'] } }), file };
}

function planOf(actions: Record<string, PlannedRun['action']>): Plan {
  return { runs: Object.entries(actions).map(([run, action]) => ({ run, action }) as PlannedRun) } as Plan;
}

function fakeProvider(answer: (spec: RunSpec) => Promise<PreflightProblem[]>) {
  const asked: RunSpec[] = [];
  const provider = {
    preflight: (spec: RunSpec) => {
      asked.push(spec);
      return answer(spec);
    },
  } as unknown as Provider;
  return { provider, asked };
}

describe('preflightPlan', () => {
  const runs = [runInFile('a'), runInFile('b'), runInFile('c')];
  const desired: DesiredState = { runs, diagnostics: [], invalidFiles: [] };
  const typo: PreflightProblem = { path: ['spec', 'resources', 'instanceTypes', 0], message: 'g5.xlarg is not offered', severity: 'error' };

  it('checks only runs that would launch, asks once per distinct question, and places problems at the field', async () => {
    const { provider, asked } = fakeProvider(async () => [typo]);
    const result = await preflightPlan(desired, planOf({ a: 'create', b: 'resume', c: 'no-op' }), async () => provider);
    expect(asked).toHaveLength(1);
    expect([...result.refused].sort()).toEqual(['a', 'b']);
    expect(result.diagnostics.map((d) => [path.basename(d.file), d.line, d.column, d.path, d.severity])).toEqual([
      ['a.yaml', 4, 21, 'spec.resources.instanceTypes[0]', 'error'],
      ['b.yaml', 4, 21, 'spec.resources.instanceTypes[0]', 'error'],
    ]);

    const narrowed = withoutRefused(desired, result);
    expect(narrowed.runs.map((r) => r.run.metadata.name)).toEqual(['c']);
    expect(narrowed.invalidFiles.map((f) => path.basename(f))).toEqual(['a.yaml', 'b.yaml']);
  });

  it('makes no call when no run would launch', async () => {
    const { provider, asked } = fakeProvider(async () => [typo]);
    const result = await preflightPlan(desired, planOf({ a: 'no-op', b: 'update', c: 'suspend' }), async () => provider);
    expect(asked).toHaveLength(0);
    expect(result.diagnostics).toEqual([]);
  });

  it('reports each run it could not check, and refuses none', async () => {
    const { provider } = fakeProvider(async () => {
      throw new Error('no AWS credentials found');
    });
    const result = await preflightPlan(desired, planOf({ a: 'create', b: 'new-generation' }), async () => provider);
    expect(result.unchecked).toEqual([
      { run: 'a', message: 'no AWS credentials found' },
      { run: 'b', message: 'no AWS credentials found' },
    ]);
    expect(result.refused.size).toBe(0);
    expect(withoutRefused(desired, result)).toBe(desired);
  });

  it('a provider without preflight is not asked; one that cannot be set up is a check not made', async () => {
    const local = { name: 'local' } as unknown as Provider;
    const none = await preflightPlan(desired, planOf({ a: 'create' }), async () => local);
    expect(none).toEqual({ diagnostics: [], unchecked: [], refused: new Set() });

    const broken = await preflightPlan(desired, planOf({ a: 'create' }), async () => {
      throw new Error('no region: set AWS_REGION');
    });
    expect(broken.unchecked).toEqual([{ run: 'a', message: 'no region: set AWS_REGION' }]);
    expect(broken.refused.size).toBe(0);
  });

  it('a warning does not refuse the run', async () => {
    const { provider } = fakeProvider(async () => [{ ...typo, severity: 'warning' }]);
    const result = await preflightPlan(desired, planOf({ a: 'create' }), async () => provider);
    expect(result.refused.size).toBe(0);
    expect(withoutRefused(desired, result).runs).toHaveLength(3);
    expect(withoutRefused(desired, result).diagnostics).toHaveLength(1);
  });
});
