// The controller's side of the checkpoint contract (issue 9): which CheckpointFallback condition
// an attempt's restore report leads to, and that "no checkpoint left" fails the run at once
// instead of spending another retry on it.
import { describe, expect, it } from 'vitest';
import { initialSnapshot, step } from '../../src/machine/snapshot.js';
import type { AgentStatus } from '../../src/providers/types.js';
import { checkpointFallback } from '../../src/reconciler/conditions.js';
import { deriveObservedEvent } from '../../src/reconciler/derive.js';
import { limitsFromSpec } from '../../src/reconciler/limits.js';
import type { RunStatus } from '../../src/state/types.js';
import { testSpec } from '../support/runs.js';

describe('CheckpointFallback', () => {
  it('names the checkpoint an earlier attempt restored and then failed on, and the one restored instead', () => {
    const c = checkpointFallback({
      id: '00000001',
      fallbackFrom: '00000002',
      reason: 'attempt 2 restored it and failed before publishing a newer one',
      avoided: [{ id: '00000002', attempt: 2, reason: 'the job exited with code 1' }],
    });
    expect(c).toMatchObject({ type: 'CheckpointFallback', status: 'True', reason: 'ResumeFailed' });
    expect(c?.message).toBe(
      'checkpoint 00000002 was restored by attempt 2, which failed before publishing a newer one (the job exited with code 1); restored 00000001 instead',
    );
  });

  it('names the checkpoints that attempt published from the one it restored as descending from it', () => {
    const c = checkpointFallback({
      id: '00000002',
      fallbackFrom: '00000004',
      reason: 'attempt 2 published it after restoring 00000003 and failed without saving newer training state',
      avoided: [
        { id: '00000004', attempt: 2, reason: 'the job exited with code 1', descendsFrom: '00000003' },
        { id: '00000003', attempt: 2, reason: 'the job exited with code 1' },
      ],
    });
    expect(c).toMatchObject({ type: 'CheckpointFallback', status: 'True', reason: 'ResumeFailed' });
    expect(c?.message).toBe(
      'checkpoint 00000004 was published by attempt 2 from 00000003 without newer training state before it failed (the job exited with code 1); ' +
        'checkpoint 00000003 was restored by attempt 2, which failed before publishing a newer one (the job exited with code 1); restored 00000002 instead',
    );
  });

  it('keeps the corrupt-checkpoint reason when nothing was avoided, and says nothing for a plain restore', () => {
    expect(checkpointFallback({ id: '00000003', fallbackFrom: '00000004', reason: 'file a.bin fails its sha256 check' })).toMatchObject({
      reason: 'NewestCheckpointCorrupt',
      message: 'checkpoint 00000004 failed verification (file a.bin fails its sha256 check); restored 00000003 instead',
    });
    expect(checkpointFallback({ id: '00000004' })).toBeUndefined();
    expect(checkpointFallback(undefined)).toBeUndefined();
  });
});

describe('an attempt that finds no checkpoint left', () => {
  it('fails the run at once (FATAL NoCheckpointLeft) with the agent message listing what was tried', () => {
    const spec = testSpec({ recovery: { maxRetriesOnError: 5 } });
    let snap = initialSnapshot({ run: 'r', generation: 1, limits: limitsFromSpec(spec) });
    for (const ev of [{ type: 'START' }, { type: 'INSTANCE_READY' }, { type: 'AGENT_TRAINING' }] as const) {
      snap = step(snap, { ...ev, at: 1 }).snapshot;
    }
    const status = { run: 'r', spec, instances: [], costUSD: 0 } as unknown as RunStatus;
    const agent: AgentStatus = {
      run: 'r',
      generation: 1,
      attempt: snap.context.attempt,
      phase: 'failed',
      seq: 9,
      heartbeatAt: new Date(2).toISOString(),
      failureReason: 'NoCheckpointLeft',
      message: 'no checkpoint left to restore: 00000002 (attempt 2: the job exited with code 1), 00000001 (attempt 3: the job exited with code 1)',
    };
    const ev = deriveObservedEvent(snap, status, { now: 3, instances: [], agent });
    expect(ev).toMatchObject({ type: 'FATAL', reason: 'NoCheckpointLeft' });
    expect(ev && 'message' in ev ? ev.message : '').toContain('00000002 (attempt 2: the job exited with code 1), 00000001 (attempt 3');
    const failed = step(snap, ev!).snapshot;
    expect(failed.context.failure).toMatchObject({ reason: 'NoCheckpointLeft' });
    // A plain failure still goes through the retry rule.
    expect(deriveObservedEvent(snap, status, { now: 3, instances: [], agent: { ...agent, failureReason: undefined } })).toMatchObject({ type: 'JOB_FAILED' });
  });
});
