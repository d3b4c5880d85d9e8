// `runctl plan` and `runctl apply` as a user runs them: golden output for every action kind, and
// Terraform's exit codes (0 no changes, 1 error, 2 changes with --detailed-exitcode).
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Controller } from '../../src/reconciler/controller.js';
import { loadDesired } from '../../src/reconciler/desired.js';
import { FileStore } from '../../src/state/file-store.js';
import { manifestHead } from '../spec/helpers.js';
import { MemoryProvider } from '../support/memory-provider.js';
import { harnessCommand } from '../support/harness-bundle.js';

const RUNCTL = path.resolve('bin/runctl.js');
const HARNESS = harnessCommand('gitops-harness');
const cwd = process.cwd();
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-plan-'));

function spec(name: string, fields: { run?: string; training?: string; suspend?: boolean; seed?: boolean } = {}): string {
  return [
    ...manifestHead(name, 'local'),
    '  code: {path: ./code}',
    `  run: ${fields.run ?? 'python3 train.py'}`,
    `  timeouts: {training: ${fields.training ?? '48h'}}`,
    ...(fields.suspend !== undefined ? [`  suspend: ${fields.suspend}`] : []),
    ...(fields.seed ? ['  recovery: {seedFromPreviousGeneration: true}'] : []),
    '',
  ].join('\n');
}

const write = (dir: string, name: string, text: string) => fs.writeFileSync(path.join(dir, 'runs', name), text);

function project(name: string): string {
  const dir = path.join(root, name);
  fs.mkdirSync(path.join(dir, 'runs'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'code'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'code', 'train.py'), 'print(1)\n');
  fs.writeFileSync(path.join(dir, 'runctl.yaml'), 'prune: false\n');
  return dir;
}

