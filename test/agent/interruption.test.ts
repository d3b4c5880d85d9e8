// Spot notices through a loopback IMDSv2 that requires the session token, and controller stops.
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { controlKey } from '../../src/agent/layout.js';
import { type Sandbox, TEST_JOB, groupAlive, useAgentSandbox, waitFor } from './support.js';

const { imds, sandbox } = useAgentSandbox();
let box: Sandbox;

describe('agent interruption', () => {
  it('the fake IMDS refuses requests without a session token', async () => {
    const res = await fetch(`${imds.url}/latest/meta-data/spot/instance-action`);
    expect(res.status).toBe(401);
  });

  it('on a spot notice: interrupting, SIGTERM to the job, final checkpoint synced, interrupted', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    const key = { run: 'spot', generation: 1, attempt: 1 };
    const config = box.config(key, bundle, imds.url, { env: { STEPS: '100000', DELAY: '0.05' }, syncIntervalSeconds: 3600 });
    const unauthorizedBefore = imds.unauthorized;
    const agent = await box.start(config);

    await waitFor('training progress', () => (box.status(key)?.progress?.step ?? 0) >= 3);
    imds.rebalance = { noticeTime: '2026-01-01T00:00:00Z' };
    await waitFor('rebalance reported', () => box.status(key)?.rebalanceRecommendation);
    expect(box.status(key)?.phase).toBe('training'); // reported, not acted on
    imds.notice = { action: 'terminate', time: '2026-01-01T00:02:00Z' };

    expect((await agent.exited).code).toBe(0);
    const status = box.status(key)!;
    expect(status.phase).toBe('interrupted');
    expect(status.message).toBe('spot interruption notice: terminate at 2026-01-01T00:02:00Z');
    expect(box.phases(config).slice(-2)).toEqual(['interrupting', 'interrupted']);
    // The job script traps TERM: it gets the signal, and so does the command it runs in the
    // foreground at that moment, if any (bash runs a trap only once that command ends;
    // docs/checkpoints.md).
    expect(box.agentLog(config)).toMatch(/sent SIGTERM to the job's main (process \d+|processes \d+, \d+) \(/);

    // The job's SIGTERM handler ran, and what it saved is in the final checkpoint (the periodic
    // sync interval is an hour, so only the interruption path can have published it).
    const logs = box.logs(key);
    const lastStep = Math.max(...box.steps(key));
    expect(logs).toContain(`got SIGTERM after step ${lastStep}`);
    const published = box.checkpoints('spot', 1);
    expect(published).toHaveLength(1);
    expect(readFileSync(box.checkpointFile(published[0]!, 'stopped-by'), 'utf8').trim()).toBe('term');
    expect(readFileSync(box.checkpointFile(published[0]!, 'step'), 'utf8').trim()).toBe(String(lastStep));
    expect(status.lastCheckpoint?.id).toBe(published[0]!.id);

    // IMDSv2 was spoken properly: a token first, never a request without it.
    expect(imds.tokenRequests).toBeGreaterThanOrEqual(1);
    expect(imds.unauthorized).toBe(unauthorizedBefore);
    expect(existsSync(path.join(config.stateDir, 'job.pgid'))).toBe(false);
  });

  it('kills the process group when the job ignores the signal past the grace period', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    const key = { run: 'stubborn', generation: 1, attempt: 1 };
    const config = box.config(key, bundle, imds.url, {
      env: { STEPS: '100000', DELAY: '0.05', IGNORE_TERM: '1' },
      gracePeriodSeconds: 0.5,
    });
    const agent = await box.start(config);
    await waitFor('training progress', () => (box.status(key)?.progress?.step ?? 0) >= 2);
    const pgid = Number(readFileSync(path.join(config.stateDir, 'job.pgid'), 'utf8'));
    imds.notice = { action: 'stop' };

    expect((await agent.exited).code).toBe(0);
    expect(box.status(key)).toMatchObject({ phase: 'interrupted', message: 'spot interruption notice: stop' });
    expect(box.agentLog(config)).toMatch(/grace period of 0.5s over; killing process group/);
    expect(groupAlive(pgid)).toBe(false);
    expect(box.checkpoints('stubborn', 1).length).toBeGreaterThanOrEqual(1);
  });

  it('on a stop request in control.json: stopping, signal, checkpoint, stopped', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    const key = { run: 'suspend', generation: 1, attempt: 1 };
    const config = box.config(key, bundle, imds.url, { env: { STEPS: '100000', DELAY: '0.05' }, signal: 'SIGTERM' });
    const agent = await box.start(config);
    await waitFor('training progress', () => (box.status(key)?.progress?.step ?? 0) >= 2);
    await writeFile(path.join(box.storageDir, controlKey(key)), JSON.stringify({ action: 'stop', reason: 'suspend' }));

    expect((await agent.exited).code).toBe(0);
    const status = box.status(key)!;
    expect(status).toMatchObject({ phase: 'stopped', message: 'stop requested by the controller: suspend', exitCode: 0 });
    expect(box.phases(config).slice(-2)).toEqual(['stopping', 'stopped']);
    const newest = box.checkpoints('suspend', 1).at(-1)!;
    expect(readFileSync(box.checkpointFile(newest, 'stopped-by'), 'utf8').trim()).toBe('term');
  });

  it('stops before starting anything when the stop request is already there', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    const key = { run: 'early', generation: 1, attempt: 1 };
    const starts = path.join(box.root, 'starts');
    const config = box.config(key, bundle, imds.url, { setup: 'sleep 30', env: { STARTS_FILE: starts } });
    await mkdir(path.dirname(path.join(box.storageDir, controlKey(key))), { recursive: true });
    await writeFile(path.join(box.storageDir, controlKey(key)), JSON.stringify({ action: 'stop', reason: 'delete' }));

    const status = await box.run(config);

    expect(status).toMatchObject({ phase: 'stopped', message: 'stop requested by the controller: delete' });
    expect(box.phases(config)).toEqual(['stopping', 'stopped']);
    expect(existsSync(config.workDir)).toBe(false);
    expect(existsSync(starts)).toBe(false);
  });
});
