// Classification of AWS failures, the SDK retry strategy, and the install script's quoting: the
// parts whose behaviour does not need moto.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { agentInstallScript, attemptDir, shQuote } from '../../../src/providers/aws/agent-script.js';
import { classifyAwsError, quotaGroup, quotaName } from '../../../src/providers/aws/errors.js';
import { marketLadder } from '../../../src/providers/aws/ec2-launch.js';
import { backoffDelay, BoundedRetryStrategy } from '../../../src/providers/aws/retry.js';
import { CapacityError, RetryableError, TerminalError } from '../../../src/providers/types.js';
import type { AgentConfig } from '../../../src/agent/config-types.js';
import { awsSpec } from './harness.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

function sdkError(name: string, status: number, message = 'm', requestId = 'req-1') {
  return Object.assign(new Error(message), { name, $metadata: { httpStatusCode: status, requestId } });
}

const ctx = { service: 'ec2' as const, operation: 'RunInstances', region: 'us-east-1', instanceType: 'g5.xlarge', market: 'on-demand' as const };

describe('classifyAwsError', () => {
  it.each([
    ['RequestLimitExceeded', 503, RetryableError],
    ['ThrottlingException', 400, RetryableError],
    ['SlowDown', 503, RetryableError],
    ['InternalError', 500, RetryableError],
    ['ServiceUnavailable', 503, RetryableError],
    ['SomethingNew', 502, RetryableError],
    ['InsufficientInstanceCapacity', 500, CapacityError],
    ['SpotMaxPriceTooLow', 400, CapacityError],
    ['MaxSpotInstanceCountExceeded', 400, CapacityError],
    ['UnfulfillableCapacity', 400, CapacityError],
    // Outside the ladder nothing retries an unsupported configuration; the ladder skips that rung (launch-faults.test.ts).
    ['Unsupported', 400, TerminalError],
    ['VcpuLimitExceeded', 400, TerminalError],
    ['InstanceLimitExceeded', 400, TerminalError],
    ['UnauthorizedOperation', 403, TerminalError],
    ['AccessDenied', 403, TerminalError],
    ['ExpiredToken', 400, TerminalError],
    ['InvalidParameterValue', 400, TerminalError],
    ['SomethingElse', 400, TerminalError],
  ])('%s (HTTP %i) is a %s', (code, status, kind) => {
    const err = classifyAwsError(sdkError(code, status), ctx);
    expect(err).toBeInstanceOf(kind);
    expect(err.code).toBe(code);
    expect(err.requestId).toBe('req-1');
    expect(err.message).toContain('request id req-1');
  });

  it('treats socket errors without an HTTP response as retryable', () => {
    const err = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
    expect(classifyAwsError(err, ctx)).toBeInstanceOf(RetryableError);
  });

  it('names the quota to raise for vCPU limits, by family and market', () => {
    expect(classifyAwsError(sdkError('VcpuLimitExceeded', 400), ctx).message).toMatch(
      /raise the EC2 quota "Running On-Demand G and VT instances" in Service Quotas for us-east-1/,
    );
    expect(quotaName('p4d.24xlarge', 'spot')).toBe('All P Spot Instance Requests');
    expect(quotaName('m7i.large', 'on-demand')).toBe('Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances');
    expect(quotaName('trn1.32xlarge', 'on-demand')).toBe('Running On-Demand Trn instances');
  });

  it('puts each instance family in its Service Quotas group, longer prefixes first', () => {
    expect(
      ['inf2.xlarge', 'i4i.large', 'dl1.24xlarge', 'd3.xlarge', 'trn1.2xlarge', 't3.micro', 'hpc7g.4xlarge', 'h1.2xlarge', 'vt1.3xlarge', 'g6e.xlarge', 'p5.48xlarge', 'f1.2xlarge', 'x2idn.16xlarge', 'u-6tb1.metal', 'c7gn.large'].map(
        quotaGroup,
      ),
    ).toEqual(['Inf', 'Standard (A, C, D, H, I, M, R, T, Z)', 'DL', 'Standard (A, C, D, H, I, M, R, T, Z)', 'Trn', 'Standard (A, C, D, H, I, M, R, T, Z)', 'HPC', 'Standard (A, C, D, H, I, M, R, T, Z)', 'G and VT', 'G and VT', 'P', 'F', 'X', 'High Memory', 'Standard (A, C, D, H, I, M, R, T, Z)']);
  });

  it('says how to fix credentials instead of only repeating AWS', () => {
    const msg = classifyAwsError(sdkError('ExpiredToken', 400, 'The security token included in the request is expired'), ctx).message;
    expect(msg).toMatch(/aws sso login/);
  });
});

