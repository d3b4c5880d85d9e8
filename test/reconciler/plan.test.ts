// The plan is a pure function of the desired state and the stored statuses: one action per run,
// with the reason, the fields, the effect on a running attempt and a price.
import { beforeAll, describe, expect, it } from 'vitest';
import type { DesiredState } from '../../src/reconciler/controller.js';
import { estimatePrice, planChanges, recoveryPlan } from '../../src/reconciler/plan.js';
import type { RunStatus } from '../../src/state/types.js';
import { testRun, testSpec } from '../support/runs.js';
import { editedRuns, planWorld, type PlanWorld } from './plan-fixtures.js';

let world: PlanWorld;
let statuses: RunStatus[];

beforeAll(async () => {
  world = await planWorld();
  statuses = [...world.store.statuses.values()];
});

function desired(runs = editedRuns(world), extra: Partial<DesiredState> = {}): DesiredState {
  return { runs, diagnostics: [], invalidFiles: [], ...extra };
}

const actions = (plan: ReturnType<typeof planChanges>) => plan.runs.map((r) => [r.run, r.action]);

describe('plan', () => {
  it('classifies every run: create, no-op, update, new generation, suspend, resume, prune', () => {
    const plan = planChanges({ desired: desired(), statuses, prune: true });
    expect(actions(plan)).toEqual([
      ['alpha', 'create'],
      ['bravo', 'no-op'],
      ['charlie', 'update'],
      ['delta', 'new-generation'],
      ['echo', 'suspend'],
      ['foxtrot', 'resume'],
      ['golf', 'prune'],
      ['hotel', 'prune'],
    ]);
    expect(plan.changes).toBe(7);
    expect(plan.counts).toEqual({ create: 1, 'no-op': 1, update: 1, 'new-generation': 1, suspend: 1, resume: 1, prune: 2, orphaned: 0 });
    expect(plan.pruneRefused).toBeUndefined();
  });

  it('with prune off, removed runs are orphaned and left alone', () => {
    const plan = planChanges({ desired: desired(), statuses, prune: false });
    const removed = plan.runs.filter((r) => r.run === 'golf' || r.run === 'hotel');
    expect(removed.map((r) => [r.run, r.action, r.reason])).toEqual([
      ['golf', 'orphaned', 'runs/golf.yaml no longer defines it; prune is off'],
      ['hotel', 'orphaned', 'runs/hotel.yaml no longer defines it; prune is off'],
    ]);
    expect(plan.changes).toBe(5);
  });

  it('lists the supervision fields of an in-place update with before and after, and keeps the generation', () => {
    const charlie = planChanges({ desired: desired(), statuses, prune: false }).runs.find((r) => r.run === 'charlie')!;
    expect(charlie.changes).toEqual([{ path: 'timeouts.training', before: '48h', after: '72h', trained: false }]);
    expect(charlie.reason).toBe('supervision changed: timeouts.training');
    expect(charlie.generation).toEqual({ from: 1, to: 1 });
    expect(charlie.effect).toMatch(/^applied in place, no restart/);
  });

  it('says what a new generation does to the running attempt, and whether it is seeded', () => {
    const fresh = planChanges({ desired: desired(), statuses, prune: false }).runs.find((r) => r.run === 'delta')!;
    expect(fresh.generation).toEqual({ from: 1, to: 2 });
    expect(fresh.reason).toBe('what is trained changed: run');
    expect(fresh.changes).toEqual([{ path: 'run', before: 'python3 train.py', after: 'python3 train.py --lr 0.1', trained: true }]);
    expect(fresh.effect).toBe(
      'attempt 1 of generation 1 is checkpointed and stopped (final checkpoint sync confirmed), its instance terminated, ' +
        'then generation 2 starts from scratch (spec.recovery.seedFromPreviousGeneration is false)',
    );
    const seeded = planChanges({ desired: desired(editedRuns(world, { seed: true })), statuses, prune: false }).runs.find((r) => r.run === 'delta')!;
    expect(seeded.effect).toMatch(/then generation 2 starts seeded from generation 1's latest checkpoint \(spec\.recovery\.seedFromPreviousGeneration\)$/);
  });

  it('a new generation of a finished run starts on new capacity', () => {
    const plan = planChanges({ desired: desired([testRun('bravo', { setup: 'pip install -r requirements.txt' })]), statuses: statuses.filter((s) => s.run === 'bravo'), prune: false });
    expect(plan.runs[0]).toMatchObject({
      action: 'new-generation',
      reason: 'what is trained changed: setup',
      effect: 'generation 2 starts on new capacity from scratch (spec.recovery.seedFromPreviousGeneration is false)',
    });
  });

  it('never lists secret values, only that a reference changed', () => {
    const statusWithSecret = { ...statuses.find((s) => s.run === 'bravo')!, spec: testSpec({ secrets: { HF_TOKEN: 'ssm:/team/old' } }) };
    const edited = testRun('bravo', { secrets: { HF_TOKEN: 'ssm:/team/new' } });
    const plan = planChanges({ desired: desired([edited]), statuses: [{ ...statusWithSecret, specHash: 'old' }], prune: false });
    expect(plan.runs[0]!.changes).toEqual([{ path: 'secrets.HF_TOKEN', trained: true }]);
    expect(JSON.stringify(plan)).not.toContain('ssm:/team/');
  });

  it('an empty runs folder never prunes everything: every removed run is orphaned, with the reason', () => {
    const plan = planChanges({ desired: desired([]), statuses, prune: true });
    expect(plan.runs.every((r) => r.action === 'orphaned')).toBe(true);
    expect(plan.changes).toBe(0);
    expect(plan.pruneRefused).toMatch(/^not pruning 7 runs \(bravo, charlie, delta, echo, foxtrot, and 2 more\): the runs folder has no TrainingRuns at all/);
    expect(plan.pruneRefused).toContain('--allow-empty-prune');
    const allowed = planChanges({ desired: desired([]), statuses, prune: true, allowEmptyPrune: true });
    expect(allowed.runs.every((r) => r.action === 'prune')).toBe(true);
  });

  it('an unreadable runs folder, or a spec file with errors, holds prune back for this pass', () => {
    const unreadable = planChanges({ desired: desired(editedRuns(world), { unreadable: ['runs/team-b: permission denied'] }), statuses, prune: true });
    expect(unreadable.pruneRefused).toBe('not pruning 2 runs (golf, hotel): the runs folder could not be read (runs/team-b: permission denied); fix the path or permissions');
    expect(unreadable.runs.find((r) => r.run === 'golf')!.action).toBe('orphaned');
    const invalid = planChanges({ desired: desired(editedRuns(world), { invalidFiles: ['runs/other.yaml'] }), statuses, prune: true, allowEmptyPrune: true });
    expect(invalid.pruneRefused).toMatch(/^not pruning 2 runs \(golf, hotel\) while spec files have errors \(runs\/other\.yaml\)/);
  });

  it('a run whose file has errors keeps its last valid spec: no-op, not prune', () => {
    const plan = planChanges({ desired: desired(editedRuns(world).filter((r) => r.run.metadata.name !== 'charlie'), { invalidFiles: ['runs/charlie.yaml'] }), statuses, prune: true });
    expect(plan.runs.find((r) => r.run === 'charlie')).toMatchObject({ action: 'no-op', reason: 'runs/charlie.yaml has errors: the run keeps its last valid spec' });
    expect(plan.invalidFiles).toEqual(['runs/charlie.yaml']);
  });

  it('prices local runs at $0 and says "unknown" for AWS rather than guessing, with the spec ceiling when set', () => {
    expect(estimatePrice(testSpec())).toEqual({ hourlyUSD: 0, note: '$0.00/h (local)', worstCaseUSD: 0 });
    // The most expensive case offline: the spec's own ceiling for the whole of timeouts.training.
    expect(estimatePrice(testSpec({ provider: 'aws', resources: { market: 'spot', maxSpotPrice: 0.6 } }))).toEqual({
      hourlyUSD: null,
      note: 'unknown (spot price is read at launch; at most $0.60/h by spec.resources.maxSpotPrice); most expensive case $28.80 (x 48h, spec.timeouts.training)',
      worstCaseUSD: 28.8,
    });
    expect(estimatePrice(testSpec({ provider: 'aws', resources: { market: 'on-demand' } })).hourlyUSD).toBeNull();
  });

  it('shows recovery.prelaunch as it takes effect: unset is on for the spot markets, off for on-demand; a set value wins', () => {
    const on = "a notice launches the next attempt's capacity at once; its job starts once the final checkpoint is safe";
    const off = 'after a notice the replacement is launched once the interrupted attempt has stopped';
    expect(recoveryPlan(testSpec({ provider: 'aws', resources: { market: 'spot' } }))).toEqual({ prelaunch: true, note: `prelaunch on (recovery.prelaunch unset: on for market spot): ${on}` });
    expect(recoveryPlan(testSpec({ provider: 'aws', resources: { market: 'spot-then-on-demand' }, recovery: { prelaunchOnRebalance: true } }))).toEqual({
      prelaunch: true,
      note: `prelaunch on (recovery.prelaunch unset: on for market spot-then-on-demand): ${on} (also on a rebalance recommendation)`,
    });
    expect(recoveryPlan(testSpec({ provider: 'aws', resources: { market: 'on-demand' } }))).toEqual({ prelaunch: false, note: `prelaunch off (recovery.prelaunch unset: off for market on-demand): ${off}` });
    expect(recoveryPlan(testSpec({ recovery: { prelaunch: false } }))).toEqual({ prelaunch: false, note: `prelaunch off (recovery.prelaunch: false): ${off}` });
    expect(recoveryPlan(testSpec({ provider: 'aws', resources: { market: 'on-demand' }, recovery: { prelaunch: true } })).prelaunch).toBe(true);
    // A create carries it; a run already stored shows it only when a prelaunch field changed.
    const plan = planChanges({ desired: desired(), statuses, prune: true });
    expect(plan.runs.filter((r) => r.recovery).map((r) => r.run)).toEqual(['alpha']);
  });
});
