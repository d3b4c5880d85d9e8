// Shipping an attempt to its instance: the code bundle to S3 (content-addressed, nothing uploaded
// when unchanged), the agent zipapp to S3 (content-addressed too), then one SSM command that
// fetches the agent, writes its config and starts it detached. Repeating all of it is harmless.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { BundleError, createBundle } from '../../agent/bundle.js';
import { agentScriptPath, renderAgentConfig } from '../../agent/config.js';
import { bundleKey } from '../../agent/layout.js';
import { ProviderError, TerminalError, type AttemptKey, type DeployRequest, type StopReason } from '../types.js';
import { agentInstallScript, attemptDir, EXIT_AGENT_MISMATCH, EXIT_MISSING_PREREQUISITE, IMDS_URL } from './agent-script.js';
import { ensureBundle } from './bundles.js';
import type { AwsClients } from './clients.js';
import { commandFailure, runShellScript, waitForOnline } from './ssm.js';
import type { S3Storage } from './storage.js';

/** Storage key of the agent zipapp, by its content hash (kept apart from bundles/, never pruned). */
export function agentKey(sha256: string): string {
  return `agent/${sha256}/runctl-agent.pyz`;
}

export interface DeployDeps {
  clients: AwsClients;
  storage: S3Storage;
  /** Endpoint overrides for the agent's AWS CLI (tests, S3-compatible stores). */
  s3EndpointUrl?: string;
  ssmEndpointUrl?: string;
  deadlineMs: number;
  pollMs: number;
  /** Agent objects already known to be in storage (bucket/key), so a redeploy costs no HEAD. */
  knownObjects: Set<string>;
  timing?: { heartbeatSeconds?: number; noticePollSeconds?: number };
}

export interface DeployOutcome {
  bundleSha256: string;
  bundleBytesUploaded: number;
  commandId: string;
  output: string;
}

async function ensureAgent(storage: S3Storage, known: Set<string>): Promise<{ url: string; sha256: string }> {
  const body = await readFile(agentScriptPath());
  const sha256 = createHash('sha256').update(body).digest('hex');
  const key = agentKey(sha256);
  const url = storage.url(key);
  if (!known.has(url)) {
    if (!(await storage.exists(key))) await storage.uploadFile(key, agentScriptPath(), 'application/zip');
    known.add(url);
  }
  return { url, sha256 };
}

function storageRoot(storage: S3Storage): string {
  return `s3://${storage.location.bucket}/${storage.location.prefix.replace(/\/$/, '')}`.replace(/\/$/, '');
}

/** What starting an agent needs besides the instance it runs on (a DeployRequest without `instance`). */
export type AgentStart = Omit<DeployRequest, 'instance'>;

/** The install-and-start script of one attempt's agent, with what was shipped to storage for it. */
export interface PreparedAgent {
  /** The POSIX sh script of agent-script.ts: fetches and checks the agent, writes its config, starts it. */
  script: string;
  bundleSha256: string;
  /** Bytes of code bundle uploaded now (0 when storage already held it). */
  bundleBytesUploaded: number;
  /** s3:// URL of the agent zipapp the script fetches. */
  agentUrl: string;
}

/**
 * Ships the code bundle and the agent zipapp to storage (content-addressed: nothing uploaded when
 * already there) and renders the script that installs and starts the attempt's agent. The same
 * script goes out as SSM's command (deployAgent) and as a launch's user data (issue 12: the agent
 * starts at boot, before SSM registration); running it twice is harmless.
 *
 * Raises TerminalError when spec.code cannot be bundled; storage failures as classified by S3Storage.
 */
export async function prepareAgent(deps: Omit<DeployDeps, 'deadlineMs' | 'pollMs'>, req: AgentStart): Promise<PreparedAgent> {
  const { clients, storage } = deps;
  let bundle;
  try {
    bundle = await createBundle(req.repoRoot, req.spec.code);
  } catch (err) {
    if (err instanceof BundleError) throw new TerminalError(`spec.code: ${err.message}`, { code: 'BundleError', cause: err });
    throw err;
  }
  const bundleBytesUploaded = await ensureBundle(storage, bundle);
  const agent = await ensureAgent(storage, deps.knownObjects);

  const dir = attemptDir(req);
  const config = renderAgentConfig({
    spec: req.spec,
    key: req,
    storage: storageRoot(storage),
    bundleKey: bundleKey(bundle.sha256),
    stateDir: `${dir}/state`,
    workDir: `${dir}/work`,
    imdsUrl: IMDS_URL,
    region: clients.region,
    ...(deps.s3EndpointUrl ? { s3EndpointUrl: deps.s3EndpointUrl } : {}),
    ...(deps.ssmEndpointUrl ? { ssmEndpointUrl: deps.ssmEndpointUrl } : {}),
    ...(req.seedGeneration !== undefined ? { seedGeneration: req.seedGeneration } : {}),
    ...(req.startGate ? { startGate: true } : {}),
    ...deps.timing,
  });
  const script = agentInstallScript({
    key: req,
    config,
    agentUrl: agent.url,
    agentSha256: agent.sha256,
    region: clients.region,
    ...(deps.s3EndpointUrl ? { s3EndpointUrl: deps.s3EndpointUrl } : {}),
  });
  return { script, bundleSha256: bundle.sha256, bundleBytesUploaded, agentUrl: agent.url };
}

export async function deployAgent(deps: DeployDeps, req: DeployRequest): Promise<DeployOutcome> {
  const { clients } = deps;
  const deadline = Date.now() + deps.deadlineMs;
  const { script, bundleSha256, bundleBytesUploaded, agentUrl } = await prepareAgent(deps, req);

  await waitForOnline(clients, req.instance.id, deadline, deps.pollMs);
  const result = await runShellScript(clients, req.instance.id, script, {
    comment: `runctl agent ${req.run} g${req.generation} a${req.attempt}`,
    deadline,
    executionTimeoutSeconds: 600,
    pollMs: deps.pollMs,
  });
  if (result.status !== 'Success') {
    const what = `starting runctl's agent on ${req.instance.id}`;
    const output = `${result.stderr}\n${result.stdout}`;
    if (/AccessDenied|Forbidden|\(403\)/.test(output)) {
      throw new TerminalError(
        `${what} failed: the instance cannot read ${agentUrl} (access denied). The instance profile ` +
          `"${req.spec.resources.iamInstanceProfile ?? ''}" needs s3:GetObject/PutObject/ListBucket on the storage prefix; ` +
          '`runctl iam-policy` prints the instance policy',
        { code: 'InstanceAccessDenied' },
      );
    }
    const err = commandFailure(result, what, [EXIT_MISSING_PREREQUISITE, EXIT_AGENT_MISMATCH]);
    throw err instanceof ProviderError ? err : new TerminalError(err.message);
  }
  return { bundleSha256, bundleBytesUploaded, commandId: result.commandId, output: result.stdout };
}

/** The control object that asks the agent to checkpoint and stop (read by the agent every few seconds). */
export function stopRequest(key: AttemptKey, reason: StopReason | 'spot-rehearsal'): Record<string, unknown> {
  return { action: 'stop', reason, run: key.run, generation: key.generation, attempt: key.attempt, at: new Date().toISOString() };
}
