// How soon the reconciler looks at a run again (src/reconciler/reconcile.ts requeueAfter): every
// poll interval, and every notice poll interval while a spot attempt trains or stops after a
// notice, when the provider has one (issue 12: the notice's reach to the controller is part of
// what an interruption costs).
import { describe, expect, it } from 'vitest';
import { requeueAfter } from '../../src/reconciler/reconcile.js';
import type { InstanceRecord, RunStatus } from '../../src/state/types.js';

const NOW = Date.parse('2026-03-02T10:00:00.000Z');
const aws = { pollIntervalMs: 15_000, noticePollIntervalMs: 3_000 };

function status(phase: RunStatus['phase'], market: InstanceRecord['market'], extra: Partial<RunStatus> = {}): RunStatus {
  const instance: InstanceRecord = { id: 'i-1', launchedAt: new Date(NOW).toISOString(), generation: 1, attempt: 1, ...(market ? { market } : {}) };
  return { run: 'r', phase, attempt: 1, spec: { suspend: false }, instances: [instance], ...extra } as unknown as RunStatus;
}

describe('requeueAfter', () => {
  it('looks every notice poll interval while a spot attempt trains or is interrupted', () => {
    expect(requeueAfter(status('Training', 'spot'), aws, NOW, undefined)).toBe(3_000);
    expect(requeueAfter(status('Interrupted', 'spot'), aws, NOW, undefined)).toBe(3_000);
  });

  it('keeps the poll interval on-demand, in other phases, and for a provider without a notice poll', () => {
    expect(requeueAfter(status('Training', 'on-demand'), aws, NOW, undefined)).toBe(15_000);
    expect(requeueAfter(status('Installing', 'spot'), aws, NOW, undefined)).toBe(15_000);
    expect(requeueAfter(status('Training', 'spot'), { pollIntervalMs: 15_000 }, NOW, undefined)).toBe(15_000);
    // Only the live instance of the current attempt counts: an ended spot one does not.
    const ended = status('Training', 'spot');
    ended.instances[0]!.endedAt = new Date(NOW).toISOString();
    expect(requeueAfter(ended, aws, NOW, undefined)).toBe(15_000);
  });

  it('never looks less often than the poll interval, and not at all once the run has ended', () => {
    expect(requeueAfter(status('Training', 'spot'), { pollIntervalMs: 1_000, noticePollIntervalMs: 3_000 }, NOW, undefined)).toBe(1_000);
    expect(requeueAfter(status('Completed', 'spot'), aws, NOW, undefined)).toBeUndefined();
  });
});
