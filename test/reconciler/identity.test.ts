// Run identity against the in-memory cloud: a run deleted and re-created under the same name is a
// new incarnation (new uid) that adopts, restores and shows nothing of its predecessor (issue 10,
// input 1). The same with real processes: test/e2e/run-identity.test.ts.
import { describe, expect, it } from 'vitest';
import { isUid } from '../../src/state/identity.js';
import { agentIn, launchesIn } from '../support/memory-provider.js';
import { testRun } from '../support/runs.js';
import { harness } from './harness.js';

describe('run identity (uid)', () => {
  it('a run re-created under a pruned one\'s name is attempt 1, restores nothing, launches its own instance and logs its own creation', async () => {
    const stays = testRun('stays', { run: 'python3 other.py' });
    const h = harness([testRun('exp', { run: 'python3 model_a.py' }), stays], { prune: true, script: { totalSteps: 1000, checkpointEvery: 10 } });
    const first = h.controller.runUntilSettled();
    await waitFor(() => (agentIn(h.provider.world, 'exp', 1, 1)?.lastCheckpoint ?? 0) >= 30);
    const oldStatus = (await h.store.getStatus('exp'))!;
    expect(isUid(oldStatus.uid)).toBe(true);
    h.desired.runs = [stays];
    await h.controller.resync();
    await first;
    expect(await h.store.getStatus('exp')).toBeUndefined();
    const oldInstance = h.provider.world.instances.find((i) => i.run === 'exp')!;
    expect(oldInstance).toMatchObject({ uid: oldStatus.uid, state: 'terminated' });

    // A different spec under the same name. The memory store keeps the old log under the name (as
    // a deletion cut short would in S3): only the new incarnation's events may be shown.
    const recreated = testRun('exp', { run: 'python3 model_b.py' });
    h.desired.runs = [recreated, stays];
    const abort = new AbortController();
    const second = h.controller.runUntilSettled(abort.signal);
    await waitFor(() => h.controller.runs.some((s) => s.run === 'exp' && s.uid !== oldStatus.uid && s.phase === 'Training'));
    abort.abort();
    await second;
    await h.controller.stop();

    const status = (await h.store.getStatus('exp'))!;
    expect(isUid(status.uid)).toBe(true);
    expect(status.uid).not.toBe(oldStatus.uid);
    expect(status.attempt).toBe(1);
    expect(status.interruptions).toBe(0);
    // Its own instance, launched (not adopted), tagged with its uid; the old one untouched.
    const mine = h.provider.world.instances.filter((i) => i.run === 'exp' && i.uid === status.uid);
    expect(mine).toHaveLength(1);
    expect(status.instances.map((i) => i.id)).toEqual([mine[0]!.id]);
    expect(h.provider.world.launches[`exp@${status.uid}/g1/a1`]).toBe(1);
    expect(launchesIn(h.provider.world, 'exp', 1, 1)).toBe(1);
    // Restored nothing: the agent of the new incarnation started from step 0.
    expect(h.provider.world.agents[`exp@${status.uid}/g1/a1`]?.startStep).toBe(0);
    expect(h.provider.world.agents[`exp@${oldStatus.uid}/g1/a1`]?.phase).toBe('stopped');

    const events = (await h.store.readEvents('exp')).filter((e) => e.uid === status.uid);
    expect(events[0]).toMatchObject({ kind: 'spec', action: 'created', uid: status.uid });
    expect(events.every((e) => e.id.startsWith(`exp@${status.uid}:`))).toBe(true);
    expect(events.some((e) => e.action === 'launch' && e.result === 'ok')).toBe(true);
    expect(events.some((e) => e.result === 'adopted')).toBe(false);
  });
});

async function waitFor(cond: () => boolean, timeoutMs = 20_000): Promise<void> {
  const start = Date.now();
  while (!cond()) {
    if (Date.now() - start > timeoutMs) throw new Error('timed out waiting for condition');
    await new Promise((r) => setTimeout(r, 5));
  }
}
