// One simulated instance's inside: a directory standing in for its filesystem, and the processes
// started there by SSM commands. Like the SSM agent, a command's lines are written to
// _script.sh and run with /bin/sh (dash here, as on Debian and Ubuntu images), exactly as sent except for two
// well-defined rewrites: runctl's instance root (/opt/runctl) moves into the sandbox, and the
// IMDS address points at this instance's loopback IMDS. Every process started for the instance
// carries RUNCTL_FLEET_INSTANCE in its environment, so "terminating the instance" can find and
// kill all of them, detached agents and their jobs included. As with SSM, a command ends when its
// stdout and stderr close (every process holding them has let go), not when the shell exits.
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { IMDS_URL, INSTANCE_ROOT } from '../../../src/providers/aws/agent-script.js';

/** SSM truncates command output to this many characters in GetCommandInvocation. */
const OUTPUT_LIMIT = 24_000;
export const FLEET_INSTANCE_ENV = 'RUNCTL_FLEET_INSTANCE';

export interface Invocation {
  commandId: string;
  instanceId: string;
  status: 'InProgress' | 'Success' | 'Failed' | 'TimedOut' | 'Cancelled';
  responseCode: number;
  stdout: string;
  stderr: string;
  startedAt: Date;
  endedAt?: Date;
  script: string;
}

export function rewriteScript(script: string, sandboxDir: string, imdsUrl: string): string {
  return script.split(INSTANCE_ROOT).join(path.join(sandboxDir, INSTANCE_ROOT.slice(1))).split(IMDS_URL).join(imdsUrl);
}

export function runInSandbox(opts: {
  commandId: string;
  instanceId: string;
  script: string;
  sandboxDir: string;
  imdsUrl: string;
  region: string;
  timeoutSeconds: number;
  env?: Record<string, string>;
}): Invocation {
  const inv: Invocation = {
    commandId: opts.commandId,
    instanceId: opts.instanceId,
    status: 'InProgress',
    responseCode: -1,
    stdout: '',
    stderr: '',
    startedAt: new Date(),
    script: rewriteScript(opts.script, opts.sandboxDir, opts.imdsUrl),
  };
  fs.mkdirSync(path.join(opts.sandboxDir, 'home'), { recursive: true });
  const orchestration = path.join(opts.sandboxDir, 'ssm', opts.commandId);
  fs.mkdirSync(orchestration, { recursive: true });
  const scriptFile = path.join(orchestration, '_script.sh');
  fs.writeFileSync(scriptFile, inv.script, { mode: 0o700 });
  const child = spawn('/bin/sh', [scriptFile], {
    cwd: opts.sandboxDir,
    stdio: ['ignore', 'pipe', 'pipe'],
    env: {
      PATH: process.env.PATH ?? '/usr/local/bin:/usr/bin:/bin',
      HOME: path.join(opts.sandboxDir, 'home'),
      LANG: 'C.UTF-8',
      AWS_ACCESS_KEY_ID: 'testing',
      AWS_SECRET_ACCESS_KEY: 'testing',
      AWS_DEFAULT_REGION: opts.region,
      AWS_EC2_METADATA_DISABLED: 'true',
      [FLEET_INSTANCE_ENV]: opts.instanceId,
      ...opts.env,
    },
  });
  const append = (which: 'stdout' | 'stderr') => (d: Buffer) => {
    inv[which] = (inv[which] + d.toString('utf8')).slice(0, OUTPUT_LIMIT);
  };
  child.stdout.on('data', append('stdout'));
  child.stderr.on('data', append('stderr'));
  const timer = setTimeout(() => {
    if (inv.status !== 'InProgress') return;
    inv.status = 'TimedOut';
    child.kill('SIGKILL');
  }, opts.timeoutSeconds * 1000);
  timer.unref();
  const finish = (code: number | null) => {
    clearTimeout(timer);
    if (inv.status !== 'InProgress') return;
    inv.responseCode = code ?? -1;
    inv.status = code === 0 ? 'Success' : 'Failed';
    inv.endedAt = new Date();
  };
  // Like the SSM agent, a command is finished when its output streams close, not when the shell
  // exits: a background child that kept a copy of stdout or stderr holds the command InProgress
  // (until executionTimeout), exactly as on EC2. runctl's agent must detach its stdio to return.
  child.on('close', (code) => finish(code));
  child.on('error', (err) => {
    inv.stderr += String(err);
    finish(127);
  });
  return inv;
}

/** Pids of every live process started for this instance (found by their environment). */
export function instanceProcesses(instanceId: string): number[] {
  const marker = `\0${FLEET_INSTANCE_ENV}=${instanceId}\0`;
  const pids: number[] = [];
  for (const entry of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const environ = fs.readFileSync(`/proc/${entry}/environ`, 'latin1');
      if (`\0${environ}\0`.includes(marker)) {
        const stat = fs.readFileSync(`/proc/${entry}/stat`, 'latin1');
        if (!/^\d+ \(.*\) Z /.test(stat)) pids.push(Number(entry));
      }
    } catch {
      // the process ended while we looked, or is not ours to read
    }
  }
  return pids;
}

/** Power off: SIGKILL every process of the instance, as losing the machine would. */
export function killInstanceProcesses(instanceId: string): number {
  const pids = instanceProcesses(instanceId);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
  return pids.length;
}
