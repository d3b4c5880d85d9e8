// The agent's normal endings: success, a failing job, a failing setup, a job that vanishes.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { controlKey, gateKey, startGateDocument, statusKey } from '../../src/agent/layout.js';
import { PYTHON, type Sandbox, TEST_JOB, groupAlive, readJson, useAgentSandbox, waitFor, walkFiles } from './support.js';

const { imds, sandbox } = useAgentSandbox();
let box: Sandbox;

describe('agent lifecycle', () => {
  it('syncs, installs, trains, publishes checkpoints and logs, keeps the newest N, and cleans up', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    const key = { run: 'ok', generation: 1, attempt: 1 };
    const published = path.join(box.storageDir, 'runs/ok/g1/checkpoints');
    const config = box.config(key, bundle, imds.url, {
      setup: 'echo "installing deps"; sleep 0.3; echo "deps ready"',
      env: { STEPS: '12', DELAY: '0.02', WAIT_PUBLISHED_EVERY: '3', PUBLISHED_DIR: published },
      keep: 2,
      syncIntervalSeconds: 0.1,
    });

    const status = await box.run(config);

    expect(status).toMatchObject({ run: 'ok', generation: 1, attempt: 1, phase: 'succeeded', exitCode: 0 });
    expect(status.progress).toEqual({ step: 12, total: 12, loss: 0.12 });
    expect(status.pid).toBeGreaterThan(1);
    expect(status.seq).toBeGreaterThan(3);
    expect(Number.isNaN(Date.parse(status.heartbeatAt))).toBe(false);
    // The restore runs beside setup (issue 12): `restoring` shows only if the job had to wait for it.
    const phases = box.phases(config);
    expect(phases.filter((p) => p !== 'restoring')).toEqual(['syncing', 'installing', 'training', 'succeeded']);
    expect(phases.indexOf('restoring')).toBeLessThan(phases.indexOf('training'));

    // Logs: setup output, then every step, in order, exactly once.
    const logs = box.logs(key);
    expect(logs.indexOf('deps ready')).toBeGreaterThan(-1);
    expect(logs.indexOf('deps ready')).toBeLessThan(logs.indexOf('step=1/12'));
    expect(box.steps(key)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    expect(logs).toContain('job done');

    // Checkpoints: at least one per 3 steps were published; retention kept the newest 2, each intact.
    const kept = box.checkpoints('ok', 1);
    expect(kept).toHaveLength(2);
    expect(Number(kept[1]!.id)).toBeGreaterThanOrEqual(4);
    for (const c of kept) {
      for (const f of c.manifest.files) {
        const bytes = readFileSync(box.checkpointFile(c, f.path));
        expect(bytes.length).toBe(f.size);
        expect(createHash('sha256').update(bytes).digest('hex')).toBe(f.sha256);
      }
    }
    expect(readFileSync(box.checkpointFile(kept[1]!, 'step'), 'utf8').trim()).toBe('12');
    expect(status.lastCheckpoint).toMatchObject({ id: kept[1]!.id, files: 1 });

    // Completion cleans the pid and marker files and leaves the result for a restarted agent.
    for (const f of ['agent.pid', 'agent.lock', 'job.pgid', 'job.json', 'job.exit', 'setup.json', 'setup.exit']) {
      expect(existsSync(path.join(config.stateDir, f)), f).toBe(false);
    }
    expect(readJson<{ phase: string }>(path.join(config.stateDir, 'result.json'))?.phase).toBe('succeeded');
    expect(readFileSync(path.join(config.workDir, 'job.sh'), 'utf8')).toBe(TEST_JOB);
  });

  it('reports a non-zero exit as failed, with the exit code and the last 20 lines of output', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'fail.sh': 'for i in $(seq 1 30); do echo "line $i"; done\necho "fatal: out of cheese" >&2\nexit 3\n' });
    const key = { run: 'bad', generation: 1, attempt: 1 };
    const config = box.config(key, bundle, imds.url, { command: 'bash fail.sh' });

    const status = await box.run(config);

    expect(status).toMatchObject({ phase: 'failed', exitCode: 3, message: 'the job exited with code 3' });
    expect(status.logTail).toHaveLength(20);
    expect(status.logTail!.at(-1)).toBe('fatal: out of cheese');
    expect(status.logTail![0]).toBe('line 12');
    expect(existsSync(path.join(config.stateDir, 'job.pgid'))).toBe(false);
  });

  it('fails the attempt when setup fails, without starting the job', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    const key = { run: 'badsetup', generation: 1, attempt: 1 };
    const starts = path.join(box.root, 'starts');
    const config = box.config(key, bundle, imds.url, { setup: 'echo "resolving wheels"; echo "no such package" >&2; exit 4', env: { STARTS_FILE: starts } });

    const status = await box.run(config);

    expect(status).toMatchObject({ phase: 'failed', exitCode: 4, message: 'setup exited with code 4' });
    expect(status.logTail).toEqual(['resolving wheels', 'no such package']);
    expect(existsSync(starts)).toBe(false);
  });

  it('waits at its start gate while setup runs, and starts the job only once the gate opens (issue 12)', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    const key = { run: 'gated', generation: 1, attempt: 2 };
    const release = path.join(box.root, 'release-setup');
    // Setup holds until the test has seen the gate wait begin: the two overlap whatever the load.
    const config = box.config(key, bundle, imds.url, {
      startGate: true,
      setup: `echo "setup started"; while [ ! -e '${release}' ]; do sleep 0.05; done; echo "setup done"`,
      env: { STEPS: '3', DELAY: '0.01' },
    });
    const agent = await box.start(config);
    // Both at once: setup is running (it cannot end before the release) and the gate wait has begun.
    const jobLog = () => (existsSync(path.join(config.stateDir, 'job.log')) ? readFileSync(path.join(config.stateDir, 'job.log'), 'utf8') : '');
    await waitFor('setup running while the agent waits at its gate', () => jobLog().includes('setup started') && jobLog().includes('waiting at the start gate'));
    await writeFile(release, 'go\n');
    // Set up, the job still waits for the gate: phase `waiting`, no job started.
    await waitFor('phase waiting after setup', () => box.status(key)?.phase === 'waiting');
    expect(existsSync(path.join(config.stateDir, 'job.json'))).toBe(false);
    const gate = path.join(box.storageDir, gateKey(key));
    await mkdir(path.dirname(gate), { recursive: true });
    await writeFile(gate, JSON.stringify(startGateDocument(key, new Date())));
    const { code } = await agent.exited;
    expect(code).toBe(0);

    expect(box.status(key)).toMatchObject({ phase: 'succeeded', exitCode: 0 });
    const notes = box.logs(key);
    expect(notes.indexOf('waiting at the start gate')).toBeGreaterThan(-1);
    expect(notes.indexOf('waiting at the start gate')).toBeLessThan(notes.indexOf('setup done'));
    expect(notes.indexOf('checkpoint restore done')).toBeLessThan(notes.indexOf('starting job'));
    // The job's start on the agent's clock, for the ledger: after the gate opened.
    const started = Date.parse(box.status(key)?.jobStartedAt ?? '');
    expect(started).toBeGreaterThanOrEqual(Math.floor(statSync(gate).mtimeMs));
  });

  it('ends a gated attempt whose setup fails at once, without waiting for a gate that will not open', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    const key = { run: 'gatedfail', generation: 1, attempt: 2 };
    const config = box.config(key, bundle, imds.url, { startGate: true, setup: 'echo "no such package" >&2; exit 4' });

    const status = await box.run(config);

    expect(status).toMatchObject({ phase: 'failed', exitCode: 4, message: 'setup exited with code 4' });
    expect(existsSync(path.join(config.stateDir, 'job.json'))).toBe(false);
  });

  // A restore that does not end must not hold up the end of an attempt that is over anyway (a
  // download of many gigabytes keeps going for minutes). Here the restore reads attempt 1's status
  // (the resume evidence) from a FIFO nobody writes: its open() blocks for good.
  async function blockedRestore(run: string): Promise<void> {
    await box.publishCheckpoint(run, 1, '00000001', { step: '4\n' }, 4);
    const earlier = path.join(box.storageDir, statusKey({ run, generation: 1, attempt: 1 }));
    await mkdir(path.dirname(earlier), { recursive: true });
    execFileSync('mkfifo', [earlier]);
  }

  it('reports a failed setup at once while the checkpoint restore is still running', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    await blockedRestore('slowfail');
    const key = { run: 'slowfail', generation: 1, attempt: 2 };
    const base = box.config(key, bundle, imds.url, {});
    // Setup fails only once the restore has begun, so the two overlap whatever the load.
    const log = path.join(base.stateDir, 'job.log');
    const config = { ...base, setup: `until grep -q 'restoring the checkpoint' '${log}'; do sleep 0.05; done; echo "no such package" >&2; exit 4` };

    const status = await box.run(config);

    expect(status).toMatchObject({ phase: 'failed', exitCode: 4, message: 'setup exited with code 4' });
    expect(box.logs(key), box.agentLog(config)).not.toContain('checkpoint restore done');
  });

  it('stops at once on a stop request while the checkpoint restore is still running', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    await blockedRestore('slowstop');
    const key = { run: 'slowstop', generation: 1, attempt: 2 };
    const config = box.config(key, bundle, imds.url, {});
    const agent = await box.start(config);
    await waitFor('the restore under way', () => box.status(key)?.phase === 'restoring');
    await mkdir(path.dirname(path.join(box.storageDir, controlKey(key))), { recursive: true });
    await writeFile(path.join(box.storageDir, controlKey(key)), JSON.stringify({ action: 'stop', reason: 'suspend' }));
    const { code } = await agent.exited;

    expect(code).toBe(0);
    expect(box.status(key)?.phase).toBe('stopped');
    expect(existsSync(path.join(config.stateDir, 'job.json'))).toBe(false);
  });

  it('reports a job that vanishes without an exit code as lost, never as succeeded', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    const key = { run: 'vanish', generation: 1, attempt: 1 };
    const config = box.config(key, bundle, imds.url, { env: { STEPS: '100000', DELAY: '0.05' } });
    const agent = await box.start(config);

    await waitFor('training', () => (box.status(key)?.progress?.step ?? 0) >= 2);
    const pgid = Number(readFileSync(path.join(config.stateDir, 'job.pgid'), 'utf8'));
    process.kill(-pgid, 'SIGKILL'); // the OOM killer, say: the wrapper dies too, no exit code

    expect((await agent.exited).code).toBe(0);
    const status = box.status(key)!;
    expect(status.phase).toBe('lost');
    expect(status.exitCode).toBeUndefined();
    expect(status.message).toMatch(/disappeared without writing an exit code/);
    expect(groupAlive(pgid)).toBe(false);
    expect(existsSync(path.join(config.stateDir, 'job.json'))).toBe(false);
  });

  it('passes ssm: secrets to the job only: never into status, logs or the agent log', async () => {
    box = await sandbox();
    const secret = 'hf_s3cr3t-V4lue-7d1e0c';
    const fakeBin = path.join(box.root, 'bin');
    const awsCalls = path.join(box.root, 'aws-calls');
    await mkdir(fakeBin);
    await writeFile(
      path.join(fakeBin, 'aws'),
      [
        '#!/usr/bin/env bash',
        `echo "$*" >> ${JSON.stringify(awsCalls)}`,
        'if [ "$1 $2" = "ssm get-parameter" ] && [[ " $* " == *" --with-decryption "* ]] && [[ " $* " == *" --name /team/hf-token "* ]]; then',
        `  echo ${JSON.stringify(secret)}; exit 0`,
        'fi',
        'echo "An error occurred (ParameterNotFound) when calling the GetParameter operation" >&2; exit 255',
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    const bundle = await box.bundle({
      'job.sh': 'echo "token is $HF_TOKEN"; printf %s "$HF_TOKEN" | sha256sum\n',
    });
    const key = { run: 'secret', generation: 1, attempt: 1 };
    const config = box.config(key, bundle, imds.url, {
      secrets: { HF_TOKEN: 'ssm:/team/hf-token' },
      setup: 'echo "setup sees $HF_TOKEN"',
      region: 'eu-west-1',
    });
    const env = { ...process.env, PATH: `${fakeBin}:${process.env.PATH}` };

    const status = await box.run(config, env);

    expect(status.phase).toBe('succeeded');
    const logs = box.logs(key);
    // The job received the value (its hash is in the log), but the value itself is redacted.
    expect(logs).toContain(createHash('sha256').update(secret).digest('hex'));
    expect(logs).toContain('token is ***');
    expect(logs).toContain('setup sees ***');
    for (const file of walkFiles(box.storageDir)) {
      expect(readFileSync(path.join(box.storageDir, file), 'utf8'), file).not.toContain(secret);
    }
    expect(box.agentLog(config)).not.toContain(secret);
    expect(readFileSync(path.join(config.stateDir, 'result.json'), 'utf8')).not.toContain(secret);
    expect(readFileSync(awsCalls, 'utf8')).toContain('ssm get-parameter --name /team/hf-token --with-decryption');
    expect(readFileSync(awsCalls, 'utf8')).toContain('--region eu-west-1');

    // An unresolvable secret fails the attempt with a message naming it, before anything runs.
    const key2 = { run: 'secret', generation: 1, attempt: 2 };
    const config2 = box.config(key2, bundle, imds.url, { secrets: { HF_TOKEN: 'ssm:/team/missing' }, resuming: false });
    const failed = await box.run(config2, env);
    expect(failed.phase).toBe('failed');
    expect(failed.message).toMatch(/cannot resolve secret HF_TOKEN from ssm:\/team\/missing: .*ParameterNotFound/);
    // ...and reports it on the fault channel, with what to do.
    expect(failed.faults?.map((f) => f.reason)).toEqual(['SecretUnresolved']);
    expect(failed.faults?.[0]?.message).toMatch(/cannot resolve secret HF_TOKEN from ssm:\/team\/missing: .*; check that the parameter exists in the run's region and that the instance profile may ssm:GetParameter it/);
  });

  it.each([
    ['an entry climbing out of the work dir', 'evil', "t.addfile(tarfile.TarInfo('../escaped'), io.BytesIO(b''))", /entry '..\/escaped' would land outside the work directory/],
    ['a symlink leading out of it', 'evil', "i = tarfile.TarInfo('link'); i.type = tarfile.SYMTYPE; i.linkname = '../../etc'; t.addfile(i)", /symlink 'link' points outside the work directory/],
    ['content that does not match its name', 'a'.repeat(64), "t.addfile(tarfile.TarInfo('x'), io.BytesIO(b''))", /is corrupt: its content hashes to [0-9a-f]{64}/],
  ])('refuses a bundle with %s', async (_what, name, add, message) => {
    box = await sandbox();
    const key = `bundles/${name}.tar.gz`;
    await mkdir(path.join(box.storageDir, 'bundles'), { recursive: true });
    execFileSync(PYTHON, ['-c', `import io, sys, tarfile\nwith tarfile.open(sys.argv[1], 'w:gz') as t:\n    ${add}`, path.join(box.storageDir, key)]);
    const config = box.config({ run: 'evil', generation: 1, attempt: 1 }, key, imds.url);

    const status = await box.run(config);

    expect(status.phase).toBe('failed');
    expect(status.message).toMatch(message);
    expect(existsSync(path.join(path.dirname(config.workDir), 'escaped'))).toBe(false);
  });

  it('rejects an invalid config with a message naming the field, exit code 2', async () => {
    box = await sandbox();
    const config = box.config({ run: 'cfg', generation: 1, attempt: 1 }, 'bundles/x.tar.gz', imds.url, { keep: 0 });
    const agent = await box.start(config);
    const { code } = await agent.exited;
    expect(code).toBe(2);
    expect(agent.stderr()).toMatch(/field 'keep' must be an integer >= 1, got 0/);
    expect(agent.stderr()).not.toMatch(/Traceback/);
  });
});
