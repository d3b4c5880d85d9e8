// Timeouts end to end, with real processes (the local provider's sandboxes, the real agent, a
// real job): spec.timeouts.training bounds training time summed over every attempt, across a
// controller restart (issue 10, input 7).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createLocalProvider, type LocalProvider } from '../../src/providers/local/index.js';
import { Controller } from '../../src/reconciler/controller.js';
import { attemptKey } from '../../src/reconciler/reconcile.js';
import type { LoadedRun } from '../../src/spec/types.js';
import { FileStore } from '../../src/state/file-store.js';
import type { RunEvent, RunStatus } from '../../src/state/types.js';
import { testRun } from '../support/runs.js';

// Trains until told to stop; on SIGTERM (a spot notice) it "saves" and exits 0, as a real job does.
const JOB = `
import signal, sys, time
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
step = 0
while not stop:
    step += 1
    print("step=%d" % step, flush=True)
    time.sleep(0.2)
print("saved at step %d" % step, flush=True)
`;

const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

interface World {
  root: string;
  provider: LocalProvider;
  store: FileStore;
  controller(): Controller;
}

async function world(runs: LoadedRun[]): Promise<World> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-timeouts-'));
  fs.mkdirSync(path.join(root, 'code'));
  fs.writeFileSync(path.join(root, 'code', 'job.py'), JOB);
  const provider = createLocalProvider({ root: path.join(root, 'local'), repoRoot: root, controller: 'e2e', pollIntervalMs: 200 });
  const store = new FileStore(path.join(root, 'state'), { fsync: false });
  await store.open();
  const made: Controller[] = [];
  cleanups.push(async () => {
    for (const c of made) await c.stop();
    for (const s of made.at(-1)?.runs ?? []) for (const i of s.instances) await provider.terminate(i.id);
    await store.close();
    fs.rmSync(root, { recursive: true, force: true });
  });
  return {
    root,
    provider,
    store,
    controller() {
      const c = new Controller({
        store,
        provider: async () => provider,
        load: async () => ({ runs, diagnostics: [], invalidFiles: [] }),
        controller: 'e2e',
        repoRoot: root,
        prune: false,
      });
      made.push(c);
      return c;
    },
  };
}

/** Training time of each attempt, from the event log's transitions into and out of Training. */
function trainingByAttempt(events: RunEvent[]): Map<number, number> {
  const out = new Map<number, number>();
  let since: number | undefined;
  for (const e of events.filter((x) => x.kind === 'transition')) {
    const [from, to] = e.action.split(' -> ');
    if (to === 'Training') since = Date.parse(e.at);
    else if (from === 'Training' && since !== undefined) {
      out.set(e.attempt, (out.get(e.attempt) ?? 0) + Date.parse(e.at) - since);
      since = undefined;
    }
  }
  return out;
}

describe('spec.timeouts.stall', () => {
  it('fails a job that goes silent with reason Stalled, retried once (maxRetriesOnError), with the log tail', async () => {
    const run = testRun('hung', {
      code: { path: './code', exclude: [] },
      // The usual hang: a collective operation that never returns, after some progress.
      run: 'python3 -c "print(\'step=1\', flush=True); print(\'waiting for all_reduce from rank 3\', flush=True)"; sleep 3600',
      checkpoints: { syncInterval: '1s', gracePeriod: '2s' },
      timeouts: { provisioning: '1m', installing: '1m', training: '10m', stall: '3s' },
      recovery: { maxInterruptions: 5, maxRetriesOnError: 1 },
    });
    const w = await world([run]);
    const summary = await w.controller().runUntilSettled();
    const status = summary.statuses.find((s) => s.run === 'hung') as RunStatus;
    expect(status.phase).toBe('Failed');
    expect(status.attempt).toBe(2);
    expect(status.errorRetries).toBe(1);
    const failed = status.conditions.find((c) => c.type === 'Failed');
    expect(failed?.reason).toBe('Stalled');
    expect(failed?.message).toMatch(/^the job printed nothing for 3s \(spec\.timeouts\.stall\) and was stopped; look for a hang .* on attempt 2; last output:\nstep=1\nwaiting for all_reduce from rank 3\n/);
    expect(failed?.message).toContain('spec.recovery.maxRetriesOnError is 1');
    expect(status.conditions.find((c) => c.type === 'Retrying')?.message).toContain('last: the job printed nothing for 3s');
  }, 180_000);
});

describe('spec.timeouts.training', () => {
  it('bounds training summed over attempts: interrupted after ~8 s twice, a 20 s limit ends attempt 3 early, across a controller restart', async () => {
    const run = testRun('capped', {
      code: { path: './code', exclude: [] },
      run: 'python3 job.py',
      checkpoints: { syncInterval: '1s', gracePeriod: '5s' },
      timeouts: { provisioning: '1m', installing: '1m', training: '20s' },
      recovery: { maxInterruptions: 5, maxRetriesOnError: 0 },
    });
    const w = await world([run]);
    const current = (c: Controller) => c.runs.find((r) => r.run === 'capped');
    const interruptAfterTraining = async (c: Controller, attempt: number) => {
      for (;;) {
        const s = current(c);
        if (s?.phase === 'Training' && s.attempt === attempt && s.trainingStartedAt && Date.now() - Date.parse(s.trainingStartedAt) >= 8_000) {
          const inst = s.instances.find((i) => i.attempt === attempt && !i.endedAt);
          if (inst) {
            await w.provider.deliverSpotNotice(attemptKey(s, s.generation, attempt), inst.id);
            return;
          }
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    };

    // First controller: attempt 1 is interrupted; attempt 2 starts training, then the controller stops.
    const first = w.controller();
    const abort = new AbortController();
    const settling = first.runUntilSettled(abort.signal);
    await interruptAfterTraining(first, 1);
    for (;;) {
      const s = current(first);
      if (s?.phase === 'Training' && s.attempt === 2) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    abort.abort();
    await settling;
    await first.stop();

    // A new controller (a restart) must carry the sum on, not start it again.
    const second = w.controller();
    const done = second.runUntilSettled();
    await interruptAfterTraining(second, 2);
    const summary = await done;

    const status = summary.statuses.find((s) => s.run === 'capped') as RunStatus;
    expect(status.phase).toBe('Failed');
    expect(status.attempt).toBe(3);
    expect(status.interruptions).toBe(2);
    const failed = status.conditions.find((c) => c.type === 'Failed');
    expect(failed?.reason).toBe('TrainingTimeout');
    expect(failed?.message).toMatch(/^training ran \d+s in total over 3 attempts \(attempt 3 the last\), reaching spec\.timeouts\.training \(20s\), which bounds training time summed over all attempts;/);

    const trained = trainingByAttempt(await w.store.readEvents('capped'));
    const total = [...trained.values()].reduce((a, b) => a + b, 0);
    expect(total).toBeGreaterThanOrEqual(20_000);
    // Per attempt, attempt 3 alone would have had 20 s: summed, it had what the first two left.
    expect(trained.get(3) as number).toBeLessThan(20_000);
  }, 240_000);
});