describe('BoundedRetryStrategy', () => {
  it('retries transient errors a bounded number of times with capped, jittered delays', async () => {
    const strategy = new BoundedRetryStrategy({ maxAttempts: 3, baseDelayMs: 100, maxDelayMs: 1000 });
    let token = await strategy.acquireInitialRetryToken('');
    const throttle = { error: sdkError('RequestLimitExceeded', 503), errorType: 'THROTTLING' };
    token = await strategy.refreshRetryTokenForRetry(token, throttle);
    expect(token.getRetryCount()).toBe(1);
    expect(token.getRetryDelay()).toBeLessThan(1000);
    token = await strategy.refreshRetryTokenForRetry(token, throttle);
    expect(token.getRetryCount()).toBe(2);
    await expect(strategy.refreshRetryTokenForRetry(token, throttle)).rejects.toMatchObject({ name: 'RequestLimitExceeded' });
  });

  it('never retries capacity, quota, permission or validation errors in place', async () => {
    const strategy = new BoundedRetryStrategy();
    const token = await strategy.acquireInitialRetryToken('');
    for (const [code, status] of [
      ['InsufficientInstanceCapacity', 500],
      ['VcpuLimitExceeded', 400],
      ['UnauthorizedOperation', 403],
      ['InvalidParameterValue', 400],
    ] as const) {
      await expect(strategy.refreshRetryTokenForRetry(token, { error: sdkError(code, status), errorType: 'SERVER_ERROR' })).rejects.toMatchObject({
        name: code,
      });
    }
  });

  it('full jitter stays within [0, min(cap, base * 2^n))', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 30 }), fc.double({ min: 0, max: 0.999999, noNaN: true }), (n, r) => {
        const d = backoffDelay(n, 100, 20_000, () => r);
        return d >= 0 && d < Math.min(20_000, 100 * 2 ** n);
      }),
    );
  });
});

describe('market ladder', () => {
  it('tries every spot rung before any on-demand rung, types in order, zones within a type', () => {
    const spec = awsSpec('b', { resources: { instanceTypes: ['g5.xlarge', 'g6.xlarge'], availabilityZones: ['us-east-1a', 'us-east-1b'] } });
    expect(marketLadder(spec.resources).map((r) => r.id)).toEqual([
      'spot/g5.xlarge/us-east-1a',
      'spot/g5.xlarge/us-east-1b',
      'spot/g6.xlarge/us-east-1a',
      'spot/g6.xlarge/us-east-1b',
      'on-demand/g5.xlarge/us-east-1a',
      'on-demand/g5.xlarge/us-east-1b',
      'on-demand/g6.xlarge/us-east-1a',
      'on-demand/g6.xlarge/us-east-1b',
    ]);
    expect(marketLadder({ ...spec.resources, market: 'spot' }).every((r) => r.market === 'spot')).toBe(true);
    expect(marketLadder({ ...spec.resources, market: 'on-demand' }).every((r) => r.market === 'on-demand')).toBe(true);
    // A subnet fixes the zone.
    expect(marketLadder({ ...spec.resources, subnetId: 'subnet-1', market: 'on-demand' }).map((r) => r.zone)).toEqual([undefined, undefined]);
  });
});

