import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { Controller } from '../../src/reconciler/controller.js';
import { FileStore } from '../../src/state/file-store.js';
import { MemoryProvider } from '../support/memory-provider.js';
import { testRun } from '../support/runs.js';

const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-cli-state-'));

function runctl(...args: string[]) {
  return spawnSync(process.execPath, ['bin/runctl.js', ...args, '--state-dir', stateDir], {
    encoding: 'utf8',
    env: { ...process.env, NO_COLOR: '1' },
  });
}

beforeAll(async () => {
  // Two runs reconciled to their ends by a real controller into a real file store.
  const store = new FileStore(stateDir, { fsync: false });
  await store.open();
  const provider = new MemoryProvider({
    totalSteps: 40,
    stepsPerTick: 10,
    checkpointEvery: 10,
    spotAt: [{ run: 'bravo', attempt: 1, step: 20 }],
    failAt: [
      { run: 'charlie', attempt: 1, step: 10 },
      { run: 'charlie', attempt: 2, step: 15 },
    ],
  });
  const controller = new Controller({
    store,
    provider: async () => provider,
    load: async () => ({ runs: [testRun('bravo'), testRun('charlie', { recovery: { maxRetriesOnError: 1 } })], diagnostics: [], invalidFiles: [] }),
    controller: 'cli-test',
    repoRoot: process.cwd(),
    prune: false,
  });
  await controller.runUntilSettled();
  await controller.stop();
  await store.close();
});

describe('runctl status', () => {
  it('-o json prints each run without machine internals', () => {
    const out = runctl('status', '-o', 'json');
    expect(out.status, out.stderr).toBe(0);
    const runs = JSON.parse(out.stdout) as Array<Record<string, unknown>>;
    expect(runs.map((r) => [r.run, r.phase, r.attempt, r.interruptions])).toEqual([
      ['bravo', 'Completed', 2, 1],
      ['charlie', 'Failed', 2, 0],
    ]);
    const bravo = runs[0] as { lastCheckpoint: { step: number }; instances: unknown[]; conditions: Array<{ type: string }> };
    expect(bravo.lastCheckpoint.step).toBe(40);
    expect(bravo.instances).toHaveLength(2);
    expect(bravo.conditions.map((c) => c.type)).toContain('Completed');
    // Each run's identity (issue 10): a UUID, different per run.
    expect(runs.map((r) => r.uid)).toEqual([expect.stringMatching(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$/), expect.any(String)]);
    expect(runs[0]!.uid).not.toBe(runs[1]!.uid);
    expect(Object.keys(runs[0] as object)).not.toContain('snapshot');
    expect(Object.keys(runs[0] as object)).not.toContain('pending');
  });

  it('prints a table with run, phase, attempt, age, instance and last checkpoint', () => {
    const out = runctl('status');
    expect(out.status, out.stderr).toBe(0);
    const [header, ...rows] = out.stdout.trimEnd().split('\n');
    expect(header).toMatch(/RUN\s+PHASE\s+ATTEMPT\s+PROGRESS\s+AGE\s+INSTANCE\s+LAST CHECKPOINT/);
    expect(rows[0]).toMatch(/^bravo\s+Completed\s+2\s/);
    expect(rows[1]).toMatch(/^charlie\s+Failed\s+2\s/);
  });

  it('names the known runs when asked for an unknown one', () => {
    const out = runctl('status', 'nope');
    expect(out.status).toBe(1);
    expect(out.stderr).toContain('no run named "nope" (known runs: bravo, charlie)');
  });

  it('refuses an unknown output format with a usage error', () => {
    const out = runctl('status', '-o', 'yaml');
    expect(out.status).toBe(2);
    expect(out.stderr).toContain('--output must be table or json (got "yaml")');
  });
});

describe('runctl describe', () => {
  it('shows the spec summary, conditions, instances and the event history', () => {
    const out = runctl('describe', 'bravo');
    expect(out.status, out.stderr).toBe(0);
    expect(out.stdout).toContain('Conditions:');
    expect(out.stdout).toMatch(/Interrupted\s+False\s+Recovered/);
    // Both runs share one simulated world, so how many ticks pass between two looks at bravo depends
    // on scheduling: the notice may be first seen while bravo was last seen Installing or Training.
    expect(out.stdout).toMatch(/(Installing|Training) -> Interrupted\s/);
    expect(out.stdout).toContain('Resuming -> Provisioning');
    expect(out.stdout).toContain('python3 train.py');
    const status = JSON.parse(runctl('status', 'bravo', '-o', 'json').stdout) as Array<{ uid: string; instances: Array<{ id: string }> }>;
    for (const instance of status[0]!.instances) expect(out.stdout).toContain(instance.id);
    expect(out.stdout).toMatch(new RegExp(`^UID:\\s+${status[0]!.uid}$`, 'm'));
    // Which code each attempt ran: the start of its bundle's sha256.
    expect(out.stdout).toMatch(/END REASON\s+COST\s+CODE/);
    expect(out.stdout).toContain(MemoryProvider.codeBundleOf('bravo', 1).slice(0, 12));
  });

  it('shows why a run failed, with the log tail', () => {
    const out = runctl('describe', 'charlie');
    expect(out.status, out.stderr).toBe(0);
    expect(out.stdout).toContain('JobFailed');
    expect(out.stdout).toContain('Traceback: injected failure');
  });

  it('exits 1 with the known runs for an unknown run', () => {
    const out = runctl('describe', 'nope');
    expect(out.status).toBe(1);
    expect(out.stderr).toContain('no run named "nope"');
  });
});
