// Renders the agent's config (AgentConfig) from a run's spec, and locates the agent (one zipapp).
// Providers decide where things live on their instances; everything about *what* runs and *how*
// it is supervised comes from the spec, so every provider runs the same job the same way.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { AttemptKey } from '../providers/types.js';
import { parseDuration } from '../spec/duration.js';
import { translateProgressPattern } from '../spec/progress-pattern.js';
import { normalizeRelative } from '../spec/setup-checks.js';
import { setupCache, setupCommand, type RunSpec } from '../spec/types.js';
import type { AgentConfig } from './config-types.js';

/** EC2's instance metadata service. */
export const EC2_IMDS_URL = 'http://169.254.169.254';

export interface AgentConfigInput {
  spec: RunSpec;
  key: AttemptKey;
  /** Storage root: `file:///abs/dir` or `s3://bucket/prefix` (the spec's, or the provider's default). */
  storage: string;
  /** Storage key of the code bundle, from layout.bundleKey(sha256). */
  bundleKey: string;
  /** Absolute paths on the instance. */
  stateDir: string;
  workDir: string;
  /** Defaults to spec.checkpoints.dir; the local provider puts it inside its sandbox. */
  checkpointDir?: string;
  /** Defaults to EC2's IMDS; the local provider serves its own per sandbox. */
  imdsUrl?: string;
  s3EndpointUrl?: string;
  ssmEndpointUrl?: string;
  /** Defaults to spec.resources.region. */
  region?: string;
  seedGeneration?: number;
  /** Whether to look for a checkpoint to restore; defaults to attempt > 1 or a seed generation. */
  resuming?: boolean;
  /** Defaults: 1 s for file:// storage, 10 s for s3:// (each heartbeat costs S3 requests). */
  heartbeatSeconds?: number;
  /** Default 2 s: a spot notice gives two minutes, the job needs most of them. */
  noticePollSeconds?: number;
}

export function renderAgentConfig(input: AgentConfigInput): AgentConfig {
  const { spec, key } = input;
  for (const [name, value] of [['stateDir', input.stateDir], ['workDir', input.workDir], ['checkpointDir', input.checkpointDir ?? spec.checkpoints.dir]] as const) {
    if (!path.isAbsolute(value)) throw new Error(`agent ${name} must be an absolute path, got "${value}"`);
  }
  if (!/^(file:\/\/\/|s3:\/\/)/.test(input.storage)) {
    throw new Error(`storage "${input.storage}" must be a file:///absolute/path or s3://bucket/prefix URL`);
  }
  const s3 = input.storage.startsWith('s3://');
  const config: AgentConfig = {
    run: key.run,
    generation: key.generation,
    attempt: key.attempt,
    resuming: input.resuming ?? (key.attempt > 1 || input.seedGeneration !== undefined),
    storage: input.storage,
    bundleKey: input.bundleKey,
    stateDir: input.stateDir,
    workDir: input.workDir,
    checkpointDir: input.checkpointDir ?? spec.checkpoints.dir,
    command: spec.run,
    env: { ...spec.env },
    secrets: { ...spec.secrets },
    syncIntervalSeconds: seconds(spec.checkpoints.syncInterval, 'checkpoints.syncInterval'),
    keep: spec.checkpoints.keep,
    signal: spec.checkpoints.signal,
    signalScope: spec.checkpoints.signalScope ?? 'main',
    gracePeriodSeconds: seconds(spec.checkpoints.gracePeriod, 'checkpoints.gracePeriod'),
    imdsUrl: input.imdsUrl ?? EC2_IMDS_URL,
    heartbeatSeconds: input.heartbeatSeconds ?? (s3 ? 10 : 1),
    noticePollSeconds: input.noticePollSeconds ?? 2,
  };
  const setup = setupCommand(spec);
  if (setup !== undefined) config.setup = setup;
  const cache = setupCache(spec);
  // `./.venv/` and `.venv` name one path: the agent gets them as `.venv` (validated by src/spec/setup-checks.ts).
  if (cache) config.setupCache = { paths: cache.paths.map(normalizeRelative), key: cache.key.map(normalizeRelative) };
  if (spec.timeouts.stall !== undefined) config.stallSeconds = seconds(spec.timeouts.stall, 'timeouts.stall');
  // Validated already (src/spec/checks.ts); a pattern refused here would throw ProgressPatternError.
  if (spec.progress?.pattern !== undefined) config.progressPattern = translateProgressPattern(spec.progress.pattern).python;
  const region = input.region ?? spec.resources.region;
  if (region !== undefined) config.region = region;
  if (input.s3EndpointUrl !== undefined) config.s3EndpointUrl = input.s3EndpointUrl;
  if (input.ssmEndpointUrl !== undefined) config.ssmEndpointUrl = input.ssmEndpointUrl;
  if (input.seedGeneration !== undefined) config.seedGeneration = input.seedGeneration;
  if (key.uid !== undefined) config.uid = key.uid;
  return config;
}

function seconds(text: string, field: string): number {
  try {
    return parseDuration(text) / 1000;
  } catch (err) {
    throw new Error(`spec.${field}: ${(err as Error).message}`);
  }
}

/**
 * Absolute path of the agent zipapp, dist/agent/runctl-agent.pyz: one file built from the Python
 * package src/agent/runctl_agent/ by `npm run build` (src/agent/build-pyz.py). This module lives
 * two levels below the package root both as src/agent/config.ts and as dist/agent/config.js, and
 * the package ships dist/ (package.json `files`), so one resolution serves tests, the built CLI
 * and an installed package. Throws when the zipapp has not been built.
 */
export function agentScriptPath(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  const script = path.resolve(here, '..', '..', 'dist', 'agent', 'runctl-agent.pyz');
  if (!existsSync(script)) throw new Error(`runctl's agent is missing: expected ${script}; run \`npm run build\` to build it`);
  return script;
}

/** argv that starts the agent for a config file (add `--detach` to return at once). */
export function agentCommand(configFile: string, opts: { python?: string; detach?: boolean } = {}): string[] {
  return [opts.python ?? 'python3', agentScriptPath(), '--config', configFile, ...(opts.detach ? ['--detach'] : [])];
}
