// readProgressHistory: every attempt's stored series of the run's current incarnation, in attempt
// order, read through the local provider from the key layout the agent writes.
import { mkdtempSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { progressKey } from '../../src/agent/layout.js';
import { LocalProvider } from '../../src/providers/local/index.js';
import { RetryableError } from '../../src/providers/types.js';
import { readProgressHistory } from '../../src/reconciler/progress-history.js';
import type { RunStatus } from '../../src/state/types.js';
import { testSpec } from '../support/runs.js';

const UID = '0b7e3c2a-1111-4a2b-8c3d-0123456789ab';
let dir = '';
afterEach(() => rmSync(dir, { recursive: true, force: true }));

function setup() {
  dir = mkdtempSync(path.join(os.tmpdir(), 'runctl-progress-history-'));
  const storage = path.join(dir, 'storage');
  const spec = testSpec({ checkpoints: { storage: `file://${storage}` } });
  const record = {
    run: 'gpt',
    uid: UID,
    generation: 2,
    attempt: 3,
    spec,
    instances: [
      { id: 'i-1', generation: 1, attempt: 1, launchedAt: '2026-01-01T00:00:00Z' },
      { id: 'i-2', generation: 2, attempt: 1, launchedAt: '2026-01-01T01:00:00Z' },
      { id: 'i-3', generation: 2, attempt: 2, launchedAt: '2026-01-01T02:00:00Z' },
    ],
  } as unknown as RunStatus;
  const write = (generation: number, attempt: number, body: unknown) => {
    const file = path.join(storage, progressKey({ run: 'gpt', uid: UID, generation, attempt }));
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, typeof body === 'string' ? body : JSON.stringify(body));
  };
  return { provider: new LocalProvider({ root: path.join(dir, 'local') }), record, write };
}

const doc = (attempt: number, points: unknown[]) => ({ version: 1, run: 'gpt', generation: 2, attempt, points });

describe('readProgressHistory', () => {
  it("returns each attempt of the current generation in order, the current one included, leaving out malformed points", async () => {
    const { provider, record, write } = setup();
    write(1, 1, doc(1, [{ time: '2026-01-01T00:00:01Z', step: 999, metrics: { loss: 9 } }]));
    write(2, 2, doc(2, [
      { time: '2026-01-01T02:00:01Z', step: 40, total: 100, metrics: { loss: 2.5, lr: 0.001 } },
      { time: '2026-01-01T02:00:02Z', step: 'x', metrics: {} },
      { time: '2026-01-01T02:00:03Z', step: 50, metrics: { loss: 2.4, bad: 'nan' } },
    ]));
    write(2, 1, doc(1, [{ time: '2026-01-01T01:00:01Z', step: 10, metrics: { loss: 3 } }]));
    const series = await readProgressHistory(provider, record);
    expect(series).toEqual([
      { generation: 2, attempt: 1, points: [{ time: '2026-01-01T01:00:01Z', step: 10, metrics: { loss: 3 } }] },
      {
        generation: 2,
        attempt: 2,
        points: [
          { time: '2026-01-01T02:00:01Z', step: 40, total: 100, metrics: { loss: 2.5, lr: 0.001 } },
          { time: '2026-01-01T02:00:03Z', step: 50, metrics: { loss: 2.4 } },
        ],
      },
      { generation: 2, attempt: 3, points: [] },
    ]);
  });

  it('reports a damaged history object as retryable, naming it', async () => {
    const { provider, record, write } = setup();
    write(2, 1, '{"version": 1, "points": [');
    await expect(readProgressHistory(provider, record)).rejects.toThrow(RetryableError);
    await expect(readProgressHistory(provider, record)).rejects.toThrow(/progress history .*a1\/progress\.json is not valid JSON/);
  });
});
