// Child-process entry that runs the real `runctl` CLI (commander, commands, controller, stores)
// with the in-memory cloud kept on disk, so several controller processes share one cloud:
//   node --import tsx test/support/gitops-harness.ts <world.json> <runctl args...>
// (tests start the bundle test/support/harness-bundle.ts makes of it: the same code, started faster)
// Environment:
//   GITOPS_SCRIPT        the MemoryProvider script (JSON) when the world is new
//   GITOPS_POLL_MS       the provider's poll interval (default 50)
//   GITOPS_JOURNAL       append one JSON line per cloud-changing call: op, run, pid, lease holder and epoch
//   GITOPS_PAUSE_AT_STATUS_PUT=n   SIGSTOP this process just before its n-th conditional status write to S3
//                        (it prints `PAUSED <n>` first), to act out a controller that stalls past its lease
// Every cloud call holds a lock file, so the world file is never written by two processes at once.
import fs from 'node:fs';
import { main } from '../../src/cli/main.js';
import { setDefaultOverrides } from '../../src/cli/context.js';
import { createS3ObjectStore } from '../../src/providers/aws/object-store.js';
import type { AttemptKey, Provider } from '../../src/providers/types.js';
import type { ProviderRegistry } from '../../src/providers/registry.js';
import type { LeaseManager } from '../../src/state/lease.js';
import { MemoryProvider, type Script } from './memory-provider.js';

const [worldFile, ...args] = process.argv.slice(2) as [string, ...string[]];
const script: Script = process.env.GITOPS_SCRIPT
  ? (JSON.parse(process.env.GITOPS_SCRIPT) as Script)
  : { totalSteps: 1_000_000, stepsPerTick: 1, checkpointEvery: 5 };
const journal = process.env.GITOPS_JOURNAL;
const pauseAt = Number(process.env.GITOPS_PAUSE_AT_STATUS_PUT ?? 0);
let leases: LeaseManager | undefined;

const lockDir = `${worldFile}.lock`;
const sleeper = new Int32Array(new SharedArrayBuffer(4));
function withWorldLock<T>(fn: () => T): T {
  for (let i = 0; ; i++) {
    try {
      fs.mkdirSync(lockDir);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      if (i > 20_000) throw new Error(`${lockDir} held for over 20 s: a process died holding it`);
      Atomics.wait(sleeper, 0, 0, 1);
    }
  }
  try {
    return fn();
  } finally {
    fs.rmdirSync(lockDir);
  }
}

const memory = withWorldLock(() => new MemoryProvider(script, { file: worldFile, pollIntervalMs: Number(process.env.GITOPS_POLL_MS ?? 50) }));

function record(op: string, run: string, key?: Partial<AttemptKey>): void {
  if (!journal) return;
  // The lease this process acts under (it checked it was live just before the call), even if the
  // clock has since moved past its safety margin: the journal records whose action this was.
  const lease = (leases as unknown as { leases?: Map<string, { holder: string; epoch: number }> } | undefined)?.leases?.get(run);
  const line = { op, run, generation: key?.generation, attempt: key?.attempt, pid: process.pid, holder: lease?.holder ?? null, epoch: lease?.epoch ?? null };
  fs.appendFileSync(journal, `${JSON.stringify(line)}\n`);
}

// MemoryProvider's methods do all their work synchronously before returning a promise, so the
// lock covers the whole read-modify-write of the world file.
const changing = new Set(['launch', 'deployAgent', 'requestStop', 'terminate', 'deliverSpotNotice']);
const provider = new Proxy(memory, {
  get(target, prop, receiver) {
    const value = Reflect.get(target, prop, receiver) as unknown;
    if (typeof value !== 'function' || prop === 'constructor') return value;
    return (...callArgs: unknown[]) =>
      withWorldLock(() => {
        const result = (value as (...a: unknown[]) => unknown).apply(target, callArgs);
        if (changing.has(String(prop))) {
          const first = callArgs[0] as (Partial<AttemptKey> & { run?: string }) | string;
          const run = typeof first === 'string' ? (target.world.instances.find((i) => i.id === first)?.run ?? '?') : (first.run ?? '?');
          record(String(prop), run, typeof first === 'string' ? undefined : first);
        }
        return result;
      });
  },
}) as Provider;

const providers: ProviderRegistry = { get: async () => provider, close: async () => {} };

let statusPuts = 0;
setDefaultOverrides({
  providers,
  onLeases: (l) => {
    leases = l;
  },
  objectStore: (url) => {
    const store = createS3ObjectStore(url, {
      endpointUrl: process.env.AWS_ENDPOINT_URL,
      region: 'us-east-1',
      credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' },
      retry: { baseDelayMs: 5 },
    });
    if (pauseAt > 0) {
      store.s3.middlewareStack.add(
        (next) => async (a) => {
          const input = a.input as { Key?: string; IfMatch?: string };
          if (input.IfMatch && input.Key?.endsWith('/status.json') && ++statusPuts === pauseAt) {
            process.stdout.write(`PAUSED ${pauseAt} ${input.Key}\n`);
            process.kill(process.pid, 'SIGSTOP');
          }
          return next(a);
        },
        { step: 'initialize', name: 'pauseBeforeStatusWrite' },
      );
    }
    return store;
  },
});

main(['node', 'runctl', ...args]).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`harness: ${(err as Error)?.stack ?? String(err)}\n`);
    process.exitCode = 1;
  },
);
