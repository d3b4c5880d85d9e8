// The agent's Python modules tested on their own (src/agent/tests/test_*.py, stdlib unittest), so
// `npm test` runs them: each module's behaviour is pinned apart from the whole agent's.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { PYTHON, REPO_ROOT } from './support.js';

describe('agent Python modules (unittest)', () => {
  it('pass their unit tests', () => {
    const agentDir = path.join(REPO_ROOT, 'src', 'agent');
    const result = spawnSync(PYTHON, ['-m', 'unittest', 'discover', '-s', path.join(agentDir, 'tests'), '-t', agentDir, '-v'], {
      cwd: agentDir,
      encoding: 'utf8',
      env: { ...process.env, PYTHONDONTWRITEBYTECODE: '1' },
      timeout: 600_000,
    });
    const out = `${result.stdout}\n${result.stderr}`;
    expect(out, out).toMatch(/^OK/m);
    expect(Number(/Ran (\d+) tests?/.exec(out)?.[1] ?? 0)).toBeGreaterThan(10);
    expect(result.status, out).toBe(0);
  }, 600_000);
});
