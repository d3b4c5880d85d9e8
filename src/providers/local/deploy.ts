// deployAgent for the local provider: ship the content-addressed code bundle into storage, render
// the agent's config with the sandbox's paths and IMDS endpoint, and start runctl's agent detached.
// The agent itself is idempotent (a second one for the same stateDir exits; a new one adopts a
// running job), and this skips starting one while the sandbox's agent is alive.
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { BundleError, createBundle } from '../../agent/bundle.js';
import { agentScriptPath, renderAgentConfig } from '../../agent/config.js';
import { bundleKey } from '../../agent/layout.js';
import type { CodeSpec } from '../../spec/types.js';
import { TerminalError, type DeployRequest } from '../types.js';
import { fsCall } from './errors.js';
import { writeJsonAtomic } from './fs-util.js';
import { isProcessAlive } from './processes.js';
import type { HostRecord, Sandbox } from './sandbox.js';
import { spawnDetached } from './spawn.js';
import type { LocalStorage } from './storage.js';

export interface ShippedBundle {
  sha256: string;
  key: string;
  /** Bytes copied into storage: 0 when storage already held this exact code. */
  copiedBytes: number;
}

/** Bundles code.path and stores it under its content address; unchanged code copies nothing. */
export async function shipBundle(repoRoot: string, code: CodeSpec, storage: LocalStorage, scratchRoot: string): Promise<ShippedBundle> {
  // A scratch folder per call: concurrent deploys of the same code never trip over one file.
  const outDir = path.join(scratchRoot, `bundle-${process.pid}-${randomBytes(4).toString('hex')}`);
  try {
    const bundle = await createBundle(repoRoot, code, { outDir }).catch((err: unknown) => {
      if (err instanceof BundleError) throw new TerminalError(`spec.code: ${err.message}`, { code: 'BadCode', cause: err });
      throw err;
    });
    const copiedBytes = await storage.putBundle(bundle.sha256, bundle.file);
    return { sha256: bundle.sha256, key: bundleKey(bundle.sha256), copiedBytes };
  } finally {
    await fs.rm(outDir, { recursive: true, force: true });
  }
}

export interface AgentLaunchOptions {
  python: string;
  noticePollSeconds: number;
  heartbeatSeconds?: number;
}

export async function startAgent(
  req: DeployRequest,
  sandbox: Sandbox,
  host: HostRecord,
  storage: LocalStorage,
  bundle: ShippedBundle,
  opts: AgentLaunchOptions,
): Promise<{ started: boolean; pid?: number }> {
  const running = await sandbox.agentPid();
  if (running !== undefined && isProcessAlive(running)) return { started: false, pid: running };

  let checkpointDir: string;
  try {
    checkpointDir = sandbox.instancePath(req.spec.checkpoints.dir);
  } catch (err) {
    throw new TerminalError(`spec.checkpoints.dir: ${(err as Error).message}; it must be an absolute path such as /opt/runctl/checkpoints`, {
      code: 'BadCheckpointDir',
    });
  }
  let config;
  try {
    config = renderAgentConfig({
      spec: req.spec,
      key: req.uid ? { run: req.run, uid: req.uid, generation: req.generation, attempt: req.attempt } : { run: req.run, generation: req.generation, attempt: req.attempt },
      storage: storage.url,
      bundleKey: bundle.key,
      stateDir: sandbox.stateDir,
      workDir: sandbox.workDir,
      checkpointDir,
      imdsUrl: host.imdsUrl,
      seedGeneration: req.seedGeneration,
      startGate: req.startGate,
      noticePollSeconds: opts.noticePollSeconds,
      heartbeatSeconds: opts.heartbeatSeconds,
    });
  } catch (err) {
    throw new TerminalError((err as Error).message, { code: 'BadAgentConfig', cause: err });
  }
  await fsCall('writing the agent config', sandbox.agentConfigFile, async () => {
    await fs.mkdir(sandbox.stateDir, { recursive: true });
    await writeJsonAtomic(sandbox.agentConfigFile, config);
  });
  const record = await spawnDetached(sandbox, {
    command: opts.python,
    args: [agentScriptPath(), '--config', sandbox.agentConfigFile],
    // The job runs with the user's environment, as it would in their shell (PATH, HOME, ...).
    env: process.env,
    cwd: sandbox.dir,
    logFile: sandbox.agentOut,
    role: 'agent',
  });
  return { started: true, pid: record.pgid };
}
