// Kills a real controller process with SIGKILL at every effect and write boundary in turn, then
// restarts it, and checks that nothing was launched twice, lost or forgotten.
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { FileStore } from '../../src/state/file-store.js';
import { harnessCommand } from '../support/harness-bundle.js';
import { agentIn, checkpointsByName, launchesByName, type World } from '../support/memory-provider.js';

const HARNESS = harnessCommand('crash-harness');

function runHarness(dir: string, crashAt = -1) {
  const r = spawnSync(process.execPath, [...HARNESS, dir, String(crashAt)], { encoding: 'utf8', timeout: 60_000 });
  return r;
}

function runHarnessAsync(dir: string, crashAt = -1): Promise<{ status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [...HARNESS, dir, String(crashAt)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (status, signal) => resolve({ status, signal, stdout, stderr }));
  });
}

async function outcome(dir: string) {
  const store = new FileStore(path.join(dir, '.runctl'), { readOnly: true });
  const status = await store.getStatus('crashy');
  const events = await store.readEvents('crashy');
  const world = JSON.parse(fs.readFileSync(path.join(dir, 'world.json'), 'utf8')) as World;
  return { status, events, world };
}

describe('crash safety', () => {
  it('survives SIGKILL at every effect boundary: one launch per attempt, no checkpoint lost, no event missing', async () => {
    const refDir = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-crash-ref-'));
    const ref = runHarness(refDir);
    expect(ref.status, ref.stderr).toBe(0);
    const { boundaries } = JSON.parse(ref.stdout) as { boundaries: number };
    const reference = await outcome(refDir);
    expect(reference.status?.phase).toBe('Completed');
    const refTransitions = reference.events.filter((e) => e.kind === 'transition').map((e) => e.action);
    const refEffects = reference.events.filter((e) => e.kind === 'effect').map((e) => e.action);
    expect(refTransitions).toContain('Training -> Interrupted');
    // With recovery.prelaunch (the spot default): attempt 2's instance was launched during the
    // notice and its agent deployed with the start gate closed before attempt 1 had stopped.
    expect(refEffects).toEqual(expect.arrayContaining(['prelaunch', 'deployReplacement', 'openStartGate']));
    expect(refEffects.indexOf('deployReplacement')).toBeLessThan(refEffects.indexOf('openStartGate'));
    expect(agentIn(reference.world, 'crashy', 1, 2)?.gated).toBe(true);
    expect(boundaries).toBeGreaterThan(20);

    let covered = 0;
    const checkKillPoint = async (k: number): Promise<void> => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), `runctl-crash-${k}-`));
      const crashed = await runHarnessAsync(dir, k);
      expect(crashed.signal, `boundary ${k} did not kill: ${crashed.stderr}`).toBe('SIGKILL');
      const restarted = await runHarnessAsync(dir);
      expect(restarted.status, `restart after boundary ${k}: ${restarted.stderr}`).toBe(0);
      const { status, events, world } = await outcome(dir);
      const where = `killed at boundary ${k} (${crashed.stderr.trim()})`;
      expect(status?.phase, where).toBe('Completed');
      // Exactly one instance created per attempt, whatever was replayed.
      expect(launchesByName(world), where).toEqual(launchesByName(reference.world));
      // No checkpoint lost: attempt 2 resumed from the step attempt 1 checkpointed at the notice.
      expect(agentIn(world, 'crashy', 1, 2)?.startStep, where).toBe(agentIn(reference.world, 'crashy', 1, 2)?.startStep);
      expect(checkpointsByName(world), where).toEqual(checkpointsByName(reference.world));
      // No event missing, none doubled: the transitions form one unbroken chain with contiguous
      // sequence numbers from Pending to Completed through the interruption. (A kill before a
      // commit may mean an intermediate phase was never entered, e.g. Syncing -> Training when
      // the agent was already training on restart: level-triggered, and still a whole story.)
      const transitions = events.filter((e) => e.kind === 'transition');
      expect(transitions.map((e) => e.seq), where).toEqual(transitions.map((_, i) => i + 2));
      let phase = 'Pending';
      for (const t of transitions) {
        const m = /^(\w+)(?::[^>]*)? -> (\w+)|^(\w+)[: (]/.exec(t.action);
        const from = m?.[1] ?? m?.[3];
        expect(from, `${where}: ${t.action} does not follow ${phase}`).toBe(phase);
        phase = m?.[2] ?? from ?? phase;
      }
      expect(phase, where).toBe('Completed');
      for (const p of ['Interrupted', 'Resuming']) expect(transitions.some((t) => t.action.endsWith(`-> ${p}`)), where).toBe(true);
      expect(events.filter((e) => e.kind === 'effect').map((e) => e.action), where).toEqual(refEffects);
      expect(new Set(events.map((e) => e.id)).size, where).toBe(events.length);
      // No instance outlives the run.
      expect(world.instances.every((i) => i.state === 'terminated'), where).toBe(true);
      // Prelaunch: the replacement came up before the old instance was gone, waited at its gate,
      // and two jobs never trained at once; attempt 2's job started from attempt 1's final checkpoint.
      const [first, second] = [1, 2].map((a) => world.instances.find((i) => i.attempt === a));
      expect(second?.launchedTick, where).toBeLessThan(first?.terminatedTick ?? -1);
      expect(world.overlaps ?? {}, where).toEqual({});
      covered++;
      fs.rmSync(dir, { recursive: true, force: true });
    };
    // Kill points are independent: check three at a time (the children mostly wait on each other's I/O).
    const points = Array.from({ length: boundaries }, (_, i) => i + 1);
    await Promise.all(
      Array.from({ length: 3 }, async () => {
        for (let k = points.shift(); k !== undefined; k = points.shift()) await checkKillPoint(k);
      }),
    );
    console.log(`crash test: covered ${covered} kill points`);
    expect(covered).toBe(boundaries);
  }, 600_000);
});
