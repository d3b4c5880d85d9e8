// What conditions and failure messages say after retries and interruptions (issue 10, point 10):
// a retry after a failed job is not reported as an interruption, and messages do not repeat.
import { describe, expect, it } from 'vitest';
import { failureMessage } from '../../src/reconciler/derive.js';
import { testRun } from '../support/runs.js';
import { harness } from './harness.js';

describe('conditions after error retries', () => {
  it('a retried job failure is a Retrying condition, not an interruption', async () => {
    const h = harness([testRun('retry', { recovery: { maxRetriesOnError: 2 } })], {
      // The interruption first, then the failure: the failure must not become "the last interruption".
      script: { spotAt: [{ run: 'retry', attempt: 1, step: 30 }], failAt: [{ run: 'retry', attempt: 2, step: 50 }] },
    });
    const status = (await h.controller.runUntilSettled()).statuses[0]!;
    expect(status.phase).toBe('Completed');
    expect(status.attempt).toBe(3);
    const interrupted = status.conditions.find((c) => c.type === 'Interrupted');
    expect(interrupted).toMatchObject({ status: 'False', reason: 'Recovered', message: '1 interruption(s) so far; last: Server.SpotInstanceTermination' });
    const retrying = status.conditions.find((c) => c.type === 'Retrying');
    expect(retrying).toMatchObject({ status: 'False', reason: 'Retried' });
    expect(retrying?.message).toBe('1 of 2 retries on error used (spec.recovery.maxRetriesOnError); last: the job exited with code 1 on attempt 2; last output:');
  });

  it('while resuming after a failure, only Retrying is True', async () => {
    const h = harness([testRun('once', { recovery: { maxRetriesOnError: 1 } })], { script: { failAt: [{ run: 'once', attempt: 1, step: 30 }] } });
    const seen: Array<[string, string | undefined, string | undefined]> = [];
    const original = h.store.putStatus.bind(h.store);
    h.store.putStatus = async (s) => {
      if (s.phase === 'Resuming') {
        seen.push([s.phase, s.conditions.find((c) => c.type === 'Retrying')?.status, s.conditions.find((c) => c.type === 'Interrupted')?.status]);
      }
      return original(s);
    };
    await h.controller.runUntilSettled();
    expect(seen.length).toBeGreaterThan(0);
    expect(new Set(seen.map((x) => JSON.stringify(x)))).toEqual(new Set([JSON.stringify(['Resuming', 'True', undefined])]));
  });
});

describe('failure messages', () => {
  const base = { run: 'r', generation: 1, attempt: 3, seq: 1, heartbeatAt: '2026-01-01T00:00:00Z' };
  it('say how the attempt ended once', () => {
    expect(failureMessage({ ...base, phase: 'failed', exitCode: 1, message: 'the job exited with code 1', logTail: ['Traceback', 'ValueError: x'] })).toBe(
      'the job exited with code 1 on attempt 3; last output:\nTraceback\nValueError: x',
    );
    expect(failureMessage({ ...base, phase: 'failed', exitCode: 2, message: 'setup exited with code 2' })).toBe('setup exited with code 2 on attempt 3');
    expect(failureMessage({ ...base, phase: 'lost', message: 'the job (pid 42) disappeared without writing an exit code' })).toBe(
      'the job (pid 42) disappeared without writing an exit code (lost) on attempt 3',
    );
    expect(failureMessage({ ...base, phase: 'failed', message: 'cannot resolve secret HF_TOKEN from ssm:/x: ParameterNotFound' })).toBe(
      'cannot resolve secret HF_TOKEN from ssm:/x: ParameterNotFound on attempt 3',
    );
    expect(failureMessage({ ...base, phase: 'failed', exitCode: 137, message: 'no output and no progress for 10m' })).toBe(
      'the job exited with code 137 on attempt 3 (no output and no progress for 10m)',
    );
  });
});
