// The shell script sent with SSM AWS-RunShellScript to install and start runctl's agent. It is
// built only from validated values, each single-quoted; the agent config travels as JSON in a
// quoted heredoc (no expansion), and the agent itself is fetched from storage and checked against
// its sha256. Running it twice is harmless, at the same moment too (the launch's user data and the
// SSM command): each run writes temp files of its own, and the agent holds a lock in its state
// directory, so a second start exits while the first lives, and a restarted agent adopts the job.
import { createHash } from 'node:crypto';
import type { AgentConfig } from '../../agent/config-types.js';
import type { AttemptKey } from '../types.js';

/** Everything runctl keeps on an instance lives under this directory. */
export const INSTANCE_ROOT = '/opt/runctl';
/** The instance metadata service as the agent reaches it on EC2. */
export const IMDS_URL = 'http://169.254.169.254';
/** Exit code of the script when the image lacks something the agent needs (not worth retrying). */
export const EXIT_MISSING_PREREQUISITE = 3;
/** Exit code when the agent downloaded from storage does not match its hash. */
export const EXIT_AGENT_MISMATCH = 4;

const RUN_NAME = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;
const SHA256 = /^[0-9a-f]{64}$/;

export function shQuote(value: string): string {
  if (value.includes('\0')) throw new Error('a NUL byte cannot be passed to a shell');
  return `'${value.replace(/'/g, `'\\''`)}'`;
}

/** Per-attempt directory on the instance: agent, config, pid file, agent state, the job's work dir. */
export function attemptDir(key: AttemptKey): string {
  if (!RUN_NAME.test(key.run)) throw new Error(`run name "${key.run}" is not a DNS-1123 label`);
  if (!Number.isInteger(key.generation) || key.generation < 0 || !Number.isInteger(key.attempt) || key.attempt < 0) {
    throw new Error(`generation and attempt must be non-negative integers (got ${key.generation}, ${key.attempt})`);
  }
  return `${INSTANCE_ROOT}/runs/${key.run}/g${key.generation}/a${key.attempt}`;
}

export interface AgentScriptInput {
  key: AttemptKey;
  config: AgentConfig;
  /** s3://bucket/key of the agent zipapp (runctl-agent.pyz), content-addressed. */
  agentUrl: string;
  agentSha256: string;
  region: string;
  /** S3 endpoint override for the AWS CLI (tests, S3-compatible stores). */
  s3EndpointUrl?: string;
}

function heredocDelimiter(body: string): string {
  let n = 0;
  for (;;) {
    const tag = `RUNCTL_CONFIG_${createHash('sha256').update(`${n}:${body}`).digest('hex').slice(0, 16)}`;
    if (!body.includes(tag)) return tag;
    n++;
  }
}

export function agentInstallScript(input: AgentScriptInput): string {
  const dir = attemptDir(input.key);
  if (!SHA256.test(input.agentSha256)) throw new Error('agent sha256 must be 64 hex digits');
  if (!/^s3:\/\/[a-z0-9.-]+\/\S+$/.test(input.agentUrl)) throw new Error(`agent URL "${input.agentUrl}" is not an s3:// URL`);
  if (!/^[a-z]{2}(-[a-z]+)+-\d$/.test(input.region)) throw new Error(`region "${input.region}" is not an AWS region name`);
  if (input.s3EndpointUrl !== undefined && !/^https?:\/\/[^\s'"]+$/.test(input.s3EndpointUrl)) {
    throw new Error(`S3 endpoint "${input.s3EndpointUrl}" is not an http(s) URL`);
  }
  const config = JSON.stringify(input.config);
  const eof = heredocDelimiter(config);
  const endpoint = input.s3EndpointUrl ? ` --endpoint-url ${shQuote(input.s3EndpointUrl)}` : '';
  return [
    '#!/bin/sh',
    `# runctl: install and start the agent for ${input.key.run} generation ${input.key.generation} attempt ${input.key.attempt}`,
    // POSIX sh only: the SSM agent runs AWS-RunShellScript with sh, which is dash on Debian/Ubuntu images.
    'set -eu',
    'umask 022',
    `dir=${shQuote(dir)}`,
    `agent_url=${shQuote(input.agentUrl)}`,
    `agent_sha=${shQuote(input.agentSha256)}`,
    `export AWS_DEFAULT_REGION=${shQuote(input.region)}`,
    'missing=""',
    'for tool in python3 aws sha256sum; do command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"; done',
    'if [ -n "$missing" ]; then',
    `  echo "runctl: the instance image lacks:$missing; runctl's agent needs bash, coreutils, python3 and the AWS CLI" >&2`,
    `  exit ${EXIT_MISSING_PREREQUISITE}`,
    'fi',
    'mkdir -p "$dir"',
    // Temp files of this run only ($$): the launch's user data and the SSM command may run this
    // script at the same moment, and each must rename only what it wrote and checked.
    'if ! { [ -s "$dir/runctl-agent.pyz" ] && echo "$agent_sha  $dir/runctl-agent.pyz" | sha256sum -c --status; }; then',
    `  aws${endpoint} s3 cp --only-show-errors "$agent_url" "$dir/runctl-agent.pyz.tmp.$$"`,
    '  if ! echo "$agent_sha  $dir/runctl-agent.pyz.tmp.$$" | sha256sum -c --status; then',
    '    rm -f "$dir/runctl-agent.pyz.tmp.$$"',
    '    echo "runctl: the agent downloaded from $agent_url does not match sha256 $agent_sha" >&2',
    `    exit ${EXIT_AGENT_MISMATCH}`,
    '  fi',
    '  mv -f "$dir/runctl-agent.pyz.tmp.$$" "$dir/runctl-agent.pyz"',
    'fi',
    `cat > "$dir/config.json.tmp.$$" <<'${eof}'`,
    config,
    eof,
    'mv -f "$dir/config.json.tmp.$$" "$dir/config.json"',
    'cd "$dir"',
    // --detach: the agent forks into its own session (setsid) and points its stdio at its state
    // directory, so it outlives this SSM command; config errors still reach the command's output.
    'python3 "$dir/runctl-agent.pyz" --config "$dir/config.json" --detach </dev/null',
    'echo "runctl: agent started for $dir"',
    '',
  ].join('\n');
}
