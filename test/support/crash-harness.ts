// Child-process entry for the crash test: a real controller over the file store and the
// in-memory cloud kept on disk. With CRASH_AT=n it SIGKILLs itself at the n-th effect/write
// boundary; otherwise it reconciles until settled and prints a JSON summary on stdout.
//   node --import tsx test/support/crash-harness.ts <dir> [crashAt]
// (tests start the bundle test/support/harness-bundle.ts makes of it: the same code, started faster)
import path from 'node:path';
import { Controller } from '../../src/reconciler/controller.js';
import { FileStore } from '../../src/state/file-store.js';
import { MemoryProvider, type Script } from './memory-provider.js';
import { testRun } from './runs.js';

export const CRASH_SCRIPT: Script = {
  totalSteps: 60,
  stepsPerTick: 10,
  checkpointEvery: 10,
  spotAt: [{ run: 'crashy', attempt: 1, step: 30 }],
  // The final save takes a few ticks: the replacement launched during the notice is up, set up and
  // waiting at its start gate before attempt 1 has stopped (spec.recovery.prelaunch, issue 12).
  saveTicks: 4,
};

async function main(): Promise<void> {
  const dir = process.argv[2] as string;
  const crashAt = Number(process.argv[3] ?? -1);
  const store = new FileStore(path.join(dir, '.runctl'), { fsync: false, command: 'crash-harness' });
  await store.open();
  const provider = new MemoryProvider(CRASH_SCRIPT, { file: path.join(dir, 'world.json'), pollIntervalMs: 1 });
  let boundaries = 0;
  const controller = new Controller({
    store,
    provider: async () => provider,
    // Spot market: a replacement is launched during the notice (the default, said explicitly here).
    load: async () => ({ runs: [testRun('crashy', { recovery: { prelaunch: true } })], diagnostics: [], invalidFiles: [] }),
    controller: 'crash-test',
    repoRoot: dir,
    prune: false,
    workers: 1,
    boundary: (label) => {
      boundaries++;
      if (boundaries === crashAt) {
        process.stderr.write(`killing at boundary ${boundaries}: ${label}\n`);
        process.kill(process.pid, 'SIGKILL');
      }
    },
  });
  const summary = await controller.runUntilSettled();
  await store.close();
  process.stdout.write(`${JSON.stringify({ boundaries, phases: summary.statuses.map((s) => s.phase) })}\n`);
}

void main();
