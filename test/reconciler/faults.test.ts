// The fault channel, controller side: what the agent lists in AgentStatus.faults becomes a run
// condition (True while listed, False once cleared), an event on each appearance, and a block in
// `describe`.
import { describe, expect, it } from 'vitest';
import { absorbFaults, reportedFaults } from '../../src/reconciler/faults.js';
import { renderDescribe } from '../../src/ui/describe.js';
import { testRun } from '../support/runs.js';
import { harness } from './harness.js';

describe('agent faults reach the run status', () => {
  it('turns each fault into a condition and an event, and marks it False when it clears', async () => {
    const h = harness([testRun('faulty')], {
      script: {
        faultsAt: [
          { run: 'faulty', attempt: 1, fromStep: 20, untilStep: 60, reason: 'MetadataServiceUnreachable', message: 'the metadata service at http://169.254.169.254 does not answer; check the instance metadata options' },
          { run: 'faulty', attempt: 1, fromStep: 80, reason: 'CheckpointSyncFailing', message: 'checkpoint uploads fail: AccessDenied; grant s3:PutObject to the instance profile' },
        ],
      },
    });
    const summary = await h.controller.runUntilSettled();
    const status = summary.statuses[0]!;
    expect(status.phase).toBe('Completed');

    const imds = status.conditions.find((c) => c.type === 'MetadataServiceUnreachable');
    expect(imds).toMatchObject({ status: 'False', reason: 'Cleared' });
    expect(imds?.message).toContain('it was: the metadata service at http://169.254.169.254 does not answer');
    const sync = status.conditions.find((c) => c.type === 'CheckpointSyncFailing');
    expect(sync).toMatchObject({ status: 'True', reason: 'CheckpointSyncFailing', lastTransitionTime: '2026-01-01T00:01:20.000Z' });
    expect(sync?.message).toContain('grant s3:PutObject');

    const events = await h.events('faulty');
    const faultEvents = events.filter((e) => e.action.startsWith('fault '));
    expect(faultEvents.map((e) => e.action)).toEqual([
      'fault MetadataServiceUnreachable',
      'fault MetadataServiceUnreachable cleared',
      'fault CheckpointSyncFailing',
    ]);
    expect(faultEvents[0]).toMatchObject({ kind: 'observation', result: 'error', attempt: 1 });
    // Each appearance is announced once, however many passes saw it.
    expect(new Set(events.map((e) => e.id)).size).toBe(events.length);

    const text = renderDescribe({ status, events, now: Date.parse(status.updatedAt) });
    expect(text).toContain('Faults:');
    expect(text).toMatch(/CheckpointSyncFailing \(attempt 1, since /);
    expect(text).toContain('    checkpoint uploads fail: AccessDenied; grant s3:PutObject to the instance profile');
    expect(text).not.toMatch(/MetadataServiceUnreachable \(attempt/);
    expect(text).toMatch(/MetadataServiceUnreachable\s+False\s+Cleared/);
  });

  it('a fault that comes back after clearing is a new appearance with its own event', () => {
    const key = { run: 'r', generation: 1, attempt: 2 };
    const a = { reason: 'SecretUnresolved', message: 'x', since: '2026-01-01T00:00:00.000Z' };
    const first = absorbFaults(undefined, [a], key, '2026-01-01T00:00:01.000Z');
    expect(first.appeared).toHaveLength(1);
    const same = absorbFaults(first.faults, [a], key, '2026-01-01T00:00:02.000Z');
    expect(same.appeared).toEqual([]);
    expect(same.cleared).toEqual([]);
    const gone = absorbFaults(same.faults, [], key, '2026-01-01T00:00:03.000Z');
    expect(gone.cleared.map((f) => f.reason)).toEqual(['SecretUnresolved']);
    const back = absorbFaults(gone.faults, [{ ...a, since: '2026-01-01T00:00:04.000Z' }], key, '2026-01-01T00:00:05.000Z');
    expect(back.appeared).toHaveLength(1);
    expect(back.faults).toHaveLength(1);
    expect(back.faults[0]?.clearedAt).toBeUndefined();
  });

  it('drops malformed fault entries from a damaged or foreign status object', () => {
    expect(
      reportedFaults([
        { reason: 'AgentRestarted', message: 'ok', since: '2026-01-01T00:00:00Z' },
        { reason: 'lower case', message: 'm', since: '2026-01-01T00:00:00Z' },
        { reason: 'NoTime', message: 'm', since: 'yesterday' },
        { reason: 'NoMessage', since: '2026-01-01T00:00:00Z' },
        null,
        'text',
      ]),
    ).toEqual([{ reason: 'AgentRestarted', message: 'ok', since: '2026-01-01T00:00:00Z' }]);
    expect(reportedFaults({ reason: 'NotAList' })).toEqual([]);
  });
});
