// Ending a local instance, the same way whoever does it: the instance host when a spot notice's
// time has come, terminate() when the controller asks, observe() when it finds the host dead.
// Every process of the sandbox is stopped (SIGTERM, grace, SIGKILL), then the sandbox is marked
// terminated (first writer's reason wins) and its bulky work data is removed.
import type { GroupRecord } from './processes.js';
import { stopProcesses } from './processes.js';
import { INSTANCE_ENV, type Sandbox, type ShutdownRecord, type TerminatedRecord } from './sandbox.js';

export interface ShutdownOptions {
  graceMs: number;
  /** Pids never to signal: the instance host excludes itself. */
  exclude?: number[];
}

export async function sandboxGroups(sandbox: Sandbox): Promise<GroupRecord[]> {
  const groups: GroupRecord[] = [...(await sandbox.groups()), ...(await sandbox.agentGroups())];
  const host = await sandbox.host();
  if (host) groups.push({ pgid: host.pid, startTime: host.startTime });
  return groups;
}

/** Stops every process of the sandbox; returns the pids that survived even SIGKILL (normally none). */
export async function stopSandboxProcesses(sandbox: Sandbox, opts: ShutdownOptions): Promise<number[]> {
  return stopProcesses(
    { groups: await sandboxGroups(sandbox), envMarker: { name: INSTANCE_ENV, value: sandbox.id }, exclude: opts.exclude },
    { graceMs: opts.graceMs },
  );
}

export async function shutDownSandbox(
  sandbox: Sandbox,
  by: ShutdownRecord['by'],
  record: TerminatedRecord,
  opts: ShutdownOptions,
): Promise<{ survivors: number[] }> {
  await sandbox.markShuttingDown({ at: new Date().toISOString(), by });
  const survivors = await stopSandboxProcesses(sandbox, opts);
  if (survivors.length > 0) return { survivors };
  // Work data goes before the terminated mark, so a terminated sandbox never still holds it.
  await sandbox.removeWorkData();
  await sandbox.markTerminated(record);
  return { survivors };
}
