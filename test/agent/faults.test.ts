// The fault channel, agent side, with the real agent: faults it sees on the instance are listed
// in its status (`faults`), with a reason, a message that says what to do, and the time. Also
// how it ships a job's log: a last line without a newline stays apart from the agent's own
// notes, and carriage-return progress is stored as its latest state.
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { type Sandbox, TEST_JOB, useAgentSandbox, waitFor } from './support.js';

const { imds, sandbox } = useAgentSandbox();
let box: Sandbox;

// Nothing listens on port 9 (discard) on a test machine: connections are refused at once.
const DEAD = 'http://127.0.0.1:9';

describe('agent faults', () => {
  it('reports MetadataServiceUnreachable while IMDS does not answer, with the time first seen', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    const key = { run: 'noimds', generation: 1, attempt: 1 };
    const config = box.config(key, bundle, DEAD, { env: { STEPS: '100000', DELAY: '0.05' } });
    await box.start(config);
    const fault = await waitFor('the fault', () => box.status(key)?.faults?.find((f) => f.reason === 'MetadataServiceUnreachable'));
    expect(fault.message).toMatch(/^the instance metadata service at http:\/\/127\.0\.0\.1:9 does not answer \(.+\), so no spot interruption notice can be seen/);
    expect(fault.message).toContain('never sends metadata requests through an HTTP proxy');
    expect(Date.parse(fault.since)).not.toBeNaN();
    expect(box.status(key)?.phase).toBe('training');
  });

  it('never sends metadata requests through an HTTP proxy: a notice is seen with http_proxy pointing at a dead port', async () => {
    box = await sandbox();
    const bundle = await box.bundle({ 'job.sh': TEST_JOB });
    const key = { run: 'proxied', generation: 1, attempt: 1 };
    const config = box.config(key, bundle, imds.url, { env: { STEPS: '100000', DELAY: '0.05' } });
    const env = { ...process.env, http_proxy: DEAD, HTTP_PROXY: DEAD, https_proxy: DEAD, HTTPS_PROXY: DEAD, no_proxy: '', NO_PROXY: '' };
    const agent = await box.start(config, env);
    await waitFor('training progress', () => (box.status(key)?.progress?.step ?? 0) >= 3);
    imds.notice = { action: 'terminate', time: '2026-01-01T00:02:00Z' };
    expect((await agent.exited).code).toBe(0);
    const status = box.status(key)!;
    expect(status.phase).toBe('interrupted');
    expect(status.faults ?? []).toEqual([]);
  });

  it('reports JobCrashedOnNotice with the exit code and the log tail when the job dies on the signal', async () => {
    box = await sandbox();
    const bundle = await box.bundle({
      'job.py': [
        'import signal, sys, time',
        'def crash(*_):',
        '    raise RuntimeError("CUDA error: device-side assert while saving")',
        'signal.signal(signal.SIGTERM, crash)',
        'for step in range(1, 100000):',
        '    print("step=%d" % step, flush=True)',
        '    time.sleep(0.05)',
        '',
      ].join('\n'),
    });
    const key = { run: 'crashy', generation: 1, attempt: 1 };
    const config = box.config(key, bundle, imds.url, { command: 'python3 job.py' });
    const agent = await box.start(config);
    await waitFor('training progress', () => (box.status(key)?.progress?.step ?? 0) >= 3);
    imds.notice = { action: 'terminate' };
    expect((await agent.exited).code).toBe(0);
    const status = box.status(key)!;
    expect(status.phase).toBe('interrupted');
    const fault = status.faults?.find((f) => f.reason === 'JobCrashedOnNotice');
    expect(fault?.message).toMatch(/^the job exited with code 1 after SIGTERM was sent for spot interruption notice: terminate, instead of saving a checkpoint and exiting 0; make its SIGTERM handler save and exit/);
    expect(fault?.message).toContain('RuntimeError: CUDA error: device-side assert while saving');
  });

  it('ships a last line without a newline on its own line, and carriage-return progress as its latest state', async () => {
    box = await sandbox();
    const bundle = await box.bundle({
      'job.py': [
        'import os, sys, time',
        // tqdm's shape: the bar redrawn with \\r, a newline only at the end.
        'for i in range(61):',
        '    sys.stdout.write("\\r%3d%%|%-20s| %d/60" % (i * 100 // 60, "#" * (i // 3), i)); sys.stdout.flush()',
        '    if i == 30:',
        '        while not os.path.exists("go"): time.sleep(0.05)',
        'sys.stdout.write("\\n")',
        'print("step=60/60")',
        'sys.stdout.write("done, no newline")',
        '',
      ].join('\n'),
    });
    const key = { run: 'bars', generation: 1, attempt: 1 };
    const config = box.config(key, bundle, imds.url, { command: 'python3 job.py' });
    const agent = await box.start(config);
    // Half way, the job waits: its bar has no newline yet, and the stored log must show it.
    await waitFor('the bar half way in storage', () => box.logs(key).includes(' 50%|##########          | 30/60\r'));
    await import('node:fs/promises').then((fs) => fs.writeFile(path.join(config.workDir, 'go'), ''));
    expect((await agent.exited).code).toBe(0);
    const logs = box.logs(key);
    // Stored compactly: the redraws come in two bursts, so a few states, not 61 redraws.
    expect(logs.split('\r').length).toBeLessThan(10);
    expect(logs).toMatch(/\r100%\|####################\| 60\/60\n/);
    expect(logs).toContain('\nstep=60/60\ndone, no newline\n[runctl-agent] ');
    expect(logs).toMatch(/\n\[runctl-agent\] \S+ attempt ended: succeeded \(exit code 0\)\n$/);
    expect(box.status(key)?.logTail).toEqual(['100%|####################| 60/60', 'step=60/60', 'done, no newline']);
    expect(readFileSync(path.join(config.stateDir, 'job.log'), 'utf8').split('\r').length).toBeGreaterThan(60);
  });
});
