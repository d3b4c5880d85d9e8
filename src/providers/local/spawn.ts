// Starting the processes of a local instance: the instance host (node) and the agent (python3).
// Both run detached in their own process group and session, so they outlive the controller (an
// instance does not stop when the controller does), and every one is recorded in the sandbox so
// terminate() can find it again from any controller process.
import { spawn } from 'node:child_process';
import { existsSync, openSync, closeSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TerminalError } from '../types.js';
import { processStartTime } from './processes.js';
import { INSTANCE_ENV, type ProcessGroupRecord, type Sandbox } from './sandbox.js';

/**
 * dist/providers/local/instance-host.js. This module sits three levels below the package root as
 * src/providers/local/spawn.ts (tests) and as dist/providers/local/spawn.js (the CLI), so one
 * resolution serves both; the host always runs compiled.
 */
export function instanceHostScript(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const script = path.resolve(here, '..', '..', '..', 'dist', 'providers', 'local', 'instance-host.js');
  if (!existsSync(script)) {
    throw new TerminalError(`the local provider's instance host is not built (expected ${script}): run \`npm run build\``, {
      code: 'NotBuilt',
    });
  }
  return script;
}

export interface DetachedProcess {
  command: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  cwd: string;
  /** stdout and stderr are appended here. */
  logFile: string;
  role: ProcessGroupRecord['role'];
}

/** Spawns a detached process group leader for the sandbox and records its group there. */
export async function spawnDetached(sandbox: Sandbox, proc: DetachedProcess): Promise<ProcessGroupRecord> {
  const fd = openSync(proc.logFile, 'a', 0o644);
  let pid: number;
  try {
    const child = spawn(proc.command, proc.args, {
      cwd: proc.cwd,
      env: { ...proc.env, [INSTANCE_ENV]: sandbox.id },
      detached: true,
      stdio: ['ignore', fd, fd],
    });
    pid = await new Promise<number>((resolve, reject) => {
      child.once('error', reject);
      child.once('spawn', () => resolve(child.pid as number));
    });
    child.unref();
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new TerminalError(`cannot start ${proc.role}: \`${proc.command}\` was not found on PATH; install it or put it on PATH`, {
        code,
        cause: err,
      });
    }
    throw err;
  } finally {
    closeSync(fd);
  }
  const record: ProcessGroupRecord = { pgid: pid, startTime: processStartTime(pid), role: proc.role, startedAt: new Date().toISOString() };
  await sandbox.recordGroup(record);
  return record;
}

/** The host needs nothing from the controller's environment but a PATH. */
export function hostEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const name of ['PATH', 'HOME', 'LANG', 'TZ', 'TMPDIR']) if (process.env[name] !== undefined) env[name] = process.env[name];
  return env;
}

export function startInstanceHost(sandbox: Sandbox): Promise<ProcessGroupRecord> {
  return spawnDetached(sandbox, {
    command: process.execPath,
    args: [instanceHostScript(), sandbox.dir],
    env: hostEnv(),
    cwd: sandbox.dir,
    logFile: sandbox.hostLog,
    role: 'host',
  });
}
