// The agent's Python modules tested on their own (src/agent/tests/test_*.py, stdlib unittest), so
// `npm test` runs them: each module's behaviour is pinned apart from the whole agent's.
//
// One unittest process per test module, two at a time: this file is small, so vitest schedules it
// last, and one process running all of them (about 30 s) was most of the suite's tail on 2 cores.
import { spawn } from 'node:child_process';
import { readdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PYTHON, REPO_ROOT } from './support.js';

const AGENT_DIR = path.join(REPO_ROOT, 'src', 'agent');
const AT_ONCE = 2;

interface ModuleRun {
  module: string;
  status: number | null;
  out: string;
}

function runModule(module: string): Promise<ModuleRun> {
  return new Promise((resolve) => {
    const child = spawn(PYTHON, ['-m', 'unittest', module, '-v'], {
      cwd: AGENT_DIR,
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString('utf8')));
    child.stderr.on('data', (d: Buffer) => (out += d.toString('utf8')));
    child.on('close', (status) => resolve({ module, status, out }));
  });
}

describe('agent Python modules (unittest)', () => {
  it('pass their unit tests', async () => {
    const modules = readdirSync(path.join(AGENT_DIR, 'tests'))
      .filter((f) => /^test_\w+\.py$/.test(f))
      .sort()
      .map((f) => `tests.${f.slice(0, -3)}`);
    const queue = [...modules];
    const runs: ModuleRun[] = [];
    await Promise.all(
      Array.from({ length: AT_ONCE }, async () => {
        for (let next = queue.shift(); next; next = queue.shift()) runs.push(await runModule(next));
      }),
    );
    let ran = 0;
    for (const run of runs) {
      expect(run.out, `${run.module}:\n${run.out}`).toMatch(/^OK/m);
      expect(run.status, `${run.module}:\n${run.out}`).toBe(0);
      ran += Number(/Ran (\d+) tests?/.exec(run.out)?.[1] ?? 0);
    }
    expect(runs.map((r) => r.module).sort()).toEqual(modules);
    expect(ran).toBeGreaterThan(100);
  }, 600_000);
});
