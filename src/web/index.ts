// The read-only web dashboard (issue 13): `runctl dashboard` and `reconcile --watch --dashboard`.
// It reads the state store the CLI reads and the providers' storage; it never reconciles, never
// takes the controller lock or a lease, and never writes. See docs/dashboard.md.
import type { ProviderRegistry } from '../providers/registry.js';
import type { ProjectConfig } from '../spec/types.js';
import type { StateStore } from '../state/types.js';
import { progressHistory } from './history.js';
import { specLabels } from './labels.js';
import type { DashboardAddress } from './listen.js';
import { startDashboard, type DashboardServer } from './server.js';
import { DashboardSource } from './source.js';

export { DashboardAddressError, DEFAULT_DASHBOARD_ADDRESS, parseDashboardAddress, remoteWarning, type DashboardAddress } from './listen.js';
export type { DashboardServer } from './server.js';

export interface OpenDashboardOptions {
  /** A store opened for reading (the CLI's readOnlyStore, or the controller's own). */
  store: StateStore;
  providers: ProviderRegistry;
  /** Spec files or folders the labels come from (default: runs/). */
  paths: string[];
  repoRoot: string;
  project: ProjectConfig;
  address: DashboardAddress;
  /** How often open pages re-read their data, in milliseconds. */
  pollMs?: number;
  log?: (line: string) => void;
}

/** Starts serving the dashboard; resolves with its URL once it listens. */
export async function openDashboard(opts: OpenDashboardOptions): Promise<DashboardServer> {
  const source = new DashboardSource({
    store: opts.store,
    providers: opts.providers,
    labels: specLabels(opts.paths, opts.repoRoot, opts.project),
    history: progressHistory,
  });
  return startDashboard({ source, address: opts.address, pollMs: opts.pollMs, log: opts.log });
}
