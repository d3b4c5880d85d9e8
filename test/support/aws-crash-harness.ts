// Child-process entry for the aws kill chain (test/e2e/aws-prelaunch.test.ts): a real controller
// over the file store and the aws provider, talking to the fleet simulator and moto that the test
// process runs. It SIGKILLs itself at the first effect boundary (`before-effect:…`,
// `after-effect:…`) not listed in the file `<dir>/killed` and appends that boundary there first, so
// each run of it goes one effect boundary further than the one before; with `--no-kill` it
// reconciles until settled. The instances and their agents live on in the fleet across the kills,
// as EC2 instances outlive a controller.
//   node --import tsx test/support/aws-crash-harness.ts <config.json> [--no-kill]
// (tests start the bundle test/support/harness-bundle.ts makes of it: the same code, started faster)
import fs from 'node:fs';
import path from 'node:path';
import { createAwsProvider } from '../../src/providers/aws/index.js';
import { Controller } from '../../src/reconciler/controller.js';
import type { LoadedRun } from '../../src/spec/types.js';
import { FileStore } from '../../src/state/file-store.js';

/** What the test hands the harness (written as JSON). */
export interface AwsCrashConfig {
  dir: string;
  fleetEndpoint: string;
  region: string;
  controller: string;
  run: LoadedRun;
  repoRoot: string;
  agentTiming: { heartbeatSeconds: number; noticePollSeconds: number };
}

async function main(): Promise<void> {
  const config = JSON.parse(fs.readFileSync(process.argv[2] as string, 'utf8')) as AwsCrashConfig;
  const kill = !process.argv.includes('--no-kill');
  const killedFile = path.join(config.dir, 'killed');
  const killed = new Set(fs.existsSync(killedFile) ? fs.readFileSync(killedFile, 'utf8').split('\n').filter(Boolean) : []);
  const store = new FileStore(path.join(config.dir, '.runctl'), { fsync: false, command: 'aws-crash-harness' });
  await store.open();
  const provider = createAwsProvider({
    region: config.region,
    endpointUrl: config.fleetEndpoint,
    credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' },
    controller: config.controller,
    pollIntervalMs: 200,
    ssmPollMs: 200,
    ssmDeadlineMs: 60_000,
    retry: { baseDelayMs: 20 },
    agentTiming: config.agentTiming,
  });
  const controller = new Controller({
    store,
    provider: async () => provider,
    load: async () => ({ runs: [config.run], diagnostics: [], invalidFiles: [] }),
    controller: config.controller,
    repoRoot: config.repoRoot,
    prune: false,
    workers: 1,
    boundary: (label) => {
      if (!kill || !/^(before|after)-effect:/.test(label) || killed.has(label)) return;
      fs.appendFileSync(killedFile, `${label}\n`);
      fs.fsyncSync(fs.openSync(killedFile, 'r'));
      process.stderr.write(`killing at ${label}\n`);
      process.kill(process.pid, 'SIGKILL');
    },
  });
  const summary = await controller.runUntilSettled();
  await provider.close();
  await store.close();
  process.stdout.write(`${JSON.stringify({ phases: summary.statuses.map((s) => s.phase) })}\n`);
}

void main();
