// The OS process table, as the local provider needs it: is a process (still the same one) alive,
// signal a process group, find every process started for a sandbox, and stop them all.
//
// Liveness is more than `kill(pid, 0)`: a zombie (exited, not yet reaped — common when an orphan's
// new parent reaps lazily) answers kill(0) but runs nothing, and a recycled pid answers for a
// different process. On Linux /proc settles both; elsewhere kill(0) is the best there is.
import { readFileSync, readdirSync } from 'node:fs';
import { sleep } from './fs-util.js';

const HAS_PROC = (() => {
  try {
    readFileSync('/proc/self/stat');
    return true;
  } catch {
    return false;
  }
})();

interface ProcStat {
  state: string;
  pgrp: number;
  startTime: string;
}

function readProcStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'latin1');
  } catch {
    return undefined;
  }
  // Field 2 (comm) may contain spaces and parentheses; everything after the last ')' is fixed.
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const [state, , pgrp] = rest;
  const startTime = rest[19];
  if (state === undefined || pgrp === undefined || startTime === undefined) return undefined;
  return { state, pgrp: Number(pgrp), startTime };
}

/** Kernel start time of a process (clock ticks since boot), to tell it from a later one with its pid. */
export function processStartTime(pid: number): string | undefined {
  return HAS_PROC ? readProcStat(pid)?.startTime : undefined;
}

export function isProcessAlive(pid: number, startTime?: string): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  if (!HAS_PROC) return true;
  const stat = readProcStat(pid);
  if (!stat || stat.state === 'Z' || stat.state === 'X') return false;
  return startTime === undefined || stat.startTime === startTime;
}

/** Pids of live (non-zombie) processes in a process group; on systems without /proc, [pgid] or []. */
export function groupMembers(pgid: number): number[] {
  if (!Number.isInteger(pgid) || pgid <= 1) return [];
  if (!HAS_PROC) {
    try {
      process.kill(-pgid, 0);
      return [pgid];
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'EPERM' ? [pgid] : [];
    }
  }
  const members: number[] = [];
  for (const pid of allPids()) {
    const stat = readProcStat(pid);
    if (stat && stat.pgrp === pgid && stat.state !== 'Z' && stat.state !== 'X') members.push(pid);
  }
  return members;
}

function allPids(): number[] {
  try {
    return readdirSync('/proc')
      .filter((name) => /^\d+$/.test(name))
      .map(Number);
  } catch {
    return [];
  }
}

/**
 * Live processes whose environment holds `name=value`. Every process the local provider starts for
 * a sandbox carries a marker variable, and children inherit it, so this finds even processes that
 * left their process group (setsid, daemons). Linux only; elsewhere the groups must do.
 */
export function processesWithEnv(name: string, value: string): number[] {
  if (!HAS_PROC) return [];
  const needle = Buffer.from(`\0${name}=${value}\0`);
  const found: number[] = [];
  for (const pid of allPids()) {
    let env: Buffer;
    try {
      env = readFileSync(`/proc/${pid}/environ`);
    } catch {
      continue; // gone, or another user's process
    }
    if (Buffer.concat([Buffer.from([0]), env]).includes(needle) && isProcessAlive(pid)) found.push(pid);
  }
  return found;
}

function signalQuietly(target: number, signal: NodeJS.Signals): void {
  try {
    process.kill(target, signal);
  } catch {
    // already gone (ESRCH), or not ours to signal (EPERM): nothing more to do for this one
  }
}

/** A process group recorded when it was started; startTime guards against a recycled pgid. */
export interface GroupRecord {
  pgid: number;
  startTime?: string;
}

export interface StopTargets {
  groups: GroupRecord[];
  /** Marker variable inherited by every process of the sandbox. */
  envMarker?: { name: string; value: string };
  /** Pids never to signal (the caller itself). */
  exclude?: number[];
}

export interface StopOptions {
  /** How long SIGTERM gets before SIGKILL. */
  graceMs: number;
  /** How long to wait for SIGKILL to take effect. */
  killWaitMs?: number;
}

/**
 * SIGTERM to every target, up to graceMs for them to exit, SIGKILL to what is left, and a bounded
 * wait for that. Returns the pids still alive at the end (normally none).
 */
export async function stopProcesses(targets: StopTargets, opts: StopOptions): Promise<number[]> {
  const exclude = new Set(targets.exclude ?? []);
  // A group whose leader is alive but started at another time is someone else's: its pid was
  // recycled. A group whose leader is gone cannot have been recycled (Linux does not reuse a pid
  // while a group of that id exists), so its survivors are still ours.
  const groups = targets.groups.filter((g) => {
    if (exclude.has(g.pgid)) return false;
    const now = processStartTime(g.pgid);
    return now === undefined || g.startTime === undefined || now === g.startTime;
  });
  const alive = (): number[] => {
    const pids = new Set<number>();
    for (const g of groups) for (const pid of groupMembers(g.pgid)) pids.add(pid);
    if (targets.envMarker) for (const pid of processesWithEnv(targets.envMarker.name, targets.envMarker.value)) pids.add(pid);
    for (const pid of exclude) pids.delete(pid);
    return [...pids];
  };
  const signalAll = (signal: NodeJS.Signals): void => {
    for (const g of groups) signalQuietly(-g.pgid, signal);
    for (const pid of alive()) signalQuietly(pid, signal);
  };
  const waitGone = async (ms: number): Promise<number[]> => {
    const deadline = Date.now() + ms;
    let left = alive();
    while (left.length > 0 && Date.now() < deadline) {
      await sleep(50);
      left = alive();
    }
    return left;
  };

  if (alive().length === 0) return [];
  signalAll('SIGTERM');
  if ((await waitGone(opts.graceMs)).length === 0) return [];
  signalAll('SIGKILL');
  return waitGone(opts.killWaitMs ?? 5000);
}
