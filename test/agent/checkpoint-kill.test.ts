// Issue 9, acceptance 2: the checkpoint store killed (SIGKILL) at every storage mutation of a sync
// and of retention; afterwards every kept manifest restores and verifies (to a folder state the
// job really saved), and no stored content a kept manifest names has been deleted. Then the same
// invariant under random sequences of saves, syncs, retention and crashes (fast-check).
//
// The real store modules run in a small CLI (src/agent/tests/store_harness.py; its syncs go
// through the agent's own checkpoints.Checkpoints), so a kill is a real SIGKILL of the process
// doing the sync or the retention. A scenario runs in as few processes as its kills allow.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { PYTHON, REPO_ROOT } from './support.js';

const HARNESS = path.join(REPO_ROOT, 'src/agent/tests/store_harness.py');
const roots: string[] = [];

afterAll(() => {
  for (const r of roots) rmSync(r, { recursive: true, force: true });
});

function workDir(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'runctl-ckpt-kill-'));
  roots.push(dir);
  return dir;
}

interface Outcome {
  killed: boolean;
  out: Record<string, unknown>;
}

/** One harness command; killAfter = SIGKILL before the (n+1)-th storage mutation of this work dir. */
function harness(work: string, args: string[], killAfter?: number): Outcome {
  const env: NodeJS.ProcessEnv = { ...process.env, PYTHONDONTWRITEBYTECODE: '1' };
  delete env.RUNCTL_AGENT_KILL_AFTER_OPS;
  if (killAfter !== undefined) env.RUNCTL_AGENT_KILL_AFTER_OPS = String(killAfter);
  const r = spawnSync(PYTHON, [HARNESS, work, ...args], { encoding: 'utf8', env, timeout: 120_000 });
  if (r.signal === 'SIGKILL') return { killed: true, out: {} };
  if (r.status !== 0) throw new Error(`harness ${args.join(' ')} exited ${r.status ?? r.signal}: ${r.stderr}`);
  return { killed: false, out: JSON.parse(r.stdout) as Record<string, unknown> };
}

function opsDone(work: string): number {
  try {
    return Number(readFileSync(path.join(work, 'state', 'store-ops'), 'utf8'));
  } catch {
    return 0;
  }
}

interface Verified {
  ok: boolean;
  problems: string[];
  published: string[];
  contents: number;
}

function checked(v: Verified): Verified {
  expect(v.problems, `after ${JSON.stringify(v.published)}`).toEqual([]);
  expect(v.ok).toBe(true);
  return v;
}

function verify(work: string): Verified {
  return checked(harness(work, ['verify']).out as unknown as Verified);
}

/** The index of the command a killed `run` was in (the harness writes it before each command). */
function progress(work: string): number {
  return Number(readFileSync(path.join(work, 'progress'), 'utf8'));
}

/** Commands in one process (`run`); killAfter as in harness(). */
function runAll(work: string, commands: string[][], killAfter?: number): Outcome {
  return harness(work, ['run', JSON.stringify(commands)], killAfter);
}

const shard = (tag: string, n: number) => `${tag}-`.repeat(200 + n * 37);

// Hugging Face Trainer layout: checkpoint-<step>/ folders of shards plus small JSON files, the
// job keeping its newest two; an empty folder, a nested one and an inner link ("latest"). The third
// save's first shard is stored ahead of its declaration (stage), as the agent does for a job that
// declares its saves.
const SCENARIO: string[][] = [
  ['save', JSON.stringify({ write: { 'checkpoint-1/model-1.bin': shard('a1', 1), 'checkpoint-1/model-2.bin': shard('a2', 2), 'checkpoint-1/trainer_state.json': '{"global_step": 1}' }, dirs: ['runs/empty'], links: { latest: 'checkpoint-1' } })],
  ['sync', '1'],
  ['retain', '2'],
  ['save', JSON.stringify({ write: { 'checkpoint-2/model-1.bin': shard('b1', 3), 'checkpoint-2/model-2.bin': shard('a2', 2), 'checkpoint-2/trainer_state.json': '{"global_step": 2}' }, links: { latest: 'checkpoint-2' } })],
  ['sync', '2'],
  ['retain', '2'],
  ['save', JSON.stringify({ write: { 'checkpoint-3/model-1.bin': shard('c1', 4) } })],
  ['stage'],
  ['save', JSON.stringify({ write: { 'checkpoint-3/model-2.bin': shard('c2', 5), 'checkpoint-3/trainer_state.json': '{"global_step": 3}' }, delete: ['checkpoint-1'], links: { latest: 'checkpoint-3' } })],
  ['sync', '3'],
  ['retain', '1'],
];