function runctl(dir: string, ...args: string[]) {
  return spawnSync(process.execPath, [RUNCTL, ...args], { cwd: dir, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1', GITHUB_ACTIONS: '' } });
}

/** Reconciles the named files of `dir` into its .runctl store with a real controller, until `until` holds. */
async function reconcileInto(dir: string, files: string[], provider: MemoryProvider, until: (c: Controller) => boolean): Promise<void> {
  process.chdir(dir);
  try {
    const store = new FileStore(path.join(dir, '.runctl'), { fsync: false });
    await store.open();
    const controller = new Controller({
      store,
      provider: async () => provider,
      load: () => loadDesired(files.map((f) => `runs/${f}`), dir),
      controller: 'plan-test',
      repoRoot: dir,
      prune: false,
    });
    await controller.resync();
    const start = Date.now();
    while (!until(controller)) {
      if (Date.now() - start > 15_000) throw new Error(`not reached: ${JSON.stringify(controller.runs.map((s) => [s.run, s.phase]))}`);
      await new Promise((r) => setTimeout(r, 5));
    }
    await controller.stop();
    await store.close();
  } finally {
    process.chdir(cwd);
  }
}

const phases = (c: Controller) => new Map(c.runs.map((s) => [s.run, s.phase]));

let every: string;
let clean: string;

beforeAll(async () => {
  // Every kind: bravo and hotel finished, charlie/delta/echo/golf training, foxtrot suspended.
  every = project('every');
  for (const n of ['bravo', 'hotel', 'charlie', 'delta', 'echo', 'golf']) write(every, `${n}.yaml`, spec(n));
  write(every, 'foxtrot.yaml', spec('foxtrot', { suspend: true }));
  await reconcileInto(every, ['bravo.yaml', 'hotel.yaml'], new MemoryProvider({ totalSteps: 20, stepsPerTick: 10, checkpointEvery: 10 }), (c) =>
    ['bravo', 'hotel'].every((r) => phases(c).get(r) === 'Completed'),
  );
  const long = new MemoryProvider({ totalSteps: 1_000_000, stepsPerTick: 1, checkpointEvery: 5 });
  await reconcileInto(every, ['charlie.yaml', 'delta.yaml', 'echo.yaml', 'foxtrot.yaml', 'golf.yaml'], long, (c) => {
    const p = phases(c);
    return ['charlie', 'delta', 'echo', 'golf'].every((r) => p.get(r) === 'Training') && p.get('foxtrot') === 'Suspended';
  });
  write(every, 'alpha.yaml', spec('alpha'));
  write(every, 'charlie.yaml', spec('charlie', { training: '72h' }));
  write(every, 'delta.yaml', spec('delta', { run: 'python3 train.py --lr 0.1', seed: true }));
  write(every, 'echo.yaml', spec('echo', { suspend: true }));
  write(every, 'foxtrot.yaml', spec('foxtrot', { suspend: false }));
  fs.rmSync(path.join(every, 'runs', 'golf.yaml'));
  fs.rmSync(path.join(every, 'runs', 'hotel.yaml'));

  // Nothing to change: one finished run, its file untouched.
  clean = project('clean');
  write(clean, 'done.yaml', spec('done'));
  await reconcileInto(clean, ['done.yaml'], new MemoryProvider({ totalSteps: 10, stepsPerTick: 10, checkpointEvery: 10 }), (c) => phases(c).get('done') === 'Completed');
});

afterAll(() => {
  fs.rmSync(root, { recursive: true, force: true });
});

const GOLDEN_PRUNE = `runctl plan: 8 runs against .runctl

  + create alpha (runs/alpha.yaml)
      why: new in runs/alpha.yaml
      effect: generation 1 starts: a local sandbox is launched
      price: $0.00/h (local)
      recovery: prelaunch on (recovery.prelaunch unset: on for market spot): a notice launches the next attempt's capacity at once; its job starts once the final checkpoint is safe

  ~ update in place charlie (runs/charlie.yaml, Training, generation 1)
      why: supervision changed: timeouts.training
        timeouts.training: 48h -> 72h
      effect: applied in place, no restart: limits (timeouts, budget, recovery) apply now; checkpoint settings from the next attempt
      price: $0.00/h (local)

-/+ new generation delta (runs/delta.yaml, Training, generation 1 -> 2)
      why: what is trained changed: run
        run: python3 train.py -> python3 train.py --lr 0.1
      effect: attempt 1 of generation 1 is checkpointed and stopped (final checkpoint sync confirmed), its instance terminated, then generation 2 starts seeded from generation 1's latest checkpoint (spec.recovery.seedFromPreviousGeneration)
      price: $0.00/h (local)

  ~ suspend echo (runs/echo.yaml, Training, generation 1)
      why: spec.suspend is true
      effect: attempt 1 is checkpointed and stopped (final checkpoint sync confirmed), then its instance is terminated; checkpoints stay in storage
      price: $0.00/h (local)

  ~ resume foxtrot (runs/foxtrot.yaml, Suspended, generation 1)
      why: spec.suspend is false
      effect: attempt 1 starts on new capacity from the latest checkpoint of generation 1
      price: $0.00/h (local)

  - prune golf (runs/golf.yaml, Training, generation 1)
      why: runs/golf.yaml no longer defines it; prune is on
      effect: attempt 1 is checkpointed and stopped (final checkpoint sync confirmed), its instance terminated, then status and events move to the archive
      price: $0.00/h (local)

  - prune hotel (runs/hotel.yaml, Completed, generation 1)
      why: runs/hotel.yaml no longer defines it; prune is on
      effect: status and events move to the archive (nothing is running)
      price: $0.00/h (local)

  = unchanged: bravo (up to date: Completed, generation 1)

Plan: 1 to create, 1 to update in place, 1 new generation, 1 to suspend, 1 to resume, 2 to prune; 1 unchanged.
`;

describe('runctl plan', () => {
  it('prints every action kind (golden), and exits 2 with --detailed-exitcode, 0 without', () => {
    const detailed = runctl(every, 'plan', '--prune', '--detailed-exitcode');
    expect(detailed.stderr).toBe('');
    expect(detailed.stdout).toBe(GOLDEN_PRUNE);
    expect(detailed.status).toBe(2);
    const plain = runctl(every, 'plan', '--prune');
    expect([plain.status, plain.stdout]).toEqual([0, GOLDEN_PRUNE]);
  });

  it('with prune off, removed runs are orphaned (golden)', () => {
    const out = runctl(every, 'plan', '--detailed-exitcode');
    expect(out.status).toBe(2);
    const orphaned = out.stdout.slice(out.stdout.indexOf('  ! orphaned golf'));
    expect(orphaned).toBe(`  ! orphaned golf (runs/golf.yaml, Training, generation 1)
      why: runs/golf.yaml no longer defines it; prune is off
      effect: left as it is (enable prune, or put the file back)
      price: $0.00/h (local)

  ! orphaned hotel (runs/hotel.yaml, Completed, generation 1)
      why: runs/hotel.yaml no longer defines it; prune is off
      effect: left as it is (enable prune, or put the file back)
      price: $0.00/h (local)

  = unchanged: bravo (up to date: Completed, generation 1)

Plan: 1 to create, 1 to update in place, 1 new generation, 1 to suspend, 1 to resume; 2 orphaned (left alone), 1 unchanged.
`);
  });

  it('--format json lists every run with its action, fields, generation and price', () => {
    const out = runctl(every, 'plan', '--prune', '--format', 'json');
    expect(out.status).toBe(0);
    const plan = JSON.parse(out.stdout) as { changes: boolean; runs: Array<{ run: string; action: string; generation: unknown; changes: unknown[]; price: unknown }> };
    expect(plan.changes).toBe(true);
    expect(plan.runs.map((r) => [r.run, r.action])).toEqual([
      ['alpha', 'create'],
      ['bravo', 'no-op'],
      ['charlie', 'update'],
      ['delta', 'new-generation'],
      ['echo', 'suspend'],
      ['foxtrot', 'resume'],
      ['golf', 'prune'],
      ['hotel', 'prune'],
    ]);
    expect(plan.runs.find((r) => r.run === 'delta')).toMatchObject({
      generation: { from: 1, to: 2 },
      changes: [{ path: 'run', before: 'python3 train.py', after: 'python3 train.py --lr 0.1', trained: true }],
      price: { hourlyUSD: 0, note: '$0.00/h (local)' },
    });
  });

  it('--format markdown renders a table for a CI job summary', () => {
    const out = runctl(every, 'plan', '--format', 'markdown');
    expect(out.status).toBe(0);
    expect(out.stdout).toContain('| | run | action | why | effect | price |');
    expect(out.stdout).toContain('| `-/+` | `delta` | new generation | what is trained changed: run<br>run: python3 train.py -> python3 train.py --lr 0.1 |');
  });

  it('exits 0 with --detailed-exitcode when nothing would change', () => {
    const out = runctl(clean, 'plan', '--detailed-exitcode');
    expect(out.stdout).toBe('runctl plan: 1 run against .runctl\n\n  = unchanged: done (up to date: Completed, generation 1)\n\nNo changes. 1 unchanged.\n');
    expect(out.status).toBe(0);
  });

  it('an empty runs folder with --prune plans no prune and warns; exit 0 (no changes)', () => {
    const dir = project('emptied');
    fs.cpSync(path.join(clean, '.runctl'), path.join(dir, '.runctl'), { recursive: true });
    const out = runctl(dir, 'plan', '--prune', '--detailed-exitcode');
    expect(out.status).toBe(0);
    expect(out.stdout).toContain('  ! orphaned done (runs/done.yaml, Completed, generation 1)\n      why: runs/done.yaml no longer defines it; prune refused this pass\n');
    expect(out.stdout).toContain('Warning: not pruning 1 run (done): the runs folder has no TrainingRuns at all');
  });

  it('exits 1 on an invalid spec (with --detailed-exitcode too), naming file, line and field', () => {
    const dir = project('invalid');
    fs.cpSync(path.join(clean, '.runctl'), path.join(dir, '.runctl'), { recursive: true });
    write(dir, 'done.yaml', spec('done').replace('provider: local', 'provider: locl'));
    const out = runctl(dir, 'plan', '--detailed-exitcode');
    expect(out.status).toBe(1);
    expect(out.stderr).toMatch(/^runs\/done\.yaml:6:13 error spec\.provider: /m);
    expect(out.stdout).toContain('= unchanged: done (runs/done.yaml has errors: the run keeps its last valid spec)');
  });

  it('exits 1, not 2, on a usage mistake with --detailed-exitcode', () => {
    const out = runctl(clean, 'plan', '--detailed-exitcode', '--no-such-flag');
    expect(out.status).toBe(1);
    expect(out.stderr).toContain("unknown option '--no-such-flag'");
    const format = runctl(clean, 'plan', '--detailed-exitcode', '--format', 'yaml');
    expect(format.status).toBe(1);
  });
});

describe('runctl apply', () => {
  it('prints the plan, carries it out in one pass, and a plan right after shows no changes', () => {
    const dir = project('apply');
    write(dir, 'one.yaml', spec('one'));
    write(dir, 'two.yaml', spec('two', { suspend: true }));
    const env = { ...process.env, NO_COLOR: '1', GITHUB_ACTIONS: '' };
    const apply = spawnSync(process.execPath, [...HARNESS, path.join(dir, 'world.json'), 'apply'], { cwd: dir, encoding: 'utf8', env });
    expect(apply.stderr).toBe('');
    expect(apply.status).toBe(0);
    expect(apply.stdout).toContain('  + create one (runs/one.yaml)');
    expect(apply.stdout).toContain('      effect: recorded as Suspended (spec.suspend is true): nothing is launched');
    expect(apply.stdout).toContain('one: launched mem-1 (mem.small, spot) for attempt 1');
    expect(apply.stdout).toContain('two: create applied; now Suspended');
    expect(apply.stdout).toMatch(/Apply complete: 2 runs changed\.\n$/);
    const world = JSON.parse(fs.readFileSync(path.join(dir, 'world.json'), 'utf8')) as { launches: Record<string, number> };
    // One launch, keyed by the run's incarnation (name@uid), for attempt 1 of generation 1.
    expect(Object.entries(world.launches)).toEqual([[expect.stringMatching(/^one@[0-9a-f-]{36}\/g1\/a1$/), 1]]);
    const after = runctl(dir, 'plan', '--detailed-exitcode');
    expect(after.status).toBe(0);
  });

  it('--wait keeps reconciling until every run is done, then exits 0', () => {
    const dir = project('wait');
    write(dir, 'quick.yaml', spec('quick'));
    const env = { ...process.env, NO_COLOR: '1', GITHUB_ACTIONS: '', GITOPS_SCRIPT: JSON.stringify({ totalSteps: 30, stepsPerTick: 5, checkpointEvery: 10 }) };
    const apply = spawnSync(process.execPath, [...HARNESS, path.join(dir, 'world.json'), 'apply', '--wait'], { cwd: dir, encoding: 'utf8', env });
    expect(apply.status).toBe(0);
    expect(apply.stdout).toContain('quick: Training -> Completed');
    expect(apply.stdout).toContain('quick: create applied; now Completed');
  });
});
