// `reconcile --watch` with real files in a temp dir: every kind of edit is picked up through the
// file watcher (no manual resync), an invalid edit never reaches the provider, and prune only
// deletes what the guard allows.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { eventually, spec, watchedFolder, type WatchedFolder } from './watch-support.js';
import { agentIn, checkpointsIn } from '../support/memory-provider.js';

let w: WatchedFolder | undefined;
afterEach(async () => {
  await w?.close();
  w = undefined;
});

const phase = (folder: WatchedFolder, run: string, wanted: string) => async () => ((await folder.status(run))?.phase === wanted ? true : undefined);

describe('reconcile --watch', () => {
  it('picks up create, edit, invalid edit, fix, rename and delete; the invalid edit never reaches the provider', async () => {
    w = await watchedFolder({ prune: true, files: { 'keep.yaml': spec('keep') } });
    const folder = w;
    await eventually(phase(folder, 'keep', 'Training'), 'keep training');

    // create
    folder.write('a.yaml', spec('a'));
    await eventually(phase(folder, 'a', 'Training'), 'a created and training');

    // edit (supervision: in place)
    folder.write('a.yaml', spec('a', { training: '72h' }));
    const updated = await eventually(async () => (await folder.events('a')).find((e) => e.kind === 'spec' && e.action === 'updated'), 'an in-place update event');
    expect(updated.message).toContain('timeouts.training: 48h -> 72h');
    expect((await folder.status('a'))?.spec.timeouts.training).toBe('72h');

    // invalid edit: it also changes what is trained, so acting on it would start a new generation
    const sentBefore = folder.specsSent.length;
    const invalidLoad = folder.nextLoad((d) => d.invalidFiles.some((f) => f.endsWith('a.yaml')));
    folder.write('a.yaml', spec('a', { run: 'python3 train.py --lr 0.5', training: '72h', extra: '  resources: {market: spto}' }));
    const loaded = await invalidLoad;
    expect(loaded.diagnostics.map((d) => `${d.path}: ${d.message}`).join('\n')).toMatch(/spec\.resources\.market/);
    // Let the controller reconcile `a` a few more times with the invalid file in place.
    const reconciled = folder.controller.runs.find((s) => s.run === 'a')!.updatedAt;
    await eventually(() => folder.controller.runs.find((s) => s.run === 'a')!.updatedAt !== reconciled || undefined, 'a reconciled again');
    await new Promise((r) => setTimeout(r, 300));
    expect(folder.specsSent.slice(sentBefore).filter((s) => s.run === 'a')).toEqual([]);
    expect(folder.specsSent.some((s) => s.spec.run.includes('--lr 0.5'))).toBe(false);
    const duringInvalid = (await folder.status('a'))!;
    expect([duringInvalid.phase, duringInvalid.generation, duringInvalid.nextSpec, duringInvalid.spec.run]).toEqual(['Training', 1, undefined, 'python3 train.py']);

    // fix: the same change, now valid, makes a new generation
    folder.write('a.yaml', spec('a', { run: 'python3 train.py --lr 0.5', training: '72h' }));
    await eventually(async () => ((await folder.status('a'))?.generation === 2 && (await folder.status('a'))?.phase === 'Training') || undefined, 'generation 2 training');
    expect(folder.stopReasons).toContain('new-generation');
    expect((await folder.events('a')).some((e) => e.kind === 'spec' && e.action === 'new-generation' && e.message?.includes('run: python3 train.py -> python3 train.py --lr 0.5'))).toBe(true);

    // rename: same run, new file; nothing restarts
    fs.renameSync(path.join(folder.runsDir, 'a.yaml'), path.join(folder.runsDir, 'renamed.yaml'));
    const moved = await eventually(async () => (await folder.events('a')).find((e) => e.kind === 'spec' && e.action === 'moved'), 'a moved event');
    expect(moved.message).toMatch(/spec moved from .*runs\/a\.yaml to .*runs\/renamed\.yaml/);
    expect((await folder.status('a'))?.source?.file).toMatch(/renamed\.yaml$/);
    expect((await folder.status('a'))?.generation).toBe(2);

    // delete (prune on, another run stays): stopped with a checkpoint, then archived
    folder.remove('renamed.yaml');
    await eventually(async () => ((await folder.status('a')) === undefined ? true : undefined), 'a pruned');
    const transitions = (await folder.events('a')).filter((e) => e.kind === 'transition').map((e) => e.action);
    expect(transitions.at(-1)).toBe('Terminating -> Deleted');
    expect(folder.stopReasons.at(-1)).toBe('delete');
    expect((await folder.status('keep'))?.phase).toBe('Training');
  });

  it('picks up an editor-style atomic save (temp file renamed over the spec)', async () => {
    w = await watchedFolder({ files: { 'b.yaml': spec('b') } });
    const folder = w;
    await eventually(phase(folder, 'b', 'Training'), 'b training');
    const tmp = path.join(folder.runsDir, '.b.yaml.swp');
    fs.writeFileSync(tmp, spec('b', { training: '96h' }));
    fs.renameSync(tmp, path.join(folder.runsDir, 'b.yaml'));
    await eventually(async () => ((await folder.status('b'))?.spec.timeouts.training === '96h' ? true : undefined), 'b updated in place');
  });

  it('suspends and resumes a run through spec edits, from its checkpoint', async () => {
    w = await watchedFolder({ files: { 'c.yaml': spec('c') } });
    const folder = w;
    await eventually(() => ((agentIn(folder.provider.world, 'c', 1, 1)?.step ?? 0) >= 20 ? true : undefined), 'c trained a while');
    folder.write('c.yaml', spec('c', { suspend: true }));
    await eventually(phase(folder, 'c', 'Suspended'), 'c suspended');
    const stoppedAt = agentIn(folder.provider.world, 'c', 1, 1)!.step;
    expect(checkpointsIn(folder.provider.world, 'c', 1)?.at(-1)).toBe(stoppedAt);
    expect(folder.provider.world.instances.filter((i) => i.run === 'c').every((i) => i.state === 'terminated')).toBe(true);

    folder.write('c.yaml', spec('c', { suspend: false }));
    await eventually(phase(folder, 'c', 'Training'), 'c training again');
    expect(agentIn(folder.provider.world, 'c', 1, 2)?.startStep).toBe(stoppedAt);
    expect(folder.stopReasons).toEqual(['suspend']);
  });

  it('with prune off, deleting a file leaves its run running', async () => {
    w = await watchedFolder({ prune: false, files: { 'd.yaml': spec('d'), 'e.yaml': spec('e') } });
    const folder = w;
    await eventually(phase(folder, 'd', 'Training'), 'd training');
    const gone = folder.nextLoad((l) => l.runs.length === 1);
    folder.remove('d.yaml');
    await gone;
    await new Promise((r) => setTimeout(r, 300));
    expect((await folder.status('d'))?.phase).toBe('Training');
    expect(folder.stopReasons).toEqual([]);
  });

  it('an emptied or vanished runs folder prunes nothing, and says why', async () => {
    // The periodic resync is what notices a folder that vanished and came back.
    w = await watchedFolder({ prune: true, files: { 'f.yaml': spec('f'), 'g.yaml': spec('g') }, resyncIntervalMs: 500 });
    const folder = w;
    await eventually(async () => ((await folder.status('f'))?.phase === 'Training' && (await folder.status('g'))?.phase === 'Training') || undefined, 'f and g training');

    const empty = folder.nextLoad((l) => l.runs.length === 0);
    folder.remove('f.yaml');
    folder.remove('g.yaml');
    await empty;
    await eventually(() => folder.notices.find((n) => n.kind === 'prune-refused'), 'a prune-refused notice');
    await new Promise((r) => setTimeout(r, 300));
    expect(folder.stopReasons).toEqual([]);
    expect([(await folder.status('f'))?.phase, (await folder.status('g'))?.phase]).toEqual(['Training', 'Training']);
    expect(folder.notices.find((n) => n.kind === 'prune-refused')?.message).toMatch(/^not pruning 2 runs \(f, g\): the runs folder has no TrainingRuns at all/);

    // The folder itself disappears (a bad checkout): still nothing is pruned.
    const missing = folder.nextLoad((l) => (l.unreadable ?? []).length > 0);
    fs.rmSync(folder.runsDir, { recursive: true });
    const l = await missing;
    expect(l.unreadable?.[0]).toMatch(/runs: does not exist$/);
    await new Promise((r) => setTimeout(r, 300));
    expect(folder.stopReasons).toEqual([]);

    // One file back: now the other one really is gone, and prune proceeds for it alone.
    fs.mkdirSync(folder.runsDir);
    folder.write('f.yaml', spec('f'));
    await eventually(async () => ((await folder.status('g')) === undefined ? true : undefined), 'g pruned');
    expect((await folder.status('f'))?.phase).toBe('Training');
    expect(folder.stopReasons).toEqual(['delete']);
  });
});
