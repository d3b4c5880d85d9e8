// A controller reconciling on the local provider, as the e2e tests drive it: the provider's
// sandboxes and storage, a file store and the controller, all under one temp folder.
import fs from 'node:fs';
import path from 'node:path';
import { createLocalProvider, type LocalProvider, type LocalProviderOptions } from '../../src/providers/local/index.js';
import { Controller } from '../../src/reconciler/controller.js';
import type { LoadedRun } from '../../src/spec/types.js';
import { FileStore } from '../../src/state/file-store.js';

export interface LocalController {
  provider: LocalProvider;
  store: FileStore;
  controller: Controller;
}

/**
 * Opens a local provider (`<root>/local`, polled every 200 ms), a file store (`<root>/state`, no
 * fsync) and a controller loading `runs()` on each pass. Registers in `cleanups` what undoes it:
 * stop the controller, terminate every instance it recorded, close the store, remove `root`.
 */
export async function startLocalController(opts: {
  root: string;
  repoRoot: string;
  runs: () => LoadedRun[];
  cleanups: Array<() => Promise<void>>;
  controller?: string;
  provider?: Omit<LocalProviderOptions, 'root' | 'repoRoot' | 'controller'>;
}): Promise<LocalController> {
  const name = opts.controller ?? 'e2e';
  const provider = createLocalProvider({ root: path.join(opts.root, 'local'), repoRoot: opts.repoRoot, controller: name, pollIntervalMs: 200, ...opts.provider });
  const store = new FileStore(path.join(opts.root, 'state'), { fsync: false });
  await store.open();
  const controller = new Controller({
    store,
    provider: async () => provider,
    load: async () => ({ runs: opts.runs(), diagnostics: [], invalidFiles: [] }),
    controller: name,
    repoRoot: opts.repoRoot,
    prune: false,
  });
  opts.cleanups.push(async () => {
    await controller.stop();
    for (const s of controller.runs) for (const i of s.instances) await provider.terminate(i.id);
    await store.close();
    fs.rmSync(opts.root, { recursive: true, force: true });
  });
  return { provider, store, controller };
}