function runScenario(work: string, killAfter?: number): { killedAt?: number; verified: Verified } {
  // The whole scenario and its check in one process (process starts dominate this test's time);
  // a kill ends it. Then one process checks what the crash left, runs the killed command again
  // (as the restarted agent does) and the rest, and checks again.
  const r = runAll(work, [...SCENARIO, ['verify']], killAfter);
  const last = (o: Outcome) => (o.out.results as Verified[]).at(-1)!;
  if (!r.killed) return { verified: checked(last(r)) };
  const killedAt = progress(work);
  const after = runAll(work, [['verify'], ...SCENARIO.slice(killedAt), ['verify']]);
  checked((after.out.results as Verified[])[0]!);
  return { killedAt, verified: checked(last(after)) };
}

describe('checkpoint store kill matrix', () => {
  it('survives a SIGKILL before every storage mutation of every sync and retention', { timeout: 600_000 }, () => {
    const clean = workDir();
    const stats = runScenario(clean, 1_000_000).verified; // counts mutations, never kills
    const total = opsDone(clean);
    expect(stats.published).toEqual(['00000003']);
    // checkpoint-2 and -3 shards + state files + the content shared by -1 and -2 (model-2)
    expect(stats.contents).toBeGreaterThan(0);
    expect(total).toBeGreaterThan(10);

    const killedAt = new Set<number>();
    for (let n = 0; n < total; n++) {
      const work = workDir();
      const r = runScenario(work, n);
      expect(r.killedAt, `kill point ${n} of ${total} was never reached`).toBeDefined();
      killedAt.add(r.killedAt!);
      // After recovery the same checkpoint survives as in the run without a crash.
      expect(r.verified.published.length).toBe(1);
      rmSync(work, { recursive: true, force: true });
    }
    // Kills landed in syncs, in storing ahead and in retentions alike.
    for (const command of ['sync', 'stage', 'retain']) expect([...killedAt].some((i) => SCENARIO[i]![0] === command)).toBe(true);
  });
});

describe('checkpoint store under random saves, syncs, retention and crashes', () => {
  const names = ['step-1/w.bin', 'step-2/w.bin', 'ckpt.pt', 'nested/deep/opt.bin', 'state.json'];
  const save = fc.record({
    write: fc.dictionary(fc.constantFrom(...names), fc.constantFrom('alpha', 'beta', 'gamma', 'delta'.repeat(50)), { maxKeys: 3 }),
    delete: fc.array(fc.constantFrom('step-1', 'step-2', 'ckpt.pt', 'nested'), { maxLength: 1 }),
    dirs: fc.array(fc.constantFrom('empty', 'nested/empty'), { maxLength: 1 }),
    links: fc.dictionary(fc.constantFrom('latest', 'nested/link'), fc.constantFrom('ckpt.pt', 'step-1', '../state.json'), { maxKeys: 1 }),
  });
  const command = fc.oneof(
    save.map((s) => ({ kind: 'save' as const, s })),
    fc.constant({ kind: 'sync' as const }),
    fc.constant({ kind: 'stage' as const }),
    fc.integer({ min: 1, max: 3 }).map((keep) => ({ kind: 'retain' as const, keep })),
    fc.record({ during: fc.constantFrom('sync', 'stage', 'retain'), after: fc.integer({ min: 0, max: 6 }) }).map((c) => ({ kind: 'crash' as const, ...c })),
  );

  it('keeps every kept manifest restorable and its contents stored', { timeout: 600_000 }, () => {
    fc.assert(
      fc.property(fc.array(command, { minLength: 2, maxLength: 8 }), (commands) => {
        const work = workDir();
        try {
          // Commands between crashes run in one process; a crash is a process of its own, killed
          // after `after` more storage mutations (or not, when it makes fewer).
          let batch: string[][] = [];
          const flush = () => {
            if (batch.length) runAll(work, batch);
            batch = [];
          };
          for (const c of commands) {
            if (c.kind === 'save') batch.push(['save', JSON.stringify(c.s)]);
            else if (c.kind === 'sync' || c.kind === 'stage') batch.push([c.kind]);
            else if (c.kind === 'retain') batch.push(['retain', String(c.keep)]);
            else {
              flush();
              const r = harness(work, c.during === 'retain' ? ['retain', '1'] : [c.during], opsDone(work) + c.after);
              if (r.killed) verify(work);
            }
          }
          flush();
          verify(work);
        } finally {
          rmSync(work, { recursive: true, force: true });
        }
      }),
      { numRuns: 12 },
    );
  });
});
