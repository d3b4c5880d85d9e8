// Acceptance 2 of issue 10: any byte-level damage to any one state file (truncation, garbage,
// empty, wrong JSON shape) never stops another run from being reconciled and never surfaces as a
// stack trace. Drives the real file store and controller against the in-memory cloud: two runs
// are brought to Training, then one file of one run is damaged and a new controller takes over.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Controller } from '../../src/reconciler/controller.js';
import { FileStore } from '../../src/state/file-store.js';
import type { LoadedRun } from '../../src/spec/types.js';
import { MemoryProvider, type World } from '../support/memory-provider.js';
import { testRun } from '../support/runs.js';

const SCRIPT = { totalSteps: 60, stepsPerTick: 10, checkpointEvery: 10 };
const RUNS: LoadedRun[] = [testRun('a'), testRun('b')];
const T0 = Date.parse('2026-01-01T00:00:00Z');

let base: string;
let world: World;

function controllerFor(root: string, provider: MemoryProvider, out: string[]): Controller {
  let now = T0 + 3_600_000;
  return new Controller({
    store: new FileStore(path.join(root, '.runctl'), { fsync: false }),
    provider: async () => provider,
    load: async () => ({ runs: RUNS, diagnostics: [], invalidFiles: [] }),
    controller: 'test',
    repoRoot: root,
    prune: false,
    workers: 2,
    bundleSweepIntervalMs: 0,
    now: () => (now += 1000),
    onError: (run, err) => out.push(`${run}: ${err instanceof Error ? err.message : String(err)}`),
    onNotice: (n) => out.push(`${'run' in n ? `${n.run}: ` : ''}${n.message}`),
  });
}

beforeAll(async () => {
  // Both runs training, with checkpoints, then the controller stopped: the state to damage.
  base = mkdtempSync(path.join(os.tmpdir(), 'runctl-damage-base-'));
  const provider = new MemoryProvider({ ...SCRIPT, totalSteps: 100_000 });
  const store = new FileStore(path.join(base, '.runctl'), { fsync: false });
  await store.open();
  const out: string[] = [];
  const c = new Controller({
    store,
    provider: async () => provider,
    load: async () => ({ runs: RUNS, diagnostics: [], invalidFiles: [] }),
    controller: 'test',
    repoRoot: base,
    prune: false,
    workers: 2,
    bundleSweepIntervalMs: 0,
    onError: (run, err) => out.push(`${run}: ${String(err)}`),
  });
  for (let pass = 0; pass < 40; pass++) {
    const summary = await c.runOnce();
    if (summary.statuses.length === 2 && summary.statuses.every((s) => s.phase === 'Training' && (s.lastCheckpoint?.step ?? 0) >= 20)) break;
  }
  await c.stop();
  await store.close();
  world = structuredClone(provider.world);
  world.script = SCRIPT; // from here on, the jobs finish
  expect(out).toEqual([]);
  const statuses = ['a', 'b'].map((r) => JSON.parse(readFileSync(path.join(base, '.runctl/state/runs', r, 'status.json'), 'utf8')));
  expect(statuses.map((s) => s.phase)).toEqual(['Training', 'Training']);
}, 60_000);

afterAll(() => rmSync(base, { recursive: true, force: true }));

type Damage =
  | { kind: 'truncate'; at: number }
  | { kind: 'garbage'; bytes: Uint8Array; at: number }
  | { kind: 'empty' }
  | { kind: 'shape'; value: unknown };

const damage: fc.Arbitrary<Damage> = fc.oneof(
  fc.record({ kind: fc.constant('truncate' as const), at: fc.double({ min: 0, max: 1, noNaN: true }) }),
  fc.record({ kind: fc.constant('garbage' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 64 }), at: fc.double({ min: 0, max: 1, noNaN: true }) }),
  fc.record({ kind: fc.constant('empty' as const) }),
  fc.record({
    kind: fc.constant('shape' as const),
    value: fc.oneof(fc.constant(null), fc.constant([]), fc.constant({}), fc.integer(), fc.string(), fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 })),
  }),
);

/** A field of the real record replaced by a wrong-typed value (the subtle kind of wrong shape). */
const fieldDamage = fc.record({
  kind: fc.constant('field' as const),
  field: fc.constantFrom('run', 'uid', 'phase', 'generation', 'attempt', 'instances', 'conditions', 'snapshot', 'spec', 'pending', 'outbox', 'createdAt', 'eventSeq'),
  value: fc.oneof(fc.constant(null), fc.constant([1]), fc.constant('x'), fc.constant(-1), fc.constant({ value: 3 })),
});

function apply(file: string, d: Damage | { kind: 'field'; field: string; value: unknown }): void {
  const original = readFileSync(file);
  switch (d.kind) {
    case 'truncate':
      writeFileSync(file, original.subarray(0, Math.floor(original.length * d.at)));
      break;
    case 'garbage': {
      const at = Math.floor(original.length * d.at);
      writeFileSync(file, Buffer.concat([original.subarray(0, at), Buffer.from(d.bytes), original.subarray(at + d.bytes.length)]));
      break;
    }
    case 'empty':
      writeFileSync(file, '');
      break;
    case 'shape':
      writeFileSync(file, JSON.stringify(d.value));
      break;
    case 'field': {
      const record = JSON.parse(original.toString('utf8')) as Record<string, unknown>;
      record[d.field] = d.value;
      writeFileSync(file, JSON.stringify(record));
      break;
    }
  }
}

describe('a damaged state file affects only its own run', () => {
  it('any damage to one file of one run: the other run completes, and nothing prints a stack trace', async () => {
    await fc.assert(
      fc.asyncProperty(fc.constantFrom('a', 'b'), fc.constantFrom('status.json', 'events.jsonl'), fc.oneof(damage, fieldDamage), async (victim, file, d) => {
        if (d.kind === 'field' && file !== 'status.json') return; // field damage is for records
        const root = mkdtempSync(path.join(os.tmpdir(), 'runctl-damage-'));
        try {
          cpSync(base, root, { recursive: true });
          apply(path.join(root, '.runctl/state/runs', victim, file), d);
          const provider = new MemoryProvider(SCRIPT);
          provider.world = structuredClone(world);
          const out: string[] = [];
          const c = controllerFor(root, provider, out);
          const store = (c as unknown as { opts: { store: FileStore } }).opts.store;
          await store.open();
          let summary;
          try {
            summary = await c.runUntilSettled(AbortSignal.timeout(30_000));
          } finally {
            await c.stop();
            await store.close();
          }
          const other = victim === 'a' ? 'b' : 'a';
          expect(summary.statuses.find((s) => s.run === other)?.phase, out.join('\n')).toBe('Completed');
          for (const line of out) expect(line, 'a stack trace was printed').not.toMatch(/\n\s+at |TypeError|ReferenceError|Cannot read properties/);
          // The damaged run is either going again (rebuilt, or the damage was harmless) or
          // reported with its file and what to do.
          const reported = summary.unreadable.find((u) => u.run === victim);
          if (reported) {
            expect(reported.message).toContain(path.join('.runctl/state/runs', victim));
            expect(reported.message).not.toMatch(/archive/);
          } else {
            expect(summary.statuses.find((s) => s.run === victim)?.phase, out.join('\n')).toBe('Completed');
          }
        } finally {
          rmSync(root, { recursive: true, force: true });
        }
      }),
      { numRuns: 40, seed: 1010, endOnFailure: true },
    );
  }, 240_000);
});