describe('agent install script', () => {
  const config = (env: Record<string, string>): AgentConfig => ({
    run: 'r',
    generation: 1,
    attempt: 1,
    resuming: false,
    storage: 's3://b/p',
    bundleKey: 'bundles/x.tar.gz',
    stateDir: '/opt/runctl/runs/r/g1/a1/state',
    workDir: '/opt/runctl/runs/r/g1/a1/work',
    checkpointDir: '/opt/runctl/checkpoints',
    command: 'python3 train.py',
    env,
    secrets: {},
    syncIntervalSeconds: 60,
    keep: 3,
    signal: 'SIGTERM',
    signalScope: 'main',
    gracePeriodSeconds: 90,
    imdsUrl: 'http://169.254.169.254',
    heartbeatSeconds: 10,
    noticePollSeconds: 2,
  });

  it('single-quotes any string so a POSIX shell reads it back unchanged', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary' }).filter((s) => !s.includes('\0')), (value) => {
        const out = execFileSync('/bin/sh', ['-c', `printf %s ${shQuote(value)}`], { encoding: 'utf8' });
        return out === value;
      }),
      { numRuns: 60 },
    );
  });

  it('carries hostile config values through the heredoc verbatim and never executes them', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-script-'));
    try {
      const marker = path.join(dir, 'pwned');
      const hostile = { A: `$(touch ${marker})`, B: '`touch ' + marker + '`', C: "'; touch " + marker + "; '", D: 'line1\nRUNCTL_CONFIG_x\nline3' };
      const script = agentInstallScript({
        key: { run: 'r', generation: 1, attempt: 1 },
        config: config(hostile),
        agentUrl: 's3://b/p/agent/x/runctl-agent.pyz',
        agentSha256: 'f'.repeat(64),
        region: 'us-east-1',
      });
      // Run only the part that writes the config, rooted in a temporary directory.
      const body = script.slice(script.indexOf('cat > "$dir/config.json.tmp'), script.indexOf('cd "$dir"'));
      const res = spawnSync('/bin/sh', ['-c', `set -eu\ndir=${shQuote(dir)}\n${body}`], { encoding: 'utf8' });
      expect(res.status, res.stderr).toBe(0);
      expect(JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')).env).toEqual(hostile);
      expect(fs.existsSync(marker)).toBe(false);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('runs twice at the same moment (user data and the SSM command) without one run breaking the other', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'runctl-script-twice-'));
    try {
      // A fake AWS CLI that writes the agent slowly, and a fake python3 that records its start:
      // with one shared temp file, one run renamed the other's half-checked download away.
      const bin = path.join(dir, 'bin');
      fs.mkdirSync(bin);
      const agent = 'agent zipapp bytes\n'.repeat(1000);
      const sha = createHash('sha256').update(agent).digest('hex');
      fs.writeFileSync(path.join(dir, 'agent.src'), agent);
      const gate = path.join(dir, 'both-downloading');
      fs.writeFileSync(
        path.join(bin, 'aws'),
        `#!/bin/sh\ndest=""; for a in "$@"; do dest="$a"; done\nhead -c 100 ${shQuote(path.join(dir, 'agent.src'))} > "$dest"\n` +
          `echo x >> ${shQuote(gate)}\nwhile [ "$(wc -l < ${shQuote(gate)})" -lt 2 ]; do sleep 0.01; done\ncat ${shQuote(path.join(dir, 'agent.src'))} > "$dest"\n`,
        { mode: 0o755 },
      );
      fs.writeFileSync(path.join(bin, 'python3'), `#!/bin/sh\necho "started $*" >> ${shQuote(path.join(dir, 'starts'))}\n`, { mode: 0o755 });
      const script = agentInstallScript({ key: { run: 'r', generation: 1, attempt: 1 }, config: config({}), agentUrl: 's3://b/p/agent/x/runctl-agent.pyz', agentSha256: sha, region: 'us-east-1' })
        .split('/opt/runctl')
        .join(path.join(dir, 'root'));
      const env = { ...process.env, PATH: `${bin}:${process.env.PATH ?? ''}` };
      const run = () =>
        new Promise<{ code: number | null; stderr: string }>((resolve) => {
          const child = spawn('/bin/sh', ['-c', script], { env, stdio: ['ignore', 'ignore', 'pipe'] });
          let stderr = '';
          child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
          child.on('close', (code) => resolve({ code, stderr }));
        });
      const [a, b] = await Promise.all([run(), run()]);
      expect([a.code, b.code], `${a.stderr}\n${b.stderr}`).toEqual([0, 0]);
      const installed = path.join(dir, 'root/runs/r/g1/a1');
      expect(createHash('sha256').update(fs.readFileSync(path.join(installed, 'runctl-agent.pyz'))).digest('hex')).toBe(sha);
      expect(JSON.parse(fs.readFileSync(path.join(installed, 'config.json'), 'utf8')).command).toBe('python3 train.py');
      expect(fs.readdirSync(installed).filter((n) => n.includes('.tmp'))).toEqual([]);
      expect(fs.readFileSync(path.join(dir, 'starts'), 'utf8').trim().split('\n')).toHaveLength(2);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses values that are not valid where they go', () => {
    expect(() => attemptDir({ run: 'Bad Name; rm -rf /', generation: 1, attempt: 1 })).toThrow(/DNS-1123/);
    const base = { key: { run: 'r', generation: 1, attempt: 1 }, config: config({}), agentUrl: 's3://b/k', agentSha256: 'f'.repeat(64), region: 'us-east-1' };
    expect(() => agentInstallScript({ ...base, region: 'us-east-1; reboot' })).toThrow(/not an AWS region/);
    expect(() => agentInstallScript({ ...base, agentSha256: 'nope' })).toThrow(/64 hex/);
    expect(() => agentInstallScript({ ...base, s3EndpointUrl: "http://x' y" })).toThrow(/not an http/);
  });
});

describe('SDK Node-version warning', () => {
  const run = (code: string) => {
    const env = { ...process.env };
    delete env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED;
    return spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code], { cwd: root, encoding: 'utf8', env });
  };

  it('is kept out of user-facing output while other warnings still show', () => {
    const res = run(`
      import { createClients } from ${JSON.stringify(path.join(root, 'src/providers/aws/clients.ts'))};
      createClients('us-east-1', {});
      process.emitWarning('an unrelated warning');
    `);
    expect(res.status, res.stderr).toBe(0);
    expect(res.stderr).not.toMatch(/NodeVersionSupportWarning/);
    expect(res.stderr).toMatch(/an unrelated warning/);
  });

  it.runIf(Number(process.versions.node.split('.')[0]) < 22)('would otherwise be printed on this Node version', () => {
    const res = run(`import { EC2Client } from '@aws-sdk/client-ec2'; new EC2Client({ region: 'us-east-1' });`);
    expect(res.stderr).toMatch(/NodeVersionSupportWarning/);
  });
});
