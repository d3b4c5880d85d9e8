// A complete RunStatus with fixed values, for store and display tests.
import type { RunEvent, RunStatus } from '../../src/state/types.js';
import { testSpec } from '../support/runs.js';

export const T0 = Date.parse('2026-01-01T12:00:00Z');

export function statusFixture(run: string, overrides: Partial<RunStatus> = {}): RunStatus {
  return {
    run,
    uid: '6f1c2d3e-4a5b-4c6d-8e7f-901a2b3c4d5e',
    phase: 'Pending',
    generation: 1,
    specHash: 'abc123',
    observedGeneration: 1,
    attempt: 1,
    interruptions: 0,
    errorRetries: 0,
    conditions: [],
    instances: [],
    deadlines: {},
    snapshot: { value: 'Pending', context: { run, generation: 1, attempt: 1, interruptions: 0, errorRetries: 0, limits: {}, rehearsalDone: false } },
    spec: testSpec(),
    createdAt: new Date(T0).toISOString(),
    updatedAt: new Date(T0).toISOString(),
    eventSeq: 0,
    costUSD: 0,
    ...overrides,
  };
}

export function eventFixture(run: string, seq: number, overrides: Partial<RunEvent> = {}): RunEvent {
  return {
    id: `${run}:e${seq}`,
    seq,
    at: new Date(T0 + seq * 1000).toISOString(),
    run,
    generation: 1,
    attempt: 1,
    kind: 'transition',
    action: 'Pending -> Provisioning',
    result: 'ok',
    ...overrides,
  };
}
