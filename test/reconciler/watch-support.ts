// A watched runs folder of real files in a temp dir, a controller reconciling it against the
// in-memory cloud, and the file watcher wired as `reconcile --watch` wires it.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Controller, type ControllerNotice, type DesiredState } from '../../src/reconciler/controller.js';
import { loadDesired } from '../../src/reconciler/desired.js';
import { SpecWatcher } from '../../src/reconciler/watch.js';
import type { DeployRequest, LaunchRequest, Provider, StopReason, AttemptKey } from '../../src/providers/types.js';
import type { RunSpec } from '../../src/spec/types.js';
import type { RunEvent, RunStatus } from '../../src/state/types.js';
import { manifestHead } from '../spec/helpers.js';
import { MemoryProvider, type Script } from '../support/memory-provider.js';
import { MemoryStore } from '../support/memory-store.js';

export interface WatchedFolder {
  root: string;
  runsDir: string;
  store: MemoryStore;
  provider: MemoryProvider;
  controller: Controller;
  /** Every spec a provider call carried, in order: what reached the cloud. */
  specsSent: Array<{ op: string; run: string; spec: RunSpec }>;
  stopReasons: StopReason[];
  loads: DesiredState[];
  notices: ControllerNotice[];
  write(name: string, yaml: string): void;
  remove(name: string): void;
  status(run: string): Promise<RunStatus | undefined>;
  events(run: string): Promise<RunEvent[]>;
  /** Resolves once a load after this call has happened and satisfies `cond`. */
  nextLoad(cond?: (d: DesiredState) => boolean): Promise<DesiredState>;
  close(): Promise<void>;
}

export const LONG_TRAINING: Script = { totalSteps: 1_000_000_000, stepsPerTick: 1, checkpointEvery: 5 };

export function spec(name: string, fields: { run?: string; training?: string; suspend?: boolean; extra?: string } = {}): string {
  return [
    ...manifestHead(name, 'local'),
    '  code: {path: ./code}',
    `  run: ${fields.run ?? 'python3 train.py'}`,
    `  timeouts: {training: ${fields.training ?? '48h'}}`,
    ...(fields.suspend !== undefined ? [`  suspend: ${fields.suspend}`] : []),
    ...(fields.extra ? [fields.extra] : []),
    '',
  ].join('\n');
}

export async function watchedFolder(opts: { prune?: boolean; files?: Record<string, string>; script?: Script; resyncIntervalMs?: number } = {}): Promise<WatchedFolder> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-watch-'));
  const runsDir = path.join(root, 'runs');
  fs.mkdirSync(runsDir);
  fs.mkdirSync(path.join(root, 'code'));
  fs.writeFileSync(path.join(root, 'code', 'train.py'), 'print("hi")\n');
  fs.writeFileSync(path.join(root, 'runctl.yaml'), 'prune: false\n');
  for (const [name, yaml] of Object.entries(opts.files ?? {})) fs.writeFileSync(path.join(runsDir, name), yaml);

  const store = new MemoryStore();
  const memory = new MemoryProvider(opts.script ?? LONG_TRAINING, { pollIntervalMs: 20 });
  const specsSent: WatchedFolder['specsSent'] = [];
  const stopReasons: StopReason[] = [];
  // The same cloud, with a record of every spec that reached it.
  const provider: Provider = Object.assign(Object.create(memory) as MemoryProvider, {
    launch: (req: LaunchRequest) => {
      specsSent.push({ op: 'launch', run: req.run, spec: req.spec });
      return memory.launch(req);
    },
    deployAgent: (req: DeployRequest) => {
      specsSent.push({ op: 'deployAgent', run: req.run, spec: req.spec });
      return memory.deployAgent(req);
    },
    requestStop: (key: AttemptKey, s: RunSpec, reason: StopReason) => {
      specsSent.push({ op: 'requestStop', run: key.run, spec: s });
      stopReasons.push(reason);
      return memory.requestStop(key, s, reason);
    },
  });
  const loads: DesiredState[] = [];
  const loadWaiters: Array<{ cond: (d: DesiredState) => boolean; resolve: (d: DesiredState) => void }> = [];
  const notices: ControllerNotice[] = [];
  const controller = new Controller({
    store,
    provider: async () => provider,
    load: async () => {
      const desired = await loadDesired([runsDir], root);
      loads.push(desired);
      for (const w of [...loadWaiters]) {
        if (w.cond(desired)) {
          loadWaiters.splice(loadWaiters.indexOf(w), 1);
          w.resolve(desired);
        }
      }
      return desired;
    },
    controller: 'watch-test',
    repoRoot: root,
    prune: opts.prune ?? false,
    workers: 2,
    onNotice: (n) => notices.push(n),
  });
  await controller.resync();
  const watcher = await SpecWatcher.start({ paths: [runsDir], resyncIntervalMs: opts.resyncIntervalMs ?? 0, reload: async () => void (await controller.resync()) });

  return {
    root,
    runsDir,
    store,
    provider: memory,
    controller,
    specsSent,
    stopReasons,
    loads,
    notices,
    write: (name, yaml) => fs.writeFileSync(path.join(runsDir, name), yaml),
    remove: (name) => fs.rmSync(path.join(runsDir, name)),
    status: (run) => store.getStatus(run),
    events: (run) => store.readEvents(run),
    nextLoad: (cond = () => true) => new Promise((resolve) => loadWaiters.push({ cond, resolve })),
    close: async () => {
      await watcher.close();
      await controller.stop();
      fs.rmSync(root, { recursive: true, force: true });
    },
  };
}

/** Polls until `check` returns a value other than undefined/false. */
export async function eventually<T>(check: () => Promise<T | undefined | false> | T | undefined | false, what: string, timeoutMs = 15_000): Promise<T> {
  const start = Date.now();
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() - start > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
