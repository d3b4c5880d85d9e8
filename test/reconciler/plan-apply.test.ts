// `apply` after `plan` does exactly what the plan said: one reconcile pass over the same desired
// state, and the spec-driven events of that pass name the same action for every run.
import { describe, expect, it } from 'vitest';
import type { DesiredState } from '../../src/reconciler/controller.js';
import { planChanges, type PlanAction } from '../../src/reconciler/plan.js';
import type { RunEvent } from '../../src/state/types.js';
import { harness } from './harness.js';
import { editedRuns, planWorld } from './plan-fixtures.js';

/** The plan action a pass's new events amount to, read from the event log only. */
function actionFromEvents(events: RunEvent[]): PlanAction | 'nothing' {
  const machineEvent = (e: RunEvent) => (e.kind === 'transition' ? String(e.data?.event) : undefined);
  if (events.some((e) => e.kind === 'spec' && e.action === 'created')) return 'create';
  if (events.some((e) => machineEvent(e) === 'NEW_GENERATION')) return 'new-generation';
  if (events.some((e) => machineEvent(e) === 'SUSPEND')) return 'suspend';
  if (events.some((e) => machineEvent(e) === 'RESUME')) return 'resume';
  if (events.some((e) => machineEvent(e) === 'DELETE')) return 'prune';
  if (events.some((e) => e.kind === 'spec' && e.action === 'updated')) return 'update';
  return 'nothing';
}

describe('apply after plan', () => {
  for (const prune of [true, false]) {
    it(`carries out exactly the planned action for every run (prune ${prune ? 'on' : 'off'}), and a plan right after shows no changes`, async () => {
      const world = await planWorld();
      const desired: DesiredState = { runs: editedRuns(world), diagnostics: [], invalidFiles: [] };
      const before = new Map([...world.store.events].map(([run, events]) => [run, events.length]));
      const plan = planChanges({ desired, statuses: [...world.store.statuses.values()], prune });

      const apply = harness(desired.runs, { store: world.store, provider: world.provider, prune });
      await apply.controller.runOnce();
      await apply.controller.stop();

      const done = plan.runs.map((r) => {
        const events = (world.store.events.get(r.run) ?? []).slice(before.get(r.run) ?? 0);
        return [r.run, actionFromEvents(events)];
      });
      const expected = plan.runs.map((r) => [r.run, r.action === 'no-op' || r.action === 'orphaned' ? 'nothing' : r.action]);
      expect(done).toEqual(expected);

      // The new generation the plan announced is the one the reconciler started.
      const delta = plan.runs.find((r) => r.run === 'delta')!;
      const deltaNow = (await world.store.getStatus('delta'))!;
      expect(deltaNow.nextSpec?.generation ?? deltaNow.generation).toBe(delta.generation.to);
      // In-place updates kept the attempt and the generation.
      const charlie = (await world.store.getStatus('charlie'))!;
      expect([charlie.generation, charlie.attempt, charlie.spec.timeouts.training]).toEqual([1, 1, '72h']);
      // Orphans are untouched, pruned finished runs are archived (their status is gone).
      expect((await world.store.getStatus('hotel')) === undefined).toBe(prune);

      const after = planChanges({ desired, statuses: [...world.store.statuses.values()], prune });
      expect(after.changes).toBe(0);
    });
  }

  it('an empty runs folder: plan shows nothing to prune, and apply with prune deletes nothing', async () => {
    const world = await planWorld();
    const desired: DesiredState = { runs: [], diagnostics: [], invalidFiles: [] };
    const plan = planChanges({ desired, statuses: [...world.store.statuses.values()], prune: true });
    expect(plan.changes).toBe(0);
    expect(plan.pruneRefused).toBeDefined();
    const apply = harness([], { store: world.store, provider: world.provider, prune: true });
    await apply.controller.runOnce();
    await apply.controller.stop();
    expect(apply.controller.pruneRefusal).toBe(plan.pruneRefused);
    expect((await world.store.listRuns()).length).toBe(7);
    const deletes = [...world.store.events.values()].flat().filter((e) => e.data?.event === 'DELETE');
    expect(deletes).toEqual([]);
  });
});
