// Starting the agent twice is safe: a live agent keeps the attempt; a dead agent's job is adopted,
// never started again; an exit code written while no agent watched still decides the outcome.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { agentScriptPath } from '../../src/agent/config.js';
import { PYTHON, type Sandbox, TEST_JOB, pidAlive, useAgentSandbox, waitFor } from './support.js';

const { imds, sandbox } = useAgentSandbox();
let box: Sandbox;

function probe(configFile: string): { agent: { alive: boolean; pid: number | null }; job: { alive: boolean; pid: number | null; pgid: number | null }; result: string | null } {
  return JSON.parse(execFileSync(PYTHON, [agentScriptPath(), '--config', configFile, '--probe'], { encoding: 'utf8' }));
}

describe('agent adoption', () => {
  it('a second agent exits while the first lives; after the first dies, a new one adopts the job', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    const key = { run: 'adopt', generation: 1, attempt: 1 };
    const starts = path.join(box.root, 'starts');
    const hold = path.join(box.root, 'release');
    const config = box.config(key, bundle, imds.url, { env: { STEPS: '5', DELAY: '0.02', STARTS_FILE: starts, HOLD_FILE: hold } });
    const first = await box.start(config);
    await waitFor('the job to finish its steps', () => box.logs(key).includes('step=5/5'));
    const configFile = box.configs.at(-1)!;

    const second = await box.start(config);
    expect((await second.exited).code).toBe(0);
    expect(box.agentLog(config)).toMatch(/another agent holds .*agent\.lock \(pid \d+\); exiting/);
    expect(first.child.exitCode).toBeNull();
    const alive = probe(configFile);
    expect(alive.agent).toEqual({ alive: true, pid: first.child.pid });
    expect(alive.job.alive).toBe(true);

    // The agent dies (OOM, a bug, a kill); the job does not notice.
    first.child.kill('SIGKILL');
    await first.exited;
    const jobPid = alive.job.pid!;
    expect(pidAlive(jobPid)).toBe(true);
    expect(probe(configFile)).toMatchObject({ agent: { alive: false }, job: { alive: true, pid: jobPid } });

    const third = await box.start(config);
    await waitFor('adoption', () => box.agentLog(config).includes(`adopting running job (pid ${jobPid}`));
    await writeFile(hold, '');
    expect((await third.exited).code).toBe(0);

    const status = box.status(key)!;
    expect(status).toMatchObject({ phase: 'succeeded', exitCode: 0, pid: jobPid });
    expect(readFileSync(starts, 'utf8').trim().split('\n')).toHaveLength(1);
    // Log segments continue where the dead agent stopped: every line exactly once.
    expect(box.steps(key)).toEqual([1, 2, 3, 4, 5]);
    expect(box.logs(key).match(/job done/g)).toHaveLength(1);
    expect(probe(configFile)).toEqual({ agent: { alive: false, pid: null }, job: { alive: false, pid: null, pgid: null }, result: 'succeeded' });
  });

  it('uses the exit code the job wrote while no agent was running, even if the agent died mid-launch', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    const key = { run: 'orphan', generation: 1, attempt: 1 };
    const hold = path.join(box.root, 'release');
    const starts = path.join(box.root, 'starts');
    const config = box.config(key, bundle, imds.url, { env: { STEPS: '2', DELAY: '0.01', HOLD_FILE: hold, EXIT_CODE: '7', STARTS_FILE: starts } });
    const first = await box.start(config);
    await waitFor('the job to start', () => existsSync(starts));
    first.child.kill('SIGKILL');
    await first.exited;
    // What an agent killed between starting the job and recording its pid leaves behind.
    const record = JSON.parse(readFileSync(path.join(config.stateDir, 'job.json'), 'utf8'));
    await writeFile(path.join(config.stateDir, 'job.json'), JSON.stringify({ startedAt: record.startedAt, logOffset: record.logOffset }));
    await writeFile(hold, '');
    await waitFor('the exit code file', () => existsSync(path.join(config.stateDir, 'job.exit')));

    const status = await box.run(config);

    expect(status).toMatchObject({ phase: 'failed', exitCode: 7, message: 'the job exited with code 7', pid: record.pid });
    expect(box.agentLog(config)).toMatch(new RegExp(`found job pid ${record.pid} written by its wrapper`));
    expect(box.agentLog(config)).toMatch(/ended while no agent was watching/);
    expect(readFileSync(starts, 'utf8').trim().split('\n')).toHaveLength(1);
  });

  it('an agent started after the attempt ended re-publishes the result and starts nothing', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    const key = { run: 'again', generation: 1, attempt: 1 };
    const starts = path.join(box.root, 'starts');
    const config = box.config(key, bundle, imds.url, { env: { STEPS: '2', DELAY: '0.01', STARTS_FILE: starts } });
    const done = await box.run(config);
    expect(done.phase).toBe('succeeded');

    const again = await box.run(config);

    expect(again).toMatchObject({ phase: 'succeeded', exitCode: 0 });
    expect(again.seq).toBeGreaterThan(done.seq);
    expect(readFileSync(starts, 'utf8').trim().split('\n')).toHaveLength(1);
  });

  it('--detach returns at once and the detached agent runs the attempt', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    const key = { run: 'detached', generation: 1, attempt: 1 };
    const config = box.config(key, bundle, imds.url, { env: { STEPS: '3', DELAY: '0.01' } });
    const file = await box.writeConfig(config);

    execFileSync(PYTHON, [agentScriptPath(), '--config', file, '--detach']);

    await waitFor('the detached agent to finish', () => box.status(key)?.phase === 'succeeded');
    expect(box.steps(key)).toEqual([1, 2, 3]);
    // It still retires old checkpoints after publishing the final status: removing the sandbox
    // under it failed with ENOTEMPTY. Done when it has exited.
    await waitFor('the detached agent to exit', () => !probe(file).agent.alive);
  });
});
