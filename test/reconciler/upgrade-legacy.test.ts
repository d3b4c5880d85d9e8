// Upgrading runctl under a run in flight (issue 10: "nobody loses a run on upgrade"). The state is
// laid out as the runctl before uids wrote it: a status record and events without uid, instances
// without a runctl:uid tag, storage at runs/<run>/g<gen>/…. The upgraded controller reads the
// record with its legacy uid, keeps the instance, and after an interruption resumes from the
// checkpoint at the old prefix; a run created afterwards gets a UUID and never touches the old prefix.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Controller } from '../../src/reconciler/controller.js';
import { FileStore } from '../../src/state/file-store.js';
import { isLegacyUid, isUid, legacyUid } from '../../src/state/identity.js';
import { MemoryProvider, type World } from '../support/memory-provider.js';
import { testRun } from '../support/runs.js';

const roots: string[] = [];
afterAll(() => roots.forEach((r) => rmSync(r, { recursive: true, force: true })));

/** What the runctl before uids left: no uid anywhere, world keys by name only. */
function asBeforeUids(root: string, world: World, run: string): void {
  const dir = path.join(root, 'state', 'runs', run);
  const status = JSON.parse(readFileSync(path.join(dir, 'status.json'), 'utf8'));
  const uid = status.uid as string;
  delete status.uid;
  writeFileSync(path.join(dir, 'status.json'), JSON.stringify(status, null, 2));
  const events = readFileSync(path.join(dir, 'events.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => {
      const e = JSON.parse(l);
      delete e.uid;
      e.id = String(e.id).replace(`${run}@${uid}:`, `${run}:`);
      return JSON.stringify(e);
    });
  writeFileSync(path.join(dir, 'events.jsonl'), `${events.join('\n')}\n`);
  const strip = <T>(m: Record<string, T>) => Object.fromEntries(Object.entries(m).map(([k, v]) => [k.replace(`@${uid}`, ''), v]));
  world.agents = strip(world.agents);
  world.checkpoints = strip(world.checkpoints);
  world.launches = strip(world.launches);
  for (const i of world.instances) delete i.uid;
  for (const a of Object.values(world.agents)) delete a.uid;
}

describe('upgrade from records without a uid', () => {
  it('a run in flight keeps its instance and resumes from the checkpoint at the un-suffixed prefix; a new run gets its own uid', async () => {
    const root = mkdtempSync(path.join(os.tmpdir(), 'runctl-legacy-'));
    roots.push(root);
    const script = { totalSteps: 200, stepsPerTick: 10, checkpointEvery: 10, spotAt: [{ run: 'old', attempt: 1, step: 80 }] };
    const provider = new MemoryProvider(script);
    const runs = [testRun('old')];
    const make = (store: FileStore) =>
      new Controller({
        store,
        provider: async () => provider,
        load: async () => ({ runs, diagnostics: [], invalidFiles: [] }),
        controller: 'test',
        repoRoot: root,
        prune: false,
        bundleSweepIntervalMs: 0,
      });

    let store = new FileStore(path.join(root), { fsync: false });
    await store.open();
    let c = make(store);
    for (let i = 0; i < 40 && ((await store.getStatus('old'))?.lastCheckpoint?.step ?? 0) < 40; i++) await c.runOnce();
    await c.stop();
    await store.close();
    const before = JSON.parse(readFileSync(path.join(root, 'state', 'runs', 'old', 'status.json'), 'utf8'));
    expect(before.phase).toBe('Training');
    asBeforeUids(root, provider.world, 'old');
    const checkpointed = provider.world.checkpoints['old/g1']!.at(-1)!;

    // The upgraded controller.
    store = new FileStore(path.join(root), { fsync: false });
    await store.open();
    const read = (await store.getStatus('old'))!;
    expect(read.uid).toBe(legacyUid('old', before.createdAt));
    runs.push(testRun('fresh'));
    c = make(store);
    const summary = await c.runUntilSettled();
    await c.stop();

    const old = summary.statuses.find((s) => s.run === 'old')!;
    expect(isLegacyUid(old.uid)).toBe(true);
    expect(old.uid).toBe(read.uid);
    expect([old.phase, old.attempt, old.interruptions]).toEqual(['Completed', 2, 1]);
    // Attempt 1's instance was kept (not relaunched); attempt 2 launched untagged, like the rest of
    // the run, and resumed from the newest checkpoint at the old prefix.
    expect(provider.world.launches).toMatchObject({ 'old/g1/a1': 1, 'old/g1/a2': 1 });
    expect(provider.world.agents['old/g1/a2']!.startStep).toBeGreaterThanOrEqual(checkpointed);
    expect(provider.world.instances.filter((i) => i.run === 'old').every((i) => i.uid === undefined)).toBe(true);
    // Its history is intact: events before the upgrade (no uid) and after (its legacy uid).
    const events = await store.readEvents('old');
    expect(events[0]).toMatchObject({ id: 'old:created', action: 'created' });
    expect(events.some((e) => e.uid === old.uid)).toBe(true);

    const fresh = summary.statuses.find((s) => s.run === 'fresh')!;
    expect(isUid(fresh.uid) && !isLegacyUid(fresh.uid)).toBe(true);
    expect(provider.world.launches[`fresh@${fresh.uid}/g1/a1`]).toBe(1);
    await store.close();
  }, 60_000);
});
